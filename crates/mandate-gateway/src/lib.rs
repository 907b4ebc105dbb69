//! Mandate's gateway: a reverse proxy in front of A2A and HTTP agents that
//! lets no unauthenticated or over-scoped call through.
//!
//! For each request under a route it runs the same [`Guard::decide`] as the
//! tower layer in `mandate-tower`, then forwards: hop-by-hop headers dropped,
//! `X-Forwarded-*` set, the caller's identity in `X-Mandate-*` headers that no
//! caller can forge (incoming copies are removed), the caller's token withheld
//! unless the route asks for it. Bodies stream both ways (SSE included); only
//! an A2A JSON-RPC request body is read first, bounded, to find the operation.
//!
//! It also serves each route's RFC 9728 metadata and its Agent Card (see
//! [`card`]). Every decision goes to a [`DecisionSink`] (the audit trail)
//! without waiting for it.

pub mod card;
mod client_cert;
pub mod mcp;
pub mod metrics;
pub mod rate_limit;
pub mod route;
pub mod upstream;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Limited};
use mandate_tower::mcp::{ItemKind, McpItem};
use mandate_tower::{Allowed, Guard, Protocol, RequestView};
use mandate_types::Clock;
use serde_json::json;

pub use card::{CardSettings, CardSigner, ScopeCatalog};
pub use metrics::GatewayMetrics;
pub use rate_limit::RateLimiter;
pub use route::{upstream_host, Route, RouteTable};
pub use upstream::{UpstreamClient, UpstreamTls};

/// Identity headers set for the upstream; incoming copies are removed.
pub const IDENTITY_PREFIX: &str = "x-mandate-";

/// What the audit trail records of each decision.
#[derive(Debug, Clone)]
pub struct DecisionEvent {
    /// Route path.
    pub route: String,
    /// The audience.
    pub resource: String,
    /// A2A operation or JSON-RPC method, when known (borrowed when it is
    /// a known operation's name: no copy per request).
    pub operation: Option<Cow<'static, str>>,
    /// Caller's client.
    pub client_id: Option<String>,
    /// Caller's subject.
    pub subject: Option<String>,
    /// Token scopes.
    pub scopes: Option<String>,
    /// Token id.
    pub jti: Option<String>,
    /// Allowed or not.
    pub allowed: bool,
    /// `allow` or the denial reason.
    pub reason: Cow<'static, str>,
    /// HTTP status returned (upstream's when allowed).
    pub status: u16,
    /// Time spent, microseconds.
    pub latency_us: u64,
}

/// Receives decisions. It should not wait for durability, only for room in a
/// bounded queue (backpressure when the audit writer falls behind).
#[async_trait::async_trait]
pub trait DecisionSink: Send + Sync + 'static {
    /// Records one decision.
    async fn record(&self, event: DecisionEvent);
}

/// Gateway-wide settings.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Authorization servers named in protected-resource metadata.
    pub authorization_servers: Vec<String>,
    /// Card settings (also holds the public base URL).
    pub card: CardSettings,
    /// Route whose well-known documents are also served at the root.
    pub default_route: Option<String>,
    /// Largest request body forwarded (and read, for JSON-RPC).
    pub max_body: usize,
}

/// The gateway.
pub struct Gateway {
    routes: RouteTable,
    guard: Arc<Guard>,
    clock: Arc<dyn Clock>,
    settings: GatewaySettings,
    signer: Arc<dyn CardSigner>,
    catalog: Arc<dyn ScopeCatalog>,
    sink: Arc<dyn DecisionSink>,
    cards: tokio::sync::Mutex<HashMap<String, (Instant, card::ServedCard)>>,
    limiter: RateLimiter<IpAddr>,
    metrics: GatewayMetrics,
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The headers that carry the verified caller to the upstream, all under
/// [`IDENTITY_PREFIX`].
mod identity {
    use http::HeaderName;

    pub(crate) const SUBJECT: HeaderName = HeaderName::from_static("x-mandate-subject");
    pub(crate) const CLIENT_ID: HeaderName = HeaderName::from_static("x-mandate-client-id");
    pub(crate) const SCOPE: HeaderName = HeaderName::from_static("x-mandate-scope");
    pub(crate) const ISSUER: HeaderName = HeaderName::from_static("x-mandate-issuer");
    pub(crate) const TOKEN_ID: HeaderName = HeaderName::from_static("x-mandate-token-id");
    pub(crate) const ACTOR_CHAIN: HeaderName = HeaderName::from_static("x-mandate-actor-chain");
    pub(crate) const OPERATION: HeaderName = HeaderName::from_static("x-mandate-operation");
}

/// The `X-Forwarded-*` fields, as constants: inserting by a `&str` name
/// would copy the name into a new allocation on every request.
mod forwarded {
    use http::HeaderName;

