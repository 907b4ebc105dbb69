//! Compact JWS parsing and verification.

use std::collections::HashSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::DeserializeOwned;

use crate::{JoseError, PublicJwk, SigningAlg};

/// Longest compact JWS we look at.
pub const MAX_JWT_LEN: usize = 8 * 1024;

/// A JWS whose header has been parsed and whose `alg` is on the allowlist, but
/// whose signature has not been checked. Nothing in it may be trusted.
#[derive(Debug)]
pub struct UnverifiedJwt<'a> {
    raw: &'a str,
    alg: SigningAlg,
    kid: Option<String>,
    typ: Option<String>,
}

/// A JWS whose signature verified with one of the keys it was checked against.
/// Time-based and audience claims are the caller's to check.
#[derive(Debug)]
pub struct VerifiedJwt<T> {
    /// The claims.
    pub claims: T,
    /// The algorithm used.
    pub alg: SigningAlg,
    /// The `kid` of the key that verified it.
    pub kid: Option<String>,
    /// The `typ` header.
    pub typ: Option<String>,
}

impl<'a> UnverifiedJwt<'a> {
    /// Parses the header; refuses anything not on the allowlist.
    pub fn parse(raw: &'a str) -> Result<Self, JoseError> {
        if raw.len() > MAX_JWT_LEN {
            return Err(JoseError::Malformed("too long"));
        }
        if raw.split('.').count() != 3 {
            return Err(JoseError::Malformed("not three parts"));
        }
        let header = jsonwebtoken::decode_header(raw).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::Json(_) => JoseError::AlgorithmNotAllowed,
            _ => JoseError::Malformed("bad header"),
        })?;
        let alg = SigningAlg::from_jwt(header.alg).ok_or(JoseError::AlgorithmNotAllowed)?;
        Ok(Self {
            raw,
            alg,
            kid: header.kid,
            typ: header.typ,
        })
    }

    /// The `kid` header, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `typ` header, if any.
    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }

    /// The algorithm.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// Decodes the claims WITHOUT checking the signature: only to find which key
    /// to verify with (a client assertion's `iss`, say). Never act on the result.
    pub fn insecure_peek_claims<T: DeserializeOwned>(&self) -> Result<T, JoseError> {
        let payload = self
            .raw
            .split('.')
            .nth(1)
            .ok_or(JoseError::Malformed("not three parts"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| JoseError::Malformed("payload is not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|_| JoseError::Malformed("payload is not JSON"))
    }

    /// Verifies the signature with the key among `keys` that matches the `kid`
    /// (or, without a `kid`, any key of the right type), and decodes the claims.
    pub fn verify<T: DeserializeOwned>(
        self,
        keys: &[PublicJwk],
    ) -> Result<VerifiedJwt<T>, JoseError> {
        let mut validation = jsonwebtoken::Validation::new(self.alg.to_jwt());
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let candidates = keys.iter().filter(|k| match (&self.kid, &k.kid) {
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
            (None, _) => true,
        });
        let mut found_key = false;
        for key in candidates {
            if key.key_alg().ok() != Some(self.alg) {
                continue;
            }
            found_key = true;
            let decoding = key.decoding_key()?;
            match jsonwebtoken::decode::<T>(self.raw, &decoding, &validation) {
                Ok(data) => {
                    return Ok(VerifiedJwt {
                        claims: data.claims,
                        alg: self.alg,
                        kid: self.kid,
                        typ: self.typ,
                    })
                }
                Err(e) => match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => continue,
                    jsonwebtoken::errors::ErrorKind::Json(_) => {
                        return Err(JoseError::Malformed("claims are not the expected JSON"))
                    }
                    _ => continue,
                },
            }
        }
        Err(if found_key {
            JoseError::BadSignature
        } else {
            JoseError::UnknownKey
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PrivateKeyDer, SigningKey};
    use serde_json::{json, Value};

    fn key(alg: SigningAlg) -> SigningKey {
        SigningKey::from_private(alg, &PrivateKeyDer::generate(alg).unwrap()).unwrap()
    }

    #[test]
    fn sign_and_verify_each_algorithm() {
        for alg in SigningAlg::ALL {
            let k = key(alg);
            let token = k.sign("at+jwt", &json!({"sub": "a"})).unwrap();
            let unverified = UnverifiedJwt::parse(&token).unwrap();
            assert_eq!(unverified.kid(), Some(k.kid()));
            assert_eq!(unverified.typ(), Some("at+jwt"));
            let v: VerifiedJwt<Value> = unverified.verify(&[k.public_jwk().clone()]).unwrap();
            assert_eq!(v.claims["sub"], "a");
        }
    }

    #[test]
    fn wrong_key_tampering_and_alg_none_fail() {
        let k = key(SigningAlg::EdDSA);
        let other = key(SigningAlg::EdDSA);
        let token = k.sign("at+jwt", &json!({"sub": "a"})).unwrap();
        let mut impostor = other.public_jwk().clone();
        impostor.kid = Some(k.kid().to_owned());
        assert!(matches!(
            UnverifiedJwt::parse(&token)
                .unwrap()
                .verify::<Value>(&[impostor]),
            Err(JoseError::BadSignature)
        ));
        assert!(matches!(
            UnverifiedJwt::parse(&token)
                .unwrap()
                .verify::<Value>(&[other.public_jwk().clone()]),
            Err(JoseError::UnknownKey)
        ));
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#),
            parts[2]
        );
        assert!(UnverifiedJwt::parse(&forged)
            .unwrap()
            .verify::<Value>(&[k.public_jwk().clone()])
            .is_err());
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert!(matches!(
            UnverifiedJwt::parse(&none),
            Err(JoseError::AlgorithmNotAllowed)
        ));
        let hs = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#),
            parts[1],
            parts[2]
        );
        assert!(matches!(
            UnverifiedJwt::parse(&hs),
            Err(JoseError::AlgorithmNotAllowed)
        ));
        assert!(UnverifiedJwt::parse("a.b").is_err());
        assert!(UnverifiedJwt::parse(&"a".repeat(MAX_JWT_LEN + 1)).is_err());
    }
}
