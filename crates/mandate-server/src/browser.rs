//! The browser side of the authorization code flow: `/authorize`, the sign-in
//! and consent forms, the connected agents page. Pages come from [`pages`];
//! every rule from `mandate_core::authorize`.
//!
//! Cookies: `mandate_binding` ties a pending request to the browser that
//! started it (so a sign-in form cannot be replayed from another browser),
//! `mandate_session` is the signed-in session. Both are HttpOnly,
//! SameSite=Lax (the flow arrives by a top-level cross-site navigation) and
//! Secure when the issuer is https. Every form carries a CSRF token checked
//! in constant time.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use mandate_core::authorize::{AfterLogin, AuthorizeError, Next, PendingLogin, Session};
use mandate_core::model::Client;
use mandate_core::users::LoginFailure;
use mandate_core::FormParams;
use mandate_types::{random_token, ScopeSet};

use crate::extract::OAuthForm;
use crate::pages;
use crate::state::AppState;

const BINDING: &str = "mandate_binding";
const SESSION: &str = "mandate_session";

/// The browser routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/authorize", get(authorize))
        .route("/login", post(login))
        .route(
            "/login/oidc/{id}",
            get(oidc_begin_get).post(oidc_begin_post),
        )
        .route("/login/oidc/{id}/callback", get(oidc_callback))
        .route("/consent", post(consent))
        .route("/grants", get(grants))
        .route("/grants/{id}/revoke", post(revoke_grant))
        .route("/logout", post(logout))
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn set_cookie(
    s: &AppState,
    name: &str,
    value: &str,
    max_age: i64,
) -> (header::HeaderName, HeaderValue) {
    let secure = if s.authority.settings().issuer.starts_with("https:") {
        "; Secure"
    } else {
        ""
    };
    let v = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
    (
        header::SET_COOKIE,
        HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("")),
    )
}

/// An HTML page with the headers every page gets.
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

fn error(status: StatusCode, title: &str, message: &str) -> Response {
    html(status, pages::error_page(title, message))
}

fn redirect(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(v) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, v),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => error(
            StatusCode::BAD_REQUEST,
            "Bad redirect",
            "the redirect URI cannot be used",
        ),
    }
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again later",
        "the server could not complete this step",
    )
}

/// The host a user should recognise: the client id's (an https URL client
/// id) or else the first redirect URI's.
fn client_host(client: &Client) -> String {
    let from = |s: &str| {
        url::Url::parse(s)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
    };
    from(client.client_id.as_str())
        .filter(|_| client.client_id.as_str().starts_with("https://"))
        .or_else(|| client.redirect_uris.first().and_then(|r| from(r)))
        .unwrap_or_default()
}

async fn session(s: &AppState, headers: &HeaderMap) -> Option<(String, Session)> {
    let token = cookie(headers, SESSION)?;
    let session = s.authority.session(token).await.ok()??;
    Some((token.to_owned(), session))
}

async fn login_page_for(
    s: &AppState,
    id: &str,
    pending: &PendingLogin,
    username: &str,
    failed: Option<&str>,
) -> Response {
    let client = match &pending.then {
        AfterLogin::Authorize(r) => s.authority.client(&r.client_id).await.ok().flatten(),
        AfterLogin::Grants => None,
    };
    let (name, host) = match &client {
        Some(c) => (c.name.clone(), client_host(c)),
        None => ("your connected agents".to_owned(), String::new()),
    };
    let providers: Vec<pages::ProviderButton<'_>> = s
        .upstream
        .providers()
        .iter()
        .map(|p| pages::ProviderButton {
            id: &p.id,
            name: &p.name,
        })
        .collect();
    let page = pages::login_page(&pages::LoginPage {
        csrf: &pending.csrf,
        request: id,
        client_name: &name,
        client_host: &host,
        username,
        error: failed,
        providers: &providers,
    });
    html(
        if failed.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        page,
    )
}

