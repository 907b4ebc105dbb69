//! RFC 7591 dynamic client registration and RFC 7592 management.
//!
//! Who may register is the operator's choice ([`RegistrationMode`]); what a
//! registered client may do is bounded by [`RegistrationPolicy`]. In `open`
//! mode the default policy does not allow `client_credentials`: anyone on the
//! network could otherwise mint themselves a machine identity.

use std::collections::BTreeSet;

use mandate_audit::Outcome;
use mandate_jose::JwkSet;
use mandate_types::{ClientId, ClientSecret, ScopeSet, SecretHash};
use serde::{Deserialize, Serialize};

use crate::authority::Authority;
use crate::model::{Client, ClientAuthMethod, ClientKeys, ClientOrigin, GrantType, StoredSecret};
use crate::Error;

/// Most redirect URIs one client may register.
pub const MAX_REDIRECT_URIS: usize = 10;
/// Longest redirect URI or `jwks_uri`.
pub const MAX_URI_LEN: usize = 2048;
/// Longest `client_name`.
pub const MAX_CLIENT_NAME_LEN: usize = 200;

/// Who may call the registration endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    /// Nobody: clients come from the configuration and the admin API.
    Closed,
    /// Whoever presents the initial access token (RFC 7591 §3).
    InitialAccessToken,
    /// Anyone.
    Open,
}

/// Registration rules.
#[derive(Debug, Clone)]
pub struct RegistrationPolicy {
    /// Who may register.
    pub mode: RegistrationMode,
    /// Hash of the initial access token, in that mode.
    pub initial_access_token: Option<SecretHash>,
    /// Grant types a registered client may ask for.
    pub allowed_grant_types: BTreeSet<GrantType>,
    /// A registered client that never completes a flow is removed after
    /// this many seconds.
    pub unused_client_ttl: i64,
}

/// RFC 7591 §2 client metadata, as sent. Unknown members are ignored (§2).
#[derive(Debug, Default, Deserialize)]
pub struct ClientMetadata {
    redirect_uris: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    client_name: Option<String>,
    scope: Option<String>,
    jwks: Option<serde_json::Value>,
    jwks_uri: Option<String>,
    client_id: Option<String>,
}

/// The RFC 7591 §3.2.1 / RFC 7592 §3 response.
#[derive(Debug, Serialize)]
pub struct RegistrationResponse {
    client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    client_id_issued_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret_expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    registration_access_token: Option<String>,
    registration_client_uri: String,
    client_name: String,
    token_endpoint_auth_method: &'static str,
    grant_types: Vec<&'static str>,
    response_types: Vec<&'static str>,
    redirect_uris: Vec<String>,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks: Option<JwkSet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks_uri: Option<String>,
}

fn bad_metadata(msg: impl Into<String>) -> Error {
    Error::InvalidClientMetadata(msg.into().into())
}

/// A redirect URI must be https, or http on a loopback host (RFC 8252 §7.3),
/// and carry no fragment.
pub fn check_redirect_uri(uri: &str) -> Result<(), Error> {
    let bad = |m: &str| Error::InvalidRedirectUri(format!("{m}: {uri}").into());
    if uri.len() > MAX_URI_LEN {
        return Err(bad("redirect URI too long"));
    }
    let parsed = url::Url::parse(uri).map_err(|_| bad("not an absolute URL"))?;
    if parsed.fragment().is_some() {
        return Err(bad("redirect URI has a fragment"));
    }
    let loopback = matches!(
        parsed.host(),
        Some(url::Host::Ipv4(ip)) if ip.is_loopback()
    ) || matches!(parsed.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
        || parsed.host_str() == Some("localhost");
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(bad(
            "redirect URI must be https, or http on a loopback address",
        )),
    }
}

