//! Signing key rotation: pre-publication, activation, retirement.

use mandate_testkit::{for_each_backend, TestDb};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::*;

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

async fn rotation_lifecycle(db: &TestDb) {
    let h = Harness::start(db).await;
    let kid_of = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    let old_token = h.access_token().await;
    let old = kid_of(&old_token);
    let (s, rotated) = h.admin_send(Method::POST, "/admin/keys/rotate", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rotated["state"], "pending");
    let new = rotated["kid"].as_str().unwrap().to_owned();
    // Published at once, but not yet signing.
    let (_, _, jwks) = h.get_json("/jwks.json").await;
    assert_eq!(kids(&jwks), vec![old.clone(), new.clone()]);
    assert_eq!(kid_of(&h.access_token().await), old);
    // After the pre-publication window (10m) the new key signs; the old one
    // stays published for the tokens it signed.
    h.clock.advance(601);
    let new_token = h.access_token().await;
    assert_eq!(kid_of(&new_token), new);
    h.authority().keys().reload().await.unwrap();
    let (_, _, jwks) = h.get_json("/jwks.json").await;
    assert_eq!(kids(&jwks), vec![old.clone(), new.clone()]);
    h.verify_independently(&new_token, API).await;
    // Once every token the old key could have signed has expired, it goes.
    h.clock.advance(24 * 3600 + 10);
    h.authority().keys().reload().await.unwrap();
    let (_, _, jwks) = h.get_json("/jwks.json").await;
    assert_eq!(kids(&jwks), vec![new.clone()]);
    let (_, list) = h.admin_send(Method::GET, "/admin/keys", None).await;
    let states: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["purpose"].as_str().unwrap(), k["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("jws", "expired"), ("jws", "active"), ("biscuit", "active")],
        "JWS keys, then the Biscuit root key"
    );
    assert!(h
        .audit()
        .await
        .iter()
        .any(|e| e.event.kind == "key.rotated"));
}
for_each_backend!(rotation_lifecycle, rotation_lifecycle);

async fn keys_are_sealed_under_the_master_key(db: &TestDb) {
    let mut h = Harness::start(db).await;
    h.stop().await;
    // The same database with another master key cannot be opened.
    let data_dir = tempfile::tempdir().unwrap();
    let config = mandate_config::Config::load(
        Some(&base_config(db, &h.jwt_client.public(), "")),
        &mandate_config::Overrides {
            data_dir: Some(data_dir.path().display().to_string()),
            ..Default::default()
        },
        &|k: &str| match k {
            "AGENT_SECRET" => Some(SECRET.to_owned()),
            "MANDATE_MASTER_KEY" => Some("ff".repeat(32)),
            _ => None,
        },
    )
    .unwrap();
    let err = mandate_server::start(
        &config,
        std::sync::Arc::new(mandate_types::SystemClock),
        &|k: &str| (k == "MANDATE_MASTER_KEY").then(|| "ff".repeat(32)),
    )
    .await
    .err()
    .expect("a wrong master key stops start-up");
    assert!(err.to_string().contains("MANDATE_MASTER_KEY"), "{err}");
}
for_each_backend!(
    keys_are_sealed_under_the_master_key,
    keys_are_sealed_under_the_master_key
);
