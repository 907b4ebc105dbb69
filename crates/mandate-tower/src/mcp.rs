//! MCP awareness: which tool, prompt or resource a request uses, and which
//! scopes that takes.
//!
//! Tools, prompts and resources are one mechanism ([`McpItem`],
//! [`McpPolicy::scopes_for_item`]): a request that uses one item
//! (`tools/call`, `prompts/get`, `resources/read`, `resources/subscribe`) is
//! judged by the scopes of that item, and a list answer (`tools/list`,
//! `prompts/list`, `resources/list`) is filtered by the same function. What
//! differs is where the scopes come from:
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
//!
//! Prompts (by name) and resources (by URI) have no annotations: their scopes
//! are configuration only ([`ScopeRules`]): what every prompt (resource)
//! needs, plus what each matching rule adds. Rules only add, so a new rule
//! never opens anything.
//!
//! Before any of that is read, the headers a 2026-07-28 client mirrors from
//! the body (`Mcp-Method`, `Mcp-Name`, and `Mcp-Param-<Name>` for tool
//! arguments the tool's `inputSchema` marks with `x-mcp-header`) must agree
//! with it ([`check_mirrored_headers`], [`check_param_headers`]), and the
//! body may not repeat a member, so that the gateway, a header-routing
//! intermediary and the upstream all act on the same values.

use std::collections::{BTreeMap, HashMap, HashSet};
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

/// A tool argument the client mirrors into an `Mcp-Param-<name>` header
/// (`x-mcp-header` in the tool's `inputSchema`, 2026-07-28).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeader {
    /// The header's name after `Mcp-Param-`, as the schema spells it.
    pub name: String,
    /// The chain of `properties` keys from `arguments` to the value.
    pub path: Vec<String>,
}

/// What the upstream says of a tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    /// Its level by annotations.
    pub level: Level,
    /// The arguments it asks clients to mirror into headers.
    pub param_headers: Vec<ParamHeader>,
}

/// Deepest `properties` chain searched for `x-mcp-header`.
const MAX_SCHEMA_DEPTH: usize = 16;

impl ToolInfo {
    /// What a `tools/list` entry says: the level from its `annotations`,
    /// the mirrored arguments from its `inputSchema`.
    pub fn from_tool(tool: &Value) -> Self {
        let mut param_headers = Vec::new();
        if let Some(schema) = tool.get("inputSchema") {
            find_param_headers(schema, &mut Vec::new(), &mut param_headers);
        }
        Self {
            level: Level::from_annotations(tool.get("annotations")),
            param_headers,
        }
    }
}

/// Annotations reachable from the schema root through `properties` keys
/// only (others are invalid and make the tool one clients drop; the
/// gateway then has nothing to check). A name that is not an HTTP token
/// could never be sent, so it is skipped too.
fn find_param_headers(schema: &Value, path: &mut Vec<String>, out: &mut Vec<ParamHeader>) {
    if path.len() >= MAX_SCHEMA_DEPTH {
        return;
    }
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (key, property) in properties {
        path.push(key.clone());
        if let Some(name) = property
            .get("x-mcp-header")
            .and_then(Value::as_str)
            .filter(|n| is_token(n))
        {
            out.push(ParamHeader {
                name: name.to_owned(),
                path: path.clone(),
            });
        }
        find_param_headers(property, path, out);
        path.pop();
    }
}

/// RFC 9110 §5.6.2 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
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

/// The three kinds of thing an MCP server offers, each used one at a time
/// and listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// `tools/call`, `tools/list`.
    Tool,
    /// `prompts/get`, `prompts/list`.
    Prompt,
    /// `resources/read`, `resources/subscribe`, `resources/list`.
    Resource,
}

impl ItemKind {
    /// The kind of item `method` uses, named by `params.name` (tools,
    /// prompts) or `params.uri` (resources). Unsubscribing needs no more
    /// than the route: it only stops what a subscription already allowed.
    pub fn used_by(method: &str) -> Option<Self> {
        match method {
            "tools/call" => Some(Self::Tool),
            "prompts/get" => Some(Self::Prompt),
            "resources/read" | "resources/subscribe" => Some(Self::Resource),
            _ => None,
        }
    }

