//! Aggregate reads for the dashboard's overview page, one query each.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Db, Result, on_pool};
use crate::model::{AccountId, CertificateId, CertificateState, OrderId, OrderState};

/// An order that needs a look: failed (and not followed by a successful one), or in flight
/// with an error or for too long.
#[derive(Debug, Clone)]
pub struct TroubledOrder {
    pub id: OrderId,
    pub certificate_id: CertificateId,
    pub certificate_name: String,
    pub state: OrderState,
    pub attempts: i32,
    /// The CA's (or the engine's) own error text.
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct TroubledRow {
    id: Uuid,
    certificate_id: Uuid,
    name: String,
    state: String,
    attempts: i32,
    last_error: Option<String>,
    created_at: OffsetDateTime,
}

/// One certificate's expiry on the timeline, and whether its renewal is failing.
#[derive(Debug, Clone, Copy)]
pub struct ExpiryPoint {
    pub not_after: OffsetDateTime,
    /// Failed renewal attempts, or the certificate is `failing` or `failed`.
    pub failing: bool,
}

impl Db {
    /// How many certificates are in each state (states without any are left out).
    pub async fn certificate_state_counts(&self) -> Result<Vec<(CertificateState, i64)>> {
        const Q: &str = "SELECT state, COUNT(*) FROM certificates GROUP BY state ORDER BY state";
        let rows: Vec<(String, i64)> = on_pool!(self, p => sqlx::query_as(Q).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(s, n)| Ok((s.parse().map_err(super::Error::Corrupt)?, n)))
            .collect()
    }

    /// Orders failed since `failed_since` with no later successful order of their certificate,
    /// and orders in flight that carry an error or were created before `stuck_before`; newest
    /// first, at most `limit`.
    pub async fn troubled_orders(
        &self,
        failed_since: OffsetDateTime,
        stuck_before: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<TroubledOrder>> {
        const Q: &str = "SELECT o.id, o.certificate_id, c.name, o.state, o.attempts, o.last_error, o.created_at FROM orders o JOIN certificates c ON c.id = o.certificate_id WHERE (o.state = 'failed' AND o.finished_at >= $1 AND NOT EXISTS (SELECT 1 FROM orders d WHERE d.certificate_id = o.certificate_id AND d.state = 'done' AND d.created_at > o.created_at)) OR (o.state NOT IN ('done', 'failed') AND (o.last_error IS NOT NULL OR o.created_at < $2)) ORDER BY o.created_at DESC LIMIT $3";
        let rows: Vec<TroubledRow> = on_pool!(self, p => sqlx::query_as(Q)
            .bind(failed_since)
            .bind(stuck_before)
            .bind(limit)
            .fetch_all(p)
            .await)?;
        rows.into_iter()
            .map(|r| {
                Ok(TroubledOrder {
                    id: OrderId(r.id),
                    certificate_id: CertificateId(r.certificate_id),
                    certificate_name: r.name,
                    state: r.state.parse().map_err(super::Error::Corrupt)?,
                    attempts: r.attempts,
                    last_error: r.last_error,
                    created_at: r.created_at,
                })
            })
            .collect()
    }

    /// The current versions of certificates not retired that end in `[from, until)`.
    pub async fn expiries_between(
        &self,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Vec<ExpiryPoint>> {
        const Q: &str = "SELECT current_not_after, consecutive_failures, state FROM certificates WHERE state <> 'retired' AND current_not_after >= $1 AND current_not_after < $2 ORDER BY current_not_after";
        let rows: Vec<(OffsetDateTime, i32, String)> =
            on_pool!(self, p => sqlx::query_as(Q).bind(from).bind(until).fetch_all(p).await)?;
        rows.into_iter()
            .map(|(not_after, failures, state)| {
                let state: CertificateState = state.parse().map_err(super::Error::Corrupt)?;
                Ok(ExpiryPoint {
                    not_after,
                    failing: failures > 0
                        || matches!(state, CertificateState::Failing | CertificateState::Failed),
                })
            })
            .collect()
    }

    /// When each account last had a certificate issued (accounts without any are absent).
    pub async fn accounts_last_issued(&self) -> Result<Vec<(AccountId, OffsetDateTime)>> {
        const Q: &str = "SELECT c.account_id, MAX(v.created_at) FROM certificate_versions v JOIN certificates c ON c.id = v.certificate_id GROUP BY c.account_id";
        let rows: Vec<(Uuid, OffsetDateTime)> =
            on_pool!(self, p => sqlx::query_as(Q).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|(a, t)| (AccountId(a), t)).collect())
    }
}
