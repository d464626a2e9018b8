//! The agent listener (mTLS): enrollment, client-certificate renewal, manifest, PFX delivery and
//! deployment reports. An agent sees only what is assigned to it; everything else is 404.
//! Errors go through the API's one problem+json mapping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use certkeep_api_types::agent::{
    ENROLL_PATH, EnrollRequest, EnrollResponse, MANIFEST_PATH, Manifest, ManifestEntry,
    PFX_PASSWORD_PATH, PKCS12_MEDIA_TYPE, PROBE_REPORT_PATH, PfxPassword, ProbeReport, RENEW_PATH,
    REPORT_PATH, RenewRequest, Report, TargetSpec,
};
use certkeep_api_types::pfx;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::app::AppState;
use crate::bootstrap::token_hash;
use crate::db::agents::ManifestSource;
use crate::db::deployments::NewDeployment;
use crate::db::served::{NewServed, Served};
use crate::db::targets::AgentTarget;
use crate::model::{AgentId, CertificateId, DeploymentStatus, NewAuditEvent};
use cache::CachedManifest;

pub mod cache;
mod enroll_limit;
mod identity;
mod pfx_cache;

pub use cache::AgentCache;
pub use enroll_limit::EnrollLimiter;
pub use identity::AgentIdentity;
use pfx_cache::PfxCache;

/// Most files one report may list.
const MAX_REPORTED_FILES: usize = 10_000;

