//! `/api/v1/agents`: hosts that pull certificates. Creating one returns a one-time join token
//! (stored hashed); the CCS password is write-only and sealed at rest.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use certkeep_api_types::api::{
    AgentResponse, CreateAgentRequest, JoinTokenResponse, UpdateAgentRequest,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Auth, OPERATE, READ};
use super::convert::{agent_response, deployment_responses, enroll_command};
use super::error::{ApiError, Problem};
use super::extract::{AppJson, AppPath, AppQuery};
use super::lookup::{find_agent, find_certificate};
use super::validate;
use crate::app::AppState;
use crate::bootstrap::{new_token_secret, token_hash};
use crate::db::agents::NewAgent;
use crate::model::{Agent, AgentState, CertificateId, CertificateState};

/// Routes of this resource.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(show_agent, update_agent))
        .routes(routes!(assign_certificate, unassign_certificate))
        .routes(routes!(revoke_agent))
        .routes(routes!(new_join_token))
}

/// One agent with its assignments and deployment states.
async fn agent_detail(state: &AppState, agent: Agent) -> Result<AgentResponse, ApiError> {
    let assignments = state.db.assignments(Some(agent.id), None).await?;
    let files = state.db.deployments(Some(agent.id), None).await?;
    let served = state.db.served(Some(agent.id), None).await?;
    Ok(agent_response(
        agent,
        deployment_responses(&assignments, &files, &served),
    ))
}

/// A fresh join token for `agent`, stored hashed: the secret and its expiry.
fn join_token(state: &AppState) -> (zeroize::Zeroizing<String>, Vec<u8>, time::OffsetDateTime) {
    let secret = new_token_secret();
    let hash = token_hash(&secret);
    let hours = i64::try_from(state.config.agents.join_token_hours).unwrap_or(24);
    (secret, hash, crate::now() + time::Duration::hours(hours))
}

/// Create an agent and its one-time join token.
///
/// Scope: `admin`, or `operator` with `export` (the agent will receive private keys).
/// `ccs_password` is write-only. The join token expires after `agents.join_token_hours`
/// (default 24).
#[utoipa::path(post, path = "/agents", tag = "agents", request_body = CreateAgentRequest, responses(
    (status = 201, description = "Created; `join_token` is shown only now", body = JoinTokenResponse),
    (status = 409, description = "The name is taken", body = Problem),
))]
async fn create_agent(
    State(state): State<AppState>,
    auth: Auth,
    AppJson(req): AppJson<CreateAgentRequest>,
) -> Result<(StatusCode, Json<JoinTokenResponse>), ApiError> {
    auth.require(OPERATE)?;
    validate::name("name", &req.name)?;
    auth.require_key_delivery(
        &state,
        "agent.create",
        &format!("agent:{}", req.name),
        "creating an agent",
    )
    .await?;
    validate::secret("ccs_password", &req.ccs_password)?;
    let (secret, hash, expires_at) = join_token(&state);
    let agent = state
        .db
        .insert_agent(
            &state.secrets,
            &NewAgent {
                name: &req.name,
                join_token_hash: &hash,
                join_token_expires_at: expires_at,
                ccs_password: &req.ccs_password,
                pfx_mode: req.pfx_encryption.unwrap_or_default(),
            },
            crate::now(),
        )
        .await?;
    auth.audit_ok(
        &state,
        "agent.create",
        &format!("agent:{}", agent.id),
        &format!("name={}", agent.name),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenResponse {
            agent: agent_response(agent, Vec::new()),
            join_token: secret.to_string(),
            expires_at,
            enroll_command: enroll_command(&state.config.agent_url()),
        }),
    ))
}

