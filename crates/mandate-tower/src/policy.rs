//! The decision: who is calling ([`Guard::decide`] authenticates the bearer
//! token for the resource's audience), and may they do this (the scopes the
//! resource and the operation need). One function, used by the gateway and by
//! the tower layer alike, so both reach the same decision on the same input.
//!
//! Failures become RFC 6750 / RFC 9728 challenges: 401 with
//! `resource_metadata` (and `error="invalid_token"` when a token was sent),
//! 403 `insufficient_scope` naming exactly the missing scopes, 400 for
//! malformed requests. What is missing is said; what exists is not.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use mandate_types::{ScopeSet, UnixTime};
use serde_json::json;

use crate::a2a::{parse_jsonrpc, A2aOperation, JsonRpcError};
use crate::mcp::{self, McpPolicy};
use crate::token::{TokenError, TokenVerifier, VerifiedAccessToken};

/// Longest `Authorization` header looked at.
pub const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;

/// What a protected resource speaks, which decides how operations are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A2A: JSON-RPC methods and HTTP+JSON paths name operations.
    A2a,
    /// Plain HTTP: only the resource's own scopes apply.
    Http,
    /// MCP Streamable HTTP: tools have levels and scopes ([`crate::mcp`]).
    Mcp,
}

/// A protected resource's policy.
#[derive(Debug, Clone)]
pub struct ProtectedResource {
    /// The audience its tokens must carry.
    pub resource: String,
    /// Its RFC 9728 metadata URL, sent in every challenge.
    pub resource_metadata: String,
    /// The origin clients reach it at (`https://gw.example`): DPoP proofs'
    /// `htu` is this plus the request path.
    pub public_origin: String,
    /// What it speaks.
    pub protocol: Protocol,
    /// Scopes every call needs.
    pub scopes: ScopeSet,
    /// Further scopes per operation.
    pub operations: HashMap<A2aOperation, ScopeSet>,
    /// No token needed at all.
    pub public: bool,
    /// Per-tool policy, for MCP resources.
    pub mcp: Option<McpPolicy>,
}

/// A refusal, ready to become a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// 400, 401 or 403.
    pub status: StatusCode,
    /// The `WWW-Authenticate` value.
    pub challenge: Option<String>,
    /// A stable reason for metrics and the audit trail.
    pub reason: &'static str,
    /// Safe text for the caller.
    pub description: String,
    /// For JSON-RPC errors: code, message and the request id.
    pub jsonrpc: Option<(i64, &'static str, serde_json::Value)>,
    /// Scopes the caller lacks, for 403.
    pub missing_scope: Option<ScopeSet>,
    /// Who was refused, when the token verified (for the audit trail).
    pub caller: Option<Arc<VerifiedAccessToken>>,
    /// The operation refused (A2A operation, MCP method and tool), when known.
    pub operation: Option<String>,
    /// A fresh `DPoP-Nonce` to send (RFC 9449 §9), with `use_dpop_nonce`.
    pub dpop_nonce: Option<String>,
}

impl Denial {
    /// The response; the body type only needs to come from bytes.
    pub fn into_response<B: From<Bytes>>(self) -> http::Response<B> {
        let body = match &self.jsonrpc {
            Some((code, message, id)) => json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": code, "message": message, "data": self.description},
            }),
            // The body mirrors the challenge: no error code when no token
            // was sent (RFC 6750 §3.1).
            None => match (self.status, self.reason) {
                (StatusCode::UNAUTHORIZED, "no_token") => {
                    json!({"error_description": self.description})
                }
                (status, _) => json!({
                    "error": match status {
                        StatusCode::FORBIDDEN => "insufficient_scope",
                        StatusCode::BAD_REQUEST => "invalid_request",
                        _ if self.challenge.as_deref().is_some_and(|c| c.contains("error=\"invalid_dpop_proof\"")) => "invalid_dpop_proof",
                        _ if self.dpop_nonce.is_some() => "use_dpop_nonce",
                        _ => "invalid_token",
                    },
                    "error_description": self.description,
                }),
            },
        };
        let mut response = http::Response::new(B::from(Bytes::from(body.to_string())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(c) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, c);
        }
        if let Some(n) = self.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            headers.insert("dpop-nonce", n);
        }
        response
    }
}

