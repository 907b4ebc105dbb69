//! Mandate's leaf types: the vocabulary every other crate speaks.
//!
//! Nothing here does I/O. Raw strings from the wire become these types at the
//! edge ("parse, don't validate"), so code further in never re-checks a scope's
//! syntax or wonders whether a `String` holds a secret.

mod clock;
mod error;
mod ids;
mod scope;
mod secret;

pub use clock::{Clock, FixedClock, SystemClock, UnixTime};
pub use error::OAuthErrorCode;
pub use ids::{random_token, ClientId, ResourceUri, MAX_IDENTIFIER_LEN};
pub use scope::{Scope, ScopeError, ScopeSet, MAX_SCOPES, MAX_SCOPE_LEN};
pub use secret::{ClientSecret, SecretHash};
