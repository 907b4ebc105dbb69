//! Sign-in through an upstream OpenID Provider (OpenID Connect Core 1.0,
//! authorization code flow, with PKCE S256 and a nonce).
//!
//! The flow, as states:
//!
//! 1. [`UpstreamLogins::begin`]: a pending authorization request (the
//!    sign-in page's `request` and CSRF token, checked by the caller) becomes
//!    an [`UpstreamLoginState`] (random `state`, `nonce` and PKCE verifier,
//!    the pending id, the hash of the browser's binding cookie), stored in
//!    the ephemeral table under the SHA-256 of `state` for
//!    [`LOGIN_STATE_TTL`], and the browser is sent to the provider.
//! 2. [`UpstreamLogins::finish`]: the callback's `state` takes that record
//!    (single use, whatever happens next), must be this browser's and this
//!    provider's (constant-time compares), then the code is exchanged
//!    (`client_secret_basic`, with the verifier) and the ID token verified
//!    by [`verify_id_token`] (§3.1.3.7: signature with the provider's JWKS
//!    and `mandate-jose`'s algorithm allowlist, `iss`, `aud`, `azp`, `exp`,
//!    `iat`, `nonce`). The person becomes the local [`User`] linked to
//!    (issuer, `sub`), created on first sign-in.
//!
//! The caller then continues exactly as after a password sign-in: session
//! cookie, consent. Errors are shown on a page, never redirected to the
//! client, and every outcome is audited (`login.oidc.succeeded`,
//! `login.oidc.failed`, with the provider id and the reason).
//!
//! What is pure here (no I/O): [`ProviderMetadata::from_discovery`],
//! [`authorization_url`], [`token_request`], [`parse_token_response`] and
//! [`verify_id_token`]. The fetches go through [`OidcFetcher`], implemented
//! over HTTP in `mandate-server` (SSRF guarded, size and time limited).
//!
//! A local user is never merged with a linked one: the link is the user id,
//! derived from (issuer, `sub`), and the username a provider suggests is
//! used only if it is free (else `name@provider`, then numbered).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use mandate_audit::Outcome;
use mandate_jose::{JoseError, JwkSet, PublicJwk, UnverifiedJwt};
use mandate_types::{random_token, ClientSecret, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::authority::Authority;
use crate::authorize::{digest, with_query, PendingLogin};
use crate::client_auth::Audience;
use crate::form::FormParams;
use crate::model::{UpstreamLink, User};

/// How long a sign-in at a provider may take, seconds.
pub const LOGIN_STATE_TTL: i64 = 10 * 60;
/// How long discovery documents are reused, seconds.
const METADATA_CACHE_FOR: i64 = 3600;
/// How long a provider's JWK Set is reused, seconds.
const JWKS_CACHE_FOR: i64 = 3600;
/// An unknown `kid` refetches the JWK Set at most this often, seconds.
pub const JWKS_REFETCH_EVERY: i64 = 60;
/// The oldest ID token accepted (`iat`), seconds before now.
const MAX_ID_TOKEN_AGE: i64 = LOGIN_STATE_TTL;
/// Longest `sub` accepted (OpenID Connect Core §2).
const MAX_SUB_LEN: usize = 255;
/// The default `scope` of the authorization request.
pub const DEFAULT_SCOPES: &str = "openid email profile";
/// Ephemeral namespace of sign-ins in progress.
const NAMESPACE: &str = "oidc_login";

fn ct_eq(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A configured upstream OpenID Provider (`[[login.oidc]]`).
#[derive(Debug, Clone)]
pub struct UpstreamProvider {
    /// Short name, used in URLs (`/login/oidc/<id>`): `[a-z0-9-]`.
    pub id: String,
    /// The sign-in button's label.
    pub name: String,
    /// The issuer identifier, compared exactly with `iss`.
    pub issuer: String,
    /// This server's client id at the provider.
    pub client_id: String,
    /// This server's client secret at the provider (`client_secret_basic`).
    pub client_secret: Arc<ClientSecret>,
    /// The `scope` asked for; holds `openid`.
    pub scopes: String,
    /// Overrides discovery when set.
    pub authorization_endpoint: Option<String>,
    /// Overrides discovery when set.
    pub token_endpoint: Option<String>,
    /// Overrides discovery when set.
    pub jwks_uri: Option<String>,
    /// The claim that names the local user; default `preferred_username`,
    /// else `email`, else `sub`.
    pub claim_username: Option<String>,
}

impl UpstreamProvider {
    /// `<issuer>/.well-known/openid-configuration` (OpenID Connect Discovery §4).
    pub fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        )
    }
}

