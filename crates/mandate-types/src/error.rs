//! The error codes of the OAuth registries (RFC 6749 §5.2, RFC 6750 §3.1,
//! RFC 7591 §3.2.2, RFC 8707 §2). Which code a failure gets, and with which HTTP
//! status, is decided in one place: `mandate-server`'s `errors` module.

/// An OAuth error code as it appears in the `error` member of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OAuthErrorCode {
    /// RFC 6749: the request is missing a parameter, repeats one, or is otherwise malformed.
    InvalidRequest,
    /// RFC 6749: client authentication failed.
    InvalidClient,
    /// RFC 6749: the grant or refresh token is invalid, expired or revoked.
    InvalidGrant,
    /// RFC 6749: the client may not use this grant type.
    UnauthorizedClient,
    /// RFC 6749: the grant type is not supported by this server.
    UnsupportedGrantType,
    /// RFC 6749: the requested scope is invalid, unknown or exceeds what the client may have.
    InvalidScope,
    /// RFC 8707: the requested resource is invalid or not allowed for this client.
    InvalidTarget,
    /// RFC 6750: the access token is missing, expired, revoked or malformed.
    InvalidToken,
    /// RFC 9449: the DPoP proof is invalid.
    InvalidDpopProof,
    /// RFC 9449: the server requires a DPoP nonce.
    UseDpopNonce,
    /// RFC 6749 §4.1.2.1: the server does not support this response type.
    UnsupportedResponseType,
    /// RFC 6749: the resource owner or server denied the request.
    AccessDenied,
    /// RFC 7591: a client metadata field is invalid.
    InvalidClientMetadata,
    /// RFC 7591: a redirect URI is invalid.
    InvalidRedirectUri,
    /// RFC 7009: the server does not support revoking this token type.
    UnsupportedTokenType,
    /// RFC 6749: an unexpected condition prevented the server from answering.
    ServerError,
    /// RFC 6749: the server is temporarily overloaded or under maintenance.
    TemporarilyUnavailable,
}

impl OAuthErrorCode {
    /// The code as written on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::InvalidToken => "invalid_token",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::AccessDenied => "access_denied",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

impl std::fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
