//! `/api/v1/certificates`: certificate definitions, their versions, orders, deployments,
//! renewal, revocation, retirement and downloads. Every private-key release is audited first.

use std::str::FromStr as _;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use certkeep_api_types::agent::PfxEncryption;
use certkeep_api_types::api::{
    CertificateDetail, CertificateList, CertificateResponse, CreateCertificateRequest,
    DownloadFormat, DownloadRequest, OrderResponse, RevokeCertificateRequest, VersionResponse,
};
use certkeep_api_types::lifecycle::EditCertificateRequest;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::auth::{Auth, CERT_ISSUE, CERT_READ, OPERATE};
use super::convert::{self, deployment_responses};
use super::error::{ApiError, Problem};
use super::extract::{AppJson, AppPath, AppQuery};
use super::lookup::{covered, find_account, find_visible, issuing_account, pick_version};
use super::validate;
use crate::app::AppState;
use crate::db::certificates::{CertificateFilter, NewCertificate};
use crate::domain::lifecycle::{EditError, edited_names};
use crate::domain::names::{normalize, normalize_all};
use crate::model::{
    Certificate, CertificateId, CertificateState, KeyType, Order, OrderReason, RenewalPolicy,
};

/// Routes of this resource.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_certificates, create_certificate))
        .routes(routes!(show_certificate, edit_certificate))
        .routes(routes!(list_versions))
        .routes(routes!(renew_certificate))
        .routes(routes!(revoke_certificate))
        .routes(routes!(retire_certificate))
        .routes(routes!(download_certificate))
}

/// The wire form of a certificate, with its current version loaded.
async fn certificate_response(
    state: &AppState,
    c: Certificate,
) -> Result<CertificateResponse, ApiError> {
    let current = match c.current_version_id {
        Some(v) => Some(state.db.version(v).await?),
        None => None,
    };
    Ok(convert::certificate_response(c, current))
}

/// The wire form of an order, with its events loaded.
async fn order_response(state: &AppState, o: Order) -> Result<OrderResponse, ApiError> {
    let events = state.db.order_events(o.id).await?;
    Ok(convert::order_response(o, events))
}

/// Checks the renewal policy: a fraction in (0, 1) or 1..=365 days, not both.
fn parse_policy(req: &CreateCertificateRequest) -> Result<RenewalPolicy, ApiError> {
    if req.renew_fraction.is_some() && req.renew_days.is_some() {
        return Err(ApiError::field(
            "renew_days",
            "give renew_fraction or renew_days, not both",
        ));
    }
    if req.renew_fraction.is_some_and(|f| !(f > 0.0 && f < 1.0)) {
        return Err(ApiError::field("renew_fraction", "must be between 0 and 1"));
    }
    if req.renew_days.is_some_and(|d| !(1..=365).contains(&d)) {
        return Err(ApiError::field("renew_days", "must be 1 to 365"));
    }
    Ok(RenewalPolicy {
        fraction: req.renew_fraction,
        days: req.renew_days,
    })
}

/// Queues an order for `cert` (or returns the one in flight) and wakes the workers.
async fn enqueue(
    state: &AppState,
    cert: &Certificate,
    reason: OrderReason,
) -> Result<Order, ApiError> {
    let now = crate::now();
    let order = state
        .db
        .enqueue_order(
            cert.id,
            cert.account_id,
            reason,
            order_deadline(state, now),
            now,
        )
        .await?;
    state.wake.notify_one();
    Ok(order)
}

/// When an order queued at `now` gives up (`engine.order_deadline_secs`).
fn order_deadline(state: &AppState, now: time::OffsetDateTime) -> time::OffsetDateTime {
    let deadline_secs = i64::try_from(state.config.engine.order_deadline_secs).unwrap_or(i64::MAX);
    now.saturating_add(time::Duration::seconds(deadline_secs))
}

