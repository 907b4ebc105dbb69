//! RFC 7662 introspection and RFC 7009 revocation of Mandate's own access
//! tokens: JWTs and Biscuits (revoking a Biscuit revokes its `token_id`, so
//! every attenuation of it stops at the gateway).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mandate_audit::Outcome;
use mandate_jose::UnverifiedJwt;
use serde::Serialize;

use crate::authority::Authority;
use crate::client_auth::PresentedClient;
use crate::form::FormParams;
use crate::keyring::KeySnapshot;
use crate::token::{AccessTokenClaims, ACCESS_TOKEN_TYP};
use crate::Error;

/// Most verified tokens remembered.
const MAX_VERIFIED_TOKENS: usize = 10_000;

/// Our own access tokens whose signature, issuer and `typ` were checked,
/// kept until they expire: token exchange and introspection see the same
/// token again and again (an agent exchanges its incoming token for each
/// sub-call), and the signature check was most of an exchange's cost. Tied
/// to the key snapshot that verified them, so a key reload or rotation
/// starts it afresh. Expiry is checked on every use; revocation is the
/// caller's, on every use.
#[derive(Default)]
pub(crate) struct VerifiedTokens(Mutex<Option<VerifiedBy>>);

/// The tokens one key snapshot verified.
struct VerifiedBy {
    keys: Arc<KeySnapshot>,
    tokens: HashMap<String, AccessTokenClaims>,
}

impl VerifiedTokens {
    fn get(&self, keys: &Arc<KeySnapshot>, token: &str) -> Option<AccessTokenClaims> {
        let cache = self.0.lock().ok()?;
        let verified = cache.as_ref().filter(|v| Arc::ptr_eq(&v.keys, keys))?;
        verified.tokens.get(token).cloned()
    }

    fn put(&self, keys: &Arc<KeySnapshot>, token: &str, claims: &AccessTokenClaims, now: i64) {
        let Ok(mut cache) = self.0.lock() else { return };
        if !cache.as_ref().is_some_and(|v| Arc::ptr_eq(&v.keys, keys)) {
            *cache = Some(VerifiedBy {
                keys: Arc::clone(keys),
                tokens: HashMap::new(),
            });
        }
        let Some(VerifiedBy { tokens, .. }) = cache.as_mut() else {
            return;
        };
        if tokens.len() >= MAX_VERIFIED_TOKENS {
            tokens.retain(|_, c| c.exp > now);
            if tokens.len() >= MAX_VERIFIED_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(token.to_owned(), claims.clone());
    }
}

/// An RFC 7662 §2.2 response. Inactive tokens say nothing more.
#[derive(Debug, Serialize)]
pub struct IntrospectionResponse {
    /// Whether the token is active.
    pub active: bool,
    /// The claims, for an active token.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub claims: Option<AccessTokenClaims>,
    /// `Bearer`, or `DPoP` for a DPoP-bound token (RFC 9449 §6.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
}

impl Authority {
    /// Checks signature, issuer, `typ` and expiry of one of our access tokens.
    /// `None` for anything else: a foreign, forged, expired or garbled token.
    pub async fn verify_access_token(&self, token: &str) -> Option<AccessTokenClaims> {
        let now = self.clock.now();
        let snapshot = self.keys.snapshot();
        if let Some(claims) = self.verified.get(&snapshot, token) {
            return (claims.exp > now).then_some(claims);
        }
        let jwt = UnverifiedJwt::parse(token).ok()?;
        if jwt.typ() != Some(ACCESS_TOKEN_TYP) {
            return None;
        }
        let claims = jwt
            .verify::<AccessTokenClaims>(snapshot.published())
            .ok()?
            .claims;
        if claims.iss != self.settings.issuer || claims.exp <= now {
            return None;
        }
        self.verified.put(&snapshot, token, &claims, now);
        Some(claims)
    }

