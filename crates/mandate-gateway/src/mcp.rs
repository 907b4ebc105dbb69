//! The gateway's MCP side: learning the upstream's tools (so a `tools/call`
//! made without a prior list is judged the same way) and filtering
//! `tools/list` answers so a caller sees only the tools it may call.
//!
//! The catalog opens its own MCP session with the upstream (`initialize`,
//! `notifications/initialized`, paged `tools/list`, then `DELETE`), caches
//! the result for a minute, and refreshes early when asked about a tool it
//! does not know (at most every ten seconds), which covers tools added by a
//! `notifications/tools/list_changed` the gateway did not see.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt as _, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mandate_tower::mcp::{Level, ToolCatalog, ToolInfo};

use serde_json::{json, Value};

/// How long a learned tool list is used.
const CATALOG_TTL: Duration = Duration::from_secs(60);
/// Shortest interval between refreshes caused by unknown tools.
const MIN_REFRESH: Duration = Duration::from_secs(10);
/// Largest upstream message read (catalog or a filtered `tools/list`).
pub const MAX_MCP_MESSAGE: usize = 4 * 1024 * 1024;
/// Most pages of `tools/list` followed.
const MAX_PAGES: usize = 50;

struct Learned {
    at: Instant,
    tools: HashMap<String, ToolInfo>,
}

/// The upstream's tools, learned over MCP.
pub struct UpstreamCatalog {
    url: String,
    client: Client<HttpConnector, Body>,
    timeout: Duration,
    learned: tokio::sync::Mutex<Option<Learned>>,
}

impl UpstreamCatalog {
    /// A catalog for the MCP endpoint at `url`.
    pub fn new(url: &str, timeout: Duration) -> Self {
        Self {
            url: url.to_owned(),
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            timeout,
            learned: tokio::sync::Mutex::new(None),
        }
    }

    async fn post(
        &self,
        session: Option<&str>,
        message: &Value,
    ) -> Result<(Option<String>, Vec<Value>), String> {
        let mut req = Request::post(&self.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18");
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        let req = req
            .body(Body::from(message.to_string()))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let sse = is_sse(resp.headers().get(header::CONTENT_TYPE));
        if !resp.status().is_success() {
            return Err(format!("{} answered {}", message["method"], resp.status()));
        }
        let body = tokio::time::timeout(
            self.timeout,
            Limited::new(resp.into_body(), MAX_MCP_MESSAGE).collect(),
        )
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?
        .to_bytes();
        Ok((session, messages(&body, sse)))
    }

    async fn fetch(&self) -> Result<HashMap<String, ToolInfo>, String> {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "mandate-gateway", "version": env!("CARGO_PKG_VERSION")}}});
        let (session, _) = self.post(None, &init).await?;
        let s = session.as_deref();
        self.post(
            s,
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await?;
        let mut tools = HashMap::new();
        let mut cursor: Option<String> = None;
        for page in 0..MAX_PAGES {
            let mut params = json!({});
            if let Some(c) = &cursor {
                params["cursor"] = json!(c);
            }
            let list =
                json!({"jsonrpc": "2.0", "id": 2 + page, "method": "tools/list", "params": params});
            let (_, replies) = self.post(s, &list).await?;
            let result = replies
                .iter()
                .find_map(|m| m.get("result").cloned())
                .ok_or("tools/list gave no result")?;
            for t in result["tools"].as_array().into_iter().flatten() {
                if let Some(name) = t["name"].as_str() {
                    tools.insert(
                        name.to_owned(),
                        ToolInfo {
                            level: Level::from_annotations(t.get("annotations")),
                        },
                    );
                }
            }
            cursor = result["nextCursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        if let Some(s) = s {
            if let Ok(req) = Request::delete(&self.url)
                .header("mcp-session-id", s)
                .body(Body::empty())
            {
                let _ = tokio::time::timeout(self.timeout, self.client.request(req)).await;
            }
        }
        Ok(tools)
    }
}

