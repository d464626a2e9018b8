//! The only mapping from errors to HTTP: RFC 9457 `application/problem+json` documents with
//! stable `type` URIs. Internal causes are logged once here and never returned.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Media type of every error body.
pub const PROBLEM_MEDIA_TYPE: &str = "application/problem+json";

/// Base of every problem `type` URI.
pub const PROBLEM_BASE: &str = "https://certkeep.dev/problems/";

pub use certkeep_api_types::api::Problem;

/// Every error a handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    Validation { field: String, detail: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    OutOfScope(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("too many requests")]
    TooManyRequests,
    #[error("request timed out")]
    RequestTimeout,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Upstream(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A validation error naming the field at fault.
    pub fn field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Validation {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// The HTTP status of this error (the dashboard's error pages use it too).
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Validation { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request field",
            ),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Bad request"),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication required",
            ),
            ApiError::OutOfScope(_) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Not allowed for this token",
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            ApiError::TooManyRequests => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            ApiError::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "The request took longer than the server allows",
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::Upstream(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream-ca",
                "The certificate authority refused or failed",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }
}

impl From<crate::db::Error> for ApiError {
    fn from(e: crate::db::Error) -> Self {
        match e {
            crate::db::Error::NotFound => ApiError::NotFound,
            crate::db::Error::Conflict(what) => {
                ApiError::Conflict(format!("already exists ({what})"))
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let (detail, field) = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                (None, None)
            }
            ApiError::Validation { field, detail } => (Some(detail.clone()), Some(field.clone())),
            ApiError::BadRequest(d)
            | ApiError::Conflict(d)
            | ApiError::OutOfScope(d)
            | ApiError::UnsupportedMediaType(d)
            | ApiError::Upstream(d) => (Some(d.clone()), None),
            _ => (None, None),
        };
        let body = Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            field,
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_MEDIA_TYPE),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<crate::domain::names::NameError> for ApiError {
    fn from(e: crate::domain::names::NameError) -> Self {
        ApiError::field("dns_names", e.to_string())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        ApiError::BadRequest(format!("invalid path: {}", e.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query string: {}", e.body_text()))
    }
}

/// Turns the framework's own bare error responses (unknown route, wrong method, body over the
/// size limit, request timeout) into problem documents, so every error a client sees has the same shape.
pub async fn problem_for_bare_errors(response: Response) -> Response {
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes() == PROBLEM_MEDIA_TYPE.as_bytes());
    // The dashboard's own error pages are HTML and stay so.
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"text/html"));
    if is_problem || is_page {
        return response;
    }
    match response.status() {
        StatusCode::NOT_FOUND => ApiError::NotFound.into_response(),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed.into_response(),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge.into_response(),
        StatusCode::REQUEST_TIMEOUT => ApiError::RequestTimeout.into_response(),
        _ => response,
    }
}
