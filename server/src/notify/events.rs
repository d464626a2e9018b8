//! The events certkeep raises, built from what the caller already holds, ready for
//! [`crate::db::notify::Outbox::enqueue_event`] inside the caller's transaction.

use certkeep_api_types::notification::{NotificationEvent, NotificationPayload};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::notify::{NewEvent, StaleAgent};
use crate::domain::notify::{EventSubject, certificate_words};
use crate::model::Certificate;

fn payload(kind: NotificationEvent, now: OffsetDateTime) -> NotificationPayload {
    NotificationPayload {
        id: Uuid::now_v7(),
        kind,
        occurred_at: now,
        summary: String::new(),
        next_step: String::new(),
        fix: String::new(),
        dns_names: Vec::new(),
        certificate_id: None,
        certificate_name: None,
        account_id: None,
        account_name: None,
        agent_id: None,
        agent_name: None,
        detail: None,
    }
}

fn routed(payload: NotificationPayload, dedupe_key: Option<String>) -> NewEvent {
    NewEvent {
        subject: EventSubject {
            certificate_id: payload.certificate_id,
            account_id: payload.account_id,
            agent_id: payload.agent_id,
            dns_names: payload.dns_names.clone(),
        },
        subscription_id: None,
        dedupe_key,
        payload,
    }
}

/// An event about a certificate and the names it carries (`names`: the version's SANs, or the
/// requested names before the first version). `detail` is the error, the days left or the
/// revocation reason.
pub fn certificate(
    kind: NotificationEvent,
    cert: &Certificate,
    names: &[String],
    detail: Option<&str>,
    dedupe_key: Option<String>,
    now: OffsetDateTime,
) -> NewEvent {
    let words = certificate_words(kind, &cert.name, detail.unwrap_or_default());
    let mut p = payload(kind, now);
    p.summary = words.summary;
    p.next_step = words.next_step;
    p.fix = words.fix;
    p.dns_names = names.to_vec();
    p.certificate_id = Some(cert.id.0);
    p.certificate_name = Some(cert.name.clone());
    p.account_id = Some(cert.account_id.0);
    p.detail = detail.map(str::to_owned);
    routed(p, dedupe_key)
}

/// `certificate.expiring` for the current version `version`, crossing the `days` threshold;
/// raised once per threshold and version.
pub fn expiring(
    cert: &Certificate,
    version: Uuid,
    names: &[String],
    not_after: OffsetDateTime,
    days: u32,
    now: OffsetDateTime,
) -> NewEvent {
    let left = not_after - now;
    let detail = if left < time::Duration::days(1) {
        format!("{} hours (on {not_after})", left.whole_hours().max(0))
    } else {
        format!("{} days (on {not_after})", left.whole_days())
    };
    certificate(
        NotificationEvent::CertificateExpiring,
        cert,
        names,
        Some(&detail),
        Some(format!("expiring:{version}:{days}")),
        now,
    )
}

/// `agent.stale`, once per silence (keyed by the agent's last poll).
pub fn agent_stale(agent: &StaleAgent, now: OffsetDateTime) -> NewEvent {
    let mut p = payload(NotificationEvent::AgentStale, now);
    p.summary = format!(
        "Agent {} has not polled since {}",
        agent.agent_name, agent.last_seen_at
    );
    p.next_step = "Renewed certificates do not reach this host until it polls again.".into();
    p.fix = format!(
        "check the certkeep-agent service on the host, then: certkeep agent show {}",
        agent.agent_name
    );
    p.agent_id = Some(agent.agent_id);
    p.agent_name = Some(agent.agent_name.clone());
    let key = format!(
        "agent.stale:{}:{}",
        agent.agent_id,
        agent.last_seen_at.unix_timestamp()
    );
    routed(p, Some(key))
}

