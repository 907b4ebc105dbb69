//! A small MCP server (Streamable HTTP, session-based revision) for gateway
//! tests: four tools with annotations (one mirrors an argument into
//! `Mcp-Param-Region`), two prompts, two resources, a session id, JSON or
//! SSE answers.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// One message the upstream saw: method, `params.name` (or `params.uri`), headers.
pub type Seen = (String, Option<String>, HeaderMap);

#[derive(Clone, Default)]
pub struct McpUpstream {
    pub calls: Arc<Mutex<Vec<Seen>>>,
    pub addr: Option<std::net::SocketAddr>,
}

impl McpUpstream {
    pub async fn start() -> McpUpstream {
        let mut up = McpUpstream::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        up.addr = Some(listener.local_addr().unwrap());
        let app = Router::new()
            .route(
                "/mcp",
                post(handle)
                    .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
                    .delete(|| async { StatusCode::OK }),
            )
            .with_state(up.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        up
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr.unwrap())
    }

    /// Every JSON-RPC method received, in order (`""` for responses).
    pub fn methods(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(m, _, _)| m.clone())
            .collect()
    }

    /// Every `params.name` (or `params.uri`) the upstream saw with `method`.
    pub fn names(&self, method: &str) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _, _)| m == method)
            .filter_map(|(_, n, _)| n.clone())
            .collect()
    }

    /// Tools called by someone other than the gateway's own catalog session.
    pub fn tool_calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _, _)| m == "tools/call")
            .filter_map(|(_, n, _)| n.clone())
            .collect()
    }
}

fn tools() -> Value {
    json!([
        {"name": "read_file", "inputSchema": {"type": "object", "properties": {
            "path": {"type": "string"},
            "region": {"type": "string", "x-mcp-header": "Region"}}},
         "annotations": {"readOnlyHint": true}},
        {"name": "write_file", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": false, "destructiveHint": false}},
        {"name": "wipe_disk", "inputSchema": {"type": "object"}},
        {"name": "delete_file", "inputSchema": {"type": "object"}, "annotations": {"destructiveHint": false}}
    ])
}

async fn handle(State(up): State<McpUpstream>, req: Request) -> Response {
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    let msg: Value = serde_json::from_slice(&body).unwrap();
    let method = msg["method"].as_str().unwrap_or_default().to_owned();
    let name = msg
        .pointer("/params/name")
        .or_else(|| msg.pointer("/params/uri"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    up.calls
        .lock()
        .unwrap()
        .push((method.clone(), name.clone(), headers.clone()));
    let id = msg["id"].clone();
    let result = match method.as_str() {
        "initialize" => {
            json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {"listChanged": true}}, "serverInfo": {"name": "files", "version": "1"}})
        }
        "notifications/initialized" => return StatusCode::ACCEPTED.into_response(),
        "tools/list" => json!({"tools": tools()}),
        "tools/call" => {
            json!({"content": [{"type": "text", "text": format!("called {}", name.unwrap_or_default())}]})
        }
        "prompts/list" => json!({"prompts": [
            {"name": "greet", "description": "Say hello"},
            {"name": "admin_prompt", "description": "Reset everything"}
        ]}),
        "prompts/get" => {
            json!({"messages": [{"role": "user", "content": {"type": "text", "text": "hello"}}]})
        }
        "resources/list" => json!({"resources": [
            {"uri": "file:///notes.txt", "name": "notes"},
            {"uri": "file:///secret/key", "name": "key"}
        ]}),
        "resources/read" => {
            json!({"contents": [{"uri": name.unwrap_or_default(), "text": "contents"}]})
        }
        _ => json!({}),
    };
    let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
    let sse = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream") && !a.contains("application/json"));
    let mut response = if sse {
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from(format!("event: message\ndata: {reply}\n\n")))
            .unwrap()
    } else {
        axum::Json(reply).into_response()
    };
    if method == "initialize" {
        response
            .headers_mut()
            .insert("mcp-session-id", "session-1".parse().unwrap());
    }
    response
}