    /// The kind of item `method` lists.
    pub fn listed_by(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(Self::Tool),
            "prompts/list" => Some(Self::Prompt),
            "resources/list" => Some(Self::Resource),
            _ => None,
        }
    }

    /// The member of a list result that holds the entries.
    pub const fn list_key(self) -> &'static str {
        match self {
            Self::Tool => "tools",
            Self::Prompt => "prompts",
            Self::Resource => "resources",
        }
    }

    /// The member that names an entry, in a list and in a request's `params`.
    pub const fn id_key(self) -> &'static str {
        match self {
            Self::Tool | Self::Prompt => "name",
            Self::Resource => "uri",
        }
    }

    /// The method that uses one item (the Biscuit `operation` fact when a
    /// list is filtered).
    pub const fn use_method(self) -> &'static str {
        match self {
            Self::Tool => "tools/call",
            Self::Prompt => "prompts/get",
            Self::Resource => "resources/read",
        }
    }
}

/// One tool, prompt or resource, as a request or a list entry names it.
#[derive(Debug, Clone, Copy)]
pub enum McpItem<'a> {
    /// A tool by name, with what the upstream says of it when known.
    Tool(&'a str, Option<&'a ToolInfo>),
    /// A prompt by name.
    Prompt(&'a str),
    /// A resource by URI.
    Resource(&'a str),
}

impl McpItem<'_> {
    /// Its kind.
    pub const fn kind(&self) -> ItemKind {
        match self {
            Self::Tool(..) => ItemKind::Tool,
            Self::Prompt(_) => ItemKind::Prompt,
            Self::Resource(_) => ItemKind::Resource,
        }
    }

    /// Its name or URI.
    pub const fn id(&self) -> &str {
        match self {
            Self::Tool(n, _) | Self::Prompt(n) | Self::Resource(n) => n,
        }
    }
}

/// Scopes of prompts (by name) or resources (by URI): `all` for every one,
/// plus those of each rule whose pattern matches. A pattern matches an
/// identifier equal to it, or, when it ends in `*`, every identifier that
/// starts with what precedes the `*`. Rules only add: an item needs the
/// union of `all` and every matching rule, so a broader rule cannot loosen a
/// narrower one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeRules {
    /// Needed by every item.
    pub all: ScopeSet,
    /// Pattern to the scopes it adds.
    pub rules: BTreeMap<String, ScopeSet>,
}

impl ScopeRules {
    /// Whether `pattern` matches `id` (see the type's doc).
    pub fn matches(pattern: &str, id: &str) -> bool {
        match pattern.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix),
            None => pattern == id,
        }
    }

    /// The scopes the item `id` needs.
    pub fn scopes_for(&self, id: &str) -> ScopeSet {
        ScopeSet::from_scopes(
            self.all
                .iter()
                .chain(
                    self.rules
                        .iter()
                        .filter(|(pattern, _)| Self::matches(pattern, id))
                        .flat_map(|(_, s)| s.iter()),
                )
                .cloned(),
        )
    }

    /// No scopes at all: every item needs only the route's.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.rules.values().all(ScopeSet::is_empty)
    }

    /// Every scope named, for `scopes_supported`.
    pub fn all_scopes(&self) -> impl Iterator<Item = &mandate_types::Scope> {
        self.all
            .iter()
            .chain(self.rules.values().flat_map(|s| s.iter()))
    }
}

/// What using one item takes, as [`McpPolicy::needs`] found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Needs {
    /// Scopes beyond the route's.
    pub scopes: ScopeSet,
    /// A tool's level.
    pub level: Option<Level>,
    /// What the upstream says of a tool it has.
    pub tool: Option<ToolInfo>,
}

/// Per-tool, per-prompt and per-resource policy of an MCP route.
#[derive(Clone)]
pub struct McpPolicy {
    /// Scopes each level needs.
    pub levels: HashMap<Level, ScopeSet>,
    /// Per-tool overrides.
    pub tools: HashMap<String, ToolRule>,
    /// Scopes of prompts, by name.
    pub prompts: ScopeRules,
    /// Scopes of resources, by URI.
    pub resources: ScopeRules,
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
            .field("prompts", &self.prompts)
            .field("resources", &self.resources)
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