/// `agent.install_failed`: an agent reported that it could not install `certificate` (hook for
/// the agent report handler: `tx.enqueue_event(&events::agent_install_failed(..))`).
pub fn agent_install_failed(
    agent_id: Uuid,
    agent_name: &str,
    cert: &Certificate,
    detail: &str,
    now: OffsetDateTime,
) -> NewEvent {
    let mut p = payload(NotificationEvent::AgentInstallFailed, now);
    p.summary = format!(
        "Agent {agent_name} could not install certificate {}: {detail}",
        cert.name
    );
    p.next_step = "The agent keeps the previous files and tries again at its next poll.".into();
    p.fix = format!("fix the host, then check: certkeep agent show {agent_name}");
    p.dns_names = cert.dns_names.clone();
    p.certificate_id = Some(cert.id.0);
    p.certificate_name = Some(cert.name.clone());
    p.account_id = Some(cert.account_id.0);
    p.agent_id = Some(agent_id);
    p.agent_name = Some(agent_name.to_owned());
    p.detail = Some(detail.to_owned());
    routed(p, None)
}

/// `deployment.lagging`: `host` still serves or holds an older version of `cert` than
/// `version` some time after the renewal; raised once per host and version.
pub fn deployment_lagging(
    cert: &Certificate,
    version: Uuid,
    host: &str,
    agent_id: Option<Uuid>,
    detail: &str,
    now: OffsetDateTime,
) -> NewEvent {
    let mut p = payload(NotificationEvent::DeploymentLagging, now);
    p.summary = format!(
        "{host} still has an older version of certificate {}: {detail}",
        cert.name
    );
    p.next_step = "The old version keeps working until it expires; certkeep keeps checking.".into();
    p.fix = format!("certkeep cert show {}", cert.name);
    p.dns_names = cert.dns_names.clone();
    p.certificate_id = Some(cert.id.0);
    p.certificate_name = Some(cert.name.clone());
    p.account_id = Some(cert.account_id.0);
    p.agent_id = agent_id;
    p.detail = Some(detail.to_owned());
    routed(p, Some(format!("deployment.lagging:{host}:{version}")))
}

/// `domain.validation_lapsing`: the CA's validation of `domain` for an account ends at
/// `lapses_at`; raised once per account, domain and end.
pub fn domain_validation_lapsing(
    account_id: Uuid,
    account_name: &str,
    domain: &str,
    lapses_at: OffsetDateTime,
    now: OffsetDateTime,
) -> NewEvent {
    let mut p = payload(NotificationEvent::DomainValidationLapsing, now);
    p.summary = format!(
        "The validation of {domain} for ACME account {account_name} lapses on {}",
        lapses_at.date()
    );
    p.next_step = "Orders for this name need a new validation after that date.".into();
    p.fix = format!("renew the domain validation at the CA for {domain}");
    p.dns_names = vec![domain.to_owned()];
    p.account_id = Some(account_id);
    p.account_name = Some(account_name.to_owned());
    let key = format!(
        "validation_lapsing:{account_id}:{domain}:{}",
        lapses_at.unix_timestamp()
    );
    routed(p, Some(key))
}

/// `account.problem`: the CA refused the account (EAB, authorization) or cannot be used.
pub fn account_problem(
    account_id: Uuid,
    account_name: &str,
    detail: &str,
    now: OffsetDateTime,
) -> NewEvent {
    let mut p = payload(NotificationEvent::AccountProblem, now);
    p.summary = format!("ACME account {account_name} has a problem: {detail}");
    p.next_step = "Orders through this account fail until it is fixed.".into();
    p.fix =
        format!("check the EAB credentials at the CA, then: certkeep account show {account_name}");
    p.account_id = Some(account_id);
    p.account_name = Some(account_name.to_owned());
    p.detail = Some(detail.to_owned());
    routed(p, None)
}

