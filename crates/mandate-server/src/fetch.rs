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
