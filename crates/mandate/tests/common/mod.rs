//! The harness: a server on ephemeral ports with a controllable clock, plus
//! HTTP helpers that return status, headers and JSON.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod code_flow;
pub mod mcp_upstream;
pub mod upstream;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mandate_config::{Config, Overrides};
use mandate_jose::{PrivateKeyDer, PublicJwk, SigningAlg, SigningKey};
use mandate_server::RunningServer;
use mandate_testkit::TestDb;
use mandate_types::{Clock, FixedClock, SystemClock};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const ISSUER: &str = "https://mandate.test";
pub const API: &str = "https://api.example.com";
pub const OTHER: &str = "https://other.example.com";
pub const SECRET: &str = "a-test-secret-of-more-than-32-characters";
pub const MASTER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";

/// The configuration every test starts from; `extra` is appended.
pub fn base_config(db: &TestDb, jwt_client_key: &PublicJwk, extra: &str) -> String {
    let jwk = serde_json::to_string(jwt_client_key).unwrap();
    format!(
        r#"
issuer = "{ISSUER}"
listen = "127.0.0.1:0"
database_url = "{db_url}"
[admin]
listen = "127.0.0.1:0"
[tokens]
leeway = "5s"

[[resources]]
id = "{API}"
name = "Example API"
scopes = {{ read = "Read things", write = "Write things", admin = "Administer" }}

[[resources]]
id = "{OTHER}"
scopes = {{ read = "Read other things" }}
access_token_ttl = "5m"

[[clients]]
client_id = "agent-basic"
name = "Basic agent"
grant_types = ["client_credentials"]
scopes = ["read", "write"]
resources = ["{API}"]
secret_env = "AGENT_SECRET"

[[clients]]
client_id = "agent-post"
grant_types = ["client_credentials"]
scopes = ["read"]
token_endpoint_auth_method = "client_secret_post"
secret_env = "AGENT_SECRET"

[[clients]]
client_id = "agent-web"
grant_types = ["authorization_code"]
scopes = ["read"]
secret_env = "AGENT_SECRET"
redirect_uris = ["https://app.example/cb"]

[[clients]]
client_id = "agent-jwt"
grant_types = ["client_credentials"]
scopes = ["read"]
resources = ["{API}"]
token_endpoint_auth_method = "private_key_jwt"
jwks = {{ keys = [ {jwk_toml} ] }}
{extra}
"#,
        db_url = db.url(),
        jwk_toml = json_to_toml_inline(&jwk),
    )
}

pub fn json_to_toml_inline(json: &str) -> String {
    let v: Value = serde_json::from_str(json).unwrap();
    let fields: Vec<String> = v
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    format!("{{ {} }}", fields.join(", "))
}

/// A private_key_jwt client's key pair.
pub struct ClientKey {
    pub key: SigningKey,
}

impl ClientKey {
    pub fn new(alg: SigningAlg) -> Self {
        let key = SigningKey::from_private(alg, &PrivateKeyDer::generate(alg).unwrap()).unwrap();
        Self { key }
    }

    pub fn public(&self) -> PublicJwk {
        self.key.public_jwk().clone()
    }

    /// Signs a client assertion with these claims.
    pub fn assertion(&self, claims: &Value) -> String {
        self.key.sign("JWT", claims).unwrap()
    }
}