/// `audit.chain_broken`: verification found the audit log altered at `seq`.
pub fn audit_chain_broken(seq: i64, reason: &str, now: OffsetDateTime) -> NewEvent {
    let mut p = payload(NotificationEvent::AuditChainBroken, now);
    p.summary = format!("The audit log's hash chain is broken at event {seq}: {reason}");
    p.next_step =
        "certkeep keeps appending; the altered rows stay as they are for inspection.".into();
    p.fix = "compare with a backup, then: certkeep audit verify --local".into();
    p.detail = Some(reason.to_owned());
    routed(p, Some(format!("audit.chain_broken:{seq}")))
}

/// The daily digest of one subscription (`lines`: one per item), addressed to it alone.
pub fn digest(subscription: Uuid, day: &str, lines: &[String], now: OffsetDateTime) -> NewEvent {
    let mut p = payload(NotificationEvent::Digest, now);
    p.summary = if lines.is_empty() {
        format!("certkeep digest for {day}: nothing to report")
    } else {
        format!(
            "certkeep digest for {day}: {} items need attention",
            lines.len()
        )
    };
    p.next_step = "certkeep keeps renewing and retrying on its own.".into();
    p.fix = "certkeep cert list".into();
    p.detail = (!lines.is_empty()).then(|| lines.join("\n"));
    NewEvent {
        subject: EventSubject::default(),
        subscription_id: Some(subscription),
        dedupe_key: Some(format!("digest:{subscription}:{day}")),
        payload: p,
    }
}

/// The test message of `certkeep notify test`.
pub fn test(channel: &str, now: OffsetDateTime) -> NotificationPayload {
    let mut p = payload(NotificationEvent::Test, now);
    p.summary = format!("Test message from certkeep to channel {channel}");
    p.next_step = "Nothing: this only checks that the channel works.".into();
    p.fix = "certkeep notify list --state failed".into();
    p
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::model::{AccountId, CertificateId, CertificateState, KeyType, RenewalPolicy};

    fn cert() -> Certificate {
        let at = datetime!(2026-03-01 12:00 UTC);
        Certificate {
            id: CertificateId(Uuid::from_u128(1)),
            name: "www".into(),
            dns_names: vec!["www.med.example.edu".into()],
            key_type: KeyType::EcdsaP256,
            account_id: AccountId(Uuid::from_u128(2)),
            policy: RenewalPolicy::default(),
            state: CertificateState::Valid,
            current_version_id: None,
            renew_after: None,
            reuse_key: false,
            consecutive_failures: 0,
            last_error: None,
            created_by: None,
            created_at: at,
            updated_at: at,
        }
    }

    /// The hooks other detectors call route by the same subject fields as everything else.
    #[test]
    fn hook_events_carry_their_routing_subject_and_dedupe_key() {
        let now = datetime!(2026-03-01 12:00 UTC);
        let failed =
            agent_install_failed(Uuid::from_u128(9), "web1", &cert(), "access denied", now);
        assert_eq!(failed.subject.agent_id, Some(Uuid::from_u128(9)));
        assert_eq!(
            failed.subject.dns_names,
            vec!["www.med.example.edu".to_owned()]
        );
        assert!(failed.payload.summary.contains("web1") && failed.payload.summary.contains("www"));
        let v = Uuid::from_u128(5);
        let lag = deployment_lagging(&cert(), v, "web1.example.edu", None, "30 minutes", now);
        assert_eq!(
            lag.dedupe_key.as_deref(),
            Some(format!("deployment.lagging:web1.example.edu:{v}").as_str())
        );
        assert_eq!(lag.subject.certificate_id, Some(Uuid::from_u128(1)));
        let lapse = domain_validation_lapsing(
            Uuid::from_u128(2),
            "acme",
            "med.example.edu",
            now + time::Duration::days(10),
            now,
        );
        assert_eq!(
            lapse.payload.kind,
            NotificationEvent::DomainValidationLapsing
        );
        assert_eq!(lapse.subject.account_id, Some(Uuid::from_u128(2)));
        assert!(lapse.dedupe_key.is_some());
    }
}
