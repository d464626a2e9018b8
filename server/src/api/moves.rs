//! `/api/v1/moves`: moving certificates to another ACME account (the InCommon → CERTInext
//! cutover, or RSA OV → ECC OV). A dry run answers the plan and writes nothing (not even the
//! audit log); a real move is queued, audited, and driven by the engine (`engine/moves.rs`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use certkeep_api_types::lifecycle::{MoveList, MovePlan, MovePlanItem, MoveRequest, MoveResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Auth, OPERATE};
use super::error::ApiError;
use super::extract::AppJson;
use super::lookup::{find_account, find_visible};
use crate::app::AppState;
use crate::db::certificates::CertificateFilter;
use crate::db::moves::NewMove;
use crate::domain::names::all_covered;
use crate::model::{AccountState, Certificate, CertificateId, CertificateState};

/// Most certificates in one move.
const MAX_MOVE: usize = 1000;

/// Routes of this resource.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_moves, create_move))
}

/// The certificates the request names, or every certificate of `from_account`.
async fn selected(
    state: &AppState,
    auth: &Auth,
    req: &MoveRequest,
) -> Result<Vec<Certificate>, ApiError> {
    let mut certs = Vec::new();
    match (&req.from_account, req.certificates.is_empty()) {
        (Some(key), true) => {
            let from = find_account(state, key)
                .await
                .map_err(|_| ApiError::field("from_account", format!("no account `{key}`")))?;
            let mut after = None;
            loop {
                let page = state
                    .db
                    .list_certificates(&CertificateFilter {
                        account: Some(from.id),
                        after,
                        limit: 500,
                        ..CertificateFilter::default()
                    })
                    .await?;
                after = page.last().map(|c| c.id);
                let last = page.len() < 500;
                certs.extend(
                    page.into_iter()
                        .filter(|c| c.state != CertificateState::Retired),
                );
                if last || certs.len() > MAX_MOVE {
                    break;
                }
            }
        }
        (None, false) => {
            for key in &req.certificates {
                certs.push(find_visible(state, auth, key).await.map_err(|e| match e {
                    ApiError::NotFound => {
                        ApiError::field("certificates", format!("no certificate `{key}`"))
                    }
                    other => other,
                })?);
            }
        }
        _ => {
            return Err(ApiError::field(
                "certificates",
                "name certificates or give from_account, not both",
            ));
        }
    }
    if certs.is_empty() {
        return Err(ApiError::field("certificates", "nothing to move"));
    }
    if certs.len() > MAX_MOVE {
        return Err(ApiError::field(
            "certificates",
            format!("at most {MAX_MOVE} certificates per move"),
        ));
    }
    Ok(certs)
}

