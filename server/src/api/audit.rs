//! `/api/v1/audit-events`: reading and verifying the hash-chained audit log. Read-only: the API
//! offers no way to change or delete an event.

use axum::Json;
use axum::extract::State;
use certkeep_api_types::api::{AuditEventList, AuditVerifyResponse};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{ADMIN, Auth};
use super::error::ApiError;
use super::extract::AppQuery;
use super::validate;
use crate::app::AppState;
use crate::db::audit::AuditFilter;

/// Routes of this resource.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit_events))
        .routes(routes!(verify_audit_chain))
}

/// Filters and page of the audit list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only this actor, e.g. `token:<id>`.
    pub(crate) actor: Option<String>,
    /// Only this action, e.g. `certificate.key_release`.
    pub(crate) action: Option<String>,
    /// Only this subject, e.g. `certificate:<id>`.
    pub(crate) subject: Option<String>,
    /// Events after this sequence number (`next_after_seq` of the previous page).
    pub(crate) after_seq: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<i64>,
}

/// List audit events, oldest first.
///
/// Scope: `admin`.
#[utoipa::path(get, path = "/audit-events", tag = "audit", params(AuditQuery), responses(
    (status = 200, description = "One page of events", body = AuditEventList),
))]
async fn list_audit_events(
    State(state): State<AppState>,
    auth: Auth,
    AppQuery(q): AppQuery<AuditQuery>,
) -> Result<Json<AuditEventList>, ApiError> {
    Ok(Json(list(&state, &auth, q).await?))
}

/// One page of audit events, oldest first (`GET /audit-events`, and the dashboard).
pub(crate) async fn list(
    state: &AppState,
    auth: &Auth,
    q: AuditQuery,
) -> Result<AuditEventList, ApiError> {
    auth.require(ADMIN)?;
    let limit = validate::page_limit("limit", q.limit)?;
    let events = state
        .db
        .list_audit(&AuditFilter {
            actor: q.actor,
            action: q.action,
            subject: q.subject,
            after_seq: q.after_seq,
            limit,
        })
        .await?;
    let next_after_seq = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(AuditEventList {
        items: events.into_iter().map(Into::into).collect(),
        next_after_seq,
    })
}

/// Walk the hash chain and report the first break (an edited, reordered or deleted event).
///
/// Scope: `admin`.
#[utoipa::path(get, path = "/audit-events/verify", tag = "audit", responses(
    (status = 200, description = "The result; `intact` is false when the chain is broken", body = AuditVerifyResponse),
))]
async fn verify_audit_chain(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<AuditVerifyResponse>, ApiError> {
    Ok(Json(verify(&state, &auth).await?))
}

/// Walks the whole chain (`GET /audit-events/verify`, and the dashboard's audit page).
pub(crate) async fn verify(state: &AppState, auth: &Auth) -> Result<AuditVerifyResponse, ApiError> {
    auth.require(ADMIN)?;
    Ok(match state.db.verify_audit_chain().await? {
        Ok(events) => AuditVerifyResponse {
            intact: true,
            events,
            broken_at: None,
            reason: None,
        },
        Err(b) => {
            // Raised once per break (keyed by its sequence number), however often verified.
            let event = crate::notify::events::audit_chain_broken(b.seq, &b.reason, crate::now());
            state.db.enqueue_event(&event).await?;
            AuditVerifyResponse {
                intact: false,
                events: u64::try_from(b.seq - 1).unwrap_or(0),
                broken_at: Some(b.seq),
                reason: Some(b.reason),
            }
        }
    })
}
