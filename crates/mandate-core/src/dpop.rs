//! DPoP at the token endpoint (RFC 9449 §5, §8): a client that sends a proof
//! gets a token bound to its key (`cnf.jkt`, `token_type: DPoP`).
//!
//! Nonces are stateless so replicas agree without coordination: the nonce of
//! a five-minute window is base64url(HMAC-SHA256(key, window)), the key being
//! derived from the master key every replica shares; the current and the
//! previous window's nonces are accepted. Proof `jti`s go into the store's
//! single-use table, so a proof replayed at another replica is refused too.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use mandate_jose::dpop::{verify_proof, DpopContext, DpopError};
use sha2::{Digest, Sha256};

use crate::authority::Authority;
use crate::Error;

/// Nonce window, seconds.
const NONCE_WINDOW: i64 = 300;
/// Oldest proof accepted, seconds.
pub const PROOF_MAX_AGE: i64 = 300;

/// The nonce key from the master key.
pub fn derive_nonce_key(master: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"mandate dpop nonce v1");
    h.update(master);
    h.finalize().into()
}

fn nonce_for(key: &[u8; 32], window: i64) -> String {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        // A 32-byte key is always accepted by HMAC.
        Err(_) => return String::new(),
    };
    mac.update(&window.to_be_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

impl Authority {
    /// The nonce to hand out now.
    pub fn dpop_nonce(&self) -> String {
        nonce_for(
            &self.settings.dpop_nonce_key,
            self.clock.now().div_euclid(NONCE_WINDOW),
        )
    }

    /// The nonces accepted now: the current window's and the previous one's.
    pub fn accepted_nonces(&self) -> Vec<String> {
        let w = self.clock.now().div_euclid(NONCE_WINDOW);
        vec![
            nonce_for(&self.settings.dpop_nonce_key, w),
            nonce_for(&self.settings.dpop_nonce_key, w - 1),
        ]
    }

    /// Checks a DPoP proof sent to `url` with `method`, records its `jti`,
    /// and returns the key thumbprint to bind to.
    pub async fn check_dpop(
        &self,
        proof: &str,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        require_nonce: bool,
    ) -> Result<String, Error> {
        let nonces = self.accepted_nonces();
        let ctx = DpopContext {
            method,
            url,
            now: self.clock.now(),
            max_age: PROOF_MAX_AGE,
            leeway: self.settings.leeway,
            access_token,
            nonces: require_nonce.then_some(nonces.as_slice()),
        };
        let verified = verify_proof(proof, &ctx).map_err(|e| match e {
            DpopError::Nonce => Error::UseDpopNonce {
                nonce: self.dpop_nonce(),
            },
            other => Error::InvalidDpopProof(other.to_string().into()),
        })?;
        let key = format!("{} {}", verified.jkt, verified.jti);
        if !self
            .store
            .use_once(
                "dpop",
                &key,
                verified.iat + PROOF_MAX_AGE + self.settings.leeway,
            )
            .await?
        {
            return Err(Error::InvalidDpopProof("DPoP proof replayed".into()));
        }
        Ok(verified.jkt)
    }
}
