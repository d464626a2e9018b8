//! Dashboard sessions: an opaque random id in a cookie, only its SHA-256 stored
//! (`ui_sessions`), with idle and absolute expiry and a CSRF token bound to the session. A
//! session is owned by an API token (it ends at once when the token is revoked or expires) or by
//! an OIDC identity. Both become the same [`Auth`] as a bearer token, so every scope check and
//! audit event of the API applies to the dashboard unchanged.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::UiError;
use crate::api::auth::{Auth, source_addr, token_is_live};
use crate::api::error::ApiError;
use crate::app::AppState;
use crate::bootstrap::token_hash;
use crate::db::ui_sessions::{StoredOwner, UiSession};
use crate::model::{Scope, TokenId};

/// Name of the session cookie.
pub(crate) const COOKIE: &str = "certkeep_session";
/// `last_seen_at` is written at most this often per session.
const TOUCH_EVERY: time::Duration = time::Duration::minutes(1);

/// Who a new session acts for: the token login (`ui/mod.rs`) or the SSO callback
/// (`oidc/routes.rs`).
pub(crate) enum SessionOwner {
    /// An API token (by id): the session has its scopes while it lives.
    Token(uuid::Uuid),
    /// A single-sign-on identity: `subject` is the IdP's stable id (actor `oidc:<subject>`),
    /// `display` what the dashboard shows, `scopes` what its claims mapped to.
    Oidc {
        subject: String,
        display: String,
        scopes: Vec<Scope>,
    },
}

/// 256 random bits, URL-safe base64.
fn random_id() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Opens a session for `owner` and answers 303 to `/ui/` with its cookie (`HttpOnly`,
/// `Secure`, `SameSite=Strict`, `Path=/ui`). Sessions already expired are deleted on the way.
pub(crate) async fn open(state: &AppState, owner: SessionOwner) -> Result<Response, ApiError> {
    let config = &state.config.ui;
    let now = crate::now();
    let idle = time::Duration::seconds(i64::try_from(config.session_idle_secs).unwrap_or(i64::MAX));
    let max = time::Duration::seconds(i64::try_from(config.session_max_secs).unwrap_or(i64::MAX));
    state.db.delete_expired_ui_sessions(now, now - idle).await?;
    let id = zeroize::Zeroizing::new(random_id());
    let owner = match owner {
        SessionOwner::Token(id) => StoredOwner::Token(TokenId(id)),
        SessionOwner::Oidc {
            subject,
            display,
            scopes,
        } => StoredOwner::Oidc {
            subject,
            display,
            scopes,
        },
    };
    let session = UiSession {
        owner,
        csrf_token: random_id(),
        created_at: now,
        last_seen_at: now,
        expires_at: now.saturating_add(max),
    };
    state
        .db
        .insert_ui_session(&token_hash(&id), &session)
        .await?;
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; Secure; SameSite=Strict; Path=/ui; Max-Age={}",
        id.as_str(),
        config.session_max_secs
    );
    let mut response = Redirect::to("/ui/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.into()))?,
    );
    Ok(response)
}

/// A `Set-Cookie` that removes the session cookie.
pub(super) fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "certkeep_session=; HttpOnly; Secure; SameSite=Strict; Path=/ui; Max-Age=0",
    )
}

/// The value of the cookie `name` in the request's `Cookie` headers, if the browser sent it.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// The session id in the request's cookies.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, COOKIE).filter(|v| !v.is_empty())
}

/// A logged-in dashboard user: the caller (for scope checks and audit), the name shown, and
/// the session's CSRF token for the forms of the page.
pub(crate) struct UiUser {
    pub(crate) auth: Auth,
    pub(crate) name: String,
    pub(crate) csrf: String,
    id_hash: Vec<u8>,
}

impl UiUser {
    /// Ends this session server-side.
    pub(super) async fn end(&self, state: &AppState) -> Result<(), ApiError> {
        state.db.delete_ui_session(&self.id_hash).await?;
        Ok(())
    }
}

