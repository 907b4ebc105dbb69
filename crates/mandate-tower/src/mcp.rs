//! MCP awareness: which tool a request calls, what permission level that
//! tool has, and which scopes the level needs.
//!
//! A tool's level comes from the configuration, or else from the upstream's
//! own annotations (`readOnlyHint: true` is read; otherwise
//! `destructiveHint: false` is write; otherwise destructive — the MCP
//! defaults make an unannotated tool destructive). Annotations are hints from
//! the server the gateway protects, which the operator chose to trust by
//! routing to it; an override in the configuration always wins.
//!
//! An unknown tool is refused exactly like a forbidden one, naming the
//! destructive level's scopes, so a caller cannot probe which tools exist.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::HeaderMap;
use mandate_types::ScopeSet;
use serde_json::Value;

/// A tool's permission level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Does not modify anything.
    Read,
    /// Modifies, but only additively.
    Write,
    /// May destroy.
    Destructive,
}

impl Level {
    /// Parses `read`, `write`, `destructive`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "destructive" => Some(Self::Destructive),
            _ => None,
        }
    }

    /// The configuration name, also the Biscuit `level` fact.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Destructive => "destructive",
        }
    }

    /// The level MCP annotations imply (see the module doc).
    pub fn from_annotations(annotations: Option<&Value>) -> Self {
        let flag = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_bool);
        if flag("readOnlyHint") == Some(true) {
            Self::Read
        } else if flag("destructiveHint") == Some(false) {
            Self::Write
        } else {
            Self::Destructive
        }
    }
}

/// Configuration for one tool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolRule {
    /// Level override.
    pub level: Option<Level>,
    /// Scopes this tool needs on top of its level's.
    pub scopes: ScopeSet,
}

/// What the upstream says of a tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    /// Its level by annotations.
    pub level: Level,
}

/// Where the guard learns the upstream's tools.
#[async_trait]
pub trait ToolCatalog: Send + Sync + 'static {
    /// The tool named `name`, or `None` if the upstream has no such tool.
    async fn tool(&self, name: &str) -> Option<ToolInfo>;
}

/// A fixed catalog (tests, agents that know their tools).
#[derive(Debug, Default)]
pub struct StaticCatalog(pub HashMap<String, ToolInfo>);

#[async_trait]
impl ToolCatalog for StaticCatalog {
    async fn tool(&self, name: &str) -> Option<ToolInfo> {
        self.0.get(name).cloned()
    }
}

/// Per-tool policy of an MCP route.
#[derive(Clone)]
pub struct McpPolicy {
    /// Scopes each level needs.
    pub levels: HashMap<Level, ScopeSet>,
    /// Per-tool overrides.
    pub tools: HashMap<String, ToolRule>,
    /// The upstream's tools.
    pub catalog: Arc<dyn ToolCatalog>,
    /// Browser origins allowed besides the resource's own (DNS rebinding
    /// protection: any other `Origin` is refused with 403).
    pub allowed_origins: Vec<String>,
}

impl std::fmt::Debug for McpPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpPolicy")
            .field("levels", &self.levels)
            .field("tools", &self.tools)
            .finish_non_exhaustive()
    }
}

impl McpPolicy {
    /// The scopes a tool needs, or `None` for a tool that does not exist.
    pub fn scopes_for(&self, name: &str, info: Option<&ToolInfo>) -> Option<ScopeSet> {
        let rule = self.tools.get(name);
        let level = self.level_of(name, info)?;
        let mut needed: Vec<_> = self
            .levels
            .get(&level)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        if let Some(r) = rule {
            needed.extend(r.scopes.iter().cloned());
        }
        Some(ScopeSet::from_scopes(needed))
    }

    /// A tool's level: configured, else from the upstream's annotations.
    pub fn level_of(&self, name: &str, info: Option<&ToolInfo>) -> Option<Level> {
        self.tools
            .get(name)
            .and_then(|r| r.level)
            .or(info.map(|i| i.level))
    }

