//! The gateway: every check of the guard, the challenges, A2A awareness,
//! streaming, identity headers, metadata, Agent Cards, upstream failures, and
//! the guard layer reaching the same decisions.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mandate_core::Store as _;
use mandate_testkit::{for_each_backend, TestDb};
use mandate_types::Clock as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::upstream::{
    Upstream, TEST_CA_FILE, TEST_CLIENT_CERT_FILE, TEST_CLIENT_KEY_FILE,
};
use crate::common::*;

const ROUTE: &str = "/agents/expense";

fn gateway_toml(up: &Upstream) -> String {
    format!(
        r#"
[gateway]
revocation_refresh = "1s"
card_rate_limit = 5
default_route = "{ROUTE}"

[[gateway.routes]]
path = "{ROUTE}"
upstream = "{up}"
protocol = "a2a"
resource = "{API}"
name = "Expense agent"
scopes = ["read"]
upstream_timeout = "1s"
[gateway.routes.operations]
SendMessage = ["write"]
CancelTask = ["admin"]
[gateway.routes.skills]
submit = ["write"]

[[gateway.routes]]
path = "/plain"
upstream = "{up}/base"
resource = "{OTHER}"
scopes = ["read"]
"#,
        up = up.url()
    )
}

async fn start(db: &TestDb) -> (Harness, Upstream) {
    let up = Upstream::start().await;
    let toml: &'static str = Box::leak(gateway_toml(&up).into_boxed_str());
    (Harness::start_with(db, toml, &[]).await, up)
}

fn rpc(method: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}})
}

impl Harness {
    async fn call(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match &body {
            Some(b) => self.http.post(&url).json(b),
            None => self.http.get(&url),
        };
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        into_parts(req.send().await.unwrap()).await
    }

    /// A token signed by Mandate's active key with these claims changed.
    fn forge(&self, changes: Value, typ: &str) -> String {
        let now = self.clock.now();
        let mut claims = json!({
            "iss": ISSUER, "sub": "agent-basic", "aud": API, "client_id": "agent-basic",
            "scope": "read write", "iat": now, "exp": now + 300, "jti": mandate_types::random_token(16),
        });
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let snapshot = self.authority().keys().snapshot();
        snapshot.signer(now).unwrap().sign(typ, &claims).unwrap()
    }
}

