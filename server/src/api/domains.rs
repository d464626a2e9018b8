//! `/api/v1/domains`: the domain-validation ledger — per ACME account and name, when the CA
//! last showed the validation valid and when it lapses, so it is renewed in the CA's portal
//! before orders need it.

use axum::Json;
use axum::extract::State;
use certkeep_api_types::lifecycle::{DomainList, DomainValidationResponse};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Auth, CERT_READ};
use super::error::ApiError;
use super::extract::AppQuery;
use super::lookup::find_account;
use super::validate;
use crate::app::AppState;
use crate::db::lifecycle::DomainFilter;

/// Routes of this resource.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_domains))
}

/// Filters of the ledger.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this account (id or name).
    account: Option<String>,
    /// Only validations lapsing within this span: `30d`, `12h`, `90m` (lapsed ones included).
    #[param(pattern = "^[0-9]+[dhms]$")]
    lapsing_within: Option<String>,
    /// Most entries returned, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// List domain validations, soonest lapse first.
///
/// Scope: `admin`, `operator`, `reader`, or `issuer` (which sees only names within its domain
/// patterns).
#[utoipa::path(get, path = "/domains", tag = "domains", params(ListQuery), responses(
    (status = 200, description = "The ledger, soonest lapse first", body = DomainList),
))]
async fn list_domains(
    State(state): State<AppState>,
    auth: Auth,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<Json<DomainList>, ApiError> {
    auth.require(CERT_READ)?;
    let limit = validate::page_limit("limit", q.limit)?;
    let account = match &q.account {
        Some(key) => Some(
            find_account(&state, key)
                .await
                .map_err(|_| ApiError::field("account", format!("no account `{key}`")))?
                .id,
        ),
        None => None,
    };
    let lapsing_before = q
        .lapsing_within
        .as_deref()
        .map(|s| {
            crate::domain::span::parse_span(s)
                .map(|d| crate::now() + d)
                .map_err(|e| ApiError::field("lapsing_within", e.to_string()))
        })
        .transpose()?;
    let rows = state
        .db
        .domain_validations(&DomainFilter {
            account,
            lapsing_before,
            limit,
        })
        .await?;
    let items = rows
        .into_iter()
        .filter(|d| auth.can_see(std::slice::from_ref(&d.name)))
        .map(|d| DomainValidationResponse {
            account_id: d.account_id.0,
            account: d.account_name,
            name: d.name,
            last_valid_at: d.last_valid_at,
            expires_at: d.expires_at,
        })
        .collect();
    Ok(Json(DomainList { items }))
}
