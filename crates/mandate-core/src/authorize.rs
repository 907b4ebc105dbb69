//! The authorization code flow (OAuth 2.1 §4.1) as explicit states:
//!
//! 1. [`Authority::begin_authorization`] validates the request. Until the client and
//!    redirect URI are known good, failures are shown, never redirected
//!    ([`AuthorizeError::Page`]); after, they go back to the client with
//!    `error`, `state` and `iss` ([`AuthorizeError::Redirect`]). A valid
//!    request becomes a [`PendingLogin`] stored server-side and bound to the
//!    browser by a cookie value.
//! 2. The user signs in ([`Authority::login`]) and gets a [`Session`].
//! 3. The user consents ([`Authority::decide_consent`]), or a remembered
//!    [`Grant`] already covers the request, and a single-use code is issued,
//!    bound to client, redirect URI, PKCE challenge and resource, valid for a
//!    minute.
//! 4. The client redeems it at the token endpoint ([`crate::token`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mandate_audit::Outcome;
use mandate_types::{random_token, ClientId, OAuthErrorCode, ResourceUri, ScopeSet, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::authority::Authority;
use crate::form::FormParams;
use crate::model::{Client, Grant, GrantType, Resource};
use crate::Error;

/// How long a pending authorization request lives, seconds.
pub const PENDING_TTL: i64 = 10 * 60;
/// How long an authorization code lives, seconds.
pub const CODE_TTL: i64 = 60;
/// How long a pushed authorization request lives, seconds (RFC 9126 `expires_in`).
pub const PAR_TTL: i64 = 60;
/// How long a sign-in session lives, seconds.
pub const SESSION_TTL: i64 = 8 * 3600;

/// The scope that asks for a refresh token (OpenID Connect Core §11). With
/// `[tokens] refresh_requires_offline_access`, the code grant issues a
/// refresh token only when it was requested and consented; it is a scope of
/// the grant, never of the access token.
pub const OFFLINE_ACCESS: &str = "offline_access";

/// How the consent page describes [`OFFLINE_ACCESS`].
pub const OFFLINE_ACCESS_DESCRIPTION: &str =
    "Stay connected while you are away (the agent gets a refresh token)";

/// Whether `scope` holds [`OFFLINE_ACCESS`].
pub fn has_offline_access(scope: &ScopeSet) -> bool {
    scope.iter().any(|s| s.as_str() == OFFLINE_ACCESS)
}

/// `scope` without [`OFFLINE_ACCESS`]: what an access token carries.
pub fn without_offline_access(scope: &ScopeSet) -> ScopeSet {
    ScopeSet::from_scopes(
        scope
            .iter()
            .filter(|s| s.as_str() != OFFLINE_ACCESS)
            .cloned(),
    )
}

/// SHA-256, base64url: how codes, sessions and bindings are stored.
pub fn digest(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(value.as_bytes()))
}

fn ct_eq(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A validated authorization request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// The client.
    pub client_id: ClientId,
    /// The redirect URI, as sent (it matched a registered one).
    pub redirect_uri: String,
    /// `state`, echoed back.
    pub state: Option<String>,
    /// The S256 PKCE challenge.
    pub code_challenge: String,
    /// The audience (RFC 8707).
    pub resource: ResourceUri,
    /// Requested scopes.
    pub scope: ScopeSet,
}

/// What happens after sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterLogin {
    /// Continue an authorization request.
    Authorize(AuthorizationRequest),
    /// Show the connected agents page.
    Grants,
}

/// A sign-in in progress, stored server-side under a random id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    /// CSRF token of the sign-in and consent forms.
    pub csrf: String,
    /// Hash of the cookie value that binds it to one browser.
    pub binding: String,
    /// What it is for.
    pub then: AfterLogin,
}

/// A signed-in user's session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The user.
    pub user_id: String,
    /// CSRF token of every form in the session.
    pub csrf: String,
}

/// An issued code, stored under its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRecord {
    /// The request it answers.
    pub request: AuthorizationRequest,
    /// Granted scopes (possibly fewer than requested).
    pub scope: ScopeSet,
    /// The user.
    pub user_id: String,
    /// The consent it rests on.
    pub grant_id: String,
}

/// What the first redemption of a code produced, kept so that a second
/// redemption can revoke it (OAuth 2.1 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemedCode {
    /// The access token's id and expiry.
    pub jti: String,
    /// Its expiry.
    pub exp: UnixTime,
    /// The refresh token family, if one was issued.
    pub family: Option<String>,
}