#[async_trait]
impl ToolCatalog for UpstreamCatalog {
    async fn tool(&self, name: &str) -> Option<ToolInfo> {
        let mut learned = self.learned.lock().await;
        let refresh = match learned.as_ref() {
            None => true,
            Some(l) if l.at.elapsed() > CATALOG_TTL => true,
            Some(l) => !l.tools.contains_key(name) && l.at.elapsed() > MIN_REFRESH,
        };
        if refresh {
            match self.fetch().await {
                Ok(tools) => {
                    *learned = Some(Learned {
                        at: Instant::now(),
                        tools,
                    })
                }
                Err(e) => {
                    tracing::warn!(upstream = %self.url, error = %e, "learning the upstream's MCP tools failed");
                    // Keep what we had; wait before trying again.
                    if let Some(l) = learned.as_mut() {
                        l.at = Instant::now();
                    }
                }
            }
        }
        learned.as_ref().and_then(|l| l.tools.get(name).cloned())
    }
}

pub(crate) fn is_sse(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// JSON-RPC messages of a body: one JSON object, or SSE `data:` events.
fn messages(body: &[u8], sse: bool) -> Vec<Value> {
    if !sse {
        return serde_json::from_slice(body).into_iter().collect();
    }
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            serde_json::from_str(&data.join("\n")).ok()
        })
        .collect()
}

/// Removes from a `tools/list` result every tool `scope` may not call.
/// Whether the caller may call a tool, given its name and what the
/// upstream's annotations say of it.
pub(crate) type MayCall<'a> = &'a dyn Fn(&str, &ToolInfo) -> bool;

fn filter_message(message: &mut Value, may_call: MayCall<'_>) {
    if let Some(tools) = message
        .pointer_mut("/result/tools")
        .and_then(Value::as_array_mut)
    {
        tools.retain(|t| {
            let name = t["name"].as_str().unwrap_or_default();
            let info = ToolInfo {
                level: Level::from_annotations(t.get("annotations")),
            };
            may_call(name, &info)
        });
    }
}

/// Filters a whole `tools/list` response body (JSON or SSE).
pub(crate) fn filter_tools_list(body: &Bytes, sse: bool, may_call: MayCall<'_>) -> Bytes {
    if !sse {
        return match serde_json::from_slice::<Value>(body) {
            Ok(mut v) => {
                filter_message(&mut v, may_call);
                Bytes::from(v.to_string())
            }
            Err(_) => body.clone(),
        };
    }
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len());
    for event in text.split_inclusive("\n\n") {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        match serde_json::from_str::<Value>(&data.join("\n")) {
            Ok(mut v) if v.pointer("/result/tools").is_some() => {
                filter_message(&mut v, may_call);
                for line in event
                    .lines()
                    .filter(|l| !l.starts_with("data:") && !l.is_empty())
                {
                    out.push_str(line);
                    out.push('\n');
                }
                out.push_str("data: ");
                out.push_str(&v.to_string());
                out.push_str("\n\n");
            }
            _ => out.push_str(event),
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_tower::mcp::{McpPolicy, StaticCatalog};
    use mandate_types::ScopeSet;
    use std::sync::Arc;

    fn policy() -> McpPolicy {
        let s = |x: &str| ScopeSet::parse(x).unwrap();
        McpPolicy {
            allowed_origins: Vec::new(),
            levels: HashMap::from([
                (Level::Read, s("r")),
                (Level::Write, s("w")),
                (Level::Destructive, s("d")),
            ]),
            tools: HashMap::new(),
            catalog: Arc::new(StaticCatalog::default()),
        }
    }

    #[test]
    fn filters_json_and_sse() {
        let list = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
            {"name": "read_file", "annotations": {"readOnlyHint": true}},
            {"name": "write_file", "annotations": {"destructiveHint": false}},
            {"name": "delete_file"}
        ]}});
        let holding = |scope: &'static str| {
            move |name: &str, info: &ToolInfo| {
                policy().may_call(name, Some(info), &ScopeSet::parse(scope).unwrap())
            }
        };
        let out = filter_tools_list(&Bytes::from(list.to_string()), false, &holding("r"));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 1);
        let sse = format!("event: message\ndata: {list}\n\n");
        let out = filter_tools_list(&Bytes::from(sse), true, &holding("r w"));
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("event: message\ndata: "));
        assert!(text.contains("write_file") && !text.contains("delete_file"));
    }
}
