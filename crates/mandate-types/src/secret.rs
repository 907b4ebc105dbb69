//! Secrets are types: a [`ClientSecret`] prints as `[redacted]`, cannot be
//! serialized, and is only ever stored as its [`SecretHash`].
//!
//! Generated secrets carry 256 bits of entropy, so a single SHA-256 is the right
//! stored form: a slow password hash buys nothing against a brute force of 2^256
//! and would cost every token request milliseconds. Comparison is constant-time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ids::random_token;

/// A client secret in the clear: only ever held while it is being checked, or
/// once, when it is generated and shown to the operator.
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a presented secret.
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// A fresh secret of 32 random bytes (256 bits), base64url.
    pub fn generate() -> Self {
        Self(random_token(32))
    }

    /// The secret, for the one place that must show or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash we store.
    pub fn hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// The SHA-256 of a secret; what the store keeps.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// From the hex form used in configuration (`secret_sha256`) and storage.
    pub fn from_hex(hex_digest: &str) -> Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_digest.trim(), &mut out)
            .map_err(|_| "expected 64 hex digits (a SHA-256 digest)".to_owned())?;
        Ok(Self(out))
    }

    /// The hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `presented` hashes to this value, compared in constant time.
    pub fn matches(&self, presented: &ClientSecret) -> bool {
        let candidate: [u8; 32] = Sha256::digest(presented.0.as_bytes()).into();
        bool::from(self.0.ct_eq(&candidate))
    }
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

impl serde::Serialize for SecretHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for SecretHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_matches_only_itself() {
        let s = ClientSecret::generate();
        assert!(s.expose().len() >= 43);
        let h = s.hash();
        assert!(h.matches(&ClientSecret::new(s.expose().to_owned())));
        assert!(!h.matches(&ClientSecret::new("nope".into())));
        assert_eq!(SecretHash::from_hex(&h.to_hex()).unwrap(), h);
        assert_eq!(format!("{s:?}"), "ClientSecret([redacted])");
    }
}