/// A request that may proceed.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// The verified token; `None` on a public resource.
    pub token: Option<Arc<VerifiedAccessToken>>,
    /// The Biscuit, when the token was one (its blocks also narrow what
    /// list answers show: [`Allowed::may_use`]).
    pub biscuit: Option<Arc<mandate_biscuit::VerifiedBiscuit>>,
    /// The operation, when one was recognised.
    pub operation: Option<A2aOperation>,
    /// The JSON-RPC method as sent, when the body was JSON-RPC.
    pub method: Option<String>,
    /// The MCP tool (or resource, prompt) the request names.
    pub name: Option<String>,
}

impl Allowed {
    /// Whether this caller could use the MCP tool, prompt or resource `item`
    /// on `resource` at `now`: what list filtering asks, by the same rules
    /// as a request using it (the route's and the item's scopes, and for a
    /// Biscuit every block's checks).
    pub fn may_use(
        &self,
        resource: &ProtectedResource,
        item: mcp::McpItem<'_>,
        now: UnixTime,
    ) -> bool {
        let (Some(policy), Some(token)) = (&resource.mcp, &self.token) else {
            return false;
        };
        let Some(item_scopes) = policy.scopes_for_item(item) else {
            return false;
        };
        let needed =
            ScopeSet::from_scopes(resource.scopes.iter().chain(item_scopes.iter()).cloned());
        if !needed.is_subset(&token.scope) {
            return false;
        }
        let (tool, level) = match item {
            mcp::McpItem::Tool(name, info) => (
                Some(name),
                policy.level_of(name, info).map(mcp::Level::as_str),
            ),
            mcp::McpItem::Prompt(_) | mcp::McpItem::Resource(_) => (None, None),
        };
        self.biscuit.as_ref().is_none_or(|b| {
            b.authorize(&mandate_biscuit::RequestFacts {
                time: now,
                resource: &resource.resource,
                operation: Some(item.kind().use_method()),
                tool,
                level,
                http_method: "POST",
                path: "/",
                required_scopes: &needed,
            })
            .is_ok()
        })
    }
}

/// The parts of a request a decision reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// Full URI (its query is checked for tokens).
    pub uri: &'a Uri,
    /// Path relative to the resource's base.
    pub path: &'a str,
    /// Headers.
    pub headers: &'a HeaderMap,
    /// The whole body, when [`Guard::needs_body`] said so.
    pub body: Option<&'a [u8]>,
}

/// Verification plus policy.
pub struct Guard {
    verifier: TokenVerifier,
    replay: Arc<dyn ProofReplay>,
    nonces: Option<Arc<dyn DpopNonces>>,
}

/// Server nonces for DPoP proofs (RFC 9449 §9): when a guard has them,
/// every proof must carry one it accepts.
pub trait DpopNonces: Send + Sync + 'static {
    /// The nonce to hand out now.
    fn current(&self) -> String;
    /// The nonces accepted now (the current one and its predecessor).
    fn accepted(&self) -> Vec<String>;
}

/// Where DPoP proof ids are recorded so a proof is used once (RFC 9449 §11.1).
#[async_trait::async_trait]
pub trait ProofReplay: Send + Sync + 'static {
    /// `true` the first time `key` is seen before `expires_at`.
    async fn first_use(&self, key: &str, expires_at: UnixTime) -> bool;
}

/// Proof ids in memory: right for one process (the gateway uses the store).
#[derive(Default)]
pub struct MemoryReplay(std::sync::Mutex<HashMap<String, UnixTime>>);

/// Most proof ids kept in memory.
const MAX_REMEMBERED_PROOFS: usize = 100_000;

#[async_trait::async_trait]
impl ProofReplay for MemoryReplay {
    async fn first_use(&self, key: &str, expires_at: UnixTime) -> bool {
        let Ok(mut seen) = self.0.lock() else {
            return false;
        };
        if seen.len() >= MAX_REMEMBERED_PROOFS {
            let oldest = seen.values().min().copied().unwrap_or(0);
            seen.retain(|_, e| *e > oldest);
        }
        seen.insert(key.to_owned(), expires_at).is_none()
    }
}

/// The proof algorithms a resource server accepts, for `algs` in challenges.
const DPOP_ALGS: &str = "EdDSA ES256 RS256";