fn consent_page(
    next_pending: &str,
    csrf: &str,
    user: &str,
    request: &mandate_core::authorize::AuthorizationRequest,
    client: &Client,
    resource: &mandate_core::model::Resource,
) -> Response {
    let scopes: Vec<pages::ScopeChoice<'_>> = request
        .scope
        .iter()
        .map(|s| pages::ScopeChoice {
            name: s.as_str(),
            description: resource.scopes.get(s).map_or_else(
                || {
                    if s.as_str() == mandate_core::authorize::OFFLINE_ACCESS {
                        mandate_core::authorize::OFFLINE_ACCESS_DESCRIPTION
                    } else {
                        ""
                    }
                },
                String::as_str,
            ),
        })
        .collect();
    let host = client_host(client);
    html(
        StatusCode::OK,
        pages::consent_page(&pages::ConsentPage {
            csrf,
            request: next_pending,
            user,
            client_name: &client.name,
            client_host: &host,
            resource_name: &resource.name,
            resource: resource.id.as_str(),
            scopes: &scopes,
        }),
    )
}

/// Where a signed-in user goes next in an authorization.
async fn continue_with(
    s: &AppState,
    id: &str,
    pending: &PendingLogin,
    session: &Session,
) -> Response {
    let AfterLogin::Authorize(request) = &pending.then else {
        return redirect("/grants");
    };
    let user = s
        .authority
        .store()
        .get_user(&session.user_id)
        .await
        .ok()
        .flatten();
    let username = user.map(|u| u.username).unwrap_or_default();
    match s
        .authority
        .continue_authorization(id, request.clone(), &session.user_id)
        .await
    {
        Ok(Next::Redirect(url)) => redirect(&url),
        Ok(Next::Consent {
            pending: p,
            request,
            client,
            resource,
        }) => consent_page(&p, &pending.csrf, &username, &request, &client, &resource),
        Err(_) => unavailable(),
    }
}

async fn authorize(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(params) = FormParams::parse(query.unwrap_or_default().as_bytes()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "This request cannot be processed",
            "the query string is malformed",
        );
    };
    let (binding, fresh) = match cookie(&headers, BINDING) {
        Some(b) => (b.to_owned(), false),
        None => (random_token(24), true),
    };
    let mut response = match s.authority.begin_authorization(&params, &binding).await {
        Err(AuthorizeError::Page { title, message }) => {
            error(StatusCode::BAD_REQUEST, title, &message)
        }
        Err(AuthorizeError::Redirect { url, .. }) => redirect(&url),
        Ok((id, pending)) => match session(&s, &headers).await {
            Some((_, session)) => continue_with(&s, &id, &pending, &session).await,
            None => login_page_for(&s, &id, &pending, "", None).await,
        },
    };
    if fresh {
        let (k, v) = set_cookie(&s, BINDING, &binding, mandate_core::authorize::PENDING_TTL);
        response.headers_mut().append(k, v);
    }
    response
}

/// The pending sign-in a form refers to, checked against the browser and the CSRF token.
async fn pending_of(
    s: &AppState,
    headers: &HeaderMap,
    form: &FormParams,
) -> Result<(String, PendingLogin), Response> {
    let expired = || {
        error(
            StatusCode::BAD_REQUEST,
            "This page has expired",
            "start again from the application that sent you here",
        )
    };
    let (Ok(Some(id)), Ok(Some(csrf))) = (form.single("request"), form.single("csrf")) else {
        return Err(expired());
    };
    let binding = cookie(headers, BINDING).ok_or_else(expired)?;
    match s.authority.pending(id, binding, Some(csrf)).await {
        Ok(Some(p)) => Ok((id.to_owned(), p)),
        Ok(None) => Err(expired()),
        Err(_) => Err(unavailable()),
    }
}

