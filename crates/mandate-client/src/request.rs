//! Token requests and responses without I/O: a grant becomes an
//! `http::Request<Vec<u8>>`, and status + headers + body become an
//! [`AccessToken`] or an [`Error`]. [`crate::TokenSource`] sends them with
//! reqwest; anything else that speaks `http` can send them too, and the unit
//! tests below need no network.

use mandate_types::UnixTime;
use serde::Deserialize;
use url::Url;

use crate::credentials::{ClientAuth, ClientCredentials};
use crate::token::{AccessToken, TokenType};
use crate::{Error, OAuthError};

/// RFC 8693 grant type.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 token type of an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 7523 client assertion type.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest token endpoint or metadata answer read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// An RFC 8693 exchange: a token for a sub-agent, from one the caller holds.
///
/// The subject token is the authority being handed on; the server makes the
/// new one no wider than it (scope, audience, lifetime) and records the
/// caller in its `act` chain.
#[derive(Clone)]
pub struct Exchange {
    pub(crate) subject_token: String,
    pub(crate) actor_token: Option<String>,
    pub(crate) resource: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) biscuit: bool,
}

impl Exchange {
    /// Exchanges `subject_token` (an access token).
    pub fn new(subject_token: impl Into<String>) -> Self {
        Self {
            subject_token: subject_token.into(),
            actor_token: None,
            resource: None,
            scope: None,
            biscuit: false,
        }
    }

    /// Ask for a Biscuit instead of a JWT: a token the holder can narrow
    /// further offline with [`crate::biscuit::attenuate`] before handing it on.
    pub fn biscuit(mut self) -> Self {
        self.biscuit = true;
        self
    }

    /// The audience of the new token (RFC 8707); default: the subject
    /// token's.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// A narrower scope; default: all of the subject token's that applies.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The actor's own access token, when it proves itself with one rather
    /// than with its client authentication alone.
    pub fn actor_token(mut self, token: impl Into<String>) -> Self {
        self.actor_token = Some(token.into());
        self
    }
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("subject_token", &"[redacted]")
            .field(
                "actor_token",
                &self.actor_token.as_ref().map(|_| "[redacted]"),
            )
            .field("resource", &self.resource)
            .field("scope", &self.scope)
            .field("biscuit", &self.biscuit)
            .finish()
    }
}

/// A grant to ask the token endpoint for.
#[derive(Debug, Clone)]
pub enum Grant {
    /// `client_credentials` (RFC 6749 §4.4).
    ClientCredentials {
        /// Audience (RFC 8707).
        resource: Option<String>,
        /// Scope, space-delimited.
        scope: Option<String>,
    },
    /// Token exchange (RFC 8693 §2.1).
    Exchange(Exchange),
}

impl Grant {
    fn form(&self) -> Vec<(&'static str, &str)> {
        let mut form = Vec::new();
        let (resource, scope) = match self {
            Self::ClientCredentials { resource, scope } => {
                form.push(("grant_type", "client_credentials"));
                (resource, scope)
            }
            Self::Exchange(x) => {
                form.push(("grant_type", TOKEN_EXCHANGE));
                form.push(("subject_token", x.subject_token.as_str()));
                form.push(("subject_token_type", ACCESS_TOKEN_TYPE));
                if let Some(a) = &x.actor_token {
                    form.push(("actor_token", a.as_str()));
                    form.push(("actor_token_type", ACCESS_TOKEN_TYPE));
                }
                form.push((
                    "requested_token_type",
                    if x.biscuit {
                        mandate_biscuit::TOKEN_TYPE
                    } else {
                        ACCESS_TOKEN_TYPE
                    },
                ));
                (&x.resource, &x.scope)
            }
        };
        if let Some(r) = resource {
            form.push(("resource", r.as_str()));
        }
        if let Some(s) = scope.as_deref().filter(|s| !s.trim().is_empty()) {
            form.push(("scope", s));
        }
        form
    }
}

/// Builds the token request: the grant's form, the client's authentication
/// and, when given, the DPoP proof header.
pub fn token_request(
    token_endpoint: &Url,
    client: &ClientCredentials,
    grant: &Grant,
    dpop_proof: Option<&str>,
    now: UnixTime,
) -> Result<http::Request<Vec<u8>>, Error> {
    let auth = client.authenticate(token_endpoint, now)?;
    let mut form = grant.form();
    let mut builder = http::Request::post(token_endpoint.as_str())
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json");
    match &auth {
        ClientAuth::Header(h) => builder = builder.header(http::header::AUTHORIZATION, h),
        ClientAuth::Assertion(a) => {
            form.push(("client_id", client.client_id.as_str()));
            form.push(("client_assertion_type", JWT_BEARER_ASSERTION));
            form.push(("client_assertion", a.as_str()));
        }
    }
    if let Some(p) = dpop_proof {
        builder = builder.header("dpop", p);
    }
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
        .into_bytes();
    builder
        .body(body)
        .map_err(|e| Error::Config(format!("token request: {e}")))
}

