//! Periodic scans: `certificate.expiring` (the tightest threshold a current version crossed,
//! once per threshold and version), `agent.stale` (once per silence), and each digest
//! subscription's daily digest at the configured local time (once per local day, whichever
//! server gets there first).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::events;
use crate::app::AppState;
use crate::domain::notify::{self as rules, EventSubject, Subscription};
use crate::model::CertificateId;
use crate::now;

/// How far ahead a digest lists expiring certificates.
const DIGEST_HORIZON_DAYS: i64 = 30;

/// Scans until shutdown.
pub(super) async fn run(state: AppState, shutdown: CancellationToken) {
    let every = Duration::from_secs(state.config.notifications.scan_interval_secs);
    while !shutdown.is_cancelled() {
        if let Err(e) = scan_once(&state, now()).await {
            tracing::warn!(error = %e, "notification scan failed");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// One pass of every scan at `t`.
pub async fn scan_once(state: &AppState, t: time::OffsetDateTime) -> Result<(), crate::db::Error> {
    expiring(state, t).await?;
    stale_agents(state, t).await?;
    digests(state, t).await
}

async fn expiring(state: &AppState, t: time::OffsetDateTime) -> Result<(), crate::db::Error> {
    let thresholds = &state.config.notifications.expiring_days;
    let Some(widest) = thresholds.iter().max() else {
        return Ok(());
    };
    let db = &state.db;
    for v in db
        .versions_ending(t, t + time::Duration::days(i64::from(*widest)))
        .await?
    {
        let Some(days) = rules::expiring_threshold(v.not_after, t, thresholds) else {
            continue;
        };
        let cert = db.certificate(CertificateId(v.certificate_id)).await?;
        let event = events::expiring(&cert, v.version_id, &v.dns_names, v.not_after, days, t);
        if db.enqueue_event(&event).await? {
            tracing::info!(certificate = %cert.name, days, "certificate.expiring raised");
        }
    }
    Ok(())
}

fn stale_before(state: &AppState, t: time::OffsetDateTime) -> time::OffsetDateTime {
    let n = &state.config.notifications;
    let silence = n
        .agent_interval_secs
        .saturating_mul(u64::from(n.stale_agent_factor));
    t - time::Duration::seconds(i64::try_from(silence).unwrap_or(i64::MAX / 2))
}

async fn stale_agents(state: &AppState, t: time::OffsetDateTime) -> Result<(), crate::db::Error> {
    for agent in state.db.stale_agents(stale_before(state, t)).await? {
        if state
            .db
            .enqueue_event(&events::agent_stale(&agent, t))
            .await?
        {
            tracing::info!(agent = %agent.agent_name, "agent.stale raised");
        }
    }
    Ok(())
}

/// Names that agents' probes found lagging (`served_names.lagging_at`), with their certificate.
async fn lagging_deployments(
    state: &AppState,
) -> Result<Vec<(crate::db::served::Served, crate::model::Certificate)>, crate::db::Error> {
    let mut lagging = Vec::new();
    for s in state.db.served(None, None).await? {
        if s.lagging_at.is_some() {
            let cert = state.db.certificate(s.certificate_id).await?;
            lagging.push((s, cert));
        }
    }
    Ok(lagging)
}

async fn digests(state: &AppState, t: time::OffsetDateTime) -> Result<(), crate::db::Error> {
    let (at, offset) = state
        .config
        .notifications
        .digest_at()
        .map_err(|e| crate::db::Error::Corrupt(e.to_string()))?;
    let local = t.to_offset(offset);
    if local.time() < at {
        return Ok(());
    }
    let subscriptions: Vec<Subscription> = state
        .db
        .subscriptions()
        .await?
        .into_iter()
        .filter(|s| s.digest)
        .collect();
    if subscriptions.is_empty() {
        return Ok(());
    }
    let day = local.date().to_string();
    let ending = state
        .db
        .versions_ending(t, t + time::Duration::days(DIGEST_HORIZON_DAYS))
        .await?;
    let failing = state.db.failing_certificates().await?;
    let stale = state.db.stale_agents(stale_before(state, t)).await?;
    let lagging = lagging_deployments(state).await?;
    for sub in subscriptions {
        let mut lines = Vec::new();
        for v in &ending {
            let subject = EventSubject {
                certificate_id: Some(v.certificate_id),
                account_id: Some(v.account_id),
                agent_id: None,
                dns_names: v.dns_names.clone(),
            };
            if sub.covers(&subject) {
                lines.push(format!(
                    "expires {}: {} ({})",
                    v.not_after.date(),
                    v.certificate_name,
                    v.dns_names.join(", ")
                ));
            }
        }
        for f in &failing {
            let subject = EventSubject {
                certificate_id: Some(f.certificate_id),
                account_id: Some(f.account_id),
                agent_id: None,
                dns_names: f.dns_names.clone(),
            };
            if sub.covers(&subject) {
                lines.push(format!(
                    "renewal failing: {} ({}): {}",
                    f.certificate_name,
                    f.dns_names.join(", "),
                    f.last_error.as_deref().unwrap_or("no error recorded")
                ));
            }
        }
        for a in &stale {
            let subject = EventSubject {
                agent_id: Some(a.agent_id),
                ..EventSubject::default()
            };
            if sub.covers(&subject) {
                lines.push(format!(
                    "agent stale: {} (last poll {})",
                    a.agent_name, a.last_seen_at
                ));
            }
        }
        for (s, cert) in &lagging {
            let subject = EventSubject {
                certificate_id: Some(cert.id.0),
                account_id: Some(cert.account_id.0),
                agent_id: Some(s.agent_id.0),
                dns_names: vec![s.name.clone()],
            };
            if sub.covers(&subject) {
                lines.push(format!(
                    "deployment lagging: {} at {} (target {}) is {}, not the current version of {}",
                    s.name, s.address, s.target, s.status, cert.name
                ));
            }
        }
        if (lines.is_empty() && !sub.digest_when_empty)
            || !state.db.take_digest_day(sub.id, &day).await?
        {
            continue;
        }
        state
            .db
            .enqueue_event(&events::digest(sub.id, &day, &lines, t))
            .await?;
        tracing::info!(subscription = %sub.name, items = lines.len(), "digest enqueued");
    }
    Ok(())
}