    /// Checks a Biscuit of ours: signatures against the published root keys
    /// and expiry; its authority block read as access token claims (`iat`
    /// unknown, 0). For introspection and revocation only: token exchange
    /// never takes a Biscuit, whose appended checks a JWT could not carry.
    pub fn verify_biscuit_token(&self, token: &str) -> Option<AccessTokenClaims> {
        if token.contains('.') {
            return None;
        }
        let snapshot = self.biscuit_keys.snapshot();
        let roots = mandate_biscuit::RootKeys::new(snapshot.published_roots());
        let c = roots.verify(token).ok()?.claims;
        if c.issuer != self.settings.issuer || c.expires_at <= self.clock.now() {
            return None;
        }
        // The chain, current actor outermost.
        let act = c.actors.iter().rev().fold(None, |inner, a| {
            Some(crate::token::Actor {
                sub: a.sub.clone(),
                client_id: a.client_id.clone(),
                act: inner.map(Box::new),
            })
        });
        Some(AccessTokenClaims {
            iss: c.issuer,
            sub: c.subject,
            aud: c.audience,
            exp: c.expires_at,
            iat: 0,
            jti: c.token_id,
            client_id: c.client_id,
            scope: c.scopes.to_string(),
            act,
            cnf: c.jkt.map(|jkt| crate::token::Confirmation { jkt }),
        })
    }

    /// One of our JWT access tokens or Biscuits, active and not revoked.
    async fn verify_any_token(&self, token: &str) -> Option<AccessTokenClaims> {
        match self.verify_access_token(token).await {
            Some(c) => Some(c),
            None => self.verify_biscuit_token(token),
        }
    }

    /// RFC 7662. The caller must be an authenticated client.
    pub async fn introspect(
        &self,
        authorization: Option<&str>,
        form: &FormParams,
    ) -> Result<IntrospectionResponse, Error> {
        let presented = PresentedClient::from_request(authorization, form)?;
        let caller = self
            .authenticate(presented, &self.settings.endpoint("/introspect"))
            .await?;
        // Anyone may register a public client in open mode; introspection
        // is for confidential clients (resource servers) only.
        if caller.auth_method == crate::model::ClientAuthMethod::None {
            return Err(Error::invalid_client(
                false,
                "public clients may not introspect",
            ));
        }
        let token = form.required("token")?;
        let claims = match self.verify_any_token(token).await {
            Some(c) if !self.store.is_revoked(&c.jti).await? => Some(c),
            _ => None,
        };
        Ok(IntrospectionResponse {
            active: claims.is_some(),
            token_type: claims
                .as_ref()
                .map(|c| if c.cnf.is_some() { "DPoP" } else { "Bearer" }),
            claims,
        })
    }

    /// Revokes the family of one of our refresh tokens; unknown tokens are fine.
    async fn revoke_refresh_token(
        &self,
        client: &crate::model::Client,
        token: &str,
    ) -> Result<(), Error> {
        let hash = crate::authorize::digest(token);
        let Some(record) = self.store.peek_refresh(&hash, self.clock.now()).await? else {
            return Ok(());
        };
        let mut event = self.event("refresh.revoked", Outcome::Success);
        event.client_id = Some(client.client_id.to_string());
        event.subject = Some(record.user_id.clone());
        event.audience = Some(record.resource.to_string());
        if record.client_id != client.client_id {
            let error = Error::UnauthorizedClient("token was issued to another client".into());
            event.outcome = Outcome::Failure;
            self.audit_refusal(event, &error).await;
            return Err(error);
        }
        self.store.revoke_refresh_family(&record.family).await?;
        self.audit.record(event).await
    }

    /// RFC 7009. Unknown and invalid tokens are answered with success (§2.2);
    /// a token issued to another client is refused.
    pub async fn revoke(
        &self,
        authorization: Option<&str>,
        form: &FormParams,
    ) -> Result<(), Error> {
        let presented = PresentedClient::from_request(authorization, form)?;
        let client = self
            .authenticate(presented, &self.settings.endpoint("/revoke"))
            .await?;
        let token = form.required("token")?;
        // token_type_hint is optional and only a hint; we revoke access tokens.
        form.single("token_type_hint")?;
        let Some(claims) = self.verify_any_token(token).await else {
            return self.revoke_refresh_token(&client, token).await;
        };
        let mut event = self.event("token.revoked", Outcome::Success);
        event.client_id = Some(client.client_id.to_string());
        event.subject = Some(claims.sub.clone());
        event.audience = Some(claims.aud.clone());
        event.jti = Some(claims.jti.clone());
        if claims.client_id != client.client_id.as_str() {
            let error = Error::UnauthorizedClient("token was issued to another client".into());
            event.outcome = Outcome::Failure;
            self.audit_refusal(event, &error).await;
            return Err(error);
        }
        self.store.revoke_token(&claims.jti, claims.exp).await?;
        self.audit.record(event).await
    }
}
