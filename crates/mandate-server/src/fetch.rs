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
        let host = parsed.host_str().ok_or("no host")?.to_owned();
        let port = parsed.port_or_known_default().ok_or("no port")?;
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
        let allowed_private = self.allowlist.iter().any(|h| h == &host)
            || (self.insecure_http_loopback && addrs.iter().all(|a| a.ip().is_loopback()));
        let addr = addrs
            .into_iter()
            .find(|a| allowed_private || is_public(a.ip()))
            .ok_or_else(|| format!("{host} resolves to no public address"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&lookup, addr)
            .build()
            .map_err(|e| e.to_string())?;
        let mut resp = http
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
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_CLIENT_DOCUMENT {
                return Err(format!("larger than {MAX_CLIENT_DOCUMENT} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        if let (Some(d), Ok(mut cache)) = (keep_for, self.cache.lock()) {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(url.to_owned(), (Instant::now() + d, body.clone()));
        }
        Ok(body)
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
