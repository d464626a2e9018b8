//! Moves of certificates to another ACME account (another CA endpoint), driven by the
//! scheduler from the rows of `certificate_moves`, so a restart resumes every move where it
//! stopped. Queued moves start at `lifecycle.move_orders_per_minute`: each is ordered under the
//! target account (the old version stays current and installed until the new one is issued);
//! once issued the certificate belongs to the target account; with `revoke_old` the previous
//! version is revoked (`superseded`) only after every active agent assigned the certificate
//! reported the new thumbprint in all its files.

use std::time::Duration;

use certkeep_api_types::enums::MoveState;

use super::Shared;
use crate::db::moves::CertificateMove;
use crate::domain::lifecycle::installed_everywhere;
use crate::model::{AgentState, CertificateState, OrderReason, OrderState};
use crate::now;

/// Most moves looked at per state and scan.
const BATCH: i64 = 200;
/// RFC 5280 `superseded`.
const SUPERSEDED: u8 = 4;

/// One step of every unfinished move.
pub(super) async fn advance(shared: &Shared) -> Result<(), crate::db::Error> {
    start_queued(shared).await?;
    follow_orders(shared).await?;
    revoke_replaced(shared).await
}

/// Orders queued moves under their target account, within the per-minute rate.
async fn start_queued(shared: &Shared) -> Result<(), crate::db::Error> {
    let db = &shared.state.db;
    let t = now();
    let rate = i64::from(shared.state.config.lifecycle.move_orders_per_minute);
    let started = db
        .moves_started_since(t - time::Duration::minutes(1))
        .await?;
    let budget = (rate - started).clamp(0, BATCH);
    if budget == 0 {
        return Ok(());
    }
    for mut m in db.moves_in(MoveState::Queued, budget).await? {
        let cert = db.certificate(m.certificate_id).await?;
        if cert.state == CertificateState::Retired {
            db.finish_move(
                m.id,
                MoveState::Failed,
                Some("the certificate is retired"),
                t,
            )
            .await?;
            continue;
        }
        db.move_started(m.id, t).await?;
        m.started_at = Some(t);
        attach_order(shared, &m).await?;
    }
    Ok(())
}

/// Gives an ordering move its order under the target account: the one placed since the move
/// started (a crash came between placing and recording it), or a new one. A renewal in flight
/// under the old account is waited for.
async fn attach_order(shared: &Shared, m: &CertificateMove) -> Result<(), crate::db::Error> {
    let db = &shared.state.db;
    let t = now();
    let started = m.started_at.unwrap_or(t);
    let placed = db
        .orders_for(m.certificate_id)
        .await?
        .into_iter()
        .find(|o| o.account_id == m.to_account_id && o.created_at >= started);
    let order = match placed {
        Some(order) => order,
        None => {
            let deadline = t + Duration::from_secs(shared.state.config.engine.order_deadline_secs);
            let order = db
                .enqueue_order(
                    m.certificate_id,
                    m.to_account_id,
                    OrderReason::Manual,
                    deadline,
                    t,
                )
                .await?;
            if order.account_id != m.to_account_id {
                return Ok(());
            }
            shared.state.wake.notify_one();
            order
        }
    };
    db.move_ordered(m.id, order.id, t).await?;
    tracing::info!(certificate.id = %m.certificate_id, order.id = %order.id, "move ordered under the target account");
    Ok(())
}

/// Moves whose order ended: issued (the certificate now belongs to the target account), or
/// failed (the old version stays current).
async fn follow_orders(shared: &Shared) -> Result<(), crate::db::Error> {
    let db = &shared.state.db;
    for m in db.moves_in(MoveState::Ordering, BATCH).await? {
        let Some(order_id) = m.order_id else {
            attach_order(shared, &m).await?;
            continue;
        };
        let order = db.order(order_id).await?;
        let t = now();
        match order.state {
            OrderState::Done => {
                let cert = db.certificate(m.certificate_id).await?;
                let Some(version) = cert.current_version_id else {
                    continue;
                };
                db.move_issued(&m, version, t).await?;
                if !m.revoke_old || m.old_version_id.is_none() {
                    db.finish_move(m.id, MoveState::Done, None, t).await?;
                }
            }
            OrderState::Failed => {
                let error = order.last_error.as_deref().unwrap_or("the order failed");
                db.finish_move(m.id, MoveState::Failed, Some(error), t)
                    .await?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Revokes the old versions of issued moves once every assigned agent reported the new one.
async fn revoke_replaced(shared: &Shared) -> Result<(), crate::db::Error> {
    let db = &shared.state.db;
    for m in db.moves_in(MoveState::Issued, BATCH).await? {
        if !installed(shared, &m).await? {
            continue;
        }
        let Some(old) = m.old_version_id else {
            continue;
        };
        match super::revoke_version(&shared.state, old, SUPERSEDED).await {
            Ok(()) => db.finish_move(m.id, MoveState::Done, None, now()).await?,
            Err(e) => {
                tracing::warn!(certificate.id = %m.certificate_id, error = %e, "cannot revoke the moved certificate's old version; retried");
            }
        }
    }
    Ok(())
}

/// Whether every active agent assigned the certificate reports the move's new version.
async fn installed(shared: &Shared, m: &CertificateMove) -> Result<bool, crate::db::Error> {
    let db = &shared.state.db;
    let Some(new) = m.new_version_id else {
        return Ok(false);
    };
    let thumbprint = db.version(new).await?.thumbprint;
    let agents: Vec<_> = db
        .assignments(None, Some(m.certificate_id))
        .await?
        .into_iter()
        .filter(|a| a.agent_state == AgentState::Active)
        .map(|a| a.agent_id)
        .collect();
    let reported: Vec<_> = db
        .deployments(None, Some(m.certificate_id))
        .await?
        .into_iter()
        .map(|d| (d.agent_id, d.thumbprint))
        .collect();
    Ok(installed_everywhere(&agents, &reported, &thumbprint))
}
