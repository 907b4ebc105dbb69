//! One error type for the SDK. Blame is kept apart: the authorization server
//! refused ([`Error::OAuth`], with its RFC 6749 §5.2 `error` code), the
//! network or a peer failed ([`Error::Transport`], [`Error::Response`]), or the
//! caller misused the API ([`Error::Config`], [`Error::NoTarget`]).
//!
//! No variant ever holds a token, a secret or a key: the messages carry OAuth
//! error codes, the server's `error_description`, URLs without their query,
//! and fixed texts. That is what makes it safe to log an `Error` whole.

use std::sync::Arc;

use mandate_types::OAuthErrorCode;

/// A refusal from the authorization server (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status of the answer.
    pub status: u16,
    /// The `error` code, as sent (`invalid_scope`, `use_dpop_nonce`, ...).
    pub error: String,
    /// The server's `error_description`, if any.
    pub error_description: Option<String>,
}

impl OAuthError {
    /// Whether this is the refusal `code`.
    pub fn is(&self, code: OAuthErrorCode) -> bool {
        self.error == code.as_str()
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error_description {
            Some(d) => write!(f, "{} ({}): {d}", self.error, self.status),
            None => write!(f, "{} ({})", self.error, self.status),
        }
    }
}

/// Why the SDK could not get or use a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The authorization server refused the request.
    #[error("the authorization server refused: {0}")]
    OAuth(OAuthError),
    /// The request could not be sent, or its answer not read.
    #[error("HTTP request to {what} failed: {source}")]
    Transport {
        /// Which endpoint (`token endpoint`, `metadata`, `resource`).
        what: &'static str,
        /// The cause, without its URL.
        source: Arc<reqwest::Error>,
    },
    /// The peer answered something that is not what the protocol says.
    #[error("unexpected answer from {what}: {problem}")]
    Response {
        /// Which endpoint.
        what: &'static str,
        /// What was wrong.
        problem: String,
    },
    /// The SDK was configured wrongly (a bad URL, a missing DPoP key).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A proof or an assertion could not be signed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// [`crate::AuthorizedClient`] has no target for this URL, so it sends
    /// no token there.
    #[error("no token target configured for {0}")]
    NoTarget(String),
}

impl Error {
    /// The OAuth `error` code, when the authorization server refused.
    pub fn oauth(&self) -> Option<&OAuthError> {
        match self {
            Self::OAuth(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the authorization server refused with `code`.
    pub fn is_oauth(&self, code: OAuthErrorCode) -> bool {
        self.oauth().is_some_and(|e| e.is(code))
    }

    pub(crate) fn transport(what: &'static str, e: reqwest::Error) -> Self {
        Self::Transport {
            what,
            source: Arc::new(e.without_url()),
        }
    }

    pub(crate) fn response(what: &'static str, problem: impl Into<String>) -> Self {
        Self::Response {
            what,
            problem: problem.into(),
        }
    }
}

impl From<reqwest::Error> for Error {
    /// For `builder.build()?` before [`crate::AuthorizedClient::send`].
    fn from(e: reqwest::Error) -> Self {
        Self::transport("request", e)
    }
}

impl From<mandate_jose::JoseError> for Error {
    fn from(e: mandate_jose::JoseError) -> Self {
        Self::Signing(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_errors_are_matched_by_code_and_print_the_description() {
        let e = Error::OAuth(OAuthError {
            status: 400,
            error: "invalid_scope".into(),
            error_description: Some("exchange may only narrow".into()),
        });
        assert!(e.is_oauth(OAuthErrorCode::InvalidScope));
        assert!(!e.is_oauth(OAuthErrorCode::InvalidGrant));
        assert_eq!(
            e.to_string(),
            "the authorization server refused: invalid_scope (400): exchange may only narrow"
        );
    }
}