    /// What an unknown tool is refused with: the most any tool could need.
    pub fn unknown_tool_scopes(&self) -> ScopeSet {
        self.levels
            .get(&Level::Destructive)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether a caller holding `scope` may call a tool (for `tools/list` filtering).
    pub fn may_call(&self, name: &str, info: Option<&ToolInfo>, scope: &ScopeSet) -> bool {
        self.scopes_for(name, info)
            .is_some_and(|s| s.is_subset(scope))
    }
}

/// The parts of an MCP JSON-RPC message the guard needs.
#[derive(Debug, Clone, PartialEq)]
pub struct McpCall {
    /// `method`; `None` for a response (the client answering a server
    /// request such as `sampling/createMessage` or `elicitation/create`).
    pub method: Option<String>,
    /// `params.name` or `params.uri` (what `Mcp-Name` mirrors).
    pub name: Option<String>,
    /// `id`, when a request (not a notification).
    pub id: Option<Value>,
}

/// Why an MCP request is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpRequestError {
    /// Not JSON (-32700).
    Parse,
    /// Not a JSON-RPC 2.0 message, or a batch (-32600).
    Invalid,
    /// A mirrored header disagrees with the body (-32020 HeaderMismatch).
    HeaderMismatch,
}

impl McpRequestError {
    /// The JSON-RPC error code.
    pub const fn code(self) -> i64 {
        match self {
            Self::Parse => -32700,
            Self::Invalid => -32600,
            Self::HeaderMismatch => -32020,
        }
    }
}

/// Parses one client-to-server message: a request, a notification, or a
/// response to a server request. Batches are refused: the revisions this
/// gateway speaks (2025-06-18 on) removed them.
pub fn parse_message(body: &[u8]) -> Result<McpCall, McpRequestError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| McpRequestError::Parse)?;
    let obj = v.as_object().ok_or(McpRequestError::Invalid)?;
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(McpRequestError::Invalid);
    }
    let Some(method) = obj.get("method") else {
        // A response: an id and exactly one of result and error.
        let id = obj.get("id").filter(|id| id.is_string() || id.is_number());
        let answered = obj.contains_key("result") != obj.contains_key("error");
        return match (id, answered) {
            (Some(id), true) => Ok(McpCall {
                method: None,
                name: None,
                id: Some(id.clone()),
            }),
            _ => Err(McpRequestError::Invalid),
        };
    };
    let method = method
        .as_str()
        .filter(|m| !m.is_empty())
        .ok_or(McpRequestError::Invalid)?;
    let params = obj.get("params");
    let name = params
        .and_then(|p| p.get("name").or_else(|| p.get("uri")))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(McpCall {
        method: Some(method.to_owned()),
        name,
        id: obj.get("id").cloned(),
    })
}

/// Decodes a mirrored header value: plain, or `=?base64?...?=`.
pub fn decode_header_value(raw: &str) -> Option<String> {
    match raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => String::from_utf8(STANDARD.decode(b64).ok()?).ok(),
        None => Some(raw.to_owned()),
    }
}

