//! ACME Renewal Information (RFC 9773), continuously: every current certificate's
//! `renewalInfo` is read again after the CA's `Retry-After` (clamped to
//! `[lifecycle.ari_min_poll_secs, ari_max_poll_secs]`). When the suggested window changes, the
//! renewal time is picked again uniformly inside it (clamped so it is never later than the
//! policy's time), and a window already in the past makes the certificate due at once: the
//! scheduler queues the renewal in the same scan, and the renewal order sends `replaces`.
//! Without `renewalInfo` the lifetime rule set at issuance stands. Every poll goes through the
//! account's HTTP client, so through its directory's rate gate (a 429 pauses polls and orders
//! of that directory alike).

use std::time::Duration;

use super::{EngineError, Shared};
use crate::acme::{AcmeError, ari_cert_id};
use crate::db::lifecycle::{AriPoll, DueVersion};
use crate::domain::{issuance, renewal};
use crate::now;

/// Most certificates polled per scan.
const BATCH: i64 = 200;

/// Polls every certificate whose renewal information is due.
pub(super) async fn poll_due(shared: &Shared) -> Result<(), crate::db::Error> {
    for due in shared.state.db.ari_polls_due(now(), BATCH).await? {
        if let Err(e) = poll(shared, due).await {
            tracing::warn!(certificate.id = %due.certificate_id, error = %e, "cannot read the CA's renewal information");
            // Looked at again after the CA's wait (a 429's Retry-After), at least the shortest
            // poll gap, keeping the window last seen.
            let wait = match &e {
                EngineError::Acme(a) => a.retry_after().unwrap_or(Duration::ZERO),
                EngineError::Storage(_) => Duration::ZERO,
            };
            let db = &shared.state.db;
            let previous = db.ari_poll(due.version_id).await?;
            let t = now();
            let poll = AriPoll {
                window: previous.and_then(|p| p.window),
                polled_at: t,
                next_poll_at: t + shared.state.config.lifecycle.ari_poll_after(wait),
            };
            db.record_ari_poll(due.certificate_id, due.version_id, &poll, None)
                .await?;
        }
    }
    Ok(())
}

/// Reads one certificate's renewal information and moves its renewal time if the window
/// changed.
async fn poll(shared: &Shared, due: DueVersion) -> Result<(), EngineError> {
    let db = &shared.state.db;
    let config = &shared.state.config;
    let cert = db.certificate(due.certificate_id).await?;
    let account = db.account(cert.account_id).await?;
    let issuer = shared.issuer(&account).await?;
    let t = now();
    let max_gap = Duration::from_secs(config.lifecycle.ari_max_poll_secs);
    if !issuer.supports_renewal_info() {
        // The lifetime rule stands; the directory is looked at again after the longest gap.
        let poll = AriPoll {
            window: None,
            polled_at: t,
            next_poll_at: t + max_gap,
        };
        db.record_ari_poll(cert.id, due.version_id, &poll, None)
            .await?;
        return Ok(());
    }
    let version = db.version(due.version_id).await?;
    let leaf = issuance::parse_chain(&version.chain_pem).map_err(AcmeError::Internal)?;
    let window = issuer.renewal_window(&ari_cert_id(&leaf.leaf_der)?).await?;
    let previous = db.ari_poll(version.id).await?.and_then(|p| p.window);
    // Whole seconds, as stored on every backend, so an unchanged window compares equal.
    let whole = |t: time::OffsetDateTime| t.replace_nanosecond(0).unwrap_or(t);
    let seen = (whole(window.start), whole(window.end));
    let applies = renewal::ari_window_applies(seen.1, version.not_before);
    if !applies {
        tracing::warn!(certificate.id = %cert.id, window.end = %window.end, "the CA's renewal window ended before this certificate began; ignored");
    }
    let renew_after = (applies && previous != Some(seen)).then(|| {
        let by_policy = renewal::renew_at(
            version.not_before,
            version.not_after,
            &cert.policy,
            config.engine.renew_fraction,
            rand::random(),
        );
        renewal::ari_renew_at(
            window.start,
            window.end,
            rand::random(),
            version.not_before,
            by_policy,
        )
    });
    let poll = AriPoll {
        window: Some(seen),
        polled_at: t,
        next_poll_at: t + config.lifecycle.ari_poll_after(window.retry_after),
    };
    db.record_ari_poll(cert.id, version.id, &poll, renew_after)
        .await?;
    if let Some(at) = renew_after {
        tracing::info!(certificate.id = %cert.id, window.start = %window.start, window.end = %window.end, renew_after = %at, now = at <= t, "the CA's renewal window changed; renewal time picked inside it");
    }
    Ok(())
}
