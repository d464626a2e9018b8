//! `/api/v1/agents/{agent}/targets`: where an agent installs certificates (CCS folder, PEM
//! directory, Windows store). The agent receives them in its manifest; the assignments of the
//! agents resource name them.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use certkeep_api_types::target::{
    CreateTargetRequest, MAX_TARGETS, RolloutSettings, TargetResponse,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Auth, OPERATE, READ};
use super::convert::target_response;
use super::error::{ApiError, Problem};
use super::extract::{AppJson, AppPath};
use super::lookup::find_agent;
use super::validate;
use crate::app::AppState;
use crate::db::rollout::AgentRollout;
use crate::db::targets::NewTarget;
use crate::domain::rollout::ChangeWindow;
use crate::domain::targets::{Invalid, check_settings, probe_addresses};
use crate::model::AgentState;

/// Routes of this resource.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_targets, create_target))
        .routes(routes!(remove_target))
        .routes(routes!(show_rollout, set_rollout))
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::field(e.field, e.detail)
    }
}

/// List an agent's targets.
///
/// Scope: `admin`, `operator` or `reader`.
#[utoipa::path(get, path = "/agents/{agent}/targets", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    responses((status = 200, description = "The agent's targets, by name", body = Vec<TargetResponse>)))]
async fn list_targets(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
) -> Result<Json<Vec<TargetResponse>>, ApiError> {
    auth.require(READ)?;
    let agent = find_agent(&state, &key).await?;
    let targets = state.db.targets(agent.id).await?;
    Ok(Json(targets.into_iter().map(target_response).collect()))
}

/// Add a target to an agent; its next manifest carries it.
///
/// Scope: `admin`, or `operator` with `export`: a target receives private keys, and a
/// `reload_command` runs on the host. `probe` defaults to `["127.0.0.1:443"]`.
#[utoipa::path(post, path = "/agents/{agent}/targets", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    request_body = CreateTargetRequest,
    responses(
        (status = 201, description = "Created", body = TargetResponse),
        (status = 409, description = "The name is taken, the agent is revoked or has too many targets", body = Problem),
    ))]
async fn create_target(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
    AppJson(req): AppJson<CreateTargetRequest>,
) -> Result<(StatusCode, Json<TargetResponse>), ApiError> {
    auth.require(OPERATE)?;
    auth.require_key_delivery(
        &state,
        "agent.target_add",
        &format!("agent:{key}"),
        "adding a target to an agent",
    )
    .await?;
    validate::name("name", &req.name)?;
    check_settings(&req.settings)?;
    let probe = probe_addresses(req.probe.as_deref())?;
    let agent = find_agent(&state, &key).await?;
    if agent.state == AgentState::Revoked {
        return Err(ApiError::Conflict("the agent is revoked".into()));
    }
    if state.db.targets(agent.id).await?.len() >= MAX_TARGETS {
        return Err(ApiError::Conflict(format!(
            "an agent has at most {MAX_TARGETS} targets"
        )));
    }
    let target = state
        .db
        .insert_target(
            &NewTarget {
                agent_id: agent.id,
                name: &req.name,
                settings: &req.settings,
                probe: &probe,
            },
            crate::now(),
        )
        .await
        .map_err(|e| match e {
            crate::db::Error::Conflict(_) => {
                ApiError::Conflict(format!("the agent already has a target {}", req.name))
            }
            other => other.into(),
        })?;
    auth.audit_ok(
        &state,
        "agent.target_add",
        &format!("agent:{}", agent.id),
        &format!("target {} = {}", target.name, target.settings.describe()),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(target_response(target))))
}

/// Remove a target. The agent stops managing it and leaves its files in place.
///
/// Scope: `admin` or `operator`. Refused (409) while it is the only target an assignment names.
#[utoipa::path(delete, path = "/agents/{agent}/targets/{target}", tag = "agents",
    params(
        ("agent" = String, Path, description = "Agent id or name"),
        ("target" = String, Path, description = "Target name"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 409, description = "An assignment names only this target", body = Problem),
    ))]
async fn remove_target(
    State(state): State<AppState>,
    auth: Auth,
    AppPath((key, name)): AppPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    auth.require(OPERATE)?;
    let agent = find_agent(&state, &key).await?;
    let target = state
        .db
        .targets(agent.id)
        .await?
        .into_iter()
        .find(|t| t.name == name)
        .ok_or(ApiError::NotFound)?;
    state.db.delete_target(&target).await.map_err(|e| match e {
        crate::db::Error::Conflict(why) => ApiError::Conflict(why),
        other => other.into(),
    })?;
    auth.audit_ok(
        &state,
        "agent.target_remove",
        &format!("agent:{}", agent.id),
        &format!("target {}", target.name),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Show an agent's rollout guard (change window, canary).
///
/// Scope: `admin`, `operator` or `reader`.
#[utoipa::path(get, path = "/agents/{agent}/rollout", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    responses((status = 200, description = "The rollout guard", body = RolloutSettings)))]
async fn show_rollout(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
) -> Result<Json<RolloutSettings>, ApiError> {
    auth.require(READ)?;
    let agent = find_agent(&state, &key).await?;
    let r = state.db.rollout(agent.id).await?;
    Ok(Json(RolloutSettings {
        change_window: r.change_window,
        canary: r.canary,
    }))
}

/// Set an agent's rollout guard: outside its change window a renewal waits (unless the
/// replaced version expires within `deployment.window_margin_days`); a canary installs first,
/// the others once every canary serves the new version. A first install never waits.
///
/// Scope: `admin` or `operator`.
#[utoipa::path(put, path = "/agents/{agent}/rollout", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    request_body = RolloutSettings,
    responses((status = 200, description = "Set", body = RolloutSettings)))]
async fn set_rollout(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
    AppJson(req): AppJson<RolloutSettings>,
) -> Result<Json<RolloutSettings>, ApiError> {
    auth.require(OPERATE)?;
    let window = req
        .change_window
        .as_deref()
        .filter(|w| !w.trim().is_empty())
        .map(|w| {
            w.parse::<ChangeWindow>()
                .map_err(|e| ApiError::field("change_window", e))
        })
        .transpose()?;
    let agent = find_agent(&state, &key).await?;
    let settings = AgentRollout {
        change_window: window.map(|w| w.to_string()),
        canary: req.canary,
    };
    state.db.set_rollout(agent.id, &settings).await?;
    auth.audit_ok(
        &state,
        "agent.rollout",
        &format!("agent:{}", agent.id),
        &format!(
            "change_window={} canary={}",
            settings.change_window.as_deref().unwrap_or("none"),
            settings.canary
        ),
    )
    .await?;
    Ok(Json(RolloutSettings {
        change_window: settings.change_window,
        canary: settings.canary,
    }))
}
