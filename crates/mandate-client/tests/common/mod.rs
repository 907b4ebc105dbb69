//! A real Mandate server in process (the bits of
//! `crates/mandate/tests/common/mod.rs` these tests need), an echo upstream
//! behind its gateway, and a resource server that insists on DPoP nonces.
//!
//! The issuer is `http://mandate.test`; the SDK's HTTP client resolves that
//! name to the server's ephemeral port, so DPoP `htu`s and assertion
//! audiences are the issuer's URLs, exactly as in production.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use mandate_client::{ClientCredentials, DpopKey, Endpoint, TokenSource, TokenSourceBuilder};
use mandate_config::{Config, Overrides};
use mandate_jose::{PrivateKeyDer, PublicJwk, SigningAlg, SigningKey};
use mandate_server::RunningServer;
use mandate_testkit::TestDb;
use mandate_types::{ClientSecret, Clock, FixedClock, SystemClock};
use serde_json::{json, Value};

pub const ISSUER: &str = "http://mandate.test";
pub const API: &str = "https://api.example.com";
pub const SECRET: &str = "a-test-secret-of-more-than-32-characters";
const MASTER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// A small HTTP server that records requests; `judge` decides the answer.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

type Judge = Arc<dyn Fn(&Seen, SocketAddr) -> Response + Send + Sync>;

impl Upstream {
    pub async fn start(judge: Judge) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Upstream {
            addr,
            seen: Arc::default(),
        };
        let app = Router::new()
            .fallback(record)
            .with_state((up.clone(), judge));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        up
    }

    /// Answers 200 with what it saw.
    pub async fn echo() -> Upstream {
        Self::start(Arc::new(|seen: &Seen, _| {
            (StatusCode::OK, axum::Json(json!({"path": seen.path}))).into_response()
        }))
        .await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn record(State((up, judge)): State<(Upstream, Judge)>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.to_string(),
        headers: parts.headers,
        body,
    };
    up.seen.lock().unwrap().push(seen.clone());
    judge(&seen, up.addr)
}

/// A fresh key for `alg`.
pub fn key(alg: SigningAlg) -> SigningKey {
    SigningKey::from_private(alg, &PrivateKeyDer::generate(alg).unwrap()).unwrap()
}

fn jwk_toml(jwk: &PublicJwk) -> String {
    let v = serde_json::to_value(jwk).unwrap();
    let fields: Vec<String> = v
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    format!("{{ {} }}", fields.join(", "))
}

pub struct Harness {
    pub server: Option<RunningServer>,
    pub admin: String,
    pub admin_token: String,
    pub clock: Arc<FixedClock>,
    /// Resolves `mandate.test` to the server.
    pub http: reqwest::Client,
    /// agent-jwt's private key (PKCS#8 DER), registered by its public half.
    jwt_der: Vec<u8>,
    pub upstream: Upstream,
    _db: TestDb,
    _data_dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Harness {
        let db = TestDb::sqlite();
        let jwt_der = PrivateKeyDer::generate(SigningAlg::EdDSA).unwrap();
        let jwt_key = SigningKey::from_private(SigningAlg::EdDSA, &jwt_der).unwrap();
        let upstream = Upstream::echo().await;
        let toml = format!(
            r#"
issuer = "{ISSUER}"
listen = "127.0.0.1:0"
database_url = "{db}"
[admin]
listen = "127.0.0.1:0"
[tokens]
leeway = "5s"

[[resources]]
id = "{API}"
scopes = {{ read = "Read", write = "Write", admin = "Administer" }}

[[clients]]
client_id = "agent-secret"
grant_types = ["client_credentials"]
scopes = ["read", "write"]
resources = ["{API}"]
secret_env = "AGENT_SECRET"

[[clients]]
client_id = "agent-jwt"
grant_types = ["client_credentials"]
scopes = ["read"]
resources = ["{API}"]
token_endpoint_auth_method = "private_key_jwt"
jwks = {{ keys = [ {jwk} ] }}

[[clients]]
client_id = "relay"
grant_types = ["{EXCHANGE}"]
scopes = ["read", "write", "admin"]
resources = ["{API}"]
secret_env = "AGENT_SECRET"
may_act_for = ["agent-secret", "agent-jwt"]

[[gateway.routes]]
path = "/agents/echo"
upstream = "{up}"
protocol = "http"
resource = "{API}"
scopes = ["read"]
"#,
            db = db.url(),
            jwk = jwk_toml(jwt_key.public_jwk()),
            up = upstream.url(),
        );
        let data_dir = tempfile::tempdir().unwrap();
        let env = |k: &str| match k {
            "AGENT_SECRET" => Some(SECRET.to_owned()),
            "MANDATE_MASTER_KEY" => Some(MASTER_KEY.to_owned()),
            _ => None,
        };
        let flags = Overrides {
            data_dir: Some(data_dir.path().display().to_string()),
            ..Overrides::default()
        };
        let config = Config::load(Some(&toml), &flags, &env).expect("test config is valid");
        let clock = Arc::new(FixedClock::new(SystemClock.now()));
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let server = mandate_server::start(&config, dyn_clock, &env)
            .await
            .expect("server starts");
        let http = reqwest::Client::builder()
            .resolve("mandate.test", server.public_addr)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Harness {
            admin: format!("http://{}", server.admin_addr),
            admin_token: server.admin_token.clone(),
            server: Some(server),
            clock,
            http,
            jwt_der: jwt_der.der().to_vec(),
            upstream,
            _db: db,
            _data_dir: data_dir,
        }
    }

    /// agent-jwt's key.
    pub fn jwt_key(&self) -> SigningKey {
        SigningKey::from_private(
            SigningAlg::EdDSA,
            &PrivateKeyDer::from_der(self.jwt_der.clone()),
        )
        .unwrap()
    }

    /// A builder for `credentials`, with the harness's HTTP client and clock.
    pub fn source(&self, credentials: ClientCredentials) -> TokenSourceBuilder {
        let clock: Arc<dyn Clock> = self.clock.clone();
        TokenSource::builder(credentials)
            .http_client(self.http.clone())
            .clock(clock)
    }

    pub fn secret_client(&self, client_id: &str) -> ClientCredentials {
        ClientCredentials::with_secret(
            Endpoint::token_url(&format!("{ISSUER}/token")).unwrap(),
            client_id,
            ClientSecret::new(SECRET.to_owned()),
        )
    }

    /// `client_id` (a secret client), bound to a fresh DPoP key.
    pub fn dpop_source(&self, client_id: &str) -> TokenSource {
        self.source(self.secret_client(client_id))
            .dpop(DpopKey::generate().unwrap())
            .build()
            .unwrap()
    }

    /// Every audit event so far.
    pub async fn audit(&self) -> Vec<mandate_audit::Event> {
        self.http
            .get(format!("{}/admin/audit?after=0&limit=10000", self.admin))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// How many events of `kind` name `client`.
    pub async fn count(&self, kind: &str, client: &str) -> usize {
        self.audit()
            .await
            .iter()
            .filter(|e| e.event.kind == kind && e.event.client_id.as_deref() == Some(client))
            .count()
    }
}

/// A JWT's claims, unchecked (the server made them; tests look inside).
pub fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}
