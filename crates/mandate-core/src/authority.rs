//! The authorization server engine: settings, shared state, client
//! authentication. The grant, registration and admin operations are `impl
//! Authority` blocks in their own modules.

use std::sync::Arc;

use async_trait::async_trait;
use mandate_audit::{Anchor, NewEvent, Outcome};
use mandate_jose::{JwkSet, UnverifiedJwt};
use mandate_types::{ClientId, ClientSecret, Clock, SecretHash};

use crate::audit::AuditLog;
use crate::client_auth::{AssertionClaims, PresentedClient};
use crate::keyring::{Keyring, Keyrings};
use crate::model::{Client, ClientAuthMethod, ClientKeys, GrantType};
use crate::registration::RegistrationPolicy;
use crate::store::Store;
use crate::Error;

/// Fetches a client's `jwks_uri`. The HTTP adapter lives in `mandate-server`
/// and owns timeouts, size limits and caching.
#[async_trait]
pub trait JwksFetcher: Send + Sync + 'static {
    /// Fetches and parses the JWK Set at `uri`.
    async fn fetch_jwks(&self, uri: &str) -> Result<JwkSet, String>;
}

/// Server-wide protocol settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The issuer identifier (RFC 8414), without a trailing slash.
    pub issuer: String,
    /// Default access token lifetime, seconds.
    pub access_token_ttl: i64,
    /// Longest lifetime (`exp - now`) accepted on a client assertion, seconds.
    pub max_assertion_lifetime: i64,
    /// Clock skew tolerated on `nbf`/`iat`/`exp`, seconds.
    pub leeway: i64,
    /// Who may register clients, and with what.
    pub registration: RegistrationPolicy,
    /// Longest `act` chain a token may carry.
    pub max_delegation_depth: usize,
    /// Key of the stateless DPoP nonces.
    pub dpop_nonce_key: [u8; 32],
    /// Whether DPoP proofs at the token endpoint must carry a server nonce.
    pub dpop_nonce_required: bool,
    /// A refresh token unused this long expires, seconds.
    pub refresh_idle_ttl: i64,
    /// A refresh token family ends this long after the authorization, seconds.
    pub refresh_absolute_ttl: i64,
    /// The code grant issues a refresh token only when `offline_access` was
    /// requested and consented (`authorize::OFFLINE_ACCESS`).
    pub refresh_requires_offline_access: bool,
    /// Issuers whose JWTs are accepted, and peers grants are issued for.
    pub trust: crate::trust::Trust,
}

impl Settings {
    /// `issuer` + `path`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

/// Most audit events retention removes in one transaction: a short write
/// lock, so tokens and gateway decisions keep being recorded while a long
/// history is cut.
pub const PRUNE_BATCH: i64 = 10_000;

/// Shortest audit retention, seconds: shorter would remove events before
/// anyone could read or export them.
pub const MIN_AUDIT_RETENTION: i64 = 3600;

/// The authorization server.
pub struct Authority {
    pub(crate) settings: Settings,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) keys: Arc<Keyring>,
    pub(crate) biscuit_keys: Arc<Keyring>,
    pub(crate) audit: AuditLog,
    pub(crate) fetcher: Arc<dyn JwksFetcher>,
    pub(crate) documents: Arc<dyn crate::documents::ClientDocuments>,
    /// Compared against when a client does not exist, so that the time taken
    /// does not reveal which client ids are real.
    dummy_hash: SecretHash,
    /// The same for unknown usernames at sign-in (computed on first use).
    dummy_password: std::sync::OnceLock<String>,
    /// Own access tokens already verified (exchange, introspection).
    pub(crate) verified: crate::introspection::VerifiedTokens,
}