/// Request a certificate; it is ordered at once.
///
/// Scope: `admin`, `operator`, or `issuer` when every name is within the token's domain
/// patterns. Every name must also be within the account's `allowed_domains`.
#[utoipa::path(post, path = "/certificates", tag = "certificates", request_body = CreateCertificateRequest, responses(
    (status = 202, description = "Accepted: defined and queued for ordering", body = CertificateResponse),
    (status = 409, description = "The name is taken", body = Problem),
))]
async fn create_certificate(
    State(state): State<AppState>,
    auth: Auth,
    AppJson(req): AppJson<CreateCertificateRequest>,
) -> Result<(StatusCode, Json<CertificateResponse>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(create(&state, &auth, &req).await?),
    ))
}

/// Defines a certificate and queues its first order (`POST /certificates`, and the dashboard).
pub(crate) async fn create(
    state: &AppState,
    auth: &Auth,
    req: &CreateCertificateRequest,
) -> Result<CertificateResponse, ApiError> {
    auth.require(CERT_ISSUE)?;
    validate::name("name", &req.name)?;
    let names = normalize_all(&req.dns_names)?;
    auth.may_issue(&names)?;
    let key_type = req.key_type.unwrap_or(KeyType::EcdsaP256);
    let policy = parse_policy(req)?;
    let account = issuing_account(state, &req.account, &names, "dns_names").await?;
    let actor = auth.actor();
    let now = crate::now();
    // The definition, its first order and the audit event commit together; the answer is built
    // from what was written, a new definition has no version to load.
    let (cert, _) = state
        .db
        .create_certificate(
            &NewCertificate {
                name: &req.name,
                dns_names: &names,
                key_type,
                account_id: account.id,
                policy,
                created_by: Some(&actor),
            },
            OrderReason::New,
            order_deadline(state, now),
            |id, order| {
                auth.event(
                    "certificate.create",
                    &format!("certificate:{id}"),
                    "success",
                    &format!("name={} names={} order={order}", req.name, names.join(",")),
                )
            },
            now,
        )
        .await?;
    state.wake.notify_one();
    Ok(convert::certificate_response(cert, None))
}

/// Filters and page of the certificate list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only this state.
    #[param(value_type = Option<CertificateState>)]
    pub(crate) state: Option<String>,
    /// Only this account (id or name).
    pub(crate) account: Option<String>,
    /// Only certificates whose current version expires within this span: `30d`, `12h`, `90m`.
    /// The page is then ordered by expiry, soonest first.
    #[param(pattern = "^[0-9]+[dhms]$")]
    pub(crate) expiring_within: Option<String>,
    /// Only certificates carrying this DNS name.
    pub(crate) dns_name: Option<String>,
    /// Only certificates whose name or one of whose DNS names contains this text.
    #[param(max_length = 100)]
    pub(crate) search: Option<String>,
    /// `next_cursor` of the previous page.
    pub(crate) cursor: Option<Uuid>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<i64>,
}