async fn login(
    State(s): State<AppState>,
    headers: HeaderMap,
    OAuthForm(form): OAuthForm,
) -> Response {
    let (id, pending) = match pending_of(&s, &headers, &form).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let username = form.single("username").ok().flatten().unwrap_or("");
    let password = form.single("password").ok().flatten().unwrap_or("");
    let user = match s.authority.login(username, password).await {
        Ok(Ok(u)) => u,
        Ok(Err(LoginFailure::BadCredentials | LoginFailure::Locked | LoginFailure::Disabled)) => {
            // One message for every failure: no hint which usernames exist.
            return login_page_for(
                &s,
                &id,
                &pending,
                username,
                Some("The username or password is wrong, or the account is locked."),
            )
            .await;
        }
        Err(_) => return unavailable(),
    };
    let Ok((token, session)) = s.authority.start_session(&user.id).await else {
        return unavailable();
    };
    let mut response = continue_with(&s, &id, &pending, &session).await;
    let (k, v) = set_cookie(&s, SESSION, &token, mandate_core::authorize::SESSION_TTL);
    response.headers_mut().append(k, v);
    response
}

/// The sign-in page's "Sign in with <provider>" form (or the same as a
/// query): checked like the password form, then off to the provider.
async fn oidc_begin_post(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    OAuthForm(form): OAuthForm,
) -> Response {
    oidc_begin(&s, &headers, &id, &form).await
}