/// Plan, or queue, a move to another ACME account.
///
/// The plan lists, in the order of work (soonest expiry first), whether the target account's
/// patterns allow every name, the key type, and the agents that will receive the new version.
/// With `dry_run` nothing changes. Otherwise every name must be allowed; the moves are queued
/// (202) and ordered at `lifecycle.move_orders_per_minute`. Each certificate keeps its current
/// version until it is issued under the target account.
///
/// Scope: `admin` or `operator`.
#[utoipa::path(post, path = "/moves", tag = "certificates", request_body = MoveRequest, responses(
    (status = 200, description = "The plan (dry run): nothing changed", body = MovePlan),
    (status = 202, description = "Queued", body = MovePlan),
    (status = 409, description = "A certificate is already moving", body = super::error::Problem),
))]
async fn create_move(
    State(state): State<AppState>,
    auth: Auth,
    AppJson(req): AppJson<MoveRequest>,
) -> Result<(StatusCode, Json<MovePlan>), ApiError> {
    auth.require(OPERATE)?;
    let to = find_account(&state, &req.to_account)
        .await
        .map_err(|_| ApiError::field("to_account", format!("no account `{}`", req.to_account)))?;
    if matches!(to.state, AccountState::Deactivated | AccountState::Failed) {
        return Err(ApiError::field(
            "to_account",
            format!("account `{}` is {}", to.name, to.state),
        ));
    }
    let mut certs = selected(&state, &auth, &req).await?;
    let ids: Vec<CertificateId> = certs.iter().map(|c| c.id).collect();
    let mut current = state.db.current_versions(&ids).await?;
    let mut agents: HashMap<CertificateId, Vec<String>> = HashMap::new();
    for a in state.db.assignments(None, None).await? {
        agents
            .entry(a.certificate_id)
            .or_default()
            .push(a.agent_name);
    }
    certs.sort_by_key(|c| (current.get(&c.id).map(|v| v.not_after), c.name.clone()));
    let items: Vec<MovePlanItem> = certs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let outside = all_covered(&to.allowed_domains, &c.dns_names).err();
            MovePlanItem {
                position: i + 1,
                certificate_id: c.id.0,
                certificate: c.name.clone(),
                dns_names: c.dns_names.clone(),
                key_type: c.key_type,
                allowed: outside.is_none(),
                outside,
                agents: agents.remove(&c.id).unwrap_or_default(),
                not_after: current.get(&c.id).map(|v| v.not_after),
            }
        })
        .collect();
    let plan = MovePlan {
        dry_run: req.dry_run,
        to_account: to.name.clone(),
        revoke_old: req.revoke_old,
        items,
    };
    if req.dry_run {
        return Ok((StatusCode::OK, Json(plan)));
    }
    if let Some(already) = certs.iter().find(|c| c.account_id == to.id) {
        return Err(ApiError::field(
            "to_account",
            format!(
                "certificate `{}` is already issued under account `{}`",
                already.name, to.name
            ),
        ));
    }
    if let Some(refused) = plan.items.iter().find(|i| !i.allowed) {
        return Err(ApiError::field(
            "to_account",
            format!(
                "`{}` of certificate `{}` is outside account `{}`'s allowed domains",
                refused.outside.as_deref().unwrap_or_default(),
                refused.certificate,
                to.name
            ),
        ));
    }
    let moves: Vec<NewMove> = certs
        .iter()
        .map(|c| NewMove {
            certificate_id: c.id,
            from_account_id: c.account_id,
            old_version_id: current.remove(&c.id).map(|v| v.id),
        })
        .collect();
    state
        .db
        .queue_moves(&moves, to.id, req.revoke_old, crate::now())
        .await
        .map_err(|e| match e {
            crate::db::Error::Conflict(_) => {
                ApiError::Conflict("a certificate of this move is already moving".into())
            }
            other => other.into(),
        })?;
    let names: Vec<&str> = certs.iter().map(|c| c.name.as_str()).collect();
    auth.audit_ok(
        &state,
        "certificate.move",
        &format!("account:{}", to.id),
        &format!(
            "to={} revoke_old={} certificates={}",
            to.name,
            req.revoke_old,
            names.join(",")
        ),
    )
    .await?;
    state.wake.notify_one();
    Ok((StatusCode::ACCEPTED, Json(plan)))
}

/// Progress of the moves, newest first (at most 1000).
///
/// Scope: `admin`, `operator`.
#[utoipa::path(get, path = "/moves", tag = "certificates", responses(
    (status = 200, description = "The moves", body = MoveList),
))]
async fn list_moves(State(state): State<AppState>, auth: Auth) -> Result<Json<MoveList>, ApiError> {
    auth.require(OPERATE)?;
    let items = state
        .db
        .moves(1000)
        .await?
        .into_iter()
        .map(|m| MoveResponse {
            id: m.id,
            certificate_id: m.certificate_id.0,
            from_account_id: m.from_account_id.0,
            to_account_id: m.to_account_id.0,
            state: m.state,
            revoke_old: m.revoke_old,
            order_id: m.order_id.map(|o| o.0),
            new_version_id: m.new_version_id.map(|v| v.0),
            last_error: m.last_error,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
        .collect();
    Ok(Json(MoveList { items }))
}