/// A failure at the authorization endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// Shown to the user: the client or redirect URI cannot be trusted.
    Page {
        /// Short title.
        title: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Sent back to the client.
    Redirect {
        /// The redirect URI with `error`, `error_description`, `state`, `iss`.
        url: String,
        /// The error code (what `/par` answers with instead).
        code: OAuthErrorCode,
        /// The description.
        description: String,
    },
}

/// The outcome of a step that may finish the flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Redirect the browser here (a code or an error for the client).
    Redirect(String),
    /// Ask the user to consent to this request.
    Consent {
        /// The pending id.
        pending: String,
        /// The request.
        request: AuthorizationRequest,
        /// The client, for the page.
        client: Box<Client>,
        /// The resource, for the page.
        resource: Box<Resource>,
    },
}

/// A redirect URI matches a registered one exactly, except that a loopback
/// redirect may use any port (RFC 8252 §7.3).
pub fn redirect_matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    let (Ok(r), Ok(p)) = (url::Url::parse(registered), url::Url::parse(presented)) else {
        return false;
    };
    // RFC 8252 §7.3 names loopback IP literals; `localhost` is allowed too,
    // as MCP hosts commonly register it.
    let loopback = |u: &url::Url| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            }
    };
    loopback(&r)
        && loopback(&p)
        && r.host() == p.host()
        && r.path() == p.path()
        && r.query() == p.query()
        && p.fragment().is_none()
}

/// `redirect_uri` with `params` (and RFC 9207 `iss`) added to its query.
pub fn with_query(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => return redirect_uri.to_owned(),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}

/// RFC 7636 §4.1 verifier syntax and §4.6 S256 check.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let syntax = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    syntax
        && ct_eq(
            &URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
            challenge,
        )
}

impl Authority {
    fn error_redirect(
        &self,
        req: (&str, Option<&str>),
        code: OAuthErrorCode,
        description: &str,
    ) -> AuthorizeError {
        let mut params = vec![("error", code.as_str()), ("error_description", description)];
        if let Some(s) = req.1 {
            params.push(("state", s));
        }
        params.push(("iss", &self.settings.issuer));
        AuthorizeError::Redirect {
            url: with_query(req.0, &params),
            code,
            description: description.to_owned(),
        }
    }

    /// Validates an authorization request and stores it, bound to the browser
    /// cookie value `binding`. Returns the pending id and its CSRF token.
    pub async fn begin_authorization(
        &self,
        query: &FormParams,
        binding: &str,
    ) -> Result<(String, PendingLogin), AuthorizeError> {
        let pushed;
        let query = match query.single("request_uri").ok().flatten() {
            Some(uri) => {
                pushed = self
                    .pushed_request(uri, query.single("client_id").ok().flatten())
                    .await?;
                &pushed
            }
            None => query,
        };
        let request = self.validate_authorization(query).await?;
        let back = (request.redirect_uri.clone(), request.state.clone());
        self.store_pending(AfterLogin::Authorize(request), binding)
            .await
            .map_err(|_| {
                self.error_redirect(
                    (&back.0, back.1.as_deref()),
                    OAuthErrorCode::ServerError,
                    "try again later",
                )
            })
    }

    /// RFC 9126 §2: validates and stores a pushed authorization request for
    /// the authenticated `client`; returns its `request_uri`.
    pub async fn push_authorization(
        &self,
        client: &Client,
        form: &FormParams,
    ) -> Result<String, AuthorizeError> {
        const CLIENT_AUTH: [&str; 4] = [
            "client_secret",
            "client_assertion",
            "client_assertion_type",
            "client_id",
        ];
        if form.single("request_uri").ok().flatten().is_some() {
            return Err(AuthorizeError::Page {
                title: "Invalid pushed request",
                message: "request_uri may not be pushed".into(),
            });
        }
        let mut pairs: Vec<(String, String)> = form
            .pairs()
            .iter()
            .filter(|(k, _)| !CLIENT_AUTH.contains(&k.as_str()))
            .cloned()
            .collect();
        pairs.push(("client_id".into(), client.client_id.to_string()));
        self.validate_authorization(&FormParams::from_pairs(pairs.clone()))
            .await?;
        let request_uri = format!("urn:ietf:params:oauth:request_uri:{}", random_token(24));
        let doc = serde_json::to_string(&pairs).map_err(|_| AuthorizeError::Page {
            title: "Try again later",
            message: "the request could not be stored".into(),
        })?;
        self.store
            .put_ephemeral(
                "par",
                &digest(&request_uri),
                &doc,
                self.clock.now() + PAR_TTL,
            )
            .await
            .map_err(|_| AuthorizeError::Page {
                title: "Try again later",
                message: "the request could not be stored".into(),
            })?;
        Ok(request_uri)
    }