/// List certificates, with filters and cursor pagination.
///
/// In creation order; with `expiring_within`, soonest expiry first.
///
/// Scope: `admin`, `operator`, `reader`, or `issuer` (which sees only certificates within its
/// domain patterns; its pages may be shorter than `limit`).
#[utoipa::path(get, path = "/certificates", tag = "certificates", params(ListQuery), responses(
    (status = 200, description = "One page of certificates", body = CertificateList),
))]
async fn list_certificates(
    State(state): State<AppState>,
    auth: Auth,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<Json<CertificateList>, ApiError> {
    Ok(Json(list(&state, &auth, &q).await?))
}

/// One page of the certificates this caller sees, with their current versions: two queries
/// (the page, then its versions). `GET /certificates` and the dashboard's list.
pub(crate) async fn list(
    state: &AppState,
    auth: &Auth,
    q: &ListQuery,
) -> Result<CertificateList, ApiError> {
    auth.require(CERT_READ)?;
    let limit = validate::page_limit("limit", q.limit)?;
    let state_filter = q
        .state
        .as_deref()
        .map(CertificateState::from_str)
        .transpose()
        .map_err(|e| ApiError::field("state", e))?;
    let account = match &q.account {
        Some(key) => Some(
            find_account(state, key)
                .await
                .map_err(|_| ApiError::field("account", format!("no account `{key}`")))?
                .id,
        ),
        None => None,
    };
    let expiring_before = q
        .expiring_within
        .as_deref()
        .map(|s| {
            crate::domain::span::parse_span(s)
                .map(|d| crate::now() + d)
                .map_err(|e| ApiError::field("expiring_within", e.to_string()))
        })
        .transpose()?;
    let dns_name = q
        .dns_name
        .as_deref()
        .map(|n| normalize(n).map_err(|e| ApiError::field("dns_name", e.to_string())))
        .transpose()?;
    let search = q
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            validate::label("search", s)?;
            Ok::<_, ApiError>(s.to_lowercase())
        })
        .transpose()?;
    let page = state
        .db
        .list_certificates(&CertificateFilter {
            state: state_filter,
            account,
            expiring_before,
            dns_name,
            search,
            after: q.cursor.map(CertificateId),
            limit,
        })
        .await?;
    let next_cursor = (page.len() as i64 == limit)
        .then(|| page.last().map(|c| c.id.0))
        .flatten();
    let visible: Vec<Certificate> = page
        .into_iter()
        .filter(|c| auth.can_see(&c.dns_names))
        .collect();
    // The page's current versions in one query, not one per row.
    let ids: Vec<CertificateId> = visible.iter().map(|c| c.id).collect();
    let mut current = state.db.current_versions(&ids).await?;
    let items = visible
        .into_iter()
        .map(|c| {
            let version = current.remove(&c.id);
            convert::certificate_response(c, version)
        })
        .collect();
    Ok(CertificateList { items, next_cursor })
}

/// Show a certificate: current and previous versions, order history, deployments per agent.
///
/// Scope: `admin`, `operator`, `reader`, or `issuer` within its domain patterns.
#[utoipa::path(get, path = "/certificates/{certificate}", tag = "certificates",
    params(("certificate" = String, Path, description = "Certificate id or name")),
    responses((status = 200, description = "The certificate", body = CertificateDetail)))]
async fn show_certificate(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
) -> Result<Json<CertificateDetail>, ApiError> {
    Ok(Json(show(&state, &auth, &key).await?))
}

/// A certificate with its versions, orders (with events) and deployments per agent.
pub(crate) async fn show(
    state: &AppState,
    auth: &Auth,
    key: &str,
) -> Result<CertificateDetail, ApiError> {
    auth.require(CERT_READ)?;
    let cert = find_visible(state, auth, key).await?;
    let versions = state.db.versions(cert.id).await?;
    let mut orders = Vec::new();
    for order in state.db.orders_for(cert.id).await? {
        orders.push(order_response(state, order).await?);
    }
    let assignments = state.db.assignments(None, Some(cert.id)).await?;
    let deployments = state.db.deployments(None, Some(cert.id)).await?;
    let served = state.db.served(None, Some(cert.id)).await?;
    Ok(CertificateDetail {
        certificate: certificate_response(state, cert).await?,
        versions: versions.into_iter().map(Into::into).collect(),
        orders,
        deployments: deployment_responses(&assignments, &deployments, &served),
    })
}

/// List every issued version of a certificate, newest first.
///
/// Scope: `admin`, `operator`, `reader`, or `issuer` within its domain patterns.
#[utoipa::path(get, path = "/certificates/{certificate}/versions", tag = "certificates",
    params(("certificate" = String, Path, description = "Certificate id or name")),
    responses((status = 200, description = "Versions, newest first", body = Vec<VersionResponse>)))]
async fn list_versions(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
) -> Result<Json<Vec<VersionResponse>>, ApiError> {
    auth.require(CERT_READ)?;
    let cert = find_visible(&state, &auth, &key).await?;
    let versions = state.db.versions(cert.id).await?;
    Ok(Json(versions.into_iter().map(Into::into).collect()))
}

