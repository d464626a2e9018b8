//! The browser side of SSO login: `GET /ui/login/oidc` sends the browser to the IdP,
//! `GET /ui/oidc/callback` completes the login and hands the user to [`on_verified`].
//!
//! The state is also set in a short-lived cookie scoped to `/ui/oidc` and must come back with
//! the callback, so a callback link made by someone else (login CSRF: signing the victim in as
//! the attacker) is refused. Failures show a plain page with the reason, never a token or code.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::{OidcClient, OidcError, OidcIdentity};
use crate::app::AppState;
use crate::ui::session::SessionOwner;

/// Cookie carrying the state between the redirect and the callback.
const STATE_COOKIE: &str = "certkeep_oidc_state";

/// Path of the callback; the state cookie is scoped to its directory.
pub const CALLBACK_PATH: &str = "/ui/oidc/callback";

/// The SSO login routes, for the API listener.
pub fn router(state: AppState, client: Arc<OidcClient>) -> Router {
    Router::new()
        .route("/ui/login/oidc", get(login))
        .route(CALLBACK_PATH, get(callback))
        .with_state((state, client))
}

type RouteState = (AppState, Arc<OidcClient>);

async fn login(State((state, client)): State<RouteState>) -> Response {
    match client.begin(&state.db).await {
        Ok((url, login_state)) => {
            let cookie = format!(
                "{STATE_COOKIE}={login_state}; Path=/ui/oidc; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
                client.config().login_ttl_secs
            );
            let mut response = StatusCode::FOUND.into_response();
            let headers = response.headers_mut();
            match (HeaderValue::from_str(&url), HeaderValue::from_str(&cookie)) {
                (Ok(location), Ok(cookie)) => {
                    headers.insert(header::LOCATION, location);
                    headers.insert(header::SET_COOKIE, cookie);
                    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    response
                }
                _ => failure(&OidcError::Provider {
                    issuer: client.config().issuer.clone(),
                    reason: "its authorization URL is not a valid header".into(),
                }),
            }
        }
        Err(e) => failure(&e),
    }
}

/// The IdP's redirect back: `code` and `state`, or `error` (RFC 6749 §4.1.2.1).
#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State((state, client)): State<RouteState>,
    extensions: http::Extensions,
    headers: HeaderMap,
    Query(query): Query<Callback>,
) -> Response {
    let mut response = match verify_callback(&state, &client, &headers, query).await {
        Ok(identity) => {
            tracing::info!(oidc.subject = %identity.subject, oidc.scopes = ?identity.scopes, "SSO login");
            on_verified(&state, identity).await
        }
        Err(e) => {
            // A failed callback counts like a wrong API token, in the same limiter.
            let source = extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|axum::extract::ConnectInfo(addr)| addr.ip());
            if state.auth_limiter.record_failure(source) {
                page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed logins",
                    "<p>Too many failed logins from this address; try again in a minute.</p>",
                )
            } else {
                failure(&e)
            }
        }
    };
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "certkeep_oidc_state=; Path=/ui/oidc; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
        ),
    );
    response
}

async fn verify_callback(
    state: &AppState,
    client: &OidcClient,
    headers: &HeaderMap,
    query: Callback,
) -> Result<OidcIdentity, OidcError> {
    if let Some(error) = query.error {
        return Err(OidcError::Refused(match query.error_description {
            Some(d) => format!("{error} ({d})"),
            None => error,
        }));
    }
    let (Some(code), Some(login_state)) = (query.code, query.state) else {
        return Err(OidcError::Refused(
            "the callback carries no code and state".into(),
        ));
    };
    if state_cookie(headers).as_deref() != Some(login_state.as_str()) {
        return Err(OidcError::OtherBrowser);
    }
    client.complete(&state.db, &code, &login_state).await
}

/// The value of the state cookie, if the browser sent one.
fn state_cookie(headers: &HeaderMap) -> Option<String> {
    crate::ui::session::cookie(headers, STATE_COOKIE).map(str::to_owned)
}

/// A page with the reason a login failed.
fn failure(error: &OidcError) -> Response {
    let status = match error {
        OidcError::UnknownState | OidcError::Expired(_) | OidcError::OtherBrowser => {
            StatusCode::BAD_REQUEST
        }
        OidcError::Refused(_) | OidcError::InvalidToken(_) | OidcError::NoRole(_) => {
            StatusCode::FORBIDDEN
        }
        OidcError::Provider { .. } => StatusCode::BAD_GATEWAY,
        OidcError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        OidcError::Config(_) | OidcError::Sealed(_) | OidcError::Db(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    tracing::warn!(error = %error, "SSO login failed");
    let reason = if status == StatusCode::INTERNAL_SERVER_ERROR {
        "an internal error; the server log has the details".to_owned()
    } else {
        error.to_string()
    };
    page(
        status,
        "Sign-in failed",
        &format!(
            "<p>{}</p><p><a href=\"/ui/login/oidc\">Sign in again</a></p>",
            escape(&reason)
        ),
    )
}

/// A minimal HTML page with the dashboard's security headers.
fn page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · certkeep</title></head><body><h1>{}</h1>{body_html}</body></html>",
        escape(title),
        escape(title)
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No-referrer among them: the callback URL holds the code, never sent on as a Referer.
    crate::ui::security_headers(headers, "default-src 'none'; frame-ancestors 'none'");
    response
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Once the IdP vouched for a user with at least one scope: a dashboard session for them
/// ([`crate::ui::session::open`]). The answer is a page that moves on to `/ui/` by itself, not
/// the redirect `open` gives: the browser came here from the IdP, a cross-site navigation, and
/// would not send the `SameSite=Strict` session cookie along a redirect of it; the refresh from
/// this page is a same-site navigation.
async fn on_verified(state: &AppState, identity: OidcIdentity) -> Response {
    let scopes: Vec<&str> = identity.scopes.iter().map(|s| s.as_str()).collect();
    let body = format!(
        "<meta http-equiv=\"refresh\" content=\"0; url=/ui/\"><p>Signed in as <strong>{}</strong> with scopes <code>{}</code>.</p><p><a href=\"/ui/\">Continue to the dashboard</a></p>",
        escape(&identity.display),
        escape(&scopes.join(" "))
    );
    let auth = crate::api::auth::Auth {
        actor: format!("oidc:{}", identity.subject),
        scopes: identity.scopes.clone(),
        domain_patterns: Vec::new(),
        source: None,
    };
    let groups = identity.groups.join(" ");
    if let Err(e) = auth
        .audit_ok(state, "ui.login", &auth.actor, &format!("groups={groups}"))
        .await
    {
        return e.into_response();
    }
    let opened = crate::ui::session::open(
        state,
        SessionOwner::Oidc {
            subject: identity.subject,
            display: identity.display,
            scopes: identity.scopes,
        },
    )
    .await;
    let opened = match opened {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let mut response = page(StatusCode::OK, "Signed in", &body);
    for cookie in opened.headers().get_all(header::SET_COOKIE) {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        assert_eq!(state_cookie(&headers), None);
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("x=y;certkeep_oidc_state=abc; z=1"),
        );
        assert_eq!(state_cookie(&headers).as_deref(), Some("abc"));
    }

    #[test]
    fn failure_pages_escape_the_reason() {
        assert_eq!(
            escape("<script>\"x\" & 'y'"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;"
        );
    }
}
