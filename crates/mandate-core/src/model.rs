//! What the authorization server knows about: clients, resources, signing keys.

use std::collections::{BTreeMap, BTreeSet};

use mandate_jose::{JwkSet, SigningAlg};
use mandate_types::{ClientId, ResourceUri, Scope, ScopeSet, SecretHash, UnixTime};
use serde::{Deserialize, Serialize};

/// An OAuth grant type a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GrantType {
    /// RFC 6749 §4.4.
    #[serde(rename = "client_credentials")]
    ClientCredentials,
    /// RFC 6749 §4.1 (with PKCE, OAuth 2.1).
    #[serde(rename = "authorization_code")]
    AuthorizationCode,
    /// RFC 6749 §6.
    #[serde(rename = "refresh_token")]
    RefreshToken,
    /// RFC 8693.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:token-exchange")]
    TokenExchange,
    /// RFC 7523 §2.1.
    #[serde(rename = "urn:ietf:params:oauth:grant-type:jwt-bearer")]
    JwtBearer,
}

impl GrantType {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
            Self::JwtBearer => "urn:ietf:params:oauth:grant-type:jwt-bearer",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::ClientCredentials,
            Self::AuthorizationCode,
            Self::RefreshToken,
            Self::TokenExchange,
            Self::JwtBearer,
        ]
        .into_iter()
        .find(|g| g.as_str() == s)
    }
}

/// How a client authenticates at the token, introspection and revocation
/// endpoints (RFC 7591 `token_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT signed with the client's private key (RFC 7523 §2.2).
    PrivateKeyJwt,
    /// A public client: no authentication.
    None,
}

impl ClientAuthMethod {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::None => "none",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::ClientSecretBasic,
            Self::ClientSecretPost,
            Self::PrivateKeyJwt,
            Self::None,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }

    /// Whether the method uses a shared secret.
    pub const fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }
}

/// Where a client's record came from; config clients are re-applied at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientOrigin {
    /// `[[clients]]` in the configuration file.
    Config,
    /// Created by an operator through the admin API or CLI.
    Admin,
    /// RFC 7591 dynamic registration.
    Registration,
    /// A client ID metadata document (never stored).
    Document,
}

/// A stored client secret: its hash, and when a rotated-out secret stops working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    /// SHA-256 of the secret.
    pub hash: SecretHash,
    /// After this time the secret no longer authenticates (set on rotation).
    #[serde(default)]
    pub expires_at: Option<UnixTime>,
}

/// The public keys of a `private_key_jwt` client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKeys {
    /// An inline JWK Set.
    Jwks(JwkSet),
    /// A URL the server fetches the JWK Set from.
    JwksUri(String),
}

/// An OAuth client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// Its identifier.
    pub client_id: ClientId,
    /// Human-readable name.
    pub name: String,
    /// Grants it may use.
    pub grant_types: BTreeSet<GrantType>,
    /// The most it may ever be granted.
    pub scopes: ScopeSet,
    /// Audiences it may ask for; `None` means every configured resource.
    pub resources: Option<BTreeSet<ResourceUri>>,
    /// How it authenticates.
    pub auth_method: ClientAuthMethod,
    /// Current and overlapping secrets (secret methods).
    #[serde(default)]
    pub secrets: Vec<StoredSecret>,
    /// Its public keys (`private_key_jwt`).
    #[serde(default)]
    pub keys: Option<ClientKeys>,
    /// Registered redirect URIs (authorization code clients).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Clients whose tokens this client may exchange to act for their
    /// subjects (RFC 8693); `*` means any.
    #[serde(default)]
    pub may_act_for: Vec<String>,
    /// Whether every token of this client must be DPoP-bound (RFC 9449).
    #[serde(default)]
    pub require_dpop: bool,
    /// Where the record came from.
    pub origin: ClientOrigin,
    /// Hash of the RFC 7592 registration access token, for registered clients.
    #[serde(default)]
    pub registration_token: Option<SecretHash>,
    /// When it was created.
    pub created_at: UnixTime,
    /// When it first completed a flow (got a token). A registered client
    /// that never does is removed after `[registration] unused_client_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<UnixTime>,
}