    pub(crate) const FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    pub(crate) const HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    pub(crate) const PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
}

/// RFC 9110 §7.6.1 hop-by-hop fields (and the common non-standard ones).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop fields, and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: look before removing, since each
    // removal hashes its name.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    // The names `Connection` lists beyond the fixed ones (usually none:
    // `Connection: keep-alive` names one of them).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| {
            !HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(n))
        })
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for n in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(n);
    }
}

impl Gateway {
    /// Assembles a gateway.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        routes: RouteTable,
        guard: Arc<Guard>,
        clock: Arc<dyn Clock>,
        settings: GatewaySettings,
        signer: Arc<dyn CardSigner>,
        catalog: Arc<dyn ScopeCatalog>,
        sink: Arc<dyn DecisionSink>,
    ) -> Self {
        let metrics = GatewayMetrics::new(routes.all().iter().map(|r| r.path.as_str()));
        Self {
            limiter: RateLimiter::new(settings.card.rate_per_minute),
            routes,
            guard,
            clock,
            settings,
            signer,
            catalog,
            sink,
            cards: tokio::sync::Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The routes.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Metrics, for `/metrics`.
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    /// Handles a request that no authorization server route matched.
    pub async fn handle(&self, req: Request<Body>, peer: Option<SocketAddr>) -> Response<Body> {
        let path = req.uri().path();
        if let Some(rest) = path.strip_prefix("/.well-known/oauth-protected-resource") {
            let route = if rest.is_empty() {
                self.routes.root(self.settings.default_route.as_deref())
            } else {
                self.routes.all().iter().find(|r| r.path == rest)
            };
            return match route {
                Some(r) => self.protected_resource_metadata(r),
                None => not_found(),
            };
        }
        if is_card_path(path) {
            return match self.routes.root(self.settings.default_route.as_deref()) {
                Some(r) if r.policy.protocol == Protocol::A2a => {
                    self.card(r, req.headers(), peer).await
                }
                _ => not_found(),
            };
        }
        self.handle_routed(req, peer)
            .await
            .unwrap_or_else(|_| not_found())
    }

    /// Answers a request under one of the routes (the route's Agent Card, or
    /// the checked and forwarded call), or hands it back when it is under
    /// none: the public listener sends route traffic here directly.
    pub async fn handle_routed(
        &self,
        req: Request<Body>,
        peer: Option<SocketAddr>,
    ) -> Result<Response<Body>, Request<Body>> {
        let path = req.uri().path();
        let Some((route, rest)) = self.routes.find(path) else {
            return Err(req);
        };
        if is_card_path(rest) && route.policy.protocol == Protocol::A2a {
            return Ok(self.card(route, req.headers(), peer).await);
        }
        let route_len = path.len() - rest.len();
        Ok(self.proxy(route, route_len, req, peer).await)
    }

    fn protected_resource_metadata(&self, route: &Route) -> Response<Body> {
        let scopes: std::collections::BTreeSet<&str> = route
            .policy
            .scopes
            .iter()
            .chain(route.policy.operations.values().flat_map(|s| s.iter()))
            .chain(route.skills.values().flat_map(|s| s.iter()))
            .chain(route.policy.mcp.iter().flat_map(|m| {
                m.levels
                    .values()
                    .chain(m.tools.values().map(|t| &t.scopes))
                    .flat_map(|s| s.iter())
                    .chain(m.prompts.all_scopes())
                    .chain(m.resources.all_scopes())
            }))
            .map(|s| s.as_str())
            .collect();
        let mut r = json_response(
            StatusCode::OK,
            json!({
                "resource": route.policy.resource,
                "authorization_servers": self.settings.authorization_servers,
                "scopes_supported": scopes,
                "bearer_methods_supported": ["header"],
                "resource_name": route.name,
            }),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        r
    }

    async fn card(
        &self,
        route: &Route,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Response<Body> {
        if let Err(wait) = self.limiter.check(&peer_ip(peer)) {
            return too_many_requests("too many Agent Card requests", wait);
        }
        let served = match self.served_card(route).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(route = %route.path, error = %e, "agent card unavailable");
                return json_response(
                    StatusCode::BAD_GATEWAY,
                    json!({"error": "bad_gateway", "error_description": "the agent's card is unavailable"}),
                );
            }
        };
        let max_age = self.settings.card.max_age.as_secs();
        let cache = HeaderValue::from_str(&format!("public, max-age={max_age}"))
            .unwrap_or(HeaderValue::from_static("no-cache"));
        let etag = HeaderValue::from_str(&served.etag).unwrap_or(HeaderValue::from_static("\"\""));
        let not_modified = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim() == served.etag || t.trim() == "*")
            });
        let mut r = if not_modified {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            let mut r = Response::new(Body::from(served.body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        };
        r.headers_mut().insert(header::CACHE_CONTROL, cache);
        r.headers_mut().insert(header::ETAG, etag);
        r
    }

    async fn served_card(&self, route: &Route) -> Result<card::ServedCard, String> {
        let mut cards = self.cards.lock().await;
        if let Some((at, c)) = cards.get(&route.path) {
            if at.elapsed() < self.settings.card.max_age {
                return Ok(c.clone());
            }
        }
        // The lock is held while fetching: one fetch per route at a time.
        let upstream = self.fetch_upstream_card(route).await?;
        let scopes: BTreeMap<String, String> = self.catalog.describe(&route.policy.resource).await;
        let rewritten = card::rewrite_card(upstream, route, &self.settings.card, &scopes);
        let served = card::sign_card(rewritten, self.signer.as_ref())?;
        cards.insert(route.path.clone(), (Instant::now(), served.clone()));
        Ok(served)
    }

    async fn fetch_upstream_card(&self, route: &Route) -> Result<serde_json::Value, String> {
        let base = route.upstream.as_str().trim_end_matches('/');
        let mut last = String::new();
        for name in ["agent-card.json", "agent.json"] {
            let uri: Uri = format!("{base}/.well-known/{name}")
                .parse()
                .map_err(|e: http::uri::InvalidUri| e.to_string())?;
            let req = Request::get(uri)
                .body(Body::empty())
                .map_err(|e| e.to_string())?;
            let resp = tokio::time::timeout(route.upstream_timeout, route.client.request(req))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                last = format!("{name}: {}", resp.status());
                continue;
            }
            let bytes = Limited::new(resp.into_body(), card::MAX_CARD_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            return serde_json::from_slice(&bytes).map_err(|e| format!("{name}: {e}"));
        }
        Err(last)
    }

    /// Checks and forwards a request whose path starts with `route_len`
    /// bytes of `route`'s prefix.
    async fn proxy(
        &self,
        route: &Route,
        route_len: usize,
        req: Request<Body>,
        peer: Option<SocketAddr>,
    ) -> Response<Body> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        let rest = parts.uri.path().get(route_len..).unwrap_or_default();
        let mut buffered: Option<Bytes> = None;
        let body = if Guard::needs_body(&route.policy, &parts.method, &parts.headers) {
            match Limited::new(body, self.settings.max_body).collect().await {
                Ok(c) => {
                    let b = c.to_bytes();
                    buffered = Some(b.clone());
                    Body::from(b)
                }
                Err(_) => {
                    return json_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        json!({"error": "invalid_request", "error_description": "request body too large"}),
                    )
                }
            }
        } else {
            Body::new(Limited::new(body, self.settings.max_body))
        };
        let rest_path = if rest.is_empty() { "/" } else { rest };
        let view = RequestView {
            method: &parts.method,
            uri: &parts.uri,
            path: rest_path,
            headers: &parts.headers,
            body: buffered.as_deref(),
        };
        let decision = self
            .guard
            .decide(&route.policy, view, self.clock.now())
            .await;
        let allowed = match decision {
            Ok(a) => a,
            Err(denial) => {
                self.metrics.decision(&route.path, denial.reason);
                self.sink
                    .record(DecisionEvent {
                        route: route.path.clone(),
                        resource: route.policy.resource.clone(),
                        operation: denial.operation.clone().map(Cow::Owned),
                        client_id: denial.caller.as_ref().and_then(|t| t.client_id.clone()),
                        subject: denial.caller.as_ref().map(|t| t.subject.clone()),
                        scopes: denial.caller.as_ref().map(|t| t.scope.to_string()),
                        jti: denial.caller.as_ref().and_then(|t| t.jti.clone()),
                        allowed: false,
                        // A Biscuit's failed check is named: the holder's own
                        // narrowing is what an auditor needs to see.
                        reason: if denial.reason == "biscuit_check_failed" {
                            Cow::Owned(format!("{}: {}", denial.reason, denial.description))
                        } else {
                            Cow::Borrowed(denial.reason)
                        },
                        status: denial.status.as_u16(),
                        latency_us: elapsed_us(started),
                    })
                    .await;
                return denial.into_response();
            }
        };
        if let Some(limit) = &route.rate_limit {
            if let Err(wait) = limit.check(caller_key(&allowed, peer).as_ref()) {
                self.metrics.decision(&route.path, "rate_limited");
                self.sink
                    .record(allowed_decision(
                        route,
                        &allowed,
                        false,
                        "rate_limited",
                        StatusCode::TOO_MANY_REQUESTS,
                        started,
                    ))
                    .await;
                return too_many_requests("too many requests on this route; retry later", wait);
            }
        }
        let Some(uri) = upstream_uri(route, rest, parts.uri.query()) else {
            return json_response(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}));
        };
        let original_host = parts.headers.get(header::HOST).cloned();
        parts.uri = uri;
        prepare_upstream_headers(
            &mut parts.headers,
            route,
            &allowed,
            peer,
            original_host,
            &self.settings.card.public_base,
        );
        self.metrics
            .added(&route.path, started.elapsed().as_secs_f64());
        let upstream_started = Instant::now();
        let result = tokio::time::timeout(
            route.upstream_timeout,
            route.client.request(Request::from_parts(parts, body)),
        )
        .await;
        let (response, reason) = match result {
            Ok(Ok(resp)) => {
                self.metrics
                    .upstream(&route.path, upstream_started.elapsed().as_secs_f64());
                let (mut p, b) = resp.into_parts();
                strip_hop_by_hop(&mut p.headers);
                // A caller sees only the tools, prompts and resources it
                // may use. Prompts and resources need reading only when
                // some rule (or a Biscuit's checks) could hide one.
                let listed = route
                    .policy
                    .mcp
                    .as_ref()
                    .zip(allowed.method.as_deref().and_then(ItemKind::listed_by))
                    .filter(|(policy, kind)| {
                        allowed.token.is_some()
                            && p.status.is_success()
                            && (allowed.biscuit.is_some()
                                || policy.rules(*kind).is_none_or(|r| !r.is_empty()))
                    })
                    .map(|(_, kind)| kind);
                if let Some(kind) = listed {
                    let now = self.clock.now();
                    let may_use = |item: McpItem<'_>| allowed.may_use(&route.policy, item, now);
                    let sse = mcp::is_sse(p.headers.get(header::CONTENT_TYPE));
                    match Limited::new(b, mcp::MAX_MCP_MESSAGE).collect().await {
                        Ok(c) => {
                            let filtered = mcp::filter_list(&c.to_bytes(), sse, kind, &may_use);
                            p.headers.remove(header::CONTENT_LENGTH);
                            (Response::from_parts(p, Body::from(filtered)), "allow")
                        }
                        Err(_) => (
                            json_response(
                                StatusCode::BAD_GATEWAY,
                                json!({"error": "bad_gateway", "error_description": "the upstream's list is too large"}),
                            ),
                            "upstream_error",
                        ),
                    }
                } else {
                    (Response::from_parts(p, Body::new(b)), "allow")
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(route = %route.path, error = %e, "upstream request failed");
                (
                    json_response(
                        StatusCode::BAD_GATEWAY,
                        json!({"error": "bad_gateway", "error_description": "the upstream agent could not be reached"}),
                    ),
                    "upstream_error",
                )
            }
            Err(_) => (
                json_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    json!({"error": "gateway_timeout", "error_description": "the upstream agent did not answer in time"}),
                ),
                "upstream_timeout",
            ),
        };
        self.metrics.decision(&route.path, reason);
        self.sink
            .record(allowed_decision(
                route,
                &allowed,
                true,
                reason,
                response.status(),
                started,
            ))
            .await;
        response
    }
}

