//! Other trust domains: JWTs from issuers this server trusts, and JWT
//! authorization grants it issues for authorization servers it chains to.
//!
//! Inbound, a trusted issuer's JWT can be the `subject_token` of a token
//! exchange (an ID token or an access token from the enterprise IdP) or the
//! `assertion` of the RFC 7523 `jwt-bearer` grant: a JWT authorization grant
//! from identity chaining, or an ID-JAG (`typ: oauth-id-jag+jwt`). Keys come
//! only from the issuer's configured JWK Set or `jwks_uri`, never from the
//! token; the algorithm allowlist is `mandate-jose`'s.
//!
//! Outbound, token exchange with `requested_token_type` `jwt` or `id-jag`
//! signs a short-lived grant whose `aud` is a configured peer authorization
//! server, for the client's identity there (`client_id`).

use std::collections::{BTreeMap, BTreeSet};

use mandate_audit::Outcome;
use mandate_jose::{JwkSet, UnverifiedJwt};
use mandate_types::{random_token, ResourceUri, ScopeSet, UnixTime};
use serde::{Deserialize, Serialize};

use crate::authority::Authority;
use crate::client_auth::Audience;
use crate::model::{Client, ClientKeys};
use crate::token::{within_ceiling, Actor, Confirmation, Extras, TokenResponse};
use crate::Error;

/// RFC 8693 token type of a JWT (the identity chaining grant).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 token type of an OpenID Connect ID token.
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// The ID-JAG token type.
pub const ID_JAG_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";
/// The JOSE `typ` of an ID-JAG.
pub const ID_JAG_TYP: &str = "oauth-id-jag+jwt";
/// The grant profile advertised in `authorization_grant_profiles_supported`.
pub const ID_JAG_PROFILE: &str = "urn:ietf:params:oauth:grant-profile:id-jag";
/// Lifetime of the grants this server issues for peers, seconds: long
/// enough to reach the peer, short enough that a leaked one soon expires.
const GRANT_TTL: i64 = 300;

/// An issuer whose JWTs this server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    /// Its identifier, compared exactly with `iss`.
    pub issuer: String,
    /// Where its keys are.
    pub keys: ClientKeys,
    /// The clients that may present its JWTs; `None`: any client.
    pub clients: Option<BTreeSet<String>>,
}

/// An authorization server in another trust domain this server issues
/// grants for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its issuer identifier: the grants' `aud`.
    pub issuer: String,
    /// Our client id → the client's id at the peer (default: the same).
    pub client_ids: BTreeMap<String, String>,
}

/// Trust relations with other domains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// Issuers whose JWTs are accepted.
    pub issuers: Vec<TrustedIssuer>,
    /// Authorization servers grants are issued for.
    pub peers: Vec<Peer>,
}

/// What this server reads of a trusted issuer's JWT.
#[derive(Debug, Deserialize)]
pub(crate) struct ExternalClaims {
    pub(crate) iss: String,
    pub(crate) sub: Option<String>,
    #[serde(default)]
    pub(crate) aud: Audience,
    pub(crate) exp: Option<i64>,
    pub(crate) nbf: Option<i64>,
    pub(crate) iat: Option<i64>,
    pub(crate) jti: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) resource: Option<String>,
}

#[derive(Deserialize)]
struct IssOnly {
    iss: Option<String>,
}

/// A verified JWT of a trusted issuer.
pub(crate) struct ExternalJwt {
    pub(crate) claims: ExternalClaims,
    pub(crate) typ: Option<String>,
    pub(crate) sub: String,
    pub(crate) exp: UnixTime,
}

/// The claims of a grant issued for a peer.
#[derive(Debug, Serialize)]
struct GrantClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    client_id: &'a str,
    jti: String,
    iat: UnixTime,
    exp: UnixTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<&'a Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation>,
}

/// What a token exchange asked a peer grant for.
pub(crate) struct PeerGrantRequest<'a> {
    pub(crate) id_jag: bool,
    pub(crate) audience: Option<&'a str>,
    pub(crate) resource: Option<&'a ResourceUri>,
    pub(crate) scope: Option<&'a ScopeSet>,
    pub(crate) subject: &'a str,
    pub(crate) actor: Option<&'a Actor>,
    pub(crate) not_after: UnixTime,
    pub(crate) jkt: Option<String>,
}

impl Authority {
    /// Whether `token` names a trusted issuer other than this server: the
    /// unverified `iss`, used only to choose the verification path.
    pub(crate) fn is_external(&self, token: &str) -> bool {
        UnverifiedJwt::parse(token)
            .ok()
            .and_then(|j| j.insecure_peek_claims::<IssOnly>().ok())
            .and_then(|c| c.iss)
            .is_some_and(|iss| self.settings.trust.issuers.iter().any(|t| t.issuer == iss))
    }