/// Outbound HTTP for upstream sign-in. The adapter (in `mandate-server`)
/// owns SSRF guards, timeouts and size limits; nothing here is logged.
#[async_trait]
pub trait OidcFetcher: Send + Sync + 'static {
    /// GETs a JSON document (discovery, JWK Set); the body of a 2xx answer.
    async fn get(&self, url: &str) -> Result<Vec<u8>, String>;
    /// POSTs a form to a token endpoint with this `Authorization` header
    /// value (a credential: never log it). Returns status and body.
    async fn post_form(
        &self,
        url: &str,
        authorization: &ClientSecret,
        body: &str,
    ) -> Result<(u16, Vec<u8>), String>;
}

/// Why an upstream sign-in failed. The page says little; the audit trail
/// and the log get the reason ([`std::fmt::Display`], never a secret).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamLoginError {
    /// No provider has this id.
    #[error("unknown provider")]
    UnknownProvider,
    /// The callback has no `state`, or one that is unknown, expired or
    /// already used.
    #[error("state unknown, expired or already used")]
    UnknownState,
    /// The `state` belongs to another browser or another provider.
    #[error("state issued to another browser or provider")]
    StateMismatch,
    /// The pending authorization request is gone.
    #[error("the authorization request expired")]
    PendingGone,
    /// The provider answered the callback with an error.
    #[error("the provider refused: {0}")]
    ProviderRefused(String),
    /// The callback has no code.
    #[error("the callback has no code")]
    MissingCode,
    /// The provider's metadata could not be fetched or is unusable.
    #[error("provider metadata: {0}")]
    Metadata(String),
    /// The token endpoint failed or refused the code.
    #[error("token endpoint: {0}")]
    TokenEndpoint(String),
    /// The provider's keys could not be fetched.
    #[error("provider keys: {0}")]
    Keys(String),
    /// The ID token failed verification.
    #[error("ID token: {0}")]
    IdToken(#[from] IdTokenError),
    /// The linked local user is disabled.
    #[error("the linked user is disabled")]
    UserDisabled,
    /// No free local username could be found.
    #[error("no free username")]
    NoUsername,
    /// Storage or the audit trail failed.
    #[error("internal: {0}")]
    Internal(#[from] crate::Error),
}

/// Why an ID token was refused (OpenID Connect Core §3.1.3.7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    /// Not a compact JWS, too long, or claims that are not JSON.
    #[error("malformed")]
    Malformed,
    /// `alg` is not EdDSA, ES256 or RS256.
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// No key of the provider has its `kid`.
    #[error("unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `iss` is not the provider's issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not hold this server's client id.
    #[error("wrong audience")]
    WrongAudience,
    /// Several audiences and no `azp`, or an `azp` that is not this server.
    #[error("wrong or missing azp")]
    WrongAuthorizedParty,
    /// `exp` missing or past.
    #[error("expired")]
    Expired,
    /// `iat` missing, in the future or too old.
    #[error("iat missing, in the future or too old")]
    BadIssuedAt,
    /// `nonce` missing or not the one sent.
    #[error("wrong nonce")]
    WrongNonce,
    /// `sub` missing, empty or too long.
    #[error("no usable sub")]
    NoSubject,
}

impl From<JoseError> for IdTokenError {
    fn from(e: JoseError) -> Self {
        match e {
            JoseError::AlgorithmNotAllowed => Self::AlgorithmNotAllowed,
            JoseError::UnknownKey => Self::UnknownKey,
            JoseError::BadSignature => Self::BadSignature,
            _ => Self::Malformed,
        }
    }
}

/// Where a provider's endpoints are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderMetadata {
    /// The issuer (equal to the configured one).
    pub issuer: String,
    /// Where the browser is sent.
    pub authorization_endpoint: String,
    /// Where the code is exchanged.
    pub token_endpoint: String,
    /// The provider's keys.
    pub jwks_uri: String,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    jwks_uri: Option<String>,
    code_challenge_methods_supported: Option<Vec<String>>,
}