/// Oldest DPoP proof a resource server accepts, seconds.
const DPOP_MAX_AGE: i64 = 300;
/// How far in the future a proof's `iat` may be, seconds.
const DPOP_LEEWAY: i64 = 30;

fn quote(s: &str) -> String {
    s.replace(['"', '\\'], "'")
}

impl Guard {
    /// A guard over a verifier.
    pub fn new(verifier: TokenVerifier) -> Self {
        Self {
            verifier,
            replay: Arc::new(MemoryReplay::default()),
            nonces: None,
        }
    }

    /// Requires DPoP proofs to carry one of `nonces`' server nonces.
    pub fn with_dpop_nonces(mut self, nonces: Arc<dyn DpopNonces>) -> Self {
        self.nonces = Some(nonces);
        self
    }

    /// Uses `replay` for DPoP proof ids (to share them between replicas).
    pub fn with_replay(mut self, replay: Arc<dyn ProofReplay>) -> Self {
        self.replay = replay;
        self
    }

    /// RFC 9449 §7: a bound token needs the DPoP scheme and a proof of
    /// possession of its key; an unbound one may not use the DPoP scheme.
    #[allow(clippy::result_large_err, clippy::too_many_arguments)]
    async fn check_binding(
        &self,
        resource: &ProtectedResource,
        token: &str,
        verified: &VerifiedAccessToken,
        dpop_scheme: bool,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        now: UnixTime,
    ) -> Result<(), Denial> {
        let refuse = |error: &'static str, reason: &'static str, description: &str| {
            Denial {
            status: StatusCode::UNAUTHORIZED,
            challenge: Some(format!(
                "DPoP error=\"{error}\", error_description=\"{}\", algs=\"{DPOP_ALGS}\", resource_metadata=\"{}\"",
                quote(description),
                quote(&resource.resource_metadata)
            )),
            reason,
            description: description.to_owned(),
            jsonrpc: None,
            missing_scope: None,
            caller: None,
            operation: None,
            dpop_nonce: None,
        }
        };
        let Some(jkt) = &verified.jkt else {
            if dpop_scheme {
                return Err(refuse(
                    "invalid_token",
                    "dpop_unbound_token",
                    "the token is not DPoP-bound",
                ));
            }
            return Ok(());
        };
        if !dpop_scheme {
            return Err(refuse(
                "invalid_token",
                "dpop_bound_as_bearer",
                "a DPoP-bound token needs the DPoP scheme and a proof",
            ));
        }
        let mut proofs = headers.get_all("dpop").iter();
        let (Some(proof), None) = (proofs.next(), proofs.next()) else {
            return Err(refuse(
                "invalid_dpop_proof",
                "dpop_proof_missing",
                "exactly one DPoP proof is required",
            ));
        };
        let proof = proof.to_str().map_err(|_| {
            refuse(
                "invalid_dpop_proof",
                "dpop_proof_malformed",
                "the DPoP proof is not ASCII",
            )
        })?;
        let url = format!("{}{}", resource.public_origin, uri.path());
        let accepted = self.nonces.as_ref().map(|n| n.accepted());
        let ctx = mandate_jose::dpop::DpopContext {
            method: method.as_str(),
            url: &url,
            now,
            max_age: DPOP_MAX_AGE,
            leeway: DPOP_LEEWAY,
            access_token: Some(token),
            nonces: accepted.as_deref(),
        };
        // Record the proof's id while its signature is checked: the replay
        // cache's write (a store round trip at the gateway) and the check run
        // side by side. Keyed by the token's key, an id recorded for a proof
        // that then fails can only collide with the same key's own future
        // proofs, whose ids are random. Any proof accepted now is acceptable
        // until `now + DPOP_MAX_AGE + DPOP_LEEWAY` at most.
        let claimed = mandate_jose::dpop::claimed_jti(proof).ok_or_else(|| {
            refuse(
                "invalid_dpop_proof",
                "dpop_proof_invalid",
                &mandate_jose::dpop::DpopError::Malformed.to_string(),
            )
        })?;
        let replay_key = format!("{jkt} {claimed}");
        let mut recording = self
            .replay
            .first_use(&replay_key, now + DPOP_MAX_AGE + DPOP_LEEWAY);
        let started = std::future::poll_fn(|cx| Poll::Ready(recording.as_mut().poll(cx))).await;
        let proved = mandate_jose::dpop::verify_proof(proof, &ctx).map_err(|e| match e {
            mandate_jose::dpop::DpopError::Nonce => Denial {
                dpop_nonce: self.nonces.as_ref().map(|n| n.current()),
                ..refuse("use_dpop_nonce", "dpop_nonce_required", &e.to_string())
            },
            e => refuse("invalid_dpop_proof", "dpop_proof_invalid", &e.to_string()),
        })?;
        if &proved.jkt != jkt {
            return Err(refuse(
                "invalid_token",
                "dpop_key_mismatch",
                "the proof is signed by another key than the token is bound to",
            ));
        }
        let first_use = match started {
            Poll::Ready(first) => first,
            Poll::Pending => recording.await,
        };
        if proved.jti != claimed || !first_use {
            return Err(refuse(
                "invalid_dpop_proof",
                "dpop_proof_replayed",
                "the DPoP proof was already used",
            ));
        }
        Ok(())
    }