fn challenge(h: &reqwest::header::HeaderMap) -> String {
    h.get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn allows_and_forwards_identity(db: &TestDb) {
    let (h, up) = start(db).await;
    let token = h.access_token().await;
    let url = format!("{}{ROUTE}/tasks/t1?x=1", h.base);
    let resp = h
        .http
        .get(&url)
        .bearer_auth(&token)
        .header("x-mandate-subject", "forged-admin")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = up.last();
    assert_eq!(seen.path, "/tasks/t1?x=1");
    assert_eq!(seen.headers["x-mandate-subject"], "agent-basic");
    assert_eq!(seen.headers["x-mandate-client-id"], "agent-basic");
    assert_eq!(seen.headers["x-mandate-scope"], "read write");
    assert_eq!(seen.headers["x-mandate-operation"], "GetTask");
    assert!(
        seen.headers.get("authorization").is_none(),
        "the token is not passed on"
    );
    assert!(
        seen.headers.get("x-drop-me").is_none(),
        "hop-by-hop headers named in Connection are dropped"
    );
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(
        seen.headers["host"],
        up.addr.unwrap().to_string().as_str(),
        "the upstream sees its own host, the caller's goes in X-Forwarded-Host"
    );
    assert!(seen.headers["x-forwarded-host"]
        .to_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // JSON-RPC: the body reaches the upstream untouched.
    let (s, _, body) = h.call(ROUTE, Some(&token), Some(rpc("SendMessage"))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["id"], 1);
    assert_eq!(
        serde_json::from_slice::<Value>(&up.last().body).unwrap()["method"],
        "SendMessage"
    );
    assert_eq!(up.last().headers["x-forwarded-for"], "127.0.0.1");
    // Every decision is audited, without the token.
    let events = h
        .audit_until(|e| {
            e.event.kind == "gateway.allowed"
                && e.event
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains("operation=SendMessage"))
        })
        .await;
    assert!(events.iter().any(|e| e.event.kind == "gateway.allowed"
        && e.event
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("operation=SendMessage"))));
    assert!(!serde_json::to_string(&events).unwrap().contains(&token));
}
for_each_backend!(allows_and_forwards_identity, allows_and_forwards_identity);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_and_scopes() {
    let db = TestDb::sqlite();
    let (h, up) = start(&db).await;
    let prm = format!("{}/.well-known/oauth-protected-resource{ROUTE}", ISSUER);
    // No token: 401 with resource_metadata and the route's scope, no error code.
    let (s, headers, _) = h.call(ROUTE, None, Some(rpc("GetTask"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let c = challenge(&headers);
    assert!(c.starts_with("Bearer "), "{c}");
    assert!(c.contains(&format!("resource_metadata=\"{prm}\"")), "{c}");
    assert!(c.contains("scope=\"read\"") && !c.contains("error="), "{c}");
    // Read-only token calling SendMessage: 403 naming exactly the missing scope.
    let (_, _, t) = h.token_basic("agent-basic", &[("scope", "read")]).await;
    let read_only = t["access_token"].as_str().unwrap();
    let (s, headers, body) = h
        .call(ROUTE, Some(read_only), Some(rpc("message/send")))
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "v0.3 names get v1.0 rules: {body}"
    );
    let c = challenge(&headers);
    assert!(
        c.contains("error=\"insufficient_scope\"") && c.contains("scope=\"write\""),
        "{c}"
    );
    assert!(c.contains("resource_metadata="), "{c}");
    assert_eq!(body["error"], "insufficient_scope");
    // REST binding: cancel needs admin, which nobody has.
    let url = format!("{}{ROUTE}/tasks/t1:cancel", h.base);
    let full = h.access_token().await;
    let resp = h.http.post(&url).bearer_auth(&full).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(challenge(resp.headers()).contains("scope=\"admin\""));
    // Reading is fine with the read-only token; the upstream saw none of the refusals.
    let before = up.count();
    assert_eq!(
        h.call(ROUTE, Some(read_only), Some(rpc("GetTask"))).await.0,
        StatusCode::OK
    );
    assert_eq!(up.count(), before + 1);
    // Malformed JSON-RPC: a JSON-RPC error, the upstream never sees it.
    let resp = h
        .http
        .post(format!("{}{ROUTE}", h.base))
        .bearer_auth(&full)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32700);
    let (s, _, body) = h.call(ROUTE, Some(&full), Some(json!([1, 2]))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], -32600);
    assert_eq!(up.count(), before + 1);
}

