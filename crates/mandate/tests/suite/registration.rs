//! RFC 7591 dynamic registration and RFC 7592 management.

use mandate_testkit::{for_each_backend, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

const IAT: &str = "an-initial-access-token-for-tests";

async fn register(
    h: &Harness,
    bearer: Option<&str>,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = h.http.post(format!("{}/register", h.base)).json(&body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    into_parts(req.send().await.unwrap()).await
}

async fn closed_by_default(db: &TestDb) {
    let h = Harness::start(db).await;
    let got = register(&h, None, json!({"client_name": "x"})).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN);
    assert_eq!(got.2["error"], "access_denied");
}
for_each_backend!(closed_by_default, closed_by_default);

async fn initial_access_token_mode(db: &TestDb) {
    let h = Harness::start_with(
        db,
        "[registration]\nmode = \"initial_access_token\"\ninitial_access_token_env = \"REG_TOKEN\"",
        &[("REG_TOKEN", IAT)],
    )
    .await;
    let (_, _, m) = h.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(m["registration_endpoint"], format!("{ISSUER}/register"));
    let meta = json!({
        "client_name": "Research agent",
        "grant_types": ["client_credentials"],
        "scope": "read",
        "token_endpoint_auth_method": "client_secret_post",
    });
    for bad in [None, Some("wrong-token")] {
        let got = register(&h, bad, meta.clone()).await;
        assert_oauth_error(&got, 401, "invalid_token");
        assert!(got.1["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
    }
    let (s, _, reg) = register(&h, Some(IAT), meta.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{reg}");
    let client_id = reg["client_id"].as_str().unwrap().to_owned();
    let secret = reg["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 43, "256-bit secret");
    assert_eq!(reg["client_secret_expires_at"], 0);
    assert_eq!(reg["scope"], "read");
    let rat = reg["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        reg["registration_client_uri"],
        format!("{ISSUER}/register/{client_id}")
    );

    // The registered client gets tokens.
    let (s, _, t) = h
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("client_secret", &secret),
                ("resource", API),
            ],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["scope"], "read");

    // RFC 7592: read, update, delete with the registration access token.
    let url = format!("{}/register/{client_id}", h.base);
    let read = into_parts(h.http.get(&url).bearer_auth(&rat).send().await.unwrap()).await;
    assert_eq!(read.0, StatusCode::OK);
    assert_eq!(read.2["client_name"], "Research agent");
    assert!(read.2.get("client_secret").is_none());
    let wrong = into_parts(h.http.get(&url).bearer_auth("nope").send().await.unwrap()).await;
    assert_oauth_error(&wrong, 401, "invalid_token");
    let mut update = meta.clone();
    update["client_id"] = json!(client_id);
    update["client_name"] = json!("Renamed");
    let put = into_parts(
        h.http
            .put(&url)
            .bearer_auth(&rat)
            .json(&update)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(put.0, StatusCode::OK, "{}", put.2);
    assert_eq!(put.2["client_name"], "Renamed");
    let del = h.http.delete(&url).bearer_auth(&rat).send().await.unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let gone = into_parts(h.http.get(&url).bearer_auth(&rat).send().await.unwrap()).await;
    assert_oauth_error(&gone, 401, "invalid_token");

    // Metadata errors.
    for (body, code) in [
        (
            json!({"grant_types": ["password"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"scope": "not-a-scope-anywhere", "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"grant_types": ["authorization_code"], "redirect_uris": ["http://evil.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"grant_types": ["authorization_code"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": "not-a-list"}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_name": "x".repeat(500), "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
    ] {
        let got = register(&h, Some(IAT), body.clone()).await;
        assert_oauth_error(&got, 400, code);
    }
    let events = h.audit().await;
    assert!(events.iter().any(|e| e.event.kind == "client.registered"
        && e.event.client_id.as_deref() == Some(client_id.as_str())));
    assert!(!serde_json::to_string(&events).unwrap().contains(&secret));
}
for_each_backend!(initial_access_token_mode, initial_access_token_mode);

async fn open_mode_refuses_machine_identities(db: &TestDb) {
    let h = Harness::start_with(db, "[registration]\nmode = \"open\"", &[]).await;
    let got = register(
        &h,
        None,
        json!({"grant_types": ["client_credentials"], "scope": "read"}),
    )
    .await;
    assert_oauth_error(&got, 400, "invalid_client_metadata");
    let (s, _, reg) = register(
        &h,
        None,
        json!({"grant_types": ["authorization_code"], "redirect_uris": ["http://127.0.0.1:9999/cb"], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{reg}");
    assert!(reg.get("client_secret").is_none());
}
for_each_backend!(
    open_mode_refuses_machine_identities,
    open_mode_refuses_machine_identities
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_rate_limited_per_address() {
    let db = TestDb::sqlite();
    let h = Harness::start_with(&db, "[registration]\nmode = \"open\"\nrate_limit = 3", &[]).await;
    let body = json!({"grant_types": ["authorization_code"], "redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"});
    for _ in 0..3 {
        assert_eq!(
            register(&h, None, body.clone()).await.0,
            StatusCode::CREATED
        );
    }
    let (s, headers, b) = register(&h, None, body).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(b["error"], "temporarily_unavailable");
}

/// Registered clients that never complete a flow are removed after
/// `[registration] unused_client_ttl`; one that got a token stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_registered_clients_are_purged() {
    let db = TestDb::sqlite();
    let h = Harness::start_with(
        &db,
        "[registration]\nmode = \"initial_access_token\"\ninitial_access_token_env = \"REG_TOKEN\"\nunused_client_ttl = \"1h\"",
        &[("REG_TOKEN", IAT)],
    )
    .await;
    let meta = json!({
        "grant_types": ["client_credentials"],
        "scope": "read",
        "token_endpoint_auth_method": "client_secret_post",
    });
    let (_, _, used) = register(&h, Some(IAT), meta.clone()).await;
    let (_, _, unused) = register(&h, Some(IAT), meta).await;
    let token = |reg: &Value| {
        let (id, secret) = (
            reg["client_id"].as_str().unwrap().to_owned(),
            reg["client_secret"].as_str().unwrap().to_owned(),
        );
        let h = &h;
        async move {
            h.post_form(
                "/token",
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", id.as_str()),
                    ("client_secret", secret.as_str()),
                    ("resource", API),
                ],
                None,
            )
            .await
            .0
        }
    };
    assert_eq!(token(&used).await, StatusCode::OK);
    // Within the lifetime nothing goes.
    assert_eq!(h.authority().purge_unused_clients().await.unwrap(), 0);
    h.clock.advance(2 * 3600);
    assert_eq!(h.authority().purge_unused_clients().await.unwrap(), 1);
    assert_eq!(token(&unused).await, StatusCode::UNAUTHORIZED);
    assert_eq!(token(&used).await, StatusCode::OK);
    let purged = unused["client_id"].as_str().unwrap();
    assert!(h
        .audit()
        .await
        .iter()
        .any(|e| e.event.kind == "client.purged" && e.event.client_id.as_deref() == Some(purged)));
}