impl ProviderMetadata {
    /// The configured overrides alone, if all three are set.
    pub fn from_overrides(provider: &UpstreamProvider) -> Option<Self> {
        Some(Self {
            issuer: provider.issuer.clone(),
            authorization_endpoint: provider.authorization_endpoint.clone()?,
            token_endpoint: provider.token_endpoint.clone()?,
            jwks_uri: provider.jwks_uri.clone()?,
        })
    }

    /// A discovery document with the configured overrides on top. The
    /// document's `issuer` must equal the configured issuer exactly
    /// (OpenID Connect Discovery §4.3), and a provider that lists its PKCE
    /// methods must list `S256`.
    pub fn from_discovery(provider: &UpstreamProvider, document: &[u8]) -> Result<Self, String> {
        let d: Discovery = serde_json::from_slice(document)
            .map_err(|_| "the discovery document is not the expected JSON".to_owned())?;
        if d.issuer != provider.issuer {
            return Err("the discovery document names another issuer".into());
        }
        if d.code_challenge_methods_supported
            .is_some_and(|m| !m.iter().any(|m| m == "S256"))
        {
            return Err("the provider does not support PKCE S256".into());
        }
        let pick = |over: &Option<String>, found: Option<String>, what: &str| {
            over.clone()
                .or(found)
                .ok_or_else(|| format!("the discovery document has no {what}"))
        };
        let authorization_endpoint = pick(
            &provider.authorization_endpoint,
            d.authorization_endpoint,
            "authorization_endpoint",
        )?;
        let token_endpoint = pick(&provider.token_endpoint, d.token_endpoint, "token_endpoint")?;
        let jwks_uri = pick(&provider.jwks_uri, d.jwks_uri, "jwks_uri")?;
        for u in [&authorization_endpoint, &token_endpoint, &jwks_uri] {
            let parsed = url::Url::parse(u).map_err(|_| format!("{u:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "https" | "http") || parsed.fragment().is_some() {
                return Err(format!("{u:?} is not an https URL"));
            }
        }
        Ok(Self {
            issuer: d.issuer,
            authorization_endpoint,
            token_endpoint,
            jwks_uri,
        })
    }
}

/// A sign-in at a provider in progress, stored under the SHA-256 of `state`.
#[derive(Serialize, Deserialize)]
pub struct UpstreamLoginState {
    /// The provider's id.
    pub provider: String,
    /// The `state` sent (compared again in constant time).
    pub state: String,
    /// The `nonce` sent.
    pub nonce: String,
    /// The PKCE verifier.
    pub verifier: String,
    /// SHA-256 of the browser's binding cookie.
    pub binding: String,
    /// The pending authorization request to continue.
    pub pending: String,
    /// The `redirect_uri` sent (the token request repeats it).
    pub redirect_uri: String,
}

impl std::fmt::Debug for UpstreamLoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamLoginState")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl UpstreamLoginState {
    /// Fresh `state`, `nonce` and PKCE verifier for a sign-in at `provider`.
    pub fn new(provider: &str, binding: &str, pending: &str, redirect_uri: String) -> Self {
        Self {
            provider: provider.to_owned(),
            state: random_token(24),
            nonce: random_token(24),
            verifier: random_token(32),
            binding: digest(binding),
            pending: pending.to_owned(),
            redirect_uri,
        }
    }
}