#[derive(Deserialize)]
struct Success {
    access_token: String,
    token_type: String,
    expires_in: Option<i64>,
    scope: Option<String>,
    issued_token_type: Option<String>,
}

#[derive(Deserialize)]
struct Failure {
    error: String,
    error_description: Option<String>,
}

/// Reads a token endpoint answer. `sent_proof` says whether the request
/// carried a DPoP proof: a DPoP token for a request without one is refused,
/// since the client could not use it.
pub fn parse_token_response(
    status: http::StatusCode,
    body: &[u8],
    sent_proof: bool,
    now: UnixTime,
) -> Result<AccessToken, Error> {
    const WHAT: &str = "token endpoint";
    if !status.is_success() {
        return Err(match serde_json::from_slice::<Failure>(body) {
            Ok(f) => Error::OAuth(OAuthError {
                status: status.as_u16(),
                error: f.error,
                error_description: f.error_description,
            }),
            Err(_) => Error::response(WHAT, format!("status {status} without an OAuth error")),
        });
    }
    let s: Success = serde_json::from_slice(body)
        .map_err(|e| Error::response(WHAT, format!("not a token response: {e}")))?;
    let token_type = if s.token_type.eq_ignore_ascii_case("bearer") {
        TokenType::Bearer
    } else if s.token_type.eq_ignore_ascii_case("dpop") && sent_proof {
        TokenType::DPoP
    } else {
        return Err(Error::response(
            WHAT,
            format!("unexpected token_type {:?}", s.token_type),
        ));
    };
    if s.access_token.is_empty() {
        return Err(Error::response(WHAT, "empty access_token"));
    }
    let lifetime = s.expires_in.filter(|e| *e >= 0);
    Ok(AccessToken {
        token: s.access_token,
        token_type,
        expires_at: lifetime.map(|l| now.saturating_add(l)),
        lifetime,
        scope: s.scope,
        issued_token_type: s.issued_token_type,
    })
}

/// Whether a token endpoint answer asks for a DPoP nonce (RFC 9449 §8:
/// 400 with `error=use_dpop_nonce`).
pub fn is_nonce_error(status: http::StatusCode, body: &[u8]) -> bool {
    status == http::StatusCode::BAD_REQUEST
        && serde_json::from_slice::<Failure>(body).is_ok_and(|f| f.error == "use_dpop_nonce")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Endpoint;
    use mandate_types::ClientSecret;

    fn form_of(req: &http::Request<Vec<u8>>) -> Vec<(String, String)> {
        form_urlencoded::parse(req.body())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn exchange_requests_carry_the_rfc_8693_parameters() {
        let url = Url::parse("https://as.example/token").unwrap();
        let client = ClientCredentials::with_secret(
            Endpoint::TokenUrl(url.clone()),
            "research",
            ClientSecret::new("s3cret-s3cret-s3cret".into()),
        );
        let grant = Grant::Exchange(
            Exchange::new("subject.jwt.sig")
                .resource("https://pay.example")
                .scope("quote"),
        );
        let req = token_request(&url, &client, &grant, Some("proof"), 0).unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.headers()["dpop"], "proof");
        assert!(req.headers()["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Basic "));
        let form = form_of(&req);
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("grant_type"), Some(TOKEN_EXCHANGE));
        assert_eq!(get("subject_token"), Some("subject.jwt.sig"));
        assert_eq!(get("subject_token_type"), Some(ACCESS_TOKEN_TYPE));
        assert_eq!(get("resource"), Some("https://pay.example"));
        assert_eq!(get("scope"), Some("quote"));
        assert_eq!(get("actor_token"), None);
        assert!(!format!("{grant:?}").contains("subject.jwt"));
    }

    #[test]
    fn responses_become_tokens_or_typed_errors() {
        let ok = br#"{"access_token":"t","token_type":"DPoP","expires_in":900,"scope":"read","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#;
        let t = parse_token_response(http::StatusCode::OK, ok, true, 100).unwrap();
        assert_eq!(t.token_type(), TokenType::DPoP);
        assert_eq!(t.expires_at(), Some(1000));
        assert_eq!(t.issued_token_type(), Some(ACCESS_TOKEN_TYPE));
        assert!(
            parse_token_response(http::StatusCode::OK, ok, false, 100).is_err(),
            "a DPoP token we cannot prove"
        );
        let refused =
            br#"{"error":"invalid_scope","error_description":"exchange may only narrow"}"#;
        let e = parse_token_response(http::StatusCode::BAD_REQUEST, refused, false, 0).unwrap_err();
        assert!(e.is_oauth(mandate_types::OAuthErrorCode::InvalidScope));
        assert!(matches!(
            parse_token_response(http::StatusCode::BAD_GATEWAY, b"<html>", false, 0),
            Err(Error::Response { .. })
        ));
        assert!(is_nonce_error(
            http::StatusCode::BAD_REQUEST,
            br#"{"error":"use_dpop_nonce"}"#
        ));
        assert!(!is_nonce_error(http::StatusCode::BAD_REQUEST, refused));
    }
}
