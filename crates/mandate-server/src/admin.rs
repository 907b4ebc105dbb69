//! The admin API, on its own listener (default 127.0.0.1:8081), behind a bearer
//! token compared in constant time. The CLI is its main client.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mandate_core::admin::{NewClient, NewResource};
use mandate_core::model::{Client, ClientKeys, ClientOrigin, GrantType, KeyPurpose};
use mandate_core::registration::bearer;
use mandate_core::Error;
use mandate_types::{ClientId, ClientSecret, ResourceUri};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::errors::{no_store, ApiError};
use crate::extract::{Authorization, JsonBody};
use crate::ops;
use crate::state::AppState;

/// Most audit events one page returns.
const MAX_AUDIT_PAGE: i64 = 10_000;

/// The admin listener's routes.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/clients", get(list_clients).post(create_client))
        .route(
            "/admin/clients/{id}",
            get(show_client).delete(delete_client),
        )
        .route("/admin/clients/{id}/rotate-secret", post(rotate_secret))
        .route(
            "/admin/resources",
            get(list_resources)
                .post(create_resource)
                .delete(delete_resource),
        )
        .route("/admin/keys", get(list_keys))
        .route("/admin/keys/rotate", post(rotate_keys))
        .route("/admin/audit", get(audit_page))
        .route("/admin/audit/anchor", get(audit_anchor))
        .route("/admin/audit/prune", post(prune_audit))
        .route("/admin/users", get(list_users).post(create_user))
        .route("/admin/users/{name}/password", post(set_password))
        .route("/admin/users/{name}/disable", post(disable_user))
        .route("/admin/users/{name}/enable", post(enable_user))
        .route_layer(axum::middleware::from_fn_with_state(state, require_admin))
        .route("/healthz", get(ops::healthz))
}

async fn require_admin(
    State(s): State<AppState>,
    Authorization(auth): Authorization,
    req: Request,
    next: Next,
) -> Response {
    let ok = bearer(auth.as_deref())
        .is_some_and(|t| s.admin_token.matches(&ClientSecret::new(t.to_owned())));
    if ok {
        next.run(req).await
    } else {
        ApiError(Error::InvalidToken("admin token required".into())).into_response()
    }
}

/// A client as the admin API shows it: never a secret or its hash.
#[derive(Serialize)]
struct ClientView {
    client_id: String,
    name: String,
    grant_types: BTreeSet<GrantType>,
    scopes: String,
    resources: Option<Vec<String>>,
    token_endpoint_auth_method: &'static str,
    origin: ClientOrigin,
    created_at: i64,
    secrets: Vec<SecretView>,
    jwks_uri: Option<String>,
    jwks_keys: Option<usize>,
    redirect_uris: Vec<String>,
}

#[derive(Serialize)]
struct SecretView {
    expires_at: Option<i64>,
}

impl From<&Client> for ClientView {
    fn from(c: &Client) -> Self {
        Self {
            client_id: c.client_id.to_string(),
            name: c.name.clone(),
            grant_types: c.grant_types.clone(),
            scopes: c.scopes.to_string(),
            resources: c
                .resources
                .as_ref()
                .map(|r| r.iter().map(ToString::to_string).collect()),
            token_endpoint_auth_method: c.auth_method.as_str(),
            origin: c.origin,
            created_at: c.created_at,
            secrets: c
                .secrets
                .iter()
                .map(|s| SecretView {
                    expires_at: s.expires_at,
                })
                .collect(),
            jwks_uri: match &c.keys {
                Some(ClientKeys::JwksUri(u)) => Some(u.clone()),
                _ => None,
            },
            jwks_keys: match &c.keys {
                Some(ClientKeys::Jwks(j)) => Some(j.keys.len()),
                _ => None,
            },
            redirect_uris: c.redirect_uris.clone(),
        }
    }
}

fn client_id(raw: &str) -> Result<ClientId, ApiError> {
    ClientId::parse(raw).map_err(|_| ApiError(Error::NotFound("client")))
}

async fn list_clients(State(s): State<AppState>) -> Result<Json<Vec<ClientView>>, ApiError> {
    let clients = s
        .authority
        .store()
        .list_clients()
        .await
        .map_err(Error::from)?;
    Ok(Json(clients.iter().map(ClientView::from).collect()))
}

async fn create_client(
    State(s): State<AppState>,
    JsonBody(new): JsonBody<NewClient>,
) -> Result<Response, ApiError> {
    let (client, secret) = s.authority.create_client(new, ClientOrigin::Admin).await?;
    let mut body = serde_json::to_value(ClientView::from(&client)).unwrap_or_default();
    if let (Some(secret), Some(obj)) = (secret, body.as_object_mut()) {
        obj.insert("client_secret".into(), json!(secret.expose()));
    }
    Ok((StatusCode::CREATED, no_store(), Json(body)).into_response())
}