/// Checks `Mcp-Method` and `Mcp-Name` against the body before any policy
/// reads either (2026-07-28 §Streamable HTTP). Absent headers are allowed:
/// earlier revisions do not send them, and the body is what the guard uses.
pub fn check_mirrored_headers(headers: &HeaderMap, call: &McpCall) -> Result<(), McpRequestError> {
    let header = |n: &str| -> Result<Option<String>, McpRequestError> {
        let mut values = headers.get_all(n).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(McpRequestError::HeaderMismatch);
        }
        first
            .map(|v| {
                v.to_str()
                    .ok()
                    .and_then(decode_header_value)
                    .ok_or(McpRequestError::HeaderMismatch)
            })
            .transpose()
    };
    if let Some(m) = header("mcp-method")? {
        if call.method.as_deref() != Some(m.as_str()) {
            return Err(McpRequestError::HeaderMismatch);
        }
    }
    if let Some(n) = header("mcp-name")? {
        if call.name.as_deref() != Some(n.as_str()) {
            return Err(McpRequestError::HeaderMismatch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn levels_from_annotations_follow_mcp_defaults() {
        assert_eq!(
            Level::from_annotations(Some(&json!({"readOnlyHint": true}))),
            Level::Read
        );
        assert_eq!(
            Level::from_annotations(Some(&json!({"destructiveHint": false}))),
            Level::Write
        );
        assert_eq!(
            Level::from_annotations(Some(&json!({"readOnlyHint": false}))),
            Level::Destructive
        );
        assert_eq!(Level::from_annotations(None), Level::Destructive);
    }

    #[test]
    fn overrides_win_and_unknown_tools_need_the_most() {
        let s = |x: &str| ScopeSet::parse(x).unwrap();
        let policy = McpPolicy {
            allowed_origins: Vec::new(),
            levels: HashMap::from([
                (Level::Read, s("tools:read")),
                (Level::Write, s("tools:write")),
                (Level::Destructive, s("tools:destructive")),
            ]),
            tools: HashMap::from([(
                "delete_file".to_owned(),
                ToolRule {
                    level: Some(Level::Destructive),
                    scopes: s("files:admin"),
                },
            )]),
            catalog: Arc::new(StaticCatalog::default()),
        };
        let read = ToolInfo { level: Level::Read };
        assert_eq!(
            policy.scopes_for("list", Some(&read)).unwrap(),
            s("tools:read")
        );
        assert_eq!(
            policy.scopes_for("delete_file", Some(&read)).unwrap(),
            s("tools:destructive files:admin")
        );
        assert_eq!(policy.scopes_for("ghost", None), None);
        assert_eq!(policy.unknown_tool_scopes(), s("tools:destructive"));
        assert!(policy.may_call("list", Some(&read), &s("tools:read")));
        assert!(!policy.may_call(
            "delete_file",
            Some(&read),
            &s("tools:read tools:destructive")
        ));
    }

    #[test]
    fn mirrored_headers_must_match_the_body() {
        let call = parse_message(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"caf\u00e9"}}"#,
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("mcp-method", "tools/call".parse().unwrap());
        h.insert(
            "mcp-name",
            format!("=?base64?{}?=", STANDARD.encode("café"))
                .parse()
                .unwrap(),
        );
        assert_eq!(check_mirrored_headers(&h, &call), Ok(()));
        h.insert("mcp-name", "other".parse().unwrap());
        assert_eq!(
            check_mirrored_headers(&h, &call),
            Err(McpRequestError::HeaderMismatch)
        );
        h.remove("mcp-name");
        h.insert("mcp-method", "tools/list".parse().unwrap());
        assert_eq!(
            check_mirrored_headers(&h, &call),
            Err(McpRequestError::HeaderMismatch)
        );
        assert_eq!(parse_message(b"[]"), Err(McpRequestError::Invalid));
        assert_eq!(parse_message(b"{"), Err(McpRequestError::Parse));
    }

    #[test]
    fn responses_to_server_requests_are_messages_too() {
        // The client answering sampling/createMessage or elicitation/create.
        let answer = parse_message(br#"{"jsonrpc":"2.0","id":0,"result":{"action":"accept"}}"#);
        assert_eq!(
            answer,
            Ok(McpCall {
                method: None,
                name: None,
                id: Some(json!(0)),
            })
        );
        assert!(
            parse_message(br#"{"jsonrpc":"2.0","id":"a","error":{"code":-1,"message":"no"}}"#)
                .is_ok()
        );
        for bad in [
            &br#"{"jsonrpc":"2.0","result":{}}"#[..],
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
            br#"{"jsonrpc":"2.0","id":{},"result":{}}"#,
        ] {
            assert_eq!(parse_message(bad), Err(McpRequestError::Invalid));
        }
    }
}
