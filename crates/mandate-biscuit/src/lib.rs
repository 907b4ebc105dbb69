//! Biscuit tokens: authority that its holder can narrow offline.
//!
//! A JWT access token is all or nothing: to hand a sub-agent less, its holder
//! must ask the authorization server for a new token. A Biscuit carries its
//! authority in a signed first block, and anyone holding it can append blocks
//! of checks (never facts the verifier trusts) without contacting Mandate. A
//! request passes only when every block's checks hold, so each appended block
//! can only narrow what the token allows. Removing or editing a block breaks
//! the signature chain.
//!
//! This crate is the vocabulary and the three operations, without I/O:
//! [`mint`] (the authorization server), [`attenuate`] (the holder) and
//! [`VerifiedBiscuit::authorize`] (the gateway and the guard layer).
//!
//! # Vocabulary
//!
//! The authority block, written by Mandate at token exchange:
//!
//! | fact | meaning |
//! |---|---|
//! | `issuer($iss)` | the issuer, as in JWT `iss` |
//! | `subject($sub)` | the principal the token acts for (`sub`) |
//! | `client($id)` | the client the token was issued to (`client_id`) |
//! | `audience($uri)` | the one resource it may be used at (`aud`) |
//! | `scope($s)` | one fact per granted scope |
//! | `token_id($jti)` | the token id, for revocation and the audit trail |
//! | `expires($t)` | the expiry, as a date |
//! | `actor($n, $sub, $client)` | the delegation chain, `$n = 0` the current actor |
//! | `dpop_jkt($thumbprint)` | the DPoP key the token is bound to (RFC 9449) |
//!
//! and the check `check if time($t), $t < <expiry>`.
//!
//! The authorizer adds, for each request: `time($t)`, `resource($uri)`,
//! `operation($name)` (the A2A operation or the MCP method), `tool($name)` and
//! `level($level)` for MCP tool calls, `http_method($m)`, `path($p)`, and one
//! `required_scope($s)` per scope the request needs. It then requires
//! `scope($s)` from the authority block for each required scope.
//!
//! Attenuation blocks hold checks over those facts, for example (to allow
//! only some scopes, use `reject if`: `check all` would fail a request that
//! needs no scope at all, such as an MCP `initialize`):
//!
//! ```text
//! check if tool("search");
//! check if time($t), $t <= 2026-12-01T00:00:00Z;
//! check if resource("https://files.example.com/mcp");
//! reject if required_scope($s), !["files:read"].contains($s);
//! ```

mod attenuate;
mod authorize;
mod mint;
mod root;

pub use attenuate::{attenuate, inspect, Attenuation, MAX_BLOCKS, MAX_CHECKS_PER_BLOCK};
pub use authorize::{
    BiscuitClaims, Refusal, RequestFacts, RootKeys, VerifiedBiscuit, MAX_BISCUIT_LEN,
};
pub use mint::{mint, ActorEntry, Grant};
pub use root::{root_key_id, PublishedRootKey, RootKey};

/// The RFC 8693 token type of a Mandate Biscuit.
pub const TOKEN_TYPE: &str = "urn:mandate:params:oauth:token-type:biscuit";

/// What can go wrong with a Biscuit, before any request is judged.
#[derive(Debug, thiserror::Error)]
pub enum BiscuitError {
    /// Not a Biscuit, or its signatures do not verify.
    #[error("malformed or unverifiable biscuit: {0}")]
    Format(String),
    /// No root key with the token's key id.
    #[error("unknown biscuit root key")]
    UnknownRootKey,
    /// The authority block lacks a fact the vocabulary requires.
    #[error("biscuit authority block lacks {0}")]
    MissingFact(&'static str),
    /// A block to append is not valid Datalog or breaks a limit.
    #[error("invalid attenuation: {0}")]
    Attenuation(String),
    /// The token was sealed: no block can be added.
    #[error("the biscuit is sealed")]
    Sealed,
    /// A key could not be loaded.
    #[error("biscuit root key: {0}")]
    Key(String),
}

impl From<biscuit_auth::error::Token> for BiscuitError {
    fn from(e: biscuit_auth::error::Token) -> Self {
        match e {
            biscuit_auth::error::Token::AppendOnSealed
            | biscuit_auth::error::Token::AlreadySealed => Self::Sealed,
            biscuit_auth::error::Token::Format(biscuit_auth::error::Format::UnknownPublicKey) => {
                Self::UnknownRootKey
            }
            other => Self::Format(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
