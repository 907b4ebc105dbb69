//! [`TokenSource`]: the reqwest adapter around [`crate::request`]. It finds
//! the token endpoint, sends token requests with client authentication and
//! DPoP proofs, retries once when the server asks for a nonce, and keeps
//! tokens in the single-flight cache.

use std::sync::Arc;
use std::time::Duration;

use mandate_types::{Clock, SystemClock, UnixTime};
use serde::Deserialize;
use url::Url;

use crate::cache::TokenCache;
use crate::credentials::{parse_http_url, ClientCredentials, Endpoint};
use crate::dpop::{DpopKey, NonceCache};
use crate::request::{
    is_nonce_error, parse_token_response, token_request, Exchange, Grant, MAX_RESPONSE_BYTES,
};
use crate::token::{digest, AccessToken, TokenKey, TokenKind};
use crate::Error;

/// Default time before expiry at which a cached token is replaced.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// Timeout of the default HTTP client, per request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Gets, caches and exchanges an agent's access tokens. Cheap to clone:
/// clones share the cache, the nonces and the DPoP key.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    credentials: ClientCredentials,
    dpop: Option<DpopKey>,
    nonces: NonceCache,
    cache: TokenCache,
    clock: Arc<dyn Clock>,
    margin: i64,
    token_endpoint: tokio::sync::OnceCell<Url>,
}

/// Configures a [`TokenSource`].
pub struct TokenSourceBuilder {
    credentials: ClientCredentials,
    dpop: Option<DpopKey>,
    http: Option<reqwest::Client>,
    clock: Arc<dyn Clock>,
    margin: Duration,
}

impl TokenSourceBuilder {
    /// Binds every token to `key` (RFC 9449). Recommended: a bound token is
    /// useless without the key.
    pub fn dpop(mut self, key: DpopKey) -> Self {
        self.dpop = Some(key);
        self
    }

    /// The HTTP client to use. The default has no redirects (a token request
    /// is never re-sent elsewhere) and a 30 s timeout.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The clock for `iat`, assertion expiry and cache freshness.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long before expiry a cached token is replaced (default 30 s; at
    /// most half a token's lifetime is used).
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The source.
    pub fn build(self) -> Result<TokenSource, Error> {
        let http = match self.http {
            Some(h) => h,
            None => default_http()?,
        };
        Ok(TokenSource {
            inner: Arc::new(Inner {
                http,
                credentials: self.credentials,
                dpop: self.dpop,
                nonces: NonceCache::default(),
                cache: TokenCache::default(),
                clock: self.clock,
                margin: i64::try_from(self.margin.as_secs()).unwrap_or(i64::MAX),
                token_endpoint: tokio::sync::OnceCell::new(),
            }),
        })
    }
}

/// A reqwest client with no redirects and bounded waits.
pub(crate) fn default_http() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(DEFAULT_TIMEOUT)
        .build()
        .map_err(|e| Error::transport("client setup", e))
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    token_endpoint: String,
}

impl TokenSource {
    /// Starts configuring a source for `credentials`.
    pub fn builder(credentials: ClientCredentials) -> TokenSourceBuilder {
        TokenSourceBuilder {
            credentials,
            dpop: None,
            http: None,
            clock: Arc::new(SystemClock),
            margin: DEFAULT_REFRESH_MARGIN,
        }
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        self.inner.credentials.client_id()
    }

    /// The DPoP key tokens are bound to, if any.
    pub fn dpop_key(&self) -> Option<&DpopKey> {
        self.inner.dpop.as_ref()
    }

    /// The server nonces seen so far, per origin.
    pub fn nonces(&self) -> &NonceCache {
        &self.inner.nonces
    }

