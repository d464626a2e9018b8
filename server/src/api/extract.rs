//! Request extractors whose rejections are problem documents: JSON bodies (unknown fields,
//! malformed JSON and oversized bodies become 4xx naming the field), path and query parameters.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON request body. Rejections name the offending field.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be JSON (Content-Type: application/json)".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(e.body_text())
            }
        })?;
        parse_json(&bytes).map(AppJson)
    }
}

/// Deserialises `bytes`, mapping syntax errors to 400 and data errors to 422 with the field path.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if !inner.is_data() {
            return ApiError::BadRequest(format!("malformed JSON: {inner}"));
        }
        let message = inner.to_string();
        // serde names unknown and missing fields in the message, not in the path.
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|prefix| message.strip_prefix(prefix))
            .and_then(|rest| rest.split('`').next());
        // An unknown field is already the last path segment; a missing one is not.
        let field = match (path.as_str(), named) {
            (".", Some(name)) => name.to_owned(),
            (".", None) => "body".to_owned(),
            (at, Some(name)) if at == name || at.ends_with(&format!(".{name}")) => at.to_owned(),
            (parent, Some(name)) => format!("{parent}.{name}"),
            (at, None) => at.to_owned(),
        };
        ApiError::field(field, message)
    })?;
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Path parameters; a malformed one is a 400 problem.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct AppPath<T>(pub T);

/// Query parameters; unknown or malformed ones are a 400 problem.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct AppQuery<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialised")]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialised")]
    struct Inner {
        n: u8,
    }

    fn field_of(json: &str) -> (String, Option<String>) {
        match parse_json::<Body>(json.as_bytes()).unwrap_err() {
            ApiError::Validation { field, .. } => ("validation".into(), Some(field)),
            ApiError::BadRequest(_) => ("bad-request".into(), None),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejections_name_the_field() {
        assert_eq!(
            field_of(r#"{"name":"a","x":1}"#),
            ("validation".into(), Some("x".into()))
        );
        assert_eq!(
            field_of(r#"{}"#),
            ("validation".into(), Some("name".into()))
        );
        assert_eq!(
            field_of(r#"{"name":"a","inner":{}}"#),
            ("validation".into(), Some("inner.n".into()))
        );
        assert_eq!(
            field_of(r#"{"name":1}"#),
            ("validation".into(), Some("name".into()))
        );
        assert_eq!(
            field_of(r#"{"name":"a","inner":{"n":1,"y":2}}"#),
            ("validation".into(), Some("inner.y".into()))
        );
        assert_eq!(
            field_of(r#"{"name":"a","inner":{"n":300}}"#),
            ("validation".into(), Some("inner.n".into()))
        );
        assert_eq!(field_of(r#"{"name":"a""#), ("bad-request".into(), None));
        assert_eq!(
            field_of(r#"{"name":"a"} trailing"#),
            ("bad-request".into(), None)
        );
    }
}
