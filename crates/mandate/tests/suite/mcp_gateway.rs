//! MCP routes: tools/list filtered to what the caller may call, tools/call
//! judged by the tool's level (from annotations or configuration) without a
//! prior list, unknown tools refused like forbidden ones, prompts and
//! resources judged and filtered by their configured scopes, step-up
//! challenges, and header/body consistency (Mcp-Method, Mcp-Name,
//! Mcp-Param-*).

use mandate_testkit::TestDb;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::mcp_upstream::McpUpstream;
use crate::common::*;

async fn start() -> (Harness, McpUpstream, TestDb) {
    start_route("", "").await
}

/// The route with `keys` (route-level keys) and `tables` (sub-tables) added.
async fn start_route(keys: &str, tables: &str) -> (Harness, McpUpstream, TestDb) {
    let up = McpUpstream::start().await;
    let db = TestDb::sqlite();
    let toml: &'static str = Box::leak(
        format!(
            r#"
[[gateway.routes]]
path = "/mcp/files"
upstream = "{}"
protocol = "mcp"
resource = "{API}"
{keys}
[gateway.routes.levels]
read = ["read"]
write = ["write"]
destructive = ["admin"]
[gateway.routes.tools.delete_file]
level = "destructive"
{tables}
"#,
            up.url()
        )
        .into_boxed_str(),
    );
    let h = Harness::start_with(&db, toml, &[]).await;
    (h, up, db)
}