    /// Whether [`Guard::decide`] needs the request body to find the operation:
    /// an A2A JSON-RPC POST.
    pub fn needs_body(resource: &ProtectedResource, method: &Method, headers: &HeaderMap) -> bool {
        if resource.protocol == Protocol::Mcp {
            // Every MCP client-to-server message is a POST with a JSON body.
            return *method == Method::POST;
        }
        resource.protocol == Protocol::A2a
            && *method == Method::POST
            && headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
    }

    /// Decides one request at time `now`. A denial is the slow path, so its
    /// size does not matter.
    #[allow(clippy::result_large_err)]
    pub async fn decide(
        &self,
        resource: &ProtectedResource,
        request: RequestView<'_>,
        now: UnixTime,
    ) -> Result<Allowed, Denial> {
        let RequestView {
            method,
            uri,
            path,
            headers,
            body,
        } = request;
        if let Some(policy) = &resource.mcp {
            check_origin(resource, policy, headers)?;
        }
        let token = bearer_token(resource, headers, uri)?;
        let verified = match (resource.public, token) {
            (true, _) => None,
            (false, None) => {
                // The scope to start with: the resource's, or for an MCP
                // resource without one, what reading its tools takes.
                let start = match &resource.mcp {
                    Some(m) if resource.scopes.is_empty() => {
                        m.levels.get(&mcp::Level::Read).cloned().unwrap_or_default()
                    }
                    _ => resource.scopes.clone(),
                };
                return Err(Denial {
                    status: StatusCode::UNAUTHORIZED,
                    challenge: Some(challenge(resource, None, Some(&start), None)),
                    reason: "no_token",
                    description: "a bearer token is required".into(),
                    jsonrpc: None,
                    missing_scope: None,
                    caller: None,
                    operation: None,
                    dpop_nonce: None,
                });
            }
            (false, Some((t, dpop_scheme))) => {
                let verified = self
                    .verifier
                    .verify_any(t, &resource.resource, now)
                    .await
                    .map_err(|e| {
                        let mut denial = invalid_token(resource, e);
                        if dpop_scheme {
                            // RFC 9449 §7.1: answer in the scheme the client used.
                            denial.challenge = denial.challenge.map(|c| {
                                let params = c.strip_prefix("Bearer ").unwrap_or(&c);
                                format!("DPoP algs=\"{DPOP_ALGS}\", {params}")
                            });
                        }
                        denial
                    })?;
                self.check_binding(
                    resource,
                    t,
                    &verified.token,
                    dpop_scheme,
                    method,
                    uri,
                    headers,
                    now,
                )
                .await
                .map_err(|mut denial| {
                    // Whose token was presented without its key: what a
                    // security team needs to see of a stolen token.
                    denial.caller = Some(Arc::clone(&verified.token));
                    denial
                })?;
                Some(verified)
            }
        };
        let (verified, biscuit) = match verified {
            Some(v) => (Some(v.token), v.biscuit),
            None => (None, None),
        };
        let malformed = |code: i64, message: &'static str, reason: &'static str| Denial {
            status: StatusCode::BAD_REQUEST,
            challenge: None,
            reason,
            description: "the body is not a valid JSON-RPC 2.0 request".into(),
            jsonrpc: Some((code, message, serde_json::Value::Null)),
            missing_scope: None,
            caller: None,
            operation: None,
            dpop_nonce: None,
        };
        let mut extra_needed: Option<ScopeSet> = None;
        let mut level: Option<mcp::Level> = None;
        let (operation, rpc_method, name) = match (resource.protocol, body) {
            (Protocol::A2a, Some(body)) => {
                let call = parse_jsonrpc(body).map_err(|e: JsonRpcError| {
                    malformed(e.code(), e.message(), "malformed_jsonrpc")
                })?;
                (
                    A2aOperation::from_jsonrpc(&call.method),
                    Some(call.method),
                    None,
                )
            }
            (Protocol::A2a, None) => (A2aOperation::from_rest(method, path), None, None),
            (Protocol::Mcp, Some(body)) => {
                let refuse = |e: mcp::McpRequestError| match e {
                    mcp::McpRequestError::HeaderMismatch => Denial {
                        description: "a mirrored header (MCP-Protocol-Version, Mcp-Method, \
                                      Mcp-Name, Mcp-Param-*) is missing, repeated, malformed \
                                      or does not match the body"
                            .into(),
                        ..malformed(e.code(), e.message(), "header_mismatch")
                    },
                    mcp::McpRequestError::Parse | mcp::McpRequestError::Invalid => {
                        malformed(e.code(), e.message(), "malformed_jsonrpc")
                    }
                };
                let call = mcp::parse_message(body)
                    .and_then(|c| mcp::check_mirrored_headers(headers, &c).map(|()| c))
                    .map_err(refuse)?;
                if let (Some(policy), Some(kind), Some(item)) = (
                    &resource.mcp,
                    call.method.as_deref().and_then(mcp::ItemKind::used_by),
                    &call.name,
                ) {
                    let needs = policy.needs(kind, item).await;
                    // The tool's mirrored arguments agree with the body
                    // before anything is decided.
                    if let Some(tool) = &needs.tool {
                        mcp::check_param_headers(headers, &call, tool).map_err(refuse)?;
                    }
                    level = needs.level;
                    extra_needed = Some(needs.scopes);
                }
                (None, call.method, call.name)
            }
            (Protocol::Mcp | Protocol::Http, _) => (None, None, None),
        };
        if let Some(token) = &verified {
            // What a refusal names in the audit trail: who, and what they tried.
            let refused = |mut denial: Denial| {
                denial.caller = Some(Arc::clone(token));
                denial.operation = operation
                    .map(|o| o.name().to_owned())
                    .or_else(|| rpc_method.clone())
                    .map(|op| match &name {
                        Some(n) => format!("{op}:{n}"),
                        None => op,
                    });
                denial
            };
            let mut needed = resource.scopes.clone();
            if let Some(extra) = operation.and_then(|op| resource.operations.get(&op)) {
                needed = ScopeSet::from_scopes(needed.iter().chain(extra.iter()).cloned());
            }
            if let Some(extra) = &extra_needed {
                needed = ScopeSet::from_scopes(needed.iter().chain(extra.iter()).cloned());
            }
            let missing = needed.difference(&token.scope);
            if !missing.is_empty() {
                // MCP (2026-07-28) challenges with every scope the operation
                // needs; elsewhere the challenge names what is missing.
                let challenged = if resource.protocol == Protocol::Mcp {
                    &needed
                } else {
                    &missing
                };
                return Err(refused(Denial {
                    status: StatusCode::FORBIDDEN,
                    challenge: Some(challenge(
                        resource,
                        Some("insufficient_scope"),
                        Some(challenged),
                        Some("the token lacks a scope this operation needs"),
                    )),
                    reason: "insufficient_scope",
                    description: format!("missing scope: {missing}"),
                    jsonrpc: None,
                    missing_scope: Some(missing),
                    caller: None,
                    operation: None,
                    dpop_nonce: None,
                }));
            }
            if let Some(biscuit) = &biscuit {
                let operation_name = operation.map(A2aOperation::name).or(rpc_method.as_deref());
                let facts = mandate_biscuit::RequestFacts {
                    time: now,
                    resource: &resource.resource,
                    operation: operation_name,
                    tool: name
                        .as_deref()
                        .filter(|_| rpc_method.as_deref() == Some("tools/call")),
                    level: level.map(mcp::Level::as_str),
                    http_method: method.as_str(),
                    path,
                    required_scopes: &needed,
                };
                biscuit
                    .authorize(&facts)
                    .map_err(|refusal| refused(biscuit_refusal(resource, refusal)))?;
            }
        }
        Ok(Allowed {
            token: verified,
            biscuit,
            operation,
            method: rpc_method,
            name,
        })
    }
}

