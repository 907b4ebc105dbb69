//! The public OAuth endpoints. Each handler extracts, makes one core call, and
//! maps the result; the rules live in `mandate-core`.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mandate_core::registration::ClientMetadata;
use mandate_core::Error;

use crate::errors::{no_store, ApiError};
use crate::extract::{Authorization, Dpop, JsonBody, OAuthForm};
use crate::ops;
use crate::state::AppState;

/// The public listener's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/token", post(token))
        .route("/par", post(par))
        .route("/introspect", post(introspect))
        .route("/revoke", post(revoke))
        .route("/register", post(register))
        .route(
            "/register/{client_id}",
            get(read_registration)
                .put(update_registration)
                .delete(delete_registration),
        )
        .route("/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .merge(crate::browser::router())
        .fallback(crate::gateway::fallback)
}

async fn token(
    State(s): State<AppState>,
    Authorization(auth): Authorization,
    Dpop(dpop): Dpop,
    OAuthForm(form): OAuthForm,
) -> Result<Response, ApiError> {
    let (grant, response) = s
        .authority
        .token(auth.as_deref(), dpop.as_deref(), &form)
        .await?;
    s.metrics.token_issued(grant.as_str());
    Ok((no_store(), Json(response)).into_response())
}

/// RFC 9126 pushed authorization requests.
async fn par(
    State(s): State<AppState>,
    Authorization(auth): Authorization,
    OAuthForm(form): OAuthForm,
) -> Result<Response, ApiError> {
    let request_uri = s.authority.par(auth.as_deref(), &form).await?;
    let body = serde_json::json!({
        "request_uri": request_uri,
        "expires_in": mandate_core::authorize::PAR_TTL,
    });
    Ok((StatusCode::CREATED, no_store(), Json(body)).into_response())
}

async fn introspect(
    State(s): State<AppState>,
    Authorization(auth): Authorization,
    OAuthForm(form): OAuthForm,
) -> Result<Response, ApiError> {
    let answer = s.authority.introspect(auth.as_deref(), &form).await?;
    Ok((no_store(), Json(answer)).into_response())
}

async fn revoke(
    State(s): State<AppState>,
    Authorization(auth): Authorization,
    OAuthForm(form): OAuthForm,
) -> Result<Response, ApiError> {
    s.authority.revoke(auth.as_deref(), &form).await?;
    Ok((StatusCode::OK, no_store()).into_response())
}

/// RFC 7591 wants `invalid_client_metadata` for metadata that does not parse.
fn metadata_from(value: serde_json::Value) -> Result<ClientMetadata, ApiError> {
    serde_json::from_value(value)
        .map_err(|e| ApiError(Error::InvalidClientMetadata(e.to_string().into())))
}

async fn register(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Authorization(auth): Authorization,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    if let Err(wait) = s.registration_limiter.check(&peer.ip()) {
        let body = serde_json::json!({
            "error": "temporarily_unavailable",
            "error_description": "too many registrations from this address; try again later",
        });
        let retry =
            HeaderValue::from_str(&wait.to_string()).unwrap_or(HeaderValue::from_static("60"));
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry)],
            Json(body),
        )
            .into_response());
    }
    let registered = s
        .authority
        .register(auth.as_deref(), metadata_from(body)?)
        .await?;
    Ok((StatusCode::CREATED, no_store(), Json(registered)).into_response())
}

async fn read_registration(
    State(s): State<AppState>,
    Authorization(auth): Authorization,
    Path(client_id): Path<String>,
) -> Result<Response, ApiError> {
    let found = s
        .authority
        .read_registration(&client_id, auth.as_deref())
        .await?;
    Ok((no_store(), Json(found)).into_response())
}

async fn update_registration(
    State(s): State<AppState>,
    Authorization(auth): Authorization,
    Path(client_id): Path<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let updated = s
        .authority
        .update_registration(&client_id, auth.as_deref(), metadata_from(body)?)
        .await?;
    Ok((no_store(), Json(updated)).into_response())
}

async fn delete_registration(
    State(s): State<AppState>,
    Authorization(auth): Authorization,
    Path(client_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.authority
        .delete_registration(&client_id, auth.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn jwks(State(s): State<AppState>) -> Response {
    let keys = s.authority.keys();
    let max_age = keys.settings().jwks_max_age();
    let body = keys.snapshot().jwks_json().to_string();
    let cache = HeaderValue::from_str(&format!("public, max-age={max_age}"))
        .unwrap_or(HeaderValue::from_static("no-cache"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            ),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

async fn metadata(State(s): State<AppState>) -> Result<Response, ApiError> {
    let doc = s.authority.metadata().await?;
    Ok((
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )],
        Json(doc),
    )
        .into_response())
}
