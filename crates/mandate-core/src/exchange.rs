//! RFC 8693 token exchange: an agent hands part of its work to another, and
//! the new token can only be narrower.
//!
//! The authenticated client is the new actor (or, with an `actor_token`, the
//! subject of that token, which must belong to the client). The issued token
//! keeps the subject token's `sub`, names the exchanging client in
//! `client_id`, and carries the chain in `act` (current actor outermost). It
//! never holds a scope the subject token did not hold, an audience the actor
//! may not use, or an expiry later than the subject token's; the chain is
//! bounded by `max_delegation_depth`.
//!
//! Who may act for whom: the actor client's `may_act_for` lists the clients
//! whose tokens it may exchange, or the subject token's `may_act` claim
//! names the actor. A trusted issuer's JWT (`crate::trust`) may be the
//! subject too, for the clients that issuer's configuration names.
//!
//! What is issued: an access token (default), a Biscuit, or, for another
//! domain's authorization server, a JWT authorization grant or an ID-JAG
//! (`crate::trust::Authority::issue_peer_grant`).

use mandate_audit::{NewEvent, Outcome};
use mandate_biscuit::{ActorEntry, Grant};
use mandate_jose::UnverifiedJwt;
use mandate_types::{random_token, ResourceUri, ScopeSet, UnixTime};
use serde::Deserialize;

use crate::authority::Authority;
use crate::model::Client;
use crate::token::{
    within_ceiling, AccessTokenClaims, Actor, Extras, RequestedTokenType, TokenResponse,
};
use crate::trust::PeerGrantRequest;
use crate::Error;

/// The RFC 8693 type of what token exchange issues.
pub const ISSUED_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A token exchange request's parameters.
#[derive(Debug)]
pub struct ExchangeRequest {
    /// The token whose authority is delegated.
    pub subject_token: String,
    /// The actor's own token, if it proves itself with one.
    pub actor_token: Option<String>,
    /// What to issue.
    pub requested: RequestedTokenType,
    /// A narrower scope, if wanted.
    pub scope: Option<ScopeSet>,
    /// The new audience (a resource of ours), or for a peer grant a
    /// resource at the peer.
    pub resource: Option<ResourceUri>,
    /// For a peer grant: the peer authorization server's issuer.
    pub audience: Option<String>,
}

/// The subject token, whoever issued it.
struct Subject {
    claims: AccessTokenClaims,
    /// Its scope, when it states one (an ID token does not).
    scope: Option<ScopeSet>,
    /// The `may_act` claim's `sub`.
    named_actor: Option<String>,
    /// The trusted issuer, for another issuer's token.
    external: Option<String>,
    /// Whether it was issued to the exchanging client itself.
    issued_to_client: bool,
}

#[derive(Deserialize)]
struct MayAct {
    #[serde(default)]
    may_act: Option<MayActClaim>,
}

#[derive(Deserialize)]
struct MayActClaim {
    sub: Option<String>,
}

impl Authority {
    /// An active access token of ours (signature, issuer, expiry, revocation).
    async fn active_token(
        &self,
        token: &str,
        what: &'static str,
    ) -> Result<AccessTokenClaims, Error> {
        let claims = self.verify_access_token(token).await.ok_or_else(|| {
            Error::InvalidRequest(
                format!("the {what} is not an active token of this server").into(),
            )
        })?;
        if self.store.is_revoked(&claims.jti).await? {
            return Err(Error::InvalidRequest(
                format!("the {what} was revoked").into(),
            ));
        }
        Ok(claims)
    }

    /// The subject token: an active token of ours, or a trusted issuer's JWT
    /// meant for this server or for the exchanging client.
    async fn exchange_subject(&self, token: &str, client: &Client) -> Result<Subject, Error> {
        if !self.is_external(token) {
            let claims = self.active_token(token, "subject_token").await?;
            let named_actor = UnverifiedJwt::parse(token)
                .ok()
                .and_then(|j| j.insecure_peek_claims::<MayAct>().ok())
                .and_then(|m| m.may_act)
                .and_then(|m| m.sub);
            return Ok(Subject {
                issued_to_client: claims.client_id == client.client_id.as_str(),
                scope: Some(
                    ScopeSet::parse(&claims.scope)
                        .map_err(|e| Error::InvalidRequest(e.to_string().into()))?,
                ),
                named_actor,
                external: None,
                claims,
            });
        }
        let jwt = self
            .verify_external(token, client, "subject_token", Error::InvalidRequest)
            .await?;
        let token_endpoint = self.settings.endpoint("/token");
        let meant_for = [
            self.settings.issuer.as_str(),
            token_endpoint.as_str(),
            client.client_id.as_str(),
        ];
        if !jwt.claims.aud.contains_any(&meant_for) {
            return Err(Error::InvalidRequest(
                "the subject_token is meant for another audience".into(),
            ));
        }
        let scope = jwt
            .claims
            .scope
            .as_deref()
            .map(ScopeSet::parse)
            .transpose()
            .map_err(|e| Error::InvalidRequest(e.to_string().into()))?;
        Ok(Subject {
            issued_to_client: jwt.claims.aud.contains_any(&[client.client_id.as_str()])
                || jwt.claims.client_id.as_deref() == Some(client.client_id.as_str()),
            claims: AccessTokenClaims {
                iss: jwt.claims.iss.clone(),
                sub: jwt.sub,
                aud: String::new(),
                exp: jwt.exp,
                iat: jwt.claims.iat.unwrap_or(0),
                jti: jwt.claims.jti.clone().unwrap_or_default(),
                client_id: jwt.claims.client_id.clone().unwrap_or_default(),
                scope: String::new(),
                act: None,
                cnf: None,
            },
            scope,
            named_actor: None,
            external: Some(jwt.claims.iss),
        })
    }