    /// RFC 9126 at the HTTP edge: authenticates the client, then pushes.
    pub async fn par(
        &self,
        authorization: Option<&str>,
        form: &FormParams,
    ) -> Result<String, Error> {
        let presented = crate::client_auth::PresentedClient::from_request(authorization, form)?;
        let client = self
            .authenticate(presented, &self.settings.endpoint("/par"))
            .await?;
        self.push_authorization(&client, form)
            .await
            .map_err(|e| match e {
                AuthorizeError::Redirect {
                    code, description, ..
                } => Error::InvalidPushedRequest {
                    code,
                    description: description.into(),
                },
                AuthorizeError::Page { message, .. } => Error::InvalidPushedRequest {
                    code: OAuthErrorCode::InvalidRequest,
                    description: message.into(),
                },
            })
    }

    /// The parameters of a pushed request: single use, and only for the
    /// client that pushed it.
    async fn pushed_request(
        &self,
        request_uri: &str,
        client_id: Option<&str>,
    ) -> Result<FormParams, AuthorizeError> {
        let page = |message: &str| AuthorizeError::Page {
            title: "This request cannot be processed",
            message: message.to_owned(),
        };
        let doc = self
            .store
            .take_ephemeral("par", &digest(request_uri), self.clock.now())
            .await
            .map_err(|_| page("the server could not process the request; try again later"))?
            .ok_or_else(|| page("the request_uri is unknown, expired or already used"))?;
        let pairs: Vec<(String, String)> =
            serde_json::from_str(&doc).map_err(|_| page("the pushed request is unreadable"))?;
        let pushed = FormParams::from_pairs(pairs);
        if pushed.single("client_id").ok().flatten() != client_id {
            return Err(page("the request_uri belongs to another client"));
        }
        Ok(pushed)
    }