/// List agents: last seen, reported OS, and deployment state per assigned certificate.
///
/// Scope: `admin`, `operator` or `reader`.
#[utoipa::path(get, path = "/agents", tag = "agents", responses(
    (status = 200, description = "Every agent, by name", body = Vec<AgentResponse>),
))]
async fn list_agents(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Vec<AgentResponse>>, ApiError> {
    Ok(Json(list(&state, &auth).await?))
}

/// Every agent with its deployment state per assigned certificate (`GET /agents`, and the
/// dashboard): three queries, whatever the number of agents.
pub(crate) async fn list(state: &AppState, auth: &Auth) -> Result<Vec<AgentResponse>, ApiError> {
    auth.require(READ)?;
    let agents = state.db.list_agents().await?;
    let assignments = state.db.assignments(None, None).await?;
    let files = state.db.deployments(None, None).await?;
    let served = state.db.served(None, None).await?;
    let all = deployment_responses(&assignments, &files, &served);
    Ok(agents
        .into_iter()
        .map(|a| {
            let mine = all
                .iter()
                .filter(|d| d.agent_id == a.id.0)
                .cloned()
                .collect();
            agent_response(a, mine)
        })
        .collect())
}

/// Show one agent.
///
/// Scope: `admin`, `operator` or `reader`.
#[utoipa::path(get, path = "/agents/{agent}", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    responses((status = 200, description = "The agent", body = AgentResponse)))]
async fn show_agent(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
) -> Result<Json<AgentResponse>, ApiError> {
    auth.require(READ)?;
    let agent = find_agent(&state, &key).await?;
    Ok(Json(agent_detail(&state, agent).await?))
}

/// Rotate the CCS password and/or change the PFX encryption.
///
/// Scope: `admin` or `operator`; setting `ccs_password` needs `admin`, or `operator` with
/// `export` (whoever knows the password can open the agent's PFX files). `aes256` files open
/// only on Windows Server 2019 and later.
#[utoipa::path(patch, path = "/agents/{agent}", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    request_body = UpdateAgentRequest,
    responses((status = 200, description = "Updated", body = AgentResponse)))]
async fn update_agent(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
    AppJson(req): AppJson<UpdateAgentRequest>,
) -> Result<Json<AgentResponse>, ApiError> {
    auth.require(OPERATE)?;
    if req.ccs_password.is_none() && req.pfx_encryption.is_none() {
        return Err(ApiError::field(
            "body",
            "give ccs_password and/or pfx_encryption",
        ));
    }
    if let Some(p) = &req.ccs_password {
        auth.require_key_delivery(
            &state,
            "agent.update",
            &format!("agent:{key}"),
            "setting a CCS password",
        )
        .await?;
        validate::secret("ccs_password", p)?;
    }
    let agent = find_agent(&state, &key).await?;
    let mode = req.pfx_encryption;
    state
        .db
        .update_agent_ccs(
            &state.secrets,
            agent.id,
            req.ccs_password.as_deref(),
            mode,
            crate::now(),
        )
        .await?;
    let mut changed = Vec::new();
    if req.ccs_password.is_some() {
        changed.push("ccs_password rotated".to_owned());
    }
    if let Some(m) = mode {
        changed.push(format!("pfx_encryption={m}"));
    }
    auth.audit_ok(
        &state,
        "agent.update",
        &format!("agent:{}", agent.id),
        &changed.join(" "),
    )
    .await?;
    let agent = state.db.agent(agent.id).await?;
    Ok(Json(agent_detail(&state, agent).await?))
}

/// The agent and certificate named in an assignment path.
async fn assignment_parts(
    state: &AppState,
    agent: &str,
    certificate: &str,
) -> Result<(Agent, CertificateId), ApiError> {
    let agent = find_agent(state, agent).await?;
    let cert = find_certificate(state, certificate).await?;
    if cert.state == CertificateState::Retired {
        return Err(ApiError::Conflict("the certificate is retired".into()));
    }
    Ok((agent, cert.id))
}

/// The targets of an assignment.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AssignQuery {
    /// Comma-separated target names of the agent, e.g. `ccs,nginx`; absent means every
    /// target the agent has, now and later.
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(,[A-Za-z0-9][A-Za-z0-9._-]{0,63})*$")]
    targets: Option<String>,
}

/// Assign a certificate to an agent, for some or all of its targets. Assigning again replaces
/// the targets.
///
/// Scope: `admin`, or `operator` with `export` (the agent will receive the private key).
#[utoipa::path(put, path = "/agents/{agent}/certificates/{certificate}", tag = "agents",
    params(
        ("agent" = String, Path, description = "Agent id or name"),
        ("certificate" = String, Path, description = "Certificate id or name"),
        AssignQuery,
    ),
    responses(
        (status = 204, description = "Assigned"),
        (status = 409, description = "The agent is revoked or the certificate retired", body = Problem),
    ))]