/// The authorization request to the provider (OpenID Connect Core §3.1.2.1).
pub fn authorization_url(
    provider: &UpstreamProvider,
    metadata: &ProviderMetadata,
    login: &UpstreamLoginState,
) -> String {
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(login.verifier.as_bytes()));
    with_query(
        &metadata.authorization_endpoint,
        &[
            ("response_type", "code"),
            ("client_id", &provider.client_id),
            ("redirect_uri", &login.redirect_uri),
            ("scope", &provider.scopes),
            ("state", &login.state),
            ("nonce", &login.nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
}

fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The token request: the `Authorization` header value
/// (`client_secret_basic`, RFC 6749 §2.3.1: both parts form-encoded) and
/// the form body.
pub fn token_request(
    provider: &UpstreamProvider,
    login: &UpstreamLoginState,
    code: &str,
) -> (ClientSecret, String) {
    let basic = format!(
        "{}:{}",
        form_encode(&provider.client_id),
        form_encode(provider.client_secret.expose())
    );
    let header = ClientSecret::new(format!("Basic {}", STANDARD.encode(basic)));
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", &login.redirect_uri)
        .append_pair("code_verifier", &login.verifier)
        .finish();
    (header, body)
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    error: Option<String>,
}

/// The ID token of a token endpoint answer.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<String, UpstreamLoginError> {
    let answer: Option<TokenAnswer> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        let code = answer
            .and_then(|a| a.error)
            .map(|e| sanitize_code(&e))
            .unwrap_or_default();
        return Err(UpstreamLoginError::TokenEndpoint(format!(
            "answered {status} {code}"
        )));
    }
    answer
        .and_then(|a| a.id_token)
        .ok_or_else(|| UpstreamLoginError::TokenEndpoint("the answer has no id_token".into()))
}

/// An OAuth error code from a peer, reduced to what is safe to record.
fn sanitize_code(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}

#[derive(Deserialize)]
struct IdTokenClaims {
    iss: String,
    sub: Option<String>,
    #[serde(default)]
    aud: Audience,
    exp: Option<i64>,
    iat: Option<i64>,
    nonce: Option<String>,
    azp: Option<String>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// Who the provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamIdentity {
    /// The issuer.
    pub issuer: String,
    /// The provider's subject identifier.
    pub subject: String,
    /// The name the provider suggests for the local user.
    pub suggested_username: String,
}

/// What [`verify_id_token`] checks the token against.
#[derive(Debug, Clone, Copy)]
pub struct IdTokenExpectations<'a> {
    /// The provider.
    pub provider: &'a UpstreamProvider,
    /// The nonce sent.
    pub nonce: &'a str,
    /// Now.
    pub now: UnixTime,
    /// Clock skew tolerated, seconds.
    pub leeway: i64,
}

