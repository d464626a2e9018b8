//! Classification of the CA's answers: which statuses are transient, and error responses
//! without a JSON problem body (an nginx or Apache page) turned into a synthetic problem
//! document that keeps the status, so the engine can tell a transient 502 from a refusal.

use http::{Method, StatusCode};

use crate::acme::AcmeError;

/// How a response is treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Success or redirect: passed through.
    Success,
    /// An error with a JSON problem body: passed through for instant-acme to parse.
    Problem { transient: bool },
    /// An error without a JSON body: replaced by this synthetic problem document.
    Synthetic { transient: bool, body: String },
}

/// Whether a status is worth retrying later (rate limits and server errors).
pub fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Classifies a response from its status, `Content-Type` and body.
pub fn classify(status: StatusCode, content_type: Option<&str>, body: &[u8], url: &str) -> Class {
    if status.is_success() || status.is_redirection() || status.is_informational() {
        return Class::Success;
    }
    let transient = is_transient_status(status);
    let json_type = content_type.is_some_and(|ct| ct.contains("json"));
    if json_type && serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.is_object()) {
        return Class::Problem { transient };
    }
    let kind = match status {
        StatusCode::TOO_MANY_REQUESTS => "rateLimited",
        s if s.is_server_error() => "serverInternal",
        _ => "malformed",
    };
    let what = content_type.map_or_else(
        || "no content type".to_owned(),
        |ct| ct.split(';').next().unwrap_or(ct).trim().to_owned(),
    );
    let detail = format!("HTTP {status} from {url} with a non-JSON body ({what})");
    let body = serde_json::json!({
        "type": format!("urn:ietf:params:acme:error:{kind}"),
        "detail": detail,
        "status": status.as_u16(),
    })
    .to_string();
    Class::Synthetic { transient, body }
}

/// The `type` of a JSON problem document.
pub(super) fn problem_type(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("type")?
        .as_str()
        .map(str::to_owned)
}

/// A transport failure (connect, TLS, reset, body read) as a transient error, with its causes.
pub(super) fn transport_error(method: &Method, url: &str, e: &dyn std::error::Error) -> AcmeError {
    let mut detail = format!("{method} {url} failed: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(&format!(": {s}"));
        source = s.source();
    }
    AcmeError::Transient {
        detail,
        retry_after: None,
        rate_limited: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_error_pages_become_problems_that_keep_the_status() {
        let html = b"<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>";
        let Class::Synthetic { transient, body } = classify(
            StatusCode::BAD_GATEWAY,
            Some("text/html"),
            html,
            "https://ca/acme/new-order",
        ) else {
            panic!("not synthetic");
        };
        assert!(transient);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "urn:ietf:params:acme:error:serverInternal");
        assert_eq!(v["status"], 502);
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("https://ca/acme/new-order")
        );
        assert!(v["detail"].as_str().unwrap().contains("text/html"));

        let Class::Synthetic { transient, body } =
            classify(StatusCode::TOO_MANY_REQUESTS, None, b"slow down", "u")
        else {
            panic!("not synthetic");
        };
        assert!(transient);
        assert!(body.contains("rateLimited"));

        let Class::Synthetic { transient, body } =
            classify(StatusCode::FORBIDDEN, Some("text/html"), b"<html>", "u")
        else {
            panic!("not synthetic");
        };
        assert!(
            !transient,
            "a 403 page is a configuration problem, not a transient one"
        );
        assert!(body.contains("malformed"));
    }

    #[test]
    fn json_problems_and_successes_pass_through() {
        let problem =
            br#"{"type":"urn:ietf:params:acme:error:badNonce","detail":"x","status":400}"#;
        assert_eq!(
            classify(
                StatusCode::BAD_REQUEST,
                Some("application/problem+json"),
                problem,
                "u"
            ),
            Class::Problem { transient: false }
        );
        assert_eq!(
            classify(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("application/problem+json"),
                problem,
                "u"
            ),
            Class::Problem { transient: true }
        );
        assert_eq!(
            classify(StatusCode::OK, Some("text/html"), b"<html>", "u"),
            Class::Success
        );
        assert_eq!(classify(StatusCode::FOUND, None, b"", "u"), Class::Success);
        // A JSON content type with a broken body is still synthesised.
        assert!(matches!(
            classify(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some("application/json"),
                b"{trunc",
                "u"
            ),
            Class::Synthetic {
                transient: true,
                ..
            }
        ));
    }
}
