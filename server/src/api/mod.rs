//! HTTP API (`/api/v1`, health, metrics, OpenAPI, Swagger UI). Handlers parse, authorise, call
//! the storage and engine layers, and map errors in one place (`error.rs`). Knows no SQL.
//!
//! Every route is registered through utoipa-axum's `routes!`, so the router and the OpenAPI
//! document come from the same registrations and cannot drift.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::{Extension, Router};
use tower_http::limit::RequestBodyLimitLayer;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use self::auth::{Auth, READ};
use self::error::{ApiError, PROBLEM_MEDIA_TYPE, Problem};
use crate::app::AppState;

pub mod accounts;
pub mod agents;
pub mod audit;
pub mod auth;
pub mod certificates;
mod convert;
pub mod domains;
pub mod error;
pub mod extract;
pub mod imports;
mod lookup;
pub mod moves;
pub mod notifications;
pub mod targets;
pub mod tokens;
pub mod validate;

#[cfg(test)]
mod tests;

/// Prefix of every resource route.
pub const API_PREFIX: &str = "/api/v1";

/// The OpenAPI document's fixed parts.
#[derive(OpenApi)]
#[openapi(
    info(title = "certkeep", description = "Central ACME certificate server with EAB, durable orders and agent delivery.\n\nAuthenticate with `Authorization: Bearer <token>`. Each operation names the token scopes it accepts. Errors are RFC 9457 problem documents (`application/problem+json`).\n\n## Scopes\n\nA token holds one or more scopes.\n\n| scope | may |\n|---|---|\n| `admin` | everything below except key downloads; ACME accounts, tokens, the audit log |\n| `operator` | read everything; order, renew, revoke and retire certificates; unassign certificates from agents, revoke agents, change an agent's PFX encryption |\n| `issuer` | order, renew and read certificates within its domain patterns |\n| `reader` | read accounts, certificates, agents and metrics |\n| `export` | added to another scope: private keys may leave |\n\nA private key leaves only on purpose. Downloading `pem-key` or `pfx` needs `export`. Every act that lets an agent receive private keys — creating an agent, issuing a join token, assigning a certificate to an agent, setting an agent's CCS password — needs `admin`, or `operator` with `export`. Every key release and every refusal is audited."),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "acme-accounts", description = "Accounts at ACME CAs, with external account binding"),
        (name = "certificates", description = "Certificates: ordering, renewal, revocation, downloads"),
        (name = "agents", description = "Hosts that pull certificates over mTLS"),
        (name = "tokens", description = "API tokens and their scopes"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "notifications", description = "Mail and webhook channels, subscriptions, mutes and deliveries"),
        (name = "domains", description = "When each account's validation of a name lapses"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer-token security scheme.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route, with the OpenAPI document they generate (error responses added).
fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let resources = OpenApiRouter::new()
        .merge(accounts::routes())
        .merge(certificates::routes())
        .merge(agents::routes())
        .merge(targets::routes())
        .merge(tokens::routes())
        .merge(audit::routes())
        .merge(notifications::routes())
        .merge(domains::routes())
        .merge(imports::routes())
        .merge(moves::routes());
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .nest(API_PREFIX, resources)
        .split_for_parts();
    document_errors(&mut api);
    (router, api)
}

/// Adds the problem responses every authenticated operation can give, so each documents its
/// errors: 401/403/429/500 always, 404 with path parameters, 400/413/415/422 with a body or query.
fn document_errors(api: &mut utoipa::openapi::OpenApi) {
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_MEDIA_TYPE,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    for item in api.paths.paths.values_mut() {
        let operations: [&mut Option<Operation>; 5] = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            if op
                .security
                .as_ref()
                .is_some_and(|s| s.iter().all(|r| *r == Default::default()))
            {
                continue;
            }
            let params = op.parameters.as_deref().unwrap_or_default();
            let in_path = |p: &utoipa::openapi::RefOr<utoipa::openapi::path::Parameter>| matches!(p, utoipa::openapi::RefOr::T(p) if p.parameter_in == utoipa::openapi::path::ParameterIn::Path);
            let has_path = params.iter().any(in_path);
            let has_query = params.iter().any(|p| !in_path(p));
            let has_body = op.request_body.is_some();
            let mut add = |code: &str, description: &str| {
                op.responses
                    .responses
                    .entry(code.to_owned())
                    .or_insert_with(|| problem(description).into());
            };
            add("401", "Missing, unknown, revoked or expired token");
            add("403", "The token's scopes do not allow this");
            add("429", "Too many failed authentications from this address");
            add("500", "Internal error (details are logged, never returned)");
            if has_path {
                add("400", "Malformed path parameter");
                add("404", "No such resource, or not visible to this token");
            }
            if has_query || has_body {
                add("400", "Malformed JSON or query string");
                add("422", "A field is invalid; `field` names it");
            }
            if has_body {
                add("413", "The body exceeds `max_body_bytes`");
                add("415", "The body is not JSON");
            }
        }
    }
}

/// The API router (with Swagger UI at `/docs`, the document at `/openapi.json`, the body limit
/// and the failed-authentication limiter) and the OpenAPI document.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    // Install the recorder before the engine records anything, not at the first scrape.
    crate::metrics::install();
    let (router, api) = routes();
    let max_body = state.config.max_body_bytes;
    let limiter = state.auth_limiter.clone();
    let mut router = router.merge(SwaggerUi::new("/docs").url("/openapi.json", api.clone()));
    if state.config.ui.enabled {
        router = router.merge(crate::ui::routes());
    }
    let router = router
        .fallback(|| async { ApiError::NotFound })
        .layer(Extension(limiter))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(axum::middleware::map_response(
            error::problem_for_bare_errors,
        ))
        .with_state(state);
    (router, api)
}

/// The OpenAPI document alone (for `certkeep openapi` and the drift test).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

/// The OpenAPI document as pretty JSON, exactly as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
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

/// Prometheus metrics: certificate expiry and renewal-due times, renewal failures, order
/// durations, ACME requests, jobs waiting, agents' last reports and stale deployments.
///
/// Scope: `admin`, `operator` or `reader` (names of certificates and hosts are not public).
#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain; version=0.0.4", body = String),
))]
async fn metrics(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<([(header::HeaderName, &'static str); 1], String), ApiError> {
    auth.require(READ)?;
    let text = crate::metrics::render(&state, crate::now()).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
