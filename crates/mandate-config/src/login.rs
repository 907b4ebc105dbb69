//! `[login]` and `[[login.oidc]]`: sign-in through upstream OpenID
//! Providers (see `mandate_core::upstream_login`).

use std::sync::Arc;

use mandate_core::upstream_login::{UpstreamProvider, DEFAULT_SCOPES};
use mandate_types::ClientSecret;
use serde::Deserialize;

use crate::{err, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    #[serde(default)]
    oidc: Vec<RawOidcProvider>,
    #[serde(default)]
    insecure_allow_http_oidc_on_loopback: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidcProvider {
    id: Option<String>,
    name: Option<String>,
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret_env: Option<String>,
    scopes: Option<String>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    jwks_uri: Option<String>,
    claim_username: Option<String>,
}

/// The validated `[login]` section.
#[derive(Debug, Clone, Default)]
pub struct LoginConfig {
    /// Upstream OpenID Providers, in file order.
    pub oidc: Vec<UpstreamProvider>,
    /// DANGER, tests only: providers over http on loopback.
    pub insecure_allow_http_oidc_on_loopback: bool,
}

/// An https URL (http only on loopback with the danger setting), without
/// query or fragment when `bare`.
fn provider_url(
    key: String,
    raw: &str,
    insecure_loopback: bool,
    bare: bool,
) -> Result<String, ConfigError> {
    let u = url::Url::parse(raw).map_err(|e| err(key.clone(), format!("{raw:?}: {e}")))?;
    let loopback = matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    let scheme_ok =
        u.scheme() == "https" || (u.scheme() == "http" && insecure_loopback && loopback);
    if !scheme_ok {
        return Err(err(
            key,
            "must be an https URL (http only on loopback with login.insecure_allow_http_oidc_on_loopback)",
        ));
    }
    if u.fragment().is_some() || (bare && u.query().is_some()) {
        return Err(err(key, "must not have a fragment or query"));
    }
    Ok(raw.to_owned())
}

pub(crate) fn login(
    raw: RawLogin,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoginConfig, ConfigError> {
    let insecure = raw.insecure_allow_http_oidc_on_loopback;
    let mut oidc: Vec<UpstreamProvider> = Vec::new();
    for (i, p) in raw.oidc.into_iter().enumerate() {
        let key = |k: &str| format!("login.oidc[{i}].{k}");
        let required = |v: Option<String>, k: &str| {
            v.filter(|s| !s.trim().is_empty())
                .ok_or_else(|| err(key(k), "required"))
        };
        let id = required(p.id, "id")?;
        if id.len() > 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err(key("id"), "1 to 32 of a-z 0-9 -"));
        }
        if oidc.iter().any(|x| x.id == id) {
            return Err(err(key("id"), "defined twice"));
        }
        let name = required(p.name, "name")?;
        let issuer = provider_url(
            key("issuer"),
            &required(p.issuer, "issuer")?,
            insecure,
            true,
        )?;
        let client_id = required(p.client_id, "client_id")?;
        let var = required(p.client_secret_env, "client_secret_env")?;
        let secret = env(&var).ok_or_else(|| {
            err(
                key("client_secret_env"),
                format!("environment variable {var} is not set"),
            )
        })?;
        let scopes = p.scopes.unwrap_or_else(|| DEFAULT_SCOPES.into());
        if !scopes.split(' ').any(|s| s == "openid") {
            return Err(err(key("scopes"), "must include openid"));
        }
        let endpoint = |v: Option<String>, k: &str| {
            v.map(|u| provider_url(key(k), &u, insecure, false))
                .transpose()
        };
        let claim_username = p.claim_username.filter(|c| !c.is_empty());
        oidc.push(UpstreamProvider {
            id,
            name,
            issuer,
            client_id,
            client_secret: Arc::new(ClientSecret::new(secret)),
            scopes,
            authorization_endpoint: endpoint(p.authorization_endpoint, "authorization_endpoint")?,
            token_endpoint: endpoint(p.token_endpoint, "token_endpoint")?,
            jwks_uri: endpoint(p.jwks_uri, "jwks_uri")?,
            claim_username,
        });
    }
    Ok(LoginConfig {
        oidc,
        insecure_allow_http_oidc_on_loopback: insecure,
    })
}