async fn rpc(
    h: &Harness,
    token: &str,
    method: &str,
    params: Value,
    accept: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let resp = h
        .http
        .post(format!("{}/mcp/files", h.base))
        .bearer_auth(token)
        .header("accept", accept)
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

fn tool_names(body: &str) -> Vec<String> {
    let json_part = body
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or(body);
    let v: Value = serde_json::from_str(json_part).unwrap();
    v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_filtered_and_judged_by_level() {
    let (h, up, _db) = start().await;
    let token_for = |scope: &'static str| {
        let h = &h;
        async move {
            h.token_basic("agent-basic", &[("scope", scope)]).await.2["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let read = token_for("read").await;
    let write = token_for("read write").await;

    // A call with no prior list is judged the same way: the gateway learns the tools itself.
    let (s, headers, body) = rpc(
        &h,
        &read,
        "tools/call",
        json!({"name": "write_file"}),
        "application/json, text/event-stream",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let c = headers["www-authenticate"].to_str().unwrap();
    assert!(
        c.contains("error=\"insufficient_scope\"")
            && c.contains("scope=\"write\"")
            && c.contains("resource_metadata="),
        "{c}"
    );
    assert!(
        up.tool_calls().is_empty(),
        "the refused call never reached the upstream"
    );

    // tools/list: a read-only caller cannot even discover the others.
    let (s, _, body) = rpc(
        &h,
        &read,
        "tools/list",
        json!({}),
        "application/json, text/event-stream",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(tool_names(&body), ["read_file"]);
    let (_, _, body) = rpc(&h, &write, "tools/list", json!({}), "text/event-stream").await;
    assert!(
        body.starts_with("event: message\ndata: "),
        "SSE answers stay SSE: {body}"
    );
    assert_eq!(tool_names(&body), ["read_file", "write_file"]);

    // Allowed calls pass; the configuration's override beats the annotations.
    assert_eq!(
        rpc(
            &h,
            &read,
            "tools/call",
            json!({"name": "read_file"}),
            "application/json"
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        rpc(
            &h,
            &write,
            "tools/call",
            json!({"name": "write_file"}),
            "application/json"
        )
        .await
        .0,
        StatusCode::OK
    );
    let (s, headers, _) = rpc(
        &h,
        &write,
        "tools/call",
        json!({"name": "delete_file"}),
        "application/json",
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "delete_file is destructive by configuration"
    );
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("scope=\"admin\""));
    // An unknown tool is refused exactly like a destructive one.
    let (s, headers, _) = rpc(
        &h,
        &write,
        "tools/call",
        json!({"name": "no_such_tool"}),
        "application/json",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("scope=\"admin\""));
    assert_eq!(up.tool_calls(), ["read_file", "write_file"]);

    // Mirrored headers must agree with the body.
    let resp = h
        .http
        .post(format!("{}/mcp/files", h.base))
        .bearer_auth(&write)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "read_file")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "write_file"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32020);
    // The session header reaches the upstream; the audit names the tool.
    let resp = h
        .http
        .post(format!("{}/mcp/files", h.base))
        .bearer_auth(&read)
        .header("mcp-session-id", "session-1")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "read_file"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let last = up.calls.lock().unwrap().last().unwrap().2.clone();
    assert_eq!(last["mcp-session-id"], "session-1");
    let audited = h
        .audit_until(|e| {
            e.event
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("operation=tools/call:read_file"))
        })
        .await;
    assert!(audited.iter().any(|e| e.event.kind == "gateway.denied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_are_checked_and_answers_to_server_requests_pass() {
    let (h, up, _db) = start().await;
    let token = h.token_basic("agent-basic", &[("scope", "read")]).await.2["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let post = |origin: Option<&'static str>, body: Value| {
        let (h, token) = (&h, &token);
        async move {
            let mut req = h
                .http
                .post(format!("{}/mcp/files", h.base))
                .bearer_auth(token)
                .header("accept", "application/json, text/event-stream")
                .json(&body);
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            let resp = req.send().await.unwrap();
            (resp.status(), resp.text().await.unwrap())
        }
    };
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    // DNS rebinding: a page on another origin is refused before anything else.
    let (s, body) = post(Some("http://evil.example"), ping.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        -32000
    );
    assert!(!up.methods().iter().any(|m| m == "ping"));
    // The gateway's own origin, or none (a non-browser client), passes.
    assert_eq!(post(Some(ISSUER), ping.clone()).await.0, StatusCode::OK);
    assert_eq!(post(None, ping).await.0, StatusCode::OK);
    // The client's answer to a server request (no method) reaches the upstream.
    let answer = json!({"jsonrpc": "2.0", "id": 0, "result": {"action": "accept"}});
    let (s, body) = post(None, answer).await;
    assert!(s.is_success(), "{s} {body}");
    assert!(up.methods().iter().any(String::is_empty));
    // A message that is neither request nor response is still refused.
    let (s, _) = post(None, json!({"jsonrpc": "2.0", "id": 2})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

async fn token(h: &Harness, scope: &str) -> String {
    let (s, _, body) = h.token_basic("agent-basic", &[("scope", scope)]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// A POST to the route with extra headers.
async fn post_with(
    h: &Harness,
    token: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = h
        .http
        .post(format!("{}/mcp/files", h.base))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    into_parts(req.send().await.unwrap()).await
}

fn ids(body: &str, list: &str, id: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap();
    v["result"][list]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[id].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_and_resources_are_judged_and_filtered() {
    let (h, up, _db) = start_route(
        r#"resource_scopes = ["read"]"#,
        r#"
[gateway.routes.prompts.admin_prompt]
scopes = ["admin"]
[gateway.routes.resources."file:///secret/*"]
scopes = ["admin"]
"#,
    )
    .await;
    let read = token(&h, "read").await;
    let write = token(&h, "write").await;
    let json = "application/json";

    // Lists show only what the token may use, in JSON and in SSE.
    let (s, _, body) = rpc(&h, &read, "prompts/list", json!({}), json).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids(&body, "prompts", "name"), ["greet"]);
    let (_, _, body) = rpc(&h, &read, "resources/list", json!({}), "text/event-stream").await;
    assert!(
        body.starts_with("event: message\ndata: "),
        "SSE stays SSE: {body}"
    );
    let data = body.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    assert_eq!(ids(data, "resources", "uri"), ["file:///notes.txt"]);
    let (_, _, body) = rpc(&h, &write, "resources/list", json!({}), json).await;
    assert!(
        ids(&body, "resources", "uri").is_empty(),
        "every resource needs resource_scopes"
    );

    // A prompt or resource with no rule needs only the route's scopes (and
    // resource_scopes); one with a rule is refused before the upstream sees it.
    let (s, _, _) = rpc(&h, &write, "prompts/get", json!({"name": "greet"}), json).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "an unconfigured prompt keeps the route's rule"
    );
    let (s, headers, _) = rpc(
        &h,
        &read,
        "prompts/get",
        json!({"name": "admin_prompt"}),
        json,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let c = headers["www-authenticate"].to_str().unwrap();
    assert!(
        c.contains("error=\"insufficient_scope\"") && c.contains("scope=\"admin\""),
        "{c}"
    );
    let (s, _, _) = rpc(
        &h,
        &read,
        "resources/read",
        json!({"uri": "file:///notes.txt"}),
        json,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, headers, _) = rpc(
        &h,
        &write,
        "resources/read",
        json!({"uri": "file:///notes.txt"}),
        json,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("scope=\"read\""));
    for method in ["resources/read", "resources/subscribe"] {
        let (s, headers, _) = rpc(
            &h,
            &read,
            method,
            json!({"uri": "file:///secret/key"}),
            json,
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method}");
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("scope=\"admin read\""),
            "the challenge names every scope needed"
        );
    }
    // A resource is judged by its uri, whatever name the params carry.
    let (s, _, _) = rpc(
        &h,
        &read,
        "resources/read",
        json!({"name": "file:///notes.txt", "uri": "file:///secret/key"}),
        json,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Mcp-Name mirrors the uri.
    let (s, _, body) = post_with(
        &h,
        &read,
        &[("mcp-method", "resources/read"), ("mcp-name", "file:///notes.txt")],
        json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "file:///secret/key"}}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], -32020);
    assert_eq!(up.names("prompts/get"), ["greet"]);
    assert_eq!(up.names("resources/read"), ["file:///notes.txt"]);
    assert!(up.names("resources/subscribe").is_empty());
    // The refusal names the resource in the audit trail.
    h.audit_until(|e| {
        e.event.kind == "gateway.denied"
            && e.event
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("operation=resources/read:file:///secret/key"))
    })
    .await;
    // The metadata lists the prompt and resource scopes.
    let (_, _, meta) = h
        .get_json("/.well-known/oauth-protected-resource/mcp/files")
        .await;
    let supported = meta["scopes_supported"].as_array().unwrap();
    assert!(supported.contains(&json!("admin")) && supported.contains(&json!("read")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_param_headers_must_match_the_arguments() {
    let (h, up, _db) = start().await;
    let read = token(&h, "read").await;
    let write = token(&h, "write").await;
    let call = |args: Value| {
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "read_file", "arguments": args}})
    };
    let args = json!({"path": "/a", "region": "eu-west1"});
    // read_file's inputSchema marks `region` with x-mcp-header: Region.
    let (s, _, body) = post_with(
        &h,
        &read,
        &[("mcp-param-region", "eu-west1")],
        call(args.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let encoded = format!(
        "=?base64?{}?=",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "eu-west1")
    );
    let (s, _, _) = post_with(
        &h,
        &read,
        &[("Mcp-Param-Region", &encoded)],
        call(args.clone()),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the base64 form decodes to the same value"
    );
    // An undeclared Mcp-Param-* header is forwarded untouched.
    let (s, _, _) = post_with(&h, &read, &[("mcp-param-trace", "abc")], call(args.clone())).await;
    assert_eq!(s, StatusCode::OK);
    let last = up.calls.lock().unwrap().last().unwrap().2.clone();
    assert_eq!(last["mcp-param-trace"], "abc");
    let calls_before = up.tool_calls().len();
    for (why, headers, args) in [
        (
            "another value",
            vec![("mcp-param-region", "us-east1")],
            args.clone(),
        ),
        (
            "a header without the argument",
            vec![("mcp-param-region", "eu-west1")],
            json!({"path": "/a"}),
        ),
        (
            "2026-07-28 without the header",
            vec![
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "read_file"),
            ],
            args.clone(),
        ),
    ] {
        let (s, _, body) = post_with(&h, &read, &headers, call(args)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{why}: {body}");
        assert_eq!(body["error"]["code"], -32020, "{why}");
        assert_eq!(body["error"]["message"], "HeaderMismatch", "{why}");
    }
    // The mismatch is found before any policy: a token that could not call
    // the tool still gets 400, not 403.
    let (s, _, _) = post_with(
        &h,
        &write,
        &[("mcp-param-region", "us-east1")],
        call(args.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = post_with(&h, &write, &[("mcp-param-region", "eu-west1")], call(args)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        up.tool_calls().len(),
        calls_before,
        "no refused call reached the upstream"
    );
    // A 2026-07-28 request with every header passes.
    let (s, _, body) = post_with(
        &h,
        &read,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "read_file"),
            ("mcp-param-region", "eu-west1"),
        ],
        call(json!({"region": "eu-west1"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    h.audit_until(|e| {
        e.event
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("header_mismatch"))
    })
    .await;
}
