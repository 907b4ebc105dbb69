use std::sync::Arc;

use mandate_types::Clock;
use tower::Layer;

use super::{GuardService, DEFAULT_MAX_BODY};
use crate::policy::{Guard, ProtectedResource};

/// Applies a [`Guard`] for one protected resource to a service.
///
/// ```ignore
/// let app = Router::new()
///     .route("/", post(handle_jsonrpc))
///     .layer(GuardLayer::new(guard, resource, Arc::new(SystemClock)));
/// ```
#[derive(Clone)]
pub struct GuardLayer {
    guard: Arc<Guard>,
    resource: Arc<ProtectedResource>,
    clock: Arc<dyn Clock>,
    max_body: usize,
}

impl GuardLayer {
    /// A layer enforcing `resource`'s policy with `guard`.
    pub fn new(guard: Arc<Guard>, resource: ProtectedResource, clock: Arc<dyn Clock>) -> Self {
        Self {
            guard,
            resource: Arc::new(resource),
            clock,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Sets the largest body read to find a JSON-RPC method.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> GuardService<S> {
        GuardService {
            inner,
            guard: Arc::clone(&self.guard),
            resource: Arc::clone(&self.resource),
            clock: Arc::clone(&self.clock),
            max_body: self.max_body,
        }
    }
}
