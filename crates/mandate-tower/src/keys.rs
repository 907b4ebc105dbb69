//! Key sources: a fixed set (tests, in-process issuers) and HTTP discovery
//! (RFC 8414 metadata, then `jwks_uri`), cached per issuer and refreshed on an
//! unknown `kid` at most once a minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mandate_jose::JwkSet;

use crate::token::KeySource;

/// Fixed keys per issuer.
#[derive(Debug, Default)]
pub struct StaticKeys(pub HashMap<String, Arc<JwkSet>>);

#[async_trait]
impl KeySource for StaticKeys {
    async fn keys(&self, issuer: &str, _refresh: bool) -> Result<Arc<JwkSet>, String> {
        self.0
            .get(issuer)
            .cloned()
            .ok_or_else(|| format!("no keys for {issuer}"))
    }
}

/// Shortest interval between two fetches for one issuer.
const MIN_REFRESH: Duration = Duration::from_secs(60);
/// How long fetched keys are used before fetching again anyway.
const MAX_AGE: Duration = Duration::from_secs(300);
/// Largest metadata or JWKS document read.
const MAX_DOCUMENT: usize = 256 * 1024;

struct Cached {
    keys: Arc<JwkSet>,
    fetched: Instant,
}

/// Keys discovered over HTTP from each issuer's RFC 8414 metadata.
pub struct HttpKeys {
    http: reqwest::Client,
    cache: tokio::sync::Mutex<HashMap<String, Cached>>,
    last_attempt: Mutex<HashMap<String, Instant>>,
}

impl HttpKeys {
    /// A key source with a 5-second timeout and redirects off.
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            cache: tokio::sync::Mutex::new(HashMap::new()),
            last_attempt: Mutex::new(HashMap::new()),
        })
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{url}: {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(format!("{url}: document too large"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn fetch(&self, issuer: &str) -> Result<JwkSet, String> {
        let metadata_url = format!(
            "{}/.well-known/oauth-authorization-server",
            issuer.trim_end_matches('/')
        );
        let metadata: serde_json::Value = serde_json::from_slice(&self.get(&metadata_url).await?)
            .map_err(|e| format!("{metadata_url}: {e}"))?;
        let field = |name| metadata.get(name).and_then(serde_json::Value::as_str);
        if field("issuer") != Some(issuer) {
            return Err(format!("{metadata_url}: issuer does not match"));
        }
        let jwks_uri = field("jwks_uri").ok_or_else(|| format!("{metadata_url}: no jwks_uri"))?;
        JwkSet::parse(&self.get(jwks_uri).await?).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl KeySource for HttpKeys {
    async fn keys(&self, issuer: &str, refresh: bool) -> Result<Arc<JwkSet>, String> {
        let mut cache = self.cache.lock().await;
        let stale = cache
            .get(issuer)
            .is_none_or(|c| c.fetched.elapsed() > MAX_AGE);
        let may_fetch = self
            .last_attempt
            .lock()
            .map(|m| m.get(issuer).is_none_or(|t| t.elapsed() >= MIN_REFRESH))
            .unwrap_or(false);
        if (stale || refresh) && may_fetch {
            if let Ok(mut m) = self.last_attempt.lock() {
                m.insert(issuer.to_owned(), Instant::now());
            }
            match self.fetch(issuer).await {
                Ok(keys) => {
                    cache.insert(
                        issuer.to_owned(),
                        Cached {
                            keys: Arc::new(keys),
                            fetched: Instant::now(),
                        },
                    );
                }
                Err(e) => tracing::warn!(%issuer, error = %e, "fetching issuer keys failed"),
            }
        }
        cache
            .get(issuer)
            .map(|c| Arc::clone(&c.keys))
            .ok_or_else(|| format!("no keys for {issuer}"))
    }
}