    /// Verifies a trusted issuer's JWT presented by `client`: signature
    /// with the issuer's keys, `exp`/`nbf`/`iat` with leeway, `sub` present,
    /// and the issuer's client allowlist. `what` names it in errors.
    pub(crate) async fn verify_external(
        &self,
        token: &str,
        client: &Client,
        what: &'static str,
        bad: fn(std::borrow::Cow<'static, str>) -> Error,
    ) -> Result<ExternalJwt, Error> {
        let jwt = UnverifiedJwt::parse(token)
            .map_err(|e| bad(format!("the {what} is not an acceptable JWT: {e}").into()))?;
        let iss = jwt
            .insecure_peek_claims::<IssOnly>()
            .ok()
            .and_then(|c| c.iss)
            .ok_or_else(|| bad(format!("the {what} has no iss").into()))?;
        let trusted = self
            .settings
            .trust
            .issuers
            .iter()
            .find(|t| t.issuer == iss)
            .ok_or_else(|| bad(format!("the {what}'s issuer is not trusted").into()))?;
        if trusted
            .clients
            .as_ref()
            .is_some_and(|c| !c.contains(client.client_id.as_str()))
        {
            return Err(bad(format!(
                "this client may not present the {what}s of {iss}"
            )
            .into()));
        }
        let keys: JwkSet = match &trusted.keys {
            ClientKeys::Jwks(set) => set.clone(),
            ClientKeys::JwksUri(uri) => self.fetcher.fetch_jwks(uri).await.map_err(|e| {
                tracing::warn!(issuer = %iss, error = %e, "trusted issuer jwks_uri fetch failed");
                bad(format!("the keys of {iss} are unavailable").into())
            })?,
        };
        let typ = jwt.typ().map(str::to_owned);
        let claims = jwt
            .verify::<ExternalClaims>(&keys.keys)
            .map_err(|_| bad(format!("the {what}'s signature does not verify").into()))?
            .claims;
        let now = self.clock.now();
        let leeway = self.settings.leeway;
        let exp = claims
            .exp
            .ok_or_else(|| bad(format!("the {what} has no exp").into()))?;
        if exp + leeway <= now {
            return Err(bad(format!("the {what} expired").into()));
        }
        if claims.nbf.is_some_and(|t| t > now + leeway)
            || claims.iat.is_some_and(|t| t > now + leeway)
        {
            return Err(bad(format!("the {what} is not yet valid").into()));
        }
        let sub = claims
            .sub
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad(format!("the {what} identifies no subject").into()))?;
        Ok(ExternalJwt {
            claims,
            typ,
            sub,
            exp,
        })
    }