/// Every check of the guard, each with its status and challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_check() {
    let db = TestDb::sqlite();
    let (h, up) = start(&db).await;
    let now = h.clock.now();
    let good = h.access_token().await;
    let parts: Vec<&str> = good.split('.').collect();
    let stranger = ClientKey::new(mandate_jose::SigningAlg::EdDSA);
    let mut foreign_claims = claims_of(&good);
    foreign_claims["jti"] = json!("x");
    let unknown_kid = stranger.key.sign("at+jwt", &foreign_claims).unwrap();
    let jwks = h.get_json("/jwks.json").await.2;
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let hmac = {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
        encode(
            &header,
            &claims_of(&good),
            &EncodingKey::from_secret(public_x.as_bytes()),
        )
        .unwrap()
    };
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#),
        parts[1]
    );
    let tampered = {
        let mut c = claims_of(&good);
        c["scope"] = json!("read write admin");
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(c.to_string()),
            parts[2]
        )
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            h.forge(json!({"exp": now - 120, "iat": now - 400}), "at+jwt"),
        ),
        (
            "not yet valid",
            h.forge(json!({"nbf": now + 600}), "at+jwt"),
        ),
        (
            "issued in the future",
            h.forge(json!({"iat": now + 600}), "at+jwt"),
        ),
        ("wrong audience", h.forge(json!({"aud": OTHER}), "at+jwt")),
        (
            "wrong issuer",
            h.forge(json!({"iss": "https://evil.example"}), "at+jwt"),
        ),
        ("not an access token", h.forge(json!({}), "JWT")),
        ("unknown kid", unknown_kid),
        ("alg none", none),
        ("HMAC with the public key", hmac),
        ("tampered payload", tampered),
        ("garbage", "abc.def.ghi".into()),
    ];
    let before = up.count();
    for (why, token) in cases {
        let (s, headers, body) = h.call(ROUTE, Some(&token), Some(rpc("GetTask"))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{why}: {body}");
        let c = challenge(&headers);
        assert!(
            c.contains("error=\"invalid_token\"") && c.contains("resource_metadata="),
            "{why}: {c}"
        );
    }
    // Token in the query string, oversized header, two Authorization headers: 400.
    let url = format!("{}{ROUTE}/tasks/t1?access_token={good}", h.base);
    assert_eq!(
        h.http.get(&url).send().await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let huge = "a".repeat(9000);
    let (s, _, _) = h.call(ROUTE, Some(&huge), Some(rpc("GetTask"))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let two = h
        .http
        .get(format!("{}{ROUTE}/tasks/t1", h.base))
        .header("authorization", format!("Bearer {good}"))
        .header("authorization", "Bearer other")
        .send()
        .await
        .unwrap();
    assert_eq!(two.status(), StatusCode::BAD_REQUEST);
    // Basic instead of Bearer counts as no token.
    let basic = h
        .http
        .get(format!("{}{ROUTE}/tasks/t1", h.base))
        .basic_auth("a", Some("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        up.count(),
        before,
        "no refused request reached the upstream"
    );
    // The good token still works; the time check moves with the clock.
    assert_eq!(
        h.call(ROUTE, Some(&good), Some(rpc("GetTask"))).await.0,
        StatusCode::OK
    );
    h.clock.advance(900 + 31);
    assert_eq!(
        h.call(ROUTE, Some(&good), Some(rpc("GetTask"))).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_the_gateway() {
    let db = TestDb::sqlite();
    let (h, _up) = start(&db).await;
    let token = h.access_token().await;
    assert_eq!(
        h.call(ROUTE, Some(&token), Some(rpc("GetTask"))).await.0,
        StatusCode::OK
    );
    let (s, _, _) = h
        .post_form(
            "/revoke",
            &[("token", &token)],
            Some(("agent-basic", SECRET)),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Honoured within revocation_refresh (1 s here); bounded polling, no timing assertion.
    let refused = eventually(100, std::time::Duration::from_millis(50), || async {
        let status = h.call(ROUTE, Some(&token), Some(rpc("GetTask"))).await.0;
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "a revoked token is refused once revocations refresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_without_buffering_and_reports_upstream_failures() {
    let db = TestDb::sqlite();
    let (h, up) = start(&db).await;
    let token = h.access_token().await;
    let mut resp = h
        .http
        .post(format!("{}{ROUTE}/stream", h.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(rpc("SendStreamingMessage").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // The first event arrives while the upstream is still holding the second.
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: first\n\n");
    up.release.notify_one();
    let second = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&second[..], b"data: second\n\n");
    // A slow upstream: 504; an unreachable one: 502.
    let (s, _, body) = h
        .call(&format!("{ROUTE}/slow"), Some(&token), Some(rpc("GetTask")))
        .await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{body}");
}

/// Shutdown stops accepting at once, lets a request in flight finish (here
/// the gateway gives up on a slow upstream after the route's 1 s), and
/// writes that request's decision to the audit trail before the store
/// closes. On PostgreSQL the last batch may go through a connection opened
/// on a listener thread, whose event loop must still be running then.
async fn shutdown_finishes_in_flight_requests_and_their_audit(db: &TestDb) {
    let (mut h, _up) = start(db).await;
    let token = h.access_token().await;
    let server = h.server.take().unwrap();
    let slow = format!("{ROUTE}/slow");
    let in_flight = h.call(&slow, Some(&token), Some(rpc("GetTask")));
    let stop = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let stopping = tokio::spawn(server.shutdown());
        let fresh = reqwest::Client::new();
        let healthz = format!("{}/healthz", h.base);
        let refused = eventually(50, std::time::Duration::from_millis(20), || async {
            fresh.get(&healthz).send().await.err()
        })
        .await;
        assert!(
            refused.is_some(),
            "still accepting new connections after shutdown began"
        );
        tokio::time::timeout(std::time::Duration::from_secs(15), stopping)
            .await
            .expect("shutdown finished")
            .unwrap();
    };
    let ((status, _, body), ()) = tokio::join!(in_flight, stop);
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let events = db.store().await.audit_after(0, 10_000).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e
                .event
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("route=/agents/expense")
                    && r.contains("reason=upstream_timeout"))),
        "the in-flight request's decision is in the trail"
    );
}
for_each_backend!(
    shutdown_is_graceful,
    shutdown_finishes_in_flight_requests_and_their_audit
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502() {
    let db = TestDb::sqlite();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml: &'static str = Box::leak(
        format!("[[gateway.routes]]\npath = \"/dead\"\nupstream = \"http://{dead}\"\nresource = \"{API}\"\nscopes = [\"read\"]\n")
            .into_boxed_str(),
    );
    let h = Harness::start_with(&db, toml, &[]).await;
    let token = h.access_token().await;
    let (s, _, body) = h.call("/dead/x", Some(&token), None).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "bad_gateway");
}

/// An https upstream is verified against the route's own CA
/// (`upstream_ca_file`); a route trusting only the public web PKI refuses the
/// same upstream with a 502, and the upstream never sees that request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_is_verified_against_the_routes_ca() {
    let db = TestDb::sqlite();
    let up = Upstream::start_tls().await;
    let toml: &'static str = Box::leak(
        format!(
            "[[gateway.routes]]\npath = \"/private-pki\"\nupstream = \"{url}/base\"\nresource = \"{API}\"\nscopes = [\"read\"]\nupstream_ca_file = \"{TEST_CA_FILE}\"\n\
             [[gateway.routes]]\npath = \"/public-pki\"\nupstream = \"{url}\"\nresource = \"{API}\"\nscopes = [\"read\"]\n",
            url = up.url()
        )
        .into_boxed_str(),
    );
    let h = Harness::start_with(&db, toml, &[]).await;
    let token = h.access_token().await;
    let (s, _, body) = h
        .call("/private-pki/rpc", Some(&token), Some(rpc("GetTask")))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["path"], "/base/rpc");
    let seen = up.last();
    assert_eq!(seen.headers["x-mandate-client-id"], "agent-basic");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(up.count(), 1);

    let (s, _, body) = h
        .call("/public-pki/rpc", Some(&token), Some(rpc("GetTask")))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "bad_gateway");
    assert_eq!(
        up.count(),
        1,
        "an upstream the route does not trust sees nothing"
    );
}

/// An upstream that requires a client certificate (mutual TLS) is reached
/// by the route that shows the gateway's (`upstream_client_cert_file` and
/// `upstream_client_key_file`); a route trusting the same CA without one is
/// refused at the handshake with a 502, and the upstream sees nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_requiring_a_client_certificate_gets_the_gateways() {
    let db = TestDb::sqlite();
    let up = Upstream::start_mtls().await;
    let toml: &'static str = Box::leak(
        format!(
            "[[gateway.routes]]\npath = \"/mtls\"\nupstream = \"{url}\"\nresource = \"{API}\"\nscopes = [\"read\"]\nupstream_ca_file = \"{TEST_CA_FILE}\"\n\
             upstream_client_cert_file = \"{TEST_CLIENT_CERT_FILE}\"\nupstream_client_key_file = \"{TEST_CLIENT_KEY_FILE}\"\n\
             [[gateway.routes]]\npath = \"/no-cert\"\nupstream = \"{url}\"\nresource = \"{API}\"\nscopes = [\"read\"]\nupstream_ca_file = \"{TEST_CA_FILE}\"\n",
            url = up.url()
        )
        .into_boxed_str(),
    );
    let h = Harness::start_with(&db, toml, &[]).await;
    let token = h.access_token().await;
    for _ in 0..2 {
        let (s, _, body) = h
            .call("/mtls/rpc", Some(&token), Some(rpc("GetTask")))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["result"]["path"], "/rpc");
    }
    assert_eq!(up.count(), 2);

    let (s, _, body) = h
        .call("/no-cert/rpc", Some(&token), Some(rpc("GetTask")))
        .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "bad_gateway");
    assert_eq!(up.count(), 2, "a handshake without a certificate fails");
}

