//! Operator operations behind the admin API and the CLI. Each is audited.

use std::collections::{BTreeMap, BTreeSet};

use mandate_audit::Outcome;
use mandate_jose::JwkSet;
use mandate_types::{ClientId, ClientSecret, ResourceUri, Scope, ScopeSet};
use serde::Deserialize;

use crate::authority::Authority;
use crate::keyring::KeyInfo;
use crate::model::{
    Client, ClientAuthMethod, ClientKeys, ClientOrigin, GrantType, KeyPurpose, Resource,
    StoredSecret,
};
use crate::registration::check_redirect_uri;
use crate::Error;

/// Longest access token lifetime anywhere (seconds): retired signing keys stay
/// published this long, so no token outlives its key's publication.
pub const MAX_ACCESS_TOKEN_TTL: i64 = 24 * 3600;

/// What an operator asks for when creating a client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    /// Chosen id; generated when absent.
    #[serde(default)]
    pub client_id: Option<ClientId>,
    /// Name.
    pub name: String,
    /// Grant types.
    pub grant_types: BTreeSet<GrantType>,
    /// Most it may ever get.
    pub scopes: ScopeSet,
    /// Audiences it may use; absent means all.
    #[serde(default)]
    pub resources: Option<BTreeSet<ResourceUri>>,
    /// Authentication method; `client_secret_basic`, or `private_key_jwt` when
    /// keys are given.
    #[serde(default)]
    pub token_endpoint_auth_method: Option<ClientAuthMethod>,
    /// Inline public keys.
    #[serde(default)]
    pub jwks: Option<JwkSet>,
    /// Or where to fetch them.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Redirect URIs.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Clients whose tokens it may exchange (RFC 8693); `*` for any.
    #[serde(default)]
    pub may_act_for: Vec<String>,
    /// Every token must be DPoP-bound.
    #[serde(default)]
    pub require_dpop: bool,
}

/// What an operator asks for when creating a resource.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewResource {
    /// The resource identifier.
    pub id: ResourceUri,
    /// Name.
    pub name: String,
    /// Scope to description.
    #[serde(default)]
    pub scopes: BTreeMap<Scope, String>,
    /// Token lifetime, seconds.
    #[serde(default)]
    pub access_token_ttl: Option<i64>,
}

impl Authority {
    /// Creates a client; returns it and its one-time secret, if it uses one.
    pub async fn create_client(
        &self,
        new: NewClient,
        origin: ClientOrigin,
    ) -> Result<(Client, Option<ClientSecret>), Error> {
        let keys = match (new.jwks, new.jwks_uri) {
            (Some(_), Some(_)) => {
                return Err(Error::Conflict("give jwks or jwks_uri, not both".into()))
            }
            (Some(j), None) => {
                j.check()
                    .map_err(|e| Error::Conflict(e.to_string().into()))?;
                Some(ClientKeys::Jwks(j))
            }
            (None, Some(u)) => Some(ClientKeys::JwksUri(u)),
            (None, None) => None,
        };
        let auth_method = new.token_endpoint_auth_method.unwrap_or(if keys.is_some() {
            ClientAuthMethod::PrivateKeyJwt
        } else {
            ClientAuthMethod::ClientSecretBasic
        });
        if (auth_method == ClientAuthMethod::PrivateKeyJwt) != keys.is_some() {
            return Err(Error::Conflict(
                "private_key_jwt needs keys, and only it".into(),
            ));
        }
        for uri in &new.redirect_uris {
            check_redirect_uri(uri)?;
        }
        let client_id = new.client_id.unwrap_or_else(ClientId::generate);
        if self.store.get_client(&client_id).await?.is_some() {
            return Err(Error::Conflict("a client with this id exists".into()));
        }
        let secret = auth_method.uses_secret().then(ClientSecret::generate);
        let client = Client {
            client_id,
            name: new.name,
            grant_types: new.grant_types,
            scopes: new.scopes,
            resources: new.resources,
            auth_method,
            secrets: secret
                .iter()
                .map(|s| StoredSecret {
                    hash: s.hash(),
                    expires_at: None,
                })
                .collect(),
            keys,
            redirect_uris: new.redirect_uris,
            may_act_for: new.may_act_for,
            require_dpop: new.require_dpop,
            origin,
            registration_token: None,
            created_at: self.clock.now(),
            activated_at: None,
        };
        self.store.put_client(&client).await?;
        let mut event = self.event("client.created", Outcome::Success);
        event.client_id = Some(client.client_id.to_string());
        event.scopes = Some(client.scopes.to_string());
        self.audit.record(event).await?;
        Ok((client, secret))
    }