impl Authority {
    /// RFC 7591 §3: registers a client. `authorization` is the raw header
    /// (the initial access token, in that mode).
    pub async fn register(
        &self,
        authorization: Option<&str>,
        metadata: ClientMetadata,
    ) -> Result<RegistrationResponse, Error> {
        let policy = &self.settings.registration;
        match policy.mode {
            RegistrationMode::Closed => return Err(Error::RegistrationClosed),
            RegistrationMode::Open => {}
            RegistrationMode::InitialAccessToken => {
                let presented = bearer(authorization)
                    .ok_or_else(|| Error::InvalidToken("initial access token required".into()))?;
                let ok = policy
                    .initial_access_token
                    .as_ref()
                    .is_some_and(|h| h.matches(&ClientSecret::new(presented.to_owned())));
                if !ok {
                    return Err(Error::InvalidToken(
                        "initial access token is not valid".into(),
                    ));
                }
            }
        }
        let mut event = self.event("client.registered", Outcome::Success);
        let result = self.build_client(metadata, None).await;
        let (mut client, secret) = match result {
            Ok(ok) => ok,
            Err(e) => {
                event.outcome = Outcome::Failure;
                self.audit_refusal(event, &e).await;
                return Err(e);
            }
        };
        let rat = ClientSecret::generate();
        client.registration_token = Some(rat.hash());
        self.store.put_client(&client).await?;
        event.client_id = Some(client.client_id.to_string());
        event.scopes = Some(client.scopes.to_string());
        self.audit.record(event).await?;
        Ok(self.registration_response(&client, secret, Some(rat)))
    }

    /// RFC 7592 §2.1: reads a registration.
    pub async fn read_registration(
        &self,
        client_id: &str,
        authorization: Option<&str>,
    ) -> Result<RegistrationResponse, Error> {
        let client = self.registered_client(client_id, authorization).await?;
        Ok(self.registration_response(&client, None, None))
    }

    /// RFC 7592 §2.2: replaces a registration's metadata.
    pub async fn update_registration(
        &self,
        client_id: &str,
        authorization: Option<&str>,
        metadata: ClientMetadata,
    ) -> Result<RegistrationResponse, Error> {
        let existing = self.registered_client(client_id, authorization).await?;
        if metadata.client_id.as_deref() != Some(existing.client_id.as_str()) {
            return Err(bad_metadata(
                "client_id in the body must match the registration",
            ));
        }
        let (mut client, secret) = self.build_client(metadata, Some(&existing)).await?;
        client.registration_token = existing.registration_token.clone();
        self.store.put_client(&client).await?;
        let mut event = self.event("client.updated", Outcome::Success);
        event.client_id = Some(client.client_id.to_string());
        event.scopes = Some(client.scopes.to_string());
        self.audit.record(event).await?;
        Ok(self.registration_response(&client, secret, None))
    }

    /// RFC 7592 §2.3: deletes a registration.
    pub async fn delete_registration(
        &self,
        client_id: &str,
        authorization: Option<&str>,
    ) -> Result<(), Error> {
        let client = self.registered_client(client_id, authorization).await?;
        self.store.delete_client(&client.client_id).await?;
        let mut event = self.event("client.deleted", Outcome::Success);
        event.client_id = Some(client.client_id.to_string());
        self.audit.record(event).await
    }

    /// The client behind a registration access token. RFC 7592 §2: a wrong
    /// token and a missing client look the same (401).
    async fn registered_client(
        &self,
        client_id: &str,
        authorization: Option<&str>,
    ) -> Result<Client, Error> {
        let denied = || Error::InvalidToken("registration access token is not valid".into());
        let presented = bearer(authorization).ok_or_else(denied)?;
        let presented = ClientSecret::new(presented.to_owned());
        let id = ClientId::parse(client_id).map_err(|_| denied())?;
        let client = self.store.get_client(&id).await?.ok_or_else(denied)?;
        match &client.registration_token {
            Some(h) if h.matches(&presented) => Ok(client),
            _ => Err(denied()),
        }
    }

