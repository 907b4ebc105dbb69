//! Outbound fetch of client `jwks_uri` documents: short timeout, no redirects,
//! a size limit, and a small cache so a busy client does not cost a fetch per
//! token. Failures are not cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mandate_core::JwksFetcher;
use mandate_jose::JwkSet;

/// Largest JWK Set document we read.
const MAX_JWKS_BYTES: usize = 64 * 1024;
/// How long a fetched set is reused.
const CACHE_FOR: Duration = Duration::from_secs(300);
/// Most cached sets.
const MAX_CACHED: usize = 1024;

/// `JwksFetcher` over reqwest.
pub struct HttpJwksFetcher {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (Instant, JwkSet)>>,
}

impl HttpJwksFetcher {
    /// A fetcher with a 5-second timeout and redirects off.
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent("mandate")
                .build()?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, uri: &str) -> Option<JwkSet> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(uri)
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, set)| set.clone())
    }
}

#[async_trait]
impl JwksFetcher for HttpJwksFetcher {
    async fn fetch_jwks(&self, uri: &str) -> Result<JwkSet, String> {
        if let Some(set) = self.cached(uri) {
            return Ok(set);
        }
        let mut response = self.http.get(uri).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{uri} answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("{uri}: JWK Set larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let set = JwkSet::parse(&body).map_err(|e| e.to_string())?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(uri.to_owned(), (Instant::now(), set.clone()));
        }
        Ok(set)
    }
}

/// Client ID Metadata Documents over HTTP, with SSRF guards: https only (or
/// http on loopback when the named danger setting is on), addresses checked
/// after resolution and the connection pinned to the checked address (no DNS
/// rebinding), no redirects, 5 KB at most, a 3-second timeout. Cached only as
/// long as `Cache-Control: max-age` says (at most an hour); failures are never
/// cached.
pub struct HttpClientDocuments {
    insecure_http_loopback: bool,
    allowlist: Vec<String>,
    cache: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

/// Largest client metadata document.
const MAX_CLIENT_DOCUMENT: usize = 5 * 1024;

impl HttpClientDocuments {
    /// A fetcher. `allowlist` names hosts that may resolve to private
    /// addresses; `insecure_http_loopback` lets tests serve documents over
    /// http on loopback.
    pub fn new(allowlist: Vec<String>, insecure_http_loopback: bool) -> Self {
        Self {
            insecure_http_loopback,
            allowlist,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

/// Whether an address is on the public internet (not private, loopback,
/// link-local, shared, documentation, multicast, reserved...).
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..20).contains(&o[1]))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let cc = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    if cc
        .split(',')
        .any(|d| matches!(d.trim(), "no-store" | "no-cache" | "private"))
    {
        return None;
    }
    cc.split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(3600)))
}

#[async_trait]
impl mandate_core::documents::ClientDocuments for HttpClientDocuments {
    fn handles(&self, client_id: &str) -> bool {
        let Ok(u) = url::Url::parse(client_id) else {
            return false;
        };
        match u.scheme() {
            "https" => u.host_str().is_some(),
            "http" => {
                self.insecure_http_loopback
                    && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
            }
            _ => false,
        }
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((until, doc)) = cache.get(url) {
                if Instant::now() < *until {
                    return Ok(doc.clone());
                }
            }
        }
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        let (allowlist, insecure) = (&self.allowlist, self.insecure_http_loopback);
        let private_ok = |host: &str, addrs: &[std::net::SocketAddr]| {
            allowlist.iter().any(|h| h == host)
                || (insecure && addrs.iter().all(|a| a.ip().is_loopback()))
        };
        let http = pinned_client(&parsed, &private_ok, Duration::from_secs(3)).await?;
        let resp = http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_redirection() {
            return Err("redirects are refused".into());
        }
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        let keep_for = max_age(resp.headers());
        let body = read_limited(resp, MAX_CLIENT_DOCUMENT).await?;
        if let (Some(d), Ok(mut cache)) = (keep_for, self.cache.lock()) {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(url.to_owned(), (Instant::now() + d, body.clone()));
        }
        Ok(body)
    }
}

