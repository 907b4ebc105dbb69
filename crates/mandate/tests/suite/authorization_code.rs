//! The authorization code flow through a browser's eyes: /authorize, the
//! sign-in and consent forms over HTTP, the code at the token endpoint, PKCE,
//! refresh rotation and reuse detection, remembered consent, the connected
//! agents page, and the negative cases.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mandate_testkit::{for_each_backend, TestDb};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::common::browser::Browser;
use crate::common::code_flow::*;
use crate::common::*;

async fn start(db: &TestDb) -> Harness {
    start_env(db, &[]).await
}

async fn start_env(db: &TestDb, env: &'static [(&'static str, &'static str)]) -> Harness {
    let h = Harness::start_with(db, HOST_CLIENT, env).await;
    add_alice(&h).await;
    h
}

async fn full_flow_with_consent_and_refresh(db: &TestDb) {
    let h = start(db).await;
    let mut b = Browser::new(&h);
    let login = b.get(&authorize_path(&[])).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(
        login.body.contains("Desktop Assistant"),
        "the sign-in page names the client"
    );
    // Wrong password: same page, one message, no hint.
    let wrong = b
        .post(
            "/login",
            &[
                ("csrf", &login.hidden("csrf")),
                ("request", &login.hidden("request")),
                ("username", "alice"),
                ("password", "nope-nope-nope"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // Right password: the consent page, every requested scope offered.
    let consent = b.sign_in(&login, PASSWORD).await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    assert!(
        consent.body.contains("127.0.0.1"),
        "the consent page shows the client's host"
    );
    assert!(consent.body.contains("Read things") && consent.body.contains("Write things"));
    // Grant fewer scopes than asked: only read.
    let done = b.approve(&consent, "read").await;
    assert_eq!(done.status, StatusCode::FOUND);
    assert!(done
        .location
        .as_deref()
        .unwrap()
        .starts_with("http://127.0.0.1:53117/callback?"));
    assert_eq!(done.query("state").as_deref(), Some("xyz"));
    assert_eq!(done.query("iss").as_deref(), Some(ISSUER), "RFC 9207 iss");
    let code = done.query("code").unwrap();

    // Wrong verifier, then the right one.
    let bad = redeem(
        &h,
        &code,
        "wrong-verifier-wrong-verifier-wrong-verifier-1234",
    )
    .await;
    assert_oauth_error(&bad, 400, "invalid_grant");
    // The failed attempt consumed the code: single use, whatever the outcome.
    assert_oauth_error(&redeem(&h, &code, VERIFIER).await, 400, "invalid_grant");

    // A fresh authorization: consent is remembered, so no consent page.
    let again = b.get(&authorize_path(&[("scope", "read")])).await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.body);
    let code = again.query("code").unwrap();
    let (s, headers, tokens) = redeem(&h, &code, VERIFIER).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(tokens["scope"], "read");
    let access = tokens["access_token"].as_str().unwrap();
    let claims = h.verify_independently(access, API).await;
    assert_ne!(claims["sub"], "mcp-host", "the subject is the user");
    assert_eq!(claims["client_id"], "mcp-host");
    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Asking for more than was consented shows the consent page again.
    let more = b.get(&authorize_path(&[("scope", "read write")])).await;
    assert_eq!(more.status, StatusCode::OK);
    assert!(more.body.contains("Write things"));

    // Refresh rotates; the old token is then spent, and reusing it revokes the family.
    let (s, _, rotated) = refresh(&h, &first_refresh, None).await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let second_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first_refresh);
    assert_oauth_error(
        &refresh(&h, &second_refresh, Some("read write")).await,
        400,
        "invalid_scope",
    );
    // That refusal did not spend the second token: a plain refresh still works.
    let (s, _, third) = refresh(&h, &second_refresh, None).await;
    assert_eq!(s, StatusCode::OK, "{third}");
    let third_refresh = third["refresh_token"].as_str().unwrap().to_owned();
    // Reusing the first (rotated) token revokes the whole family, the third too.
    assert_oauth_error(
        &refresh(&h, &first_refresh, None).await,
        400,
        "invalid_grant",
    );
    assert_oauth_error(
        &refresh(&h, &third_refresh, None).await,
        400,
        "invalid_grant",
    );
    // RFC 7009 revocation of a refresh token (a new family from remembered consent).
    let again = b.get(&authorize_path(&[("scope", "read")])).await;
    let (_, _, fresh) = redeem(&h, &again.query("code").unwrap(), VERIFIER).await;
    let fresh_refresh = fresh["refresh_token"].as_str().unwrap().to_owned();
    let revoke = [
        ("token", fresh_refresh.as_str()),
        ("client_id", "mcp-host"),
        ("token_type_hint", "refresh_token"),
    ];
    assert_eq!(
        h.post_form("/revoke", &revoke, None).await.0,
        StatusCode::OK
    );
    assert_oauth_error(
        &refresh(&h, &fresh_refresh, None).await,
        400,
        "invalid_grant",
    );
    let events = h.audit().await;
    assert!(events
        .iter()
        .any(|e| e.event.kind == "refresh.reuse_detected"));
    assert!(events
        .iter()
        .any(|e| e.event.kind == "consent.granted" && e.event.scopes.as_deref() == Some("read")));
    assert!(events.iter().any(|e| e.event.kind == "code.issued"));
}
for_each_backend!(
    full_flow_with_consent_and_refresh,
    full_flow_with_consent_and_refresh
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_of_a_rotated_refresh_token_revokes_the_family() {
    let db = TestDb::sqlite();
    let h = start(&db).await;
    let mut b = Browser::new(&h);
    let tokens = authorize_and_redeem(&h, &mut b, "read").await;
    let r1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (_, _, second) = refresh(&h, &r1, None).await;
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    // The thief replays r1: refused, and r2 (the legitimate holder's) dies too.
    assert_oauth_error(&refresh(&h, &r1, None).await, 400, "invalid_grant");
    assert_oauth_error(&refresh(&h, &r2, None).await, 400, "invalid_grant");
}

/// Signs alice in for `scope` (approving consent when asked) and returns the code.
async fn authorize(b: &mut Browser<'_>, scope: &'static str) -> String {
    let login = b.get(&authorize_path(&[("scope", scope)])).await;
    let next = b.sign_in(&login, PASSWORD).await;
    let done = if next.status == StatusCode::OK {
        b.approve(&next, scope).await
    } else {
        next
    };
    done.query("code").unwrap()
}

async fn authorize_and_redeem(h: &Harness, b: &mut Browser<'_>, scope: &'static str) -> Value {
    let code = authorize(b, scope).await;
    let (s, _, tokens) = redeem(h, &code, VERIFIER).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_agents_page_revokes_grants_and_refresh_tokens() {
    let db = TestDb::sqlite();
    let h = start(&db).await;
    let mut b = Browser::new(&h);
    let tokens = authorize_and_redeem(&h, &mut b, "read").await;
    let page = b.get("/grants").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Desktop Assistant"));
    let marker = "action=\"/grants/";
    let start = page.body.find(marker).unwrap() + marker.len();
    let id = &page.body[start..start + page.body[start..].find('/').unwrap()];
    // Without the CSRF token: refused.
    let forged = b
        .post(&format!("/grants/{id}/revoke"), &[("csrf", "forged")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let revoked = b
        .post(
            &format!("/grants/{id}/revoke"),
            &[("csrf", &page.hidden("csrf"))],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert!(!b
        .get("/grants")
        .await
        .body
        .contains(&format!("/grants/{id}/revoke")));
    let (s, _, body) = refresh(&h, tokens["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "the grant's refresh tokens are revoked: {body}"
    );
    assert!(h
        .audit()
        .await
        .iter()
        .any(|e| e.event.kind == "consent.revoked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_cases() {
    let db = TestDb::sqlite();
    let h = start(&db).await;
    let mut b = Browser::new(&h);
    // Before the client and redirect URI are trusted: a page, never a redirect.
    for (why, extra) in [
        ("unknown client", vec![("client_id", "nobody")]),
        (
            "redirect mismatch",
            vec![("redirect_uri", "http://127.0.0.1:5/elsewhere")],
        ),
        (
            "open redirect",
            vec![("redirect_uri", "https://evil.example/callback")],
        ),
        ("no redirect", vec![("redirect_uri", "")]),
    ] {
        let p = b.get(&authorize_path(&extra)).await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST, "{why}");
        assert!(p.location.is_none(), "{why}: never redirected");
    }
    // After: errors go back to the client with state and iss.
    for (why, extra, code) in [
        (
            "no PKCE",
            vec![("code_challenge", ""), ("code_challenge_method", "")],
            "invalid_request",
        ),
        (
            "plain PKCE",
            vec![("code_challenge_method", "plain")],
            "invalid_request",
        ),
        (
            "token response type",
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        ("no resource", vec![("resource", "")], "invalid_target"),
        (
            "unknown resource",
            vec![("resource", "https://unknown.example")],
            "invalid_target",
        ),
        (
            "scope beyond the client",
            vec![("scope", "read admin")],
            "invalid_scope",
        ),
    ] {
        let p = b.get(&authorize_path(&extra)).await;
        assert_eq!(p.status, StatusCode::FOUND, "{why}");
        assert_eq!(p.query("error").as_deref(), Some(code), "{why}");
        assert_eq!(p.query("state").as_deref(), Some("xyz"), "{why}");
        assert_eq!(p.query("iss").as_deref(), Some(ISSUER), "{why}");
    }
    // CSRF: a sign-in form with a forged token, or from another browser, is refused.
    let login = b.get(&authorize_path(&[])).await;
    let forged = b
        .post(
            "/login",
            &[
                ("csrf", "forged"),
                ("request", &login.hidden("request")),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    let mut other = Browser::new(&h);
    let stolen = other
        .post(
            "/login",
            &[
                ("csrf", &login.hidden("csrf")),
                ("request", &login.hidden("request")),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(
        stolen.status,
        StatusCode::BAD_REQUEST,
        "bound to the browser that started it"
    );
    // Denying consent: access_denied back to the client.
    let consent = b.sign_in(&login, PASSWORD).await;
    let denied = b
        .post(
            "/consent",
            &[
                ("csrf", &consent.hidden("csrf")),
                ("request", &consent.hidden("request")),
                ("decision", "deny"),
            ],
        )
        .await;
    assert_eq!(denied.query("error").as_deref(), Some("access_denied"));
    // Code replay revokes the access token the first redemption produced.
    authorize_and_redeem(&h, &mut b, "read").await;
    let login = b.get(&authorize_path(&[("scope", "read")])).await;
    let code = login.query("code").expect("remembered consent");
    let (_, _, first) = redeem(&h, &code, VERIFIER).await;
    let access = first["access_token"].as_str().unwrap().to_owned();
    assert_oauth_error(&redeem(&h, &code, VERIFIER).await, 400, "invalid_grant");
    let introspected = h
        .post_form(
            "/introspect",
            &[("token", &access)],
            Some(("agent-basic", SECRET)),
        )
        .await;
    assert_eq!(
        introspected.2,
        json!({"active": false}),
        "the replayed code's token is revoked"
    );
    // Lock-out after repeated failures; the right password then fails too.
    let mut b2 = Browser::new(&h);
    for _ in 0..5 {
        let p = b2.get(&authorize_path(&[])).await;
        b2.post(
            "/login",
            &[
                ("csrf", &p.hidden("csrf")),
                ("request", &p.hidden("request")),
                ("username", "alice"),
                ("password", "wrong-password-123"),
            ],
        )
        .await;
    }
    let p = b2.get(&authorize_path(&[])).await;
    let locked = b2.sign_in(&p, PASSWORD).await;
    assert_eq!(locked.status, StatusCode::UNAUTHORIZED, "locked out");
    // The RFC 7636 Appendix B pair used throughout.
    assert_eq!(
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER)),
        CHALLENGE
    );
}

/// RFC 9126: the request is pushed first; /authorize then takes only its
/// request_uri, once, and only for the client that pushed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_authorization_requests() {
    let db = TestDb::sqlite();
    let h = start(&db).await;
    let (_, _, meta) = h.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(
        meta["pushed_authorization_request_endpoint"],
        format!("{ISSUER}/par")
    );
    let push = |extra: &'static [(&'static str, &'static str)]| {
        let h = &h;
        async move {
            let mut overrides = vec![("state", "pushed"), ("scope", "read")];
            overrides.extend_from_slice(extra);
            h.post_form("/par", &authorize_params(&overrides), None)
                .await
        }
    };
    // Invalid pushed requests get the code /authorize would have redirected with.
    assert_oauth_error(
        &push(&[("code_challenge_method", "plain")]).await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &push(&[("resource", "https://unknown.example")]).await,
        400,
        "invalid_target",
    );
    assert_oauth_error(
        &push(&[("client_id", "nobody")]).await,
        401,
        "invalid_client",
    );
    let (s, headers, body) = push(&[]).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["expires_in"], 60);
    let request_uri = body["request_uri"].as_str().unwrap().to_owned();
    assert!(request_uri.starts_with("urn:ietf:params:oauth:request_uri:"));
    let q = |client: &str| {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("client_id", client), ("request_uri", request_uri.as_str())])
            .finish();
        format!("/authorize?{q}")
    };
    let mut b = Browser::new(&h);
    // Another client cannot use it (and that attempt spends it).
    let wrong = b.get(&q("agent-web")).await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    let (_, _, body) = push(&[]).await;
    let request_uri = body["request_uri"].as_str().unwrap().to_owned();
    let path = {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("client_id", "mcp-host"),
                ("request_uri", request_uri.as_str()),
            ])
            .finish();
        format!("/authorize?{q}")
    };
    let login = b.get(&path).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    let consent = b.sign_in(&login, PASSWORD).await;
    let done = b.approve(&consent, "read").await;
    assert_eq!(done.query("state").as_deref(), Some("pushed"));
    let (s, _, tokens) = redeem(&h, &done.query("code").unwrap(), VERIFIER).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    // Single use.
    assert_eq!(b.get(&path).await.status, StatusCode::BAD_REQUEST);
}

/// Client ID Metadata Documents: the client id is the URL of its document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_metadata_documents() {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let doc = |client_id: String| {
        json!({
            "client_id": client_id,
            "client_name": "Document Client",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code"],
            "token_endpoint_auth_method": "none",
        })
    };
    let good = doc(format!("{base}/good.json"));
    let liar = doc(format!("{base}/elsewhere.json"));
    let secret = {
        let mut d = doc(format!("{base}/secret.json"));
        d["token_endpoint_auth_method"] = json!("client_secret_basic");
        d
    };
    let app = axum::Router::new()
        .route("/good.json", get(move || async move { axum::Json(good) }))
        .route("/liar.json", get(move || async move { axum::Json(liar) }))
        .route(
            "/secret.json",
            get(move || async move { axum::Json(secret) }),
        )
        .route(
            "/redirect.json",
            get(|| async { axum::response::Redirect::temporary("/good.json") }),
        )
        .route("/huge.json", get(|| async { "x".repeat(10_000) }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let db = TestDb::sqlite();
    let h = Harness::start_with(
        &db,
        "[registration]\ninsecure_allow_http_client_metadata_on_loopback = true",
        &[],
    )
    .await;
    let (s, _) = h
        .admin_send(
            Method::POST,
            "/admin/users",
            Some(json!({"username": "alice", "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, _, meta) = h.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    let path = |doc: &str| {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("response_type", "code"),
                ("client_id", &format!("{base}/{doc}")),
                ("redirect_uri", "http://127.0.0.1:4000/callback"),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
                ("resource", API),
                ("scope", "read"),
            ])
            .finish();
        format!("/authorize?{q}")
    };
    let mut b = Browser::new(&h);
    let login = b.get(&path("good.json")).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    assert!(login.body.contains("Document Client"));
    let consent = b.sign_in(&login, PASSWORD).await;
    let done = b.approve(&consent, "read").await;
    let code = done.query("code").unwrap();
    let (s, _, tokens) = h
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &format!("{base}/good.json")),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:4000/callback"),
                ("code_verifier", VERIFIER),
            ],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    assert_eq!(
        claims_of(tokens["access_token"].as_str().unwrap())["client_id"],
        format!("{base}/good.json")
    );
    // Refused: a document naming another client id, shared secrets, redirects, oversized, missing.
    for doc in [
        "liar.json",
        "secret.json",
        "redirect.json",
        "huge.json",
        "missing.json",
    ] {
        let p = b.get(&path(doc)).await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST, "{doc}");
        assert!(p.location.is_none(), "{doc}: never redirected");
    }
    // Without the danger setting, loopback documents are refused.
    let db2 = TestDb::sqlite();
    let strict = Harness::start_with(&db2, "", &[]).await;
    let mut b2 = Browser::new(&strict);
    assert_eq!(
        b2.get(&path("good.json")).await.status,
        StatusCode::BAD_REQUEST
    );
}

/// `[tokens] refresh_requires_offline_access`: off (the default), a client
/// holding the refresh_token grant gets a refresh token without asking; on,
/// only when `offline_access` was requested and consented, and it stays a
/// scope of the grant, not of the access token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_access_gates_refresh_tokens() {
    // Off: today's behaviour.
    let db = TestDb::sqlite();
    let h = start(&db).await;
    let mut b = Browser::new(&h);
    let tokens = authorize_and_redeem(&h, &mut b, "read").await;
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    let p = b
        .get(&authorize_path(&[("scope", "read offline_access")]))
        .await;
    assert_eq!(
        p.query("error").as_deref(),
        Some("invalid_scope"),
        "off, offline_access is no scope of its own"
    );

    // On.
    let db = TestDb::sqlite();
    let h = start_env(&db, &[("MANDATE_REFRESH_REQUIRES_OFFLINE_ACCESS", "true")]).await;
    let (_, _, meta) = h.get_json("/.well-known/oauth-authorization-server").await;
    assert!(meta["scopes_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("offline_access")));
    let mut b = Browser::new(&h);
    let tokens = authorize_and_redeem(&h, &mut b, "read").await;
    assert!(
        tokens.get("refresh_token").is_none(),
        "not asked for, not issued: {tokens}"
    );
    // Asked for: the consent page offers it, described, as a checkbox.
    let consent = b
        .get(&authorize_path(&[("scope", "read offline_access")]))
        .await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    assert!(consent.body.contains("value=\"offline_access\""));
    assert!(consent.body.contains("Stay connected while you are away"));
    // Left unchecked: still no refresh token.
    let done = b.approve(&consent, "read").await;
    let (s, _, tokens) = redeem(&h, &done.query("code").unwrap(), VERIFIER).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    // Consented: a refresh token; the access token does not carry offline_access.
    let consent = b
        .get(&authorize_path(&[("scope", "read offline_access")]))
        .await;
    let form = [
        ("csrf", consent.hidden("csrf")),
        ("request", consent.hidden("request")),
        ("scope", "read".to_owned()),
        ("scope", "offline_access".to_owned()),
        ("decision", "approve".to_owned()),
    ];
    let req = b.http.post(format!("{}/consent", h.base)).form(&form);
    let done = b.send(req).await;
    let (s, _, tokens) = redeem(&h, &done.query("code").unwrap(), VERIFIER).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["scope"], "read");
    assert_eq!(
        claims_of(tokens["access_token"].as_str().unwrap())["scope"],
        "read"
    );
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    // Asking only for offline_access is refused before the token is spent.
    assert_oauth_error(
        &refresh(&h, &first, Some("offline_access")).await,
        400,
        "invalid_scope",
    );
    let (s, _, rotated) = refresh(&h, &first, None).await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["scope"], "read");
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    // A later consent without offline_access ends the family.
    let consent = b
        .get(&authorize_path(&[("scope", "read write offline_access")]))
        .await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    let form = [
        ("csrf", consent.hidden("csrf")),
        ("request", consent.hidden("request")),
        ("scope", "read".to_owned()),
        ("scope", "write".to_owned()),
        ("decision", "approve".to_owned()),
    ];
    let req = b.http.post(format!("{}/consent", h.base)).form(&form);
    assert_eq!(b.send(req).await.status, StatusCode::FOUND);
    assert_oauth_error(&refresh(&h, &second, None).await, 400, "invalid_grant");
    // offline_access alone grants nothing; a client without the
    // refresh_token grant may not ask for it.
    let p = b.get(&authorize_path(&[("scope", "offline_access")])).await;
    assert_eq!(p.query("error").as_deref(), Some("invalid_scope"));
    let p = b
        .get(&authorize_path(&[
            ("client_id", "agent-web"),
            ("redirect_uri", "https://app.example/cb"),
            ("scope", "read offline_access"),
        ]))
        .await;
    assert_eq!(p.query("error").as_deref(), Some("invalid_scope"));
    let p = b
        .get(&authorize_path(&[
            ("client_id", "agent-web"),
            ("redirect_uri", "https://app.example/cb"),
            ("scope", "read"),
        ]))
        .await;
    assert_eq!(
        p.status,
        StatusCode::OK,
        "without it the same request is fine"
    );
}

/// `mandate user disable` (the admin API) ends what the user holds: the
/// browser session, unredeemed codes and every refresh token family of the
/// user's grants. Enabling the user again brings none of it back.
async fn disabling_a_user_ends_sessions_and_refresh_tokens(db: &TestDb) {
    let h = start(db).await;
    let mut b = Browser::new(&h);
    let tokens = authorize_and_redeem(&h, &mut b, "read").await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    // An unredeemed code from the remembered consent.
    let pending_code = b
        .get(&authorize_path(&[("scope", "read")]))
        .await
        .query("code")
        .unwrap();
    let signed_in = b.get("/grants").await;
    assert!(
        signed_in.body.contains("Desktop Assistant"),
        "the session works"
    );

    let (s, _) = h
        .admin_send(Method::POST, "/admin/users/alice/disable", None)
        .await;
    assert!(s.is_success(), "{s}");
    assert_oauth_error(
        &refresh(&h, &refresh_token, None).await,
        400,
        "invalid_grant",
    );
    assert_oauth_error(
        &redeem(&h, &pending_code, VERIFIER).await,
        400,
        "invalid_grant",
    );
    let signed_out = b.get("/grants").await;
    assert!(
        !signed_out.body.contains("Desktop Assistant")
            && signed_out.body.contains("name=\"password\""),
        "the session cookie leads to the sign-in page: {}",
        signed_out.body
    );
    let audited = h.audit().await;
    let disabled = audited
        .iter()
        .find(|e| e.event.kind == "user.disabled")
        .expect("audited");
    assert_eq!(
        disabled.event.reason.as_deref(),
        Some("2 sessions and codes ended, 1 refresh token families revoked")
    );

    // Enabled again: the old session and refresh token stay dead.
    let (s, _) = h
        .admin_send(Method::POST, "/admin/users/alice/enable", None)
        .await;
    assert!(s.is_success(), "{s}");
    assert!(!b.get("/grants").await.body.contains("Desktop Assistant"));
    assert_oauth_error(
        &refresh(&h, &refresh_token, None).await,
        400,
        "invalid_grant",
    );
    // Signing in again works, and the remembered consent still holds.
    let login = b.get(&authorize_path(&[("scope", "read")])).await;
    let done = b.sign_in(&login, PASSWORD).await;
    assert_eq!(
        done.status,
        StatusCode::FOUND,
        "no consent page: {}",
        done.body
    );
    let (s, _, body) = redeem(&h, &done.query("code").unwrap(), VERIFIER).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}
for_each_backend!(
    disabling_a_user_ends_sessions_and_refresh_tokens,
    disabling_a_user_ends_sessions_and_refresh_tokens
);

/// RFC 9449 §5: a public client that proves a DPoP key at the code
/// redemption gets refresh tokens bound to that key; a refresh needs a
/// proof of it, and a refusal does not spend the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_clients_refresh_tokens_are_bound_to_their_dpop_key() {
    let db = TestDb::sqlite();
    let h = start(&db).await;
    let mut b = Browser::new(&h);
    let code = authorize(&mut b, "read").await;
    let key = ClientKey::new(mandate_jose::SigningAlg::EdDSA);
    let url = format!("{ISSUER}/token");
    let now = mandate_types::Clock::now(h.clock.as_ref());
    let post = |form: Vec<(&'static str, String)>, proof: Option<String>| {
        let h = &h;
        async move {
            let mut req = h.http.post(format!("{}/token", h.base)).form(&form);
            if let Some(p) = proof {
                req = req.header("dpop", p);
            }
            into_parts(req.send().await.unwrap()).await
        }
    };
    let redeem_form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("client_id", "mcp-host".to_owned()),
        ("code", code),
        ("redirect_uri", "http://127.0.0.1:53117/callback".to_owned()),
        ("code_verifier", VERIFIER.to_owned()),
    ];
    let first = post(
        redeem_form.clone(),
        Some(key.dpop_proof("POST", &url, now, None, None)),
    )
    .await;
    assert_oauth_error(&first, 400, "use_dpop_nonce");
    let nonce = first.1["dpop-nonce"].to_str().unwrap().to_owned();
    let proof = |k: &ClientKey| k.dpop_proof("POST", &url, now, Some(&nonce), None);
    let (s, _, tokens) = post(redeem_form, Some(proof(&key))).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "DPoP");
    let refresh_form = |t: &str| {
        vec![("grant_type", "refresh_token"), ("client_id", "mcp-host")]
            .into_iter()
            .map(|(k, v)| (k, v.to_owned()))
            .chain([("refresh_token", t.to_owned())])
            .collect::<Vec<_>>()
    };
    let r1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    // Without a proof, or with another key's: refused, and r1 is not spent.
    assert_oauth_error(
        &post(refresh_form(&r1), None).await,
        400,
        "invalid_dpop_proof",
    );
    let thief = ClientKey::new(mandate_jose::SigningAlg::EdDSA);
    assert_oauth_error(
        &post(refresh_form(&r1), Some(proof(&thief))).await,
        400,
        "invalid_dpop_proof",
    );
    // With the key: a new access token and a new refresh token, both bound.
    let (s, _, second) = post(refresh_form(&r1), Some(proof(&key))).await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(second["token_type"], "DPoP");
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_oauth_error(
        &post(refresh_form(&r2), None).await,
        400,
        "invalid_dpop_proof",
    );
    let (s, _, _) = post(refresh_form(&r2), Some(proof(&key))).await;
    assert_eq!(s, StatusCode::OK);
}