    /// Validates metadata into a client; a new one, or `existing` updated.
    async fn build_client(
        &self,
        m: ClientMetadata,
        existing: Option<&Client>,
    ) -> Result<(Client, Option<ClientSecret>), Error> {
        let policy = &self.settings.registration;
        let auth_method = match m.token_endpoint_auth_method.as_deref() {
            None => ClientAuthMethod::ClientSecretBasic,
            Some(s) => ClientAuthMethod::parse(s).ok_or_else(|| {
                bad_metadata(format!("unsupported token_endpoint_auth_method {s}"))
            })?,
        };
        let grant_names = m
            .grant_types
            .unwrap_or_else(|| vec!["authorization_code".to_owned()]);
        let mut grant_types = BTreeSet::new();
        for g in &grant_names {
            let grant = GrantType::parse(g)
                .ok_or_else(|| bad_metadata(format!("unsupported grant type {g}")))?;
            if !policy.allowed_grant_types.contains(&grant) {
                return Err(bad_metadata(format!(
                    "grant type {g} may not be registered here"
                )));
            }
            grant_types.insert(grant);
        }
        if grant_types.contains(&GrantType::ClientCredentials)
            && auth_method == ClientAuthMethod::None
        {
            return Err(bad_metadata(
                "client_credentials needs a confidential client",
            ));
        }
        if let Some(rt) = &m.response_types {
            if rt.iter().any(|t| t != "code") {
                return Err(bad_metadata("only the code response type is supported"));
            }
        }
        let redirect_uris = m.redirect_uris.unwrap_or_default();
        if redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(Error::InvalidRedirectUri("too many redirect URIs".into()));
        }
        for uri in &redirect_uris {
            check_redirect_uri(uri)?;
        }
        if grant_types.contains(&GrantType::AuthorizationCode) && redirect_uris.is_empty() {
            return Err(Error::InvalidRedirectUri(
                "authorization_code clients need redirect_uris".into(),
            ));
        }
        let name = m.client_name.unwrap_or_default();
        if name.len() > MAX_CLIENT_NAME_LEN {
            return Err(bad_metadata("client_name too long"));
        }
        let known = self.known_scopes().await?;
        // An empty `scope` (MCP SDKs send one) means "no preference". A client
        // whose tokens all rest on a user's consent gets every known scope as
        // its ceiling, so it can step up later; consent is the real limit.
        let consented_only = !grant_types.contains(&GrantType::ClientCredentials);
        let scopes = match m.scope.filter(|s| !s.trim().is_empty()) {
            Some(_) if consented_only => known,
            Some(s) => {
                let s = ScopeSet::parse(&s).map_err(|e| bad_metadata(e.to_string()))?;
                let unknown = s.difference(&known);
                if !unknown.is_empty() {
                    return Err(bad_metadata(format!("unknown scope: {unknown}")));
                }
                s
            }
            None => known,
        };
        let keys = match (m.jwks, m.jwks_uri) {
            (Some(_), Some(_)) => return Err(bad_metadata("jwks and jwks_uri are exclusive")),
            (Some(jwks), None) => {
                let bytes = serde_json::to_vec(&jwks).map_err(|_| bad_metadata("bad jwks"))?;
                Some(ClientKeys::Jwks(
                    JwkSet::parse(&bytes).map_err(|e| bad_metadata(e.to_string()))?,
                ))
            }
            (None, Some(uri)) => {
                if uri.len() > MAX_URI_LEN || !uri.starts_with("https://") {
                    return Err(bad_metadata("jwks_uri must be an https URL"));
                }
                Some(ClientKeys::JwksUri(uri))
            }
            (None, None) => None,
        };
        if (auth_method == ClientAuthMethod::PrivateKeyJwt) != keys.is_some() {
            return Err(bad_metadata(
                "private_key_jwt needs jwks or jwks_uri, and only it",
            ));
        }
        let (secrets, secret) = match existing {
            Some(c) if c.auth_method.uses_secret() && auth_method.uses_secret() => {
                (c.secrets.clone(), None)
            }
            _ if auth_method.uses_secret() => {
                let secret = ClientSecret::generate();
                (
                    vec![StoredSecret {
                        hash: secret.hash(),
                        expires_at: None,
                    }],
                    Some(secret),
                )
            }
            _ => (Vec::new(), None),
        };
        let client = Client {
            client_id: existing.map_or_else(ClientId::generate, |c| c.client_id.clone()),
            name,
            grant_types,
            scopes,
            resources: None,
            auth_method,
            secrets,
            keys,
            redirect_uris,
            may_act_for: Vec::new(),
            require_dpop: false,
            origin: ClientOrigin::Registration,
            registration_token: None,
            activated_at: existing.as_ref().and_then(|c| c.activated_at),
            created_at: existing.map_or_else(|| self.clock.now(), |c| c.created_at),
        };
        Ok((client, secret))
    }

    /// Every scope some resource defines, and `offline_access` when it
    /// gates refresh tokens.
    pub async fn known_scopes(&self) -> Result<ScopeSet, Error> {
        let offline = self
            .settings
            .refresh_requires_offline_access
            .then(|| mandate_types::Scope::parse(crate::authorize::OFFLINE_ACCESS).ok())
            .flatten();
        Ok(ScopeSet::from_scopes(
            self.store
                .list_resources()
                .await?
                .into_iter()
                .flat_map(|r| r.scopes.into_keys())
                .chain(offline),
        ))
    }

    fn registration_response(
        &self,
        client: &Client,
        secret: Option<ClientSecret>,
        rat: Option<ClientSecret>,
    ) -> RegistrationResponse {
        let (jwks, jwks_uri) = match &client.keys {
            Some(ClientKeys::Jwks(j)) => (Some(j.clone()), None),
            Some(ClientKeys::JwksUri(u)) => (None, Some(u.clone())),
            None => (None, None),
        };
        RegistrationResponse {
            client_id: client.client_id.to_string(),
            client_secret_expires_at: secret.as_ref().map(|_| 0),
            client_secret: secret.map(|s| s.expose().to_owned()),
            client_id_issued_at: client.created_at,
            registration_access_token: rat.map(|r| r.expose().to_owned()),
            registration_client_uri: self
                .settings
                .endpoint(&format!("/register/{}", client.client_id)),
            client_name: client.name.clone(),
            token_endpoint_auth_method: client.auth_method.as_str(),
            grant_types: client.grant_types.iter().map(|g| g.as_str()).collect(),
            response_types: if client.grant_types.contains(&GrantType::AuthorizationCode) {
                vec!["code"]
            } else {
                vec![]
            },
            redirect_uris: client.redirect_uris.clone(),
            scope: client.scopes.to_string(),
            jwks,
            jwks_uri,
        }
    }
}

