//! Sign-in through an upstream OpenID Provider (`[[login.oidc]]`): a small
//! real provider served in-test over HTTP on loopback (discovery, JWKS, an
//! /authorize that redirects straight back, a /token that signs ID tokens
//! with a mandate-jose key and records what it received), driven through a
//! browser's eyes from the client's /authorize to tokens; then each way the
//! callback must be refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use mandate_jose::{PrivateKeyDer, SigningAlg, SigningKey};
use mandate_testkit::{for_each_backend, TestDb};
use mandate_types::{Clock, FixedClock, SystemClock};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::common::browser::{Browser, Page};
use crate::common::code_flow::*;
use crate::common::*;

const RP_SECRET: &str = "corp-oidc-secret-of-some-length";
const CALLBACK: &str = "/login/oidc/corp/callback";

// ---------------------------------------------------------------------------
// The OpenID Provider
// ---------------------------------------------------------------------------

/// What the provider will do differently on its next answers.
#[derive(Default)]
struct Behaviour {
    /// Claims merged into the ID token (`null` removes one).
    claims: Value,
    /// Sign with another key, keeping the real key's `kid`.
    bad_signature: bool,
    /// Send this `state` back instead of the one received.
    state: Option<String>,
}

#[derive(Default)]
struct Seen {
    authorize: Vec<HashMap<String, String>>,
    /// (Authorization header, form) of each token request.
    token: Vec<(Option<String>, HashMap<String, String>)>,
}

struct OpState {
    url: String,
    key: Mutex<SigningKey>,
    impostor: SigningKey,
    clock: Arc<FixedClock>,
    codes: Mutex<HashMap<String, String>>,
    seen: Mutex<Seen>,
    behaviour: Mutex<Behaviour>,
    subject: Mutex<String>,
    username: Mutex<String>,
}

#[derive(Clone)]
struct Op(Arc<OpState>);

fn es256() -> SigningKey {
    SigningKey::from_private(
        SigningAlg::ES256,
        &PrivateKeyDer::generate(SigningAlg::ES256).unwrap(),
    )
    .unwrap()
}

