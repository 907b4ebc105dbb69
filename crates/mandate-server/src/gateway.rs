//! Wiring of the gateway into the server: the adapters that connect
//! `mandate-gateway` and `mandate-tower` to Mandate's own keys, store and
//! audit trail when both run in one process.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use mandate_audit::{NewEvent, Outcome};
use mandate_biscuit::RootKeys;
use mandate_config::Config;
use mandate_core::audit::AuditLog;
use mandate_core::keyring::{KeySnapshot, Keyring, Keyrings};
use mandate_core::Store;
use mandate_gateway::{
    CardSettings, CardSigner, DecisionEvent, DecisionSink, Gateway, GatewaySettings, RateLimiter,
    Route, RouteTable, ScopeCatalog, UpstreamTls,
};
use mandate_jose::JwkSet;
use mandate_tower::keys::HttpKeys;
use mandate_tower::{
    BiscuitRoots, DpopNonces, Guard, KeySource, ProtectedResource, RevocationList, TokenVerifier,
    TrustedIssuer,
};
use mandate_types::{Clock, ResourceUri};

use crate::state::AppState;

/// Mandate's own keys, straight from the keyring; an unknown `kid` reloads
/// from the store at most once a minute.
struct OwnKeys {
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    last_reload: AtomicI64,
}

/// Own issuer in process, every other trusted issuer over HTTP.
struct Keys {
    own_issuer: Option<String>,
    own: OwnKeys,
    http: HttpKeys,
}

#[async_trait]
impl KeySource for Keys {
    async fn keys(&self, issuer: &str, refresh: bool) -> Result<Arc<JwkSet>, String> {
        if self.own_issuer.as_deref() != Some(issuer) {
            return self.http.keys(issuer, refresh).await;
        }
        let now = self.own.clock.now();
        if refresh && now - self.own.last_reload.load(Ordering::Relaxed) >= 60 {
            self.own.last_reload.store(now, Ordering::Relaxed);
            self.own.keyring.reload().await.map_err(|e| e.to_string())?;
        }
        Ok(Arc::new(JwkSet {
            keys: self.own.keyring.snapshot().published().to_vec(),
        }))
    }
}

/// The authorization server's DPoP nonces, also required at the gateway
/// when `[gateway] dpop_nonce` is on (so one nonce serves both).
pub struct AuthorityNonces(pub Arc<mandate_core::Authority>);

impl DpopNonces for AuthorityNonces {
    fn current(&self) -> String {
        self.0.dpop_nonce()
    }

    fn accepted(&self) -> Vec<String> {
        self.0.accepted_nonces()
    }
}

/// Mandate's own Biscuit root keys, rebuilt only when the keyring reloads.
struct OwnBiscuitRoots {
    keyring: Arc<Keyring>,
    built: RwLock<Option<(Arc<KeySnapshot>, Arc<RootKeys>)>>,
}

impl BiscuitRoots for OwnBiscuitRoots {
    fn roots(&self) -> Arc<RootKeys> {
        let snapshot = self.keyring.snapshot();
        if let Ok(built) = self.built.read() {
            if let Some((from, roots)) = built.as_ref() {
                if Arc::ptr_eq(from, &snapshot) {
                    return Arc::clone(roots);
                }
            }
        }
        let roots = Arc::new(RootKeys::new(snapshot.published_roots()));
        if let Ok(mut built) = self.built.write() {
            *built = Some((snapshot, Arc::clone(&roots)));
        }
        roots
    }
}

/// Revoked token ids, re-read from the store every `revocation_refresh`.
#[derive(Default)]
pub struct StoreRevocations(RwLock<HashSet<String>>);

