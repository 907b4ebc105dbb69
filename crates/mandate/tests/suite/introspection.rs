//! RFC 7662 introspection and RFC 7009 revocation.

use mandate_testkit::{for_each_backend, TestDb};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

async fn introspect_and_revoke(db: &TestDb) {
    let h = Harness::start(db).await;
    let token = h.access_token().await;
    let basic = Some(("agent-basic", SECRET));
    let (s, headers, body) = h
        .post_form("/introspect", &[("token", &token)], basic)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["active"], true);
    assert_eq!(body["client_id"], "agent-basic");
    assert_eq!(body["aud"], API);
    assert_eq!(body["token_type"], "Bearer");
    // Another authenticated client may introspect (a resource server, say).
    let post = [
        ("token", token.as_str()),
        ("client_id", "agent-post"),
        ("client_secret", SECRET),
    ];
    assert_eq!(
        h.post_form("/introspect", &post, None).await.2["active"],
        true
    );
    // Unauthenticated introspection is refused.
    assert_oauth_error(
        &h.post_form("/introspect", &[("token", &token)], None).await,
        401,
        "invalid_client",
    );
    assert_oauth_error(
        &h.post_form("/introspect", &[], basic).await,
        400,
        "invalid_request",
    );
    // Garbage and foreign tokens are simply inactive.
    let inactive = |b: &serde_json::Value| assert_eq!(b, &json!({"active": false}));
    inactive(
        &h.post_form("/introspect", &[("token", "garbage")], basic)
            .await
            .2,
    );
    let stranger = ClientKey::new(mandate_jose::SigningAlg::EdDSA);
    let forged = stranger.key.sign("at+jwt", &claims_of(&token)).unwrap();
    inactive(
        &h.post_form("/introspect", &[("token", &forged)], basic)
            .await
            .2,
    );

    // Another client may not revoke it.
    let other = [
        ("token", token.as_str()),
        ("client_id", "agent-post"),
        ("client_secret", SECRET),
    ];
    assert_oauth_error(
        &h.post_form("/revoke", &other, None).await,
        400,
        "unauthorized_client",
    );
    // Its own client may; revoking garbage is fine too (RFC 7009 §2.2).
    let (s, _, _) = h
        .post_form(
            "/revoke",
            &[("token", &token), ("token_type_hint", "access_token")],
            basic,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h.post_form("/revoke", &[("token", "garbage")], basic)
            .await
            .0,
        StatusCode::OK
    );
    inactive(
        &h.post_form("/introspect", &[("token", &token)], basic)
            .await
            .2,
    );
    let jti = claims_of(&token)["jti"].as_str().unwrap().to_owned();
    let events = h.audit().await;
    assert!(events
        .iter()
        .any(|e| e.event.kind == "token.revoked" && e.event.jti.as_deref() == Some(jti.as_str())));

    // Expiry: a fresh token becomes inactive once the clock passes exp.
    let fresh = h.access_token().await;
    assert_eq!(
        h.post_form("/introspect", &[("token", &fresh)], basic)
            .await
            .2["active"],
        true
    );
    h.clock.advance(901);
    inactive(
        &h.post_form("/introspect", &[("token", &fresh)], basic)
            .await
            .2,
    );
}
for_each_backend!(introspect_and_revoke, introspect_and_revoke);