/// MCP Streamable HTTP: a server MUST refuse a request whose `Origin` it
/// does not expect, with 403, so a web page cannot reach a local server
/// through DNS rebinding. The gateway is that server for its clients.
#[allow(clippy::result_large_err)]
fn check_origin(
    resource: &ProtectedResource,
    policy: &McpPolicy,
    headers: &HeaderMap,
) -> Result<(), Denial> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
    let own = resource.public_origin.trim_end_matches('/');
    if origin == own || policy.allowed_origins.iter().any(|o| o == origin) {
        return Ok(());
    }
    Err(Denial {
        status: StatusCode::FORBIDDEN,
        challenge: None,
        reason: "origin_not_allowed",
        description: "requests from this Origin are not allowed".into(),
        jsonrpc: Some((-32000, "Forbidden", serde_json::Value::Null)),
        missing_scope: None,
        caller: None,
        operation: None,
        dpop_nonce: None,
    })
}

/// A Biscuit that verified but does not allow this request. Its own expiry
/// check (block 0) is an expired token; any other failed check is the
/// token's holder having narrowed it, named so the audit trail shows which.
fn biscuit_refusal(resource: &ProtectedResource, refusal: mandate_biscuit::Refusal) -> Denial {
    use mandate_biscuit::Refusal;
    match refusal {
        Refusal::Check { block: 0, .. } => invalid_token(resource, TokenError::Expired),
        Refusal::Limits(_) | Refusal::Other(_) => invalid_token(resource, TokenError::Malformed),
        refusal => {
            let description = format!("biscuit: {refusal}");
            Denial {
                status: StatusCode::FORBIDDEN,
                challenge: Some(challenge(
                    resource,
                    Some("insufficient_scope"),
                    None,
                    Some(&description),
                )),
                reason: "biscuit_check_failed",
                description,
                jsonrpc: None,
                missing_scope: None,
                caller: None,
                operation: None,
                dpop_nonce: None,
            }
        }
    }
}

