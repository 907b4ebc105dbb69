//! The core's one error type. Variants name causes; `mandate-server::errors`
//! maps each to its OAuth code, HTTP status and challenge, in one exhaustive
//! match. Descriptions are safe to show a client: they never hold a secret or a
//! token. Details for operators go in `log_detail`.

use std::borrow::Cow;

use crate::store::StoreError;

/// Why the authorization server refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed request: missing or repeated parameter, bad syntax.
    #[error("{0}")]
    InvalidRequest(Cow<'static, str>),
    /// Client authentication failed. `detail` is for the log only.
    #[error("client authentication failed")]
    InvalidClient {
        /// Whether the client tried HTTP Basic (the answer then carries a challenge).
        basic: bool,
        /// What failed, for the operator's log.
        detail: Cow<'static, str>,
    },
    /// The grant (code, refresh token, assertion) is invalid.
    #[error("{0}")]
    InvalidGrant(Cow<'static, str>),
    /// The client may not use this grant type.
    #[error("{0}")]
    UnauthorizedClient(Cow<'static, str>),
    /// The grant type is unknown or not supported.
    #[error("unsupported grant_type")]
    UnsupportedGrantType,
    /// The scope is malformed or exceeds what may be granted.
    #[error("{0}")]
    InvalidScope(Cow<'static, str>),
    /// The resource is unknown or not allowed (RFC 8707).
    #[error("{0}")]
    InvalidTarget(Cow<'static, str>),
    /// A bearer credential at a protected endpoint (initial access token,
    /// registration access token) is missing or wrong.
    #[error("{0}")]
    InvalidToken(Cow<'static, str>),
    /// Dynamic registration is closed.
    #[error("dynamic client registration is not open on this server")]
    RegistrationClosed,
    /// RFC 7591 metadata is invalid.
    #[error("{0}")]
    InvalidClientMetadata(Cow<'static, str>),
    /// An RFC 7591 redirect URI is invalid.
    #[error("{0}")]
    InvalidRedirectUri(Cow<'static, str>),
    /// An admin API object does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// An admin API request conflicts with what exists.
    #[error("{0}")]
    Conflict(Cow<'static, str>),
    /// Storage failed.
    #[error("storage unavailable")]
    Store(#[from] StoreError),
    /// The audit trail could not record the event, so nothing was issued.
    #[error("audit trail unavailable")]
    AuditUnavailable,
    /// A pushed authorization request (RFC 9126) is invalid; `code` is what
    /// the authorization endpoint would have redirected with.
    #[error("{description}")]
    InvalidPushedRequest {
        /// The OAuth error code.
        code: mandate_types::OAuthErrorCode,
        /// Why.
        description: Cow<'static, str>,
    },
    /// A DPoP proof is missing, malformed, stale, replayed or for another request.
    #[error("{0}")]
    InvalidDpopProof(Cow<'static, str>),
    /// The DPoP proof lacks the server's current nonce.
    #[error("a DPoP nonce is required")]
    UseDpopNonce {
        /// The nonce to use.
        nonce: String,
    },
    /// The user denied a request whose redirect could not be built.
    #[error("the request was denied")]
    AccessDeniedPage,
    /// A key could not be loaded or used.
    #[error("signing key unavailable")]
    Keys(Cow<'static, str>),
}

impl Error {
    /// What the operator's log should say beyond the client-facing text.
    pub fn log_detail(&self) -> Option<String> {
        match self {
            Self::InvalidClient { detail, .. } => Some(detail.to_string()),
            Self::Store(e) => Some(e.to_string()),
            Self::Keys(d) => Some(d.to_string()),
            _ => None,
        }
    }

    pub(crate) fn invalid_client(basic: bool, detail: impl Into<Cow<'static, str>>) -> Self {
        Self::InvalidClient {
            basic,
            detail: detail.into(),
        }
    }
}