/// The agent listener's router. Starts the task auditing denied enrollments, which ends with
/// the router.
pub fn router(state: AppState) -> Router {
    let limits = &state.config.listeners;
    let limiter = Arc::new(EnrollLimiter::new(
        limits.enroll_failures_per_window,
        Duration::from_secs(limits.enroll_window_secs),
    ));
    enroll_limit::spawn_reporter(&limiter, state.db.clone());
    cache::spawn_listener(&state.agent_cache, state.db.clone());
    Router::new()
        .route(ENROLL_PATH, post(enroll).layer(Extension(limiter)))
        .route(RENEW_PATH, post(renew))
        .route(MANIFEST_PATH, get(manifest))
        .route(
            "/agent/v1/certificates/{id}/pfx",
            get(download_pfx).layer(Extension(Arc::new(PfxCache::new(&state.config.pfx_cache)))),
        )
        .route(PFX_PASSWORD_PATH, get(pfx_password))
        .route(PROBE_REPORT_PATH, post(probe_report))
        .route(REPORT_PATH, post(report))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

async fn audit(
    state: &AppState,
    actor: String,
    action: &str,
    subject: String,
    source: SocketAddr,
    outcome: &str,
    detail: String,
) -> Result<(), ApiError> {
    state
        .db
        .append_audit(
            &NewAuditEvent {
                actor,
                action: action.into(),
                subject,
                source: Some(source.ip().to_string()),
                outcome: outcome.into(),
                detail,
            },
            crate::now(),
        )
        .await?;
    Ok(())
}

/// Audits a successful `action` of the agent `agent` on `subject`.
async fn audit_agent_success(
    state: &AppState,
    agent: AgentId,
    action: &str,
    subject: String,
    source: SocketAddr,
    detail: String,
) -> Result<(), ApiError> {
    audit(
        state,
        format!("agent:{agent}"),
        action,
        subject,
        source,
        "success",
        detail,
    )
    .await
}

fn issued(
    state: &AppState,
    agent: AgentId,
    csr_pem: &str,
) -> Result<(EnrollResponse, String), ApiError> {
    let now = crate::now();
    let cert = state
        .ca
        .issue_agent_cert(agent, csr_pem, state.config.agents.cert_days, now)
        .map_err(|e| ApiError::field("csr_pem", e.to_string()))?;
    Ok((
        EnrollResponse {
            agent_id: agent.0,
            certificate_pem: cert.cert_pem,
            ca_pem: state.ca.cert_pem().to_owned(),
            not_after: cert.not_after,
        },
        cert.serial,
    ))
}

/// `POST /agent/v1/enroll`: a one-time join token and a CSR buy a client certificate. Refused
/// tokens are limited and audited per source ([`EnrollLimiter`]).
async fn enroll(
    State(state): State<AppState>,
    Extension(limiter): Extension<Arc<EnrollLimiter>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<EnrollResponse>, ApiError> {
    if !limiter.admit(source.ip(), Instant::now()) {
        return Err(ApiError::TooManyRequests);
    }
    let req: EnrollRequest = parse_json(&body)?;
    let now = crate::now();
    // Validate the CSR before consuming the token, so a typo does not burn it.
    certkeep_csr_check(&req.csr_pem)?;
    let Some(agent) = state
        .db
        .consume_join_token(&token_hash(req.token.trim()), now)
        .await?
    else {
        if limiter.record_denied(source.ip(), Instant::now()) {
            audit(
                &state,
                "anonymous".into(),
                "agent.enroll",
                "agent:unknown".into(),
                source,
                "denied",
                "unknown, used or expired join token".into(),
            )
            .await?;
        }
        return Err(ApiError::Unauthorized);
    };
    let (response, serial) = issued(&state, agent, &req.csr_pem)?;
    state
        .db
        .activate_agent(agent, &serial, response.not_after, now)
        .await?;
    audit_agent_success(
        &state,
        agent,
        "agent.enroll",
        format!("agent:{agent}"),
        source,
        format!("client certificate serial {serial}"),
    )
    .await?;
    tracing::info!(agent.id = %agent, certificate.serial = %serial, "agent enrolled");
    Ok(Json(response))
}

fn certkeep_csr_check(csr_pem: &str) -> Result<(), ApiError> {
    rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map(drop)
        .map_err(|e| {
            ApiError::field(
                "csr_pem",
                format!("not a valid PEM certificate signing request: {e}"),
            )
        })
}

/// `POST /agent/v1/renew`: a new client certificate for the calling agent.
async fn renew(
    State(state): State<AppState>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    agent: AgentIdentity,
    body: Bytes,
) -> Result<Json<EnrollResponse>, ApiError> {
    let req: RenewRequest = parse_json(&body)?;
    certkeep_csr_check(&req.csr_pem)?;
    let (response, serial) = issued(&state, agent.id, &req.csr_pem)?;
    match state
        .db
        .renew_agent_cert(
            agent.id,
            &agent.serial,
            &serial,
            response.not_after,
            crate::now(),
        )
        .await
    {
        Ok(()) => {}
        // Revoked, re-enrolled or renewed from another certificate since the identity check.
        Err(crate::db::Error::NotFound) => return Err(ApiError::Unauthorized),
        Err(e) => return Err(e.into()),
    }
    audit_agent_success(
        &state,
        agent.id,
        "agent.renew",
        format!("agent:{}", agent.id),
        source,
        format!(
            "client certificate serial {serial}, renewed from serial {} (accepted until {serial} is first used)",
            agent.serial
        ),
    )
    .await?;
    Ok(Json(response))
}

fn chain_der(chain_pem: &str) -> Result<Vec<Vec<u8>>, ApiError> {
    crate::tls::certs_from_pem("stored chain", chain_pem)
        .map(|certs| certs.into_iter().map(|c| c.to_vec()).collect())
        .map_err(|e| ApiError::Internal(e.into()))
}

/// Everything a manifest is made of: three queries, and per certificate two more only while a
/// rollout guard applies (a change window for this agent, or canaries anywhere).
struct ManifestParts {
    sources: Vec<ManifestSource>,
    targets: Vec<AgentTarget>,
    /// `(certificate, target id)` of the assignments that name their targets.
    pairs: Vec<(CertificateId, Uuid)>,
    /// Why a certificate's current version waits, by certificate; `None` when no rollout
    /// guard applies (then the manifest depends on stored rows only, and may be cached).
    holds: Option<Vec<(CertificateId, String)>>,
}

impl ManifestParts {
    async fn load(state: &AppState, agent: AgentId) -> Result<Self, ApiError> {
        let sources = state.db.manifest_sources(agent).await?;
        let holds = holds(state, agent, &sources).await?;
        Ok(Self {
            sources,
            targets: state.db.targets(agent).await?,
            pairs: state.db.assignment_targets(agent).await?,
            holds,
        })
    }

    fn hold_of(&self, certificate: CertificateId) -> Option<String> {
        self.holds
            .iter()
            .flatten()
            .find(|(c, _)| *c == certificate)
            .map(|(_, why)| why.clone())
    }

    /// Names of the targets `certificate` goes to: those its assignment names, else all.
    fn targets_of(&self, certificate: CertificateId) -> Vec<String> {
        let named: Vec<Uuid> = self
            .pairs
            .iter()
            .filter(|(c, _)| *c == certificate)
            .map(|(_, t)| *t)
            .collect();
        self.targets
            .iter()
            .filter(|t| named.is_empty() || named.contains(&t.id))
            .map(|t| t.name.clone())
            .collect()
    }
}

/// The certificates whose current version waits for this agent (`domain::rollout`); `None`
/// when no rollout guard applies to it.
async fn holds(
    state: &AppState,
    agent: AgentId,
    sources: &[ManifestSource],
) -> Result<Option<Vec<(CertificateId, String)>>, ApiError> {
    use crate::domain::rollout::{ChangeWindow, Rollout, hold};

    let settings = state.db.rollout(agent).await?;
    let window: Option<ChangeWindow> = settings
        .change_window
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| ApiError::Internal(anyhow::anyhow!(e)))?;
    let canaries = !settings.canary && state.db.any_canary().await?;
    if window.is_none() && !canaries {
        return Ok(None);
    }
    let margin = time::Duration::days(
        i64::try_from(state.config.deployment.window_margin_days).unwrap_or(i64::MAX / 86_400),
    );
    let now = crate::now();
    let mut holds = Vec::new();
    for s in sources {
        let versions = state.db.versions(s.certificate_id).await?;
        let replaced_not_after = versions
            .iter()
            .skip_while(|v| v.id != s.version_id)
            .nth(1)
            .map(|v| v.not_after);
        let canaries_serving = !canaries
            || state
                .db
                .canaries_serving(s.certificate_id, &s.thumbprint)
                .await?;
        let rollout = Rollout {
            window: window.as_ref(),
            canary: settings.canary,
            replaced_not_after,
            margin,
            canaries_serving,
        };
        if let Some(why) = hold(&rollout, now) {
            holds.push((s.certificate_id, why.to_string()));
        }
    }
    Ok(Some(holds))
}

/// The manifest body from its parts (no X.509 parsing: the file names come from the SANs
/// stored with each version).
fn build_manifest(
    agent: &AgentIdentity,
    parts: ManifestParts,
    probe_interval_secs: u64,
) -> Result<Manifest, ApiError> {
    let certificates = parts
        .sources
        .iter()
        .cloned()
        .map(|s| {
            let file_names = pfx::ccs_file_names_for(s.dns_names.iter().map(String::as_str))
                .map_err(|e| ApiError::Internal(e.into()))?;
            Ok(ManifestEntry {
                download_path: format!("/agent/v1/certificates/{}/pfx", s.certificate_id),
                certificate_id: s.certificate_id.0,
                certificate_name: s.certificate_name,
                version_id: s.version_id.0,
                thumbprint: s.thumbprint,
                serial: s.serial,
                not_after: s.not_after,
                file_names,
                targets: parts.targets_of(s.certificate_id),
                dns_names: s.dns_names,
                hold: parts.hold_of(s.certificate_id),
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Manifest {
        agent_id: agent.id.0,
        pfx_encryption: agent.agent.pfx_mode,
        certificates,
        targets: parts
            .targets
            .into_iter()
            .map(|t| TargetSpec {
                name: t.name,
                settings: t.settings,
                probe: t.probe,
            })
            .collect(),
        probe_interval_secs,
    })
}

/// The manifest as served: its JSON, and an ETag derived from those bytes alone, so the ETag
/// changes exactly when the body does.
fn served_manifest(manifest: &Manifest) -> Result<CachedManifest, ApiError> {
    let body = serde_json::to_vec(manifest).map_err(|e| ApiError::Internal(e.into()))?;
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..16]));
    Ok(CachedManifest {
        etag: HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.into()))?,
        body: Bytes::from(body),
    })
}