/// A route's `rate_limit` counts each client's requests: past it, 429 with
/// `Retry-After`, audited as a denial, and the upstream never sees the
/// request; another client on the same route is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_rate_limit_counts_each_client() {
    let db = TestDb::sqlite();
    let up = Upstream::start().await;
    let toml: &'static str = Box::leak(
        format!(
            "[[gateway.routes]]\npath = \"/limited\"\nupstream = \"{url}\"\nresource = \"{API}\"\nscopes = [\"read\"]\nrate_limit = 2\n",
            url = up.url()
        )
        .into_boxed_str(),
    );
    let h = Harness::start_with(&db, toml, &[]).await;
    let token = h.access_token().await;
    for _ in 0..2 {
        let (s, _, body) = h.call("/limited/x", Some(&token), None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    let (s, headers, body) = h.call("/limited/x", Some(&token), None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "rate_limited");
    // Two a minute: the next one comes within 30 s.
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert_eq!(up.count(), 2, "the upstream never sees a refused request");

    let (s, _, other) = h
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "agent-post"),
                ("client_secret", SECRET),
                ("resource", API),
            ],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{other}");
    let other = other["access_token"].as_str().unwrap();
    let (s, _, body) = h.call("/limited/x", Some(other), None).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "another client has its own count: {body}"
    );

    h.audit_until(|e| {
        e.event.kind == "gateway.denied"
            && e.event.client_id.as_deref() == Some("agent-basic")
            && e.event
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("status=429 reason=rate_limited"))
    })
    .await;
}

