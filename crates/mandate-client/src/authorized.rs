//! [`AuthorizedClient`]: an HTTP client that authorizes every request it
//! sends. For each request it finds the token target (audience and scope)
//! from the URL, takes a token from the [`TokenSource`] (cached, or fetched
//! once for all concurrent callers), attaches `Authorization: Bearer` or
//! `Authorization: DPoP` with a proof for exactly that request, and retries
//! once when the resource server asks for a DPoP nonce.
//!
//! Why a wrapper and not `reqwest-middleware`: the job needs the request's
//! body to be re-sendable for the nonce retry and the token target to be
//! chosen per URL, both of which a wrapper does in a few lines over plain
//! reqwest; a middleware stack would add a dependency (and its `anyhow`
//! error type) for no extra capability. The wrapper takes and returns plain
//! `reqwest::Request`/`Response`, so it composes with anything built on them.
//!
//! Why targets are explicit: a token goes only to URLs registered with
//! [`AuthorizedClient::target`]. A request anywhere else fails with
//! [`Error::NoTarget`] before anything is sent, so a mistyped URL or a
//! redirect cannot hand a token to a stranger. (The default HTTP client does
//! not follow redirects at all.)

use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION};
use url::Url;

use crate::dpop::{asks_for_nonce, htu};
use crate::request::Exchange;
use crate::source::TokenSource;
use crate::token::{AccessToken, TokenType};
use crate::Error;

/// Where tokens may go, and which token each place gets.
#[derive(Debug, Clone)]
pub struct Target {
    base: Url,
    resource: String,
    scope: Option<String>,
}

impl Target {
    /// Whether `url` is under this target: same origin, and a path equal to
    /// the base path or below it at a `/`.
    fn matches(&self, url: &Url) -> bool {
        if url.origin() != self.base.origin() {
            return false;
        }
        let base = self.base.path().trim_end_matches('/');
        let path = url.path();
        base.is_empty()
            || path == base
            || path
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The audience tokens for this target carry.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The scope asked for, if any.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }
}

/// An HTTP client that attaches the right token, and a DPoP proof, to each
/// request. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuthorizedClient {
    http: reqwest::Client,
    source: TokenSource,
    targets: Arc<Vec<Target>>,
}

impl AuthorizedClient {
    /// A client that gets its tokens from `source` and sends with the
    /// source's HTTP client.
    pub fn new(source: TokenSource) -> Self {
        Self {
            http: source.http_client().clone(),
            source,
            targets: Arc::new(Vec::new()),
        }
    }

    /// Sends with `http` instead of the source's client.
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// Requests to `base_url` and below get tokens for `resource` with
    /// `scope` (`None`: whatever the server grants by default). The longest
    /// matching base wins.
    pub fn target(
        mut self,
        base_url: &str,
        resource: &str,
        scope: Option<&str>,
    ) -> Result<Self, Error> {
        let base = crate::credentials::parse_http_url(base_url, "target")?;
        Arc::make_mut(&mut self.targets).push(Target {
            base,
            resource: resource.to_owned(),
            scope: scope.map(str::to_owned),
        });
        Ok(self)
    }

    /// The token source.
    pub fn source(&self) -> &TokenSource {
        &self.source
    }

