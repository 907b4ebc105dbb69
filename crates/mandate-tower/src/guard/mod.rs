//! [`GuardService`]: the guard as a tower `Service` wrapping an agent.
//!
//! Every request is decided by [`Guard::decide`]; an allowed request reaches
//! the inner service with the [`VerifiedAccessToken`] (and the A2A operation)
//! as request extensions, a denied one never does. Laid out the tower way:
//! this file (the service), `layer.rs`, `future.rs`.

mod future;
mod layer;

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt as _, Limited};
use mandate_types::Clock;
use tower::Service;

pub use future::ResponseFuture;
pub use layer::GuardLayer;

use crate::policy::{Allowed, Denial, Guard, ProtectedResource, RequestView};

/// Largest body read to find a JSON-RPC method.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// The guard around an inner service.
#[derive(Clone)]
pub struct GuardService<S> {
    inner: S,
    guard: Arc<Guard>,
    resource: Arc<ProtectedResource>,
    clock: Arc<dyn Clock>,
    max_body: usize,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GuardService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The clone-and-swap of tower's docs: the ready service goes into the future.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (guard, resource, clock, max_body) = (
            Arc::clone(&self.guard),
            Arc::clone(&self.resource),
            Arc::clone(&self.clock),
            self.max_body,
        );
        ResponseFuture::new(async move {
            let (mut parts, body) = req.into_parts();
            let mut bytes = None;
            let body = if Guard::needs_body(&resource, &parts.method, &parts.headers) {
                match Limited::new(body, max_body).collect().await {
                    Ok(collected) => {
                        let b = collected.to_bytes();
                        bytes = Some(b.clone());
                        ReqBody::from(b)
                    }
                    Err(_) => return Ok(too_large()),
                }
            } else {
                body
            };
            let path = parts.uri.path().to_owned();
            let view = RequestView {
                method: &parts.method,
                uri: &parts.uri,
                path: &path,
                headers: &parts.headers,
                body: bytes.as_deref(),
            };
            let decision = guard.decide(&resource, view, clock.now()).await;
            match decision {
                Ok(Allowed {
                    token, operation, ..
                }) => {
                    if let Some(t) = token {
                        parts.extensions.insert(t);
                    }
                    if let Some(op) = operation {
                        parts.extensions.insert(op);
                    }
                    inner.call(Request::from_parts(parts, body)).await
                }
                Err(denial) => Ok(Denial::into_response(denial)),
            }
        })
    }
}

fn too_large<B: From<Bytes>>() -> Response<B> {
    let mut r = Response::new(B::from(Bytes::from_static(
        br#"{"error":"invalid_request","error_description":"request body too large"}"#,
    )));
    *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    r
}
