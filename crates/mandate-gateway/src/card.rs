//! Agent Cards served by the gateway: the upstream's card, rewritten so its
//! interface URLs point at the gateway and its security schemes say how to get
//! a token from Mandate, then signed (A2A §8.4: a detached JWS over the
//! JCS-canonical card without `signatures`). Cached, served with `ETag` and
//! `Cache-Control`, and rate-limited per client address.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::route::Route;

/// Largest upstream card read.
pub const MAX_CARD_BYTES: usize = 256 * 1024;

/// Signs card payloads with Mandate's current key.
pub trait CardSigner: Send + Sync + 'static {
    /// Returns `(protected, signature)`, both base64url, for a detached JWS
    /// over `payload` with `typ: JOSE`, `alg` and `kid`.
    fn sign(&self, payload: &[u8]) -> Result<(String, String), String>;
}

/// Scope descriptions of a resource, for the card's OAuth flow.
#[async_trait]
pub trait ScopeCatalog: Send + Sync + 'static {
    /// Scope name to description for `resource`.
    async fn describe(&self, resource: &str) -> BTreeMap<String, String>;
}

/// Where tokens come from, as cards advertise it.
#[derive(Debug, Clone)]
pub struct CardSettings {
    /// The gateway's public base URL, no trailing slash.
    pub public_base: String,
    /// Mandate's token endpoint.
    pub token_url: String,
    /// Mandate's RFC 8414 metadata URL.
    pub metadata_url: String,
    /// `Cache-Control: max-age` of served cards.
    pub max_age: Duration,
    /// Card requests per minute per client address.
    pub rate_per_minute: u32,
}

/// A card ready to serve.
#[derive(Debug, Clone)]
pub struct ServedCard {
    /// The JSON body.
    pub body: Bytes,
    /// Its strong `ETag` (quoted).
    pub etag: String,
}

/// Fields A2A requires even when empty; other empty values are dropped
/// before signing, as the protobuf JSON mapping would.
const REQUIRED_EMPTY_OK: [&str; 6] = [
    "skills",
    "defaultInputModes",
    "defaultOutputModes",
    "supportedInterfaces",
    "tags",
    "description",
];

fn drop_defaults(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, v| {
                drop_defaults(v);
                let empty = match v {
                    Value::Null => true,
                    Value::Array(a) => a.is_empty(),
                    Value::Object(o) => o.is_empty(),
                    _ => false,
                };
                !empty || REQUIRED_EMPTY_OK.contains(&k.as_str())
            });
        }
        Value::Array(items) => items.iter_mut().for_each(drop_defaults),
        _ => {}
    }
}

