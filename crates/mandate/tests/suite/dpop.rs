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