/// The audit record of a request the guard allowed: forwarded (`forwarded`,
/// with the upstream's status or the gateway's 502/504), or stopped after
/// the guard (by the route's rate limit).
fn allowed_decision(
    route: &Route,
    allowed: &Allowed,
    forwarded: bool,
    reason: &'static str,
    status: StatusCode,
    started: Instant,
) -> DecisionEvent {
    let token = allowed.token.as_deref();
    DecisionEvent {
        route: route.path.clone(),
        resource: route.policy.resource.clone(),
        operation: allowed
            .operation
            .map(|o| Cow::Borrowed(o.name()))
            .or_else(|| allowed.method.clone().map(Cow::Owned))
            .map(|op| match &allowed.name {
                Some(n) => Cow::Owned(format!("{op}:{n}")),
                None => op,
            }),
        client_id: token.and_then(|t| t.client_id.clone()),
        subject: token.map(|t| t.subject.clone()),
        scopes: token.map(|t| t.scope.to_string()),
        jti: token.and_then(|t| t.jti.clone()),
        allowed: forwarded,
        reason: Cow::Borrowed(reason),
        status: status.as_u16(),
        latency_us: elapsed_us(started),
    }
}

/// Whom a route's rate limit counts a request against: the token's client,
/// else its subject, else (on a public route) the caller's address. The
/// last two are marked with a NUL, which no client id holds, so a subject
/// or an address cannot spend a client's requests.
fn caller_key(allowed: &Allowed, peer: Option<SocketAddr>) -> Cow<'_, str> {
    match allowed.token.as_deref() {
        Some(t) => match &t.client_id {
            Some(client) => Cow::Borrowed(client),
            None => Cow::Owned(format!("sub\0{}", t.subject)),
        },
        None => Cow::Owned(format!("addr\0{}", peer_ip(peer))),
    }
}