/// What `mandate_server::start` says when the gateway configuration in
/// `extra` cannot start.
async fn start_up_error(extra: &str) -> String {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let toml = base_config(
        &db,
        &ClientKey::new(mandate_jose::SigningAlg::ES256).public(),
        extra,
    );
    let env = env_with(&[]);
    let flags = mandate_config::Overrides {
        data_dir: Some(dir.path().join("data").display().to_string()),
        ..mandate_config::Overrides::default()
    };
    let config = mandate_config::Config::load(Some(&toml), &flags, &env).unwrap();
    let clock: Arc<dyn mandate_types::Clock> = Arc::new(mandate_types::SystemClock);
    match mandate_server::start(&config, clock, &env).await {
        Ok(_) => panic!("started with {extra}"),
        Err(e) => e.to_string(),
    }
}

/// A CA file without a usable certificate stops start-up, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_ca_file_without_a_certificate_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let e = start_up_error(&format!(
        "[[gateway.routes]]\npath = \"/x\"\nupstream = \"https://127.0.0.1:9\"\nresource = \"{API}\"\nupstream_ca_file = \"{}\"\n",
        ca.display()
    ))
    .await;
    assert!(
        e.contains("gateway.routes[0].upstream_ca_file") && e.contains("no CERTIFICATE"),
        "{e}"
    );
}

