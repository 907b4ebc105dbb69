//! The token endpoint: request parsing into a typed [`TokenRequest`], audience
//! and scope resolution (RFC 8707, RFC 6749 §3.3), and RFC 9068 JWT access tokens.

use mandate_audit::Outcome;
use mandate_types::{random_token, ResourceUri, ScopeSet, UnixTime};
use serde::{Deserialize, Serialize};

use crate::authority::Authority;
use crate::client_auth::PresentedClient;
use crate::exchange::ExchangeRequest;
use crate::form::FormParams;
use crate::model::{Client, GrantType, Resource};
use crate::Error;

/// The JOSE `typ` of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// A token request, parsed. One variant per grant this server supports.
#[derive(Debug)]
pub enum TokenRequest {
    /// RFC 6749 §4.4.
    ClientCredentials {
        /// Requested scope; `None` means everything the client may have.
        scope: Option<ScopeSet>,
        /// Requested audience (RFC 8707).
        resource: Option<ResourceUri>,
    },
    /// OAuth 2.1 §4.1.3, with PKCE.
    AuthorizationCode {
        /// The code.
        code: String,
        /// Must equal the authorization request's.
        redirect_uri: String,
        /// PKCE verifier.
        code_verifier: String,
        /// If sent, must equal the authorization request's.
        resource: Option<ResourceUri>,
    },
    /// RFC 8693 token exchange: a narrower token for an actor.
    TokenExchange(ExchangeRequest),
    /// RFC 7523 §2.1: a trusted issuer's JWT grant or ID-JAG.
    JwtBearer {
        /// The grant.
        assertion: String,
        /// A narrower scope, if wanted.
        scope: Option<ScopeSet>,
        /// The audience, if not the grant's.
        resource: Option<ResourceUri>,
    },
    /// OAuth 2.1 §4.3, with rotation.
    RefreshToken {
        /// The token.
        refresh_token: String,
        /// A narrower scope, if wanted.
        scope: Option<ScopeSet>,
        /// If sent, must equal the token's audience.
        resource: Option<ResourceUri>,
    },
}

/// What a token exchange issues (RFC 8693 `requested_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedTokenType {
    /// An RFC 9068 JWT access token.
    AccessToken,
    /// A Biscuit its holder can attenuate offline ([`mandate_biscuit`]).
    Biscuit,
    /// An RFC 7523 JWT authorization grant for a peer authorization server
    /// (identity chaining).
    Jwt,
    /// An Identity Assertion JWT Authorization Grant for a peer.
    IdJag,
}

