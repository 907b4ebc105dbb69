//! A small A2A-ish upstream agent for gateway tests: it records what it
//! received, answers JSON-RPC, serves an Agent Card, streams SSE on demand,
//! and can be slow. [`Upstream::start_tls`] serves the same over HTTPS with
//! the certificate in `tests/fixtures/tls`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

#[derive(Clone, Default)]
pub struct Upstream {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Released by the test to let the SSE stream send its second event.
    pub release: Arc<Notify>,
    pub addr: Option<SocketAddr>,
    pub tls: bool,
}

/// The test CA that signed the HTTPS upstream's certificate.
pub const TEST_CA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls/ca.pem");
/// The gateway's client certificate for [`Upstream::start_mtls`], and its key.
pub const TEST_CLIENT_CERT_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tls/gateway-client.pem"
);
pub const TEST_CLIENT_KEY_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tls/gateway-client.key"
);

impl Upstream {
    pub async fn start() -> Upstream {
        let (up, listener) = Self::bind(false).await;
        let app = up.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        up
    }

    /// The same upstream over HTTPS, as `127.0.0.1` with a certificate from
    /// the test CA ([`TEST_CA_FILE`]).
    pub async fn start_tls() -> Upstream {
        Self::serve_tls(server_tls(false)).await
    }

    /// The HTTPS upstream that also requires a client certificate from the
    /// test client CA (`client-ca.pem`; the gateway's is
    /// [`TEST_CLIENT_CERT_FILE`]): a handshake without one fails.
    pub async fn start_mtls() -> Upstream {
        Self::serve_tls(server_tls(true)).await
    }

    async fn serve_tls(config: rustls::ServerConfig) -> Upstream {
        let (up, tcp) = Self::bind(true).await;
        let app = up.router();
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        up
    }

    async fn bind(tls: bool) -> (Upstream, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Upstream {
            addr: Some(listener.local_addr().unwrap()),
            tls,
            ..Upstream::default()
        };
        (up, listener)
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/.well-known/agent-card.json", get(card))
            .route("/slow", any(slow))
            .route("/stream", any(stream))
            .fallback(any(echo))
            .with_state(self.clone())
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr.unwrap())
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn record(up: &Upstream, req: Request) -> Seen {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.to_string(),
        headers: parts.headers,
        body,
    };
    up.seen.lock().unwrap().push(seen.clone());
    seen
}

async fn echo(State(up): State<Upstream>, req: Request) -> Response {
    let seen = record(&up, req).await;
    let id = serde_json::from_slice::<Value>(&seen.body)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(Value::Null);
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": {"path": seen.path}})).into_response()
}

async fn slow(State(up): State<Upstream>, req: Request) -> Response {
    record(&up, req).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    StatusCode::OK.into_response()
}

async fn stream(State(up): State<Upstream>, req: Request) -> Response {
    record(&up, req).await;
    let release = up.release.clone();
    let events = async_stream(release);
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap()
}

fn async_stream(
    release: Arc<Notify>,
) -> impl futures_core::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(bytes::Bytes::from_static(b"data: first\n\n")))
            .await;
        release.notified().await;
        let _ = tx
            .send(Ok(bytes::Bytes::from_static(b"data: second\n\n")))
            .await;
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn card(State(up): State<Upstream>) -> Response {
    axum::Json(json!({
        "name": "Expense agent",
        "description": "Files expenses",
        "version": "1.0.0",
        "supportedInterfaces": [{"url": format!("{}/", up.url()), "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        "capabilities": {"streaming": true},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [
            {"id": "submit", "name": "Submit", "description": "Submit an expense", "tags": ["expense"]},
            {"id": "list", "name": "List", "description": "List expenses", "tags": []}
        ]
    }))
    .into_response()
}

/// The test upstream's TLS; with `client_auth`, clients must show a
/// certificate from the test client CA.
fn server_tls(client_auth: bool) -> rustls::ServerConfig {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
    let certs = CertificateDer::pem_file_iter(format!("{dir}/upstream.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{dir}/upstream.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(format!("{dir}/client-ca.pem")).unwrap())
            .unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder.with_single_cert(certs, key).unwrap()
}

/// Accepts TCP connections and completes their TLS handshakes; a failed
/// handshake (a client that does not trust the test CA) is dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