/// A client certificate whose key is not its own, or a key file without a
/// key, stops start-up, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_without_its_key_stops_start_up() {
    let other_key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tls/upstream.key"
    );
    for key_file in [other_key, TEST_CLIENT_CERT_FILE] {
        let e = start_up_error(&format!(
            "[[gateway.routes]]\npath = \"/x\"\nupstream = \"https://127.0.0.1:9\"\nresource = \"{API}\"\n\
             upstream_client_cert_file = \"{TEST_CLIENT_CERT_FILE}\"\nupstream_client_key_file = \"{key_file}\"\n"
        ))
        .await;
        assert!(
            e.contains("gateway.routes[0].upstream_client_cert_file"),
            "{e}"
        );
        assert!(
            !e.contains("PRIVATE KEY-----"),
            "no key material in errors: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_resource_metadata_and_signed_card() {
    let db = TestDb::sqlite();
    let (h, _up) = start(&db).await;
    for path in [
        format!("/.well-known/oauth-protected-resource{ROUTE}"),
        "/.well-known/oauth-protected-resource".to_owned(),
    ] {
        let (s, _, prm) = h.get_json(&path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(prm["resource"], API);
        assert_eq!(prm["authorization_servers"], json!([ISSUER]));
        assert_eq!(prm["bearer_methods_supported"], json!(["header"]));
        assert_eq!(prm["scopes_supported"], json!(["admin", "read", "write"]));
        assert_eq!(prm["resource_name"], "Expense agent");
    }
    let (s, headers, card) = h
        .get_json(&format!("{ROUTE}/.well-known/agent-card.json"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age="));
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        card["supportedInterfaces"][0]["url"],
        format!("{ISSUER}{ROUTE}/")
    );
    let scheme = &card["securitySchemes"]["mandate"]["oauth2SecurityScheme"];
    assert_eq!(
        scheme["flows"]["clientCredentials"]["tokenUrl"],
        format!("{ISSUER}/token")
    );
    assert_eq!(
        scheme["flows"]["clientCredentials"]["scopes"]["read"],
        "Read things"
    );
    assert_eq!(
        card["skills"][0]["securityRequirements"][0]["schemes"]["mandate"]["list"],
        json!(["read", "write"])
    );
    // The signature verifies against Mandate's JWKS over the JCS form without `signatures`.
    let sig = &card["signatures"][0];
    let protected: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(sig["protected"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(protected["typ"], "JOSE");
    let mut unsigned = card.clone();
    unsigned.as_object_mut().unwrap().remove("signatures");
    let canonical = serde_json_canonicalizer::to_string(&unsigned).unwrap();
    let input = format!(
        "{}.{}",
        sig["protected"].as_str().unwrap(),
        URL_SAFE_NO_PAD.encode(canonical)
    );
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(h.get_json("/jwks.json").await.2).unwrap();
    let jwk = jwks
        .find(protected["kid"].as_str().unwrap())
        .expect("card kid is in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    assert!(jsonwebtoken::crypto::verify(
        sig["signature"].as_str().unwrap(),
        input.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::EdDSA
    )
    .unwrap());
    // The root card is the default route's; If-None-Match gives 304.
    let root = h
        .http
        .get(format!("{}/.well-known/agent-card.json", h.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), StatusCode::NOT_MODIFIED);
    // Rate limit: 5 a minute per address, then 429 with Retry-After.
    let mut limited = None;
    for _ in 0..10 {
        let r = h
            .http
            .get(format!("{}{ROUTE}/.well-known/agent.json", h.base))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("the card endpoint is rate-limited");
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}

/// The tower layer and the gateway decide the same way on the same table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_layer_matches_gateway() {
    use mandate_tower::keys::StaticKeys;
    use mandate_tower::{
        Guard, GuardLayer, NoRevocation, ProtectedResource, Protocol, TokenVerifier, TrustedIssuer,
    };
    use tower::ServiceExt as _;

    let db = TestDb::sqlite();
    let (h, _up) = start(&db).await;
    let jwks: mandate_jose::JwkSet =
        serde_json::from_value(h.get_json("/jwks.json").await.2).unwrap();
    let keys = StaticKeys([(ISSUER.to_owned(), Arc::new(jwks))].into());
    let verifier = TokenVerifier::new(
        [TrustedIssuer {
            issuer: ISSUER.into(),
            require_at_jwt: true,
        }],
        Arc::new(keys),
        Arc::new(NoRevocation),
        30,
    );
    let resource = ProtectedResource {
        resource: API.into(),
        resource_metadata: format!("{ISSUER}/.well-known/oauth-protected-resource{ROUTE}"),
        public_origin: ISSUER.into(),
        protocol: Protocol::A2a,
        scopes: mandate_types::ScopeSet::parse("read").unwrap(),
        operations: [
            (
                mandate_tower::A2aOperation::SendMessage,
                mandate_types::ScopeSet::parse("write").unwrap(),
            ),
            (
                mandate_tower::A2aOperation::CancelTask,
                mandate_types::ScopeSet::parse("admin").unwrap(),
            ),
        ]
        .into(),
        public: false,
        mcp: None,
    };
    let agent = axum::Router::new()
        .fallback(|| async { "ok" })
        .layer(GuardLayer::new(
            Arc::new(Guard::new(verifier)),
            resource,
            h.clock.clone(),
        ));
    let full = h.access_token().await;
    let read_only = h.token_basic("agent-basic", &[("scope", "read")]).await.2["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let now = h.clock.now();
    let cases: Vec<(&str, Option<String>, &str, Option<Value>)> = vec![
        ("no token", None, "POST", Some(rpc("GetTask"))),
        (
            "read GetTask",
            Some(read_only.clone()),
            "POST",
            Some(rpc("GetTask")),
        ),
        (
            "read SendMessage",
            Some(read_only.clone()),
            "POST",
            Some(rpc("SendMessage")),
        ),
        (
            "full SendMessage",
            Some(full.clone()),
            "POST",
            Some(rpc("message/send")),
        ),
        (
            "full CancelTask",
            Some(full.clone()),
            "POST",
            Some(rpc("CancelTask")),
        ),
        (
            "full REST cancel",
            Some(full.clone()),
            "POST /tasks/a:cancel",
            None,
        ),
        (
            "read REST get",
            Some(read_only.clone()),
            "GET /tasks/a",
            None,
        ),
        (
            "expired",
            Some(h.forge(json!({"exp": now - 100}), "at+jwt")),
            "POST",
            Some(rpc("GetTask")),
        ),
        (
            "wrong audience",
            Some(h.forge(json!({"aud": OTHER}), "at+jwt")),
            "POST",
            Some(rpc("GetTask")),
        ),
        (
            "bad json",
            Some(full.clone()),
            "POST",
            Some(json!("just a string")),
        ),
    ];
    for (why, token, how, body) in cases {
        let (method, sub) = how.split_once(' ').unwrap_or((how, ""));
        // Through the gateway.
        let url = format!("{}{ROUTE}{sub}", h.base);
        let mut req = h.http.request(method.parse().unwrap(), &url);
        if let Some(b) = &body {
            req = req.json(b);
        }
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let via_gateway = req.send().await.unwrap();
        let gw_status = via_gateway.status().as_u16();
        let gw_challenge = challenge(via_gateway.headers());
        // Through the layer, in process.
        let mut builder = axum::http::Request::builder()
            .method(method)
            .uri(if sub.is_empty() { "/" } else { sub });
        if let Some(t) = &token {
            builder = builder.header("authorization", format!("Bearer {t}"));
        }
        let request = match &body {
            Some(b) => builder
                .header("content-type", "application/json")
                .body(axum::body::Body::from(b.to_string())),
            None => builder.body(axum::body::Body::empty()),
        }
        .unwrap();
        let via_layer = agent.clone().oneshot(request).await.unwrap();
        let layer_challenge = via_layer
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert_eq!(via_layer.status().as_u16(), gw_status, "{why}");
        assert_eq!(layer_challenge, gw_challenge, "{why}");
    }
}

/// A trusted external issuer: keys found through its RFC 8414 metadata over
/// HTTP. Here the external issuer is a second Mandate on a real port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusts_an_external_issuer_through_discovery() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let external_issuer = format!("http://127.0.0.1:{port}");
    // The external authorization server: its own database and keys.
    let ext_db = TestDb::sqlite();
    let data = tempfile::tempdir().unwrap();
    let ext_toml = format!(
        "issuer = \"{external_issuer}\"\nlisten = \"127.0.0.1:{port}\"\ndatabase_url = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[resources]]\nid = \"{API}\"\nscopes = {{ read = \"r\" }}\n\
         [[clients]]\nclient_id = \"outsider\"\ngrant_types = [\"client_credentials\"]\nscopes = [\"read\"]\nsecret_env = \"AGENT_SECRET\"\n",
        ext_db.url()
    );
    let env = env_with(&[]);
    let flags = mandate_config::Overrides {
        data_dir: Some(data.path().display().to_string()),
        ..Default::default()
    };
    let ext_config = mandate_config::Config::load(Some(&ext_toml), &flags, &env).unwrap();
    let external = mandate_server::start(
        &ext_config,
        Arc::new(mandate_types::SystemClock),
        &|k: &str| (k == "MANDATE_MASTER_KEY").then(|| "22".repeat(32)),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{external_issuer}/token"))
        .basic_auth("outsider", Some(SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();

    // The gateway trusts it by configuration, and only it.
    let up = Upstream::start().await;
    let toml: &'static str = Box::leak(
        format!(
            "[[gateway.issuers]]\nissuer = \"{external_issuer}\"\nrequire_at_jwt = true\n\
             [[gateway.routes]]\npath = \"/ext\"\nupstream = \"{}\"\nresource = \"{API}\"\nscopes = [\"read\"]\n",
            up.url()
        )
        .into_boxed_str(),
    );
    let db = TestDb::sqlite();
    let h = Harness::start_with(&db, toml, &[]).await;
    let (s, _, body) = h.call("/ext/x", Some(&token), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        up.last().headers["x-mandate-issuer"],
        external_issuer.as_str()
    );
    // Mandate's own tokens still work on the same gateway.
    let own = h.access_token().await;
    assert_eq!(h.call("/ext/x", Some(&own), None).await.0, StatusCode::OK);
    external.shutdown().await;
}
