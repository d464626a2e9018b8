//! HTTP API (`/api/v1`, health, metrics, OpenAPI). Handlers parse, authorise, call the storage
//! and engine layers, and map errors in one place (`error.rs`). Knows no SQL.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;

pub mod error;

/// The OpenAPI document's fixed parts.
#[derive(OpenApi)]
#[openapi(
    info(title = "certkeep", description = "Central ACME certificate server with EAB, durable orders and agent delivery."),
    tags((name = "health", description = "Liveness and readiness"))
)]
pub struct ApiDoc;

/// The API router and the OpenAPI document generated from the same registrations.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .with_state(state)
        .split_for_parts();
    (router, api)
}

/// The OpenAPI document alone (for `certkeep openapi` and the drift test).
pub fn openapi() -> utoipa::openapi::OpenApi {
    OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .split_for_parts()
        .1
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, description = "The process is up", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses(
    (status = 200, description = "Ready", body = String),
    (status = 503, description = "Database unreachable", body = String)
))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}

/// The OpenAPI document as pretty JSON, exactly as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