    /// The scopes any item needs beyond the route's, or `None` for a tool
    /// that does not exist. Prompts and resources are judged by name or URI
    /// alone, so they always have an answer.
    pub fn scopes_for_item(&self, item: McpItem<'_>) -> Option<ScopeSet> {
        match item {
            McpItem::Tool(name, info) => self.scopes_for(name, info),
            McpItem::Prompt(name) => Some(self.prompts.scopes_for(name)),
            McpItem::Resource(uri) => Some(self.resources.scopes_for(uri)),
        }
    }

    /// The rules of prompts or resources; tools have levels instead.
    pub fn rules(&self, kind: ItemKind) -> Option<&ScopeRules> {
        match kind {
            ItemKind::Tool => None,
            ItemKind::Prompt => Some(&self.prompts),
            ItemKind::Resource => Some(&self.resources),
        }
    }

    /// What using the item `id` of `kind` takes. A tool is looked up in the
    /// catalog; one it does not know needs what the most dangerous tool
    /// could (see the module doc).
    pub async fn needs(&self, kind: ItemKind, id: &str) -> Needs {
        match kind {
            ItemKind::Tool => {
                let tool = self.catalog.tool(id).await;
                Needs {
                    level: self.level_of(id, tool.as_ref()),
                    scopes: self
                        .scopes_for(id, tool.as_ref())
                        .unwrap_or_else(|| self.unknown_tool_scopes()),
                    tool,
                }
            }
            ItemKind::Prompt => Needs {
                scopes: self.prompts.scopes_for(id),
                level: None,
                tool: None,
            },
            ItemKind::Resource => Needs {
                scopes: self.resources.scopes_for(id),
                level: None,
                tool: None,
            },
        }
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

    /// Whether a caller holding `scope` may use an item (for list filtering).
    pub fn may_use(&self, item: McpItem<'_>, scope: &ScopeSet) -> bool {
        self.scopes_for_item(item)
            .is_some_and(|s| s.is_subset(scope))
    }
}

/// The parts of an MCP JSON-RPC message the guard needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct McpCall {
    /// `method`; `None` for a response (the client answering a server
    /// request such as `sampling/createMessage` or `elicitation/create`).
    pub method: Option<String>,
    /// What `Mcp-Name` mirrors: `params.uri` for `resources/*` methods,
    /// else `params.name` (or `params.uri` when there is no name).
    pub name: Option<String>,
    /// `id`, when a request (not a notification).
    pub id: Option<Value>,
    /// `params.arguments` of a `tools/call` (what `Mcp-Param-*` mirror).
    pub arguments: Option<Value>,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`.
    pub protocol_version: Option<String>,
}

/// Why an MCP request is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpRequestError {
    /// Not JSON (-32700).
    Parse,
    /// Not a JSON-RPC 2.0 message, a batch, or an object with a repeated
    /// member (-32600).
    Invalid,
    /// A mirrored header disagrees with the body, is repeated or malformed,
    /// or (2026-07-28 on) is missing (-32020 HeaderMismatch).
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

    /// The JSON-RPC error message.
    pub const fn message(self) -> &'static str {
        match self {
            Self::Parse => "Parse error",
            Self::Invalid => "Invalid Request",
            Self::HeaderMismatch => "HeaderMismatch",
        }
    }
}

/// A JSON value whose objects never repeat a member. RFC 8259 leaves
/// repeated names to the parser (first wins in some, last in others), so
/// the gateway could judge one `method`, `uri` or argument while the
/// upstream acts on another. Such a message is refused instead.
struct UniqueMembers;

impl<'de> serde::Deserialize<'de> for UniqueMembers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueMembersVisitor)
    }
}

struct UniqueMembersVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueMembersVisitor {
    type Value = UniqueMembers;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON without repeated object members")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_unit<E>(self) -> Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }
    fn visit_none<E>(self) -> Result<UniqueMembers, E> {
        Ok(UniqueMembers)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<UniqueMembers, A::Error> {
        while seq.next_element::<UniqueMembers>()?.is_some() {}
        Ok(UniqueMembers)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<UniqueMembers, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("repeated object member"));
            }
            map.next_value::<UniqueMembers>()?;
        }
        Ok(UniqueMembers)
    }
}

/// Parses one client-to-server message: a request, a notification, or a
/// response to a server request. Batches are refused: the revisions this
/// gateway speaks (2025-06-18 on) removed them.
pub fn parse_message(body: &[u8]) -> Result<McpCall, McpRequestError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| McpRequestError::Parse)?;
    serde_json::from_slice::<UniqueMembers>(body).map_err(|_| McpRequestError::Invalid)?;
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
                id: Some(id.clone()),
                ..McpCall::default()
            }),
            _ => Err(McpRequestError::Invalid),
        };
    };
    let method = method
        .as_str()
        .filter(|m| !m.is_empty())
        .ok_or(McpRequestError::Invalid)?;
    let params = obj.get("params");
    let member = |k: &str| {
        params
            .and_then(|p| p.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    // A resource method acts on `uri`, whatever `name` says.
    let name = if method.starts_with("resources/") {
        member("uri")
    } else {
        member("name").or_else(|| member("uri"))
    };
    let arguments = params
        .filter(|_| method == "tools/call")
        .and_then(|p| p.get("arguments"))
        .cloned();
    let protocol_version = params
        .and_then(|p| p.pointer("/_meta/io.modelcontextprotocol~1protocolVersion"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(McpCall {
        method: Some(method.to_owned()),
        name,
        id: obj.get("id").cloned(),
        arguments,
        protocol_version,
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

/// The first revision whose clients mirror the body into headers and whose
/// servers must refuse a request that lacks them.
pub const MIRRORING_REVISION: &str = "2026-07-28";

/// A mirrored header, decoded: absent, or exactly one valid value.
fn mirrored(headers: &HeaderMap, name: &str) -> Result<Option<String>, McpRequestError> {
    let mut values = headers.get_all(name).iter();
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
}

/// Whether the request's `MCP-Protocol-Version` is one that mirrors the body
/// into headers (a date at or after [`MIRRORING_REVISION`]).
fn mirroring_required(headers: &HeaderMap) -> bool {
    headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.len() == MIRRORING_REVISION.len()
                && v.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                && v >= MIRRORING_REVISION
        })
}

/// Checks `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` against the
/// body before any policy reads either (2026-07-28 §Streamable HTTP).
/// Absent headers are allowed from earlier revisions, which do not send
/// them (the body is what the guard uses); from 2026-07-28 on, a request
/// without them is refused, as the revision requires of servers.
pub fn check_mirrored_headers(headers: &HeaderMap, call: &McpCall) -> Result<(), McpRequestError> {
    if let (Some(header), Some(body)) = (
        mirrored(headers, "mcp-protocol-version")?,
        &call.protocol_version,
    ) {
        if &header != body {
            return Err(McpRequestError::HeaderMismatch);
        }
    }
    let required = mirroring_required(headers) && call.method.is_some() && call.id.is_some();
    match mirrored(headers, "mcp-method")? {
        Some(m) if call.method.as_deref() != Some(m.as_str()) => {
            return Err(McpRequestError::HeaderMismatch)
        }
        None if required => return Err(McpRequestError::HeaderMismatch),
        _ => {}
    }
    let names_an_item = matches!(
        call.method.as_deref(),
        Some("tools/call" | "resources/read" | "prompts/get")
    );
    match mirrored(headers, "mcp-name")? {
        Some(n) if call.name.as_deref() != Some(n.as_str()) => Err(McpRequestError::HeaderMismatch),
        None if required && names_an_item && call.name.is_some() => {
            Err(McpRequestError::HeaderMismatch)
        }
        _ => Ok(()),
    }
}

/// Checks the `Mcp-Param-<Name>` headers `tool` declares against the call's
/// `arguments`: each one sent must be the argument's value (strings as they
/// are, integers compared as numbers, booleans `true`/`false`); one sent for
/// an argument the body lacks (or sets to `null`) is a mismatch; from
/// 2026-07-28 on, an argument in the body without its header is one too.
/// `Mcp-Param-*` headers the tool does not declare are not looked at: they
/// are forwarded as they came.
pub fn check_param_headers(
    headers: &HeaderMap,
    call: &McpCall,
    tool: &ToolInfo,
) -> Result<(), McpRequestError> {
    if tool.param_headers.is_empty() {
        return Ok(());
    }
    let required = mirroring_required(headers);
    for param in &tool.param_headers {
        let header = mirrored(
            headers,
            &format!("mcp-param-{}", param.name.to_ascii_lowercase()),
        )?;
        let body = call
            .arguments
            .as_ref()
            .and_then(|a| {
                param
                    .path
                    .iter()
                    .try_fold(a, |v, key| v.as_object().and_then(|o| o.get(key)))
            })
            .filter(|v| !v.is_null());
        match (header, body) {
            (Some(h), Some(v)) if same_value(&h, v) => {}
            (None, None) => {}
            (None, Some(_)) if !required => {}
            _ => return Err(McpRequestError::HeaderMismatch),
        }
    }
    Ok(())
}

/// Whether a decoded header value mirrors a body value.
fn same_value(header: &str, body: &Value) -> bool {
    match body {
        Value::String(s) => header == s,
        Value::Bool(b) => header == if *b { "true" } else { "false" },
        Value::Number(n) => header
            .parse::<f64>()
            .ok()
            .filter(|h| h.is_finite())
            .zip(n.as_f64())
            .is_some_and(|(h, b)| h == b),
        Value::Null | Value::Array(_) | Value::Object(_) => false,
    }
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
            prompts: ScopeRules::default(),
            resources: ScopeRules::default(),
            catalog: Arc::new(StaticCatalog::default()),
        };
        let read = ToolInfo {
            level: Level::Read,
            param_headers: Vec::new(),
        };
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
        assert!(policy.may_use(McpItem::Tool("list", Some(&read)), &s("tools:read")));
        assert!(!policy.may_use(
            McpItem::Tool("delete_file", Some(&read)),
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
                id: Some(json!(0)),
                ..McpCall::default()
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

    #[test]
    fn prompts_and_resources_need_every_matching_rule() {
        let s = |x: &str| ScopeSet::parse(x).unwrap();
        let rules = ScopeRules {
            all: s("files:read"),
            rules: BTreeMap::from([
                ("file:///secret/*".to_owned(), s("files:secret")),
                ("file:///secret/keys/*".to_owned(), s("files:keys")),
                ("file:///etc/passwd".to_owned(), s("files:admin")),
            ]),
        };
        assert_eq!(rules.scopes_for("file:///notes.txt"), s("files:read"));
        assert_eq!(
            rules.scopes_for("file:///secret/keys/id_ed25519"),
            s("files:read files:secret files:keys"),
            "rules only add: the broader rule still applies"
        );
        assert_eq!(
            rules.scopes_for("file:///etc/passwd"),
            s("files:read files:admin")
        );
        assert_eq!(
            rules.scopes_for("file:///etc/passwd2"),
            s("files:read"),
            "without a `*` the pattern is exact"
        );
        assert!(ScopeRules::default().is_empty());
        assert!(!rules.is_empty());
        let policy = McpPolicy {
            allowed_origins: Vec::new(),
            levels: HashMap::new(),
            tools: HashMap::new(),
            prompts: ScopeRules {
                all: ScopeSet::default(),
                rules: BTreeMap::from([("summarize".to_owned(), s("prompts:summarize"))]),
            },
            resources: rules,
            catalog: Arc::new(StaticCatalog::default()),
        };
        assert!(policy.may_use(McpItem::Prompt("greet"), &ScopeSet::default()));
        assert!(!policy.may_use(McpItem::Prompt("summarize"), &s("files:read")));
        assert!(policy.may_use(
            McpItem::Resource("file:///secret/x"),
            &s("files:read files:secret")
        ));
        assert!(!policy.may_use(McpItem::Resource("file:///secret/x"), &s("files:read")));
        assert_eq!(
            ItemKind::used_by("resources/subscribe"),
            Some(ItemKind::Resource)
        );
        assert_eq!(ItemKind::used_by("resources/unsubscribe"), None);
        assert_eq!(ItemKind::listed_by("prompts/list"), Some(ItemKind::Prompt));
    }

    #[test]
    fn resource_methods_are_judged_by_uri_and_repeated_members_refused() {
        let call = parse_message(
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"public","uri":"file:///secret"}}"#,
        )
        .unwrap();
        assert_eq!(call.name.as_deref(), Some("file:///secret"));
        // Parsers disagree on which repeated member wins; none is accepted.
        for twice in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","uri":"b"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"r":1,"\u0072":2}}}"#,
        ] {
            assert_eq!(parse_message(twice), Err(McpRequestError::Invalid));
        }
    }

    fn with(headers: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn mcp_param_headers_mirror_the_declared_arguments() {
        let tool = ToolInfo::from_tool(&json!({
            "name": "execute_sql",
            "inputSchema": {"type": "object", "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "limit": {"type": "integer", "x-mcp-header": "Limit"},
                "dry": {"type": "boolean", "x-mcp-header": "Dry"},
                "target": {"type": "object", "properties": {
                    "db": {"type": "string", "x-mcp-header": "Db"}}},
                "rows": {"type": "array", "items": {"x-mcp-header": "Row"}},
                "bad": {"type": "string", "x-mcp-header": "Bad Name"},
                "query": {"type": "string"}}}
        }));
        let mut names: Vec<_> = tool.param_headers.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["Db", "Dry", "Limit", "Region"],
            "only properties chains, only tokens"
        );
        let call = parse_message(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "execute_sql",
                "arguments": {"region": "Hello, 世界", "limit": 42, "dry": false,
                              "target": {"db": "main"}, "query": "SELECT 1"}}})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let encoded = format!("=?base64?{}?=", STANDARD.encode("Hello, 世界"));
        let all = [
            ("mcp-param-region", encoded.as_str()),
            ("Mcp-Param-Limit", "42.0"),
            ("mcp-param-dry", "false"),
            ("mcp-param-db", "main"),
        ];
        assert_eq!(check_param_headers(&with(&all), &call, &tool), Ok(()));
        // Undeclared headers are not looked at.
        let mut extra = all.to_vec();
        extra.push(("mcp-param-other", "anything"));
        assert_eq!(check_param_headers(&with(&extra), &call, &tool), Ok(()));
        // Earlier revisions need not mirror anything.
        assert_eq!(check_param_headers(&HeaderMap::new(), &call, &tool), Ok(()));
        for (why, headers) in [
            ("another value", vec![("mcp-param-db", "other")]),
            ("another number", vec![("mcp-param-limit", "43")]),
            ("not a boolean", vec![("mcp-param-dry", "0")]),
            ("undecodable", vec![("mcp-param-region", "=?base64?***?=")]),
            (
                "repeated",
                vec![("mcp-param-db", "main"), ("mcp-param-db", "main")],
            ),
            (
                "missing at 2026-07-28",
                vec![
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-param-db", "main"),
                ],
            ),
        ] {
            assert_eq!(
                check_param_headers(&with(&headers), &call, &tool),
                Err(McpRequestError::HeaderMismatch),
                "{why}"
            );
        }
        let mut full = all.to_vec();
        full.push(("mcp-protocol-version", "2026-07-28"));
        assert_eq!(check_param_headers(&with(&full), &call, &tool), Ok(()));
        // A header for an argument the body does not have is a mismatch.
        let bare = parse_message(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"execute_sql","arguments":{"dry":null}}}"#,
        )
        .unwrap();
        assert_eq!(
            check_param_headers(&with(&[("mcp-param-dry", "false")]), &bare, &tool),
            Err(McpRequestError::HeaderMismatch)
        );
        assert_eq!(
            check_param_headers(
                &with(&[("mcp-protocol-version", "2026-07-28")]),
                &bare,
                &tool
            ),
            Ok(()),
            "null and absent arguments expect no header"
        );
    }

    #[test]
    fn from_2026_07_28_the_standard_headers_are_required() {
        let call = parse_message(
            br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        )
        .unwrap();
        let version = ("mcp-protocol-version", "2026-07-28");
        assert_eq!(check_mirrored_headers(&HeaderMap::new(), &call), Ok(()));
        assert_eq!(
            check_mirrored_headers(&with(&[version, ("mcp-method", "prompts/get")]), &call),
            Err(McpRequestError::HeaderMismatch),
            "Mcp-Name missing"
        );
        assert_eq!(
            check_mirrored_headers(&with(&[version, ("mcp-name", "p")]), &call),
            Err(McpRequestError::HeaderMismatch),
            "Mcp-Method missing"
        );
        assert_eq!(
            check_mirrored_headers(
                &with(&[version, ("mcp-method", "prompts/get"), ("mcp-name", "p")]),
                &call
            ),
            Ok(())
        );
        assert_eq!(
            check_mirrored_headers(
                &with(&[
                    ("mcp-protocol-version", "2025-11-25"),
                    ("mcp-method", "prompts/get")
                ]),
                &call
            ),
            Err(McpRequestError::HeaderMismatch),
            "the header's version must be the body's"
        );
    }
}