impl Op {
    async fn start(clock: Arc<FixedClock>) -> Op {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let op = Op(Arc::new(OpState {
            url,
            key: Mutex::new(es256()),
            impostor: es256(),
            clock,
            codes: Mutex::default(),
            seen: Mutex::default(),
            behaviour: Mutex::default(),
            subject: Mutex::new("248289761001".into()),
            username: Mutex::new("alice".into()),
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(op.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        op
    }

    fn url(&self) -> &str {
        &self.0.url
    }

    fn behave(&self, b: Behaviour) {
        *self.0.behaviour.lock().unwrap() = b;
    }

    fn be(&self, subject: &str, username: &str) {
        *self.0.subject.lock().unwrap() = subject.into();
        *self.0.username.lock().unwrap() = username.into();
    }

    /// A new signing key (and `kid`) in place of the old one.
    fn rotate_key(&self) {
        *self.0.key.lock().unwrap() = es256();
    }

    fn last_authorize(&self) -> HashMap<String, String> {
        self.0
            .seen
            .lock()
            .unwrap()
            .authorize
            .last()
            .unwrap()
            .clone()
    }

    fn last_token(&self) -> (Option<String>, HashMap<String, String>) {
        self.0.seen.lock().unwrap().token.last().unwrap().clone()
    }

    fn token_requests(&self) -> usize {
        self.0.seen.lock().unwrap().token.len()
    }
}

async fn discovery(State(op): State<Op>) -> Json<Value> {
    let u = op.url();
    Json(json!({
        "issuer": u,
        "authorization_endpoint": format!("{u}/authorize"),
        "token_endpoint": format!("{u}/token"),
        "jwks_uri": format!("{u}/jwks"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

async fn jwks(State(op): State<Op>) -> Json<Value> {
    Json(json!({ "keys": [op.0.key.lock().unwrap().public_jwk()] }))
}

/// Signs the user in at once and sends the browser back.
async fn authorize(State(op): State<Op>, Query(q): Query<HashMap<String, String>>) -> Response {
    let code = mandate_types::random_token(16);
    op.0.codes
        .lock()
        .unwrap()
        .insert(code.clone(), q.get("nonce").cloned().unwrap_or_default());
    op.0.seen.lock().unwrap().authorize.push(q.clone());
    let state = op.0.behaviour.lock().unwrap().state.clone();
    let state = state.unwrap_or_else(|| q["state"].clone());
    let mut back = url::Url::parse(&q["redirect_uri"]).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &state);
    Redirect::to(back.as_str()).into_response()
}

async fn token(
    State(op): State<Op>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    op.0.seen.lock().unwrap().token.push((auth, form.clone()));
    let Some(nonce) = op.0.codes.lock().unwrap().remove(&form["code"]) else {
        return (
            AxumStatus::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let now = op.0.clock.now();
    let mut claims = json!({
        "iss": op.url(),
        "sub": *op.0.subject.lock().unwrap(),
        "aud": "mandate-rp",
        "exp": now + 300,
        "iat": now,
        "nonce": nonce,
        "preferred_username": *op.0.username.lock().unwrap(),
        "email": "alice@corp.example",
    });
    let b = op.0.behaviour.lock().unwrap();
    if let Some(o) = b.claims.as_object() {
        for (k, v) in o {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
    }
    let mut id_token = op.0.key.lock().unwrap().sign("JWT", &claims).unwrap();
    if b.bad_signature {
        let forged = op.0.impostor.sign("JWT", &claims).unwrap();
        let (head, _) = id_token.rsplit_once('.').unwrap();
        let (_, sig) = forged.rsplit_once('.').unwrap();
        id_token = format!("{head}.{sig}");
    }
    Json(json!({
        "access_token": "upstream-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}

// ---------------------------------------------------------------------------
// A browser
// ---------------------------------------------------------------------------

impl Browser<'_> {
    /// From the client's /authorize to the provider and back: returns the
    /// callback path (on this server) the provider redirected to.
    async fn through_provider(&mut self, op: &Op) -> String {
        let login = self.get(&authorize_path(&[("scope", "read")])).await;
        assert_eq!(login.status, StatusCode::OK);
        assert!(
            login.body.contains("Sign in with Corp SSO"),
            "{}",
            login.body
        );
        let go = self
            .post(
                "/login/oidc/corp",
                &[
                    ("csrf", &login.hidden("csrf")),
                    ("request", &login.hidden("request")),
                ],
            )
            .await;
        assert_eq!(go.status, StatusCode::FOUND, "{}", go.body);
        let to_op = go.location.unwrap();
        assert!(
            to_op.starts_with(&format!("{}/authorize?", op.url())),
            "{to_op}"
        );
        // The provider needs none of this server's cookies.
        let back = self.http.get(&to_op).send().await.unwrap();
        assert_eq!(back.status(), StatusCode::SEE_OTHER);
        let back = back.headers()["location"].to_str().unwrap().to_owned();
        back.strip_prefix(ISSUER)
            .unwrap_or_else(|| panic!("back to {back}"))
            .to_owned()
    }
}

async fn start(db: &TestDb) -> (Harness, Op) {
    let clock = Arc::new(FixedClock::new(SystemClock.now()));
    let op = Op::start(Arc::clone(&clock)).await;
    let extra = format!(
        r#"{HOST_CLIENT}
[login]
insecure_allow_http_oidc_on_loopback = true

[[login.oidc]]
id = "corp"
name = "Corp SSO"
issuer = "{issuer}"
client_id = "mandate-rp"
client_secret_env = "CORP_OIDC_SECRET"
"#,
        issuer = op.url()
    );
    let h = Harness::start_full(
        db,
        &extra,
        &[("CORP_OIDC_SECRET", RP_SECRET)],
        Arc::new(ClientKey::new(SigningAlg::ES256)),
        clock,
    )
    .await;
    // A local password user whose name the provider will also suggest.
    add_alice(&h).await;
    (h, op)
}

async fn users(h: &Harness) -> Vec<Value> {
    let (s, v) = h.admin_send(Method::GET, "/admin/users", None).await;
    assert_eq!(s, StatusCode::OK);
    v.as_array().unwrap().clone()
}

fn form_of(page: &Page) -> [(&'static str, String); 4] {
    [
        ("csrf", page.hidden("csrf")),
        ("request", page.hidden("request")),
        ("scope", "read".to_owned()),
        ("decision", "approve".to_owned()),
    ]
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

async fn sign_in_through_the_provider_then_consent_and_tokens(db: &TestDb) {
    let (h, op) = start(db).await;
    let mut b = Browser::new(&h);
    let callback = b.through_provider(&op).await;
    assert!(callback.starts_with(&format!("{CALLBACK}?")), "{callback}");

    // What the provider was asked: code flow, PKCE S256, state, nonce.
    let asked = op.last_authorize();
    assert_eq!(asked["response_type"], "code");
    assert_eq!(asked["client_id"], "mandate-rp");
    assert_eq!(asked["redirect_uri"], format!("{ISSUER}{CALLBACK}"));
    assert_eq!(asked["scope"], "openid email profile");
    assert_eq!(asked["code_challenge_method"], "S256");
    assert!(asked["state"].len() >= 32 && asked["nonce"].len() >= 32);
    assert_ne!(asked["state"], asked["nonce"]);

    // Back at this server: signed in, and on to the consent page.
    let consent = b.get(&callback).await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    assert!(b.cookies.contains_key("mandate_session"));
    // Never merged with the local password user "alice".
    assert!(
        consent
            .body
            .contains("Signed in as <strong>alice@corp</strong>"),
        "{}",
        consent.body
    );

    // The code exchange: client_secret_basic, the PKCE verifier of the challenge.
    let (auth, form) = op.last_token();
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("mandate-rp:{RP_SECRET}"))
    );
    assert_eq!(auth.as_deref(), Some(basic.as_str()));
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["redirect_uri"], format!("{ISSUER}{CALLBACK}"));
    assert!(!form.contains_key("client_secret"));
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(form["code_verifier"].as_bytes()));
    assert_eq!(challenge, asked["code_challenge"]);

    // Consent, code, tokens: like any other sign-in.
    let done = b
        .post(
            "/consent",
            &form_of(&consent)
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(done.query("state").as_deref(), Some("xyz"));
    let code = done.query("code").unwrap();
    let (s, _, tokens) = redeem(&h, &code, VERIFIER).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    let claims = h
        .verify_independently(tokens["access_token"].as_str().unwrap(), API)
        .await;
    let all = users(&h).await;
    let linked = all.iter().find(|u| u["username"] == "alice@corp").unwrap();
    let local = all.iter().find(|u| u["username"] == "alice").unwrap();
    assert_eq!(
        claims["sub"], linked["id"],
        "the token is the upstream user's"
    );
    assert_ne!(claims["sub"], local["id"]);

    // The state was single use.
    let replay = b.get(&callback).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert!(replay.location.is_none());
    assert_eq!(
        op.token_requests(),
        1,
        "a replayed state reaches no provider"
    );

    // A second sign-in from another browser finds the same user.
    let mut other = Browser::new(&h);
    let callback = other.through_provider(&op).await;
    let again = other.get(&callback).await;
    assert_eq!(
        again.status,
        StatusCode::FOUND,
        "remembered consent: {}",
        again.body
    );
    assert!(again.query("code").is_some());
    assert_eq!(users(&h).await.len(), 2, "no second linked user");
    // The linked user has no password.
    let mut third = Browser::new(&h);
    let login = third.get(&authorize_path(&[("scope", "read")])).await;
    let refused = third
        .post(
            "/login",
            &[
                ("csrf", &login.hidden("csrf")),
                ("request", &login.hidden("request")),
                ("username", "alice@corp"),
                ("password", ""),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    let events = h.audit().await;
    let ok: Vec<_> = events
        .iter()
        .filter(|e| e.event.kind == "login.oidc.succeeded")
        .collect();
    assert_eq!(ok.len(), 2);
    assert_eq!(
        ok[0].event.subject.as_ref(),
        linked["id"].as_str().map(str::to_owned).as_ref()
    );
    assert_eq!(ok[0].event.reason.as_deref(), Some("provider corp"));
    assert!(events.iter().any(|e| e.event.kind == "login.oidc.failed"
        && e.event
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("already used"))));
    // Nothing secret reached the audit trail.
    let trail = serde_json::to_string(&events).unwrap();
    assert!(!trail.contains(RP_SECRET) && !trail.contains(&form["code_verifier"]));
}
for_each_backend!(
    sign_in_through_the_provider_then_consent_and_tokens,
    sign_in_through_the_provider_then_consent_and_tokens
);

/// The callback is refused, shown on a page (never redirected to the
/// client), and audited with the reason.
async fn refused(b: &mut Browser<'_>, op: &Op, behaviour: Behaviour, reason: &str) {
    op.behave(behaviour);
    let callback = b.through_provider(op).await;
    let page = b.get(&callback).await;
    op.behave(Behaviour::default());
    assert!(
        page.status.is_client_error(),
        "{reason}: {} {}",
        page.status,
        page.body
    );
    assert!(page.location.is_none(), "{reason}: never redirected");
    assert!(!b.cookies.contains_key("mandate_session"), "{reason}");
    let events = b.h.audit().await;
    let last = events
        .iter()
        .rev()
        .find(|e| e.event.kind.starts_with("login.oidc."))
        .unwrap();
    assert_eq!(last.event.kind, "login.oidc.failed", "{reason}");
    let got = last.event.reason.as_deref().unwrap();
    assert!(
        got.starts_with("provider corp: ") && got.contains(reason),
        "{reason}: {got}"
    );
}

async fn refused_callbacks(db: &TestDb) {
    let (h, op) = start(db).await;
    let mut b = Browser::new(&h);
    let now = h.clock.now();
    let cases = [
        (
            Behaviour {
                state: Some("forged-state".into()),
                ..Behaviour::default()
            },
            "state unknown",
        ),
        (
            Behaviour {
                claims: json!({"nonce": "not-the-nonce"}),
                ..Behaviour::default()
            },
            "wrong nonce",
        ),
        (
            Behaviour {
                claims: json!({"aud": "someone-else"}),
                ..Behaviour::default()
            },
            "wrong audience",
        ),
        (
            Behaviour {
                claims: json!({"aud": ["mandate-rp", "someone-else"]}),
                ..Behaviour::default()
            },
            "azp",
        ),
        (
            Behaviour {
                claims: json!({"exp": now - 600, "iat": now - 900}),
                ..Behaviour::default()
            },
            "expired",
        ),
        (
            Behaviour {
                claims: json!({"iss": "https://evil.example"}),
                ..Behaviour::default()
            },
            "wrong issuer",
        ),
        (
            Behaviour {
                bad_signature: true,
                ..Behaviour::default()
            },
            "bad signature",
        ),
    ];
    for (behaviour, reason) in cases {
        refused(&mut b, &op, behaviour, reason).await;
    }

    // The state belongs to the browser that started the sign-in.
    let callback = b.through_provider(&op).await;
    let mut thief = Browser::new(&h);
    let stolen = thief.get(&callback).await;
    assert_eq!(stolen.status, StatusCode::BAD_REQUEST);
    assert!(!thief.cookies.contains_key("mandate_session"));
    // ...and was spent by that attempt.
    assert_eq!(b.get(&callback).await.status, StatusCode::BAD_REQUEST);

    // A disabled linked user is refused.
    op.be("subject-bob", "bob");
    let callback = b.through_provider(&op).await;
    assert_eq!(b.get(&callback).await.status, StatusCode::OK);
    let (s, _) = h
        .admin_send(Method::POST, "/admin/users/bob/disable", None)
        .await;
    assert_eq!(s.as_u16() / 100, 2);
    let mut fresh = Browser::new(&h);
    refused(&mut fresh, &op, Behaviour::default(), "disabled").await;
    let mut fresh = Browser::new(&h);
    let callback = fresh.through_provider(&op).await;
    let page = fresh.get(&callback).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("disabled"));

    // The provider rotates its key: the unknown kid refetches the JWK Set,
    // at most once a minute.
    op.be("subject-carol", "carol");
    op.rotate_key();
    let mut carol = Browser::new(&h);
    refused(&mut carol, &op, Behaviour::default(), "unknown key").await;
    h.clock
        .advance(mandate_core::upstream_login::JWKS_REFETCH_EVERY + 1);
    let callback = carol.through_provider(&op).await;
    let page = carol.get(&callback).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    // An unknown provider.
    let page = b.get("/login/oidc/nobody/callback?state=x&code=y").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
}
for_each_backend!(refused_callbacks, refused_callbacks);
