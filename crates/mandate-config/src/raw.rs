//! The configuration file as written: every key optional, unknown keys refused.
//! `mandate.toml` at the repository root documents each key and its default.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The top level of `mandate.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub issuer: Option<String>,
    pub listen: Option<String>,
    pub listener_threads: Option<usize>,
    pub data_dir: Option<String>,
    pub database_url: Option<String>,
    pub log_format: Option<String>,
    #[serde(default)]
    pub tokens: RawTokens,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub resources: Vec<RawResource>,
    #[serde(default)]
    pub clients: Vec<RawClient>,
    #[serde(default)]
    pub registration: RawRegistration,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub gateway: RawGateway,
    #[serde(default)]
    pub trust: crate::trust::RawTrust,
    #[serde(default)]
    pub login: crate::login::RawLogin,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub public_url: Option<String>,
    pub leeway: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub upstream_timeout: Option<String>,
    pub revocation_refresh: Option<String>,
    pub card_max_age: Option<String>,
    pub card_rate_limit: Option<u32>,
    pub default_route: Option<String>,
    pub trust_own_issuer: Option<bool>,
    pub dpop_nonce: Option<bool>,
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub issuer: String,
    pub require_at_jwt: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path: String,
    pub upstream: String,
    pub protocol: Option<String>,
    pub resource: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub operations: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub skills: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub levels: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub tools: BTreeMap<String, RawTool>,
    #[serde(default)]
    pub prompt_scopes: Vec<String>,
    #[serde(default)]
    pub prompts: BTreeMap<String, RawItem>,
    #[serde(default)]
    pub resource_scopes: Vec<String>,
    #[serde(default)]
    pub resources: BTreeMap<String, RawItem>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub pass_token: bool,
    pub upstream_timeout: Option<String>,
    pub upstream_ca_file: Option<String>,
    pub upstream_client_cert_file: Option<String>,
    pub upstream_client_key_file: Option<String>,
    pub rate_limit: Option<u32>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokens {
    pub access_token_ttl: Option<String>,
    pub signing_alg: Option<String>,
    pub key_prepublish: Option<String>,
    pub client_assertion_max_lifetime: Option<String>,
    pub leeway: Option<String>,
    pub secret_rotation_overlap: Option<String>,
    pub refresh_token_idle_ttl: Option<String>,
    pub refresh_token_absolute_ttl: Option<String>,
    pub max_delegation_depth: Option<usize>,
    pub dpop_nonce: Option<bool>,
    pub refresh_requires_offline_access: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body_bytes: Option<usize>,
    pub request_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    pub id: String,
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: BTreeMap<String, String>,
    pub access_token_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub client_id: String,
    pub name: Option<String>,
    #[serde(default)]
    pub grant_types: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub resources: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    pub secret_env: Option<String>,
    pub secret_sha256: Option<String>,
    pub jwks: Option<toml::Value>,
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub may_act_for: Vec<String>,
    #[serde(default)]
    pub require_dpop: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistration {
    pub mode: Option<String>,
    pub initial_access_token_env: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub rate_limit: Option<u32>,
    pub unused_client_ttl: Option<String>,
    pub client_metadata_documents: Option<bool>,
    #[serde(default)]
    pub client_metadata_allowlist: Vec<String>,
    #[serde(default)]
    pub insecure_allow_http_client_metadata_on_loopback: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTool {
    pub level: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A prompt (by name) or resource (by URI or `prefix*`) of an mcp route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawItem {
    #[serde(default)]
    pub scopes: Vec<String>,
}