impl StoreRevocations {
    /// Replaces the set with what the store holds now.
    pub async fn refresh(&self, store: &dyn Store, now: i64) {
        match store.list_revoked(now).await {
            Ok(list) => {
                if let Ok(mut s) = self.0.write() {
                    *s = list.into_iter().collect();
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading revocations failed"),
        }
    }
}

impl RevocationList for StoreRevocations {
    fn is_revoked(&self, jti: &str) -> bool {
        self.0.read().map(|s| s.contains(jti)).unwrap_or(false)
    }
}

struct AuditDecisions {
    audit: AuditLog,
    clock: Arc<dyn Clock>,
}

#[async_trait]
impl DecisionSink for AuditDecisions {
    async fn record(&self, d: DecisionEvent) {
        let (kind, outcome) = if d.allowed {
            ("gateway.allowed", Outcome::Success)
        } else {
            ("gateway.denied", Outcome::Failure)
        };
        let mut e = NewEvent::new(self.clock.now_ms(), kind, outcome);
        e.client_id = d.client_id;
        e.subject = d.subject;
        e.audience = Some(d.resource);
        e.scopes = d.scopes;
        e.jti = d.jti;
        e.reason = Some(format!(
            "route={} operation={} status={} reason={} latency_us={}",
            d.route,
            d.operation.as_deref().unwrap_or("-"),
            d.status,
            d.reason,
            d.latency_us
        ));
        self.audit.enqueue(e).await;
    }
}

struct KeyringSigner {
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
}

impl CardSigner for KeyringSigner {
    fn sign(&self, payload: &[u8]) -> Result<(String, String), String> {
        let snapshot = self.keyring.snapshot();
        let key = snapshot
            .signer(self.clock.now())
            .ok_or("no active signing key")?;
        key.sign_detached("JOSE", payload)
            .map_err(|e| e.to_string())
    }
}

/// DPoP proof ids: a memory fast path for this replica, then the store, so a
/// proof used at one replica is refused at the others.
struct StoreReplay {
    memory: mandate_tower::MemoryReplay,
    store: Arc<dyn Store>,
}

#[async_trait]
impl mandate_tower::ProofReplay for StoreReplay {
    async fn first_use(&self, key: &str, expires_at: i64) -> bool {
        if !self.memory.first_use(key, expires_at).await {
            return false;
        }
        match self.store.use_once("dpop_resource", key, expires_at).await {
            Ok(first) => first,
            Err(e) => {
                tracing::error!(error = %e, "DPoP replay check failed; refusing the proof");
                false
            }
        }
    }
}

struct StoreScopes(Arc<dyn Store>);

#[async_trait]
impl ScopeCatalog for StoreScopes {
    async fn describe(&self, resource: &str) -> BTreeMap<String, String> {
        let Ok(id) = ResourceUri::parse(resource) else {
            return BTreeMap::new();
        };
        match self.0.get_resource(&id).await {
            Ok(Some(r)) => r
                .scopes
                .into_iter()
                .map(|(k, v)| (k.as_str().to_owned(), v))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

/// Builds the gateway, or `None` when no route is configured.
pub fn build(
    config: &Config,
    store: Arc<dyn Store>,
    keyrings: Keyrings,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    revocations: Arc<StoreRevocations>,
    nonces: Option<Arc<dyn DpopNonces>>,
) -> Result<Option<Arc<Gateway>>, crate::StartError> {
    let Keyrings {
        jws: keyring,
        biscuit: biscuit_keyring,
    } = keyrings;
    let g = &config.gateway;
    if g.routes.is_empty() {
        return Ok(None);
    }
    let mut trusted: Vec<TrustedIssuer> = g
        .issuers
        .iter()
        .map(|i| TrustedIssuer {
            issuer: i.issuer.clone(),
            require_at_jwt: i.require_at_jwt,
        })
        .collect();
    if g.trust_own_issuer {
        trusted.push(TrustedIssuer {
            issuer: config.issuer.clone(),
            require_at_jwt: true,
        });
    }
    let keys = Keys {
        own_issuer: g.trust_own_issuer.then(|| config.issuer.clone()),
        own: OwnKeys {
            keyring: Arc::clone(&keyring),
            clock: Arc::clone(&clock),
            last_reload: AtomicI64::new(0),
        },
        http: HttpKeys::new()?,
    };
    let mut verifier = TokenVerifier::new(trusted, Arc::new(keys), revocations, g.leeway);
    if g.trust_own_issuer {
        verifier = verifier.with_biscuit_roots(Arc::new(OwnBiscuitRoots {
            keyring: biscuit_keyring,
            built: RwLock::new(None),
        }));
    }
    let gateway_error = crate::StartError::Gateway;
    let public_pki = UpstreamTls::public_roots().map_err(gateway_error)?.client();
    let mut routes = Vec::with_capacity(g.routes.len());
    for (i, r) in g.routes.iter().enumerate() {
        let key_error = |key: &str, e: String| {
            gateway_error(format!(
                "configuration key `gateway.routes[{i}].{key}`: {e}"
            ))
        };
        let client = match (&r.upstream_ca, &r.upstream_client_cert) {
            (None, None) => public_pki.clone(),
            (ca, cert) => {
                let tls = match ca {
                    None => UpstreamTls::public_roots().map_err(gateway_error)?,
                    Some(ca) => UpstreamTls::from_pem(&ca.pem)
                        .map_err(|e| key_error("upstream_ca_file", format!("{}: {e}", ca.file)))?,
                };
                match cert {
                    None => tls,
                    Some(c) => tls
                        .with_client_cert(c.cert_file.as_ref(), c.key_file.as_ref())
                        .map_err(|e| key_error("upstream_client_cert_file", e))?,
                }
                .client()
            }
        };
        routes.push(Route {
            path: r.path.clone(),
            upstream: r.upstream.clone(),
            upstream_host: mandate_gateway::upstream_host(&r.upstream),
            policy: ProtectedResource {
                resource: r.resource.to_string(),
                resource_metadata: format!(
                    "{}/.well-known/oauth-protected-resource{}",
                    g.public_url, r.path
                ),
                public_origin: g.public_url.clone(),
                protocol: r.protocol,
                scopes: r.scopes.clone(),
                operations: r.operations.clone(),
                public: r.public,
                mcp: (r.protocol == mandate_tower::Protocol::Mcp).then(|| {
                    mandate_tower::mcp::McpPolicy {
                        allowed_origins: r.allowed_origins.clone(),
                        levels: r.levels.clone(),
                        tools: r.tools.clone(),
                        prompts: r.prompts.clone(),
                        resources: r.resources.clone(),
                        catalog: Arc::new(mandate_gateway::mcp::UpstreamCatalog::new(
                            r.upstream.as_str(),
                            client.clone(),
                            Duration::from_secs(r.upstream_timeout.unsigned_abs().min(10)),
                        )),
                    }
                }),
            },
            name: r.name.clone(),
            pass_token: r.pass_token,
            skills: r.skills.clone(),
            upstream_timeout: Duration::from_secs(r.upstream_timeout.unsigned_abs()),
            client,
            rate_limit: r.rate_limit.map(|n| Arc::new(RateLimiter::new(n))),
        });
    }
    let settings = GatewaySettings {
        authorization_servers: vec![config.issuer.clone()],
        card: CardSettings {
            public_base: g.public_url.clone(),
            token_url: format!("{}/token", config.issuer),
            metadata_url: format!("{}/.well-known/oauth-authorization-server", config.issuer),
            max_age: Duration::from_secs(g.card_max_age.unsigned_abs()),
            rate_per_minute: g.card_rate_limit,
        },
        default_route: g.default_route.clone(),
        max_body: g.max_body_bytes,
    };
    Ok(Some(Arc::new(Gateway::new(
        RouteTable::new(routes),
        {
            let guard = Guard::new(verifier).with_replay(Arc::new(StoreReplay {
                memory: mandate_tower::MemoryReplay::default(),
                store: Arc::clone(&store),
            }));
            Arc::new(match nonces {
                Some(n) if g.dpop_nonce => guard.with_dpop_nonces(n),
                _ => guard,
            })
        },
        Arc::clone(&clock),
        settings,
        Arc::new(KeyringSigner {
            keyring,
            clock: Arc::clone(&clock),
        }),
        Arc::new(StoreScopes(store)),
        Arc::new(AuditDecisions { audit, clock }),
    ))))
}

/// The public listener's fallback: everything the authorization server does
/// not answer goes to the gateway.
pub async fn fallback(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    match &s.gateway {
        Some(g) => g.handle(req, Some(peer)).await.into_response(),
        None => (
            axum::http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "not_found"})),
        )
            .into_response(),
    }
}