    /// Starts a request with the underlying client; send it with
    /// [`AuthorizedClient::send`].
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http.request(method, url)
    }

    /// `GET url`, to send with [`AuthorizedClient::send`].
    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::GET, url)
    }

    /// `POST url`, to send with [`AuthorizedClient::send`].
    pub fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, url)
    }

    /// The target for `url`, if any.
    pub fn target_for(&self, url: &Url) -> Option<&Target> {
        self.targets
            .iter()
            .filter(|t| t.matches(url))
            .max_by_key(|t| t.base.path().len())
    }

    /// Sends `request` with a token of the agent's own (client credentials).
    /// Answers from the resource server, refusals included, come back as
    /// responses; an `Err` means no token could be had or nothing could be
    /// sent.
    pub async fn send(&self, request: reqwest::Request) -> Result<reqwest::Response, Error> {
        self.send_as(request, None).await
    }

    /// Acts for the holder of `subject_token`: each request's token is
    /// exchanged from it (RFC 8693) for the request's target, so the
    /// sub-agent's call carries no more than `subject_token` did and names
    /// this agent in its `act` chain.
    pub fn on_behalf_of(&self, subject_token: impl Into<String>) -> OnBehalfOf<'_> {
        OnBehalfOf {
            client: self,
            subject_token: subject_token.into(),
        }
    }

    async fn send_as(
        &self,
        request: reqwest::Request,
        subject_token: Option<&str>,
    ) -> Result<reqwest::Response, Error> {
        let target = self
            .target_for(request.url())
            .ok_or_else(|| Error::NoTarget(htu(request.url())))?;
        let token = match subject_token {
            None => {
                self.source
                    .client_credentials(Some(&target.resource), target.scope.as_deref())
                    .await?
            }
            Some(subject) => {
                let mut x = Exchange::new(subject).resource(target.resource.clone());
                if let Some(s) = &target.scope {
                    x = x.scope(s.clone());
                }
                self.source.exchange(x).await?
            }
        };
        // Cloned before sending: a streaming body cannot be, and then there
        // is no retry.
        let again = request.try_clone();
        let (response, sent_nonce) = self.attempt(request, &token).await?;
        if token.token_type() == TokenType::DPoP
            && response.status() == reqwest::StatusCode::UNAUTHORIZED
            && asks_for_nonce(response.headers())
        {
            let offered = response
                .headers()
                .get("dpop-nonce")
                .and_then(|v| v.to_str().ok());
            if let (Some(retry), true) =
                (again, offered.is_some() && offered != sent_nonce.as_deref())
            {
                return Ok(self.attempt(retry, &token).await?.0);
            }
        }
        Ok(response)
    }

    /// Sends once with `token`; returns the response and the nonce the proof
    /// carried.
    async fn attempt(
        &self,
        mut request: reqwest::Request,
        token: &AccessToken,
    ) -> Result<(reqwest::Response, Option<String>), Error> {
        let url = request.url().clone();
        let mut nonce = None;
        let value = match token.token_type() {
            TokenType::Bearer => format!("Bearer {}", token.secret()),
            TokenType::DPoP => {
                let key = self
                    .source
                    .dpop_key()
                    .ok_or_else(|| Error::Config("a DPoP-bound token but no DPoP key".into()))?;
                nonce = self.source.nonces().get(&url);
                let proof = key.proof(
                    request.method().as_str(),
                    &url,
                    self.source.now(),
                    nonce.as_deref(),
                    Some(token.secret()),
                )?;
                let proof = HeaderValue::from_str(&proof)
                    .map_err(|_| Error::Signing("proof is not a header value".into()))?;
                request.headers_mut().insert("dpop", proof);
                format!("DPoP {}", token.secret())
            }
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| Error::response("token endpoint", "the token is not a header value"))?;
        value.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, value);
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| Error::transport("resource", e))?;
        self.source.nonces().update_from(&url, response.headers());
        Ok((response, nonce))
    }
}

/// An [`AuthorizedClient`] acting for another token's holder; see
/// [`AuthorizedClient::on_behalf_of`].
pub struct OnBehalfOf<'a> {
    client: &'a AuthorizedClient,
    subject_token: String,
}

impl OnBehalfOf<'_> {
    /// Sends `request` with a token exchanged from the subject token.
    pub async fn send(&self, request: reqwest::Request) -> Result<reqwest::Response, Error> {
        self.client
            .send_as(request, Some(&self.subject_token))
            .await
    }
}

impl std::fmt::Debug for OnBehalfOf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnBehalfOf")
            .field("client", &self.client)
            .field("subject_token", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(base: &str) -> Target {
        Target {
            base: Url::parse(base).unwrap(),
            resource: "r".into(),
            scope: None,
        }
    }

    #[test]
    fn targets_match_by_origin_and_path_segment() {
        let t = target("https://gw.example/agents/pay");
        let m = |u: &str| t.matches(&Url::parse(u).unwrap());
        assert!(m("https://gw.example/agents/pay"));
        assert!(m("https://gw.example/agents/pay/quote?x=1"));
        assert!(!m("https://gw.example/agents/payroll"));
        assert!(!m("https://gw.example/agents"));
        assert!(!m("http://gw.example/agents/pay"), "scheme");
        assert!(!m("https://gw.example:8443/agents/pay"), "port");
        assert!(!m("https://evil.example/agents/pay"), "host");
        let root = target("https://gw.example/");
        assert!(root.matches(&Url::parse("https://gw.example/anything").unwrap()));
    }
}
