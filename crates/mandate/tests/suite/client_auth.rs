//! Client authentication: client_secret_basic, client_secret_post,
//! private_key_jwt (RFC 7523), and their failures.

use mandate_testkit::{for_each_backend, TestDb};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

async fn secret_methods(db: &TestDb) {
    let h = Harness::start(db).await;
    // Wrong secret with Basic: 401 and a Basic challenge.
    let got = h
        .post_form(
            "/token",
            &[("grant_type", "client_credentials")],
            Some(("agent-basic", "presented-WRONG-secret-7f3a")),
        )
        .await;
    assert_oauth_error(&got, 401, "invalid_client");
    assert!(got.1["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    // Unknown client looks the same.
    let got = h
        .post_form(
            "/token",
            &[("grant_type", "client_credentials")],
            Some(("nobody", SECRET)),
        )
        .await;
    assert_oauth_error(&got, 401, "invalid_client");
    // Post, right and wrong; no challenge without Basic.
    let form = |secret: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", "agent-post"),
            ("client_secret", secret),
            ("resource", API),
        ]
    };
    let ok = h.post_form("/token", &form(SECRET), None).await;
    assert_eq!(ok.0, StatusCode::OK, "{}", ok.2);
    let bad = h
        .post_form("/token", &form("presented-WRONG-secret-7f3a"), None)
        .await;
    assert_oauth_error(&bad, 401, "invalid_client");
    assert!(bad.1.get("www-authenticate").is_none());
    // A client registered for Basic may not use post, and vice versa.
    let mismatch = h
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "agent-basic"),
                ("client_secret", SECRET),
            ],
            None,
        )
        .await;
    assert_oauth_error(&mismatch, 401, "invalid_client");
    let mismatch = h
        .post_form(
            "/token",
            &[("grant_type", "client_credentials"), ("resource", API)],
            Some(("agent-post", SECRET)),
        )
        .await;
    assert_oauth_error(&mismatch, 401, "invalid_client");
    // Two methods at once, or none.
    let two = h
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_secret", SECRET),
            ],
            Some(("agent-basic", SECRET)),
        )
        .await;
    assert_oauth_error(&two, 400, "invalid_request");
    let none = h
        .post_form("/token", &[("grant_type", "client_credentials")], None)
        .await;
    assert_oauth_error(&none, 401, "invalid_client");
    // Refusals are audited, without the presented secret.
    let events = h.audit().await;
    let refused = events
        .iter()
        .filter(|e| e.event.kind == "token.refused")
        .count();
    assert!(refused >= 6, "{refused} refusals audited");
    // The whole presented secret and the real one: a four-character piece
    // also turns up by chance in an event's random SHA-256 hex (one run in
    // about fifty did).
    let trail = serde_json::to_string(&events).unwrap();
    assert!(!trail.contains("presented-WRONG-secret") && !trail.contains(SECRET));
}
for_each_backend!(secret_methods, secret_methods);

async fn private_key_jwt(db: &TestDb) {
    let h = Harness::start(db).await;
    let send = |assertion: String| {
        let form = vec![
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            (
                "client_assertion_type".to_owned(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            ),
            ("client_assertion".to_owned(), assertion),
        ];
        let req = h.http.post(format!("{}/token", h.base)).form(&form);
        async move { into_parts(req.send().await.unwrap()).await }
    };
    let assertion = h.assertion(json!({}));
    let ok = send(assertion.clone()).await;
    assert_eq!(ok.0, StatusCode::OK, "{}", ok.2);
    assert_eq!(
        claims_of(ok.2["access_token"].as_str().unwrap())["client_id"],
        "agent-jwt"
    );
    // The same assertion again: its jti is spent.
    assert_oauth_error(&send(assertion).await, 401, "invalid_client");
    // The issuer itself is an accepted audience too.
    assert_eq!(
        send(h.assertion(json!({"aud": ISSUER}))).await.0,
        StatusCode::OK
    );
    let now = h.clock_now();
    for (why, claims) in [
        (
            "wrong audience",
            json!({"aud": "https://elsewhere.example/token"}),
        ),
        ("expired", json!({"exp": now - 60})),
        ("lives too long", json!({"exp": now + 3600})),
        ("no exp", json!({"exp": null})),
        ("no jti", json!({"jti": null})),
        ("iss differs from sub", json!({"iss": "agent-basic"})),
        ("unknown client", json!({"iss": "ghost", "sub": "ghost"})),
        ("not yet valid", json!({"nbf": now + 600})),
        (
            "secret client",
            json!({"iss": "agent-basic", "sub": "agent-basic"}),
        ),
    ] {
        let got = send(h.assertion(claims)).await;
        assert_eq!(got.0, StatusCode::UNAUTHORIZED, "{why}: {}", got.2);
        assert_eq!(got.2["error"], "invalid_client", "{why}");
    }
    // Signed by a key the client never registered.
    let stranger = ClientKey::new(mandate_jose::SigningAlg::ES256);
    let forged = stranger.assertion(&claims_of(&h.assertion(json!({}))));
    assert_oauth_error(&send(forged).await, 401, "invalid_client");
    // alg none and garbage.
    let none = format!(
        "eyJhbGciOiJub25lIn0.{}.",
        h.assertion(json!({})).split('.').nth(1).unwrap()
    );
    assert_oauth_error(&send(none).await, 401, "invalid_client");
    assert_oauth_error(&send("not.a.jwt".into()).await, 401, "invalid_client");
    // Wrong assertion type.
    let wrong_type = h
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:x"),
                ("client_assertion", "a.b.c"),
            ],
            None,
        )
        .await;
    assert_oauth_error(&wrong_type, 400, "invalid_request");
}
for_each_backend!(private_key_jwt, private_key_jwt);