    /// RFC 7523 §2.1 with the ID-JAG profile: an access token for the subject
    /// of a trusted issuer's JWT grant. No refresh token: the client presents
    /// the grant again.
    pub(crate) async fn jwt_bearer(
        &self,
        jkt: Option<String>,
        client: &Client,
        assertion: &str,
        scope: Option<ScopeSet>,
        resource: Option<ResourceUri>,
        event: &mut mandate_audit::NewEvent,
    ) -> Result<TokenResponse, Error> {
        let grant = self
            .verify_external(assertion, client, "assertion", Error::InvalidGrant)
            .await?;
        event.subject = Some(grant.sub.clone());
        let id_jag = grant
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(ID_JAG_TYP));
        // The audience: this server, as one value (ID-JAG §4.3).
        let token_endpoint = self.settings.endpoint("/token");
        let ours = [self.settings.issuer.as_str(), token_endpoint.as_str()];
        let single = match &grant.claims.aud {
            Audience::One(a) => Some(a.as_str()),
            Audience::Many(v) if v.len() == 1 => v.first().map(String::as_str),
            _ => None,
        };
        if !single.is_some_and(|a| ours.contains(&a)) {
            return Err(Error::InvalidGrant(
                "the assertion's aud must be this authorization server, alone".into(),
            ));
        }
        match (&grant.claims.client_id, id_jag) {
            (Some(c), _) if c != client.client_id.as_str() => {
                return Err(Error::InvalidGrant(
                    "the assertion was issued for another client".into(),
                ))
            }
            (None, true) => {
                return Err(Error::InvalidGrant(
                    "an ID-JAG must name its client_id".into(),
                ))
            }
            _ => {}
        }
        let jti = grant
            .claims
            .jti
            .as_deref()
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| Error::InvalidGrant("the assertion needs a jti".into()))?;
        let key = format!("{} {jti}", grant.claims.iss);
        if !self
            .store
            .use_once("jwt_bearer", &key, grant.exp + self.settings.leeway)
            .await?
        {
            return Err(Error::InvalidGrant("the assertion was already used".into()));
        }
        let resource = match (resource, grant.claims.resource.as_deref()) {
            (Some(r), _) => Some(r),
            (None, Some(r)) => {
                Some(ResourceUri::parse(r).map_err(|e| Error::InvalidTarget(e.into()))?)
            }
            (None, None) => None,
        };
        let resource = self.resolve_resource(client, resource).await?;
        event.audience = Some(resource.id.to_string());
        // The grant's own scope, when it states one, is a ceiling too.
        let mut ceiling = client.scopes.intersection(&resource.scope_set());
        if let Some(s) = &grant.claims.scope {
            let stated =
                ScopeSet::parse(s).map_err(|e| Error::InvalidGrant(e.to_string().into()))?;
            ceiling = ceiling.intersection(&stated);
        }
        let granted = within_ceiling(
            ceiling,
            scope,
            "not allowed by the grant, client or resource",
        )?;
        if granted.is_empty() {
            return Err(Error::InvalidScope(
                "nothing of the grant applies here".into(),
            ));
        }
        let issued = self
            .issue(
                client,
                &grant.sub,
                &resource,
                granted,
                Extras {
                    delegation: None,
                    jkt,
                    parent_jti: None,
                    note: Some(format!(
                        "{} from {} (jti {jti})",
                        if id_jag { "id-jag" } else { "jwt-bearer" },
                        grant.claims.iss
                    )),
                },
            )
            .await?;
        Ok(issued.response)
    }

    /// The peer a token exchange names with `audience` (its issuer) or,
    /// without one, with `resource`.
    fn peer(&self, request: &PeerGrantRequest<'_>) -> Result<&Peer, Error> {
        let wanted = request
            .audience
            .or(request.resource.map(ResourceUri::as_str))
            .ok_or_else(|| {
                Error::InvalidTarget("name the authorization server with audience".into())
            })?;
        self.settings
            .trust
            .peers
            .iter()
            .find(|p| p.issuer == wanted)
            .ok_or_else(|| {
                Error::InvalidTarget("not an authorization server this server chains to".into())
            })
    }

    /// Signs a JWT authorization grant (identity chaining) or an ID-JAG for
    /// a peer authorization server, and audits it.
    pub(crate) async fn issue_peer_grant(
        &self,
        client: &Client,
        request: PeerGrantRequest<'_>,
        event: &mut mandate_audit::NewEvent,
    ) -> Result<TokenResponse, Error> {
        let peer = self.peer(&request)?;
        event.audience = Some(peer.issuer.clone());
        // `resource`, when `audience` named the peer, is a resource at the peer.
        let resource = request
            .audience
            .and(request.resource.map(ResourceUri::as_str));
        let now = self.clock.now();
        let ttl = GRANT_TTL.min(request.not_after - now);
        if ttl <= 0 {
            return Err(Error::InvalidRequest("the subject_token expired".into()));
        }
        let client_id = peer
            .client_ids
            .get(client.client_id.as_str())
            .map_or(client.client_id.as_str(), String::as_str);
        let claims = GrantClaims {
            iss: &self.settings.issuer,
            sub: request.subject,
            aud: &peer.issuer,
            client_id,
            jti: random_token(16),
            iat: now,
            exp: now + ttl,
            scope: request.scope.map(ScopeSet::to_string),
            resource,
            act: request.actor,
            cnf: request.jkt.map(|jkt| Confirmation { jkt }),
        };
        let (typ, token_type) = if request.id_jag {
            (ID_JAG_TYP, ID_JAG_TOKEN_TYPE)
        } else {
            ("JWT", JWT_TOKEN_TYPE)
        };
        let token = self.sign_jws(typ, &claims, now)?;
        let mut issued = self.event("grant.issued", Outcome::Success);
        issued.client_id = Some(client.client_id.to_string());
        issued.subject = Some(request.subject.to_owned());
        issued.audience = Some(peer.issuer.clone());
        issued.scopes = claims.scope.clone();
        issued.jti = Some(claims.jti.clone());
        issued.reason = Some(format!(
            "{} for {} as client {client_id}{}",
            if request.id_jag {
                "id-jag"
            } else {
                "jwt grant"
            },
            peer.issuer,
            request
                .actor
                .map_or_else(String::new, |a| format!("; acting chain: {}", a.describe()))
        ));
        self.audit.record(issued).await?;
        Ok(TokenResponse {
            access_token: token,
            token_type: "N_A",
            expires_in: ttl,
            scope: claims.scope.unwrap_or_default(),
            refresh_token: None,
            issued_token_type: Some(token_type.to_owned()),
        })
    }
}
