//! Root keys: the Ed25519 keys that sign authority blocks.
//!
//! A root key lives in Mandate's keyring beside the JWT signing keys (sealed
//! at rest, pre-published, retired like them) and is named by the same RFC
//! 7638 `kid`. A Biscuit names its root key by a 32-bit `root_key_id`, which
//! is derived from the `kid`, so a verifier holding several published keys
//! picks the right one without trying each.

use biscuit_auth::builder::Algorithm;
use biscuit_auth::{KeyPair, PrivateKey, PublicKey};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::BiscuitError;

/// The Biscuit `root_key_id` for a key id: the first four bytes of its SHA-256.
pub fn root_key_id(kid: &str) -> u32 {
    let digest: [u8; 32] = Sha256::digest(kid.as_bytes()).into();
    let [a, b, c, d, ..] = digest;
    u32::from_be_bytes([a, b, c, d])
}

/// A private root key.
pub struct RootKey {
    kid: String,
    id: u32,
    pair: KeyPair,
}

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootKey")
            .field("kid", &self.kid)
            .field("root_key_id", &self.id)
            .finish_non_exhaustive()
    }
}

impl RootKey {
    /// Loads an Ed25519 key from its PKCS#8 DER form, naming it `kid`.
    pub fn from_ed25519_pkcs8(kid: &str, der: &[u8]) -> Result<Self, BiscuitError> {
        let key = ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map_err(|e| BiscuitError::Key(e.to_string()))?;
        let private = PrivateKey::from_bytes(&key.to_bytes(), Algorithm::Ed25519)
            .map_err(|e| BiscuitError::Key(e.to_string()))?;
        Ok(Self {
            kid: kid.to_owned(),
            id: root_key_id(kid),
            pair: KeyPair::from(&private),
        })
    }

    /// The key id shared with the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The id Biscuits carry.
    pub fn root_key_id(&self) -> u32 {
        self.id
    }

    pub(crate) fn pair(&self) -> &KeyPair {
        &self.pair
    }

    /// The public half, as published in the authorization server metadata.
    pub fn published(&self) -> PublishedRootKey {
        PublishedRootKey {
            kid: self.kid.clone(),
            root_key_id: self.id,
            algorithm: "ed25519".into(),
            public_key: self.pair.public().to_bytes_hex(),
        }
    }
}

/// A root public key as the metadata publishes it
/// (`biscuit_root_keys` in Mandate's RFC 8414 document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedRootKey {
    /// The key id (RFC 7638 thumbprint of the key as a JWK).
    pub kid: String,
    /// The `root_key_id` Biscuits signed with it carry.
    pub root_key_id: u32,
    /// `ed25519`.
    pub algorithm: String,
    /// The 32-byte public key, hex.
    pub public_key: String,
}

impl PublishedRootKey {
    /// The key, for verification.
    pub fn public_key(&self) -> Result<PublicKey, BiscuitError> {
        if self.algorithm != "ed25519" {
            return Err(BiscuitError::Key(format!(
                "unsupported algorithm {}",
                self.algorithm
            )));
        }
        PublicKey::from_bytes_hex(&self.public_key, Algorithm::Ed25519)
            .map_err(|e| BiscuitError::Key(e.to_string()))
    }
}
