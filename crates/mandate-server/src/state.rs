//! What every handler can reach.

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::FromRef;
use mandate_core::Authority;
use mandate_store::SqlStore;
use mandate_types::SecretHash;

use crate::ops::Metrics;

/// Shared state of both listeners. Handlers take it by value, so it is one
/// `Arc`: a clone per request costs one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Wraps the shared state.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    /// The protocol engine.
    pub authority: Arc<Authority>,
    /// The store, for readiness checks.
    pub store: Arc<SqlStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Hash of the admin API token.
    pub admin_token: Arc<SecretHash>,
    /// Default overlap of old client secrets on rotation, seconds.
    pub secret_rotation_overlap: i64,
    /// Registrations per client address.
    pub registration_limiter: Arc<mandate_gateway::RateLimiter<std::net::IpAddr>>,
    /// The gateway, when routes are configured.
    pub gateway: Option<Arc<mandate_gateway::Gateway>>,
    /// Sign-in through upstream OpenID Providers (`[[login.oidc]]`).
    pub upstream: Arc<mandate_core::upstream_login::UpstreamLogins>,
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(s: &AppState) -> Self {
        Arc::clone(&s.metrics)
    }
}
