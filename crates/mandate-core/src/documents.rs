//! Client ID Metadata Documents: a `client_id` that is an https URL names a
//! JSON document, fetched by the server, that describes the client. No
//! registration step, nothing stored: the document is the registration.
//!
//! The fetch itself (no redirects, a size limit, a short timeout, no private
//! or special-use addresses, caching per HTTP headers) is the HTTP adapter's
//! job; here the document becomes a [`Client`] under strict rules: its
//! `client_id` must equal the URL, it may not use shared secrets (anyone can
//! read the document), and it may only ask for user-consented grants.

use std::collections::BTreeSet;

use async_trait::async_trait;
use mandate_jose::JwkSet;
use mandate_types::ClientId;
use serde::Deserialize;

use crate::authority::Authority;
use crate::model::{Client, ClientAuthMethod, ClientKeys, ClientOrigin, GrantType};
use crate::registration::{check_redirect_uri, MAX_CLIENT_NAME_LEN, MAX_REDIRECT_URIS};
use crate::Error;

/// Fetches client metadata documents.
#[async_trait]
pub trait ClientDocuments: Send + Sync + 'static {
    /// Whether `client_id` names a document this fetcher would fetch.
    fn handles(&self, client_id: &str) -> bool;
    /// The document's bytes.
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String>;
}

/// No documents: every URL client id is unknown.
#[derive(Debug, Default)]
pub struct NoClientDocuments;

#[async_trait]
impl ClientDocuments for NoClientDocuments {
    fn handles(&self, _: &str) -> bool {
        false
    }
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        Err(format!("client metadata documents are off ({url})"))
    }
}

#[derive(Deserialize)]
struct Document {
    client_id: String,
    client_name: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    grant_types: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    jwks: Option<serde_json::Value>,
    jwks_uri: Option<String>,
}

/// Turns a fetched document into a client, or says why not.
pub fn client_from_document(url: &str, bytes: &[u8], now: i64) -> Result<Client, String> {
    let doc: Document = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a client metadata document: {e}"))?;
    if doc.client_id != url {
        return Err("the document's client_id is not its URL".into());
    }
    let auth_method = match doc.token_endpoint_auth_method.as_deref() {
        None | Some("none") => ClientAuthMethod::None,
        Some("private_key_jwt") => ClientAuthMethod::PrivateKeyJwt,
        Some(other) => {
            return Err(format!(
                "{other} is not allowed in a public document (no shared secrets)"
            ))
        }
    };
    let mut grant_types = BTreeSet::new();
    for g in doc
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".into()])
    {
        match GrantType::parse(&g) {
            Some(t @ (GrantType::AuthorizationCode | GrantType::RefreshToken)) => {
                grant_types.insert(t);
            }
            _ => {
                return Err(format!(
                    "grant type {g} is not allowed for a client metadata document"
                ))
            }
        }
    }
    if doc.redirect_uris.is_empty() || doc.redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err("redirect_uris must list 1 to 10 URIs".into());
    }
    for r in &doc.redirect_uris {
        check_redirect_uri(r).map_err(|e| e.to_string())?;
    }
    let keys = match (doc.jwks, doc.jwks_uri) {
        (Some(j), None) => Some(ClientKeys::Jwks(
            JwkSet::parse(j.to_string().as_bytes()).map_err(|e| e.to_string())?,
        )),
        (None, Some(u)) if u.starts_with("https://") => Some(ClientKeys::JwksUri(u)),
        (None, None) => None,
        _ => return Err("give jwks or an https jwks_uri, not both".into()),
    };
    if (auth_method == ClientAuthMethod::PrivateKeyJwt) != keys.is_some() {
        return Err("private_key_jwt needs keys, and keys need private_key_jwt".into());
    }
    let name = doc.client_name.unwrap_or_default();
    if name.len() > MAX_CLIENT_NAME_LEN {
        return Err("client_name too long".into());
    }
    Ok(Client {
        client_id: ClientId::parse(url)?,
        name,
        grant_types,
        scopes: Default::default(),
        resources: None,
        auth_method,
        secrets: Vec::new(),
        keys,
        redirect_uris: doc.redirect_uris,
        may_act_for: Vec::new(),
        require_dpop: false,
        origin: ClientOrigin::Document,
        registration_token: None,
        created_at: now,
        activated_at: None,
    })
}

impl Authority {
    /// A client: from the store, or from its metadata document when the id
    /// is a URL the document fetcher handles.
    pub async fn client(&self, id: &ClientId) -> Result<Option<Client>, Error> {
        if let Some(c) = self.store.get_client(id).await? {
            return Ok(Some(c));
        }
        if !self.documents.handles(id.as_str()) {
            return Ok(None);
        }
        let bytes = match self.documents.fetch(id.as_str()).await {
            Ok(b) => b,
            Err(e) => {
                tracing::info!(client_id = %id, error = %e, "client metadata document unavailable");
                return Ok(None);
            }
        };
        match client_from_document(id.as_str(), &bytes, self.clock.now()) {
            Ok(mut c) => {
                // Consent is the real limit: the document may ask for any known scope.
                c.scopes = self.known_scopes().await?;
                Ok(Some(c))
            }
            Err(e) => {
                tracing::info!(client_id = %id, error = %e, "client metadata document refused");
                Ok(None)
            }
        }
    }
}