impl TokenRequest {
    /// Parses the grant-specific parameters.
    pub fn parse(form: &FormParams) -> Result<Self, Error> {
        let grant_type = form.required("grant_type")?;
        match GrantType::parse(grant_type) {
            Some(GrantType::ClientCredentials) => Ok(Self::ClientCredentials {
                scope: parse_scope(form)?,
                resource: parse_resource(form)?,
            }),
            Some(GrantType::AuthorizationCode) => Ok(Self::AuthorizationCode {
                code: form.required("code")?.to_owned(),
                redirect_uri: form.required("redirect_uri")?.to_owned(),
                code_verifier: form.required("code_verifier")?.to_owned(),
                resource: parse_resource(form)?,
            }),
            Some(GrantType::TokenExchange) => {
                const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
                const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
                let subject_type = form.required("subject_token_type")?;
                if ![ACCESS_TOKEN, JWT, crate::trust::ID_TOKEN_TYPE].contains(&subject_type) {
                    return Err(Error::InvalidRequest(
                        "subject_token_type must be an access token, a jwt or an id_token".into(),
                    ));
                }
                let actor_token = form.single("actor_token")?.map(str::to_owned);
                match (actor_token.is_some(), form.single("actor_token_type")?) {
                    (true, Some(t)) if t == ACCESS_TOKEN || t == JWT => {}
                    (false, None) => {}
                    _ => {
                        return Err(Error::InvalidRequest(
                            "actor_token_type is required with actor_token, and only with it"
                                .into(),
                        ))
                    }
                }
                let requested = match form.single("requested_token_type")? {
                    None | Some(ACCESS_TOKEN) => RequestedTokenType::AccessToken,
                    Some(mandate_biscuit::TOKEN_TYPE) => RequestedTokenType::Biscuit,
                    Some(JWT) => RequestedTokenType::Jwt,
                    Some(crate::trust::ID_JAG_TOKEN_TYPE) => RequestedTokenType::IdJag,
                    Some(_) => {
                        return Err(Error::InvalidRequest(
                            format!(
                                "requested_token_type must be {ACCESS_TOKEN}, {JWT}, {} or {}",
                                crate::trust::ID_JAG_TOKEN_TYPE,
                                mandate_biscuit::TOKEN_TYPE
                            )
                            .into(),
                        ))
                    }
                };
                let mut audiences = form.all("audience");
                let audience = audiences.next().map(str::to_owned);
                if audiences.next().is_some() {
                    return Err(Error::InvalidTarget("one audience per request".into()));
                }
                Ok(Self::TokenExchange(ExchangeRequest {
                    subject_token: form.required("subject_token")?.to_owned(),
                    actor_token,
                    requested,
                    scope: parse_scope(form)?,
                    resource: parse_resource(form)?,
                    audience,
                }))
            }
            Some(GrantType::JwtBearer) => Ok(Self::JwtBearer {
                assertion: form.required("assertion")?.to_owned(),
                scope: parse_scope(form)?,
                resource: parse_resource(form)?,
            }),
            Some(GrantType::RefreshToken) => Ok(Self::RefreshToken {
                refresh_token: form.required("refresh_token")?.to_owned(),
                scope: parse_scope(form)?,
                resource: parse_resource(form)?,
            }),
            _ => Err(Error::UnsupportedGrantType),
        }
    }

    /// The grant type.
    pub fn grant_type(&self) -> GrantType {
        match self {
            Self::ClientCredentials { .. } => GrantType::ClientCredentials,
            Self::AuthorizationCode { .. } => GrantType::AuthorizationCode,
            Self::RefreshToken { .. } => GrantType::RefreshToken,
            Self::TokenExchange(_) => GrantType::TokenExchange,
            Self::JwtBearer { .. } => GrantType::JwtBearer,
        }
    }
}

fn parse_scope(form: &FormParams) -> Result<Option<ScopeSet>, Error> {
    form.single("scope")?
        .map(ScopeSet::parse)
        .transpose()
        .map_err(|e| Error::InvalidScope(e.to_string().into()))
}

fn parse_resource(form: &FormParams) -> Result<Option<ResourceUri>, Error> {
    let mut values = form.all("resource");
    let first = values.next();
    if values.next().is_some() {
        return Err(Error::InvalidTarget(
            "one resource per token request: a token has one audience".into(),
        ));
    }
    first
        .map(|r| ResourceUri::parse(r).map_err(|e| Error::InvalidTarget(e.into())))
        .transpose()
}

/// The claims of a Mandate access token (RFC 9068 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the client for client_credentials, the user otherwise.
    pub sub: String,
    /// Audience: the resource.
    pub aud: String,
    /// Expiry.
    pub exp: UnixTime,
    /// Issued at (0, and absent, when unknown: a Biscuit states none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub iat: UnixTime,
    /// Token id.
    pub jti: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Granted scopes, space-delimited.
    pub scope: String,
    /// RFC 8693 §4.1: who is acting for `sub`, with earlier actors nested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// RFC 9449 §6: the key the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

fn is_zero(t: &UnixTime) -> bool {
    *t == 0
}

/// A `cnf` claim with the DPoP key thumbprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// RFC 7638 thumbprint of the proof key.
    pub jkt: String,
}

/// What an issued token carries beyond the grant's basics.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    /// The `act` chain and the subject token's expiry (token exchange).
    pub(crate) delegation: Option<(Actor, UnixTime)>,
    /// The DPoP key to bind to.
    pub(crate) jkt: Option<String>,
    /// The `jti` of the token this one was exchanged from.
    pub(crate) parent_jti: Option<String>,
    /// Where the grant came from, for the audit trail.
    pub(crate) note: Option<String>,
}

