//! Model → wire conversions: every `certkeep_api_types::api` response built from `crate::model`
//! rows. Pure: the caller loads the related rows (current version, order events, assignments)
//! and passes them in. Resource modules import it, never each other.

use certkeep_api_types::api::{
    AccountResponse, AgentResponse, AuditEventResponse, CertificateResponse, DeployedFile,
    DeploymentResponse, EabBinding, OrderEventResponse, OrderResponse, TokenResponse,
    VersionResponse,
};
use certkeep_api_types::target::{ServedName, TargetResponse};

use crate::db::agents::Assignment;
use crate::db::served::Served;
use crate::db::targets::AgentTarget;
use crate::domain::deployments::deployment_state;
use crate::domain::names::to_unicode;
use crate::model::{
    Account, Agent, ApiToken, AuditEvent, Certificate, CertificateVersion, Deployment, Order,
    OrderEvent,
};

impl From<Account> for AccountResponse {
    fn from(a: Account) -> Self {
        AccountResponse {
            id: a.id.0,
            name: a.name,
            directory_url: a.directory_url,
            contact: a.contact,
            allowed_domains: a.allowed_domains,
            external_account_binding: a.eab_kid.is_some(),
            eab: match (&a.eab_kid, a.eab_hmac_held) {
                (None, _) => EabBinding::None,
                (Some(_), true) => EabBinding::Pending,
                (Some(_), false) => EabBinding::Bound,
            },
            state: a.state,
            account_url: a.account_url,
            last_error: a.last_error,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

impl From<CertificateVersion> for VersionResponse {
    fn from(v: CertificateVersion) -> Self {
        VersionResponse {
            id: v.id.0,
            serial: v.serial,
            thumbprint: v.thumbprint,
            dns_names: v.dns_names,
            not_before: v.not_before,
            not_after: v.not_after,
            revoked_at: v.revoked_at,
            revocation_reason: v.revocation_reason,
            created_at: v.created_at,
        }
    }
}

/// The wire form of a certificate; `current` is its current version, if it has one.
pub(super) fn certificate_response(
    c: Certificate,
    current: Option<CertificateVersion>,
) -> CertificateResponse {
    CertificateResponse {
        id: c.id.0,
        display_names: c.dns_names.iter().map(|n| to_unicode(n)).collect(),
        dns_names: c.dns_names,
        key_type: c.key_type,
        account_id: c.account_id.0,
        state: c.state,
        renew_fraction: c.policy.fraction,
        renew_days: c.policy.days,
        reuse_key: c.reuse_key,
        renew_after: c.renew_after,
        consecutive_failures: c.consecutive_failures,
        last_error: c.last_error,
        created_by: c.created_by,
        created_at: c.created_at,
        updated_at: c.updated_at,
        name: c.name,
        current_version: current.map(Into::into),
    }
}

/// The wire form of an order with its events.
pub(super) fn order_response(o: Order, events: Vec<OrderEvent>) -> OrderResponse {
    OrderResponse {
        id: o.id.0,
        reason: o.reason,
        state: o.state,
        attempts: o.attempts,
        next_attempt_at: o.next_attempt_at,
        deadline_at: o.deadline_at,
        last_error: o.last_error,
        created_at: o.created_at,
        finished_at: o.finished_at,
        events: events
            .into_iter()
            .map(|e| OrderEventResponse {
                at: e.at,
                kind: e.kind,
                detail: e.detail,
            })
            .collect(),
    }
}

/// One entry per assignment, with its files, deployment state and what its probes saw served.
pub(super) fn deployment_responses(
    assignments: &[Assignment],
    files: &[Deployment],
    served: &[Served],
) -> Vec<DeploymentResponse> {
    assignments
        .iter()
        .map(|a| {
            let mine: Vec<&Deployment> = files
                .iter()
                .filter(|d| d.agent_id == a.agent_id && d.certificate_id == a.certificate_id)
                .collect();
            DeploymentResponse {
                agent_id: a.agent_id.0,
                agent_name: a.agent_name.clone(),
                certificate_id: a.certificate_id.0,
                certificate_name: a.certificate_name.clone(),
                state: deployment_state(a.current_thumbprint.as_deref(), &mine),
                current_thumbprint: a.current_thumbprint.clone(),
                files: mine
                    .into_iter()
                    .map(|d| DeployedFile {
                        target: d.target.clone(),
                        file_name: d.file_name.clone(),
                        thumbprint: d.thumbprint.clone(),
                        status: d.status,
                        error: d.error.clone(),
                        reported_at: d.reported_at,
                    })
                    .collect(),
                served: served
                    .iter()
                    .filter(|s| s.agent_id == a.agent_id && s.certificate_id == a.certificate_id)
                    .map(|s| ServedName {
                        target: s.target.clone(),
                        address: s.address.clone(),
                        name: s.name.clone(),
                        status: s.status,
                        thumbprint: s.thumbprint.clone(),
                        error: s.error.clone(),
                        probed_at: s.probed_at,
                        pending_since: s.pending_since,
                        lagging_at: s.lagging_at,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The wire form of an agent with its deployments.
pub(super) fn agent_response(a: Agent, certificates: Vec<DeploymentResponse>) -> AgentResponse {
    AgentResponse {
        id: a.id.0,
        name: a.name,
        state: a.state,
        join_token_expires_at: a.join_token_expires_at,
        client_cert_not_after: a.cert_not_after,
        pfx_encryption: a.pfx_mode,
        last_seen_at: a.last_seen_at,
        os_name: a.os_name,
        os_build: a.os_build,
        agent_version: a.agent_version,
        last_report_errors: a.last_report_errors,
        certificates,
    }
}

impl From<ApiToken> for TokenResponse {
    fn from(t: ApiToken) -> Self {
        TokenResponse {
            id: t.id.0,
            name: t.name,
            scopes: t.scopes,
            domain_patterns: t.domain_patterns,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
            created_by: t.created_by,
            created_at: t.created_at,
        }
    }
}

impl From<AuditEvent> for AuditEventResponse {
    fn from(e: AuditEvent) -> Self {
        AuditEventResponse {
            seq: e.seq,
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            subject: e.subject,
            source: e.source,
            outcome: e.outcome,
            detail: e.detail,
        }
    }
}

/// The wire form of a deployment target.
pub(super) fn target_response(t: AgentTarget) -> TargetResponse {
    TargetResponse {
        id: t.id,
        agent_id: t.agent_id.0,
        name: t.name,
        settings: t.settings,
        probe: t.probe,
        created_at: t.created_at,
    }
}

/// The host's enroll command for the agent listener at `agent_url`. The token is read from a
/// file, never from the command line.
pub(super) fn enroll_command(agent_url: &str) -> String {
    format!(
        "certkeep-agent enroll --server {agent_url} --ca-file ca.pem --token-file join-token.txt"
    )
}
