//! The one place where a failure becomes an HTTP response: OAuth error code
//! (RFC 6749 §5.2, RFC 6750 §3.1, RFC 7591 §3.2.2, RFC 8707), status, and
//! challenge. The match has no catch-all arm, so a new core error cannot ship
//! without a decision here. Clients get the code and a safe description; the
//! log gets the detail.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mandate_core::upstream_login::UpstreamLoginError;
use mandate_core::Error;
use mandate_types::OAuthErrorCode;
use serde_json::json;

/// A core error on its way to the wire.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

/// The wire form of a core error: status, OAuth code, whether to show the
/// description, and the `WWW-Authenticate` challenge if one is due.
pub fn classify(e: &Error) -> (StatusCode, OAuthErrorCode, Option<&'static str>) {
    use OAuthErrorCode as C;
    match e {
        Error::InvalidRequest(_) => (StatusCode::BAD_REQUEST, C::InvalidRequest, None),
        Error::InvalidClient { basic: true, .. } => (
            StatusCode::UNAUTHORIZED,
            C::InvalidClient,
            Some("Basic realm=\"mandate\", charset=\"UTF-8\""),
        ),
        Error::InvalidClient { basic: false, .. } => {
            (StatusCode::UNAUTHORIZED, C::InvalidClient, None)
        }
        Error::InvalidGrant(_) => (StatusCode::BAD_REQUEST, C::InvalidGrant, None),
        Error::UnauthorizedClient(_) => (StatusCode::BAD_REQUEST, C::UnauthorizedClient, None),
        Error::UnsupportedGrantType => (StatusCode::BAD_REQUEST, C::UnsupportedGrantType, None),
        Error::InvalidScope(_) => (StatusCode::BAD_REQUEST, C::InvalidScope, None),
        Error::InvalidTarget(_) => (StatusCode::BAD_REQUEST, C::InvalidTarget, None),
        Error::InvalidToken(_) => (
            StatusCode::UNAUTHORIZED,
            C::InvalidToken,
            Some("Bearer error=\"invalid_token\""),
        ),
        Error::InvalidPushedRequest { code, .. } => (StatusCode::BAD_REQUEST, *code, None),
        Error::InvalidDpopProof(_) => (StatusCode::BAD_REQUEST, C::InvalidDpopProof, None),
        Error::UseDpopNonce { .. } => (StatusCode::BAD_REQUEST, C::UseDpopNonce, None),
        Error::AccessDeniedPage => (StatusCode::FORBIDDEN, C::AccessDenied, None),
        Error::RegistrationClosed => (StatusCode::FORBIDDEN, C::AccessDenied, None),
        Error::InvalidClientMetadata(_) => {
            (StatusCode::BAD_REQUEST, C::InvalidClientMetadata, None)
        }
        Error::InvalidRedirectUri(_) => (StatusCode::BAD_REQUEST, C::InvalidRedirectUri, None),
        Error::NotFound(_) => (StatusCode::NOT_FOUND, C::InvalidRequest, None),
        Error::Conflict(_) => (StatusCode::CONFLICT, C::InvalidRequest, None),
        Error::Store(_) | Error::Keys(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, C::ServerError, None)
        }
        Error::AuditUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            C::TemporarilyUnavailable,
            None,
        ),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, challenge) = classify(&self.0);
        if status.is_server_error() {
            tracing::error!(error = %self.0, detail = ?self.0.log_detail(), "request failed");
        } else if let Some(detail) = self.0.log_detail() {
            tracing::info!(error = code.as_str(), %detail, "request refused");
        }
        let body = json!({
            "error": code.as_str(),
            "error_description": self.0.to_string(),
        });
        let mut response = (status, no_store(), Json(body)).into_response();
        if let Some(c) = challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if let Error::UseDpopNonce { nonce } = &self.0 {
            if let Ok(v) = HeaderValue::from_str(nonce) {
                response.headers_mut().insert("dpop-nonce", v);
            }
        }
        response.extensions_mut().insert(code);
        response
    }
}

/// How a failed upstream sign-in (`[[login.oidc]]`) is shown: status, title
/// and message of the error page. The page says little (never the
/// provider's words or a token); the cause is logged here and audited by
/// the core. No catch-all arm, like [`classify`].
pub fn upstream_login_page(
    provider: &str,
    e: &UpstreamLoginError,
) -> (StatusCode, &'static str, &'static str) {
    use UpstreamLoginError as E;
    const FAILED: &str = "Sign-in failed";
    const AGAIN: &str = "start again from the application that sent you here";
    let shown = match e {
        E::UnknownProvider => (
            StatusCode::NOT_FOUND,
            "Not found",
            "no such sign-in provider",
        ),
        E::UnknownState | E::StateMismatch | E::PendingGone => {
            (StatusCode::BAD_REQUEST, "This page has expired", AGAIN)
        }
        E::ProviderRefused(_) => (
            StatusCode::FORBIDDEN,
            FAILED,
            "the sign-in provider did not sign you in",
        ),
        E::MissingCode | E::IdToken(_) => (
            StatusCode::BAD_REQUEST,
            FAILED,
            "the sign-in provider's answer could not be accepted",
        ),
        E::UserDisabled => (StatusCode::FORBIDDEN, FAILED, "this account is disabled"),
        E::Metadata(_) | E::TokenEndpoint(_) | E::Keys(_) => (
            StatusCode::BAD_GATEWAY,
            FAILED,
            "the sign-in provider could not be reached; try again later",
        ),
        E::NoUsername | E::Internal(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again later",
            "the server could not complete this step",
        ),
    };
    if shown.0.is_server_error() {
        tracing::error!(provider, error = %e, "upstream sign-in failed");
    } else {
        tracing::info!(provider, error = %e, "upstream sign-in refused");
    }
    shown
}

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1).
pub fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// An `invalid_request` for malformed HTTP (wrong content type, bad body).
pub fn bad_request(description: &'static str) -> ApiError {
    ApiError(Error::InvalidRequest(description.into()))
}