/// The agent's manifest: from the cache, else built and (without a rollout guard) cached.
async fn current_manifest(
    state: &AppState,
    agent: &AgentIdentity,
) -> Result<Arc<CachedManifest>, ApiError> {
    let cache = &state.agent_cache;
    if let Some(cached) = cache.manifest(agent.id) {
        return Ok(cached);
    }
    let ticket = cache.ticket();
    let parts = ManifestParts::load(state, agent.id).await?;
    let cacheable = parts.holds.is_none();
    let probe_interval_secs = state.config.deployment.probe_interval_secs;
    let built = Arc::new(served_manifest(&build_manifest(
        agent,
        parts,
        probe_interval_secs,
    )?)?);
    if cacheable {
        cache.put_manifest(ticket, &agent.agent, built.clone());
    }
    Ok(built)
}

/// `GET /agent/v1/manifest`: what this agent must have, with an ETag. A conditional request
/// answered from the cache runs no query and serializes nothing.
async fn manifest(
    State(state): State<AppState>,
    agent: AgentIdentity,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let manifest = current_manifest(&state, &agent).await?;
    let etag = manifest.etag.as_bytes();
    let unchanged = headers.get(header::IF_NONE_MATCH).is_some_and(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == etag)
    });
    if unchanged {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, manifest.etag.clone())],
        )
            .into_response());
    }
    Ok((
        [
            (header::ETAG, manifest.etag.clone()),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        manifest.body.clone(),
    )
        .into_response())
}