    pub(crate) async fn exchange(
        &self,
        jkt: Option<String>,
        client: &Client,
        request: ExchangeRequest,
        event: &mut NewEvent,
    ) -> Result<TokenResponse, Error> {
        let ExchangeRequest {
            subject_token,
            actor_token,
            requested,
            scope,
            resource,
            audience,
        } = request;
        let subject = self.exchange_subject(&subject_token, client).await?;
        event.subject = Some(subject.claims.sub.clone());
        let actor_sub = match &actor_token {
            Some(t) => {
                let actor = self.active_token(t, "actor_token").await?;
                if actor.client_id != client.client_id.as_str() {
                    return Err(Error::InvalidRequest(
                        "the actor_token belongs to another client".into(),
                    ));
                }
                actor.sub
            }
            None => client.client_id.to_string(),
        };
        // Who may act for whom. A trusted issuer's token is checked against
        // that issuer's client list and its audience (`exchange_subject`);
        // our own tokens against `may_act_for` and `may_act`, even the
        // client's own when it holds it for a user (consent covers one
        // resource, not others). A client's token for itself needs no policy.
        let for_itself =
            subject.issued_to_client && subject.claims.sub == client.client_id.as_str();
        if subject.external.is_none() && !for_itself {
            let named_by_token = subject
                .named_actor
                .as_deref()
                .is_some_and(|s| s == actor_sub || s == client.client_id.as_str());
            let by_policy = client
                .may_act_for
                .iter()
                .any(|c| c == "*" || *c == subject.claims.client_id);
            if !(named_by_token || by_policy) {
                return Err(Error::InvalidGrant(
                    format!(
                        "client may not act for tokens of {}",
                        subject.claims.client_id
                    )
                    .into(),
                ));
            }
        }
        // The chain: the new actor outermost, the subject token's chain inside.
        let holder = &subject.claims.client_id;
        let actor = Actor {
            sub: actor_sub,
            client_id: Some(client.client_id.to_string()),
            act: subject.claims.act.clone().map(Box::new).or_else(|| {
                // The subject token's own holder, when it was not already acting for someone.
                (!holder.is_empty() && *holder != subject.claims.sub).then(|| {
                    Box::new(Actor {
                        sub: holder.clone(),
                        client_id: Some(holder.clone()),
                        act: None,
                    })
                })
            }),
        };
        if actor.depth() > self.settings.max_delegation_depth {
            return Err(Error::InvalidRequest(
                format!(
                    "the delegation chain would exceed {} actors",
                    self.settings.max_delegation_depth
                )
                .into(),
            ));
        }
        // A bound chain stays bound: a DPoP-bound subject token is exchanged
        // only for a token bound to the actor's own key.
        if subject.claims.cnf.is_some() && jkt.is_none() {
            return Err(Error::InvalidDpopProof(
                "the subject_token is DPoP-bound: send a DPoP proof so the new token is bound too"
                    .into(),
            ));
        }
        let now = self.clock.now();
        if subject.claims.exp <= now {
            return Err(Error::InvalidRequest("the subject_token expired".into()));
        }
        if let RequestedTokenType::Jwt | RequestedTokenType::IdJag = requested {
            // A grant for another domain's authorization server: it decides
            // what the scope means there.
            let delegated = (!subject.issued_to_client || actor_token.is_some()).then_some(&actor);
            return self
                .issue_peer_grant(
                    client,
                    PeerGrantRequest {
                        id_jag: requested == RequestedTokenType::IdJag,
                        audience: audience.as_deref(),
                        resource: resource.as_ref(),
                        scope: scope.as_ref(),
                        subject: &subject.claims.sub,
                        actor: delegated,
                        not_after: subject.claims.exp,
                        jkt,
                    },
                    event,
                )
                .await;
        }
        if audience.is_some() {
            return Err(Error::InvalidTarget(
                "name the target with resource, not audience".into(),
            ));
        }
        // The audience: one the actor may use (default: the subject token's).
        let target = match resource {
            Some(r) => r,
            None => ResourceUri::parse(&subject.claims.aud)
                .map_err(|_| Error::InvalidTarget("resource is required".into()))?,
        };
        if !client.may_use(&target) {
            return Err(Error::InvalidTarget(
                "the actor may not use this resource".into(),
            ));
        }
        let res = self
            .store
            .get_resource(&target)
            .await?
            .ok_or_else(|| Error::InvalidTarget("unknown resource".into()))?;
        event.audience = Some(res.id.to_string());
        // The scope: never more than the subject held (when it states a
        // scope), the actor may hold, and the resource defines.
        let mut ceiling = client.scopes.intersection(&res.scope_set());
        if let Some(held) = &subject.scope {
            ceiling = ceiling.intersection(held);
        }
        let granted = within_ceiling(ceiling, scope, "exchange may only narrow; not allowed")?;
        if granted.is_empty() {
            return Err(Error::InvalidScope(
                "nothing of the subject token's scope applies here".into(),
            ));
        }
        let extras = Extras {
            delegation: Some((actor, subject.claims.exp)),
            jkt,
            parent_jti: Some(subject.claims.jti.clone()),
            note: subject
                .external
                .map(|iss| format!("subject token from {iss}")),
        };
        if requested == RequestedTokenType::Biscuit {
            return self
                .issue_biscuit(client, &subject.claims.sub, &res, granted, extras)
                .await;
        }
        let mut issued = self
            .issue(client, &subject.claims.sub, &res, granted, extras)
            .await?;
        issued.response.issued_token_type = Some(ISSUED_ACCESS_TOKEN.to_owned());
        Ok(issued.response)
    }