/// Renew now. Idempotent: while an order is in flight, that order is returned.
///
/// Scope: `admin`, `operator`, or `issuer` within its domain patterns.
#[utoipa::path(post, path = "/certificates/{certificate}/renew", tag = "certificates",
    params(("certificate" = String, Path, description = "Certificate id or name")),
    responses(
        (status = 202, description = "Queued (or already in flight)", body = OrderResponse),
        (status = 409, description = "The certificate is retired, or its ACME account is not usable (deactivated, not registered)", body = Problem),
    ))]
async fn renew_certificate(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
) -> Result<(StatusCode, Json<OrderResponse>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        Json(renew(&state, &auth, &key).await?),
    ))
}

/// Queues a manual renewal (or returns the order in flight).
pub(crate) async fn renew(
    state: &AppState,
    auth: &Auth,
    key: &str,
) -> Result<OrderResponse, ApiError> {
    auth.require(CERT_ISSUE)?;
    let cert = find_visible(state, auth, key).await?;
    auth.may_issue(&cert.dns_names)?;
    if cert.state == CertificateState::Retired {
        return Err(ApiError::Conflict("the certificate is retired".into()));
    }
    let account = state.db.account(cert.account_id).await?;
    crate::acme::check_usable(&account).map_err(|e| ApiError::Conflict(e.to_string()))?;
    let order = enqueue(state, &cert, OrderReason::Manual).await?;
    auth.audit_ok(
        state,
        "certificate.renew",
        &format!("certificate:{}", cert.id),
        &format!("order={}", order.id),
    )
    .await?;
    order_response(state, order).await
}

/// Edit a certificate: add or remove names, change the key type, toggle key reuse.
///
/// Names are checked against the account's `allowed_domains` and the caller's scope as on
/// create. A change of names or key type is issued through a new order (202); the current
/// version stays current, and installed, until that order is issued. A key-reuse toggle alone
/// answers 200.
///
/// Scope: `admin`, `operator`, or `issuer` when every name, old and new, is within the
/// token's domain patterns.
#[utoipa::path(patch, path = "/certificates/{certificate}", tag = "certificates",
    params(("certificate" = String, Path, description = "Certificate id or name")),
    request_body = EditCertificateRequest,
    responses(
        (status = 200, description = "Changed; nothing to order", body = CertificateResponse),
        (status = 202, description = "Changed and queued for ordering", body = CertificateResponse),
        (status = 409, description = "Retired, an order is in flight, or the account is not usable", body = Problem),
    ))]
async fn edit_certificate(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
    AppJson(req): AppJson<EditCertificateRequest>,
) -> Result<(StatusCode, Json<CertificateResponse>), ApiError> {
    auth.require(CERT_ISSUE)?;
    let cert = find_visible(&state, &auth, &key).await?;
    auth.may_issue(&cert.dns_names)?;
    if cert.state == CertificateState::Retired {
        return Err(ApiError::Conflict("the certificate is retired".into()));
    }
    let names =
        edited_names(&cert.dns_names, &req.add_dns_names, &req.remove_dns_names).map_err(|e| {
            match e {
                EditError::NotCarried(_) => ApiError::field("remove_dns_names", e.to_string()),
                other => ApiError::field("add_dns_names", other.to_string()),
            }
        })?;
    auth.may_issue(&names)?;
    let account = state.db.account(cert.account_id).await?;
    covered(&account, &names, "add_dns_names")?;
    let key_type = req.key_type.unwrap_or(cert.key_type);
    let reuse_key = req.reuse_key.unwrap_or(cert.reuse_key);
    let reorder = names != cert.dns_names || key_type != cert.key_type;
    if !reorder && reuse_key == cert.reuse_key {
        return Err(ApiError::field(
            "add_dns_names",
            "nothing to change: give names to add or remove, a new key_type or reuse_key",
        ));
    }
    if reorder {
        crate::acme::check_usable(&account).map_err(|e| ApiError::Conflict(e.to_string()))?;
        if state.db.active_order(cert.id).await?.is_some() {
            return Err(ApiError::Conflict(
                "an order is in flight for this certificate; edit it once that order ends".into(),
            ));
        }
    }
    state
        .db
        .edit_certificate(cert.id, &names, key_type, reuse_key, crate::now())
        .await?;
    let cert = state.db.certificate(cert.id).await?;
    let order = if reorder {
        Some(enqueue(&state, &cert, OrderReason::Manual).await?)
    } else {
        None
    };
    auth.audit_ok(
        &state,
        "certificate.edit",
        &format!("certificate:{}", cert.id),
        &format!(
            "names={} key_type={key_type} reuse_key={reuse_key} order={}",
            names.join(","),
            order.as_ref().map_or("-".to_owned(), |o| o.id.to_string())
        ),
    )
    .await?;
    let status = match order {
        Some(_) => StatusCode::ACCEPTED,
        None => StatusCode::OK,
    };
    Ok((status, Json(certificate_response(&state, cert).await?)))
}

