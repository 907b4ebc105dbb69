//! Client authentication at the token, introspection and revocation endpoints:
//! `client_secret_basic`, `client_secret_post` and `private_key_jwt` (RFC 7523).
//!
//! Parsing ([`PresentedClient::from_request`]) is separate from checking
//! ([`crate::Authority::authenticate`]): a request that offers two methods at
//! once is malformed before any lookup happens (RFC 6749 §2.3: a client MUST
//! NOT use more than one method per request).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use mandate_types::ClientSecret;
use serde::Deserialize;

use crate::form::FormParams;
use crate::Error;

/// The only client assertion type (RFC 7523 §2.2).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The credentials a request presents, before any of them is checked.
#[derive(Debug)]
pub enum PresentedClient {
    /// HTTP Basic.
    Basic {
        /// Client id, form-decoded per RFC 6749 §2.3.1.
        client_id: String,
        /// The secret.
        secret: ClientSecret,
    },
    /// `client_id` + `client_secret` in the body.
    Post {
        /// Client id.
        client_id: String,
        /// The secret.
        secret: ClientSecret,
    },
    /// A signed JWT.
    Assertion {
        /// `client_id` from the form, if sent (must then match the assertion).
        client_id: Option<String>,
        /// The JWT.
        assertion: String,
    },
    /// Only a `client_id`: a public client.
    Public {
        /// Client id.
        client_id: String,
    },
}

impl PresentedClient {
    /// Reads client credentials from the `Authorization` header value and the form.
    pub fn from_request(authorization: Option<&str>, form: &FormParams) -> Result<Self, Error> {
        let basic = match authorization {
            Some(h)
                if h.len() > 6 && h.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("basic ")) =>
            {
                Some(parse_basic(h.get(6..).unwrap_or_default())?)
            }
            _ => None,
        };
        let form_id = form.single("client_id")?;
        let form_secret = form.single("client_secret")?;
        let assertion_type = form.single("client_assertion_type")?;
        let assertion = form.single("client_assertion")?;
        let methods = [basic.is_some(), form_secret.is_some(), assertion.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if methods > 1 {
            return Err(Error::InvalidRequest(
                "more than one client authentication method".into(),
            ));
        }
        if let Some((client_id, secret)) = basic {
            if form_id.is_some_and(|id| id != client_id) {
                return Err(Error::invalid_client(
                    true,
                    "client_id in form differs from Basic",
                ));
            }
            return Ok(Self::Basic { client_id, secret });
        }
        if let Some(secret) = form_secret {
            let client_id = form_id
                .ok_or_else(|| Error::InvalidRequest("client_secret without client_id".into()))?;
            return Ok(Self::Post {
                client_id: client_id.to_owned(),
                secret: ClientSecret::new(secret.to_owned()),
            });
        }
        if let Some(assertion) = assertion {
            if assertion_type != Some(JWT_BEARER_ASSERTION) {
                return Err(Error::InvalidRequest(
                    "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
            }
            return Ok(Self::Assertion {
                client_id: form_id.map(str::to_owned),
                assertion: assertion.to_owned(),
            });
        }
        match form_id {
            Some(id) => Ok(Self::Public {
                client_id: id.to_owned(),
            }),
            None => Err(Error::invalid_client(false, "no client authentication")),
        }
    }

    /// Whether the client used HTTP Basic (its 401 then carries a challenge).
    pub fn used_basic(&self) -> bool {
        matches!(self, Self::Basic { .. })
    }
}

fn parse_basic(encoded: &str) -> Result<(String, ClientSecret), Error> {
    let bad = || Error::invalid_client(true, "malformed Basic credentials");
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded before Base64.
    let unescape = |s: &str| -> Result<String, Error> {
        let s = s.replace('+', " ");
        let bytes: Vec<u8> = percent_decode(&s).ok_or_else(bad)?;
        String::from_utf8(bytes).map_err(|_| bad())
    };
    let id = unescape(id)?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok((id, ClientSecret::new(unescape(secret)?)))
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// The claims of a client assertion (RFC 7523 §3) that we check.
#[derive(Debug, Deserialize)]
pub(crate) struct AssertionClaims {
    pub(crate) iss: Option<String>,
    pub(crate) sub: Option<String>,
    #[serde(default)]
    pub(crate) aud: Audience,
    pub(crate) exp: Option<i64>,
    pub(crate) nbf: Option<i64>,
    pub(crate) iat: Option<i64>,
    pub(crate) jti: Option<String>,
}

/// `aud` as a string or an array of strings.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub(crate) fn contains_any(&self, accepted: &[&str]) -> bool {
        match self {
            Self::None => false,
            Self::One(a) => accepted.contains(&a.as_str()),
            Self::Many(v) => v.iter().any(|a| accepted.contains(&a.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(s: &str) -> FormParams {
        FormParams::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn basic_is_form_decoded() {
        let h = format!("Basic {}", STANDARD.encode("my%3Aclient:p%40ss+word"));
        match PresentedClient::from_request(Some(&h), &form("")).unwrap() {
            PresentedClient::Basic { client_id, secret } => {
                assert_eq!(client_id, "my:client");
                assert_eq!(secret.expose(), "p@ss word");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn two_methods_are_refused() {
        let h = format!("Basic {}", STANDARD.encode("a:b"));
        assert!(matches!(
            PresentedClient::from_request(Some(&h), &form("client_id=a&client_secret=b")),
            Err(Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn nothing_is_invalid_client() {
        assert!(matches!(
            PresentedClient::from_request(None, &form("grant_type=client_credentials")),
            Err(Error::InvalidClient { basic: false, .. })
        ));
        assert!(matches!(
            PresentedClient::from_request(Some("Basic !!!"), &form("")),
            Err(Error::InvalidClient { basic: true, .. })
        ));
    }
}