impl FromRequestParts<AppState> for UiUser {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, UiError> {
        let id = session_cookie(&parts.headers).ok_or(UiError::Login)?;
        let id_hash = token_hash(id);
        let session = match state.db.ui_session(&id_hash).await {
            Ok(s) => s,
            Err(crate::db::Error::NotFound) => return Err(UiError::Login),
            Err(e) => return Err(ApiError::from(e).into()),
        };
        let now = crate::now();
        let idle = time::Duration::seconds(
            i64::try_from(state.config.ui.session_idle_secs).unwrap_or(i64::MAX),
        );
        let source = source_addr(parts);
        let live = now < session.expires_at && now - session.last_seen_at < idle;
        let caller = match (&session.owner, live) {
            (_, false) => None,
            (StoredOwner::Token(token), true) => match state.db.token(*token).await {
                Ok(t) if token_is_live(&t, now) => {
                    Some((Auth::for_token(&t, source), format!("token {}", t.name)))
                }
                Ok(_) | Err(crate::db::Error::NotFound) => None,
                Err(e) => return Err(ApiError::from(e).into()),
            },
            (
                StoredOwner::Oidc {
                    subject,
                    display,
                    scopes,
                },
                true,
            ) => Some((
                Auth {
                    actor: format!("oidc:{subject}"),
                    scopes: scopes.clone(),
                    domain_patterns: Vec::new(),
                    source,
                },
                display.clone(),
            )),
        };
        let Some((auth, name)) = caller else {
            // Expired, or its token was revoked or has expired: it ends now.
            state
                .db
                .delete_ui_session(&id_hash)
                .await
                .map_err(ApiError::from)?;
            return Err(UiError::Login);
        };
        if now - session.last_seen_at >= TOUCH_EVERY {
            state
                .db
                .touch_ui_session(&id_hash, now)
                .await
                .map_err(ApiError::from)?;
        }
        Ok(UiUser {
            auth,
            name,
            csrf: session.csrf_token,
            id_hash,
        })
    }
}

/// Refuses a state-changing request that does not come from this server's own pages: its
/// `Origin` must be `https://` and the request's host (`Host`, or the HTTP/2 authority). A
/// browser sends `Origin: null` for a form posted from a page with `Referrer-Policy:
/// no-referrer` (ours), so then the browser's `Sec-Fetch-Site: same-origin` must say so; without
/// `Origin`, `Sec-Fetch-Site` or a same-site `Referer` decides. Nothing of these → refused.
pub(super) fn check_origin(parts: &Parts) -> Result<(), UiError> {
    let headers = &parts.headers;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .ok_or(UiError::Csrf("the request names no host"))?;
    let own = format!("https://{host}");
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let fetch_site = text("sec-fetch-site");
    let same = match (text("origin"), fetch_site, text("referer")) {
        (Some(origin), _, _) if origin != "null" => origin == own,
        (_, Some(site), _) => site == "same-origin",
        (None, None, Some(referer)) => referer
            .strip_prefix(own.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        _ => {
            return Err(UiError::Csrf(
                "the request does not show where it comes from",
            ));
        }
    };
    if same {
        Ok(())
    } else {
        Err(UiError::Csrf("the request comes from another site"))
    }
}

/// The fields of a posted form with its CSRF token.
#[derive(Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    fields: T,
}

/// A state-changing form from a logged-in user: same origin, and carrying the session's CSRF
/// token. Every dashboard POST except the login takes its fields through this extractor.
pub(crate) struct CsrfForm<T> {
    pub(crate) user: UiUser,
    pub(crate) fields: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = UiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, UiError> {
        let (mut parts, body) = req.into_parts();
        check_origin(&parts)?;
        let user = UiUser::from_request_parts(&mut parts, state).await?;
        let req = Request::from_parts(parts, body);
        let axum::Form(form) = axum::Form::<WithCsrf<T>>::from_request(req, state)
            .await
            .map_err(|e| {
                UiError::Api(ApiError::BadRequest(format!(
                    "invalid form: {}",
                    e.body_text()
                )))
            })?;
        // Compared as digests, so the comparison's time says nothing about the token.
        if form.csrf.is_empty() || token_hash(&form.csrf) != token_hash(&user.csrf) {
            return Err(UiError::Csrf("the form's CSRF token is missing or wrong"));
        }
        Ok(CsrfForm {
            user,
            fields: form.fields,
        })
    }
}