/// Revoke the current (or a given) version at the CA.
///
/// Scope: `admin` or `operator`.
#[utoipa::path(post, path = "/certificates/{certificate}/revoke", tag = "certificates",
    params(("certificate" = String, Path, description = "Certificate id or name")),
    request_body = RevokeCertificateRequest,
    responses(
        (status = 200, description = "Revoked", body = VersionResponse),
        (status = 409, description = "No issued version, or already revoked", body = Problem),
        (status = 502, description = "The CA refused", body = Problem),
    ))]
async fn revoke_certificate(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
    AppJson(req): AppJson<RevokeCertificateRequest>,
) -> Result<Json<VersionResponse>, ApiError> {
    Ok(Json(revoke(&state, &auth, &key, &req).await?))
}

/// Revokes a version (the current one unless `req` names another) at the CA; audited either way.
pub(crate) async fn revoke(
    state: &AppState,
    auth: &Auth,
    key: &str,
    req: &RevokeCertificateRequest,
) -> Result<VersionResponse, ApiError> {
    auth.require(OPERATE)?;
    let cert = find_visible(state, auth, key).await?;
    let version = pick_version(state, &cert, req.version_id).await?;
    if version.revoked_at.is_some() {
        return Err(ApiError::Conflict("this version is already revoked".into()));
    }
    let subject = format!("certificate:{}", cert.id);
    let detail = format!("version={} reason={}", version.id, req.reason.code());
    if let Err(e) = crate::engine::revoke_version(state, version.id, req.reason.code()).await {
        let reason = e.to_string();
        auth.audit(
            state,
            "certificate.revoke",
            &subject,
            "failure",
            &format!("{detail}: {reason}"),
        )
        .await?;
        return Err(ApiError::Upstream(reason));
    }
    auth.audit_ok(state, "certificate.revoke", &subject, &detail)
        .await?;
    Ok(state.db.version(version.id).await?.into())
}

/// Retire a certificate: it is no longer renewed.
///
/// Scope: `admin` or `operator`.
#[utoipa::path(post, path = "/certificates/{certificate}/retire", tag = "certificates",
    params(("certificate" = String, Path, description = "Certificate id or name")),
    responses((status = 200, description = "Retired", body = CertificateResponse)))]
async fn retire_certificate(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
) -> Result<Json<CertificateResponse>, ApiError> {
    Ok(Json(retire(&state, &auth, &key).await?))
}

/// Retires a certificate: it is no longer renewed.
pub(crate) async fn retire(
    state: &AppState,
    auth: &Auth,
    key: &str,
) -> Result<CertificateResponse, ApiError> {
    auth.require(OPERATE)?;
    let cert = find_visible(state, auth, key).await?;
    state
        .db
        .set_certificate_state(cert.id, CertificateState::Retired, None, crate::now())
        .await?;
    auth.audit_ok(
        state,
        "certificate.retire",
        &format!("certificate:{}", cert.id),
        "",
    )
    .await?;
    let cert = state.db.certificate(cert.id).await?;
    certificate_response(state, cert).await
}