async fn show_client(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ClientView>, ApiError> {
    let client = s
        .authority
        .store()
        .get_client(&client_id(&id)?)
        .await
        .map_err(Error::from)?
        .ok_or(ApiError(Error::NotFound("client")))?;
    Ok(Json(ClientView::from(&client)))
}

async fn delete_client(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.authority.delete_client(&client_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateSecret {
    overlap_seconds: Option<i64>,
}

async fn rotate_secret(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<RotateSecret>>,
) -> Result<Response, ApiError> {
    let overlap = body
        .and_then(|Json(b)| b.overlap_seconds)
        .unwrap_or(s.secret_rotation_overlap);
    let id = client_id(&id)?;
    let secret = s.authority.rotate_client_secret(&id, overlap).await?;
    let body = json!({
        "client_id": id.as_str(),
        "client_secret": secret.expose(),
        "previous_secrets_valid_for_seconds": overlap,
    });
    Ok((no_store(), Json(body)).into_response())
}

async fn list_resources(State(s): State<AppState>) -> Result<Response, ApiError> {
    let resources = s
        .authority
        .store()
        .list_resources()
        .await
        .map_err(Error::from)?;
    Ok(Json(resources).into_response())
}

async fn create_resource(
    State(s): State<AppState>,
    JsonBody(new): JsonBody<NewResource>,
) -> Result<Response, ApiError> {
    let resource = s.authority.put_resource(new, false).await?;
    Ok((StatusCode::CREATED, Json(resource)).into_response())
}

#[derive(Deserialize)]
struct ResourceQuery {
    id: String,
}

async fn delete_resource(
    State(s): State<AppState>,
    Query(q): Query<ResourceQuery>,
) -> Result<StatusCode, ApiError> {
    let id = ResourceUri::parse(&q.id).map_err(|_| ApiError(Error::NotFound("resource")))?;
    s.authority.delete_resource(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_keys(State(s): State<AppState>) -> Response {
    Json(s.authority.list_keys()).into_response()
}

#[derive(Deserialize)]
struct RotateQuery {
    /// `jws` (default) or `biscuit`.
    purpose: Option<KeyPurpose>,
}

async fn rotate_keys(
    State(s): State<AppState>,
    Query(q): Query<RotateQuery>,
) -> Result<Response, ApiError> {
    let info = s
        .authority
        .rotate_keys(q.purpose.unwrap_or(KeyPurpose::Jws))
        .await?;
    Ok(Json(info).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
}

async fn audit_page(
    State(s): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(1000).clamp(1, MAX_AUDIT_PAGE);
    let events = s
        .authority
        .store()
        .audit_after(q.after, limit)
        .await
        .map_err(Error::from)?;
    Ok(Json(events).into_response())
}

/// Where the stored chain starts: a verifier begins there.
async fn audit_anchor(State(s): State<AppState>) -> Result<Response, ApiError> {
    let anchor = s
        .authority
        .store()
        .audit_anchor()
        .await
        .map_err(Error::from)?;
    Ok(Json(anchor).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneRequest {
    /// Events recorded longer ago than this go (at least an hour).
    older_than_secs: i64,
}

/// Retention on demand (`audit.retention` runs it on its own).
async fn prune_audit(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<PruneRequest>,
) -> Result<Response, ApiError> {
    let (removed, anchor) = s.authority.prune_audit(req.older_than_secs).await?;
    Ok(Json(json!({ "removed": removed, "anchor": anchor })).into_response())
}

/// A user as the admin API shows it: never the password hash.
#[derive(Serialize)]
struct UserView {
    id: String,
    username: String,
    disabled: bool,
    locked_until: Option<i64>,
    created_at: i64,
    /// The upstream OpenID Provider identity, for a linked user.
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<mandate_core::model::UpstreamLink>,
}

impl From<&mandate_core::model::User> for UserView {
    fn from(u: &mandate_core::model::User) -> Self {
        Self {
            id: u.id.clone(),
            username: u.username.clone(),
            disabled: u.disabled,
            locked_until: u.locked_until,
            created_at: u.created_at,
            upstream: u.upstream.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

async fn list_users(State(s): State<AppState>) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = s
        .authority
        .store()
        .list_users()
        .await
        .map_err(Error::from)?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

async fn create_user(
    State(s): State<AppState>,
    JsonBody(new): JsonBody<NewUser>,
) -> Result<Response, ApiError> {
    let user = s.authority.create_user(&new.username, new.password).await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))).into_response())
}

async fn set_password(
    State(s): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<NewPassword>,
) -> Result<StatusCode, ApiError> {
    s.authority.set_password(&name, body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn disable_user(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.authority.set_user_disabled(&name, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn enable_user(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.authority.set_user_disabled(&name, false).await?;
    Ok(StatusCode::NO_CONTENT)
}