/// `GET /agent/v1/certificates/{id}/pfx`: the current version as PFX, with the agent's
/// password and encryption mode, built once per agent and version ([`PfxCache`]). Every pull
/// is audited.
async fn download_pfx(
    State(state): State<AppState>,
    Extension(cache): Extension<Arc<PfxCache>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    agent: AgentIdentity,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&id)
        .map(CertificateId)
        .map_err(|_| ApiError::NotFound)?;
    let source = state
        .db
        .pfx_source(agent.id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let bundle = cache.pfx(&state, &source).await?;
    audit_agent_success(
        &state,
        agent.id,
        "certificate.pfx_pull",
        format!("certificate:{id}"),
        client,
        format!(
            "version {} thumbprint {}",
            source.version_id, source.thumbprint
        ),
    )
    .await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(PKCS12_MEDIA_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        bundle,
    )
        .into_response())
}

/// `GET /agent/v1/pfx-password`: the agent's PFX (CCS) password, which opens its downloads.
/// Audited like a PFX pull; the agent asks only when it has something to download.
async fn pfx_password(
    State(state): State<AppState>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    agent: AgentIdentity,
) -> Result<Response, ApiError> {
    let password = state
        .db
        .agent_ccs_password(&state.secrets, agent.id)
        .await?;
    audit_agent_success(
        &state,
        agent.id,
        "agent.pfx_password",
        format!("agent:{}", agent.id),
        source,
        String::new(),
    )
    .await?;
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(PfxPassword {
            password: password.to_string(),
        }),
    )
        .into_response())
}

/// Most probe results one report may list.
const MAX_PROBES_PER_REPORT: usize = 10_000;

