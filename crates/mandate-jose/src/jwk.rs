//! Public JWKs (RFC 7517) of the three allowed key types, and JWK Sets.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{JoseError, SigningAlg};

/// Most keys we accept in one JWK Set (a client's, or a trusted issuer's).
pub const MAX_JWKS_KEYS: usize = 16;

/// A public JWK. Private members (`d`, `p`, `q`, ...) are not fields, so they
/// are dropped on parse and can never be published by mistake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    /// `OKP`, `EC` or `RSA`.
    pub kty: String,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Algorithm the key is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// `sig` for every key we publish.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Curve (`Ed25519`, `P-256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// OKP public key or EC x coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// A JWK Set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<PublicJwk>,
}

impl JwkSet {
    /// Parses a JWK Set, enforcing [`MAX_JWKS_KEYS`] and checking every key.
    pub fn parse(json: &[u8]) -> Result<Self, JoseError> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|_| JoseError::InvalidJwk("not a JWK Set"))?;
        set.check()?;
        Ok(set)
    }

    /// Checks the key count and each key's shape.
    pub fn check(&self) -> Result<(), JoseError> {
        if self.keys.len() > MAX_JWKS_KEYS {
            return Err(JoseError::InvalidJwk("too many keys in JWK Set"));
        }
        for k in &self.keys {
            k.key_alg()?;
        }
        Ok(())
    }
}

fn b64(s: Option<&String>, what: &'static str) -> Result<Vec<u8>, JoseError> {
    let s = s.ok_or(JoseError::InvalidJwk(what))?;
    URL_SAFE_NO_PAD
        .decode(s.as_bytes())
        .map_err(|_| JoseError::InvalidJwk(what))
}

impl PublicJwk {
    /// The algorithm this key verifies, from its type, checked against `alg`
    /// when the JWK names one.
    pub fn key_alg(&self) -> Result<SigningAlg, JoseError> {
        let by_type = match (self.kty.as_str(), self.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => {
                if b64(self.x.as_ref(), "Ed25519 key needs a 32-byte x")?.len() != 32 {
                    return Err(JoseError::InvalidJwk("Ed25519 key needs a 32-byte x"));
                }
                SigningAlg::EdDSA
            }
            ("EC", Some("P-256")) => {
                let x = b64(self.x.as_ref(), "P-256 key needs 32-byte x and y")?;
                let y = b64(self.y.as_ref(), "P-256 key needs 32-byte x and y")?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(JoseError::InvalidJwk("P-256 key needs 32-byte x and y"));
                }
                SigningAlg::ES256
            }
            ("RSA", _) => {
                let n = b64(self.n.as_ref(), "RSA key needs n and e")?;
                let e = b64(self.e.as_ref(), "RSA key needs n and e")?;
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                if !(2048..=8192).contains(&bits) || e.is_empty() || e.len() > 8 {
                    return Err(JoseError::InvalidJwk("RSA key must be 2048 to 8192 bits"));
                }
                SigningAlg::RS256
            }
            _ => return Err(JoseError::InvalidJwk("unsupported key type or curve")),
        };
        if let Some(alg) = &self.alg {
            if alg != by_type.as_str() {
                return Err(JoseError::InvalidJwk("alg does not match the key type"));
            }
        }
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(JoseError::InvalidJwk("key is not for signatures"));
        }
        Ok(by_type)
    }

    pub(crate) fn decoding_key(&self) -> Result<DecodingKey, JoseError> {
        let bad = |_| JoseError::InvalidJwk("bad key material");
        // key_alg() checked lengths first: jsonwebtoken slices Ed25519 keys unchecked.
        match self.key_alg()? {
            SigningAlg::EdDSA => DecodingKey::from_ed_components(self.x.as_deref().unwrap_or("")),
            SigningAlg::ES256 => DecodingKey::from_ec_components(
                self.x.as_deref().unwrap_or(""),
                self.y.as_deref().unwrap_or(""),
            ),
            SigningAlg::RS256 => DecodingKey::from_rsa_components(
                self.n.as_deref().unwrap_or(""),
                self.e.as_deref().unwrap_or(""),
            ),
        }
        .map_err(bad)
    }

    /// The RFC 7638 thumbprint (SHA-256, base64url): Mandate's `kid`.
    pub fn thumbprint(&self) -> Result<String, JoseError> {
        let s = |v: &Option<String>| serde_json::to_string(v.as_deref().unwrap_or(""));
        let canonical = match self.key_alg()? {
            SigningAlg::EdDSA => format!(
                r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
                s(&self.crv).map_err(|_| JoseError::InvalidJwk("crv"))?,
                s(&self.x).map_err(|_| JoseError::InvalidJwk("x"))?
            ),
            SigningAlg::ES256 => format!(
                r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
                s(&self.crv).map_err(|_| JoseError::InvalidJwk("crv"))?,
                s(&self.x).map_err(|_| JoseError::InvalidJwk("x"))?,
                s(&self.y).map_err(|_| JoseError::InvalidJwk("y"))?
            ),
            SigningAlg::RS256 => format!(
                r#"{{"e":{},"kty":"RSA","n":{}}}"#,
                s(&self.e).map_err(|_| JoseError::InvalidJwk("e"))?,
                s(&self.n).map_err(|_| JoseError::InvalidJwk("n"))?
            ),
        };
        Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_thumbprint_vector() {
        // RFC 7638 §3.1 example key.
        let jwk = PublicJwk {
            kty: "RSA".into(),
            kid: None,
            alg: Some("RS256".into()),
            use_: None,
            crv: None,
            x: None,
            y: None,
            n: Some("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into()),
            e: Some("AQAB".into()),
        };
        assert_eq!(
            jwk.thumbprint().unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn refuses_short_ed25519_key() {
        let jwk = PublicJwk {
            kty: "OKP".into(),
            kid: None,
            alg: None,
            use_: None,
            crv: Some("Ed25519".into()),
            x: Some("AAAA".into()),
            y: None,
            n: None,
            e: None,
        };
        assert!(jwk.decoding_key().is_err());
    }

    #[test]
    fn refuses_hmac_and_oversized_sets() {
        assert!(JwkSet::parse(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
        let one =
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        let many = vec![one; MAX_JWKS_KEYS + 1].join(",");
        assert!(JwkSet::parse(format!(r#"{{"keys":[{many}]}}"#).as_bytes()).is_err());
        assert!(JwkSet::parse(format!(r#"{{"keys":[{one}]}}"#).as_bytes()).is_ok());
    }
}
