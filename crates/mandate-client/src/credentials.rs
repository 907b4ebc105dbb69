//! Who the agent is at the token endpoint: its `client_id` and how it proves
//! it (RFC 6749 §2.3).
//!
//! Two methods, the two Mandate offers machine clients:
//!
//! * a **secret**, sent as `client_secret_basic` (RFC 6749 §2.3.1, with the
//!   form-encoding before Base64 that the RFC asks for and many clients
//!   skip);
//! * a **private key**, as `private_key_jwt` (RFC 7523 §2.2): a fresh
//!   assertion per request, `iss` = `sub` = the client id, `aud` = the token
//!   endpoint, a random `jti` and a 60-second `exp`. Nothing secret crosses
//!   the wire, and an assertion is useless once seen (Mandate accepts each
//!   `jti` once). Prefer it where the agent can keep a key.

use mandate_jose::{PublicJwk, SigningKey};
use mandate_types::{random_token, ClientSecret, UnixTime};
use serde_json::json;
use url::Url;

use crate::Error;

/// How long a client assertion is valid; Mandate refuses longer than its
/// `client_assertion_max_lifetime` (5 minutes by default).
pub const ASSERTION_LIFETIME: i64 = 60;

/// Where the token endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The token endpoint itself.
    TokenUrl(Url),
    /// The issuer: the token endpoint comes from its RFC 8414 metadata, read
    /// once and kept.
    Issuer(Url),
}

impl Endpoint {
    /// A token endpoint URL.
    pub fn token_url(url: &str) -> Result<Self, Error> {
        Ok(Self::TokenUrl(parse_http_url(url, "token endpoint")?))
    }

    /// An issuer, for RFC 8414 discovery.
    pub fn issuer(url: &str) -> Result<Self, Error> {
        let u = parse_http_url(url.trim_end_matches('/'), "issuer")?;
        if u.query().is_some() || u.fragment().is_some() {
            return Err(Error::Config(
                "an issuer has no query or fragment (RFC 8414 §2)".into(),
            ));
        }
        Ok(Self::Issuer(u))
    }
}

pub(crate) fn parse_http_url(url: &str, what: &str) -> Result<Url, Error> {
    let u = Url::parse(url).map_err(|e| Error::Config(format!("{what} {url:?}: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(Error::Config(format!("{what} must be an http(s) URL")));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(Error::Config(format!(
            "{what} must not carry credentials in the URL"
        )));
    }
    Ok(u)
}

/// How the client authenticates.
pub enum Credential {
    /// `client_secret_basic`.
    Secret(ClientSecret),
    /// `private_key_jwt` with this key; register its [`PublicJwk`] (with the
    /// `kid`) as the client's `jwks`.
    PrivateKey(Box<SigningKey>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret([redacted])"),
            Self::PrivateKey(k) => f.debug_tuple("PrivateKey").field(&k.kid()).finish(),
        }
    }
}

/// A confidential client: where it asks, who it is, how it proves it.
#[derive(Debug)]
pub struct ClientCredentials {
    pub(crate) endpoint: Endpoint,
    pub(crate) client_id: String,
    pub(crate) credential: Credential,
}

impl ClientCredentials {
    /// A client that authenticates with a secret (`client_secret_basic`).
    pub fn with_secret(endpoint: Endpoint, client_id: &str, secret: ClientSecret) -> Self {
        Self {
            endpoint,
            client_id: client_id.to_owned(),
            credential: Credential::Secret(secret),
        }
    }

    /// A client that authenticates with a key (`private_key_jwt`).
    pub fn with_private_key(endpoint: Endpoint, client_id: &str, key: SigningKey) -> Self {
        Self {
            endpoint,
            client_id: client_id.to_owned(),
            credential: Credential::PrivateKey(Box::new(key)),
        }
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The public key to register, for `private_key_jwt` clients.
    pub fn public_jwk(&self) -> Option<&PublicJwk> {
        match &self.credential {
            Credential::PrivateKey(k) => Some(k.public_jwk()),
            Credential::Secret(_) => None,
        }
    }

    /// What this client adds to a token request: an `Authorization` header
    /// value, or form parameters. Assertions are made fresh each time.
    pub(crate) fn authenticate(
        &self,
        token_endpoint: &Url,
        now: UnixTime,
    ) -> Result<ClientAuth, Error> {
        match &self.credential {
            Credential::Secret(secret) => {
                use base64::Engine as _;
                // RFC 6749 §2.3.1: form-encode both parts, then Base64.
                let enc =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = format!("{}:{}", enc(&self.client_id), enc(secret.expose()));
                Ok(ClientAuth::Header(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )))
            }
            Credential::PrivateKey(key) => {
                let claims = json!({
                    "iss": self.client_id,
                    "sub": self.client_id,
                    "aud": token_endpoint.as_str(),
                    "jti": random_token(16),
                    "iat": now,
                    "exp": now + ASSERTION_LIFETIME,
                });
                Ok(ClientAuth::Assertion(key.sign("JWT", &claims)?))
            }
        }
    }
}

/// Client authentication, ready to go into a request.
pub(crate) enum ClientAuth {
    /// An `Authorization` header value.
    Header(String),
    /// A `client_assertion` (with its type) for the form.
    Assertion(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use mandate_jose::{PrivateKeyDer, SigningAlg, UnverifiedJwt};

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        let c = ClientCredentials::with_secret(
            Endpoint::token_url("https://as.example/token").unwrap(),
            "my:client",
            ClientSecret::new("p@ss word".into()),
        );
        let url = Url::parse("https://as.example/token").unwrap();
        let ClientAuth::Header(h) = c.authenticate(&url, 0).unwrap() else {
            panic!("a header");
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(h.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"my%3Aclient:p%40ss+word");
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn assertions_are_fresh_and_short_lived() {
        let key = SigningKey::from_private(
            SigningAlg::EdDSA,
            &PrivateKeyDer::generate(SigningAlg::EdDSA).unwrap(),
        )
        .unwrap();
        let public = key.public_jwk().clone();
        let c = ClientCredentials::with_private_key(
            Endpoint::issuer("https://as.example/").unwrap(),
            "agent",
            key,
        );
        assert_eq!(c.public_jwk(), Some(&public));
        let url = Url::parse("https://as.example/token").unwrap();
        let one = |now| match c.authenticate(&url, now).unwrap() {
            ClientAuth::Assertion(a) => a,
            ClientAuth::Header(_) => panic!("an assertion"),
        };
        let (a, b) = (one(100), one(100));
        let verify = |a: &str| {
            UnverifiedJwt::parse(a)
                .unwrap()
                .verify::<serde_json::Value>(std::slice::from_ref(&public))
                .unwrap()
                .claims
        };
        let (ca, cb) = (verify(&a), verify(&b));
        assert_eq!(ca["iss"], "agent");
        assert_eq!(ca["sub"], "agent");
        assert_eq!(ca["aud"], "https://as.example/token");
        assert_eq!(ca["exp"], 100 + ASSERTION_LIFETIME);
        assert_ne!(ca["jti"], cb["jti"]);
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(Endpoint::token_url("ftp://x/token").is_err());
        assert!(Endpoint::token_url("https://u:p@x/token").is_err());
        assert!(Endpoint::issuer("https://x/?a=b").is_err());
        assert_eq!(
            Endpoint::issuer("https://x.example/").unwrap(),
            Endpoint::Issuer(Url::parse("https://x.example").unwrap())
        );
    }
}