async fn assign_certificate(
    State(state): State<AppState>,
    auth: Auth,
    AppPath((agent, certificate)): AppPath<(String, String)>,
    AppQuery(q): AppQuery<AssignQuery>,
) -> Result<StatusCode, ApiError> {
    assign(&state, &auth, &agent, &certificate, q.targets.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Assigns a certificate to an agent (a key-delivery act, see [`Auth::require_key_delivery`]).
pub(crate) async fn assign(
    state: &AppState,
    auth: &Auth,
    agent: &str,
    certificate: &str,
    targets: Option<&str>,
) -> Result<(), ApiError> {
    auth.require(OPERATE)?;
    auth.require_key_delivery(
        state,
        "agent.assign",
        &format!("agent:{agent}"),
        "assigning a certificate to an agent",
    )
    .await?;
    let (agent, cert) = assignment_parts(state, agent, certificate).await?;
    if agent.state == AgentState::Revoked {
        return Err(ApiError::Conflict("the agent is revoked".into()));
    }
    let defined = state.db.targets(agent.id).await?;
    let mut named = Vec::new();
    for name in targets.iter().flat_map(|t| t.split(',')) {
        let target = defined.iter().find(|t| t.name == name).ok_or_else(|| {
            ApiError::field("targets", format!("the agent has no target `{name}`"))
        })?;
        if !named.contains(&target.id) {
            named.push(target.id);
        }
    }
    state
        .db
        .assign_to_targets(agent.id, cert, &named, crate::now())
        .await?;
    let to = match targets {
        Some(list) => format!(" targets {list}"),
        None => " all targets".to_owned(),
    };
    auth.audit_ok(
        state,
        "agent.assign",
        &format!("agent:{}", agent.id),
        &format!("certificate:{cert}{to}"),
    )
    .await
}

/// Unassign a certificate from an agent; the agent stops receiving it. Idempotent.
///
/// Scope: `admin` or `operator`.
#[utoipa::path(delete, path = "/agents/{agent}/certificates/{certificate}", tag = "agents",
    params(
        ("agent" = String, Path, description = "Agent id or name"),
        ("certificate" = String, Path, description = "Certificate id or name"),
    ),
    responses((status = 204, description = "Unassigned")))]
async fn unassign_certificate(
    State(state): State<AppState>,
    auth: Auth,
    AppPath((agent, certificate)): AppPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    unassign(&state, &auth, &agent, &certificate).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unassigns a certificate from an agent; idempotent.
pub(crate) async fn unassign(
    state: &AppState,
    auth: &Auth,
    agent: &str,
    certificate: &str,
) -> Result<(), ApiError> {
    auth.require(OPERATE)?;
    let agent = find_agent(state, agent).await?;
    let cert = find_certificate(state, certificate).await?;
    state.db.unassign_certificate(agent.id, cert.id).await?;
    auth.audit_ok(
        state,
        "agent.unassign",
        &format!("agent:{}", agent.id),
        &format!("certificate:{}", cert.id),
    )
    .await
}

/// Revoke an agent: its client certificate and join token stop working at once.
///
/// Scope: `admin` or `operator`.
#[utoipa::path(post, path = "/agents/{agent}/revoke", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    responses((status = 200, description = "Revoked", body = AgentResponse)))]
async fn revoke_agent(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
) -> Result<Json<AgentResponse>, ApiError> {
    auth.require(OPERATE)?;
    let agent = find_agent(&state, &key).await?;
    state.db.revoke_agent(agent.id, crate::now()).await?;
    auth.audit_ok(&state, "agent.revoke", &format!("agent:{}", agent.id), "")
        .await?;
    let agent = state.db.agent(agent.id).await?;
    Ok(Json(agent_detail(&state, agent).await?))
}

/// Issue a new one-time join token, e.g. to re-enroll an agent whose certificate expired.
///
/// Scope: `admin`, or `operator` with `export` (whoever enrolls with it receives the agent's
/// private keys). Replaces any unused token.
#[utoipa::path(post, path = "/agents/{agent}/join-token", tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    responses(
        (status = 200, description = "`join_token` is shown only now", body = JoinTokenResponse),
        (status = 409, description = "The agent is revoked", body = Problem),
    ))]
async fn new_join_token(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
) -> Result<Json<JoinTokenResponse>, ApiError> {
    auth.require(OPERATE)?;
    auth.require_key_delivery(
        &state,
        "agent.join_token",
        &format!("agent:{key}"),
        "a join token",
    )
    .await?;
    let agent = find_agent(&state, &key).await?;
    if agent.state == AgentState::Revoked {
        return Err(ApiError::Conflict("the agent is revoked".into()));
    }
    let (secret, hash, expires_at) = join_token(&state);
    state
        .db
        .set_join_token(agent.id, &hash, expires_at, crate::now())
        .await?;
    auth.audit_ok(
        &state,
        "agent.join_token",
        &format!("agent:{}", agent.id),
        "",
    )
    .await?;
    let agent = state.db.agent(agent.id).await?;
    Ok(Json(JoinTokenResponse {
        agent: agent_detail(&state, agent).await?,
        join_token: secret.to_string(),
        expires_at,
        enroll_command: enroll_command(&state.config.agent_url()),
    }))
}
