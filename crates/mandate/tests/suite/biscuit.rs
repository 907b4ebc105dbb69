//! Biscuits end to end: token exchange issues one signed by the published
//! root key, its holder narrows it offline, and the gateway runs every
//! block's checks against each MCP call, naming a failed check in the audit.

use mandate_biscuit::{attenuate, Attenuation, PublishedRootKey, RootKeys};
use mandate_jose::SigningAlg;
use mandate_testkit::{for_each_backend, TestDb};
use mandate_types::Clock as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::mcp_upstream::McpUpstream;
use crate::common::*;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";

fn config(up: &McpUpstream) -> &'static str {
    Box::leak(
        format!(
            r#"
[[clients]]
client_id = "tool-agent"
grant_types = ["{EXCHANGE}"]
scopes = ["read", "write"]
resources = ["{API}"]
secret_env = "AGENT_SECRET"
may_act_for = ["agent-basic"]

[gateway]
revocation_refresh = "1s"

[[gateway.routes]]
path = "/mcp/files"
upstream = "{}"
protocol = "mcp"
resource = "{API}"
[gateway.routes.levels]
read = ["read"]
write = ["write"]
destructive = ["admin"]
"#,
            up.url()
        )
        .into_boxed_str(),
    )
}

async fn biscuit_for(
    h: &Harness,
    scope: &str,
    dpop: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let (_, _, t0) = h.token_basic("agent-basic", &[]).await;
    let subject = t0["access_token"].as_str().unwrap();
    let mut req = h
        .http
        .post(format!("{}/token", h.base))
        .basic_auth("tool-agent", Some(SECRET))
        .form(&[
            ("grant_type", EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", AT),
            ("requested_token_type", mandate_biscuit::TOKEN_TYPE),
            ("scope", scope),
            ("resource", API),
        ]);
    if let Some(p) = dpop {
        req = req.header("dpop", p);
    }
    into_parts(req.send().await.unwrap()).await
}

async fn call(
    h: &Harness,
    authorization: &str,
    dpop: Option<&str>,
    method: &str,
    params: Value,
) -> (StatusCode, String, String) {
    let mut req = h
        .http
        .post(format!("{}/mcp/files", h.base))
        .header("authorization", authorization)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}));
    if let Some(p) = dpop {
        req = req.header("dpop", p);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge, resp.text().await.unwrap())
}

async fn published_roots(h: &Harness) -> Vec<PublishedRootKey> {
    let (_, _, meta) = h.get_json("/.well-known/oauth-authorization-server").await;
    serde_json::from_value(meta["biscuit_root_keys"].clone()).unwrap()
}