fn invalid_token(resource: &ProtectedResource, e: TokenError) -> Denial {
    let description = e.to_string();
    Denial {
        status: StatusCode::UNAUTHORIZED,
        challenge: Some(challenge(
            resource,
            Some("invalid_token"),
            None,
            Some(&description),
        )),
        reason: e.reason(),
        description,
        jsonrpc: None,
        missing_scope: None,
        caller: None,
        operation: None,
        dpop_nonce: None,
    }
}

fn bad_request(resource: &ProtectedResource, reason: &'static str, description: &str) -> Denial {
    Denial {
        status: StatusCode::BAD_REQUEST,
        challenge: Some(challenge(
            resource,
            Some("invalid_request"),
            None,
            Some(description),
        )),
        reason,
        description: description.to_owned(),
        jsonrpc: None,
        missing_scope: None,
        caller: None,
        operation: None,
        dpop_nonce: None,
    }
}

/// An RFC 6750 §3 challenge with RFC 9728's `resource_metadata`.
fn challenge(
    resource: &ProtectedResource,
    error: Option<&str>,
    scope: Option<&ScopeSet>,
    description: Option<&str>,
) -> String {
    let mut parts = Vec::new();
    if let Some(e) = error {
        parts.push(format!("error=\"{e}\""));
    }
    if let Some(d) = description {
        parts.push(format!("error_description=\"{}\"", quote(d)));
    }
    if let Some(s) = scope.filter(|s| !s.is_empty()) {
        parts.push(format!("scope=\"{s}\""));
    }
    parts.push(format!(
        "resource_metadata=\"{}\"",
        quote(&resource.resource_metadata)
    ));
    format!("Bearer {}", parts.join(", "))
}

