//! Connections to upstreams: pooled HTTP/1.1, in the clear or over TLS.
//!
//! Why one pool per thread: a pooled connection is driven by a task on the
//! event loop that opened it. The public listener runs one single-threaded
//! event loop per thread (`mandate-server`'s `listener`), so a connection
//! shared between threads would cost a cross-thread wake-up on every request
//! that borrowed it from another loop. With a pool per thread, a proxied
//! request, its upstream connection and the answer stay on one thread; the
//! price is up to one idle connection set per thread.
//!
//! Why a pool of our own over hyper's connections, not hyper-util's pooled
//! client: a gateway request borrows a connection, sends one request and
//! gives the connection back when the answer's body has ended, and this is
//! all it needs. hyper-util's client does more on every request: it clones
//! the connector and builds a connect future in case no connection is idle,
//! looks the pool up by a hashed key, spawns a task per request that waits
//! for the connection to be free again, and puts connection details in
//! every response's extensions; together a few percent of the gateway's
//! CPU per request (docs/BENCHMARKS.md). Here a connection goes back to its
//! thread's pool when the body that the caller reads ends ([`PooledBody`]),
//! so a streamed answer (SSE) keeps its connection until it is over, and a
//! body dropped before its end closes the connection rather than reusing it
//! in the middle of a message. hyper-util still provides the connector
//! (socket options, connect timeout), and hyper-rustls the TLS on it.
//!
//! Idle connections: the most recently used is taken first; one idle longer
//! than [`IDLE_TIMEOUT`] is closed when next seen or by the pool's reaper
//! task (every half of that), and at most
//! [`MAX_IDLE_PER_UPSTREAM`] wait per upstream and thread. A request that a
//! pooled connection hands back unsent (the upstream had closed it) goes on
//! another connection.
//!
//! Why one pool per trust: a route whose upstream has a certificate from a
//! private CA (`upstream_ca_file`) must trust that CA and nothing else, while
//! every other route trusts the public web PKI (the Mozilla roots compiled in
//! by `webpki-roots`, so the host's CA store cannot widen or narrow it). A
//! pool's connections are verified once, at the handshake, so each trust gets
//! its own client and its own pool; `http://` upstreams share the default one.
//! A route whose upstream requires a client certificate (mutual TLS,
//! `upstream_client_cert_file`) gets a client of its own for the same reason:
//! the certificate is shown at the handshake, so a pooled connection carries
//! the identity it was opened with.
//!
//! The crypto provider is named (`ring`, the one reqwest's rustls already
//! brings) rather than taken from a process default, so that another crate
//! enabling a second provider cannot make the choice ambiguous at run time.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use thread_local::ThreadLocal;
use tower::Service as _;

use crate::client_cert::ReloadingClientCert;

