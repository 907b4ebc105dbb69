//! `[[trust.issuers]]` and `[[trust.peers]]`: relations with other trust
//! domains (see `mandate_core::trust`).

use std::collections::{BTreeMap, BTreeSet};

use mandate_core::model::ClientKeys;
use mandate_core::trust::{Peer, Trust, TrustedIssuer};
use mandate_jose::JwkSet;
use serde::Deserialize;

use crate::{err, ConfigError};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    #[serde(default)]
    issuers: Vec<RawTrustedIssuer>,
    #[serde(default)]
    peers: Vec<RawPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrustedIssuer {
    issuer: String,
    jwks: Option<toml::Value>,
    jwks_uri: Option<String>,
    clients: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    issuer: String,
    #[serde(default)]
    client_ids: BTreeMap<String, String>,
}

/// A JWK Set given inline or by URL: exactly one of them.
pub(crate) fn keys(
    key: &dyn Fn(&str) -> String,
    jwks: Option<toml::Value>,
    jwks_uri: Option<String>,
) -> Result<Option<ClientKeys>, ConfigError> {
    match (jwks, jwks_uri) {
        (Some(_), Some(_)) => Err(err(key("jwks"), "give jwks or jwks_uri, not both")),
        (Some(v), None) => {
            let json = serde_json::to_vec(&v).map_err(|e| err(key("jwks"), e.to_string()))?;
            Ok(Some(ClientKeys::Jwks(
                JwkSet::parse(&json).map_err(|e| err(key("jwks"), e.to_string()))?,
            )))
        }
        (None, Some(u)) => {
            let parsed = url::Url::parse(&u).map_err(|e| err(key("jwks_uri"), e.to_string()))?;
            if !matches!(parsed.scheme(), "https" | "http") {
                return Err(err(key("jwks_uri"), "must be an https URL"));
            }
            Ok(Some(ClientKeys::JwksUri(u)))
        }
        (None, None) => Ok(None),
    }
}

fn issuer_url(key: String, raw: &str) -> Result<String, ConfigError> {
    let parsed = url::Url::parse(raw).map_err(|e| err(key.clone(), e.to_string()))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.fragment().is_some() {
        return Err(err(key, "must be an https URL without a fragment"));
    }
    Ok(raw.to_owned())
}

pub(crate) fn trust(raw: RawTrust, own_issuer: &str) -> Result<Trust, ConfigError> {
    let mut issuers = Vec::new();
    for (i, t) in raw.issuers.into_iter().enumerate() {
        let key = |k: &str| format!("trust.issuers[{i}].{k}");
        let issuer = issuer_url(key("issuer"), &t.issuer)?;
        if issuer == own_issuer {
            return Err(err(
                key("issuer"),
                "this server's own issuer is trusted already",
            ));
        }
        if issuers.iter().any(|x: &TrustedIssuer| x.issuer == issuer) {
            return Err(err(key("issuer"), "listed twice"));
        }
        let keys = keys(&key, t.jwks, t.jwks_uri)?
            .ok_or_else(|| err(key("jwks_uri"), "a trusted issuer needs jwks or jwks_uri"))?;
        issuers.push(TrustedIssuer {
            issuer,
            keys,
            clients: t.clients.map(|c| c.into_iter().collect::<BTreeSet<_>>()),
        });
    }
    let mut peers = Vec::new();
    for (i, p) in raw.peers.into_iter().enumerate() {
        let key = |k: &str| format!("trust.peers[{i}].{k}");
        let issuer = issuer_url(key("issuer"), &p.issuer)?;
        if issuer == own_issuer || peers.iter().any(|x: &Peer| x.issuer == issuer) {
            return Err(err(key("issuer"), "listed twice, or this server itself"));
        }
        peers.push(Peer {
            issuer,
            client_ids: p.client_ids,
        });
    }
    Ok(Trust { issuers, peers })
}