/// An `act` claim: the current actor, and the chain before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The actor's subject.
    pub sub: String,
    /// The actor's client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The actor before this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// Actors in the chain, current first.
    pub fn depth(&self) -> usize {
        self.chain().count()
    }

    /// The chain, current actor first.
    pub fn chain(&self) -> impl Iterator<Item = &Actor> {
        std::iter::successors(Some(self), |a| a.act.as_deref())
    }

    /// The chain as `current <- previous <- ...`, for the audit trail.
    pub fn describe(&self) -> String {
        match &self.act {
            Some(prev) => format!("{} <- {}", self.sub, prev.describe()),
            None => self.sub.clone(),
        }
    }
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Seconds until expiry.
    pub expires_in: i64,
    /// Granted scope.
    pub scope: String,
    /// A refresh token, for clients with that grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// RFC 8693 §2.2.1, for token exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<String>,
}

/// An issued access token and what the audit and replay logic need of it.
pub(crate) struct Issued {
    pub(crate) response: TokenResponse,
    pub(crate) jti: String,
    pub(crate) exp: UnixTime,
}

impl Authority {
    /// Handles a token request. `authorization` is the raw `Authorization`
    /// header, if any. Every outcome is in the audit trail; a token is returned
    /// only once its event is durable.
    pub async fn token(
        &self,
        authorization: Option<&str>,
        dpop: Option<&str>,
        form: &FormParams,
    ) -> Result<(GrantType, TokenResponse), Error> {
        let mut refused = self.event("token.refused", Outcome::Failure);
        let result = async {
            let request = TokenRequest::parse(form)?;
            let presented = PresentedClient::from_request(authorization, form)?;
            let client = self
                .authenticate(presented, &self.settings.endpoint("/token"))
                .await?;
            refused.client_id = Some(client.client_id.to_string());
            let grant = request.grant_type();
            Self::check_grant(&client, grant)?;
            let jkt = match dpop {
                Some(proof) => Some(
                    self.check_dpop(
                        proof,
                        "POST",
                        &self.settings.endpoint("/token"),
                        None,
                        self.settings.dpop_nonce_required,
                    )
                    .await?,
                ),
                None if client.require_dpop => {
                    return Err(Error::InvalidDpopProof(
                        "this client must send a DPoP proof".into(),
                    ))
                }
                None => None,
            };
            match request {
                TokenRequest::ClientCredentials { scope, resource } => {
                    let resource = self.resolve_resource(&client, resource).await?;
                    refused.audience = Some(resource.id.to_string());
                    let granted = grant_scope(&client, &resource, scope)?;
                    let subject = client.client_id.to_string();
                    let issued = self
                        .issue(
                            &client,
                            &subject,
                            &resource,
                            granted,
                            Extras {
                                delegation: None,
                                jkt,
                                parent_jti: None,
                                note: None,
                            },
                        )
                        .await?;
                    Ok((grant, issued.response))
                }
                TokenRequest::AuthorizationCode {
                    code,
                    redirect_uri,
                    code_verifier,
                    resource,
                } => {
                    let response = self
                        .redeem_code(
                            jkt,
                            &client,
                            &code,
                            &redirect_uri,
                            &code_verifier,
                            resource,
                            &mut refused,
                        )
                        .await?;
                    Ok((grant, response))
                }
                TokenRequest::TokenExchange(request) => {
                    let response = self.exchange(jkt, &client, request, &mut refused).await?;
                    Ok((grant, response))
                }
                TokenRequest::JwtBearer {
                    assertion,
                    scope,
                    resource,
                } => {
                    let response = self
                        .jwt_bearer(jkt, &client, &assertion, scope, resource, &mut refused)
                        .await?;
                    Ok((grant, response))
                }
                TokenRequest::RefreshToken {
                    refresh_token,
                    scope,
                    resource,
                } => {
                    let response = self
                        .refresh(jkt, &client, &refresh_token, scope, resource, &mut refused)
                        .await?;
                    Ok((grant, response))
                }
            }
        }
        .await;
        if let Err(e) = &result {
            self.audit_refusal(refused, e).await;
        }
        result
    }