/// The caller's address, `0.0.0.0` when the listener gave none.
fn peer_ip(peer: Option<SocketAddr>) -> IpAddr {
    peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip())
}

/// 429 `rate_limited`, to retry after `wait` seconds.
fn too_many_requests(description: &'static str, wait: u64) -> Response<Body> {
    let mut r = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"error": "rate_limited", "error_description": description}),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait));
    r
}

fn elapsed_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn is_card_path(p: &str) -> bool {
    p == "/.well-known/agent-card.json" || p == "/.well-known/agent.json"
}

fn not_found() -> Response<Body> {
    json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"}))
}

/// The upstream URI for `rest` (the path below the route) and the query.
fn upstream_uri(route: &Route, rest: &str, query: Option<&str>) -> Option<Uri> {
    let base = route.upstream.as_str().trim_end_matches('/');
    let mut s = format!("{base}{rest}");
    if rest.is_empty() && route.upstream.path() == "/" {
        s.push('/');
    }
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    s.parse().ok()
}

fn prepare_upstream_headers(
    headers: &mut HeaderMap,
    route: &Route,
    allowed: &Allowed,
    peer: Option<SocketAddr>,
    original_host: Option<HeaderValue>,
    public_base: &str,
) {
    strip_hop_by_hop(headers);
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(IDENTITY_PREFIX))
        .cloned()
        .collect();
    for k in forged {
        headers.remove(k);
    }
    if !route.pass_token {
        headers.remove(header::AUTHORIZATION);
    }
    match &route.upstream_host {
        Some(host) => headers.insert(header::HOST, host.clone()),
        None => headers.remove(header::HOST),
    };
    if let Some(ip) = peer.map(|p| p.ip()) {
        let xff = match headers.get(forwarded::FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) => HeaderValue::from_str(&format!("{prior}, {ip}")).ok(),
            None => {
                // An address fits in 64 bytes; formatted on the stack, it
                // is copied once, into the value.
                let mut buf = [0_u8; 64];
                let mut w = &mut buf[..];
                let written = std::io::Write::write_fmt(&mut w, format_args!("{ip}"));
                let len = 64 - w.len();
                written
                    .ok()
                    .and_then(|()| HeaderValue::from_bytes(buf.get(..len)?).ok())
            }
        };
        if let Some(v) = xff {
            headers.insert(forwarded::FOR, v);
        }
    }
    if let Some(h) = original_host {
        headers.insert(forwarded::HOST, h);
    }
    let proto = if public_base.starts_with("https:") {
        "https"
    } else {
        "http"
    };
    headers.insert(forwarded::PROTO, HeaderValue::from_static(proto));
    let mut set = |name: HeaderName, value: Option<&str>| {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, v);
        }
    };
    if let Some(t) = allowed.token.as_deref() {
        set(identity::SUBJECT, Some(&t.subject));
        set(identity::CLIENT_ID, t.client_id.as_deref());
        set(identity::SCOPE, Some(&t.scope.to_string()));
        set(identity::ISSUER, Some(&t.issuer));
        set(identity::TOKEN_ID, t.jti.as_deref());
        if !t.actors.is_empty() {
            set(identity::ACTOR_CHAIN, Some(&t.actors.join(", ")));
        }
    }
    if let Some(op) = allowed.operation {
        set(identity::OPERATION, Some(op.name()));
    }
}