async fn oidc_begin_get(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let form = FormParams::parse(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    oidc_begin(&s, &headers, &id, &form).await
}

async fn oidc_begin(s: &AppState, headers: &HeaderMap, id: &str, form: &FormParams) -> Response {
    let (pending_id, _) = match pending_of(s, headers, form).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let binding = cookie(headers, BINDING).unwrap_or_default();
    match s
        .upstream
        .begin(&s.authority, id, &pending_id, binding)
        .await
    {
        Ok(url) => redirect(&url),
        Err(e) => upstream_error(id, &e),
    }
}

/// The provider sends the browser back here; on success this continues
/// exactly like a password sign-in.
async fn oidc_callback(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = FormParams::parse(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    let binding = cookie(&headers, BINDING);
    let done = match s.upstream.finish(&s.authority, &id, &params, binding).await {
        Ok(done) => done,
        Err(e) => return upstream_error(&id, &e),
    };
    let Ok((token, session)) = s.authority.start_session(&done.user.id).await else {
        return unavailable();
    };
    let mut response = continue_with(&s, &done.pending_id, &done.pending, &session).await;
    let (k, v) = set_cookie(&s, SESSION, &token, mandate_core::authorize::SESSION_TTL);
    response.headers_mut().append(k, v);
    response
}

fn upstream_error(id: &str, e: &mandate_core::upstream_login::UpstreamLoginError) -> Response {
    let (status, title, message) = crate::errors::upstream_login_page(id, e);
    error(status, title, message)
}

async fn consent(
    State(s): State<AppState>,
    headers: HeaderMap,
    OAuthForm(form): OAuthForm,
) -> Response {
    let Some((_, session)) = session(&s, &headers).await else {
        return error(
            StatusCode::UNAUTHORIZED,
            "Please sign in again",
            "your session has ended; start again from the application",
        );
    };
    let (id, pending) = match pending_of(&s, &headers, &form).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let AfterLogin::Authorize(request) = pending.then else {
        return redirect("/grants");
    };
    let approve = form.single("decision").ok().flatten() == Some("approve");
    let chosen =
        ScopeSet::parse(&form.all("scope").collect::<Vec<_>>().join(" ")).unwrap_or_default();
    match s
        .authority
        .decide_consent(&id, request, &session.user_id, approve, chosen)
        .await
    {
        Ok(url) => redirect(&url),
        Err(_) => unavailable(),
    }
}

async fn grants(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some((_, session)) = session(&s, &headers).await else {
        let binding = cookie(&headers, BINDING).map_or_else(|| random_token(24), str::to_owned);
        let Ok((id, pending)) = s
            .authority
            .store_pending(AfterLogin::Grants, &binding)
            .await
        else {
            return unavailable();
        };
        let mut r = login_page_for(&s, &id, &pending, "", None).await;
        let (k, v) = set_cookie(&s, BINDING, &binding, mandate_core::authorize::PENDING_TTL);
        r.headers_mut().append(k, v);
        return r;
    };
    let Ok(list) = s.authority.grants_of(&session.user_id).await else {
        return unavailable();
    };
    let user = s
        .authority
        .store()
        .get_user(&session.user_id)
        .await
        .ok()
        .flatten()
        .map(|u| u.username)
        .unwrap_or_default();
    let rows: Vec<(String, String, String, String, String, String)> = list
        .iter()
        .map(|(g, c)| {
            (
                g.id.clone(),
                c.as_ref()
                    .map_or_else(|| g.client_id.to_string(), |c| c.name.clone()),
                c.as_ref().map(client_host).unwrap_or_default(),
                g.resource.to_string(),
                g.scopes.to_string(),
                utc_date(g.created_at),
            )
        })
        .collect();
    let views: Vec<pages::GrantView<'_>> = rows
        .iter()
        .map(|(id, name, host, resource, scopes, at)| pages::GrantView {
            id,
            client_name: name,
            client_host: host,
            resource,
            scopes,
            granted_at: at,
        })
        .collect();
    let notice = query
        .filter(|q| q.contains("revoked=1"))
        .map(|_| "Access revoked.");
    html(
        StatusCode::OK,
        pages::grants_page(&pages::GrantsPage {
            csrf: &session.csrf,
            user: &user,
            grants: &views,
            notice,
        }),
    )
}

/// The session of a signed-in form post whose CSRF token matches, or the
/// page to answer with (`signed_out` when there is no session).
async fn signed_in_form(
    s: &AppState,
    headers: &HeaderMap,
    form: &FormParams,
    signed_out: fn() -> Response,
) -> Result<(String, Session), Response> {
    let (token, session) = session(s, headers).await.ok_or_else(signed_out)?;
    let csrf_ok = form.single("csrf").ok().flatten().is_some_and(|c| {
        subtle::ConstantTimeEq::ct_eq(c.as_bytes(), session.csrf.as_bytes()).into()
    });
    if !csrf_ok {
        return Err(error(
            StatusCode::FORBIDDEN,
            "Request refused",
            "the form was not sent from this site",
        ));
    }
    Ok((token, session))
}

async fn revoke_grant(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    OAuthForm(form): OAuthForm,
) -> Response {
    let signed_out = || {
        error(
            StatusCode::UNAUTHORIZED,
            "Please sign in again",
            "your session has ended",
        )
    };
    let (_, session) = match signed_in_form(&s, &headers, &form, signed_out).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    match s.authority.revoke_grant(&session.user_id, &id).await {
        Ok(()) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, "/grants?revoked=1")],
        )
            .into_response(),
        Err(mandate_core::Error::NotFound(_)) => error(
            StatusCode::NOT_FOUND,
            "Not found",
            "no such connected agent",
        ),
        Err(_) => unavailable(),
    }
}

async fn logout(
    State(s): State<AppState>,
    headers: HeaderMap,
    OAuthForm(form): OAuthForm,
) -> Response {
    let (token, _) = match signed_in_form(&s, &headers, &form, || redirect("/grants")).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    if s.authority.end_session(&token).await.is_err() {
        return unavailable();
    }
    let mut r = error(StatusCode::OK, "Signed out", "you are signed out");
    let (k, v) = set_cookie(&s, SESSION, "", 0);
    r.headers_mut().append(k, v);
    r
}

/// `YYYY-MM-DD HH:MM UTC` for a Unix time (civil-from-days, H. Hinnant).
fn utc_date(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(super::utc_date(1_795_467_595), "2026-11-23 20:59 UTC");
    }
}