impl Client {
    /// Whether the client may ask for `resource`.
    pub fn may_use(&self, resource: &ResourceUri) -> bool {
        self.resources.as_ref().is_none_or(|r| r.contains(resource))
    }
}

/// A protected resource: a token audience with its scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// The resource identifier (token `aud`).
    pub id: ResourceUri,
    /// Human-readable name.
    pub name: String,
    /// Scope name to description.
    pub scopes: BTreeMap<Scope, String>,
    /// Access token lifetime for this audience, in seconds, if not the default.
    #[serde(default)]
    pub access_token_ttl: Option<i64>,
    /// Whether it comes from the configuration file.
    #[serde(default)]
    pub from_config: bool,
}

impl Resource {
    /// The resource's scopes as a set.
    pub fn scope_set(&self) -> ScopeSet {
        ScopeSet::from_scopes(self.scopes.keys().cloned())
    }
}

/// A signing key as stored: sealed private key, when it starts signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Its algorithm.
    pub alg: SigningAlg,
    /// PKCS#8 DER sealed under the master key, with the kid as associated data.
    pub sealed_private_key: Vec<u8>,
    /// When it was created (and published).
    pub created_at: UnixTime,
    /// When it starts signing; until then it is only published.
    pub activate_at: UnixTime,
    /// What it signs.
    pub purpose: KeyPurpose,
}

/// What a key signs: JWS (access tokens, Agent Cards) or Biscuit authority blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPurpose {
    /// JWS: published in the JWKS.
    Jws,
    /// Biscuit root keys: published as `biscuit_root_keys` in the metadata.
    Biscuit,
}

impl KeyPurpose {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Jws => "jws",
            Self::Biscuit => "biscuit",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jws" => Some(Self::Jws),
            "biscuit" => Some(Self::Biscuit),
            _ => None,
        }
    }
}

/// A person who signs in to approve agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable id (the `sub` of tokens issued for this user).
    pub id: String,
    /// Sign-in name.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// A disabled user cannot sign in.
    pub disabled: bool,
    /// Consecutive failed sign-ins.
    #[serde(default)]
    pub failed_logins: i64,
    /// Sign-in refused until then, after too many failures.
    #[serde(default)]
    pub locked_until: Option<UnixTime>,
    /// When it was created.
    pub created_at: UnixTime,
    /// The upstream OpenID Provider identity this user signs in with
    /// (`[[login.oidc]]`); such a user has no password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamLink>,
}

/// A local user's link to an identity at an upstream OpenID Provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamLink {
    /// The provider's issuer.
    pub issuer: String,
    /// The provider's `sub`.
    pub subject: String,
    /// The configured provider id it was first seen through.
    pub provider: String,
}

/// A user's remembered consent: this client may have these scopes on this resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Random id.
    pub id: String,
    /// The user.
    pub user_id: String,
    /// The client.
    pub client_id: ClientId,
    /// The resource.
    pub resource: ResourceUri,
    /// Consented scopes.
    pub scopes: ScopeSet,
    /// When consent was first given.
    pub created_at: UnixTime,
}

/// What a refresh token stands for. Stored under the token's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// Rotation family: every token descended from one authorization.
    pub family: String,
    /// The consent it rests on.
    pub grant_id: String,
    /// The client it was issued to.
    pub client_id: ClientId,
    /// The user.
    pub user_id: String,
    /// The audience.
    pub resource: ResourceUri,
    /// The scopes it may request (never more).
    pub scopes: ScopeSet,
    /// When the family began (absolute lifetime counts from here).
    pub family_started_at: UnixTime,
    /// The DPoP key a public client's refresh tokens are bound to
    /// (RFC 9449 §5): every refresh must prove it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
}

/// What [`crate::Store::revoke_user_access`] ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevokedAccess {
    /// Short-lived documents the user owned (sessions, unredeemed codes).
    pub documents: u64,
    /// Refresh token families resting on the user's grants.
    pub refresh_families: u64,
}

/// The result of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// First use: here is what it stands for; it is now spent.
    Fresh(RefreshRecord),
    /// Already spent: a sign of theft. The family should be revoked.
    Reused {
        /// Its family.
        family: String,
    },
    /// Unknown or expired.
    Unknown,
}