/// The bearer token of a request: only from the `Authorization` header.
#[allow(clippy::result_large_err)]
fn bearer_token<'h>(
    resource: &ProtectedResource,
    headers: &'h HeaderMap,
    uri: &Uri,
) -> Result<Option<(&'h str, bool)>, Denial> {
    let in_query = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p.split('=').next() == Some("access_token"))
    });
    if in_query {
        return Err(bad_request(
            resource,
            "token_in_query",
            "send the token in the Authorization header, never in the URL",
        ));
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad_request(
            resource,
            "two_authorization_headers",
            "more than one Authorization header",
        ));
    }
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(bad_request(
            resource,
            "oversized_authorization",
            "Authorization header too long",
        ));
    }
    let value = value.to_str().map_err(|_| {
        bad_request(
            resource,
            "malformed_authorization",
            "Authorization header is not ASCII",
        )
    })?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Ok(None);
    };
    let dpop = scheme.eq_ignore_ascii_case("dpop");
    if !dpop && !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim();
    // RFC 6750 §2.1 b64token: at least one character, then only `=`s. Every
    // byte is checked without an early exit, so that the compiler checks
    // many at once: this runs on every request.
    let chars = token.trim_end_matches('=');
    let b64token = !chars.is_empty() && chars.bytes().fold(true, |ok, b| ok & is_b64token_char(b));
    if !b64token {
        return Err(bad_request(
            resource,
            "malformed_authorization",
            "malformed bearer token",
        ));
    }
    Ok(Some((token, dpop)))
}

/// A character of RFC 6750's `b64token` (before its trailing `=`s).
fn is_b64token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

#[cfg(test)]
mod tests {
    //! [`Guard::decide`] on its own, for an A2A resource: each refusal with
    //! its status, reason and RFC 6750 / RFC 9728 challenge, and what an
    //! allowed call carries.
    use mandate_jose::SigningKey;

    use super::*;
    use crate::keys::StaticKeys;
    use crate::token::tests::{new_key, set};
    use crate::token::{NoRevocation, TrustedIssuer};

    const ISSUER: &str = "https://as.example.com";
    const RESOURCE: &str = "https://agent.example.com";
    const METADATA: &str = "https://gw.example/.well-known/oauth-protected-resource/agents/x";
    const NOW: UnixTime = 1_800_000_000;
    const SEND: &[u8] = br#"{"jsonrpc":"2.0","id":7,"method":"SendMessage","params":{}}"#;
    const GET: &[u8] = br#"{"jsonrpc":"2.0","id":8,"method":"GetTask","params":{"id":"t"}}"#;

    struct Fixture {
        key: SigningKey,
        guard: Guard,
        resource: ProtectedResource,
    }

    fn fixture() -> Fixture {
        let key = new_key();
        let keys = StaticKeys(HashMap::from([(ISSUER.to_owned(), set(&key))]));
        let verifier = TokenVerifier::new(
            [TrustedIssuer {
                issuer: ISSUER.to_owned(),
                require_at_jwt: true,
            }],
            Arc::new(keys),
            Arc::new(NoRevocation),
            30,
        );
        let resource = ProtectedResource {
            resource: RESOURCE.to_owned(),
            resource_metadata: METADATA.to_owned(),
            public_origin: "https://gw.example".to_owned(),
            protocol: Protocol::A2a,
            scopes: ScopeSet::parse("agent:read").unwrap(),
            operations: HashMap::from([(
                A2aOperation::SendMessage,
                ScopeSet::parse("agent:send").unwrap(),
            )]),
            public: false,
            mcp: None,
        };
        Fixture {
            key,
            guard: Guard::new(verifier),
            resource,
        }
    }

    impl Fixture {
        fn token(&self, scope: &str) -> String {
            let claims = json!({
                "iss": ISSUER, "sub": "alice", "aud": RESOURCE, "client_id": "agent",
                "scope": scope, "jti": "t1", "iat": NOW, "exp": NOW + 300,
            });
            self.key.sign("at+jwt", &claims).unwrap()
        }

        async fn decide(
            &self,
            uri: &str,
            authorization: Option<&str>,
            body: &[u8],
        ) -> Result<Allowed, Denial> {
            let uri: Uri = uri.parse().unwrap();
            let mut headers = HeaderMap::new();
            if let Some(a) = authorization {
                headers.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
            }
            let view = RequestView {
                method: &Method::POST,
                uri: &uri,
                path: "/",
                headers: &headers,
                body: Some(body),
            };
            self.guard.decide(&self.resource, view, NOW).await
        }
    }