pub fn env_with(extra: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k: &str| {
        if k == "AGENT_SECRET" {
            return Some(SECRET.to_owned());
        }
        if k == "MANDATE_MASTER_KEY" {
            return Some(MASTER_KEY.to_owned());
        }
        extra
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// A running server and what a test needs to talk to it.
pub struct Harness {
    pub server: Option<RunningServer>,
    pub base: String,
    pub admin: String,
    pub admin_token: String,
    pub clock: Arc<FixedClock>,
    pub http: reqwest::Client,
    pub jwt_client: Arc<ClientKey>,
    pub data_dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(db: &TestDb) -> Self {
        Self::start_with(db, "", &[]).await
    }

    pub async fn start_with(
        db: &TestDb,
        extra_toml: &str,
        extra_env: &'static [(&'static str, &'static str)],
    ) -> Self {
        let jwt_client = Arc::new(ClientKey::new(SigningAlg::ES256));
        let clock = Arc::new(FixedClock::new(SystemClock.now()));
        Self::start_full(db, extra_toml, extra_env, jwt_client, clock).await
    }

    pub async fn start_full(
        db: &TestDb,
        extra_toml: &str,
        extra_env: &'static [(&'static str, &'static str)],
        jwt_client: Arc<ClientKey>,
        clock: Arc<FixedClock>,
    ) -> Self {
        let toml = base_config(db, &jwt_client.public(), extra_toml);
        Self::start_from_toml(&toml, extra_env, jwt_client, clock).await
    }

    async fn start_from_toml(
        toml: &str,
        extra_env: &'static [(&'static str, &'static str)],
        jwt_client: Arc<ClientKey>,
        clock: Arc<FixedClock>,
    ) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let env = env_with(extra_env);
        let flags = Overrides {
            data_dir: Some(data_dir.path().display().to_string()),
            ..Overrides::default()
        };
        let config = Config::load(Some(toml), &flags, &env).expect("test config is valid");
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let server = mandate_server::start(&config, dyn_clock, &env)
            .await
            .expect("server starts");
        Self {
            base: format!("http://{}", server.public_addr),
            admin: format!("http://{}", server.admin_addr),
            admin_token: server.admin_token.clone(),
            server: Some(server),
            clock,
            http: reqwest::Client::new(),
            jwt_client,
            data_dir,
        }
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// POSTs a form to `path`, optionally with HTTP Basic.
    pub async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        into_parts(req.send().await.unwrap()).await
    }

    /// A client_credentials request with Basic auth.
    pub async fn token_basic(
        &self,
        client: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut f = vec![("grant_type", "client_credentials")];
        f.extend_from_slice(form);
        self.post_form("/token", &f, Some((client, SECRET))).await
    }

    /// A fresh access token for agent-basic.
    pub async fn access_token(&self) -> String {
        let (status, _, body) = self.token_basic("agent-basic", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A client assertion from the configured private_key_jwt client.
    pub fn assertion(&self, overrides: Value) -> String {
        let now = self.clock.now();
        let mut claims = json!({
            "iss": "agent-jwt",
            "sub": "agent-jwt",
            "aud": format!("{ISSUER}/token"),
            "exp": now + 60,
            "iat": now,
            "jti": mandate_types::random_token(12),
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        self.jwt_client.assertion(&claims)
    }

    pub async fn admin_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let (s, _, v) = into_parts(req.send().await.unwrap()).await;
        (s, v)
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, HeaderMap, Value) {
        into_parts(
            self.http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Every audit event so far.
    pub async fn audit(&self) -> Vec<mandate_audit::Event> {
        let (s, v) = self
            .admin_send(
                reqwest::Method::GET,
                "/admin/audit?after=0&limit=10000",
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        serde_json::from_value(v).unwrap()
    }

    /// Verifies `token` independently of Mandate's own code: jsonwebtoken
    /// with the JWKS as served.
    pub async fn verify_independently(&self, token: &str, audience: &str) -> Value {
        let (_, _, jwks) = self.get_json("/jwks.json").await;
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let kid = header.kid.expect("kid on every token");
        let jwk = jwks.find(&kid).expect("token kid is in the JWKS");
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .expect("token verifies independently")
            .claims
    }
}

pub async fn into_parts(resp: reqwest::Response) -> (StatusCode, HeaderMap, Value) {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, headers, body)
}

/// Decodes a JWT's payload without checking it (for assertions on claims).
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Asserts an OAuth error response.
#[track_caller]
pub fn assert_oauth_error(got: &(StatusCode, HeaderMap, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "status; body {}", got.2);
    assert_eq!(got.2["error"], code, "error code; body {}", got.2);
    assert_eq!(
        got.1.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "errors carry Cache-Control: no-store"
    );
}

impl Harness {
    pub fn clock_now(&self) -> i64 {
        self.clock.now()
    }
}

impl Harness {
    pub fn authority(&self) -> &std::sync::Arc<mandate_core::Authority> {
        &self.server.as_ref().expect("running").authority
    }
}

/// Asks `check` up to `tries` times, `every` apart, until it answers
/// `Some`; `None` if it never did. For effects that land a moment after the
/// response that caused them (an audited decision, a refreshed revocation
/// list, a listener closing): bounded polling, never a timing assertion.
pub async fn eventually<T, Fut>(
    tries: u32,
    every: std::time::Duration,
    mut check: impl FnMut() -> Fut,
) -> Option<T>
where
    Fut: std::future::Future<Output = Option<T>>,
{
    for attempt in 0..tries {
        if attempt > 0 {
            tokio::time::sleep(every).await;
        }
        if let Some(found) = check().await {
            return Some(found);
        }
    }
    None
}

impl Harness {
    /// The audit trail once an event matching `pred` is in it. Gateway
    /// decisions are recorded without waiting, so they land a moment after
    /// the response.
    pub async fn audit_until(
        &self,
        pred: impl Fn(&mandate_audit::Event) -> bool,
    ) -> Vec<mandate_audit::Event> {
        eventually(100, std::time::Duration::from_millis(20), || async {
            let events = self.audit().await;
            events.iter().any(&pred).then_some(events)
        })
        .await
        .expect("the expected audit event never arrived")
    }
}

impl ClientKey {
    /// A DPoP proof (RFC 9449 §4.2) for `method` `url`, with optional nonce and token.
    pub fn dpop_proof(
        &self,
        method: &str,
        url: &str,
        iat: i64,
        nonce: Option<&str>,
        token: Option<&str>,
    ) -> String {
        let mut jwk = serde_json::to_value(self.public()).unwrap();
        jwk.as_object_mut().unwrap().remove("kid");
        let header = json!({"typ": "dpop+jwt", "alg": self.key.alg().as_str(), "jwk": jwk});
        let mut claims =
            json!({"jti": mandate_types::random_token(12), "htm": method, "htu": url, "iat": iat});
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        if let Some(t) = token {
            claims["ath"] = json!(mandate_jose::dpop::access_token_hash(t));
        }
        self.key.sign_with_header(&header, &claims).unwrap()
    }
}

impl Harness {
    /// Like [`Harness::start_full`], with `tokens_toml` added to the base
    /// configuration's `[tokens]` table (`extra_toml` is appended after the
    /// last `[[clients]]`, where that table cannot be reopened).
    pub async fn start_with_tokens(
        db: &TestDb,
        tokens_toml: &str,
        extra_toml: &str,
        extra_env: &'static [(&'static str, &'static str)],
        jwt_client: Arc<ClientKey>,
        clock: Arc<FixedClock>,
    ) -> Self {
        let toml = base_config(db, &jwt_client.public(), extra_toml).replacen(
            "[tokens]\n",
            &format!("[tokens]\n{tokens_toml}\n"),
            1,
        );
        Self::start_from_toml(&toml, extra_env, jwt_client, clock).await
    }

    /// The audit events after `seq` (at most 10 000).
    pub async fn audit_after(&self, seq: i64) -> Vec<mandate_audit::Event> {
        let (s, v) = self
            .admin_send(
                reqwest::Method::GET,
                &format!("/admin/audit?after={seq}&limit=10000"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        serde_json::from_value(v).unwrap()
    }
}
