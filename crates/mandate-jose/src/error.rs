/// Why a key, JWK or JWS was refused.
#[derive(Debug, thiserror::Error)]
pub enum JoseError {
    /// The compact serialization is not three base64url parts, or too long.
    #[error("malformed JWS: {0}")]
    Malformed(&'static str),
    /// The `alg` is not on the allowlist (this includes `none` and HMAC).
    #[error("JWS algorithm not allowed")]
    AlgorithmNotAllowed,
    /// No key with the token's `kid` (or of the right type) is known.
    #[error("no matching key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A JWK is malformed or of an unsupported type.
    #[error("invalid JWK: {0}")]
    InvalidJwk(&'static str),
    /// A private key could not be generated, parsed or unsealed.
    #[error("key error: {0}")]
    Key(&'static str),
    /// Signing failed.
    #[error("signing failed")]
    Sign,
}
