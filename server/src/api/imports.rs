//! `/api/v1/certificates/import`: certificates obtained elsewhere (bought by hand, issued by
//! an old connector) brought under certkeep with their key, which is sealed like any other.
//! The import is audited (names, serial, thumbprint; never the key).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use certkeep_api_types::api::CertificateResponse;
use certkeep_api_types::lifecycle::ImportCertificateRequest;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zeroize::Zeroizing;

use super::auth::{Auth, CERT_ISSUE};
use super::convert;
use super::error::{ApiError, Problem};
use super::extract::AppJson;
use super::lookup::issuing_account;
use super::validate;
use crate::app::AppState;
use crate::db::certificates::NewCertificate;
use crate::db::versions::NewVersion;
use crate::domain::lifecycle::check_import;
use crate::domain::names::normalize_all;
use crate::domain::renewal;
use crate::model::{CertificateId, RenewalPolicy, VersionId};

/// Largest PEM chain, PEM key and base64 PKCS#12 accepted (as documented in the spec).
const MAX_CHAIN: usize = 64 * 1024;
const MAX_KEY: usize = 16 * 1024;
const MAX_PFX_BASE64: usize = 128 * 1024;

/// Routes of this resource.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(import_certificate))
}

/// The chain (PEM, leaf first) and the PKCS#8 key of the request, from PEM or PKCS#12.
fn material(req: &ImportCertificateRequest) -> Result<(String, Zeroizing<Vec<u8>>), ApiError> {
    match (
        &req.chain_pem,
        &req.key_pem,
        &req.pfx_base64,
        &req.pfx_password,
    ) {
        (Some(chain), Some(key), None, None) => {
            if chain.len() > MAX_CHAIN {
                return Err(ApiError::field("chain_pem", "at most 64 KiB"));
            }
            if key.len() > MAX_KEY {
                return Err(ApiError::field("key_pem", "at most 16 KiB"));
            }
            let pem = x509_parser::pem::Pem::iter_from_buffer(key.as_bytes())
                .next()
                .and_then(Result::ok)
                .filter(|p| p.label == "PRIVATE KEY")
                .ok_or_else(|| {
                    ApiError::field("key_pem", "not a PKCS#8 PEM key (BEGIN PRIVATE KEY)")
                })?;
            Ok((chain.clone(), Zeroizing::new(pem.contents)))
        }
        (None, None, Some(pfx), Some(password)) => {
            if pfx.len() > MAX_PFX_BASE64 {
                return Err(ApiError::field("pfx_base64", "at most 128 KiB"));
            }
            validate::secret("pfx_password", password)?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(pfx.trim())
                .map_err(|_| ApiError::field("pfx_base64", "not base64"))?;
            let opened = certkeep_api_types::pfx::open_pfx(&der, password)
                .map_err(|e| ApiError::field("pfx_base64", e.to_string()))?;
            let chain = std::iter::once(&opened.leaf_der)
                .chain(&opened.chain_der)
                .map(|d| certkeep_api_types::pem::encode("CERTIFICATE", d))
                .collect();
            Ok((chain, opened.key_pkcs8_der))
        }
        _ => Err(ApiError::field(
            "chain_pem",
            "give chain_pem with key_pem, or pfx_base64 with pfx_password",
        )),
    }
}

/// Import a certificate with its private key.
///
/// Checks: the key matches the leaf, the chain builds (each certificate signed by the next),
/// the leaf is not expired, and every name is within the account's `allowed_domains`. The
/// certificate is then `valid`, delivered to its agents and renewed as usual.
///
/// Scope: `admin`, `operator`, or `issuer` when every name is within the token's patterns.
#[utoipa::path(post, path = "/certificates/import", tag = "certificates", request_body = ImportCertificateRequest, responses(
    (status = 201, description = "Imported; the version is current", body = CertificateResponse),
    (status = 409, description = "The name is taken", body = Problem),
))]
async fn import_certificate(
    State(state): State<AppState>,
    auth: Auth,
    AppJson(req): AppJson<ImportCertificateRequest>,
) -> Result<(StatusCode, Json<CertificateResponse>), ApiError> {
    auth.require(CERT_ISSUE)?;
    validate::name("name", &req.name)?;
    let (chain_pem, key) = material(&req)?;
    let now = crate::now();
    let field = if req.pfx_base64.is_some() {
        "pfx_base64"
    } else {
        "chain_pem"
    };
    let (leaf, key_type, key) =
        check_import(&chain_pem, &key, now).map_err(|e| ApiError::field(field, e))?;
    let names = normalize_all(&leaf.dns_names)?;
    auth.may_issue(&names)?;
    let account = issuing_account(&state, &req.account, &names, field).await?;
    let policy = RenewalPolicy::default();
    let renew_after = renewal::renew_at(
        leaf.not_before,
        leaf.not_after,
        &policy,
        state.config.engine.renew_fraction,
        rand::random(),
    );
    let actor = auth.actor();
    let version_id = VersionId::new();
    let cert = state
        .db
        .import_certificate(
            &state.secrets,
            &NewCertificate {
                name: &req.name,
                dns_names: &names,
                key_type,
                account_id: account.id,
                policy,
                created_by: Some(&actor),
            },
            &NewVersion {
                id: version_id,
                certificate_id: CertificateId::new(),
                order_id: None,
                chain_pem: &chain_pem,
                key_pkcs8_der: &key,
                serial: &leaf.serial,
                thumbprint: &leaf.thumbprint,
                dns_names: &leaf.dns_names,
                not_before: leaf.not_before,
                not_after: leaf.not_after,
            },
            renew_after,
            now,
        )
        .await?;
    auth.audit_ok(
        &state,
        "certificate.import",
        &format!("certificate:{}", cert.id),
        &format!(
            "name={} names={} serial={} thumbprint={} version={version_id}",
            cert.name,
            names.join(","),
            leaf.serial,
            leaf.thumbprint
        ),
    )
    .await?;
    let version = state.db.version(version_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(convert::certificate_response(cert, Some(version))),
    ))
}
