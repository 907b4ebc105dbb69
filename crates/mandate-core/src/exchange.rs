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
//! names the actor.

use mandate_audit::{NewEvent, Outcome};
use mandate_biscuit::{ActorEntry, Grant};
use mandate_jose::UnverifiedJwt;
use mandate_types::{random_token, ResourceUri, ScopeSet};
use serde::Deserialize;

use crate::authority::Authority;
use crate::model::Client;
use crate::token::{AccessTokenClaims, Actor, Extras, RequestedTokenType, TokenResponse};
use crate::Error;

/// The RFC 8693 type of what token exchange issues.
pub const ISSUED_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

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

    // The grant's own parameters, spelled out: bundling them would only
    // rename the token request the caller already parsed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn exchange(
        &self,
        jkt: Option<String>,
        client: &Client,
        subject_token: &str,
        actor_token: Option<&str>,
        requested: RequestedTokenType,
        scope: Option<ScopeSet>,
        resource: Option<ResourceUri>,
        event: &mut NewEvent,
    ) -> Result<TokenResponse, Error> {
        let subject = self.active_token(subject_token, "subject_token").await?;
        event.subject = Some(subject.sub.clone());
        let actor_sub = match actor_token {
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
        // Who may act for whom.
        let named_by_token = UnverifiedJwt::parse(subject_token)
            .ok()
            .and_then(|j| j.insecure_peek_claims::<MayAct>().ok())
            .and_then(|m| m.may_act)
            .and_then(|m| m.sub)
            .is_some_and(|s| s == actor_sub || s == client.client_id.as_str());
        let by_policy = client
            .may_act_for
            .iter()
            .any(|c| c == "*" || *c == subject.client_id);
        if !(named_by_token || by_policy) {
            return Err(Error::InvalidGrant(
                format!("client may not act for tokens of {}", subject.client_id).into(),
            ));
        }
        // The chain: the new actor outermost, the subject token's chain inside.
        let actor = Actor {
            sub: actor_sub,
            client_id: Some(client.client_id.to_string()),
            act: subject.act.clone().map(Box::new).or_else(|| {
                // The subject token's own holder, when it was not already acting for someone.
                (subject.client_id != subject.sub).then(|| {
                    Box::new(Actor {
                        sub: subject.client_id.clone(),
                        client_id: Some(subject.client_id.clone()),
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
        // The audience: one the actor may use (default: the subject token's).
        let target = match resource {
            Some(r) => r,
            None => ResourceUri::parse(&subject.aud).map_err(|e| Error::InvalidTarget(e.into()))?,
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
        // The scope: never more than the subject held, the actor may hold, and the resource defines.
        let held = ScopeSet::parse(&subject.scope)
            .map_err(|e| Error::InvalidRequest(e.to_string().into()))?;
        let ceiling = held
            .intersection(&client.scopes)
            .intersection(&res.scope_set());
        let granted = match scope {
            Some(s) if !s.is_empty() => {
                let excess = s.difference(&ceiling);
                if !excess.is_empty() {
                    return Err(Error::InvalidScope(
                        format!("exchange may only narrow; not allowed: {excess}").into(),
                    ));
                }
                s
            }
            _ => ceiling,
        };
        if granted.is_empty() {
            return Err(Error::InvalidScope(
                "nothing of the subject token's scope applies here".into(),
            ));
        }
        let now = self.clock.now();
        if subject.exp <= now {
            return Err(Error::InvalidRequest("the subject_token expired".into()));
        }
        let extras = Extras {
            delegation: Some((actor, subject.exp)),
            jkt,
            parent_jti: Some(subject.jti.clone()),
        };
        if requested == RequestedTokenType::Biscuit {
            return self
                .issue_biscuit(client, &subject.sub, &res, granted, extras)
                .await;
        }
        let mut issued = self
            .issue(client, &subject.sub, &res, granted, extras)
            .await?;
        issued.response.issued_token_type = Some(ISSUED_ACCESS_TOKEN.to_owned());
        Ok(issued.response)
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
        event.jti = Some(jti);
        event.reason = Some(format!(
            "biscuit; acting chain: {}; exchanged from jti {}",
            extras
                .delegation
                .as_ref()
                .map_or_else(|| "-".to_owned(), |(a, _)| a.describe()),
            extras.parent_jti.as_deref().unwrap_or("-")
        ));
        self.audit.record(event).await?;
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
