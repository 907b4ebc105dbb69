//! Routes: a path prefix on the gateway, the upstream behind it, and the
//! policy the guard enforces there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mandate_tower::ProtectedResource;

use crate::rate_limit::RateLimiter;
use crate::upstream::UpstreamClient;
use mandate_types::ScopeSet;

/// One gateway route, validated.
#[derive(Debug, Clone)]
pub struct Route {
    /// Path prefix on the gateway, `/agents/expense` (no trailing slash).
    pub path: String,
    /// Base URL of the upstream, `http://127.0.0.1:9001` or with a path.
    pub upstream: url::Url,
    /// The `Host` requests to the upstream carry: [`upstream_host`] of
    /// `upstream`, made once rather than per request.
    pub upstream_host: Option<http::HeaderValue>,
    /// The policy, including the audience.
    pub policy: ProtectedResource,
    /// Name shown in metadata (`resource_name`).
    pub name: String,
    /// Pass the caller's token on to the upstream (off by default).
    pub pass_token: bool,
    /// Per-skill scopes advertised in the Agent Card.
    pub skills: BTreeMap<String, ScopeSet>,
    /// How long to wait for the upstream's response headers.
    pub upstream_timeout: Duration,
    /// The connection pool to the upstream, with the TLS trust it needs
    /// (see [`crate::upstream`]).
    pub client: UpstreamClient,
    /// Requests per minute each caller may make here (by client, else
    /// subject, else address), checked after the token.
    pub rate_limit: Option<Arc<RateLimiter<String>>>,
}

/// The `Host` field for requests to `upstream`: its host, with the port when
/// it is not the scheme's default. `None` if it has no host or cannot be a
/// field value (the HTTP client then writes one itself).
pub fn upstream_host(upstream: &url::Url) -> Option<http::HeaderValue> {
    let host = upstream.host_str()?;
    let value = match upstream.port() {
        Some(port) => http::HeaderValue::try_from(format!("{host}:{port}")),
        None => http::HeaderValue::from_str(host),
    };
    value.ok()
}

impl Route {
    /// The rest of `path` after this route's prefix, if it belongs here:
    /// `/agents/x` matches `/agents/x` and `/agents/x/...`, not `/agents/xy`.
    pub fn strip<'p>(&self, path: &'p str) -> Option<&'p str> {
        let rest = path.strip_prefix(self.path.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}

/// Routes, longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable(Vec<Route>);

impl RouteTable {
    /// Builds the table.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        Self(routes)
    }

    /// The route `path` falls under, with the rest of the path.
    pub fn find<'p>(&self, path: &'p str) -> Option<(&Route, &'p str)> {
        self.0
            .iter()
            .find_map(|r| r.strip(path).map(|rest| (r, rest)))
    }

    /// Every route.
    pub fn all(&self) -> &[Route] {
        &self.0
    }

    /// The route whose well-known documents are also served at the root: the
    /// only one, or the named default.
    pub fn root(&self, default: Option<&str>) -> Option<&Route> {
        match default {
            Some(p) => self.0.iter().find(|r| r.path == p),
            None if self.0.len() == 1 => self.0.first(),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_host_keeps_only_a_port_that_is_not_the_default() {
        let host = |u: &str| upstream_host(&url::Url::parse(u).unwrap()).unwrap();
        assert_eq!(host("http://127.0.0.1:9001/a"), "127.0.0.1:9001");
        assert_eq!(host("http://agent.example/"), "agent.example");
        assert_eq!(host("https://agent.example:443"), "agent.example");
        assert_eq!(host("https://agent.example:8443"), "agent.example:8443");
        assert_eq!(host("http://[::1]:8080"), "[::1]:8080");
    }
}