/// OpenID Connect Core §3.1.3.7: the signature with one of `keys` (the
/// algorithm on `mandate-jose`'s allowlist), then `iss`, `aud`, `azp`,
/// `exp`, `iat`, `nonce` and `sub`.
pub fn verify_id_token(
    raw: &str,
    keys: &[PublicJwk],
    expect: &IdTokenExpectations<'_>,
) -> Result<UpstreamIdentity, IdTokenError> {
    let jwt = UnverifiedJwt::parse(raw)?;
    let verified = jwt.verify::<IdTokenClaims>(keys)?;
    let c = verified.claims;
    let p = expect.provider;
    if c.iss != p.issuer {
        return Err(IdTokenError::WrongIssuer);
    }
    if !c.aud.contains_any(&[p.client_id.as_str()]) {
        return Err(IdTokenError::WrongAudience);
    }
    let several = matches!(&c.aud, Audience::Many(v) if v.len() > 1);
    match &c.azp {
        Some(azp) if azp != &p.client_id => return Err(IdTokenError::WrongAuthorizedParty),
        None if several => return Err(IdTokenError::WrongAuthorizedParty),
        _ => {}
    }
    if c.exp.is_none_or(|exp| exp + expect.leeway <= expect.now) {
        return Err(IdTokenError::Expired);
    }
    if c.iat.is_none_or(|iat| {
        iat > expect.now + expect.leeway || iat < expect.now - MAX_ID_TOKEN_AGE - expect.leeway
    }) {
        return Err(IdTokenError::BadIssuedAt);
    }
    if !c.nonce.as_deref().is_some_and(|n| ct_eq(n, expect.nonce)) {
        return Err(IdTokenError::WrongNonce);
    }
    let subject = c
        .sub
        .filter(|s| !s.is_empty() && s.len() <= MAX_SUB_LEN)
        .ok_or(IdTokenError::NoSubject)?;
    let claim = |name: &str| {
        c.other
            .get(name)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let suggested_username = match &p.claim_username {
        Some(name) if name == "sub" => None,
        Some(name) => claim(name),
        None => claim("preferred_username").or_else(|| claim("email")),
    }
    .unwrap_or_else(|| subject.clone());
    Ok(UpstreamIdentity {
        issuer: c.iss,
        subject,
        suggested_username,
    })
}

/// A local username from a provider's suggestion: only `A-Z a-z 0-9 . _ -
/// @`, at most 64 characters (others become `_`).
pub fn local_username(suggested: &str, max: usize) -> String {
    let name: String = suggested
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect();
    if name.is_empty() {
        "user".into()
    } else {
        name
    }
}

/// The local user id linked to (issuer, `sub`): derived, so that the link
/// is found by id and no two identities share a user.
pub fn linked_user_id(issuer: &str, subject: &str) -> String {
    format!("oidc-{}", digest(&format!("{issuer}\n{subject}")))
}

/// A successful upstream sign-in: the user, and the authorization request
/// to continue.
#[derive(Debug)]
pub struct UpstreamSignIn {
    /// The local user.
    pub user: User,
    /// The pending id.
    pub pending_id: String,
    /// The pending request.
    pub pending: PendingLogin,
}

struct CachedKeys {
    fetched_at: UnixTime,
    set: JwkSet,
}

/// The configured providers, their fetched metadata and keys.
pub struct UpstreamLogins {
    providers: Vec<UpstreamProvider>,
    fetcher: Arc<dyn OidcFetcher>,
    metadata: Mutex<HashMap<String, (UnixTime, ProviderMetadata)>>,
    keys: Mutex<HashMap<String, CachedKeys>>,
}

impl UpstreamLogins {
    /// The providers, fetched through `fetcher`.
    pub fn new(providers: Vec<UpstreamProvider>, fetcher: Arc<dyn OidcFetcher>) -> Self {
        Self {
            providers,
            fetcher,
            metadata: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The configured providers, in configuration order.
    pub fn providers(&self) -> &[UpstreamProvider] {
        &self.providers
    }

    fn provider(&self, id: &str) -> Result<&UpstreamProvider, UpstreamLoginError> {
        self.providers
            .iter()
            .find(|p| p.id == id)
            .ok_or(UpstreamLoginError::UnknownProvider)
    }

    async fn metadata(
        &self,
        p: &UpstreamProvider,
        now: UnixTime,
    ) -> Result<ProviderMetadata, UpstreamLoginError> {
        if let Some(m) = ProviderMetadata::from_overrides(p) {
            return Ok(m);
        }
        if let Ok(cache) = self.metadata.lock() {
            if let Some((at, m)) = cache.get(&p.id) {
                if now - at < METADATA_CACHE_FOR {
                    return Ok(m.clone());
                }
            }
        }
        let doc = self
            .fetcher
            .get(&p.discovery_url())
            .await
            .map_err(UpstreamLoginError::Metadata)?;
        let m = ProviderMetadata::from_discovery(p, &doc).map_err(UpstreamLoginError::Metadata)?;
        if let Ok(mut cache) = self.metadata.lock() {
            cache.insert(p.id.clone(), (now, m.clone()));
        }
        Ok(m)
    }

    /// The provider's keys: cached, or fetched. `refetch` asks for a fresh
    /// copy (an unknown `kid`), granted at most every [`JWKS_REFETCH_EVERY`].
    async fn keys(
        &self,
        p: &UpstreamProvider,
        m: &ProviderMetadata,
        now: UnixTime,
        refetch: bool,
    ) -> Result<Option<JwkSet>, UpstreamLoginError> {
        let cached = self
            .keys
            .lock()
            .ok()
            .and_then(|c| c.get(&p.id).map(|k| (k.fetched_at, k.set.clone())));
        match cached {
            Some((at, _)) if refetch && now - at < JWKS_REFETCH_EVERY => return Ok(None),
            Some((at, set)) if !refetch && now - at < JWKS_CACHE_FOR => return Ok(Some(set)),
            _ => {}
        }
        let doc = self
            .fetcher
            .get(&m.jwks_uri)
            .await
            .map_err(UpstreamLoginError::Keys)?;
        let set = JwkSet::parse(&doc).map_err(|e| UpstreamLoginError::Keys(e.to_string()))?;
        if let Ok(mut cache) = self.keys.lock() {
            cache.insert(
                p.id.clone(),
                CachedKeys {
                    fetched_at: now,
                    set: set.clone(),
                },
            );
        }
        Ok(Some(set))
    }

    /// Step 1: stores a sign-in at provider `id` for the pending request
    /// `pending_id` (already checked by the caller against the browser and
    /// its CSRF token) and returns the URL to send the browser to.
    pub async fn begin(
        &self,
        authority: &Authority,
        id: &str,
        pending_id: &str,
        binding: &str,
    ) -> Result<String, UpstreamLoginError> {
        let result = self.begin_inner(authority, id, pending_id, binding).await;
        if let Err(e) = &result {
            self.audit_failure(authority, id, e).await;
        }
        result
    }

    async fn begin_inner(
        &self,
        authority: &Authority,
        id: &str,
        pending_id: &str,
        binding: &str,
    ) -> Result<String, UpstreamLoginError> {
        let p = self.provider(id)?;
        let now = authority.clock.now();
        let metadata = self.metadata(p, now).await?;
        let redirect_uri = authority
            .settings
            .endpoint(&format!("/login/oidc/{}/callback", p.id));
        let login = UpstreamLoginState::new(&p.id, binding, pending_id, redirect_uri);
        let doc =
            serde_json::to_string(&login).map_err(|e| crate::Error::Keys(e.to_string().into()))?;
        authority
            .store
            .put_ephemeral(
                NAMESPACE,
                &digest(&login.state),
                &doc,
                now + LOGIN_STATE_TTL,
            )
            .await
            .map_err(crate::Error::from)?;
        Ok(authorization_url(p, &metadata, &login))
    }

    /// Step 2: the callback at `/login/oidc/<id>/callback`. `binding` is the
    /// browser's binding cookie.
    pub async fn finish(
        &self,
        authority: &Authority,
        id: &str,
        query: &FormParams,
        binding: Option<&str>,
    ) -> Result<UpstreamSignIn, UpstreamLoginError> {
        match self.finish_inner(authority, id, query, binding).await {
            Ok(done) => {
                let mut e = authority.event("login.oidc.succeeded", Outcome::Success);
                e.subject = Some(done.user.id.clone());
                e.reason = Some(format!("provider {id}"));
                authority.audit.record(e).await?;
                Ok(done)
            }
            Err((subject, err)) => {
                let mut e = authority.event("login.oidc.failed", Outcome::Failure);
                e.subject = subject;
                e.reason = Some(reason(id, &err));
                if authority.audit.record(e).await.is_err() {
                    tracing::error!("could not audit a refused upstream sign-in");
                }
                Err(err)
            }
        }
    }

    async fn audit_failure(&self, authority: &Authority, id: &str, err: &UpstreamLoginError) {
        let mut e = authority.event("login.oidc.failed", Outcome::Failure);
        e.reason = Some(reason(id, err));
        if authority.audit.record(e).await.is_err() {
            tracing::error!("could not audit a refused upstream sign-in");
        }
    }

    async fn finish_inner(
        &self,
        authority: &Authority,
        id: &str,
        query: &FormParams,
        binding: Option<&str>,
    ) -> Result<UpstreamSignIn, (Option<String>, UpstreamLoginError)> {
        let plain = |e: UpstreamLoginError| (None, e);
        let p = self.provider(id).map_err(plain)?;
        let now = authority.clock.now();
        let state = query
            .single("state")
            .ok()
            .flatten()
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .ok_or(UpstreamLoginError::UnknownState)
            .map_err(plain)?;
        // Taken, not read: the state is spent whatever happens next.
        let doc = authority
            .store
            .take_ephemeral(NAMESPACE, &digest(state), now)
            .await
            .map_err(|e| plain(crate::Error::from(e).into()))?
            .ok_or((None, UpstreamLoginError::UnknownState))?;
        let login: UpstreamLoginState =
            serde_json::from_str(&doc).map_err(|_| plain(UpstreamLoginError::UnknownState))?;
        let same_browser = binding.is_some_and(|b| ct_eq(&login.binding, &digest(b)));
        if !ct_eq(&login.state, state) || login.provider != p.id || !same_browser {
            return Err(plain(UpstreamLoginError::StateMismatch));
        }
        if let Some(error) = query.single("error").ok().flatten() {
            return Err(plain(UpstreamLoginError::ProviderRefused(sanitize_code(
                error,
            ))));
        }
        let code = query
            .single("code")
            .ok()
            .flatten()
            .filter(|c| !c.is_empty())
            .ok_or((None, UpstreamLoginError::MissingCode))?;
        let metadata = self.metadata(p, now).await.map_err(plain)?;
        let (authorization, body) = token_request(p, &login, code);
        let (status, answer) = self
            .fetcher
            .post_form(&metadata.token_endpoint, &authorization, &body)
            .await
            .map_err(|e| plain(UpstreamLoginError::TokenEndpoint(e)))?;
        let id_token = parse_token_response(status, &answer).map_err(plain)?;
        let expect = IdTokenExpectations {
            provider: p,
            nonce: &login.nonce,
            now,
            leeway: authority.settings.leeway,
        };
        let keys = self
            .keys(p, &metadata, now, false)
            .await
            .map_err(plain)?
            .unwrap_or_default();
        let identity = match verify_id_token(&id_token, &keys.keys, &expect) {
            Err(IdTokenError::UnknownKey) => {
                // Keys rotate: refetch once, rate-limited.
                match self.keys(p, &metadata, now, true).await.map_err(plain)? {
                    Some(fresh) => verify_id_token(&id_token, &fresh.keys, &expect),
                    None => Err(IdTokenError::UnknownKey),
                }
            }
            other => other,
        }
        .map_err(|e| plain(e.into()))?;
        let user = self
            .linked_user(authority, p, &identity)
            .await
            .map_err(plain)?;
        if user.disabled {
            return Err((Some(user.id), UpstreamLoginError::UserDisabled));
        }
        let pending = authority
            .pending(&login.pending, binding.unwrap_or_default(), None)
            .await
            .map_err(|e| (Some(user.id.clone()), e.into()))?
            .ok_or_else(|| (Some(user.id.clone()), UpstreamLoginError::PendingGone))?;
        Ok(UpstreamSignIn {
            user,
            pending_id: login.pending,
            pending,
        })
    }

    /// The local user linked to `identity`, created on first sign-in.
    async fn linked_user(
        &self,
        authority: &Authority,
        p: &UpstreamProvider,
        identity: &UpstreamIdentity,
    ) -> Result<User, UpstreamLoginError> {
        let id = linked_user_id(&identity.issuer, &identity.subject);
        let store = &authority.store;
        if let Some(user) = store.get_user(&id).await.map_err(crate::Error::from)? {
            let linked = user
                .upstream
                .as_ref()
                .is_some_and(|l| l.issuer == identity.issuer && l.subject == identity.subject);
            if !linked {
                return Err(
                    crate::Error::Conflict("user id taken by another identity".into()).into(),
                );
            }
            return Ok(user);
        }
        let base = local_username(&identity.suggested_username, 64);
        let mut candidates = vec![base.clone()];
        let suffix = format!("@{}", p.id);
        let stem = local_username(&base, 64 - suffix.len() - 2);
        candidates.push(format!("{stem}{suffix}"));
        candidates.extend((2..10).map(|n| format!("{stem}{suffix}{n}")));
        let mut username = None;
        for c in candidates {
            if store
                .find_user(&c)
                .await
                .map_err(crate::Error::from)?
                .is_none()
            {
                username = Some(c);
                break;
            }
        }
        let username = username.ok_or(UpstreamLoginError::NoUsername)?;
        let user = User {
            id,
            username,
            // No password: a linked user signs in at the provider only.
            password_hash: String::new(),
            disabled: false,
            failed_logins: 0,
            locked_until: None,
            created_at: authority.clock.now(),
            upstream: Some(UpstreamLink {
                issuer: identity.issuer.clone(),
                subject: identity.subject.clone(),
                provider: p.id.clone(),
            }),
        };
        store.put_user(&user).await.map_err(crate::Error::from)?;
        let mut e = authority.event("user.created", Outcome::Success);
        e.subject = Some(user.id.clone());
        e.reason = Some(format!(
            "username {}, linked to {} at provider {}",
            user.username, identity.issuer, p.id
        ));
        authority.audit.record(e).await?;
        Ok(user)
    }
}

fn reason(provider: &str, e: &UpstreamLoginError) -> String {
    format!("provider {provider}: {e}")
        .chars()
        .take(mandate_audit::MAX_REASON_LEN)
        .collect()
}

#[cfg(test)]
#[path = "upstream_login_tests.rs"]
mod tests;