/// An idle connection older than this is closed instead of reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections kept per upstream and thread.
pub const MAX_IDLE_PER_UPSTREAM: usize = 256;
/// Longest wait for a new connection's TCP handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request to an upstream failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// The request's URI names no `http` or `https` host.
    BadUri,
    /// No connection could be made (refused, unreachable, TLS).
    Connect(String),
    /// The connection failed while sending or receiving.
    Http(hyper::Error),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadUri => f.write_str("the upstream URI is not an absolute http(s) URI"),
            Self::Connect(e) => write!(f, "connecting to the upstream: {e}"),
            Self::Http(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// The client the gateway forwards with: one connection pool per thread
/// that uses it, all with the same trust. Cloning shares the pools.
#[derive(Clone)]
pub struct UpstreamClient(Arc<PerThreadPools>);

struct PerThreadPools {
    tls: ClientConfig,
    pools: ThreadLocal<Arc<ThreadPool>>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

/// Where a connection goes: the scheme and the authority.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Upstream {
    https: bool,
    authority: Authority,
}

/// One thread's connector and idle connections.
struct ThreadPool {
    /// Its own, so that the reference counts inside are written by this
    /// thread alone.
    connector: HttpsConnector<HttpConnector>,
    /// Idle connections by upstream, oldest first. Upstreams are few (at
    /// most one per route), so they are searched in order; an upstream's
    /// place in the list never changes.
    idle: Mutex<Vec<(Upstream, Vec<Idle>)>>,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl UpstreamClient {
    /// Sends `req` (its URI absolute: `http(s)://authority/path?query`)
    /// over a connection from this thread's pool, or a new one. The answer's
    /// body gives the connection back when it ends.
    pub async fn request(&self, mut req: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        let uri = std::mem::take(req.uri_mut()).into_parts();
        let https = match uri.scheme {
            Some(s) if s == Scheme::HTTPS => true,
            Some(s) if s == Scheme::HTTP => false,
            _ => return Err(UpstreamError::BadUri),
        };
        let authority = uri.authority.ok_or(UpstreamError::BadUri)?;
        if !req.headers().contains_key(header::HOST) {
            let host =
                HeaderValue::from_str(authority.as_str()).map_err(|_| UpstreamError::BadUri)?;
            req.headers_mut().insert(header::HOST, host);
        }
        // To an origin server the target is in origin form (RFC 9112 §3.2.1).
        *req.uri_mut() = Uri::from(
            uri.path_and_query
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        let upstream = Upstream { https, authority };
        let pool = self
            .0
            .pools
            .get_or(|| ThreadPool::start(self.0.tls.clone()));
        let (slot, mut idle) = pool.checkout(&upstream);
        while let Some(mut sender) = idle {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(req).await {
                    Ok(res) => return Ok(PooledBody::wrap(res, pool, slot, sender)),
                    Err(mut e) => match e.take_message() {
                        // Closed by the upstream before it was sent.
                        Some(unsent) => req = unsent,
                        None => return Err(UpstreamError::Http(e.into_error())),
                    },
                }
            }
            idle = pool.checkout(&upstream).1;
        }
        let mut sender = pool.connect(&upstream).await?;
        let res = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Http)?;
        Ok(PooledBody::wrap(res, pool, slot, sender))
    }
}

/// Drops (and so closes) the connections of `waiting`, oldest first, that
/// have been idle for [`IDLE_TIMEOUT`] at `now`.
fn drop_expired(waiting: &mut Vec<Idle>, now: Instant) {
    let expired = waiting
        .iter()
        .position(|i| now.duration_since(i.since) < IDLE_TIMEOUT)
        .unwrap_or(waiting.len());
    waiting.drain(..expired);
}

impl ThreadPool {
    /// This thread's pool, and its reaper: a task on this thread's event
    /// loop that closes connections idle too long when no request comes to
    /// do it, and ends with the pool.
    fn start(tls: ClientConfig) -> Arc<Self> {
        let pool = Arc::new(Self::new(tls));
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(IDLE_TIMEOUT / 2);
            every.tick().await;
            loop {
                every.tick().await;
                let Some(pool) = weak.upgrade() else { return };
                pool.close_expired(Instant::now());
            }
        });
        pool
    }

    fn new(tls: ClientConfig) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // The TLS layer above decides the scheme; this one only connects.
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            connector,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The upstream's place in the pool, and its most recently used idle
    /// connection that is still open, if any. Connections idle too long
    /// are closed on the way.
    fn checkout(&self, upstream: &Upstream) -> (usize, Option<SendRequest<Body>>) {
        let Ok(mut idle) = self.idle.lock() else {
            return (usize::MAX, None);
        };
        let slot = match idle.iter().position(|(u, _)| u == upstream) {
            Some(slot) => slot,
            None => {
                idle.push((upstream.clone(), Vec::new()));
                idle.len() - 1
            }
        };
        let Some((_, waiting)) = idle.get_mut(slot) else {
            return (slot, None);
        };
        drop_expired(waiting, Instant::now());
        while let Some(i) = waiting.pop() {
            if !i.sender.is_closed() {
                return (slot, Some(i.sender));
            }
        }
        (slot, None)
    }

    /// Closes the connections idle too long at `now`.
    fn close_expired(&self, now: Instant) {
        if let Ok(mut idle) = self.idle.lock() {
            for (_, waiting) in idle.iter_mut() {
                drop_expired(waiting, now);
            }
        }
    }

    /// Takes `sender` back as idle, unless its connection is closed or the
    /// upstream has enough idle ones.
    fn give_back(&self, slot: usize, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        if let Some((_, waiting)) = idle.get_mut(slot) {
            if waiting.len() < MAX_IDLE_PER_UPSTREAM {
                waiting.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        }
    }

    /// A new connection, driven by a task on this thread's event loop.
    async fn connect(&self, upstream: &Upstream) -> Result<SendRequest<Body>, UpstreamError> {
        let uri = Uri::builder()
            .scheme(if upstream.https {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            })
            .authority(upstream.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| UpstreamError::BadUri)?;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let io = connector
            .call(uri)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let (sender, connection) = http1::handshake(io).await.map_err(UpstreamError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

/// An upstream's answer body that gives its connection back to the pool
/// it came from once the body has ended. Dropped before that, it closes the
/// connection (the rest of the message would still be on it).
struct PooledBody {
    body: Incoming,
    home: Option<(Arc<ThreadPool>, usize, SendRequest<Body>)>,
}

impl PooledBody {
    fn wrap(
        res: Response<Incoming>,
        pool: &Arc<ThreadPool>,
        slot: usize,
        sender: SendRequest<Body>,
    ) -> Response<Body> {
        res.map(|body| {
            if http_body::Body::is_end_stream(&body) {
                pool.give_back(slot, sender);
                Body::new(body)
            } else {
                Body::new(Self {
                    body,
                    home: Some((Arc::clone(pool), slot, sender)),
                })
            }
        })
    }

    fn give_back(&mut self) {
        if let Some((pool, slot, sender)) = self.home.take() {
            pool.give_back(slot, sender);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        match &frame {
            // A reader may stop at the last byte it was told of, without
            // asking for the end: the body has ended when it says so.
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.give_back(),
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.home = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if http_body::Body::is_end_stream(&self.body) {
            self.give_back();
        }
    }
}

/// The TLS side of a route's upstream connections: whom an https upstream's
/// certificate must chain to, and the client certificate the gateway shows
/// when the upstream asks for one (mutual TLS).
#[derive(Debug)]
pub struct UpstreamTls {
    roots: Arc<RootCertStore>,
    config: ClientConfig,
}

impl UpstreamTls {
    /// The public web PKI.
    pub fn public_roots() -> Result<Self, String> {
        Self::with_roots(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
    }

    /// Only the CA certificates in `pem` (one or more PEM `CERTIFICATE`
    /// sections; anything else in the file is ignored).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("not PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("not a usable CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no CERTIFICATE in it".into());
        }
        Self::with_roots(roots)
    }

    fn with_roots(roots: RootCertStore) -> Result<Self, String> {
        let roots = Arc::new(roots);
        let config = Self::builder(&roots)?.with_no_client_auth();
        Ok(Self { roots, config })
    }

    fn builder(
        roots: &Arc<RootCertStore>,
    ) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(Arc::clone(roots)))
    }

    /// The same trust, showing the certificate chain in `cert_file` (the
    /// gateway's own certificate first) with the private key in `key_file`
    /// (PEM: PKCS#8, SEC1 or PKCS#1) to upstreams that ask for a client
    /// certificate; both read again when they change
    /// ([`crate::client_cert`]). The key must belong to the certificate.
    pub fn with_client_cert(self, cert_file: &Path, key_file: &Path) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let resolver = ReloadingClientCert::load(cert_file, key_file, provider)?;
        let config = Self::builder(&self.roots)?.with_client_cert_resolver(Arc::new(resolver));
        Ok(Self {
            roots: self.roots,
            config,
        })
    }

    /// A client for `http://` upstreams and `https://` ones verified
    /// against this trust.
    pub fn client(&self) -> UpstreamClient {
        UpstreamClient(Arc::new(PerThreadPools {
            tls: self.config.clone(),
            pools: ThreadLocal::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    //! The pool against a hand-written HTTP/1.1 server that counts its
    //! connections: when a connection is reused, and when it must not be.
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Notify;

    use super::*;

    /// Answers `GET /full` with `ok`, `GET /close` with `ok` and
    /// `Connection: close`, `GET /hang-up` with `ok` and then closes the
    /// connection without a word, and `GET /partial` with the first half of
    /// its body, the second once `more` is notified.
    struct CountingServer {
        base: String,
        connections: Arc<AtomicUsize>,
        more: Arc<Notify>,
    }

    async fn upstream() -> CountingServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let more = Arc::new(Notify::new());
        let (count, notified) = (Arc::clone(&connections), Arc::clone(&more));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, Arc::clone(&notified)));
            }
        });
        CountingServer {
            base,
            connections,
            more,
        }
    }

    async fn serve(mut stream: TcpStream, more: Arc<Notify>) {
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        loop {
            if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
            if !head.ends_with(b"\r\n\r\n") {
                continue;
            }
            let request = String::from_utf8_lossy(&head).into_owned();
            head.clear();
            if request.starts_with("GET /close ") {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                return;
            } else if request.starts_with("GET /hang-up ") {
                // Keep-alive as far as the client knows, then closed.
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            } else if request.starts_with("GET /partial ") {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab")
                    .await;
                more.notified().await;
                let _ = stream.write_all(b"cd").await;
            } else {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        }
    }

    impl CountingServer {
        async fn get(&self, client: &UpstreamClient, path: &str) -> Response<Body> {
            let req = Request::get(format!("{}{path}", self.base))
                .body(Body::empty())
                .unwrap();
            client.request(req).await.unwrap()
        }

        /// The body of `GET path`, read to its end.
        async fn text(&self, client: &UpstreamClient, path: &str) -> String {
            text(self.get(client, path).await).await
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }

    fn client() -> UpstreamClient {
        UpstreamTls::public_roots().unwrap().client()
    }

    async fn text(res: Response<Body>) -> String {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_the_answer_has_ended() {
        let up = upstream().await;
        let client = client();
        for _ in 0..3 {
            assert_eq!(up.text(&client, "/full").await, "ok");
        }
        assert_eq!(up.connections(), 1);
    }

    #[tokio::test]
    async fn a_streamed_answer_keeps_its_connection_until_it_ends() {
        let up = upstream().await;
        let client = client();
        let streaming = up.get(&client, "/partial").await;
        // The first connection is still in the middle of an answer.
        assert_eq!(up.text(&client, "/full").await, "ok");
        assert_eq!(up.connections(), 2);
        up.more.notify_one();
        assert_eq!(text(streaming).await, "abcd");
        for _ in 0..2 {
            assert_eq!(up.text(&client, "/full").await, "ok");
        }
        assert_eq!(up.connections(), 2, "both connections are idle again");
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_the_connection() {
        let up = upstream().await;
        let client = client();
        drop(up.get(&client, "/partial").await);
        assert_eq!(up.text(&client, "/full").await, "ok");
        assert_eq!(up.connections(), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closes_is_not_reused() {
        let up = upstream().await;
        let client = client();
        for _ in 0..3 {
            assert_eq!(up.text(&client, "/close").await, "ok");
        }
        assert_eq!(up.connections(), 3);
    }

    #[tokio::test]
    async fn a_request_goes_on_a_new_connection_when_the_idle_one_was_closed() {
        let up = upstream().await;
        let client = client();
        assert_eq!(up.text(&client, "/hang-up").await, "ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(up.text(&client, "/full").await, "ok");
        assert_eq!(up.connections(), 2);
    }

    #[tokio::test]
    async fn a_connection_idle_too_long_is_closed() {
        let up = upstream().await;
        let client = client();
        assert_eq!(up.text(&client, "/full").await, "ok");
        let pool = client.0.pools.get().unwrap();
        pool.close_expired(Instant::now());
        assert_eq!(up.text(&client, "/full").await, "ok");
        assert_eq!(up.connections(), 1, "not yet expired");
        pool.close_expired(Instant::now() + IDLE_TIMEOUT);
        assert_eq!(up.text(&client, "/full").await, "ok");
        assert_eq!(up.connections(), 2);
    }

    #[tokio::test]
    async fn only_absolute_http_uris_are_sent() {
        let client = client();
        for uri in ["/relative", "ftp://example.com/"] {
            let req = Request::get(uri).body(Body::empty()).unwrap();
            assert!(matches!(
                client.request(req).await,
                Err(UpstreamError::BadUri)
            ));
        }
    }

    const CA: &[u8] = include_bytes!("../../mandate/tests/fixtures/tls/ca.pem");

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        assert!(UpstreamTls::from_pem(CA).is_ok());
        assert!(UpstreamTls::from_pem(b"")
            .unwrap_err()
            .contains("no CERTIFICATE"));
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(UpstreamTls::from_pem(key_only).is_err());
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(UpstreamTls::from_pem(garbage)
            .unwrap_err()
            .contains("not a usable"));
    }
}