    /// Audits an issued token and, for one exchanged from another
    /// (`lineage`: its `jti`, the parent's, its expiry), records at the same
    /// time which token it came from, so that revoking the parent revokes
    /// it; both are done before the token is answered. A revocation of the
    /// parent that committed after the subject token was checked, but before
    /// the record, found nothing to cascade to: the store says so, and the
    /// token is revoked itself and the exchange refused.
    pub(crate) async fn audit_issued(
        &self,
        event: NewEvent,
        lineage: Option<(&str, &str, UnixTime)>,
    ) -> Result<(), Error> {
        let Some((jti, parent, expires_at)) = lineage else {
            return self.audit.record(event).await;
        };
        let (parent_revoked, audited) = tokio::join!(
            self.store.record_exchange(jti, parent, expires_at),
            self.audit.record(event)
        );
        audited?;
        if parent_revoked? {
            self.store.revoke_token(jti, expires_at).await?;
            return Err(Error::InvalidRequest(
                "the subject_token was revoked".into(),
            ));
        }
        Ok(())
    }

    /// Mints a Biscuit stating what [`Authority::issue`] would put in a JWT,
    /// and audits it before returning it.
    async fn issue_biscuit(
        &self,
        client: &Client,
        subject: &str,
        resource: &crate::model::Resource,
        scope: ScopeSet,
        extras: Extras,
    ) -> Result<TokenResponse, Error> {
        let now = self.clock.now();
        let ttl = self.lifetime(resource, &extras, now);
        let actors: Vec<ActorEntry> = extras
            .delegation
            .as_ref()
            .map(|(a, _)| {
                a.chain()
                    .map(|a| ActorEntry {
                        sub: a.sub.clone(),
                        client_id: a.client_id.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let jti = random_token(16);
        let snapshot = self.biscuit_keys.snapshot();
        let root = snapshot
            .biscuit_root(now)
            .ok_or_else(|| Error::Keys("no active biscuit root key".into()))?;
        let token = mandate_biscuit::mint(
            root,
            &Grant {
                issuer: &self.settings.issuer,
                subject,
                client_id: client.client_id.as_str(),
                audience: resource.id.as_str(),
                scopes: &scope,
                token_id: &jti,
                expires_at: now + ttl,
                actors: &actors,
                jkt: extras.jkt.as_deref(),
            },
        )
        .map_err(|e| Error::Keys(e.to_string().into()))?;
        let mut event = self.event("token.exchanged", Outcome::Success);
        event.client_id = Some(client.client_id.to_string());
        event.subject = Some(subject.to_owned());
        event.audience = Some(resource.id.to_string());
        event.scopes = Some(scope.to_string());
        event.jti = Some(jti.clone());
        event.reason = Some(format!(
            "biscuit; acting chain: {}; exchanged from jti {}",
            extras
                .delegation
                .as_ref()
                .map_or_else(|| "-".to_owned(), |(a, _)| a.describe()),
            extras.parent_jti.as_deref().unwrap_or("-")
        ));
        let lineage = extras
            .parent_jti
            .as_deref()
            .map(|parent| (jti.as_str(), parent, now + ttl));
        self.audit_issued(event, lineage).await?;
        self.mark_activated(client).await?;
        Ok(TokenResponse {
            access_token: token,
            token_type: if extras.jkt.is_some() {
                "DPoP"
            } else {
                "Bearer"
            },
            expires_in: ttl,
            scope: scope.to_string(),
            refresh_token: None,
            issued_token_type: Some(mandate_biscuit::TOKEN_TYPE.to_owned()),
        })
    }
}
