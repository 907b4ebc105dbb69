//! Extractors that turn raw HTTP into what the core takes. Rejections are
//! OAuth errors, never axum's plain-text defaults.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mandate_core::FormParams;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::errors::{bad_request, no_store, ApiError};

/// Longest `Authorization` header we read.
const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;

/// The raw `Authorization` header, if present and sane.
pub struct Authorization(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Authorization {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(bad_request("more than one Authorization header"));
        }
        match first {
            None => Ok(Self(None)),
            Some(v) if v.len() > MAX_AUTHORIZATION_LEN => {
                Err(bad_request("Authorization header too long"))
            }
            Some(v) => v
                .to_str()
                .map(|s| Self(Some(s.to_owned())))
                .map_err(|_| bad_request("Authorization header is not ASCII")),
        }
    }
}

/// Rejection for bodies over the configured limit: 413 with an OAuth error.
pub struct TooLarge;

impl IntoResponse for TooLarge {
    fn into_response(self) -> Response {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            no_store(),
            Json(
                json!({"error": "invalid_request", "error_description": "request body too large"}),
            ),
        )
            .into_response()
    }
}

/// Body bytes, with the size limit applied (a `DefaultBodyLimit` layer sets it).
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Response> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            TooLarge.into_response()
        } else {
            bad_request("could not read the request body").into_response()
        }
    })
}

fn content_type_is(req: &Request, want: &str) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// An `application/x-www-form-urlencoded` body, parsed the OAuth way.
pub struct OAuthForm(pub FormParams);

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        if !content_type_is(&req, "application/x-www-form-urlencoded") {
            return Err(
                bad_request("Content-Type must be application/x-www-form-urlencoded")
                    .into_response(),
            );
        }
        let bytes = body_bytes(req, state).await?;
        FormParams::parse(&bytes)
            .map(Self)
            .map_err(|e| ApiError(e).into_response())
    }
}

/// A JSON body; malformed JSON becomes `error` (the code the endpoint wants).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        if !content_type_is(&req, "application/json") {
            return Err(bad_request("Content-Type must be application/json").into_response());
        }
        let bytes = body_bytes(req, state).await?;
        serde_json::from_slice(&bytes).map(Self).map_err(|e| {
            let description = format!("body is not the expected JSON: {e}");
            (
                StatusCode::BAD_REQUEST,
                no_store(),
                Json(json!({"error": "invalid_request", "error_description": description})),
            )
                .into_response()
        })
    }
}

/// The `DPoP` header (RFC 9449 §4.1): at most one, bounded, ASCII.
pub struct Dpop(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Dpop {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let bad = |why: &'static str| ApiError(mandate_core::Error::InvalidDpopProof(why.into()));
        let mut values = parts.headers.get_all("dpop").iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(bad("more than one DPoP header"));
        }
        match first {
            None => Ok(Self(None)),
            Some(v) if v.len() > mandate_jose::dpop::MAX_PROOF_LEN => {
                Err(bad("DPoP header too long"))
            }
            Some(v) => v
                .to_str()
                .map(|s| Self(Some(s.to_owned())))
                .map_err(|_| bad("DPoP header is not ASCII")),
        }
    }
}
