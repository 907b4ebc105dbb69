//! The admin API: authentication, clients, resources, secret rotation.

use mandate_testkit::{for_each_backend, TestDb};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

async fn admin_api(db: &TestDb) {
    let h = Harness::start(db).await;
    // No token, wrong token.
    let anon = h
        .http
        .get(format!("{}/admin/clients", h.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let wrong = h
        .http
        .get(format!("{}/admin/clients", h.admin))
        .bearer_auth("x".repeat(43))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // The admin API is not on the public listener.
    assert_eq!(
        h.http
            .get(format!("{}/admin/clients", h.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );

    let (s, _) = h
        .admin_send(
            Method::POST,
            "/admin/resources",
            Some(json!({"id": "https://new.example", "name": "New", "scopes": {"go": "Go"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, created) = h
        .admin_send(
            Method::POST,
            "/admin/clients",
            Some(json!({"name": "cli", "grant_types": ["client_credentials"], "scopes": "go", "resources": ["https://new.example"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["client_id"].as_str().unwrap().to_owned();
    let first = created["client_secret"].as_str().unwrap().to_owned();
    let token = |secret: String| {
        let id = id.clone();
        let h = &h;
        async move {
            h.post_form(
                "/token",
                &[("grant_type", "client_credentials")],
                Some((&id, &secret)),
            )
            .await
            .0
        }
    };
    assert_eq!(token(first.clone()).await, StatusCode::OK);
    // Listing never shows a secret or its hash.
    let (_, list) = h.admin_send(Method::GET, "/admin/clients", None).await;
    let dump = list.to_string();
    assert!(!dump.contains(&first) && !dump.contains("hash"), "{dump}");

    // Rotation: both secrets work during the overlap, only the new one after.
    let (s, rotated) = h
        .admin_send(
            Method::POST,
            &format!("/admin/clients/{id}/rotate-secret"),
            Some(json!({"overlap_seconds": 60})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let second = rotated["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(token(first.clone()).await, StatusCode::OK);
    assert_eq!(token(second.clone()).await, StatusCode::OK);
    h.clock.advance(61);
    assert_eq!(token(first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(token(second).await, StatusCode::OK);

    let (s, _) = h
        .admin_send(Method::DELETE, &format!("/admin/clients/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h
        .admin_send(Method::GET, &format!("/admin/clients/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .admin_send(
            Method::DELETE,
            "/admin/resources?id=https%3A%2F%2Fnew.example",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, bad) = h
        .admin_send(Method::POST, "/admin/clients", Some(json!({"name": "x"})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");

    let kinds: Vec<String> = h.audit().await.into_iter().map(|e| e.event.kind).collect();
    for k in [
        "resource.saved",
        "client.created",
        "client.secret_rotated",
        "client.deleted",
        "resource.deleted",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} audited");
    }
}
for_each_backend!(admin_api, admin_api);

/// Retention over the admin API: events older than asked go from the front
/// of the chain, the anchor names the last one, the rest verifies from it,
/// and the cut is itself audited.
async fn audit_retention_cuts_the_front_of_the_chain(db: &TestDb) {
    let h = Harness::start(db).await;
    for _ in 0..3 {
        h.access_token().await;
    }
    let old = h.audit().await;
    assert!(old.len() >= 3, "{old:?}");
    let (s, anchor) = h.admin_send(Method::GET, "/admin/audit/anchor", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(anchor["seq"], 0, "{anchor}");

    // Shorter than an hour, or not a number of seconds: refused, nothing goes.
    for body in [
        json!({"older_than_secs": 3599}),
        json!({"older_than": "1h"}),
    ] {
        let (s, v) = h
            .admin_send(Method::POST, "/admin/audit/prune", Some(body))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"], "invalid_request", "{v}");
    }
    // Nothing is an hour old yet.
    let prune = json!({"older_than_secs": 3600});
    let (s, v) = h
        .admin_send(Method::POST, "/admin/audit/prune", Some(prune.clone()))
        .await;
    assert_eq!((s, v["removed"].as_i64()), (StatusCode::OK, Some(0)), "{v}");

    h.clock.advance(2 * 3600);
    h.access_token().await;
    let (s, v) = h
        .admin_send(Method::POST, "/admin/audit/prune", Some(prune))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let last_old = old.last().unwrap();
    assert_eq!(v["removed"].as_i64(), Some(last_old.seq), "{v}");
    assert_eq!(v["anchor"]["seq"].as_i64(), Some(last_old.seq), "{v}");
    assert_eq!(v["anchor"]["hash"].as_str(), Some(last_old.hash.as_str()));

    let rest = h.audit().await;
    assert_eq!(rest.first().unwrap().seq, last_old.seq + 1);
    let anchor: mandate_audit::Anchor = serde_json::from_value(v["anchor"].clone()).unwrap();
    let mut verifier = mandate_audit::ChainVerifier::from_anchor(&anchor);
    for e in &rest {
        verifier.push(e).unwrap();
    }
    let pruned = rest.last().unwrap();
    assert_eq!(pruned.event.kind, "audit.pruned");
    let reason = pruned.event.reason.as_deref().unwrap();
    assert!(
        reason.contains(&format!("removed {} events", last_old.seq))
            && reason.contains(&format!("after seq {}", last_old.seq)),
        "{reason}"
    );
}
for_each_backend!(
    audit_retention_cuts_the_front_of_the_chain,
    audit_retention_cuts_the_front_of_the_chain
);
