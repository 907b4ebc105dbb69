//! The gateway's MCP side: learning the upstream's tools (so a `tools/call`
//! made without a prior list is judged the same way, and its `Mcp-Param-*`
//! headers can be checked) and filtering `tools/list`, `prompts/list` and
//! `resources/list` answers so a caller sees only what it may use.
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
use mandate_tower::mcp::{ItemKind, McpItem, ToolCatalog, ToolInfo};

use serde_json::{json, Value};

use crate::upstream::UpstreamClient;

/// How long a learned tool list is used.
const CATALOG_TTL: Duration = Duration::from_secs(60);
/// Shortest interval between refreshes caused by unknown tools.
const MIN_REFRESH: Duration = Duration::from_secs(10);
/// Largest upstream message read (catalog or a filtered list).
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
    client: UpstreamClient,
    timeout: Duration,
    learned: tokio::sync::Mutex<Option<Learned>>,
}

impl UpstreamCatalog {
    /// A catalog for the MCP endpoint at `url`, reached through `client`.
    pub fn new(url: &str, client: UpstreamClient, timeout: Duration) -> Self {
        Self {
            url: url.to_owned(),
            client,
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
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let list =
                json!({"jsonrpc": "2.0", "id": 2 + page, "method": "tools/list", "params": params});
            let (_, replies) = self.post(s, &list).await?;
            let result = replies
                .iter()
                .find_map(|m| m.get("result").cloned())
                .ok_or("tools/list gave no result")?;
            let tools_page = result.get("tools").and_then(Value::as_array);
            for t in tools_page.into_iter().flatten() {
                if let Some(name) = t.get("name").and_then(Value::as_str) {
                    tools.insert(name.to_owned(), ToolInfo::from_tool(t));
                }
            }
            cursor = result
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
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

/// Whether the caller may use a tool, prompt or resource of a list answer
/// (for a tool, with what the answer's own entry says of it).
pub(crate) type MayUse<'a> = &'a dyn Fn(McpItem<'_>) -> bool;

/// Removes from a list result every entry the caller may not use. An entry
/// without a name (or URI) cannot be judged, so it goes too.
fn filter_message(message: &mut Value, kind: ItemKind, may_use: MayUse<'_>) {
    let pointer = format!("/result/{}", kind.list_key());
    if let Some(entries) = message.pointer_mut(&pointer).and_then(Value::as_array_mut) {
        entries.retain(|entry| {
            let Some(id) = entry.get(kind.id_key()).and_then(Value::as_str) else {
                return false;
            };
            match kind {
                ItemKind::Tool => may_use(McpItem::Tool(id, Some(&ToolInfo::from_tool(entry)))),
                ItemKind::Prompt => may_use(McpItem::Prompt(id)),
                ItemKind::Resource => may_use(McpItem::Resource(id)),
            }
        });
    }
}

/// Filters a whole `tools/list`, `prompts/list` or `resources/list`
/// response body (JSON or SSE).
pub(crate) fn filter_list(body: &Bytes, sse: bool, kind: ItemKind, may_use: MayUse<'_>) -> Bytes {
    if !sse {
        return match serde_json::from_slice::<Value>(body) {
            Ok(mut v) => {
                filter_message(&mut v, kind, may_use);
                Bytes::from(v.to_string())
            }
            Err(_) => body.clone(),
        };
    }
    let pointer = format!("/result/{}", kind.list_key());
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len());
    for event in text.split_inclusive("\n\n") {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        match serde_json::from_str::<Value>(&data.join("\n")) {
            Ok(mut v) if v.pointer(&pointer).is_some() => {
                filter_message(&mut v, kind, may_use);
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
    use mandate_tower::mcp::{Level, McpPolicy, ScopeRules, StaticCatalog};
    use mandate_types::ScopeSet;
    use std::collections::BTreeMap;
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
            prompts: ScopeRules {
                all: ScopeSet::default(),
                rules: BTreeMap::from([("admin_*".to_owned(), s("d"))]),
            },
            resources: ScopeRules {
                all: s("r"),
                rules: BTreeMap::from([("file:///secret/*".to_owned(), s("d"))]),
            },
            catalog: Arc::new(StaticCatalog::default()),
        }
    }

    fn holding(scope: &'static str) -> impl Fn(McpItem<'_>) -> bool {
        move |item| policy().may_use(item, &ScopeSet::parse(scope).unwrap())
    }

    fn ids(body: &Bytes, kind: ItemKind) -> Vec<String> {
        let text = String::from_utf8(body.to_vec()).unwrap();
        let json = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or(&text);
        let v: Value = serde_json::from_str(json).unwrap();
        v["result"][kind.list_key()]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[kind.id_key()].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn filters_json_and_sse() {
        let list = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
            {"name": "read_file", "annotations": {"readOnlyHint": true}},
            {"name": "write_file", "annotations": {"destructiveHint": false}},
            {"name": "delete_file"},
            {"annotations": {"readOnlyHint": true}}
        ]}});
        let out = filter_list(
            &Bytes::from(list.to_string()),
            false,
            ItemKind::Tool,
            &holding("r"),
        );
        assert_eq!(
            ids(&out, ItemKind::Tool),
            ["read_file"],
            "nameless entries go too"
        );
        let sse = format!("event: message\ndata: {list}\n\n");
        let out = filter_list(&Bytes::from(sse), true, ItemKind::Tool, &holding("r w"));
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("event: message\ndata: "));
        assert!(text.contains("write_file") && !text.contains("delete_file"));
    }

    #[test]
    fn prompts_and_resources_are_filtered_by_the_same_rules() {
        let prompts = json!({"jsonrpc": "2.0", "id": 1, "result": {"prompts": [
            {"name": "greet"}, {"name": "admin_reset"}
        ]}});
        let out = filter_list(
            &Bytes::from(prompts.to_string()),
            false,
            ItemKind::Prompt,
            &holding("r"),
        );
        assert_eq!(ids(&out, ItemKind::Prompt), ["greet"]);
        let resources = json!({"jsonrpc": "2.0", "id": 1, "result": {"resources": [
            {"uri": "file:///notes.txt", "name": "notes"},
            {"uri": "file:///secret/key", "name": "key"}
        ]}});
        let sse = format!("event: message\ndata: {resources}\n\n");
        let out = filter_list(
            &Bytes::from(sse.clone()),
            true,
            ItemKind::Resource,
            &holding("r"),
        );
        assert_eq!(ids(&out, ItemKind::Resource), ["file:///notes.txt"]);
        let out = filter_list(&Bytes::from(sse), true, ItemKind::Resource, &holding("w"));
        assert!(
            ids(&out, ItemKind::Resource).is_empty(),
            "every resource needs r"
        );
        let out = filter_list(
            &Bytes::from(resources.to_string()),
            false,
            ItemKind::Resource,
            &holding("r d"),
        );
        assert_eq!(ids(&out, ItemKind::Resource).len(), 2);
    }
}
