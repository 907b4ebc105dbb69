//! `[gateway]`: routes in front of agents, and the issuers whose tokens they accept.

use std::collections::{BTreeMap, HashMap};

use mandate_tower::mcp::{Level, ScopeRules, ToolRule};
use mandate_tower::{A2aOperation, Protocol};
use mandate_types::{ResourceUri, ScopeSet};

use crate::raw::{RawGateway, RawItem};
use crate::{duration, err, ConfigError};

/// Paths the authorization server owns; no route may shadow them.
const RESERVED: [&str; 15] = [
    "/authorize",
    "/par",
    "/login",
    "/consent",
    "/grants",
    "/logout",
    "/token",
    "/introspect",
    "/revoke",
    "/register",
    "/jwks.json",
    "/.well-known",
    "/metrics",
    "/healthz",
    "/readyz",
];

/// A trusted external issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Issuer identifier; keys come from its RFC 8414 metadata.
    pub issuer: String,
    /// Whether its tokens must have `typ: at+jwt`.
    pub require_at_jwt: bool,
}

/// One route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Path prefix.
    pub path: String,
    /// Upstream base URL.
    pub upstream: url::Url,
    /// Protocol.
    pub protocol: Protocol,
    /// Audience tokens must carry.
    pub resource: ResourceUri,
    /// Display name.
    pub name: String,
    /// Scopes every call needs.
    pub scopes: ScopeSet,
    /// Extra scopes per A2A operation.
    pub operations: HashMap<A2aOperation, ScopeSet>,
    /// Per-skill scopes advertised on the card.
    pub skills: BTreeMap<String, ScopeSet>,
    /// MCP: scopes each tool permission level needs.
    pub levels: HashMap<Level, ScopeSet>,
    /// MCP: per-tool overrides.
    pub tools: HashMap<String, ToolRule>,
    /// MCP: scopes of every prompt, and per prompt name (or `prefix*`).
    pub prompts: ScopeRules,
    /// MCP: scopes of every resource, and per URI (or `prefix*`).
    pub resources: ScopeRules,
    /// No token needed.
    pub public: bool,
    /// Forward the caller's token.
    pub pass_token: bool,
    /// Upstream response-header timeout, seconds.
    pub upstream_timeout: i64,
    /// For an https upstream: the CAs its certificate must chain to, instead
    /// of the public web PKI.
    pub upstream_ca: Option<UpstreamCa>,
    /// For an https upstream that asks for one: the client certificate the
    /// gateway shows (mutual TLS).
    pub upstream_client_cert: Option<UpstreamClientCert>,
    /// Requests per minute each caller may make on the route.
    pub rate_limit: Option<u32>,
    /// MCP: browser origins allowed besides the gateway's own.
    pub allowed_origins: Vec<String>,
}

/// `upstream_ca_file`: where the CA certificates came from, and their PEM.
#[derive(Debug, Clone)]
pub struct UpstreamCa {
    /// The file, as configured.
    pub file: String,
    /// Its contents; parsed when the gateway starts.
    pub pem: Vec<u8>,
}

/// `upstream_client_cert_file` and `upstream_client_key_file`, as configured.
/// The gateway reads them at start, and again when they change.
#[derive(Debug, Clone)]
pub struct UpstreamClientCert {
    /// The PEM certificate chain, the gateway's own certificate first.
    pub cert_file: String,
    /// The PEM private key of that certificate.
    pub key_file: String,
}

/// The gateway's configuration.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    /// Public base URL (default: the issuer).
    pub public_url: String,
    /// Clock skew tolerance, seconds.
    pub leeway: i64,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// How often revocations are re-read from the store, seconds.
    pub revocation_refresh: i64,
    /// Agent Card cache lifetime, seconds.
    pub card_max_age: i64,
    /// Agent Card requests per minute per address.
    pub card_rate_limit: u32,
    /// Route also served at the root well-known paths.
    pub default_route: Option<String>,
    /// Trust Mandate's own issuer (in process).
    pub trust_own_issuer: bool,
    /// Require server nonces in DPoP proofs at the gateway (RFC 9449 §9).
    pub dpop_nonce: bool,
    /// Other trusted issuers.
    pub issuers: Vec<IssuerConfig>,
    /// Routes.
    pub routes: Vec<RouteConfig>,
}