/// `POST /agent/v1/probe-report`: what the agent's probes saw served. Each result is judged
/// against the certificate's versions (serving, stale, wrong, unreachable) and replaces the
/// agent's earlier results; names not serving the current version
/// `deployment.lagging_minutes` after they were first seen so are marked lagging.
async fn probe_report(
    State(state): State<AppState>,
    agent: AgentIdentity,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let report: ProbeReport = parse_json(&body)?;
    if report.probes.len() > MAX_PROBES_PER_REPORT {
        return Err(ApiError::field(
            "probes",
            format!("at most {MAX_PROBES_PER_REPORT} probes per report"),
        ));
    }
    let now = crate::now();
    let mut versions = std::collections::HashMap::new();
    for cert in state.db.assigned_certificates(agent.id).await? {
        let mut thumbprints: Vec<(bool, String)> = Vec::new();
        for v in state.db.versions(cert.id).await? {
            thumbprints.push((Some(v.id) == cert.current_version_id, v.thumbprint));
        }
        versions.insert(cert.id, thumbprints);
    }
    let mut judged = Vec::new();
    for p in &report.probes {
        let Some(thumbprints) = versions.get(&CertificateId(p.certificate_id)) else {
            continue;
        };
        let Some((_, current)) = thumbprints.iter().find(|(is_current, _)| *is_current) else {
            continue;
        };
        let earlier: Vec<String> = thumbprints
            .iter()
            .filter(|(is_current, _)| !is_current)
            .map(|(_, t)| t.clone())
            .collect();
        judged.push(NewServed {
            certificate_id: CertificateId(p.certificate_id),
            target: &p.target,
            address: &p.address,
            name: &p.name,
            status: crate::domain::targets::served_status(
                p.thumbprint.as_deref(),
                current,
                &earlier,
            ),
            thumbprint: p.thumbprint.as_deref(),
            error: p.error.as_deref(),
            expected: current,
        });
    }
    state.db.record_probes(agent.id, &judged, now).await?;
    let threshold = time::Duration::minutes(
        i64::try_from(state.config.deployment.lagging_minutes).unwrap_or(i64::MAX / 60),
    );
    // The certificates probed, for the `deployment.lagging` events written with the mark.
    let mut probed = std::collections::HashMap::new();
    for p in &judged {
        if let std::collections::hash_map::Entry::Vacant(e) = probed.entry(p.certificate_id) {
            e.insert(state.db.certificate(p.certificate_id).await?);
        }
    }
    let lagging = state
        .db
        .mark_lagging(agent.id, now - threshold, now, |s| {
            let cert = probed.get(&s.certificate_id)?;
            Some(crate::notify::events::deployment_lagging(
                cert,
                cert.current_version_id?.0,
                &format!("{} ({} {})", agent.agent.name, s.address, s.name),
                Some(agent.id.0),
                &format!("{} is {} (target {})", s.name, s.status, s.target),
                now,
            ))
        })
        .await?;
    deployment_lagging(&state, &agent, &lagging).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Names found lagging: not serving the current version `deployment.lagging_minutes` after
/// they were first seen not serving it (recorded in `served_names.lagging_at`, once per
/// version). Audited as `deployment.lagging` and logged; the one place to raise the
/// `deployment.lagging` notification from.
async fn deployment_lagging(
    state: &AppState,
    agent: &AgentIdentity,
    lagging: &[Served],
) -> Result<(), ApiError> {
    for s in lagging {
        tracing::warn!(
            agent.id = %agent.id,
            certificate.id = %s.certificate_id,
            target = %s.target,
            address = %s.address,
            name = %s.name,
            status = %s.status,
            "deployment lagging: the current version is not served"
        );
        state
            .db
            .append_audit(
                &NewAuditEvent {
                    actor: format!("agent:{}", agent.id),
                    action: "deployment.lagging".into(),
                    subject: format!("certificate:{}", s.certificate_id),
                    source: None,
                    outcome: "failure".into(),
                    detail: format!(
                        "{} at {} (target {}) is {} since {}, expected {}",
                        s.name,
                        s.address,
                        s.target,
                        s.status,
                        s.pending_since
                            .and_then(|t| t
                                .format(&time::format_description::well_known::Rfc3339)
                                .ok())
                            .unwrap_or_default(),
                        s.expected
                    ),
                },
                crate::now(),
            )
            .await?;
    }
    Ok(())
}

/// One `agent.install_failed` event per certificate with a file that failed in this report but
/// not in the one before (a host failing at every poll is reported once, until it recovers).
fn install_failures(
    agent: &AgentIdentity,
    certs: &[crate::model::Certificate],
    before: &[crate::model::Deployment],
    files: &[NewDeployment<'_>],
    now: time::OffsetDateTime,
) -> Vec<crate::db::notify::NewEvent> {
    let mut raised: Vec<CertificateId> = Vec::new();
    let mut events = Vec::new();
    for f in files
        .iter()
        .filter(|f| f.status == DeploymentStatus::Failed)
    {
        let failed_before = before.iter().any(|d| {
            d.certificate_id == f.certificate_id
                && d.target == f.target
                && d.file_name == f.file_name
                && d.status == DeploymentStatus::Failed
        });
        let Some(cert) = certs.iter().find(|c| c.id == f.certificate_id) else {
            continue;
        };
        if failed_before || raised.contains(&cert.id) {
            continue;
        }
        raised.push(cert.id);
        events.push(crate::notify::events::agent_install_failed(
            agent.id.0,
            &agent.agent.name,
            cert,
            &format!(
                "{} (target {}): {}",
                f.file_name,
                f.target,
                f.error.unwrap_or("failed")
            ),
            now,
        ));
    }
    events
}

/// `POST /agent/v1/report`: what the agent installed.
async fn report(
    State(state): State<AppState>,
    agent: AgentIdentity,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let report: Report = parse_json(&body)?;
    if report.files.len() > MAX_REPORTED_FILES {
        return Err(ApiError::field(
            "files",
            format!("at most {MAX_REPORTED_FILES} files per report"),
        ));
    }
    let now = crate::now();
    let certs = state.db.assigned_certificates(agent.id).await?;
    let assigned: Vec<CertificateId> = certs.iter().map(|c| c.id).collect();
    let before = state.db.deployments(Some(agent.id), None).await?;
    let files: Vec<NewDeployment<'_>> = report
        .files
        .iter()
        .filter(|f| assigned.contains(&CertificateId(f.certificate_id)))
        .map(|f| NewDeployment {
            certificate_id: CertificateId(f.certificate_id),
            target: f.target.as_deref().unwrap_or_default(),
            file_name: &f.file_name,
            thumbprint: f.thumbprint.as_deref(),
            status: f.status,
            error: f.error.as_deref(),
        })
        .collect();
    let events = install_failures(&agent, &certs, &before, &files, now);
    state
        .db
        .record_deployments(agent.id, &files, &report.errors, &events, now)
        .await?;
    state
        .db
        .touch_agent(
            agent.id,
            &report.os_name,
            &report.os_build,
            &report.agent_version,
            now,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
