//! What the token endpoint hands out, and the key a token is cached under.

use mandate_types::UnixTime;
use sha2::{Digest, Sha256};

/// How a token is presented to a resource server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// `Authorization: Bearer` (RFC 6750).
    Bearer,
    /// `Authorization: DPoP` with a proof of possession (RFC 9449 §7).
    DPoP,
}

impl TokenType {
    /// The `Authorization` scheme.
    pub const fn scheme(self) -> &'static str {
        match self {
            Self::Bearer => "Bearer",
            Self::DPoP => "DPoP",
        }
    }
}

/// An access token with what the token response said about it.
///
/// The token itself is a credential: `Debug` prints `[redacted]`, there is no
/// `Display`, and [`AccessToken::secret`] is the one way to read it.
#[derive(Clone)]
pub struct AccessToken {
    pub(crate) token: String,
    pub(crate) token_type: TokenType,
    pub(crate) expires_at: Option<UnixTime>,
    pub(crate) lifetime: Option<i64>,
    pub(crate) scope: Option<String>,
    pub(crate) issued_token_type: Option<String>,
}

impl AccessToken {
    /// The token, to put in a header.
    pub fn secret(&self) -> &str {
        &self.token
    }

    /// Bearer, or DPoP-bound.
    pub fn token_type(&self) -> TokenType {
        self.token_type
    }

    /// When it expires (from `expires_in`), if the server said.
    pub fn expires_at(&self) -> Option<UnixTime> {
        self.expires_at
    }

    /// The granted scope, if the server said (RFC 6749 §5.1: it must when it
    /// differs from the request).
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// RFC 8693 §2.2.1 `issued_token_type`, for tokens from an exchange.
    pub fn issued_token_type(&self) -> Option<&str> {
        self.issued_token_type.as_deref()
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("issued_token_type", &self.issued_token_type)
            .finish()
    }
}

/// Which grant a cached token came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// `client_credentials`: the agent's own authority.
    ClientCredentials,
    /// RFC 8693 token exchange of a subject token, named by its SHA-256 so
    /// that the cache never holds another party's token as a key.
    Exchange {
        /// SHA-256 of the subject token.
        subject: [u8; 32],
        /// SHA-256 of the actor token, if one was sent.
        actor: Option<[u8; 32]>,
        /// A Biscuit was asked for rather than a JWT.
        biscuit: bool,
    },
}

/// The cache key: a token for one audience, one scope, from one grant.
///
/// A [`crate::TokenSource`] has at most one DPoP key, so whether its tokens
/// are bound is a property of the source, not of the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// The RFC 8707 `resource`, as sent.
    pub resource: Option<String>,
    /// The requested scope, normalized (sorted, deduplicated).
    pub scope: Option<String>,
    /// The grant.
    pub kind: TokenKind,
}

impl TokenKey {
    /// A key for `kind`, normalizing `scope` so that `"b a"` and `"a b"` share
    /// an entry.
    pub fn new(resource: Option<&str>, scope: Option<&str>, kind: TokenKind) -> Self {
        Self {
            resource: resource.map(str::to_owned),
            scope: scope.and_then(normalize_scope),
            kind,
        }
    }
}

/// Sorted, deduplicated, single-spaced; `None` when empty.
pub(crate) fn normalize_scope(scope: &str) -> Option<String> {
    let mut parts: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
    parts.sort_unstable();
    parts.dedup();
    (!parts.is_empty()).then(|| parts.join(" "))
}

pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_order_does_not_split_the_cache() {
        let a = TokenKey::new(Some("r"), Some("b a  a"), TokenKind::ClientCredentials);
        let b = TokenKey::new(Some("r"), Some("a b"), TokenKind::ClientCredentials);
        assert_eq!(a, b);
        assert_eq!(
            TokenKey::new(None, Some("  "), TokenKind::ClientCredentials).scope,
            None
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = AccessToken {
            token: "eyJ.secret.sig".into(),
            token_type: TokenType::DPoP,
            expires_at: Some(10),
            lifetime: Some(10),
            scope: Some("read".into()),
            issued_token_type: None,
        };
        let printed = format!("{t:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("DPoP"));
    }
}
