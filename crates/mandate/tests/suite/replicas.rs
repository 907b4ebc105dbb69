//! Two servers on one PostgreSQL database act as one: same clients, same keys,
//! one replay cache, one revocation list, one audit chain.

use std::sync::Arc;

use mandate_testkit::TestDb;
use mandate_types::{Clock, FixedClock, SystemClock};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let key = Arc::new(ClientKey::new(mandate_jose::SigningAlg::ES256));
    let clock = Arc::new(FixedClock::new(SystemClock.now()));
    let a = Harness::start_full(&db, "", &[], key.clone(), clock.clone()).await;
    let b = Harness::start_full(&db, "", &[], key, clock).await;

    // A token from A verifies against B's JWKS and is active at B.
    let token = a.access_token().await;
    b.verify_independently(&token, API).await;
    let basic = Some(("agent-basic", SECRET));
    assert_eq!(
        b.post_form("/introspect", &[("token", &token)], basic)
            .await
            .2["active"],
        true
    );

    // A client created through A's admin API authenticates at B.
    let (s, created) = a
        .admin_send(Method::POST, "/admin/clients", Some(json!({"name": "x", "grant_types": ["client_credentials"], "scopes": "read", "resources": [API]})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = created["client_id"].as_str().unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    let got = b
        .post_form(
            "/token",
            &[("grant_type", "client_credentials")],
            Some((id, secret)),
        )
        .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.2);

    // An assertion spent at A is refused at B.
    let assertion = a.assertion(json!({}));
    let form = |h: &Harness| {
        let req = h.http.post(format!("{}/token", h.base)).form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ]);
        async move { into_parts(req.send().await.unwrap()).await }
    };
    assert_eq!(form(&a).await.0, StatusCode::OK);
    assert_oauth_error(&form(&b).await, 401, "invalid_client");

    // Revoked at A, inactive at B.
    assert_eq!(
        a.post_form("/revoke", &[("token", &token)], basic).await.0,
        StatusCode::OK
    );
    assert_eq!(
        b.post_form("/introspect", &[("token", &token)], basic)
            .await
            .2,
        json!({"active": false})
    );

    // A key rotated at A is published by B once B reloads (every 30 s).
    let (_, rotated) = a.admin_send(Method::POST, "/admin/keys/rotate", None).await;
    b.authority().keys().reload().await.unwrap();
    let (_, _, jwks) = b.get_json("/jwks.json").await;
    assert!(jwks.to_string().contains(rotated["kid"].as_str().unwrap()));

    // Both wrote into one unbroken chain.
    let events = b.audit().await;
    assert_eq!(
        mandate_audit::verify_chain(&events),
        Ok(events.len() as i64)
    );
    assert!(events.len() >= 6);
}
