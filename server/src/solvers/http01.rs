//! http-01 through the central responder: a plain-HTTP listener that serves only
//! `/.well-known/acme-challenge/<token>`, answering with the key authorization the engine
//! recorded in the database for an unfinished order (so any server process sharing the database
//! can answer), and 404 for everything else. The solver itself publishes nothing: the engine's
//! record of the response is what the responder serves.

use std::net::SocketAddr;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::acme::CaChallenge;
use crate::db::Db;
use crate::engine::challenge::{ChallengeSolver, HTTP01};

/// The http-01 solver. `addr` is this process's responder, if it runs one.
pub struct Http01Solver {
    addr: Option<SocketAddr>,
}

impl Http01Solver {
    /// A solver whose responses are served by the responder(s) reading the shared database.
    pub fn new(addr: Option<SocketAddr>) -> Self {
        Self { addr }
    }
}

#[async_trait]
impl ChallengeSolver for Http01Solver {
    fn kinds(&self) -> &[&'static str] {
        &[HTTP01]
    }

    fn describe(&self) -> String {
        match self.addr {
            Some(addr) => format!("http-01 by the central responder on {addr}"),
            None => "http-01 by the central responder of another server process".into(),
        }
    }

    async fn present(&self, name: &str, challenge: &CaChallenge) -> Result<String, String> {
        Ok(format!(
            "serving /.well-known/acme-challenge/{} for {name}",
            challenge.token
        ))
    }

    async fn cleanup(&self, name: &str, challenge: &CaChallenge) -> Result<String, String> {
        Ok(format!(
            "no longer serving token {} for {name}",
            challenge.token
        ))
    }
}

/// The responder's routes: the challenge path only; everything else is 404.
pub fn router(db: Db) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(serve_token))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(db)
}

/// Whether `token` can be an ACME token (base64url, RFC 8555 8.3); others are not looked up.
fn plausible_token(token: &str) -> bool {
    (16..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn serve_token(State(db): State<Db>, Path(token): Path<String>) -> Response {
    if !plausible_token(&token) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match db.http01_key_authorization(&token).await {
        Ok(Some(key_authorization)) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            key_authorization,
        )
            .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "http-01 responder cannot read the database");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    async fn get_status(db: &Db, path: &str) -> (StatusCode, String) {
        let response = router(db.clone())
            .oneshot(
                http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn only_known_tokens_are_served() {
        let t = crate::testkit::TestDb::sqlite().await;
        for path in [
            "/",
            "/.well-known/acme-challenge/",
            "/.well-known/acme-challenge/unknown-token-0123456789",
            "/.well-known/acme-challenge/bad%20token%20with%20spaces",
            "/api/v1/certificates",
        ] {
            assert_eq!(
                get_status(&t.db, path).await.0,
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        assert!(plausible_token(
            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
        ));
        assert!(!plausible_token("../../etc/passwd"));
    }
}