    #[tokio::test]
    async fn no_token_gets_a_challenge_without_an_error_code() {
        let f = fixture();
        let denial = f.decide("/", None, GET).await.unwrap_err();
        assert_eq!(
            (denial.status, denial.reason),
            (StatusCode::UNAUTHORIZED, "no_token")
        );
        assert_eq!(
            denial.challenge.as_deref(),
            Some(format!(r#"Bearer scope="agent:read", resource_metadata="{METADATA}""#).as_str())
        );
    }

    #[tokio::test]
    async fn a_bad_token_is_invalid_token() {
        let f = fixture();
        let denial = f.decide("/", Some("Bearer x.y.z"), GET).await.unwrap_err();
        assert_eq!(denial.status, StatusCode::UNAUTHORIZED);
        let challenge = denial.challenge.unwrap();
        assert!(
            challenge.starts_with(r#"Bearer error="invalid_token""#),
            "{challenge}"
        );
        assert!(challenge.contains(&format!(r#"resource_metadata="{METADATA}""#)));
    }

    #[tokio::test]
    async fn an_operation_scope_missing_is_403_naming_only_it() {
        let f = fixture();
        let bearer = format!("Bearer {}", f.token("agent:read"));
        // GetTask needs only the resource's scope.
        let allowed = f.decide("/", Some(&bearer), GET).await.unwrap();
        assert_eq!(allowed.operation, Some(A2aOperation::GetTask));
        assert_eq!(allowed.token.unwrap().subject, "alice");
        // SendMessage also needs agent:send.
        let denial = f.decide("/", Some(&bearer), SEND).await.unwrap_err();
        assert_eq!(
            (denial.status, denial.reason),
            (StatusCode::FORBIDDEN, "insufficient_scope")
        );
        assert_eq!(denial.missing_scope.unwrap().to_string(), "agent:send");
        let challenge = denial.challenge.unwrap();
        assert!(
            challenge.starts_with(r#"Bearer error="insufficient_scope""#),
            "{challenge}"
        );
        assert!(challenge.contains(r#"scope="agent:send""#), "{challenge}");
        assert_eq!(denial.caller.unwrap().subject, "alice");
        let wide = format!("Bearer {}", f.token("agent:read agent:send"));
        let allowed = f.decide("/", Some(&wide), SEND).await.unwrap();
        assert_eq!(allowed.operation, Some(A2aOperation::SendMessage));
    }

    #[tokio::test]
    async fn malformed_requests_are_400_before_the_token_counts() {
        let f = fixture();
        let bearer = format!("Bearer {}", f.token("agent:read agent:send"));
        let in_query = f
            .decide("/?access_token=abc", Some(&bearer), GET)
            .await
            .unwrap_err();
        assert_eq!(
            (in_query.status, in_query.reason),
            (StatusCode::BAD_REQUEST, "token_in_query")
        );
        let huge = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_LEN));
        let oversized = f.decide("/", Some(&huge), GET).await.unwrap_err();
        assert_eq!(
            (oversized.status, oversized.reason),
            (StatusCode::BAD_REQUEST, "oversized_authorization")
        );
        // RFC 6750 §2.1: a b64token, then only `=`s.
        for bad in [
            "Bearer abc!def",
            "Bearer abc=def",
            "Bearer a\"b",
            "Bearer =",
        ] {
            let refused = f.decide("/", Some(bad), GET).await.unwrap_err();
            assert_eq!(
                (refused.status, refused.reason),
                (StatusCode::BAD_REQUEST, "malformed_authorization"),
                "{bad}"
            );
        }
        let charset = f
            .decide("/", Some("Bearer azAZ09-._~+/=="), GET)
            .await
            .unwrap_err();
        assert_eq!(
            (charset.status, charset.reason),
            (StatusCode::UNAUTHORIZED, "malformed"),
            "every b64token character is taken, and the token then refused as no JWT"
        );
        let not_json = f
            .decide("/", Some(&bearer), b"{not json")
            .await
            .unwrap_err();
        assert_eq!(
            (not_json.status, not_json.reason),
            (StatusCode::BAD_REQUEST, "malformed_jsonrpc")
        );
        assert_eq!(not_json.jsonrpc.map(|(code, _, _)| code), Some(-32700));
    }
}
