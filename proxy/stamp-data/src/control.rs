//! The seam between the planes: the data plane answers health and metrics
//! under `/__stamp/` itself and hands every other reserved request (the
//! control API, the panel) to a [`ControlPlane`] trait object, as a plain
//! `http::Request<Bytes>`. It never depends on the control plane's crate;
//! the binary supplies the implementation.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// A control-plane response body: complete, or a stream of chunks (server-sent
/// events) that ends when the stream does or the client goes away.
pub enum Body {
    Full(Bytes),
    Stream(BoxStream<'static, Bytes>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Full(b) => f.debug_tuple("Full").field(&b.len()).finish(),
            Body::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// What answers `/__stamp/…` besides health and metrics.
#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// The largest request body this request may send. The data plane reads
    /// at most this much and answers 413 past it, storing nothing.
    fn body_limit(&self, head: &http::request::Parts) -> usize;

    /// Answers one request; never fails (errors are responses).
    async fn call(&self, req: http::Request<Bytes>) -> http::Response<Body>;
}