fn scopes(key: &str, list: &[String]) -> Result<ScopeSet, ConfigError> {
    ScopeSet::parse(&list.join(" ")).map_err(|e| err(key, e.to_string()))
}

/// Longest prompt name or resource URI pattern.
const MAX_PATTERN_LEN: usize = 2048;

/// `<what>_scopes` and `[<what>."<pattern>"]` of route `i` as rules. A
/// pattern is a name (URI), or a prefix followed by one `*`.
fn scope_rules(
    i: usize,
    what: &str,
    all: &[String],
    items: &BTreeMap<String, RawItem>,
) -> Result<ScopeRules, ConfigError> {
    let singular = what.trim_end_matches('s');
    let mut rules = BTreeMap::new();
    for (pattern, item) in items {
        let key = format!("gateway.routes[{i}].{what}.{pattern:?}");
        let star = pattern.find('*');
        if pattern.is_empty()
            || pattern.len() > MAX_PATTERN_LEN
            || star.is_some_and(|at| at + 1 != pattern.len())
        {
            return Err(err(
                key,
                format!("a {singular} pattern is a non-empty name, or a prefix ending in one `*`"),
            ));
        }
        rules.insert(
            pattern.clone(),
            scopes(&format!("{key}.scopes"), &item.scopes)?,
        );
    }
    Ok(ScopeRules {
        all: scopes(&format!("gateway.routes[{i}].{singular}_scopes"), all)?,
        rules,
    })
}

