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