impl Authority {
    /// Assembles the engine from its parts.
    pub fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        keyrings: Keyrings,
        audit: AuditLog,
        fetcher: Arc<dyn JwksFetcher>,
        documents: Arc<dyn crate::documents::ClientDocuments>,
    ) -> Self {
        Self {
            settings,
            store,
            clock,
            keys: keyrings.jws,
            biscuit_keys: keyrings.biscuit,
            audit,
            fetcher,
            documents,
            dummy_hash: ClientSecret::generate().hash(),
            dummy_password: std::sync::OnceLock::new(),
            verified: crate::introspection::VerifiedTokens::default(),
        }
    }

    pub(crate) fn dummy_password_hash(&self) -> &str {
        self.dummy_password
            .get_or_init(crate::users::make_dummy_hash)
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The keyring.
    pub fn keys(&self) -> &Arc<Keyring> {
        &self.keys
    }

    /// The Biscuit root keys.
    pub fn biscuit_keys(&self) -> &Arc<Keyring> {
        &self.biscuit_keys
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// An audit event stamped now.
    pub(crate) fn event(&self, kind: &str, outcome: Outcome) -> NewEvent {
        NewEvent::new(self.clock.now_ms(), kind, outcome)
    }

    /// Retention: removes the audit events recorded more than `keep_secs`
    /// ago from the front of the chain, [`PRUNE_BATCH`] to a transaction,
    /// and records that it did (`audit.pruned`, naming the new anchor), so
    /// the chain itself tells when and where its history was cut. Returns
    /// how many events went, and where the chain now starts. Refuses a
    /// `keep_secs` under [`MIN_AUDIT_RETENTION`].
    pub async fn prune_audit(&self, keep_secs: i64) -> Result<(u64, Anchor), Error> {
        if keep_secs < MIN_AUDIT_RETENTION {
            return Err(Error::InvalidRequest(
                "audit events are kept at least one hour".into(),
            ));
        }
        let before_ms = self
            .clock
            .now_ms()
            .saturating_sub(keep_secs.saturating_mul(1000));
        let mut removed = 0;
        loop {
            let batch = self.store.prune_audit(before_ms, PRUNE_BATCH).await?;
            if batch == 0 {
                break;
            }
            removed += batch;
        }
        let anchor = self.store.audit_anchor().await?;
        if removed > 0 {
            let mut e = self.event("audit.pruned", Outcome::Success);
            e.reason = Some(format!(
                "retention removed {removed} events recorded before {before_ms} ms; \
                 the chain now starts after seq {} (hash {})",
                anchor.seq, anchor.hash
            ));
            self.audit.record(e).await?;
        }
        Ok((removed, anchor))
    }

    /// Authenticates the client behind `presented`. `endpoint` is the URL being
    /// called, accepted as an assertion audience beside the issuer and the
    /// token endpoint.
    pub async fn authenticate(
        &self,
        presented: PresentedClient,
        endpoint: &str,
    ) -> Result<Client, Error> {
        let basic = presented.used_basic();
        let fail = |detail: &'static str| Error::invalid_client(basic, detail);
        match presented {
            PresentedClient::Basic { client_id, secret }
            | PresentedClient::Post { client_id, secret } => {
                let client = self.find_client(&client_id).await?;
                let now = self.clock.now();
                let Some(client) = client else {
                    let _ = self.dummy_hash.matches(&secret);
                    return Err(fail("unknown client"));
                };
                let wanted = if basic {
                    ClientAuthMethod::ClientSecretBasic
                } else {
                    ClientAuthMethod::ClientSecretPost
                };
                let mut matched = false;
                for s in &client.secrets {
                    let live = s.expires_at.is_none_or(|t| t > now);
                    matched |= s.hash.matches(&secret) & live;
                }
                if !matched {
                    return Err(fail("wrong or expired client secret"));
                }
                if client.auth_method != wanted {
                    return Err(fail("client registered for another authentication method"));
                }
                Ok(client)
            }
            PresentedClient::Assertion {
                client_id,
                assertion,
            } => {
                self.authenticate_assertion(client_id, &assertion, endpoint)
                    .await
            }
            PresentedClient::Public { client_id } => match self.find_client(&client_id).await? {
                Some(c) if c.auth_method == ClientAuthMethod::None => Ok(c),
                Some(_) => Err(fail("confidential client sent no credentials")),
                None => Err(fail("unknown client")),
            },
        }
    }

    async fn find_client(&self, raw: &str) -> Result<Option<Client>, Error> {
        match ClientId::parse(raw) {
            Ok(id) => self.client(&id).await,
            Err(_) => Ok(None),
        }
    }

    async fn authenticate_assertion(
        &self,
        form_client_id: Option<String>,
        assertion: &str,
        endpoint: &str,
    ) -> Result<Client, Error> {
        let fail = |detail: &'static str| Error::invalid_client(false, detail);
        let jwt =
            UnverifiedJwt::parse(assertion).map_err(|_| fail("malformed client assertion"))?;
        let peek: AssertionClaims = jwt
            .insecure_peek_claims()
            .map_err(|_| fail("malformed client assertion"))?;
        let (Some(iss), Some(sub)) = (&peek.iss, &peek.sub) else {
            return Err(fail("client assertion needs iss and sub"));
        };
        if iss != sub || form_client_id.as_ref().is_some_and(|id| id != iss) {
            return Err(fail("client assertion iss, sub and client_id differ"));
        }
        let client = self
            .find_client(iss)
            .await?
            .ok_or_else(|| fail("unknown client"))?;
        if client.auth_method != ClientAuthMethod::PrivateKeyJwt {
            return Err(fail("client registered for another authentication method"));
        }
        let jwks = match &client.keys {
            Some(ClientKeys::Jwks(set)) => set.clone(),
            Some(ClientKeys::JwksUri(uri)) => self.fetcher.fetch_jwks(uri).await.map_err(|e| {
                tracing::warn!(client_id = %client.client_id, error = %e, "client jwks_uri fetch failed");
                fail("client keys unavailable")
            })?,
            None => return Err(fail("client has no keys")),
        };
        let verified = jwt
            .verify::<AssertionClaims>(&jwks.keys)
            .map_err(|_| fail("client assertion signature does not verify"))?;
        let claims = verified.claims;
        let now = self.clock.now();
        let leeway = self.settings.leeway;
        let token_endpoint = self.settings.endpoint("/token");
        let accepted = [
            self.settings.issuer.as_str(),
            token_endpoint.as_str(),
            endpoint,
        ];
        if !claims.aud.contains_any(&accepted) {
            return Err(fail("client assertion aud is not this server"));
        }
        let exp = claims
            .exp
            .ok_or_else(|| fail("client assertion has no exp"))?;
        if exp + leeway <= now {
            return Err(fail("client assertion expired"));
        }
        if exp - now > self.settings.max_assertion_lifetime {
            return Err(fail("client assertion lives too long"));
        }
        if claims.nbf.is_some_and(|nbf| nbf > now + leeway)
            || claims.iat.is_some_and(|iat| iat > now + leeway)
        {
            return Err(fail("client assertion not yet valid"));
        }
        let jti = claims
            .jti
            .ok_or_else(|| fail("client assertion has no jti"))?;
        if jti.is_empty() || jti.len() > 256 {
            return Err(fail("client assertion jti is empty or too long"));
        }
        // Client ids hold no spaces, so "client jti" is unambiguous.
        let key = format!("{} {jti}", client.client_id);
        if !self
            .store
            .use_once("client_assertion", &key, exp + leeway)
            .await?
        {
            return Err(fail("client assertion replayed"));
        }
        Ok(client)
    }

    /// Records a refusal in the audit trail (best effort: the refusal stands
    /// whether or not the event could be written).
    pub(crate) async fn audit_refusal(&self, mut event: NewEvent, error: &Error) {
        event.reason = Some(match error.log_detail() {
            Some(d) => format!("{error}: {d}"),
            None => error.to_string(),
        });
        if self.audit.record(event).await.is_err() {
            tracing::error!("could not audit a refusal");
        }
    }

    /// Checks that `client` may use `grant`.
    pub(crate) fn check_grant(client: &Client, grant: GrantType) -> Result<(), Error> {
        if client.grant_types.contains(&grant) {
            Ok(())
        } else {
            Err(Error::UnauthorizedClient(
                format!("client may not use the {} grant", grant.as_str()).into(),
            ))
        }
    }
}