    /// RFC 8707: the named resource, which the client must be allowed; or,
    /// with none named, the one resource the client may use.
    pub(crate) async fn resolve_resource(
        &self,
        client: &Client,
        requested: Option<ResourceUri>,
    ) -> Result<Resource, Error> {
        match requested {
            Some(uri) => {
                if !client.may_use(&uri) {
                    return Err(Error::InvalidTarget(
                        "client may not use this resource".into(),
                    ));
                }
                self.store
                    .get_resource(&uri)
                    .await?
                    .ok_or_else(|| Error::InvalidTarget("unknown resource".into()))
            }
            None => {
                let mut usable: Vec<Resource> = self
                    .store
                    .list_resources()
                    .await?
                    .into_iter()
                    .filter(|r| client.may_use(&r.id))
                    .collect();
                match (usable.pop(), usable.is_empty()) {
                    (Some(only), true) => Ok(only),
                    _ => Err(Error::InvalidTarget(
                        "resource is required: this client may use more than one (or no) resource"
                            .into(),
                    )),
                }
            }
        }
    }

    /// Seconds a token for `resource` lives: its resource's lifetime, and an
    /// exchanged token never outlives the one it came from.
    pub(crate) fn lifetime(&self, resource: &Resource, extras: &Extras, now: UnixTime) -> i64 {
        let ttl = resource
            .access_token_ttl
            .unwrap_or(self.settings.access_token_ttl);
        match &extras.delegation {
            Some((_, not_after)) => ttl.min(not_after - now),
            None => ttl,
        }
    }

    /// Signs `claims` as a JWS of type `typ` with the key active at `now`.
    pub(crate) fn sign_jws<T: Serialize>(
        &self,
        typ: &str,
        claims: &T,
        now: UnixTime,
    ) -> Result<String, Error> {
        let snapshot = self.keys.snapshot();
        let signer = snapshot
            .signer(now)
            .ok_or_else(|| Error::Keys("no active signing key".into()))?;
        signer
            .sign(typ, claims)
            .map_err(|e| Error::Keys(e.to_string().into()))
    }

    /// Signs an access token for `subject` and audits it before returning it.
    pub(crate) async fn issue(
        &self,
        client: &Client,
        subject: &str,
        resource: &Resource,
        scope: ScopeSet,
        extras: Extras,
    ) -> Result<Issued, Error> {
        let now = self.clock.now();
        let ttl = self.lifetime(resource, &extras, now);
        let Extras {
            delegation,
            jkt,
            parent_jti,
            note,
        } = extras;
        let claims = AccessTokenClaims {
            iss: self.settings.issuer.clone(),
            sub: subject.to_owned(),
            aud: resource.id.to_string(),
            exp: now + ttl,
            iat: now,
            jti: random_token(16),
            client_id: client.client_id.to_string(),
            scope: scope.to_string(),
            act: delegation.map(|(a, _)| a),
            cnf: jkt.map(|jkt| Confirmation { jkt }),
        };
        let access_token = self.sign_jws(ACCESS_TOKEN_TYP, &claims, now)?;
        let mut event = self.event("token.issued", Outcome::Success);
        event.client_id = Some(claims.client_id);
        event.subject = Some(claims.sub);
        event.audience = Some(claims.aud);
        event.scopes = Some(claims.scope.clone());
        event.jti = Some(claims.jti.clone());
        if let Some(act) = &claims.act {
            event.kind = "token.exchanged".into();
            event.reason = Some(format!(
                "acting chain: {}; exchanged from jti {}",
                act.describe(),
                parent_jti.as_deref().unwrap_or("-")
            ));
        }
        if let Some(note) = note {
            event.reason = Some(match event.reason.take() {
                Some(r) => format!("{r}; {note}"),
                None => note,
            });
        }
        let lineage = parent_jti
            .as_deref()
            .map(|parent| (claims.jti.as_str(), parent, claims.exp));
        self.audit_issued(event, lineage).await?;
        self.mark_activated(client).await?;
        Ok(Issued {
            response: TokenResponse {
                access_token,
                token_type: if claims.cnf.is_some() {
                    "DPoP"
                } else {
                    "Bearer"
                },
                expires_in: ttl,
                scope: claims.scope,
                refresh_token: None,
                issued_token_type: None,
            },
            jti: claims.jti,
            exp: claims.exp,
        })
    }
}

