//! The renewal scheduler: runs the lifecycle scans (ARI, CRLs, moves, lapsing validations),
//! then queues a renewal for every certificate whose renewal time has come and a re-issuance
//! for every revoked one, unless an order is already in flight (the database allows one per
//! certificate, so several processes may scan at once).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::model::{CertificateState, OrderReason};
use crate::now;

/// Most certificates queued per scan.
const BATCH: i64 = 200;

/// Scans every `renewal_scan_secs` until shutdown.
pub(super) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let every = Duration::from_secs(shared.state.config.engine.renewal_scan_secs.max(1));
    while !shutdown.is_cancelled() {
        if let Err(e) = scan(&shared).await {
            tracing::warn!(error = %e, "renewal scan failed");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// Reads the CA's renewal information and the CRLs that are due, advances the moves to other
/// accounts, reports lapsing domain validations, then queues the orders that are due now (an ARI window in the past, or a
/// revocation found, is due in this scan).
async fn scan(shared: &Shared) -> Result<(), crate::db::Error> {
    if let Err(e) = super::ari::poll_due(shared).await {
        tracing::warn!(error = %e, "renewal information scan failed");
    }
    if let Err(e) = super::crl::check_due(shared).await {
        tracing::warn!(error = %e, "revocation scan failed");
    }
    if let Err(e) = super::moves::advance(shared).await {
        tracing::warn!(error = %e, "move scan failed");
    }
    if let Err(e) = super::ledger::note_lapsing(shared).await {
        tracing::warn!(error = %e, "domain validation scan failed");
    }
    let db = &shared.state.db;
    let t = now();
    let deadline = t + Duration::from_secs(shared.state.config.engine.order_deadline_secs);
    for due in db.renewals_due(t, BATCH).await? {
        let reason = match due.state {
            CertificateState::Revoked => OrderReason::Reissue,
            _ => OrderReason::Renewal,
        };
        let order = db
            .enqueue_order(due.certificate_id, due.account_id, reason, deadline, t)
            .await?;
        tracing::info!(certificate.id = %due.certificate_id, order.id = %order.id, reason = %reason, "renewal queued");
        shared.state.wake.notify_one();
    }
    Ok(())
}
