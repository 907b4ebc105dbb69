//! Redeeming codes and refresh tokens at the token endpoint.
//!
//! Codes are single-use: the first redemption deletes the code and records
//! what it produced; a second redemption revokes that (OAuth 2.1 §4.1.3).
//! Refresh tokens are opaque, stored as hashes, rotated on every use, and a
//! reused (already rotated) token revokes its whole family: whoever holds the
//! newer token loses it too, which is the point (OAuth 2.1 §4.3.1,
//! draft-ietf-oauth-security-topics §4.14).

use mandate_audit::{NewEvent, Outcome};
use mandate_types::{random_token, ResourceUri, ScopeSet, UnixTime};

use crate::authority::Authority;
use crate::authorize::{
    digest, has_offline_access, pkce_matches, without_offline_access, CodeRecord, RedeemedCode,
    CODE_TTL,
};
use crate::model::{Client, GrantType, RefreshRecord, RefreshUse};
use crate::token::{within_ceiling, Extras, Issued, TokenResponse};
use crate::Error;

fn bad_grant(why: &'static str) -> Error {
    Error::InvalidGrant(why.into())
}

/// A bound refresh token needs a proof of its key (RFC 9449 §5).
fn check_refresh_binding(record: &RefreshRecord, jkt: Option<&str>) -> Result<(), Error> {
    match (&record.jkt, jkt) {
        (None, _) => Ok(()),
        (Some(bound), Some(proved)) if bound == proved => Ok(()),
        (Some(_), None) => Err(Error::InvalidDpopProof(
            "this refresh token is DPoP-bound: send a proof of its key".into(),
        )),
        (Some(_), Some(_)) => Err(Error::InvalidDpopProof(
            "the proof is signed by another key than the refresh token is bound to".into(),
        )),
    }
}