/// An HTTP client pinned to one checked address of `url`'s host: a public
/// one, or any when `private_ok(host, addresses)` says so. Pinning means
/// the connection goes to the address that was checked (no DNS
/// rebinding). No redirects; `timeout` for the whole request.
async fn pinned_client(
    url: &url::Url,
    private_ok: &(dyn Fn(&str, &[std::net::SocketAddr]) -> bool + Sync),
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let host = url.host_str().ok_or("no host")?.to_owned();
    let port = url.port_or_known_default().ok_or("no port")?;
    let lookup = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addrs: Vec<std::net::SocketAddr> = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::lookup_host((lookup.as_str(), port)),
    )
    .await
    .map_err(|_| "name resolution timed out".to_owned())?
    .map_err(|e| e.to_string())?
    .collect();
    let allowed_private = private_ok(&host, &addrs);
    let addr = addrs
        .into_iter()
        .find(|a| allowed_private || is_public(a.ip()))
        .ok_or_else(|| format!("{host} resolves to no public address"))?;
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("mandate")
        .resolve(&lookup, addr)
        .build()
        .map_err(|e| e.to_string())
}

/// The body, refused past `max` bytes.
async fn read_limited(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > max {
            return Err(format!("larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Largest discovery document, JWK Set or token response from an upstream
/// OpenID Provider.
const MAX_OIDC_DOCUMENT: usize = 64 * 1024;

/// Upstream OpenID Provider fetches (discovery, JWK Set, token endpoint)
/// with the same guards as client metadata documents: https only (http on
/// loopback only with `login.insecure_allow_http_oidc_on_loopback`), the
/// address checked after resolution and pinned, no redirects, 64 KB at
/// most, a 5-second timeout. Private addresses are allowed only for the
/// hosts named in the configuration (issuer and endpoint overrides); hosts
/// learnt from discovery must be public. Nothing is logged here: bodies
/// hold codes and tokens.
pub struct HttpOidcFetcher {
    insecure_http_loopback: bool,
    configured_hosts: Vec<String>,
}

impl HttpOidcFetcher {
    /// A fetcher for the providers whose configured URLs are `urls`.
    pub fn new<'a>(urls: impl IntoIterator<Item = &'a str>, insecure_http_loopback: bool) -> Self {
        let configured_hosts = urls
            .into_iter()
            .filter_map(|u| url::Url::parse(u).ok())
            .filter_map(|u| u.host_str().map(str::to_owned))
            .collect();
        Self {
            insecure_http_loopback,
            configured_hosts,
        }
    }

    async fn client(&self, raw: &str) -> Result<reqwest::Client, String> {
        let url = url::Url::parse(raw).map_err(|e| e.to_string())?;
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        match url.scheme() {
            "https" => {}
            "http" if self.insecure_http_loopback && loopback => {}
            _ => return Err("only https URLs are fetched".into()),
        }
        let insecure = self.insecure_http_loopback;
        let hosts = &self.configured_hosts;
        let private_ok = |host: &str, addrs: &[std::net::SocketAddr]| {
            hosts.iter().any(|h| h == host)
                || (insecure && addrs.iter().all(|a| a.ip().is_loopback()))
        };
        pinned_client(&url, &private_ok, Duration::from_secs(5)).await
    }
}

#[async_trait]
impl mandate_core::upstream_login::OidcFetcher for HttpOidcFetcher {
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let resp = self
            .client(url)
            .await?
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        read_limited(resp, MAX_OIDC_DOCUMENT).await
    }

    async fn post_form(
        &self,
        url: &str,
        authorization: &mandate_types::ClientSecret,
        body: &str,
    ) -> Result<(u16, Vec<u8>), String> {
        let resp = self
            .client(url)
            .await?
            .post(url)
            .header("accept", "application/json")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", authorization.expose())
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = resp.status().as_u16();
        Ok((status, read_limited(resp, MAX_OIDC_DOCUMENT).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::is_public;

    #[test]
    fn special_addresses_are_not_public() {
        for ip in [
            "10.1.2.3",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "240.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "1.1.1.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
