//! The token endpoint: client_credentials, audience and scope rules (RFC 8707,
//! RFC 6749 §3.3), RFC 9068 tokens, and RFC 6749 §5.2 errors.

use mandate_testkit::{for_each_backend, TestDb};
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

async fn issues_rfc9068_tokens(db: &TestDb) {
    let h = Harness::start(db).await;
    let (status, headers, body) = h.token_basic("agent-basic", &[("scope", "read")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "read");
    let token = body["access_token"].as_str().unwrap();
    let claims = h.verify_independently(token, API).await;
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], "agent-basic");
    assert_eq!(claims["client_id"], "agent-basic");
    assert_eq!(claims["aud"], API);
    assert_eq!(claims["scope"], "read");
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    // Every issued token has its audit event, by jti, with no token in it.
    let events = h.audit().await;
    let issued = events
        .iter()
        .find(|e| e.event.jti.as_deref() == claims["jti"].as_str())
        .expect("issued token is audited");
    assert_eq!(issued.event.kind, "token.issued");
    assert_eq!(issued.event.scopes.as_deref(), Some("read"));
    let dump = serde_json::to_string(&events).unwrap();
    assert!(!dump.contains(token) && !dump.contains(SECRET));
}
for_each_backend!(issues_rfc9068_tokens, issues_rfc9068_tokens);

async fn audience_rules(db: &TestDb) {
    let h = Harness::start(db).await;
    // One allowed resource: it is the default.
    let (s, _, b) = h.token_basic("agent-basic", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(claims_of(b["access_token"].as_str().unwrap())["aud"], API);
    assert_eq!(
        b["scope"], "read write",
        "no scope asked: all the client may have here"
    );
    // Not allowed for this client, unknown, malformed, or two at once.
    assert_oauth_error(
        &h.token_basic("agent-basic", &[("resource", OTHER)]).await,
        400,
        "invalid_target",
    );
    assert_oauth_error(
        &h.token_basic("agent-basic", &[("resource", "https://nope.example")])
            .await,
        400,
        "invalid_target",
    );
    assert_oauth_error(
        &h.token_basic("agent-basic", &[("resource", "not a uri")])
            .await,
        400,
        "invalid_target",
    );
    assert_oauth_error(
        &h.token_basic("agent-basic", &[("resource", "https://a.example#f")])
            .await,
        400,
        "invalid_target",
    );
    assert_oauth_error(
        &h.token_basic("agent-basic", &[("resource", API), ("resource", OTHER)])
            .await,
        400,
        "invalid_target",
    );
    // agent-post may use every resource, so it must name one.
    let post = |extra: &'static [(&'static str, &'static str)]| {
        let mut f = vec![
            ("grant_type", "client_credentials"),
            ("client_id", "agent-post"),
            ("client_secret", SECRET),
        ];
        f.extend_from_slice(extra);
        f
    };
    assert_oauth_error(
        &h.post_form("/token", &post(&[]), None).await,
        400,
        "invalid_target",
    );
    let (s, _, b) = h
        .post_form("/token", &post(&[("resource", OTHER)]), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["expires_in"], 300, "the resource's own lifetime applies");
}
for_each_backend!(audience_rules, audience_rules);

async fn scope_rules(db: &TestDb) {
    let h = Harness::start(db).await;
    let (s, _, b) = h
        .token_basic("agent-basic", &[("scope", "write read")])
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["scope"], "read write");
    // admin exists on the resource but the client may not have it.
    let got = h
        .token_basic("agent-basic", &[("scope", "read admin")])
        .await;
    assert_oauth_error(&got, 400, "invalid_scope");
    assert!(got.2["error_description"]
        .as_str()
        .unwrap()
        .contains("admin"));
    assert_oauth_error(
        &h.token_basic("agent-basic", &[("scope", "unknown")]).await,
        400,
        "invalid_scope",
    );
    assert_oauth_error(
        &h.token_basic("agent-basic", &[("scope", "bad\"scope")])
            .await,
        400,
        "invalid_scope",
    );
    let many: String = (0..100).map(|i| format!("s{i} ")).collect();
    assert_oauth_error(
        &h.token_basic("agent-basic", &[("scope", many.as_str())])
            .await,
        400,
        "invalid_scope",
    );
}
for_each_backend!(scope_rules, scope_rules);