/// The token of an `Authorization: Bearer` header value.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let h = authorization?;
    let (scheme, token) = h.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

impl Authority {
    /// Records a registered client's first token, which keeps it from
    /// [`Authority::purge_unused_clients`]. One write per client, ever.
    pub(crate) async fn mark_activated(&self, client: &Client) -> Result<(), Error> {
        if client.origin != ClientOrigin::Registration || client.activated_at.is_some() {
            return Ok(());
        }
        // Re-read: the caller's copy may be stale (cache, rotation).
        if let Some(mut stored) = self.store.get_client(&client.client_id).await? {
            if stored.activated_at.is_none() {
                stored.activated_at = Some(self.clock.now());
                self.store.put_client(&stored).await?;
            }
        }
        Ok(())
    }

    /// Removes registered clients that never completed a flow within
    /// `unused_client_ttl` of registering (open registration invites
    /// clutter). Returns how many were removed; each is audited.
    pub async fn purge_unused_clients(&self) -> Result<usize, Error> {
        let cutoff = self.clock.now() - self.settings.registration.unused_client_ttl;
        let stale: Vec<Client> = self
            .store
            .list_clients()
            .await?
            .into_iter()
            .filter(|c| {
                c.origin == ClientOrigin::Registration
                    && c.activated_at.is_none()
                    && c.created_at < cutoff
            })
            .collect();
        let mut removed = 0;
        for client in stale {
            if self.store.delete_client(&client.client_id).await? {
                removed += 1;
                let mut e = self.event("client.purged", Outcome::Success);
                e.client_id = Some(client.client_id.to_string());
                e.reason = Some("registered, and never completed a flow".into());
                self.audit.record(e).await?;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        assert!(check_redirect_uri("https://app.example/cb").is_ok());
        assert!(check_redirect_uri("http://127.0.0.1:3000/cb").is_ok());
        assert!(check_redirect_uri("http://localhost/cb").is_ok());
        assert!(check_redirect_uri("http://[::1]:9/cb").is_ok());
        assert!(check_redirect_uri("http://app.example/cb").is_err());
        assert!(check_redirect_uri("https://app.example/cb#x").is_err());
        assert!(check_redirect_uri("javascript:alert(1)").is_err());
        assert!(check_redirect_uri("cb").is_err());
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
