//! Envelope for private keys at rest.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::JoseError;

const NONCE_LEN: usize = 24;

/// The 32-byte key that seals private keys at rest. Never printed.
pub struct MasterKey(XChaCha20Poly1305);

impl MasterKey {
    /// From 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(XChaCha20Poly1305::new(bytes.into()))
    }

    /// Encrypts `plaintext`, binding it to `aad` (the key id). Output: nonce || ciphertext.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, JoseError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut chacha20poly1305::aead::OsRng);
        let ct = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| JoseError::Key("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts what [`MasterKey::seal`] produced with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, JoseError> {
        let (nonce, ct) = sealed
            .split_at_checked(NONCE_LEN)
            .ok_or(JoseError::Key("sealed key too short"))?;
        self.0
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| JoseError::Key("wrong master key or tampered key row"))
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let k = MasterKey::from_bytes(&[7; 32]);
        let sealed = k.seal(b"secret", b"kid-1").unwrap();
        assert_eq!(k.open(&sealed, b"kid-1").unwrap(), b"secret");
        assert!(k.open(&sealed, b"kid-2").is_err());
        assert!(MasterKey::from_bytes(&[8; 32])
            .open(&sealed, b"kid-1")
            .is_err());
        assert!(k.open(&sealed[..10], b"kid-1").is_err());
    }
}
