//! The authorization code flow's fixed parts, shared by the suites that drive
//! it: the public MCP host client, its PKCE pair (RFC 7636 appendix B), the
//! `/authorize` request and the code's redemption.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{Harness, API};

pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
pub const PASSWORD: &str = "correct horse battery staple";

/// A public client for the code flow, to add to a harness's configuration.
pub const HOST_CLIENT: &str = r#"
[[clients]]
client_id = "mcp-host"
name = "Desktop Assistant"
grant_types = ["authorization_code", "refresh_token"]
scopes = ["read", "write"]
token_endpoint_auth_method = "none"
redirect_uris = ["http://127.0.0.1/callback"]
"#;

/// The authorization request parameters for `mcp-host` with PKCE,
/// `state=xyz`, resource [`API`] and scope `read write`; each of `extra`
/// replaces its parameter (or, empty, removes it). For `/authorize` and PAR.
pub fn authorize_params<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", "mcp-host"),
        ("redirect_uri", "http://127.0.0.1:53117/callback"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
        ("state", "xyz"),
        ("resource", API),
        ("scope", "read write"),
    ];
    for (k, v) in extra {
        params.retain(|(pk, _)| pk != k);
        if !v.is_empty() {
            params.push((k, v));
        }
    }
    params
}

/// `/authorize` with [`authorize_params`].
pub fn authorize_path(extra: &[(&str, &str)]) -> String {
    let params = authorize_params(extra);
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("/authorize?{q}")
}

/// Adds the password user `alice` (password [`PASSWORD`]).
pub async fn add_alice(h: &Harness) {
    let (s, _) = h
        .admin_send(
            Method::POST,
            "/admin/users",
            Some(json!({"username": "alice", "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

/// Redeems `code` at the token endpoint as `mcp-host`.
pub async fn redeem(
    h: &Harness,
    code: &str,
    verifier: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    h.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "mcp-host"),
            ("code", code),
            ("redirect_uri", "http://127.0.0.1:53117/callback"),
            ("code_verifier", verifier),
        ],
        None,
    )
    .await
}

/// Spends `refresh_token` at the token endpoint as `mcp-host`, asking for
/// `scope` when given.
pub async fn refresh(
    h: &Harness,
    refresh_token: &str,
    scope: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("client_id", "mcp-host"),
        ("refresh_token", refresh_token),
    ];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    h.post_form("/token", &form, None).await
}