    /// Validates an authorization request (OAuth 2.1 §4.1.1, RFC 7636, RFC 8707).
    pub async fn validate_authorization(
        &self,
        query: &FormParams,
    ) -> Result<AuthorizationRequest, AuthorizeError> {
        let page = |message: &str| AuthorizeError::Page {
            title: "This request cannot be processed",
            message: message.to_owned(),
        };
        let internal = |_| page("the server could not process the request; try again later");
        let client_id = query
            .single("client_id")
            .map_err(|_| page("client_id is repeated"))?
            .ok_or_else(|| page("the request names no client (client_id)"))?;
        let client = match ClientId::parse(client_id) {
            Ok(id) => self.client(&id).await.map_err(internal)?,
            Err(_) => None,
        }
        .ok_or_else(|| page("the client is not registered here"))?;
        let redirect_uri = query
            .single("redirect_uri")
            .map_err(|_| page("redirect_uri is repeated"))?
            .ok_or_else(|| page("the request has no redirect_uri"))?;
        if !client
            .redirect_uris
            .iter()
            .any(|r| redirect_matches(r, redirect_uri))
        {
            return Err(page("the redirect_uri is not registered for this client"));
        }
        let state = query.single("state").ok().flatten();
        let back = (redirect_uri, state);
        let fail = |code, d: &str| self.error_redirect(back, code, d);
        for p in [
            "response_type",
            "scope",
            "resource",
            "code_challenge",
            "code_challenge_method",
            "state",
        ] {
            if query.single(p).is_err() {
                return Err(fail(
                    OAuthErrorCode::InvalidRequest,
                    &format!("{p} is repeated"),
                ));
            }
        }
        match query.single("response_type").ok().flatten() {
            Some("code") => {}
            Some(_) => {
                return Err(fail(
                    OAuthErrorCode::UnsupportedResponseType,
                    "only response_type=code is supported",
                ))
            }
            None => {
                return Err(fail(
                    OAuthErrorCode::InvalidRequest,
                    "response_type is missing",
                ))
            }
        }
        if !client.grant_types.contains(&GrantType::AuthorizationCode) {
            return Err(fail(
                OAuthErrorCode::UnauthorizedClient,
                "client may not use the authorization code grant",
            ));
        }
        let challenge = query.single("code_challenge").ok().flatten();
        let method = query.single("code_challenge_method").ok().flatten();
        let code_challenge = match (challenge, method) {
            (Some(c), Some("S256"))
                if c.len() == 43
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                c
            }
            (Some(_), Some("S256")) => {
                return Err(fail(
                    OAuthErrorCode::InvalidRequest,
                    "code_challenge must be a base64url SHA-256",
                ))
            }
            (None, _) => {
                return Err(fail(
                    OAuthErrorCode::InvalidRequest,
                    "PKCE is required: send code_challenge with code_challenge_method=S256",
                ))
            }
            (Some(_), _) => {
                return Err(fail(
                    OAuthErrorCode::InvalidRequest,
                    "code_challenge_method must be S256",
                ))
            }
        };
        let mut resources = query.all("resource");
        let resource = match (resources.next(), resources.next()) {
            (Some(r), None) => {
                ResourceUri::parse(r).map_err(|e| fail(OAuthErrorCode::InvalidTarget, &e))?
            }
            (None, _) => return Err(fail(OAuthErrorCode::InvalidTarget, "resource is required")),
            (Some(_), Some(_)) => {
                return Err(fail(
                    OAuthErrorCode::InvalidTarget,
                    "one resource per request",
                ))
            }
        };
        if !client.may_use(&resource) {
            return Err(fail(
                OAuthErrorCode::InvalidTarget,
                "client may not use this resource",
            ));
        }
        let known = self
            .store
            .get_resource(&resource)
            .await
            .map_err(|_| fail(OAuthErrorCode::ServerError, "try again later"))?;
        let Some(known) = known else {
            return Err(fail(OAuthErrorCode::InvalidTarget, "unknown resource"));
        };
        let allowed = client.scopes.intersection(&known.scope_set());
        // With offline_access gating, offline_access is the grant's, not the
        // resource's: asked for by name, never by default, and only by a
        // client that may hold refresh tokens.
        let gated = self.settings.refresh_requires_offline_access;
        let scope = match query.single("scope").ok().flatten() {
            Some(s) => ScopeSet::parse(s)
                .map_err(|e| fail(OAuthErrorCode::InvalidScope, &e.to_string()))?,
            None if gated => without_offline_access(&allowed),
            None => allowed.clone(),
        };
        let resource_scope = if gated {
            without_offline_access(&scope)
        } else {
            scope.clone()
        };
        if gated
            && has_offline_access(&scope)
            && !client.grant_types.contains(&GrantType::RefreshToken)
        {
            return Err(fail(
                OAuthErrorCode::InvalidScope,
                "offline_access: this client may not hold refresh tokens",
            ));
        }
        let excess = resource_scope.difference(&allowed);
        if !excess.is_empty() {
            return Err(fail(
                OAuthErrorCode::InvalidScope,
                &format!("scope not allowed: {excess}"),
            ));
        }
        if resource_scope.is_empty() {
            return Err(fail(
                OAuthErrorCode::InvalidScope,
                "no scope to grant on this resource",
            ));
        }
        let request = AuthorizationRequest {
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            state: state.map(str::to_owned),
            code_challenge: code_challenge.to_owned(),
            resource,
            scope,
        };
        Ok(request)
    }

    /// Stores a pending sign-in bound to `binding`.
    pub async fn store_pending(
        &self,
        then: AfterLogin,
        binding: &str,
    ) -> Result<(String, PendingLogin), Error> {
        let id = random_token(24);
        let pending = PendingLogin {
            csrf: random_token(24),
            binding: digest(binding),
            then,
        };
        let doc = serde_json::to_string(&pending).map_err(|e| Error::Keys(e.to_string().into()))?;
        self.store
            .put_ephemeral(
                "pending",
                &digest(&id),
                &doc,
                self.clock.now() + PENDING_TTL,
            )
            .await?;
        Ok((id, pending))
    }

    /// A pending sign-in, if `binding` is the browser's and `csrf` matches.
    pub async fn pending(
        &self,
        id: &str,
        binding: &str,
        csrf: Option<&str>,
    ) -> Result<Option<PendingLogin>, Error> {
        let Some(doc) = self
            .store
            .get_ephemeral("pending", &digest(id), self.clock.now())
            .await?
        else {
            return Ok(None);
        };
        let pending: PendingLogin =
            serde_json::from_str(&doc).map_err(|e| Error::Keys(e.to_string().into()))?;
        let bound = ct_eq(&pending.binding, &digest(binding));
        let csrf_ok = csrf.is_none_or(|c| ct_eq(c, &pending.csrf));
        Ok((bound && csrf_ok).then_some(pending))
    }

    /// Starts a session for `user_id`; returns the cookie value and the session.
    pub async fn start_session(&self, user_id: &str) -> Result<(String, Session), Error> {
        let token = random_token(32);
        let session = Session {
            user_id: user_id.to_owned(),
            csrf: random_token(24),
        };
        let doc = serde_json::to_string(&session).map_err(|e| Error::Keys(e.to_string().into()))?;
        self.store
            .put_owned_ephemeral(
                "session",
                &digest(&token),
                user_id,
                &doc,
                self.clock.now() + SESSION_TTL,
            )
            .await?;
        Ok((token, session))
    }

    /// The session behind a cookie value, if its user may still act.
    /// Disabling a user deletes their sessions; the check here also covers
    /// one started while the user was being disabled.
    pub async fn session(&self, token: &str) -> Result<Option<Session>, Error> {
        let doc = self
            .store
            .get_ephemeral("session", &digest(token), self.clock.now())
            .await?;
        let Some(session) = doc.and_then(|d| serde_json::from_str::<Session>(&d).ok()) else {
            return Ok(None);
        };
        Ok(self.active_user(&session.user_id).await?.then_some(session))
    }

    /// Whether the user `id` exists and is not disabled.
    pub(crate) async fn active_user(&self, id: &str) -> Result<bool, Error> {
        Ok(self.store.get_user(id).await?.is_some_and(|u| !u.disabled))
    }

    /// Ends a session.
    pub async fn end_session(&self, token: &str) -> Result<(), Error> {
        self.store
            .take_ephemeral("session", &digest(token), self.clock.now())
            .await?;
        Ok(())
    }

    /// After sign-in: either the remembered consent covers the request (a
    /// code is issued at once) or the user must be asked.
    pub async fn continue_authorization(
        &self,
        pending_id: &str,
        request: AuthorizationRequest,
        user_id: &str,
    ) -> Result<Next, Error> {
        let remembered = self
            .store
            .find_grant(user_id, &request.client_id, &request.resource)
            .await?;
        if let Some(grant) = remembered.filter(|g| request.scope.is_subset(&g.scopes)) {
            self.store
                .take_ephemeral("pending", &digest(pending_id), self.clock.now())
                .await?;
            let scope = request.scope.clone();
            return self
                .issue_code(request, scope, user_id, &grant.id)
                .await
                .map(Next::Redirect);
        }
        let client = self
            .client(&request.client_id)
            .await?
            .ok_or(Error::NotFound("client"))?;
        let resource = self
            .store
            .get_resource(&request.resource)
            .await?
            .ok_or(Error::NotFound("resource"))?;
        Ok(Next::Consent {
            pending: pending_id.to_owned(),
            request,
            client: Box::new(client),
            resource: Box::new(resource),
        })
    }

    /// The user's answer on the consent page. `chosen` are the scopes left
    /// checked; they must lie within the request.
    pub async fn decide_consent(
        &self,
        pending_id: &str,
        request: AuthorizationRequest,
        user_id: &str,
        approve: bool,
        chosen: ScopeSet,
    ) -> Result<String, Error> {
        self.store
            .take_ephemeral("pending", &digest(pending_id), self.clock.now())
            .await?;
        let back = (request.redirect_uri.as_str(), request.state.as_deref());
        let mut event = self.event("consent.denied", Outcome::Failure);
        event.client_id = Some(request.client_id.to_string());
        event.subject = Some(user_id.to_owned());
        event.audience = Some(request.resource.to_string());
        // offline_access alone grants nothing to use it with.
        let nothing = if self.settings.refresh_requires_offline_access {
            without_offline_access(&chosen).is_empty()
        } else {
            chosen.is_empty()
        };
        if !approve || nothing || !chosen.is_subset(&request.scope) {
            event.scopes = Some(request.scope.to_string());
            self.audit.record(event).await?;
            let AuthorizeError::Redirect { url, .. } = self.error_redirect(
                back,
                OAuthErrorCode::AccessDenied,
                "the user denied the request",
            ) else {
                return Err(Error::AccessDeniedPage);
            };
            return Ok(url);
        }
        let now = self.clock.now();
        let existing = self
            .store
            .find_grant(user_id, &request.client_id, &request.resource)
            .await?;
        let grant = Grant {
            id: existing
                .as_ref()
                .map_or_else(|| random_token(16), |g| g.id.clone()),
            user_id: user_id.to_owned(),
            client_id: request.client_id.clone(),
            resource: request.resource.clone(),
            scopes: chosen.clone(),
            created_at: existing.map_or(now, |g| g.created_at),
        };
        self.store.put_grant(&grant).await?;
        event.kind = "consent.granted".into();
        event.outcome = Outcome::Success;
        event.scopes = Some(chosen.to_string());
        self.audit.record(event).await?;
        self.issue_code(request, chosen, user_id, &grant.id).await
    }

    async fn issue_code(
        &self,
        request: AuthorizationRequest,
        scope: ScopeSet,
        user_id: &str,
        grant_id: &str,
    ) -> Result<String, Error> {
        let code = random_token(32);
        let mut event = self.event("code.issued", Outcome::Success);
        event.client_id = Some(request.client_id.to_string());
        event.subject = Some(user_id.to_owned());
        event.audience = Some(request.resource.to_string());
        event.scopes = Some(scope.to_string());
        let redirect_uri = request.redirect_uri.clone();
        let state = request.state.clone();
        let record = CodeRecord {
            request,
            scope,
            user_id: user_id.to_owned(),
            grant_id: grant_id.to_owned(),
        };
        let doc = serde_json::to_string(&record).map_err(|e| Error::Keys(e.to_string().into()))?;
        self.store
            .put_owned_ephemeral(
                "code",
                &digest(&code),
                user_id,
                &doc,
                self.clock.now() + CODE_TTL,
            )
            .await?;
        self.audit.record(event).await?;
        let mut params = vec![("code", code.as_str())];
        if let Some(s) = &state {
            params.push(("state", s));
        }
        params.push(("iss", &self.settings.issuer));
        Ok(with_query(&redirect_uri, &params))
    }

    /// A user's grants with their clients, for the connected agents page.
    pub async fn grants_of(&self, user_id: &str) -> Result<Vec<(Grant, Option<Client>)>, Error> {
        let mut out = Vec::new();
        for g in self.store.list_grants(user_id).await? {
            let client = self.client(&g.client_id).await?;
            out.push((g, client));
        }
        Ok(out)
    }

    /// Revokes a user's grant and every refresh token issued under it.
    pub async fn revoke_grant(&self, user_id: &str, grant_id: &str) -> Result<(), Error> {
        let grant = self
            .store
            .get_grant(grant_id)
            .await?
            .filter(|g| g.user_id == user_id)
            .ok_or(Error::NotFound("grant"))?;
        self.store.delete_grant(&grant.id).await?;
        let mut e = self.event("consent.revoked", Outcome::Success);
        e.client_id = Some(grant.client_id.to_string());
        e.subject = Some(user_id.to_owned());
        e.audience = Some(grant.resource.to_string());
        e.scopes = Some(grant.scopes.to_string());
        self.audit.record(e).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        assert!(pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            "short",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
    }

    #[test]
    fn loopback_ports_may_vary_nothing_else() {
        assert!(redirect_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:51234/cb"
        ));
        assert!(redirect_matches("http://[::1]:80/cb", "http://[::1]:9/cb"));
        assert!(!redirect_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5/other"
        ));
        assert!(!redirect_matches(
            "https://app.example/cb",
            "https://app.example:444/cb"
        ));
        assert!(!redirect_matches(
            "https://app.example/cb",
            "https://app.example/cb?x=1"
        ));
        assert!(redirect_matches(
            "http://localhost/cb",
            "http://localhost:5/cb"
        ));
        assert!(
            !redirect_matches("http://localhost/cb", "http://127.0.0.1:5/cb"),
            "the host itself must match"
        );
        assert!(!redirect_matches(
            "http://evil.example/cb",
            "http://evil.example:5/cb"
        ));
    }

    #[test]
    fn redirect_query_is_appended() {
        assert_eq!(
            with_query(
                "https://a.example/cb?x=1",
                &[("code", "c"), ("iss", "https://i.example")]
            ),
            "https://a.example/cb?x=1&code=c&iss=https%3A%2F%2Fi.example"
        );
    }
}