    /// The HTTP client.
    pub fn http_client(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn now(&self) -> UnixTime {
        self.inner.clock.now()
    }

    /// A token of the client's own (`client_credentials`) for `resource`
    /// with `scope`; from the cache while it is fresh.
    pub async fn client_credentials(
        &self,
        resource: Option<&str>,
        scope: Option<&str>,
    ) -> Result<AccessToken, Error> {
        let key = TokenKey::new(resource, scope, TokenKind::ClientCredentials);
        let grant = Grant::ClientCredentials {
            resource: resource.map(str::to_owned),
            scope: key.scope.clone(),
        };
        self.cached(&key, grant).await
    }

    /// A token for a sub-agent's call, exchanged from `exchange`'s subject
    /// token (RFC 8693); from the cache while it is fresh. The server never
    /// makes it wider than the subject token: asking for more is
    /// `invalid_scope` (see [`Error::is_oauth`]).
    pub async fn exchange(&self, exchange: Exchange) -> Result<AccessToken, Error> {
        let key = TokenKey::new(
            exchange.resource.as_deref(),
            exchange.scope.as_deref(),
            TokenKind::Exchange {
                subject: digest(&exchange.subject_token),
                actor: exchange.actor_token.as_deref().map(digest),
                biscuit: exchange.biscuit,
            },
        );
        self.cached(&key, Grant::Exchange(exchange)).await
    }

    /// Forgets the cached token for `key` (after a resource server rejected
    /// it, for instance).
    pub async fn invalidate(&self, key: &TokenKey) {
        self.inner.cache.invalidate(key).await;
    }

    async fn cached(&self, key: &TokenKey, grant: Grant) -> Result<AccessToken, Error> {
        let margin = self.inner.margin;
        self.inner
            .cache
            .get_or_fetch(key, || self.now(), margin, || self.fetch(&grant))
            .await
    }

    /// One token request, not cached: with a nonce retry when the server
    /// asks for one (RFC 9449 §8), so at most two requests.
    pub async fn fetch(&self, grant: &Grant) -> Result<AccessToken, Error> {
        const WHAT: &str = "token endpoint";
        let endpoint = self.token_endpoint().await?;
        let mut retried = false;
        loop {
            let now = self.now();
            let sent_nonce = self.inner.nonces.get(&endpoint);
            let proof = match &self.inner.dpop {
                Some(key) => {
                    Some(key.proof("POST", &endpoint, now, sent_nonce.as_deref(), None)?)
                }
                None => None,
            };
            // A new assertion each time: its jti is spent even on a refusal.
            let request = token_request(
                &endpoint,
                &self.inner.credentials,
                grant,
                proof.as_deref(),
                now,
            )?;
            let request =
                reqwest::Request::try_from(request).map_err(|e| Error::transport(WHAT, e))?;
            let response = self
                .inner
                .http
                .execute(request)
                .await
                .map_err(|e| Error::transport(WHAT, e))?;
            let status = response.status();
            let offered = self.inner.nonces.update_from(&endpoint, response.headers());
            let body = read_limited(response, WHAT).await?;
            let fresh_nonce = offered.is_some() && offered != sent_nonce;
            if proof.is_some() && !retried && fresh_nonce && is_nonce_error(status, &body) {
                retried = true;
                continue;
            }
            return parse_token_response(status, &body, proof.is_some(), now);
        }
    }

    /// The token endpoint: configured, or from the issuer's RFC 8414
    /// metadata (fetched once; a failure is not remembered).
    pub async fn token_endpoint(&self) -> Result<Url, Error> {
        match &self.inner.credentials.endpoint {
            Endpoint::TokenUrl(u) => Ok(u.clone()),
            Endpoint::Issuer(issuer) => self
                .inner
                .token_endpoint
                .get_or_try_init(|| self.discover(issuer))
                .await
                .cloned(),
        }
    }

    async fn discover(&self, issuer: &Url) -> Result<Url, Error> {
        const WHAT: &str = "authorization server metadata";
        let response = self
            .inner
            .http
            .get(well_known(issuer))
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| Error::transport(WHAT, e))?;
        let status = response.status();
        let body = read_limited(response, WHAT).await?;
        if !status.is_success() {
            return Err(Error::response(WHAT, format!("status {status}")));
        }
        let meta: Metadata = serde_json::from_slice(&body)
            .map_err(|e| Error::response(WHAT, format!("not RFC 8414 metadata: {e}")))?;
        // RFC 8414 §3.3: the metadata must name the issuer it was fetched for.
        if meta.issuer.trim_end_matches('/') != issuer.as_str().trim_end_matches('/') {
            return Err(Error::response(WHAT, "issuer does not match"));
        }
        parse_http_url(&meta.token_endpoint, "token_endpoint")
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("client_id", &self.client_id())
            .field("dpop", &self.inner.dpop)
            .finish_non_exhaustive()
    }
}

/// RFC 8414 §3.1: the well-known segment goes between host and path.
fn well_known(issuer: &Url) -> Url {
    let mut u = issuer.clone();
    let path = issuer.path().trim_end_matches('/').to_owned();
    u.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    u
}

/// Reads a body of at most [`MAX_RESPONSE_BYTES`].
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    what: &'static str,
) -> Result<Vec<u8>, Error> {
    let too_big = || Error::response(what, format!("answer over {MAX_RESPONSE_BYTES} bytes"));
    if response
        .content_length()
        .is_some_and(|l| l > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Error::transport(what, e))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_goes_before_the_issuer_path() {
        let u = |s| well_known(&Url::parse(s).unwrap()).to_string();
        assert_eq!(
            u("https://as.example"),
            "https://as.example/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            u("https://as.example/tenant/"),
            "https://as.example/.well-known/oauth-authorization-server/tenant"
        );
    }
}