pub(crate) fn gateway_config(raw: RawGateway, issuer: &str) -> Result<GatewayConfig, ConfigError> {
    let upstream_default = duration("gateway.upstream_timeout", raw.upstream_timeout, 30)?;
    let mut routes: Vec<RouteConfig> = Vec::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let key = |k: &str| format!("gateway.routes[{i}].{k}");
        let path = r.path.trim_end_matches('/').to_owned();
        if !path.starts_with('/')
            || path.len() < 2
            || path.contains("//")
            || path.split('/').any(|s| s == "." || s == "..")
        {
            return Err(err(
                key("path"),
                format!("{:?} must be an absolute path like /agents/expense", r.path),
            ));
        }
        if RESERVED
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")))
            || path.starts_with("/.well-known")
        {
            return Err(err(
                key("path"),
                format!("{path} is reserved for the authorization server"),
            ));
        }
        if routes.iter().any(|x| x.path == path) {
            return Err(err(key("path"), "defined twice"));
        }
        let upstream = url::Url::parse(&r.upstream)
            .map_err(|e| err(key("upstream"), format!("{:?}: {e}", r.upstream)))?;
        if !matches!(upstream.scheme(), "http" | "https")
            || upstream.query().is_some()
            || upstream.fragment().is_some()
        {
            return Err(err(
                key("upstream"),
                "must be an http:// or https:// URL without query or fragment",
            ));
        }
        let upstream_ca = match r.upstream_ca_file {
            None => None,
            Some(_) if upstream.scheme() != "https" => {
                return Err(err(
                    key("upstream_ca_file"),
                    "only for an https:// upstream",
                ))
            }
            Some(file) => {
                let pem = std::fs::read(&file).map_err(|e| {
                    err(key("upstream_ca_file"), format!("cannot read {file}: {e}"))
                })?;
                Some(UpstreamCa { file, pem })
            }
        };
        let upstream_client_cert = match (r.upstream_client_cert_file, r.upstream_client_key_file) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(err(
                    key("upstream_client_cert_file"),
                    "goes with `upstream_client_key_file`: set both or neither",
                ))
            }
            (Some(_), Some(_)) if upstream.scheme() != "https" => {
                return Err(err(
                    key("upstream_client_cert_file"),
                    "only for an https:// upstream",
                ))
            }
            (Some(cert_file), Some(key_file)) => {
                for (name, file) in [
                    ("upstream_client_cert_file", &cert_file),
                    ("upstream_client_key_file", &key_file),
                ] {
                    std::fs::File::open(file)
                        .map_err(|e| err(key(name), format!("cannot read {file}: {e}")))?;
                }
                Some(UpstreamClientCert {
                    cert_file,
                    key_file,
                })
            }
        };
        if r.rate_limit == Some(0) {
            return Err(err(
                key("rate_limit"),
                "must be at least 1 (requests per minute per caller); leave it out for no limit",
            ));
        }
        let protocol = match r.protocol.as_deref() {
            None | Some("http") => Protocol::Http,
            Some("a2a") => Protocol::A2a,
            Some("mcp") => Protocol::Mcp,
            Some(other) => {
                return Err(err(
                    key("protocol"),
                    format!("{other:?}: use a2a, mcp or http"),
                ))
            }
        };
        let resource_raw = r.resource.ok_or_else(|| {
            err(
                key("resource"),
                "every route names the audience its tokens must carry",
            )
        })?;
        let resource = ResourceUri::parse(&resource_raw).map_err(|e| err(key("resource"), e))?;
        let route_scopes = scopes(&key("scopes"), &r.scopes)?;
        let mut operations = HashMap::new();
        for (op, list) in &r.operations {
            let operation = A2aOperation::from_name(op).ok_or_else(|| {
                err(
                    key("operations"),
                    format!("{op:?} is not an A2A v1.0 operation name"),
                )
            })?;
            operations.insert(operation, scopes(&key("operations"), list)?);
        }
        let mut skills = BTreeMap::new();
        for (skill, list) in &r.skills {
            skills.insert(skill.clone(), scopes(&key("skills"), list)?);
        }
        if protocol != Protocol::A2a && (!operations.is_empty() || !skills.is_empty()) {
            return Err(err(
                key("operations"),
                "operations and skills apply to a2a routes only",
            ));
        }
        let mut levels = HashMap::new();
        for (name, list) in &r.levels {
            let level = Level::parse(name).ok_or_else(|| {
                err(
                    key("levels"),
                    format!("{name:?}: use read, write or destructive"),
                )
            })?;
            levels.insert(level, scopes(&key("levels"), list)?);
        }
        let mut tools = HashMap::new();
        for (name, t) in &r.tools {
            let level = t
                .level
                .as_deref()
                .map(|l| {
                    Level::parse(l).ok_or_else(|| {
                        err(
                            format!("gateway.routes[{i}].tools.{name}.level"),
                            format!("{l:?}: use read, write or destructive"),
                        )
                    })
                })
                .transpose()?;
            tools.insert(
                name.clone(),
                ToolRule {
                    level,
                    scopes: scopes(
                        &format!("gateway.routes[{i}].tools.{name}.scopes"),
                        &t.scopes,
                    )?,
                },
            );
        }
        if protocol != Protocol::Mcp && (!levels.is_empty() || !tools.is_empty()) {
            return Err(err(
                key("levels"),
                "levels and tools apply to mcp routes only",
            ));
        }
        let prompts = scope_rules(i, "prompts", &r.prompt_scopes, &r.prompts)?;
        let resources = scope_rules(i, "resources", &r.resource_scopes, &r.resources)?;
        let item_rules = !r.prompt_scopes.is_empty()
            || !r.prompts.is_empty()
            || !r.resource_scopes.is_empty()
            || !r.resources.is_empty();
        if protocol != Protocol::Mcp && item_rules {
            return Err(err(
                key("prompts"),
                "prompts, prompt_scopes, resources and resource_scopes apply to mcp routes only",
            ));
        }
        if protocol == Protocol::Mcp && !r.public && levels.len() != 3 {
            return Err(err(
                key("levels"),
                "an mcp route names the scopes of each level: read, write and destructive",
            ));
        }
        if r.public
            && (!route_scopes.is_empty()
                || !operations.is_empty()
                || !skills.is_empty()
                || !levels.is_empty()
                || !tools.is_empty()
                || item_rules)
        {
            return Err(err(
                key("public"),
                "a public route cannot also require scopes",
            ));
        }
        let mut allowed_origins = Vec::new();
        for (j, o) in r.allowed_origins.iter().enumerate() {
            let k = key(&format!("allowed_origins[{j}]"));
            if protocol != Protocol::Mcp {
                return Err(err(k, "allowed_origins applies to mcp routes only"));
            }
            let parsed = url::Url::parse(o).map_err(|e| err(k.clone(), e.to_string()))?;
            let origin = parsed.origin().ascii_serialization();
            if !parsed.origin().is_tuple() || origin != o.trim_end_matches('/') {
                return Err(err(k, "an origin is scheme://host[:port], nothing more"));
            }
            allowed_origins.push(origin);
        }
        let upstream_timeout = match r.upstream_timeout {
            Some(t) => duration(&key("upstream_timeout"), Some(t), 30)?,
            None => upstream_default,
        };
        routes.push(RouteConfig {
            name: r
                .name
                .unwrap_or_else(|| path.trim_start_matches('/').to_owned()),
            path,
            upstream,
            protocol,
            resource,
            scopes: route_scopes,
            operations,
            skills,
            levels,
            tools,
            prompts,
            resources,
            public: r.public,
            pass_token: r.pass_token,
            upstream_timeout,
            upstream_ca,
            upstream_client_cert,
            rate_limit: r.rate_limit,
            allowed_origins,
        });
    }
    let mut issuers = Vec::new();
    for (i, x) in raw.issuers.into_iter().enumerate() {
        let parsed = url::Url::parse(&x.issuer)
            .map_err(|e| err(format!("gateway.issuers[{i}].issuer"), e.to_string()))?;
        if parsed.scheme() != "https"
            && parsed.host_str() != Some("127.0.0.1")
            && parsed.host_str() != Some("localhost")
        {
            return Err(err(
                format!("gateway.issuers[{i}].issuer"),
                "must be https (http only on loopback)",
            ));
        }
        issuers.push(IssuerConfig {
            issuer: x.issuer.trim_end_matches('/').to_owned(),
            require_at_jwt: x.require_at_jwt.unwrap_or(false),
        });
    }
    if let Some(d) = &raw.default_route {
        if !routes.iter().any(|r| &r.path == d) {
            return Err(err(
                "gateway.default_route",
                format!("{d} is not a route path"),
            ));
        }
    }
    let max_body_bytes = raw.max_body_bytes.unwrap_or(1024 * 1024);
    if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
        return Err(err(
            "gateway.max_body_bytes",
            "must be between 1024 and 67108864",
        ));
    }
    Ok(GatewayConfig {
        public_url: raw
            .public_url
            .unwrap_or_else(|| issuer.to_owned())
            .trim_end_matches('/')
            .to_owned(),
        leeway: duration("gateway.leeway", raw.leeway, 30)?,
        max_body_bytes,
        revocation_refresh: duration("gateway.revocation_refresh", raw.revocation_refresh, 5)?,
        card_max_age: duration("gateway.card_max_age", raw.card_max_age, 300)?,
        card_rate_limit: raw.card_rate_limit.unwrap_or(60),
        default_route: raw.default_route,
        trust_own_issuer: raw.trust_own_issuer.unwrap_or(true),
        dpop_nonce: raw.dpop_nonce.unwrap_or(false),
        issuers,
        routes,
    })
}
