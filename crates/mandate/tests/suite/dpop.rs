//! DPoP at the token endpoint (RFC 9449): nonces, binding, replay, and the
//! clients that must use it.

use mandate_jose::SigningAlg;
use mandate_testkit::{for_each_backend, TestDb};
use mandate_types::Clock as _;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

const DPOP_CLIENT: &str = r#"
[[clients]]
client_id = "bound-agent"
grant_types = ["client_credentials"]
scopes = ["read"]
resources = ["https://api.example.com"]
secret_env = "AGENT_SECRET"
require_dpop = true
"#;

async fn token_with_proof(
    h: &Harness,
    client: &str,
    proof: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = h
        .http
        .post(format!("{}/token", h.base))
        .basic_auth(client, Some(SECRET))
        .form(&[("grant_type", "client_credentials")]);
    if let Some(p) = proof {
        req = req.header("dpop", p);
    }
    into_parts(req.send().await.unwrap()).await
}

/// A DPoP-bound token for agent-basic, bound to `key`: the first proof earns
/// the server's nonce, the second carries it. Returns (nonce, token).
async fn bound_token(h: &Harness, key: &ClientKey) -> (String, String) {
    let url = format!("{ISSUER}/token");
    let now = h.clock.now();
    let first = token_with_proof(
        h,
        "agent-basic",
        Some(&key.dpop_proof("POST", &url, now, None, None)),
    )
    .await;
    let nonce = first.1["dpop-nonce"].to_str().unwrap().to_owned();
    let (s, _, body) = token_with_proof(
        h,
        "agent-basic",
        Some(&key.dpop_proof("POST", &url, now, Some(&nonce), None)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    (nonce, body["access_token"].as_str().unwrap().to_owned())
}

async fn binding_nonces_and_replay(db: &TestDb) {
    let h = Harness::start_with(db, DPOP_CLIENT, &[]).await;
    let key = ClientKey::new(SigningAlg::ES256);
    let url = format!("{ISSUER}/token");
    let now = h.clock.now();
    // No nonce yet: the server hands one out.
    let first = token_with_proof(
        &h,
        "agent-basic",
        Some(&key.dpop_proof("POST", &url, now, None, None)),
    )
    .await;
    assert_oauth_error(&first, 400, "use_dpop_nonce");
    let nonce = first.1["dpop-nonce"].to_str().unwrap().to_owned();
    // With it: a DPoP-bound token.
    let proof = key.dpop_proof("POST", &url, now, Some(&nonce), None);
    let (s, _, body) = token_with_proof(&h, "agent-basic", Some(&proof)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let claims = h
        .verify_independently(body["access_token"].as_str().unwrap(), API)
        .await;
    assert_eq!(claims["cnf"]["jkt"], key.public().thumbprint().unwrap());
    // The same proof again: replayed.
    assert_oauth_error(
        &token_with_proof(&h, "agent-basic", Some(&proof)).await,
        400,
        "invalid_dpop_proof",
    );
    // Wrong htu, wrong htm, stale, a made-up nonce, two headers.
    for (why, p) in [
        (
            "htu",
            key.dpop_proof(
                "POST",
                "https://elsewhere.example/token",
                now,
                Some(&nonce),
                None,
            ),
        ),
        ("htm", key.dpop_proof("GET", &url, now, Some(&nonce), None)),
        (
            "stale",
            key.dpop_proof("POST", &url, now - 3600, Some(&nonce), None),
        ),
        ("garbage", "not.a.proof".to_owned()),
    ] {
        let got = token_with_proof(&h, "agent-basic", Some(&p)).await;
        assert_eq!(got.2["error"], "invalid_dpop_proof", "{why}");
    }
    assert_oauth_error(
        &token_with_proof(
            &h,
            "agent-basic",
            Some(&key.dpop_proof("POST", &url, now, Some("made-up"), None)),
        )
        .await,
        400,
        "use_dpop_nonce",
    );
    // A client that must use DPoP cannot get a bearer token.
    assert_oauth_error(
        &token_with_proof(&h, "bound-agent", None).await,
        400,
        "invalid_dpop_proof",
    );
    let (s, _, body) = token_with_proof(
        &h,
        "bound-agent",
        Some(&key.dpop_proof("POST", &url, now, Some(&nonce), None)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // Nonces last two windows, then expire.
    h.clock.advance(700);
    let later = h.clock.now();
    assert_oauth_error(
        &token_with_proof(
            &h,
            "agent-basic",
            Some(&key.dpop_proof("POST", &url, later, Some(&nonce), None)),
        )
        .await,
        400,
        "use_dpop_nonce",
    );
    // The metadata says DPoP is supported.
    let (_, _, meta) = h.get_json("/.well-known/oauth-authorization-server").await;
    assert!(meta["dpop_signing_alg_values_supported"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
}
for_each_backend!(binding_nonces_and_replay, binding_nonces_and_replay);

/// The gateway demands proof of possession for bound tokens (RFC 9449 §7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_checks_proof_of_possession() {
    let up = crate::common::upstream::Upstream::start().await;
    let db = TestDb::sqlite();
    let toml: &'static str = Box::leak(
        format!("[[gateway.routes]]\npath = \"/agents/pay\"\nupstream = \"{}\"\nresource = \"{API}\"\nscopes = [\"read\"]\n", up.url())
            .into_boxed_str(),
    );
    let h = Harness::start_with(&db, toml, &[("MANDATE_UNUSED", "")]).await;
    let key = ClientKey::new(SigningAlg::EdDSA);
    let now = h.clock.now();
    let (_, bound) = bound_token(&h, &key).await;
    let path = "/agents/pay/tasks/1";
    let htu = format!("{ISSUER}{path}");
    let call = |scheme: &'static str, token: String, proof: Option<String>| {
        let h = &h;
        async move {
            let mut req = h
                .http
                .get(format!("{}{path}", h.base))
                .header("authorization", format!("{scheme} {token}"));
            if let Some(p) = proof {
                req = req.header("dpop", p);
            }
            let resp = req.send().await.unwrap();
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (resp.status(), challenge)
        }
    };
    // Stolen and replayed as a bearer token: refused.
    let (s, c) = call("Bearer", bound.clone(), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(c.starts_with("DPoP ") && c.contains("invalid_token"), "{c}");
    // With the key: accepted once.
    let proof = key.dpop_proof("GET", &htu, now, None, Some(&bound));
    assert_eq!(
        call("DPoP", bound.clone(), Some(proof.clone())).await.0,
        StatusCode::OK
    );
    let (s, c) = call("DPoP", bound.clone(), Some(proof)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "replayed proof");
    assert!(c.contains("invalid_dpop_proof"), "{c}");
    // A proof from another key, for another URL, without ath, or none at all.
    let thief = ClientKey::new(SigningAlg::EdDSA);
    for (why, proof) in [
        (
            "other key",
            Some(thief.dpop_proof("GET", &htu, now, None, Some(&bound))),
        ),
        (
            "other url",
            Some(key.dpop_proof(
                "GET",
                &format!("{ISSUER}/agents/pay/other"),
                now,
                None,
                Some(&bound),
            )),
        ),
        ("no ath", Some(key.dpop_proof("GET", &htu, now, None, None))),
        ("no proof", None),
    ] {
        assert_eq!(
            call("DPoP", bound.clone(), proof).await.0,
            StatusCode::UNAUTHORIZED,
            "{why}"
        );
    }
    // An unbound token may not use the DPoP scheme; as Bearer it is fine.
    let plain = h.access_token().await;
    assert_eq!(
        call(
            "DPoP",
            plain.clone(),
            Some(key.dpop_proof("GET", &htu, now, None, Some(&plain)))
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(call("Bearer", plain, None).await.0, StatusCode::OK);
    assert_eq!(
        up.count(),
        2,
        "only the two good calls reached the upstream"
    );
}

/// A bound chain stays bound: a DPoP-bound subject token is exchanged only
/// for a token bound to the actor's own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_of_bound_tokens_stay_bound() {
    let db = TestDb::sqlite();
    let h = Harness::start_with(
        &db,
        r#"
[[clients]]
client_id = "exchanger"
grant_types = ["urn:ietf:params:oauth:grant-type:token-exchange"]
scopes = ["read"]
resources = ["https://api.example.com"]
secret_env = "AGENT_SECRET"
may_act_for = ["agent-basic"]
"#,
        &[],
    )
    .await;
    let now = h.clock.now();
    let url = format!("{ISSUER}/token");
    let holder = ClientKey::new(SigningAlg::EdDSA);
    let (nonce, bound) = bound_token(&h, &holder).await;
    let exchange = |proof: Option<String>| {
        let (h, bound) = (&h, &bound);
        async move {
            let mut req = h
                .http
                .post(format!("{}/token", h.base))
                .basic_auth("exchanger", Some(SECRET))
                .form(&[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("subject_token", bound.as_str()),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                ]);
            if let Some(p) = proof {
                req = req.header("dpop", p);
            }
            into_parts(req.send().await.unwrap()).await
        }
    };
    assert_oauth_error(&exchange(None).await, 400, "invalid_dpop_proof");
    let actor = ClientKey::new(SigningAlg::ES256);
    let (s, _, body) = exchange(Some(actor.dpop_proof(
        "POST",
        &url,
        now,
        Some(&nonce),
        None,
    )))
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let claims = h
        .verify_independently(body["access_token"].as_str().unwrap(), API)
        .await;
    assert_eq!(
        claims["cnf"]["jkt"],
        actor.public().thumbprint().unwrap(),
        "bound to the actor's key"
    );
}

/// `[gateway] dpop_nonce = true`: a proof without the server's nonce gets
/// 401 `use_dpop_nonce` with a `DPoP-Nonce` header, and the retry passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_can_require_server_nonces() {
    let up = crate::common::upstream::Upstream::start().await;
    let db = TestDb::sqlite();
    let toml: &'static str = Box::leak(
        format!("[gateway]\ndpop_nonce = true\n[[gateway.routes]]\npath = \"/agents/pay\"\nupstream = \"{}\"\nresource = \"{API}\"\nscopes = [\"read\"]\n", up.url())
            .into_boxed_str(),
    );
    let h = Harness::start_with(&db, toml, &[]).await;
    let key = ClientKey::new(SigningAlg::EdDSA);
    let now = h.clock.now();
    let (_, bound) = bound_token(&h, &key).await;
    let htu = format!("{ISSUER}/agents/pay/tasks/1");
    let call = |proof: String| {
        let (h, bound) = (&h, &bound);
        async move {
            h.http
                .get(format!("{}/agents/pay/tasks/1", h.base))
                .header("authorization", format!("DPoP {bound}"))
                .header("dpop", proof)
                .send()
                .await
                .unwrap()
        }
    };
    let resp = call(key.dpop_proof("GET", &htu, now, None, Some(&bound))).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("DPoP ") && challenge.contains("error=\"use_dpop_nonce\""),
        "{challenge}"
    );
    let fresh = resp.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "use_dpop_nonce");
    let resp = call(key.dpop_proof("GET", &htu, now, Some(&fresh), Some(&bound))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = call(key.dpop_proof("GET", &htu, now, Some("made-up"), Some(&bound))).await;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "a nonce the server never gave"
    );
}