/// RFC 6749 §3.3: the requested scopes, which must lie within what the client
/// may have and what the resource defines; no request means all of those.
fn grant_scope(
    client: &Client,
    resource: &Resource,
    requested: Option<ScopeSet>,
) -> Result<ScopeSet, Error> {
    let granted = within_ceiling(
        client.scopes.intersection(&resource.scope_set()),
        requested,
        "scope not allowed for this client and resource",
    )?;
    if granted.is_empty() {
        return Err(Error::InvalidScope(
            "client has no scope on this resource".into(),
        ));
    }
    Ok(granted)
}

/// The scope a grant hands out: the requested one when it lies within
/// `ceiling` (each grant computes its own), all of `ceiling` when none was
/// requested, and `invalid_scope` naming the excess after `refusal` otherwise.
pub(crate) fn within_ceiling(
    ceiling: ScopeSet,
    requested: Option<ScopeSet>,
    refusal: &str,
) -> Result<ScopeSet, Error> {
    match requested {
        Some(req) if !req.is_empty() => {
            let excess = req.difference(&ceiling);
            if excess.is_empty() {
                Ok(req)
            } else {
                Err(Error::InvalidScope(format!("{refusal}: {excess}").into()))
            }
        }
        _ => Ok(ceiling),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    use crate::model::{ClientAuthMethod, ClientOrigin};
    use mandate_types::{ClientId, Scope};

    fn client(scopes: &str) -> Client {
        Client {
            client_id: ClientId::parse("c").unwrap(),
            name: "c".into(),
            grant_types: BTreeSet::from([GrantType::ClientCredentials]),
            scopes: ScopeSet::parse(scopes).unwrap(),
            resources: None,
            auth_method: ClientAuthMethod::ClientSecretBasic,
            secrets: vec![],
            keys: None,
            redirect_uris: vec![],
            may_act_for: vec![],
            require_dpop: false,
            origin: ClientOrigin::Admin,
            registration_token: None,
            created_at: 0,
            activated_at: None,
        }
    }

    fn resource(scopes: &[&str]) -> Resource {
        Resource {
            id: ResourceUri::parse("https://r.example").unwrap(),
            name: "r".into(),
            scopes: scopes
                .iter()
                .map(|s| (Scope::parse(s).unwrap(), String::new()))
                .collect::<BTreeMap<_, _>>(),
            access_token_ttl: None,
            from_config: false,
        }
    }

    #[test]
    fn scope_is_the_intersection_unless_narrowed() {
        let c = client("read write admin");
        let r = resource(&["read", "write", "other"]);
        assert_eq!(grant_scope(&c, &r, None).unwrap().to_string(), "read write");
        let narrow = ScopeSet::parse("read").unwrap();
        assert_eq!(
            grant_scope(&c, &r, Some(narrow)).unwrap().to_string(),
            "read"
        );
        let wide = ScopeSet::parse("read admin").unwrap();
        assert!(matches!(
            grant_scope(&c, &r, Some(wide)),
            Err(Error::InvalidScope(_))
        ));
        assert!(matches!(
            grant_scope(&client("x"), &r, None),
            Err(Error::InvalidScope(_))
        ));
    }

    #[test]
    fn parse_refuses_unknown_grants_and_two_resources() {
        let f = FormParams::parse(b"grant_type=password").unwrap();
        assert!(matches!(
            TokenRequest::parse(&f),
            Err(Error::UnsupportedGrantType)
        ));
        let f = FormParams::parse(b"scope=a").unwrap();
        assert!(matches!(
            TokenRequest::parse(&f),
            Err(Error::InvalidRequest(_))
        ));
        let f = FormParams::parse(
            b"grant_type=client_credentials&resource=https://a.example&resource=https://b.example",
        )
        .unwrap();
        assert!(matches!(
            TokenRequest::parse(&f),
            Err(Error::InvalidTarget(_))
        ));
    }
}