impl Authority {
    // The grant's own parameters, spelled out: bundling them would only
    // rename the token request the caller already parsed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn redeem_code(
        &self,
        jkt: Option<String>,
        client: &Client,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        resource: Option<ResourceUri>,
        event: &mut NewEvent,
    ) -> Result<TokenResponse, Error> {
        let now = self.clock.now();
        let key = digest(code);
        let Some(doc) = self.store.take_ephemeral("code", &key, now).await? else {
            if let Some(used) = self.store.take_ephemeral("code_used", &key, now).await? {
                if let Ok(r) = serde_json::from_str::<RedeemedCode>(&used) {
                    self.store.revoke_token(&r.jti, r.exp).await?;
                    if let Some(f) = &r.family {
                        self.store.revoke_refresh_family(f).await?;
                    }
                    let mut e = self.event("code.replayed", Outcome::Failure);
                    e.client_id = Some(client.client_id.to_string());
                    e.jti = Some(r.jti);
                    e.reason =
                        Some("a redeemed code was presented again; its tokens are revoked".into());
                    self.audit.record(e).await?;
                }
            }
            return Err(bad_grant("the code is invalid, expired or already used"));
        };
        let record: CodeRecord =
            serde_json::from_str(&doc).map_err(|e| Error::Keys(e.to_string().into()))?;
        event.subject = Some(record.user_id.clone());
        event.audience = Some(record.request.resource.to_string());
        if record.request.client_id != client.client_id {
            return Err(bad_grant("the code was issued to another client"));
        }
        if record.request.redirect_uri != redirect_uri {
            return Err(bad_grant(
                "redirect_uri differs from the authorization request",
            ));
        }
        if !pkce_matches(verifier, &record.request.code_challenge) {
            return Err(bad_grant("code_verifier does not match the code_challenge"));
        }
        if resource
            .as_ref()
            .is_some_and(|r| r != &record.request.resource)
        {
            return Err(Error::InvalidTarget(
                "resource differs from the authorization request".into(),
            ));
        }
        if self.store.get_grant(&record.grant_id).await?.is_none() {
            return Err(bad_grant("the consent behind this code was revoked"));
        }
        if !self.active_user(&record.user_id).await? {
            return Err(bad_grant("the user is disabled"));
        }
        let res = self
            .store
            .get_resource(&record.request.resource)
            .await?
            .ok_or_else(|| Error::InvalidTarget("the resource no longer exists".into()))?;
        // With offline_access gating, a refresh token needs offline_access
        // in the consented scope, which the access token does not carry.
        let gated = self.settings.refresh_requires_offline_access;
        let offline = !gated || has_offline_access(&record.scope);
        let token_scope = if gated {
            without_offline_access(&record.scope)
        } else {
            record.scope.clone()
        };
        let jkt_for_refresh = jkt
            .clone()
            .filter(|_| client.auth_method == crate::model::ClientAuthMethod::None);
        let Issued {
            mut response,
            jti,
            exp,
        } = self
            .issue(
                client,
                &record.user_id,
                &res,
                token_scope,
                Extras {
                    delegation: None,
                    jkt,
                    parent_jti: None,
                    note: None,
                },
            )
            .await?;
        let family = if offline && client.grant_types.contains(&GrantType::RefreshToken) {
            let family = random_token(16);
            let rec = RefreshRecord {
                family: family.clone(),
                grant_id: record.grant_id.clone(),
                client_id: client.client_id.clone(),
                user_id: record.user_id.clone(),
                resource: record.request.resource.clone(),
                scopes: record.scope.clone(),
                family_started_at: now,
                // A public client has no credential of its own: its refresh
                // tokens are bound to the key it proved (RFC 9449 §5).
                jkt: jkt_for_refresh.clone(),
            };
            response.refresh_token = Some(self.new_refresh(&rec, now).await?);
            Some(family)
        } else {
            None
        };
        let used = serde_json::to_string(&RedeemedCode { jti, exp, family })
            .map_err(|e| Error::Keys(e.to_string().into()))?;
        self.store
            .put_ephemeral("code_used", &key, &used, now + CODE_TTL * 10)
            .await?;
        Ok(response)
    }

    async fn new_refresh(&self, record: &RefreshRecord, now: UnixTime) -> Result<String, Error> {
        let token = random_token(32);
        let expires = (now + self.settings.refresh_idle_ttl)
            .min(record.family_started_at + self.settings.refresh_absolute_ttl);
        self.store
            .insert_refresh(&digest(&token), record, expires)
            .await?;
        Ok(token)
    }

    pub(crate) async fn refresh(
        &self,
        jkt: Option<String>,
        client: &Client,
        token: &str,
        scope: Option<ScopeSet>,
        resource: Option<ResourceUri>,
        event: &mut NewEvent,
    ) -> Result<TokenResponse, Error> {
        let now = self.clock.now();
        let hash = digest(token);
        // A request's own mistakes (wider scope, another resource, only
        // offline_access) are refused before the token is spent, so the
        // client can simply retry.
        if self.settings.refresh_requires_offline_access
            && scope
                .as_ref()
                .is_some_and(|s| !s.is_empty() && without_offline_access(s).is_empty())
        {
            return Err(Error::InvalidScope(
                "a refresh must keep at least one scope of the resource".into(),
            ));
        }
        if let Some(peeked) = self.store.peek_refresh(&hash, now).await? {
            // A bound token without its key is refused before it is spent,
            // so a thief cannot burn the holder's family.
            check_refresh_binding(&peeked, jkt.as_deref())?;
            if peeked.client_id == client.client_id {
                if resource.as_ref().is_some_and(|r| r != &peeked.resource) {
                    return Err(Error::InvalidTarget(
                        "a refresh may not change the resource".into(),
                    ));
                }
                if let Some(excess) = scope
                    .as_ref()
                    .map(|s| s.difference(&peeked.scopes))
                    .filter(|e| !e.is_empty())
                {
                    return Err(Error::InvalidScope(
                        format!("a refresh may not widen scope: {excess}").into(),
                    ));
                }
            }
        }
        let record = match self.store.use_refresh(&hash, now).await? {
            RefreshUse::Fresh(r) => r,
            RefreshUse::Reused { family } => {
                let revoked = self.store.revoke_refresh_family(&family).await?;
                let mut e = self.event("refresh.reuse_detected", Outcome::Failure);
                e.client_id = Some(client.client_id.to_string());
                e.reason = Some(format!("a rotated refresh token was presented again; {revoked} tokens of its family revoked"));
                self.audit.record(e).await?;
                return Err(bad_grant(
                    "the refresh token was already used; its family is revoked",
                ));
            }
            RefreshUse::Unknown => {
                return Err(bad_grant("the refresh token is invalid or expired"))
            }
        };
        event.subject = Some(record.user_id.clone());
        event.audience = Some(record.resource.to_string());
        check_refresh_binding(&record, jkt.as_deref())?;
        if record.client_id != client.client_id {
            self.store.revoke_refresh_family(&record.family).await?;
            return Err(bad_grant("the refresh token was issued to another client"));
        }
        if record.family_started_at + self.settings.refresh_absolute_ttl <= now {
            return Err(bad_grant(
                "the refresh token family reached its absolute lifetime",
            ));
        }
        let Some(grant) = self.store.get_grant(&record.grant_id).await? else {
            return Err(bad_grant("the consent behind this token was revoked"));
        };
        // Disabling revokes the user's families; this covers one rotated
        // while that happened.
        if !self.active_user(&record.user_id).await? {
            self.store.revoke_refresh_family(&record.family).await?;
            return Err(bad_grant("the user is disabled"));
        }
        if resource.as_ref().is_some_and(|r| r != &record.resource) {
            return Err(Error::InvalidTarget(
                "a refresh may not change the resource".into(),
            ));
        }
        let ceiling = record.scopes.intersection(&grant.scopes);
        let gated = self.settings.refresh_requires_offline_access;
        if gated && !has_offline_access(&ceiling) {
            return Err(bad_grant(
                "offline_access was not consented, or the consent no longer includes it",
            ));
        }
        let scope = within_ceiling(ceiling, scope, "a refresh may not widen scope")?;
        let scope = if gated {
            without_offline_access(&scope)
        } else {
            scope
        };
        if gated && scope.is_empty() {
            return Err(Error::InvalidScope(
                "a refresh must keep at least one scope of the resource".into(),
            ));
        }
        let res = self
            .store
            .get_resource(&record.resource)
            .await?
            .ok_or_else(|| Error::InvalidTarget("the resource no longer exists".into()))?;
        let mut issued = self
            .issue(
                client,
                &record.user_id,
                &res,
                scope,
                Extras {
                    delegation: None,
                    jkt,
                    parent_jti: None,
                    note: None,
                },
            )
            .await?;
        issued.response.refresh_token = Some(self.new_refresh(&record, now).await?);
        Ok(issued.response)
    }
}