/// Points a URL the upstream advertised at the gateway: same path below the
/// route as below the upstream's base.
fn through_gateway(url: &str, route: &Route, gateway_route_url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return gateway_route_url.to_owned();
    };
    let base_path = route.upstream.path().trim_end_matches('/');
    let rest = parsed
        .path()
        .strip_prefix(base_path)
        .unwrap_or(parsed.path());
    let mut out = format!("{gateway_route_url}{}", if rest == "/" { "" } else { rest });
    if out.ends_with(&route.path) && url.ends_with('/') {
        out.push('/');
    }
    if let Some(q) = parsed.query() {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Rewrites an upstream card for the gateway (pure; tested below).
pub fn rewrite_card(
    mut card: Value,
    route: &Route,
    settings: &CardSettings,
    scopes: &BTreeMap<String, String>,
) -> Value {
    let gateway_route_url = format!("{}{}", settings.public_base, route.path);
    let Some(obj) = card.as_object_mut() else {
        return card;
    };
    obj.remove("signatures");
    let v1 = obj.contains_key("supportedInterfaces");
    if let Some(Value::Array(interfaces)) = obj.get_mut("supportedInterfaces") {
        for i in interfaces.iter_mut() {
            if let Some(Value::String(u)) = i.get_mut("url") {
                *u = through_gateway(u, route, &gateway_route_url);
            }
        }
    }
    if let Some(Value::String(u)) = obj.get_mut("url") {
        *u = through_gateway(u, route, &gateway_route_url);
    }
    if let Some(Value::Array(extra)) = obj.get_mut("additionalInterfaces") {
        for i in extra.iter_mut() {
            if let Some(Value::String(u)) = i.get_mut("url") {
                *u = through_gateway(u, route, &gateway_route_url);
            }
        }
    }
    let route_scopes: Vec<String> = route
        .policy
        .scopes
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    let mut advertised: Map<String, Value> = Map::new();
    let all_scopes = route
        .policy
        .scopes
        .iter()
        .chain(route.policy.operations.values().flat_map(|s| s.iter()))
        .chain(route.skills.values().flat_map(|s| s.iter()));
    for s in all_scopes {
        let d = scopes.get(s.as_str()).cloned().unwrap_or_default();
        advertised.insert(s.as_str().to_owned(), Value::String(d));
    }
    let flows =
        json!({"clientCredentials": {"tokenUrl": settings.token_url, "scopes": advertised}});
    // A card may carry both versions' fields (an agent serving v1.0 and v0.3,
    // as the official SDK does): then both shapes are written, so clients of
    // either version are told how to get a token. The agent's own security
    // entries are replaced: the gateway is what checks tokens now.
    let v03 = !v1 || obj.contains_key("url") || obj.contains_key("protocolVersion");
    let v1_scheme = json!({
        "description": "OAuth 2.0 access token from Mandate",
        "flows": flows,
        "oauth2MetadataUrl": settings.metadata_url,
    });
    let mut scheme = Map::new();
    if v1 {
        scheme.insert("oauth2SecurityScheme".into(), v1_scheme.clone());
    }
    if let (true, Some(o)) = (v03, v1_scheme.as_object()) {
        scheme.insert("type".into(), json!("oauth2"));
        scheme.extend(o.clone());
    }
    obj.insert("securitySchemes".into(), json!({ "mandate": scheme }));
    let set = |o: &mut Map<String, Value>, list: &[String]| {
        o.remove("securityRequirements");
        o.remove("security");
        if v1 {
            o.insert(
                "securityRequirements".into(),
                json!([{"schemes": {"mandate": {"list": list}}}]),
            );
        }
        if v03 {
            o.insert("security".into(), json!([{ "mandate": list }]));
        }
    };
    set(obj, &route_scopes);
    if let Some(Value::Array(skills)) = obj.get_mut("skills") {
        for skill in skills.iter_mut() {
            let id = skill
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let extra = route.skills.get(&id);
            let list: Vec<String> = route
                .policy
                .scopes
                .iter()
                .chain(extra.into_iter().flat_map(|s| s.iter()))
                .map(|s| s.as_str().to_owned())
                .collect();
            if let Some(s) = skill.as_object_mut() {
                set(s, &list);
            }
        }
    }
    drop_defaults(&mut card);
    card
}

/// Signs a rewritten card and serializes it for serving.
pub fn sign_card(mut card: Value, signer: &dyn CardSigner) -> Result<ServedCard, String> {
    if let Some(o) = card.as_object_mut() {
        o.remove("signatures");
    }
    let canonical = serde_json_canonicalizer::to_string(&card).map_err(|e| e.to_string())?;
    let (protected, signature) = signer.sign(canonical.as_bytes())?;
    if let Some(o) = card.as_object_mut() {
        o.insert(
            "signatures".into(),
            json!([{"protected": protected, "signature": signature}]),
        );
    }
    let body = Bytes::from(serde_json::to_vec(&card).map_err(|e| e.to_string())?);
    // The first half of the digest: 128 bits tell versions apart.
    let digest: [u8; 32] = Sha256::digest(&body).into();
    let etag = format!("\"{}\"", hex::encode(&digest[..16]));
    Ok(ServedCard { body, etag })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_tower::{ProtectedResource, Protocol};
    use mandate_types::ScopeSet;

    fn route() -> Route {
        Route {
            path: "/agents/expense".into(),
            upstream: url::Url::parse("http://127.0.0.1:9001").unwrap(),
            upstream_host: None,
            policy: ProtectedResource {
                resource: "https://expense.example".into(),
                resource_metadata: "x".into(),
                public_origin: "https://gw.example".into(),
                protocol: Protocol::A2a,
                scopes: ScopeSet::parse("expense:read").unwrap(),
                operations: [(
                    mandate_tower::A2aOperation::SendMessage,
                    ScopeSet::parse("expense:submit").unwrap(),
                )]
                .into(),
                public: false,
                mcp: None,
            },
            name: "Expense".into(),
            pass_token: false,
            skills: [(
                "submit".to_owned(),
                ScopeSet::parse("expense:submit").unwrap(),
            )]
            .into(),
            upstream_timeout: Duration::from_secs(5),
            client: crate::UpstreamTls::public_roots().unwrap().client(),
            rate_limit: None,
        }
    }

    fn settings() -> CardSettings {
        CardSettings {
            public_base: "https://gw.example".into(),
            token_url: "https://gw.example/token".into(),
            metadata_url: "https://gw.example/.well-known/oauth-authorization-server".into(),
            max_age: Duration::from_secs(60),
            rate_per_minute: 2,
        }
    }

    #[test]
    fn v1_card_points_at_the_gateway_and_mandate() {
        let card = json!({
            "name": "Expense", "description": "", "version": "1",
            "supportedInterfaces": [{"url": "http://localhost:9001/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
            "capabilities": {"streaming": true},
            "defaultInputModes": ["text/plain"], "defaultOutputModes": ["text/plain"],
            "skills": [
                {"id": "submit", "name": "Submit", "description": "d", "tags": [], "examples": []},
                {"id": "other", "name": "O", "description": "d", "tags": [], "security": [{"agent-own": []}]}
            ],
            "signatures": [{"protected": "old", "signature": "old"}],
            "iconUrl": null,
        });
        let scopes = BTreeMap::from([("expense:read".to_owned(), "Read expenses".to_owned())]);
        let out = rewrite_card(card, &route(), &settings(), &scopes);
        assert_eq!(
            out["supportedInterfaces"][0]["url"],
            "https://gw.example/agents/expense/"
        );
        let scheme = &out["securitySchemes"]["mandate"]["oauth2SecurityScheme"];
        assert_eq!(
            scheme["flows"]["clientCredentials"]["tokenUrl"],
            "https://gw.example/token"
        );
        assert_eq!(
            scheme["flows"]["clientCredentials"]["scopes"]["expense:read"],
            "Read expenses"
        );
        assert!(scheme["flows"]["clientCredentials"]["scopes"]
            .get("expense:submit")
            .is_some());
        assert_eq!(
            out["securityRequirements"][0]["schemes"]["mandate"]["list"],
            json!(["expense:read"])
        );
        assert_eq!(
            out["skills"][0]["securityRequirements"][0]["schemes"]["mandate"]["list"],
            json!(["expense:read", "expense:submit"])
        );
        assert!(out.get("signatures").is_none());
        assert!(
            out.get("security").is_none(),
            "a pure v1.0 card gets v1.0 names only"
        );
        assert_eq!(
            out["skills"][1]["securityRequirements"][0]["schemes"]["mandate"]["list"],
            json!(["expense:read"]),
            "a skill without its own scopes needs the route's"
        );
        assert!(out.get("iconUrl").is_none());
        assert!(out["skills"][0].get("examples").is_none());
        assert_eq!(out["skills"][0]["tags"], json!([]));
    }

    #[test]
    fn v03_card_uses_legacy_names() {
        let card = json!({"name": "E", "url": "http://127.0.0.1:9001/rpc", "skills": []});
        let out = rewrite_card(card, &route(), &settings(), &BTreeMap::new());
        assert_eq!(out["url"], "https://gw.example/agents/expense/rpc");
        assert_eq!(out["securitySchemes"]["mandate"]["type"], "oauth2");
        assert_eq!(out["security"], json!([{"mandate": ["expense:read"]}]));
        assert!(out.get("securityRequirements").is_none());
    }

    #[test]
    fn a_card_of_both_versions_gets_both_shapes() {
        let card = json!({
            "name": "E", "url": "http://127.0.0.1:9001/", "protocolVersion": "0.3",
            "supportedInterfaces": [{"url": "http://127.0.0.1:9001/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
            "skills": [], "security": [{"agent-own": []}],
        });
        let out = rewrite_card(card, &route(), &settings(), &BTreeMap::new());
        let scheme = &out["securitySchemes"]["mandate"];
        assert_eq!(scheme["type"], "oauth2");
        assert!(scheme["flows"]["clientCredentials"].is_object());
        assert!(scheme["oauth2SecurityScheme"]["flows"]["clientCredentials"].is_object());
        assert_eq!(out["security"], json!([{"mandate": ["expense:read"]}]));
        assert_eq!(
            out["securityRequirements"][0]["schemes"]["mandate"]["list"],
            json!(["expense:read"])
        );
    }
}