async fn exchange_mints_a_verifiable_biscuit(db: &TestDb) {
    let up = McpUpstream::start().await;
    let h = Harness::start_with(db, config(&up), &[]).await;
    let (s, _, body) = biscuit_for(&h, "read write", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["issued_token_type"], mandate_biscuit::TOKEN_TYPE);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "read write");
    let token = body["access_token"].as_str().unwrap();

    // Anyone can verify it with the root keys the metadata publishes.
    let roots = published_roots(&h).await;
    assert_eq!(roots.len(), 1);
    let verified = RootKeys::new(&roots).verify(token).unwrap();
    let c = &verified.claims;
    assert_eq!(c.issuer, ISSUER);
    assert_eq!(c.subject, "agent-basic", "sub stays the original principal");
    assert_eq!(c.client_id, "tool-agent");
    assert_eq!(c.audience, API);
    assert_eq!(c.scopes.to_string(), "read write");
    assert_eq!(c.actors[0].sub, "tool-agent");
    assert!(c.expires_at > h.clock.now());
    let (_, _, meta) = h.get_json("/.well-known/oauth-authorization-server").await;
    assert!(meta["mandate_token_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == mandate_biscuit::TOKEN_TYPE));

    // The exchange is in the audit trail, marked as a Biscuit, with its chain.
    let events = h.audit().await;
    let minted = events
        .iter()
        .find(|e| e.event.kind == "token.exchanged" && e.event.jti.as_deref() == Some(&c.token_id))
        .expect("the exchange is audited");
    assert!(minted
        .event
        .reason
        .as_deref()
        .unwrap()
        .starts_with("biscuit;"));

    // Exchange still only narrows.
    assert_oauth_error(
        &biscuit_for(&h, "read admin", None).await,
        400,
        "invalid_scope",
    );

    // Rotation publishes the next root key before it signs.
    let (s, rotated) = h
        .admin_send(
            reqwest::Method::POST,
            "/admin/keys/rotate?purpose=biscuit",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["purpose"], "biscuit");
    let roots = published_roots(&h).await;
    assert_eq!(roots.len(), 2);
    assert!(RootKeys::new(&roots).verify(token).is_ok());
}

for_each_backend!(
    exchange_mints_a_verifiable_biscuit,
    exchange_mints_a_verifiable_biscuit
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_runs_every_block_and_names_the_failed_check() {
    let up = McpUpstream::start().await;
    let db = TestDb::sqlite();
    let h = Harness::start_with(&db, config(&up), &[]).await;
    let (_, _, body) = biscuit_for(&h, "read write", None).await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    let bearer = |t: &str| format!("Bearer {t}");

    // The authority block alone: read and write tools, not destructive ones.
    let (s, _, out) = call(
        &h,
        &bearer(&token),
        None,
        "tools/call",
        json!({"name": "write_file"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let (s, challenge, _) = call(
        &h,
        &bearer(&token),
        None,
        "tools/call",
        json!({"name": "wipe_disk"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(challenge.contains("scope=\"admin\""), "{challenge}");

    // Narrowed offline to one tool: other tools, and listing, are refused.
    let narrowed = attenuate(
        &token,
        &Attenuation {
            tools: vec!["read_file".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let (s, _, out) = call(
        &h,
        &bearer(&narrowed),
        None,
        "tools/call",
        json!({"name": "read_file"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let before = up.tool_calls().len();
    let (s, challenge, out) = call(
        &h,
        &bearer(&narrowed),
        None,
        "tools/call",
        json!({"name": "write_file"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{out}");
    assert!(
        challenge.contains("insufficient_scope") && challenge.contains("tool"),
        "{challenge}"
    );
    assert_eq!(
        up.tool_calls().len(),
        before,
        "refused calls never reach the upstream"
    );
    let events = h
        .audit_until(|e| {
            e.event.kind == "gateway.denied"
                && e.event
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains("biscuit_check_failed") && r.contains("tool"))
        })
        .await;
    // Decisions are audited asynchronously: pick this refusal's own event.
    let denied = events
        .iter()
        .rev()
        .find(|e| {
            e.event.kind == "gateway.denied"
                && e.event
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains("biscuit_check_failed"))
        })
        .unwrap();
    assert!(
        denied
            .event
            .reason
            .as_deref()
            .unwrap()
            .contains("reject if tool($t)"),
        "the failed check is named: {denied:?}"
    );
    assert_eq!(
        denied.event.client_id.as_deref(),
        Some("tool-agent"),
        "and who was refused"
    );
    assert_eq!(denied.event.subject.as_deref(), Some("agent-basic"));
    assert!(denied
        .event
        .reason
        .as_deref()
        .unwrap()
        .contains("operation=tools/call:write_file"));
    // tools/list shows only what the narrowed token may call.
    let (s, _, out) = call(&h, &bearer(&narrowed), None, "tools/list", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["read_file"]);

    // Narrowed to fewer scopes and an expiry: a write is refused, then everything after the expiry.
    let now = h.clock.now();
    let read_only = attenuate(
        &token,
        &Attenuation {
            scopes: Some(mandate_types::ScopeSet::parse("read").unwrap()),
            not_after: Some(now + 60),
            ..Default::default()
        },
    )
    .unwrap();
    let (s, _, _) = call(
        &h,
        &bearer(&read_only),
        None,
        "tools/call",
        json!({"name": "read_file"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(
        &h,
        &bearer(&read_only),
        None,
        "tools/call",
        json!({"name": "write_file"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    h.clock.advance(120);
    let (s, _, _) = call(
        &h,
        &bearer(&read_only),
        None,
        "tools/call",
        json!({"name": "read_file"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "past the holder's own expiry");
    let (s, _, _) = call(
        &h,
        &bearer(&token),
        None,
        "tools/call",
        json!({"name": "read_file"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "the unattenuated token still works");

    // A tampered or foreign token fails the signature: 401 invalid_token.
    let mut tampered = narrowed.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (s, challenge, _) = call(&h, &bearer(&tampered), None, "tools/list", json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(challenge.contains("invalid_token"), "{challenge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_bound_biscuits_need_the_key() {
    let up = McpUpstream::start().await;
    let db = TestDb::sqlite();
    let h = Harness::start_with(&db, config(&up), &[]).await;
    let key = ClientKey::new(SigningAlg::EdDSA);
    let token_url = format!("{ISSUER}/token");
    let now = h.clock.now();
    // The first proof earns a nonce; the second gets the bound Biscuit.
    let first = biscuit_for(
        &h,
        "read",
        Some(&key.dpop_proof("POST", &token_url, now, None, None)),
    )
    .await;
    assert_oauth_error(&first, 400, "use_dpop_nonce");
    let nonce = first.1["dpop-nonce"].to_str().unwrap().to_owned();
    let (s, _, body) = biscuit_for(
        &h,
        "read",
        Some(&key.dpop_proof("POST", &token_url, now, Some(&nonce), None)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let roots = published_roots(&h).await;
    let claims = RootKeys::new(&roots).verify(&token).unwrap().claims;
    assert_eq!(
        claims.jkt.as_deref(),
        Some(key.public().thumbprint().unwrap().as_str())
    );

    let url = format!("{ISSUER}/mcp/files");
    let params = json!({"name": "read_file"});
    let (s, challenge, _) = call(
        &h,
        &format!("Bearer {token}"),
        None,
        "tools/call",
        params.clone(),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a bound Biscuit as Bearer is refused"
    );
    assert!(challenge.starts_with("DPoP "), "{challenge}");
    let proof = key.dpop_proof("POST", &url, now, None, Some(&token));
    let (s, _, out) = call(
        &h,
        &format!("DPoP {token}"),
        Some(&proof),
        "tools/call",
        params.clone(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{out}");
    let other = ClientKey::new(SigningAlg::EdDSA);
    let proof = other.dpop_proof("POST", &url, now, None, Some(&token));
    let (s, _, _) = call(
        &h,
        &format!("DPoP {token}"),
        Some(&proof),
        "tools/call",
        params,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a proof from another key is refused"
    );
}

/// `mandate token attenuate` and `inspect` work offline on a Biscuit, and
/// the narrowing holds when the result is verified and authorized.
#[test]
fn cli_attenuates_and_inspects_offline() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use std::process::Command;
    let der = ed25519_dalek::SigningKey::from_bytes(&[3; 32])
        .to_pkcs8_der()
        .unwrap();
    let root = mandate_biscuit::RootKey::from_ed25519_pkcs8("cli", der.as_bytes()).unwrap();
    let scopes = mandate_types::ScopeSet::parse("read write").unwrap();
    let token = mandate_biscuit::mint(
        &root,
        &mandate_biscuit::Grant {
            issuer: ISSUER,
            subject: "alice",
            client_id: "tool-agent",
            audience: API,
            scopes: &scopes,
            token_id: "j1",
            expires_at: 4_000_000_000,
            actors: &[],
            jkt: None,
        },
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_mandate");
    let out = Command::new(bin)
        .args([
            "token",
            "attenuate",
            &token,
            "--tool",
            "read_file",
            "--expires",
            "10m",
            "--seal",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let narrowed = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let verified = RootKeys::new([&root.published()])
        .verify(&narrowed)
        .unwrap();
    let needed = mandate_types::ScopeSet::parse("read").unwrap();
    let now = mandate_types::SystemClock.now();
    let request = |tool: &'static str, time: i64| mandate_biscuit::RequestFacts {
        time,
        resource: API,
        operation: Some("tools/call"),
        tool: Some(tool),
        level: None,
        http_method: "POST",
        path: "/",
        required_scopes: &needed,
    };
    assert!(verified.authorize(&request("read_file", now)).is_ok());
    assert!(verified.authorize(&request("write_file", now)).is_err());
    assert!(verified
        .authorize(&request("read_file", now + 3600))
        .is_err());

    let out = Command::new(bin)
        .args(["token", "inspect", &narrowed])
        .output()
        .unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("// block 0 (authority)") && printed.contains("subject(\"alice\")"));
    assert!(printed.contains("// block 1 (attenuation)") && printed.contains("read_file"));
    // Sealed: the CLI refuses to add another block.
    let out = Command::new(bin)
        .args(["token", "attenuate", &narrowed, "--tool", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sealed"));
    // Fetching a token still needs its credentials.
    let out = Command::new(bin).args(["token"]).output().unwrap();
    assert!(!out.status.success());
}

/// A Biscuit is introspected and revoked like a JWT, by its `token_id`:
/// revoking it stops every attenuation of it at the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn biscuits_are_introspected_and_revoked() {
    let up = McpUpstream::start().await;
    let db = TestDb::sqlite();
    let h = Harness::start_with(&db, config(&up), &[]).await;
    let (_, _, body) = biscuit_for(&h, "read write", None).await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    let narrowed = attenuate(
        &token,
        &Attenuation {
            tools: vec!["read_file".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let introspect = |t: String| {
        let h = &h;
        async move {
            h.post_form(
                "/introspect",
                &[("token", t.as_str())],
                Some(("tool-agent", SECRET)),
            )
            .await
            .2
        }
    };
    let info = introspect(token.clone()).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["scope"], "read write");
    assert_eq!(info["client_id"], "tool-agent");
    assert_eq!(info["sub"], "agent-basic");
    assert_eq!(info["act"]["sub"], "tool-agent");
    assert_eq!(info["token_type"], "Bearer");
    assert!(info.get("iat").is_none(), "a Biscuit states no issue time");
    assert_eq!(introspect(narrowed.clone()).await["active"], true);
    let call = |t: String| {
        let h = &h;
        async move {
            call(
                h,
                &format!("Bearer {t}"),
                None,
                "tools/call",
                json!({"name": "read_file"}),
            )
            .await
            .0
        }
    };
    assert_eq!(call(narrowed.clone()).await, StatusCode::OK);
    // A Biscuit is not a subject token: exchanging it would drop its checks.
    let (s, _, refused) = h
        .post_form(
            "/token",
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", narrowed.as_str()),
                ("subject_token_type", AT),
            ],
            Some(("tool-agent", SECRET)),
        )
        .await;
    assert_eq!(
        (s, refused["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );

    let (s, _, _) = h
        .post_form(
            "/revoke",
            &[("token", token.as_str())],
            Some(("tool-agent", SECRET)),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(introspect(narrowed.clone()).await["active"], false);
    // Honoured at the gateway within revocation_refresh (1 s); bounded polling.
    let refused = eventually(100, std::time::Duration::from_millis(50), || async {
        (call(narrowed.clone()).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "every attenuation of a revoked Biscuit is refused"
    );
    assert!(h
        .audit()
        .await
        .iter()
        .any(|e| e.event.kind == "token.revoked"));
}