    /// Issues a new secret; previous secrets keep working for `overlap` seconds.
    pub async fn rotate_client_secret(
        &self,
        id: &ClientId,
        overlap: i64,
    ) -> Result<ClientSecret, Error> {
        let mut client = self
            .store
            .get_client(id)
            .await?
            .ok_or(Error::NotFound("client"))?;
        if !client.auth_method.uses_secret() {
            return Err(Error::Conflict(
                "client does not authenticate with a secret".into(),
            ));
        }
        let now = self.clock.now();
        let until = now + overlap.max(0);
        client
            .secrets
            .retain(|s| s.expires_at.is_none_or(|t| t > now));
        for s in &mut client.secrets {
            s.expires_at = Some(s.expires_at.map_or(until, |t| t.min(until)));
        }
        let secret = ClientSecret::generate();
        client.secrets.push(StoredSecret {
            hash: secret.hash(),
            expires_at: None,
        });
        self.store.put_client(&client).await?;
        let mut event = self.event("client.secret_rotated", Outcome::Success);
        event.client_id = Some(client.client_id.to_string());
        event.reason = Some(format!("previous secrets valid for {overlap}s"));
        self.audit.record(event).await?;
        Ok(secret)
    }

    /// Deletes a client.
    pub async fn delete_client(&self, id: &ClientId) -> Result<(), Error> {
        if !self.store.delete_client(id).await? {
            return Err(Error::NotFound("client"));
        }
        let mut event = self.event("client.deleted", Outcome::Success);
        event.client_id = Some(id.to_string());
        self.audit.record(event).await
    }

    /// Creates or replaces a resource.
    pub async fn put_resource(
        &self,
        new: NewResource,
        from_config: bool,
    ) -> Result<Resource, Error> {
        if new
            .access_token_ttl
            .is_some_and(|t| !(1..=MAX_ACCESS_TOKEN_TTL).contains(&t))
        {
            return Err(Error::Conflict(
                "access_token_ttl must be between 1 second and 24 hours".into(),
            ));
        }
        let resource = Resource {
            id: new.id,
            name: new.name,
            scopes: new.scopes,
            access_token_ttl: new.access_token_ttl,
            from_config,
        };
        self.store.put_resource(&resource).await?;
        if !from_config {
            let mut event = self.event("resource.saved", Outcome::Success);
            event.audience = Some(resource.id.to_string());
            event.scopes = Some(resource.scope_set().to_string());
            self.audit.record(event).await?;
        }
        Ok(resource)
    }

    /// Deletes a resource.
    pub async fn delete_resource(&self, id: &ResourceUri) -> Result<(), Error> {
        if !self.store.delete_resource(id).await? {
            return Err(Error::NotFound("resource"));
        }
        let mut event = self.event("resource.deleted", Outcome::Success);
        event.audience = Some(id.to_string());
        self.audit.record(event).await
    }

    /// Every key with its state: JWS keys, then Biscuit root keys.
    pub fn list_keys(&self) -> Vec<KeyInfo> {
        let now = self.clock.now();
        let mut keys = self.keys.snapshot().infos(now);
        keys.extend(self.biscuit_keys.snapshot().infos(now));
        keys
    }

    /// Rotates the signing keys of one purpose (see [`crate::keyring`]).
    pub async fn rotate_keys(&self, purpose: KeyPurpose) -> Result<KeyInfo, Error> {
        let keyring = match purpose {
            KeyPurpose::Jws => &self.keys,
            KeyPurpose::Biscuit => &self.biscuit_keys,
        };
        let info = keyring.rotate().await?;
        let mut event = self.event("key.rotated", Outcome::Success);
        event.reason = Some(format!(
            "new {} key {} ({}) signs from {}",
            purpose.as_str(),
            info.kid,
            info.alg,
            info.activate_at
        ));
        self.audit.record(event).await?;
        Ok(info)
    }
}
