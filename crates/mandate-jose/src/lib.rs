//! Signing keys, JWS and JWK Sets for Mandate, on the `jsonwebtoken` crate.
//!
//! Why a wrapper: `jsonwebtoken` does the signature arithmetic (RustCrypto
//! backend, no C), but three decisions are ours and live here so that no caller
//! can forget them:
//!
//! * **An algorithm allowlist.** Only [`SigningAlg`] (EdDSA, ES256, RS256) is ever
//!   accepted. `none` and every HMAC algorithm fail at header parsing, so a public
//!   key can never be used as an HMAC secret.
//! * **Verified is a different type.** [`UnverifiedJwt`] can be inspected
//!   (header, `kid`) but its claims only come out of [`UnverifiedJwt::verify`],
//!   as a [`VerifiedJwt`]. Time-based claims are checked by the caller against its
//!   own `Clock`; this crate never reads the system time.
//! * **Keys at rest are sealed.** Private keys leave memory only as
//!   XChaCha20-Poly1305 ciphertext under the [`MasterKey`], with the key id as
//!   associated data so a ciphertext cannot be moved to another key's row.

mod alg;
pub mod dpop;
mod error;
mod jwk;
mod jwt;
mod keys;
mod seal;

pub use alg::SigningAlg;
pub use error::JoseError;
pub use jwk::{JwkSet, PublicJwk, MAX_JWKS_KEYS};
pub use jwt::{UnverifiedJwt, VerifiedJwt, MAX_JWT_LEN};
pub use keys::{PrivateKeyDer, SigningKey};
pub use seal::MasterKey;