/// PEM encoding of DER bytes.
fn pem(label: &str, der: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(certkeep_api_types::pem::encode(label, der))
}

/// Download a version: PEM chain, PEM private key, or PFX with a caller-supplied password.
///
/// Scope: the chain needs `admin`, `operator`, `reader` or `issuer` (within its domain
/// patterns); `pem-key` and `pfx` also need `export`, and every release is audited. POST so the
/// PFX password travels in the body, never in a URL.
#[utoipa::path(post, path = "/certificates/{certificate}/download", tag = "certificates",
    params(("certificate" = String, Path, description = "Certificate id or name")),
    request_body = DownloadRequest,
    responses(
        (status = 200, description = "The bundle", content(
            (String = "application/pem-certificate-chain"),
            (String = "application/x-pem-file"),
            (Vec<u8> = "application/x-pkcs12"),
        )),
        (status = 409, description = "No issued version yet", body = Problem),
    ))]
async fn download_certificate(
    State(state): State<AppState>,
    auth: Auth,
    AppPath(key): AppPath<String>,
    AppJson(req): AppJson<DownloadRequest>,
) -> Result<Response, ApiError> {
    auth.require(CERT_READ)?;
    match (req.format, &req.password) {
        (DownloadFormat::Pfx, Some(p)) => validate::secret("password", p)?,
        (DownloadFormat::Pfx, None) => return Err(ApiError::field("password", "required for pfx")),
        (_, Some(_)) => return Err(ApiError::field("password", "only for pfx")),
        (_, None) => {}
    }
    if req.encryption.is_some() && req.format != DownloadFormat::Pfx {
        return Err(ApiError::field("encryption", "only for pfx"));
    }
    let cert = find_visible(&state, &auth, &key).await?;
    let subject = format!("certificate:{}", cert.id);
    if req.format != DownloadFormat::PemChain {
        auth.require_export(&state, &subject).await?;
    }
    let version = pick_version(&state, &cert, req.version_id).await?;
    let file = |ext: &str| format!("attachment; filename=\"{}.{ext}\"", cert.name);
    let (content_type, disposition, body) = match req.format {
        DownloadFormat::PemChain => (
            "application/pem-certificate-chain",
            file("chain.pem"),
            version.chain_pem.into_bytes(),
        ),
        DownloadFormat::PemKey => {
            auth.audit_ok(
                &state,
                "certificate.key_release",
                &subject,
                &format!("format=pem-key version={}", version.id),
            )
            .await?;
            let key = state.db.version_key(&state.secrets, version.id).await?;
            (
                "application/x-pem-file",
                file("key.pem"),
                pem("PRIVATE KEY", &key).as_bytes().to_vec(),
            )
        }
        DownloadFormat::Pfx => {
            let encryption = req.encryption.unwrap_or(PfxEncryption::Legacy);
            auth.audit_ok(
                &state,
                "certificate.key_release",
                &subject,
                &format!(
                    "format=pfx encryption={encryption:?} version={}",
                    version.id
                ),
            )
            .await?;
            let key = state.db.version_key(&state.secrets, version.id).await?;
            let chain: Vec<Vec<u8>> = crate::tls::certs_from_pem("chain", &version.chain_pem)
                .map_err(|e| ApiError::Internal(e.into()))?
                .into_iter()
                .map(|c| c.to_vec())
                .collect();
            let password = req.password.as_deref().unwrap_or_default();
            let pfx = certkeep_api_types::pfx::build_pfx(&key, &chain, password, encryption)
                .map_err(|e| ApiError::Internal(e.into()))?;
            ("application/x-pkcs12", file("pfx"), pfx)
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response())
}
