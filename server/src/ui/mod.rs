//! The web dashboard under `/ui/` on the API listener: server-rendered HTML (maud templates,
//! checked at compile time), one embedded CSS file with a content hash, no JavaScript. Every
//! page and action calls the same service functions as the API (`api::certificates::list`,
//! `renew`, ...) with the session's [`Auth`](crate::api::auth::Auth), so scope checks and audit
//! events are the API's; the UI runs no SQL of its own and never calls the HTTP API.
//!
//! `session.rs` holds sessions, the login seam for OIDC ([`session::open`]) and the CSRF checks;
//! `pages.rs` the read-only pages, `actions.rs` the forms that change state, `view.rs` the
//! layout and formatting helpers, `timeline.rs` the overview's SVG expiry chart.

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::auth::{AuthLimiter, authenticate_token, source_addr};
use crate::api::error::ApiError;
use crate::app::AppState;

mod actions;
mod pages;
pub(crate) mod session;
mod timeline;
mod view;

/// The stylesheet, embedded.
const CSS: &str = include_str!("assets/app.css");

/// `/ui/assets/app.<first 16 hex of SHA-256>.css`: a new file name whenever the CSS changes,
/// so it can be cached forever.
static CSS_PATH: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha256::digest(CSS.as_bytes());
    format!("/ui/assets/app.{}.css", &hex::encode(digest)[..16])
});

/// The strict policy of every dashboard response: no script at all, styles only from the file.
pub(crate) const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes (merged into the API router when `[ui] enabled`).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/{file}", get(asset))
        .route(
            "/ui/certificates",
            get(pages::certificates).post(actions::create),
        )
        .route("/ui/certificates/new", get(pages::new_certificate))
        .route("/ui/certificates/{name}", get(pages::certificate))
        .route("/ui/certificates/{name}/renew", post(actions::renew))
        .route("/ui/certificates/{name}/revoke", post(actions::revoke))
        .route("/ui/certificates/{name}/retire", post(actions::retire))
        .route("/ui/certificates/{name}/assign", post(actions::assign))
        .route("/ui/certificates/{name}/unassign", post(actions::unassign))
        .route("/ui/agents", get(pages::agents))
        .route("/ui/accounts", get(pages::accounts))
        .route("/ui/tokens", get(pages::tokens))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::map_response(dashboard_headers))
}

/// Adds the security headers to every dashboard response.
async fn dashboard_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    security_headers(headers, CSP);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The headers every HTML page of the server carries (the dashboard's and the SSO login's):
/// the policy `csp`, no MIME sniffing, no Referer, and not cached unless the page says so.
pub(crate) fn security_headers(headers: &mut HeaderMap, csp: &'static str) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

/// What a dashboard request can fail with.
pub(crate) enum UiError {
    /// No live session: to the login page.
    Login,
    /// A failed CSRF or origin check (403).
    Csrf(&'static str),
    /// What the service functions refuse or fail with, shown as a page with its status.
    Api(ApiError),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError::Api(e)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            UiError::Login => return Redirect::to("/ui/login").into_response(),
            UiError::Csrf(why) => (
                StatusCode::FORBIDDEN,
                "Refused",
                format!("{why}. Reload the page and submit the form again."),
            ),
            UiError::Api(ApiError::Unauthorized) => {
                return Redirect::to("/ui/login").into_response();
            }
            UiError::Api(e) => {
                let status = e.status();
                let title = match status {
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => "Invalid input",
                    StatusCode::CONFLICT => "Not possible now",
                    StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
                    StatusCode::BAD_GATEWAY => "The certificate authority refused",
                    _ => "Error",
                };
                let message = match &e {
                    ApiError::Internal(cause) => {
                        tracing::error!(
                            error = format!("{cause:#}"),
                            "internal error in the dashboard"
                        );
                        "Internal error; the details are in the server log.".to_owned()
                    }
                    ApiError::Validation { field, detail } => format!("{field}: {detail}"),
                    ApiError::OutOfScope(why) => format!("Your login may not do this: {why}."),
                    ApiError::TooManyRequests => {
                        "Too many failed logins from your address; wait a minute.".to_owned()
                    }
                    other => other.to_string(),
                };
                (status, title, message)
            }
        };
        let body = view::bare(
            title,
            html! {
                p.error role="alert" { (message) }
                p { a href="/ui/" { "Back to the overview" } }
            },
        );
        (status, body).into_response()
    }
}

/// The embedded stylesheet under its hashed name.
async fn asset(Path(file): Path<String>) -> Response {
    if format!("/ui/assets/{file}") != *CSS_PATH {
        return not_found().await;
    }
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        CSS,
    )
        .into_response()
}

async fn not_found() -> Response {
    UiError::Api(ApiError::NotFound).into_response()
}

/// The login form, and the SSO link when `[ui.oidc]` is configured.
async fn login_page(State(state): State<AppState>) -> Response {
    let sso = state.config.ui.oidc.is_some();
    view::bare(
        "Log in",
        html! {
            form.login method="post" action="/ui/login" {
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="off" required;
                button type="submit" { "Log in" }
            }
            p.hint { "Create a token with " code { "certkeep token create" } "; the dashboard acts with its scopes." }
            @if sso {
                p { a.button href="/ui/login/oidc" { "Sign in with campus SSO" } }
            }
        },
    )
    .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Logs in with an API token: same origin only; a wrong token counts in the same limiter as
/// the API's bearer tokens.
async fn login(
    State(state): State<AppState>,
    parts: Parts,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, UiError> {
    session::check_origin(&parts)?;
    let axum::Form(form) = form.map_err(|e| {
        UiError::Api(ApiError::BadRequest(format!(
            "invalid login form: {}",
            e.body_text()
        )))
    })?;
    let source = source_addr(&parts);
    let limiter = parts.extensions.get::<Arc<AuthLimiter>>().map(Arc::as_ref);
    let token = match authenticate_token(&state, form.token.trim(), source, limiter).await {
        Ok(t) => t,
        Err(ApiError::Unauthorized) => {
            let page = view::bare(
                "Log in",
                html! {
                    p.error role="alert" { "Unknown, revoked or expired token." }
                    p { a href="/ui/login" { "Try again" } }
                },
            );
            return Ok((StatusCode::UNAUTHORIZED, page).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    let auth = crate::api::auth::Auth::for_token(&token, source);
    auth.audit_ok(&state, "ui.login", &format!("token:{}", token.id), "")
        .await?;
    Ok(session::open(&state, session::SessionOwner::Token(token.id.0)).await?)
}

/// Ends the session server-side and clears the cookie.
async fn logout(
    State(state): State<AppState>,
    form: session::CsrfForm<Empty>,
) -> Result<Response, UiError> {
    form.user.end(&state).await?;
    let mut response = Redirect::to("/ui/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::clear_cookie());
    Ok(response)
}

/// A form with no fields besides its CSRF token.
#[derive(Deserialize)]
pub(crate) struct Empty {}
