use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

/// The future of [`super::GuardService`]: the decision, then the inner call.
pub struct ResponseFuture<B, E> {
    inner: Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>,
}

impl<B, E> ResponseFuture<B, E> {
    pub(crate) fn new(f: impl Future<Output = Result<Response<B>, E>> + Send + 'static) -> Self {
        Self { inner: Box::pin(f) }
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
