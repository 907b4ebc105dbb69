//! Mandate's guard: what a resource server (an A2A agent, an MCP server, any
//! HTTP API) must check on every request, usable two ways:
//!
//! * as a tower [`GuardLayer`] that any axum or hyper agent adds in a few
//!   lines; handlers receive the [`VerifiedAccessToken`] as a request
//!   extension and can make finer checks (per skill) themselves;
//! * through [`Guard::decide`] directly, which is what Mandate's gateway does
//!   before proxying. Both paths run the same function, so they cannot disagree.
//!
//! What is checked, in order: the token comes only from `Authorization:
//! Bearer` (never the query string); its `alg` is on the allowlist; its
//! issuer is one of the trusted ones (keys from that issuer's metadata, never
//! from the token); `typ` is `at+jwt` where the issuer promises RFC 9068; the
//! signature; `exp`, `nbf`, `iat` with a small leeway; `aud` is this resource;
//! the token is not revoked; its scopes cover the resource's and the
//! operation's. Verified tokens are cached until they expire.
//!
//! Biscuits ([`mandate_biscuit`]) are accepted where root keys are given
//! ([`TokenVerifier::with_biscuit_roots`]): the same checks on their
//! authority block, then every block's checks against the request's facts.

pub mod a2a;
mod guard;
pub mod keys;
pub mod mcp;
pub mod policy;
pub mod token;

pub use a2a::A2aOperation;
pub use guard::{GuardLayer, GuardService, ResponseFuture, DEFAULT_MAX_BODY};
pub use policy::{
    Allowed, Denial, DpopNonces, Guard, MemoryReplay, ProofReplay, ProtectedResource, Protocol,
    RequestView,
};
pub use token::{
    BiscuitRoots, KeySource, NoRevocation, RevocationList, StaticRoots, TokenError, TokenVerifier,
    TrustedIssuer, Verified, VerifiedAccessToken,
};