async fn grant_type_errors(db: &TestDb) {
    let h = Harness::start(db).await;
    let basic = Some(("agent-basic", SECRET));
    assert_oauth_error(
        &h.post_form("/token", &[("grant_type", "password")], basic)
            .await,
        400,
        "unsupported_grant_type",
    );
    assert_oauth_error(
        &h.post_form("/token", &[("scope", "read")], basic).await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &h.post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
            basic,
        )
        .await,
        400,
        "invalid_request",
    );
    // A client without the grant.
    let got = h
        .post_form(
            "/token",
            &[("grant_type", "client_credentials")],
            Some(("agent-web", SECRET)),
        )
        .await;
    assert_oauth_error(&got, 400, "unauthorized_client");
}
for_each_backend!(grant_type_errors, grant_type_errors);

async fn malformed_http_is_refused_cleanly(db: &TestDb) {
    let h = Harness::start(db).await;
    let url = format!("{}/token", h.base);
    let send = |body: Vec<u8>, content_type: &'static str| {
        let req = h
            .http
            .post(&url)
            .basic_auth("agent-basic", Some(SECRET))
            .header("content-type", content_type)
            .body(body);
        async move { into_parts(req.send().await.unwrap()).await }
    };
    let json = send(
        br#"{"grant_type":"client_credentials"}"#.to_vec(),
        "application/json",
    )
    .await;
    assert_oauth_error(&json, 400, "invalid_request");
    let not_utf8 = send(
        b"grant_type=client_credentials&scope=\xff\xfe".to_vec(),
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_oauth_error(&not_utf8, 400, "invalid_request");
    let bad_escape = send(
        b"grant_type=client_credentials&scope=%FF".to_vec(),
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_oauth_error(&bad_escape, 400, "invalid_request");
    // Oversized: over a raw socket, so the whole body is written before the
    // answer is read (the server may answer before reading it all).
    let huge = raw_http(
        &h.base,
        "POST /token",
        "application/x-www-form-urlencoded",
        &vec![b'a'; 100 * 1024],
    )
    .await;
    assert!(huge.starts_with("HTTP/1.1 413"), "{huge}");
    assert!(huge.contains("invalid_request"), "{huge}");
    let charset = send(
        b"grant_type=client_credentials".to_vec(),
        "application/x-www-form-urlencoded; charset=UTF-8",
    )
    .await;
    assert_eq!(charset.0, StatusCode::OK, "{}", charset.2);
    let get = h.http.get(&url).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    let many: String = (0..100).map(|i| format!("p{i}=v&")).collect();
    let too_many = send(many.into_bytes(), "application/x-www-form-urlencoded").await;
    assert_oauth_error(&too_many, 400, "invalid_request");
    // The server is still fine.
    assert_eq!(h.token_basic("agent-basic", &[]).await.0, StatusCode::OK);
}
for_each_backend!(
    malformed_http_is_refused_cleanly,
    malformed_http_is_refused_cleanly
);

async fn metadata_and_jwks(db: &TestDb) {
    let h = Harness::start(db).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let (s, _, m) = h.get_json(path).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(m["issuer"], ISSUER);
        assert_eq!(m["token_endpoint"], format!("{ISSUER}/token"));
        assert_eq!(m["jwks_uri"], format!("{ISSUER}/jwks.json"));
        assert_eq!(m["introspection_endpoint"], format!("{ISSUER}/introspect"));
        assert_eq!(m["revocation_endpoint"], format!("{ISSUER}/revoke"));
        assert!(
            m.get("registration_endpoint").is_none(),
            "registration is closed by default"
        );
        let methods: Vec<&str> = m["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            methods,
            [
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
                "none"
            ]
        );
        assert_eq!(
            m["scopes_supported"],
            serde_json::json!(["admin", "read", "write"])
        );
    }
    let (s, headers, jwks) = h.get_json("/jwks.json").await;
    assert_eq!(s, StatusCode::OK);
    let cache = headers["cache-control"].to_str().unwrap();
    let max_age: i64 = cache.rsplit('=').next().unwrap().parse().unwrap();
    assert!(
        max_age < 600,
        "JWKS cache lifetime ({max_age}s) is shorter than the pre-publication window"
    );
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert!(keys[0].get("d").is_none(), "no private material");
    assert!(keys[0]["kid"].as_str().is_some());
    let (s, _, _) = h.get_json("/healthz").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = h.get_json("/readyz").await;
    assert_eq!(s, StatusCode::OK);
    h.token_basic("agent-basic", &[("scope", "nope")]).await;
    let (_, _, metrics) = h.get_json("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains("mandate_tokens_refused_total{error=\"invalid_scope\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("mandate_http_request_duration_seconds"));
}
for_each_backend!(metadata_and_jwks, metadata_and_jwks);

/// Each signing algorithm yields tokens that verify independently.
async fn every_signing_algorithm(db: &TestDb) {
    const ALGS: [&[(&str, &str)]; 3] = [
        &[("MANDATE_SIGNING_ALG", "ES256")],
        &[("MANDATE_SIGNING_ALG", "RS256")],
        &[("MANDATE_SIGNING_ALG", "EdDSA")],
    ];
    for env in ALGS {
        let alg = env[0].1;
        // The same database each time: a new algorithm gets a key of its own.
        let mut h = Harness::start_with(db, "", env).await;
        let token = h.access_token().await;
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(format!("{:?}", header.alg), alg);
        let claims: Value = h.verify_independently(&token, API).await;
        assert_eq!(claims["sub"], "agent-basic");
        h.stop().await;
    }
}
for_each_backend!(every_signing_algorithm, every_signing_algorithm);

/// Opens a connection to `addr`, writes `sent`, and returns everything the
/// server sends until it closes the connection (which it must within 20 s).
async fn send_until_closed(addr: &str, sent: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(sent.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server ends a stalled connection")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A request whose body never finishes arriving is answered 408 once
/// `limits.request_timeout` has passed, and the server goes on serving.
async fn a_stalled_request_times_out(db: &TestDb) {
    let h = Harness::start_with(db, "[limits]\nrequest_timeout = \"1s\"\n", &[]).await;
    let addr = h.base.trim_start_matches("http://");
    // The rest of the body never comes; the server must not wait for ever.
    let answer = send_until_closed(
        addr,
        &format!(
            "POST /token HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type="
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(h.token_basic("agent-basic", &[]).await.0, StatusCode::OK);
}
for_each_backend!(a_stalled_request_times_out, a_stalled_request_times_out);

/// A connection that never finishes its request head, and a kept-alive one
/// that goes quiet after a request, are closed once
/// `limits.header_read_timeout` has passed (no slowloris), on the public and
/// the admin listener; others are served.
async fn a_stalled_request_head_is_closed(db: &TestDb) {
    let h = Harness::start_with(db, "[limits]\nheader_read_timeout = \"1s\"\n", &[]).await;
    for (base, path) in [(&h.base, "/jwks.json"), (&h.admin, "/healthz")] {
        let addr = base.trim_start_matches("http://");
        let partial = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        assert_eq!(
            send_until_closed(addr, &partial).await,
            "",
            "{base}: closed without an answer"
        );
        let answered = send_until_closed(addr, &format!("{partial}\r\n")).await;
        assert!(answered.starts_with("HTTP/1.1 200"), "{base}: {answered}");
        assert_eq!(answered.matches("HTTP/1.1").count(), 1, "{base}");
    }
    assert_eq!(h.token_basic("agent-basic", &[]).await.0, StatusCode::OK);
}
for_each_backend!(
    a_stalled_request_head_is_closed,
    a_stalled_request_head_is_closed
);

/// Sends one request over a plain socket and returns the whole answer.
async fn raw_http(base: &str, request_line: &str, content_type: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{request_line} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}
