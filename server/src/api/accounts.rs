//! `/api/v1/acme-accounts`: accounts at ACME CAs. The EAB key id and HMAC key are write-only:
//! accepted on create, sealed at rest, never returned or logged.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use certkeep_api_types::api::{AccountResponse, CreateAccountRequest};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{ADMIN, Auth, READ};
use super::error::ApiError;
use super::extract::{AppJson, AppPath};
use super::lookup::find_account;
use super::validate;
use crate::app::AppState;
use crate::db::accounts::NewAccount;

/// Routes of this resource.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(show_account))
        .routes(routes!(deactivate_account))
}

/// Checks everything in the request except the HMAC key's encoding.
fn validate_account(req: &CreateAccountRequest) -> Result<Vec<String>, ApiError> {
    validate::name("name", &req.name)?;
    let url = reqwest::Url::parse(&req.directory_url)
        .map_err(|e| ApiError::field("directory_url", format!("not a URL: {e}")))?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err(ApiError::field("directory_url", "must be an https:// URL"));
    }
    if req.contact.len() > 10 {
        return Err(ApiError::field("contact", "at most 10 contacts"));
    }
    if let Some(bad) = req
        .contact
        .iter()
        .find(|c| !c.starts_with("mailto:") || c.len() > 254 || c.chars().any(char::is_control))
    {
        return Err(ApiError::field(
            "contact",
            format!("`{bad}` is not a mailto: URI"),
        ));
    }
    if req.allowed_domains.is_empty() {
        return Err(ApiError::field(
            "allowed_domains",
            "at least one domain pattern is required",
        ));
    }
    let allowed = validate::patterns("allowed_domains", &req.allowed_domains)?;
    match (&req.eab_kid, &req.eab_hmac_key) {
        (Some(kid), Some(_)) => validate::label("eab_kid", kid)?,
        (None, None) => {}
        (Some(_), None) => {
            return Err(ApiError::field(
                "eab_hmac_key",
                "required together with eab_kid",
            ));
        }
        (None, Some(_)) => {
            return Err(ApiError::field(
                "eab_kid",
                "required together with eab_hmac_key",
            ));
        }
    }
    if let Some(pem) = &req.extra_roots_pem {
        let roots = crate::tls::certs_from_pem("extra_roots_pem", pem)
            .map_err(|e| ApiError::field("extra_roots_pem", e.to_string()))?;
        if roots.is_empty() {
            return Err(ApiError::field(
                "extra_roots_pem",
                "no PEM certificate found",
            ));
        }
    }
    Ok(allowed)
}

/// Create an ACME account and register it at the CA.
///
/// Scope: `admin`. `eab_kid` and `eab_hmac_key` are write-only. Registration runs at once; if
/// the CA refuses, the account is returned in state `failed` with `last_error`.
#[utoipa::path(post, path = "/acme-accounts", tag = "acme-accounts", request_body = CreateAccountRequest, responses(
    (status = 201, description = "Created (state `valid`, or `failed` with `last_error`)", body = AccountResponse),
    (status = 409, description = "The name is taken", body = super::error::Problem),
))]
async fn create_account(
    State(state): State<AppState>,
    auth: Auth,
    AppJson(req): AppJson<CreateAccountRequest>,
) -> Result<(StatusCode, Json<AccountResponse>), ApiError> {
    auth.require(ADMIN)?;
    let allowed = validate_account(&req)?;
    let hmac = req
        .eab_hmac_key
        .as_deref()
        .map(|text| {
            validate::secret("eab_hmac_key", text)?;
            crate::acme::decode_eab_hmac(text)
                .map_err(|e| ApiError::field("eab_hmac_key", e.to_string()))
        })
        .transpose()?;
    let now = crate::now();
    let account = state
        .db
        .insert_account(
            &state.secrets,
            &NewAccount {
                name: &req.name,
                directory_url: &req.directory_url,
                contact: &req.contact,
                allowed_domains: &allowed,
                eab_kid: req.eab_kid.as_deref(),
                eab_hmac: hmac.as_deref().map(|h| &h[..]),
                extra_roots_pem: req.extra_roots_pem.as_deref(),
            },
            now,
        )
        .await?;
    let subject = format!("account:{}", account.id);
    auth.audit_ok(
        &state,
        "account.create",
        &subject,
        &format!("name={}", account.name),
    )
    .await?;
    let account = match crate::engine::register_account(&state, account.id).await {
        Ok(registered) => {
            auth.audit_ok(&state, "account.register", &subject, "")
                .await?;
            registered
        }
        Err(e) => {
            // The engine logged the failure and recorded it on the account (state `failed`).
            auth.audit(
                &state,
                "account.register",
                &subject,
                "failure",
                &e.to_string(),
            )
            .await?;
            state.db.account(account.id).await?
        }
    };
    Ok((StatusCode::CREATED, Json(account.into())))
}

/// List ACME accounts.
///
/// Scope: `admin`, `operator` or `reader`.
#[utoipa::path(get, path = "/acme-accounts", tag = "acme-accounts", responses(
    (status = 200, description = "Every account, by name", body = Vec<AccountResponse>),
))]
async fn list_accounts(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Vec<AccountResponse>>, ApiError> {
    Ok(Json(list(&state, &auth).await?))
}

/// Every ACME account, by name (`GET /acme-accounts`, and the dashboard).
pub(crate) async fn list(state: &AppState, auth: &Auth) -> Result<Vec<AccountResponse>, ApiError> {
    auth.require(READ)?;
    let accounts = state.db.list_accounts().await?;
    Ok(accounts.into_iter().map(Into::into).collect())
}

/// Show one ACME account.
///
/// Scope: `admin`, `operator` or `reader`.
#[utoipa::path(get, path = "/acme-accounts/{account}", tag = "acme-accounts",
    params(("account" = String, Path, description = "Account id or name")),
    responses((status = 200, description = "The account", body = AccountResponse)))]
async fn show_account(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
) -> Result<Json<AccountResponse>, ApiError> {
    auth.require(READ)?;
    Ok(Json(find_account(&state, &key).await?.into()))
}

/// Deactivate an ACME account: its certificates are no longer ordered, renewed or retried with
/// it, at once. Orders in flight through it fail, naming the account.
///
/// Scope: `admin`.
#[utoipa::path(post, path = "/acme-accounts/{account}/deactivate", tag = "acme-accounts",
    params(("account" = String, Path, description = "Account id or name")),
    responses((status = 200, description = "Deactivated", body = AccountResponse)))]
async fn deactivate_account(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
) -> Result<Json<AccountResponse>, ApiError> {
    auth.require(ADMIN)?;
    let account = find_account(&state, &key).await?;
    let ended = state
        .db
        .deactivate_account(account.id, crate::now())
        .await?;
    // The workers fail the orders made due now.
    state.wake.notify_one();
    auth.audit_ok(
        &state,
        "account.deactivate",
        &format!("account:{}", account.id),
        &format!("orders in flight ended: {ended}"),
    )
    .await?;
    Ok(Json(state.db.account(account.id).await?.into()))
}
