//! `/api/v1/tokens`: API tokens. The secret is shown once and stored only as a SHA-256 hash.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use certkeep_api_types::api::{CreateTokenRequest, CreatedTokenResponse, TokenResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::{ADMIN, Auth};
use super::error::ApiError;
use super::extract::{AppJson, AppPath};
use super::validate;
use crate::app::AppState;
use crate::bootstrap::{new_token_secret, token_hash};
use crate::db::tokens::NewToken;
use crate::model::{Scope, TokenId};

/// Routes of this resource.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

/// Create an API token.
///
/// Scope: `admin`. Scopes are `admin`, `operator`, `issuer` (needs `domain_patterns`), `reader`
/// and `export` (private keys). The secret is returned once.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = CreateTokenRequest, responses(
    (status = 201, description = "Created; `secret` is shown only now", body = CreatedTokenResponse),
))]
async fn create_token(
    State(state): State<AppState>,
    auth: Auth,
    AppJson(req): AppJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedTokenResponse>), ApiError> {
    auth.require(ADMIN)?;
    validate::label("name", &req.name)?;
    if req.scopes.is_empty() {
        return Err(ApiError::field("scopes", "at least one scope is required"));
    }
    let mut scopes = Vec::new();
    for scope in &req.scopes {
        if !scopes.contains(scope) {
            scopes.push(*scope);
        }
    }
    let patterns = validate::patterns("domain_patterns", &req.domain_patterns)?;
    match (scopes.contains(&Scope::Issuer), patterns.is_empty()) {
        (true, true) => {
            return Err(ApiError::field(
                "domain_patterns",
                "an issuer token needs at least one domain pattern",
            ));
        }
        (false, false) => {
            return Err(ApiError::field(
                "domain_patterns",
                "domain patterns apply only to issuer tokens",
            ));
        }
        _ => {}
    }
    let now = crate::now();
    if req.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::field("expires_at", "must be in the future"));
    }
    let secret = new_token_secret();
    let actor = auth.actor();
    let token = state
        .db
        .insert_token(
            &NewToken {
                name: &req.name,
                hash: &token_hash(&secret),
                scopes: &scopes,
                domain_patterns: &patterns,
                expires_at: req.expires_at,
                created_by: Some(&actor),
            },
            now,
        )
        .await?;
    let scope_list: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    auth.audit_ok(
        &state,
        "token.create",
        &format!("token:{}", token.id),
        &format!("scopes={}", scope_list.join(",")),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenResponse {
            token: token.into(),
            secret: secret.to_string(),
        }),
    ))
}

/// List API tokens (never their secrets).
///
/// Scope: `admin`.
#[utoipa::path(get, path = "/tokens", tag = "tokens", responses(
    (status = 200, description = "Every token, newest first", body = Vec<TokenResponse>),
))]
async fn list_tokens(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Vec<TokenResponse>>, ApiError> {
    Ok(Json(list(&state, &auth).await?))
}

/// Every token, newest first, never a secret (`GET /tokens`, and the dashboard).
pub(crate) async fn list(state: &AppState, auth: &Auth) -> Result<Vec<TokenResponse>, ApiError> {
    auth.require(ADMIN)?;
    let tokens = state.db.list_tokens().await?;
    Ok(tokens.into_iter().map(Into::into).collect())
}

/// Revoke an API token; it stops working at once. Revoking twice keeps the first time.
///
/// Scope: `admin`.
#[utoipa::path(post, path = "/tokens/{id}/revoke", tag = "tokens",
    params(("id" = Uuid, Path, description = "Token id")),
    responses((status = 200, description = "Revoked", body = TokenResponse)))]
async fn revoke_token(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<TokenResponse>, ApiError> {
    auth.require(ADMIN)?;
    let id = TokenId(id);
    state.db.revoke_token(id, crate::now()).await?;
    auth.audit_ok(&state, "token.revoke", &format!("token:{id}"), "")
        .await?;
    Ok(Json(state.db.token(id).await?.into()))
}
