//! `certificate_moves`: certificates moving to another ACME account, one unfinished move per
//! certificate (a partial unique index). Every step is a row update, so a restarted server
//! resumes each move where it stopped.

use certkeep_api_types::enums::MoveState;
use time::OffsetDateTime;
use uuid::Uuid;

use super::BeginWrite as _;
use super::{Db, Error, Result, on_pool};
use crate::model::{AccountId, CertificateId, OrderId, VersionId};

/// One move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateMove {
    pub id: Uuid,
    pub certificate_id: CertificateId,
    pub from_account_id: AccountId,
    pub to_account_id: AccountId,
    pub revoke_old: bool,
    pub state: MoveState,
    /// The version current when the move was queued (revoked at the end if `revoke_old`).
    pub old_version_id: Option<VersionId>,
    pub order_id: Option<OrderId>,
    pub new_version_id: Option<VersionId>,
    pub last_error: Option<String>,
    pub started_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// One certificate to move.
#[derive(Debug, Clone, Copy)]
pub struct NewMove {
    pub certificate_id: CertificateId,
    pub from_account_id: AccountId,
    pub old_version_id: Option<VersionId>,
}

#[derive(sqlx::FromRow)]
struct MoveRow {
    id: Uuid,
    certificate_id: Uuid,
    from_account_id: Uuid,
    to_account_id: Uuid,
    revoke_old: bool,
    state: String,
    old_version_id: Option<Uuid>,
    order_id: Option<Uuid>,
    new_version_id: Option<Uuid>,
    last_error: Option<String>,
    started_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl MoveRow {
    fn into_model(self) -> Result<CertificateMove> {
        Ok(CertificateMove {
            id: self.id,
            certificate_id: CertificateId(self.certificate_id),
            from_account_id: AccountId(self.from_account_id),
            to_account_id: AccountId(self.to_account_id),
            revoke_old: self.revoke_old,
            state: self.state.parse().map_err(Error::Corrupt)?,
            old_version_id: self.old_version_id.map(VersionId),
            order_id: self.order_id.map(OrderId),
            new_version_id: self.new_version_id.map(VersionId),
            last_error: self.last_error,
            started_at: self.started_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// `SELECT <every column> FROM certificate_moves <tail>`.
macro_rules! select_moves {
    ($tail:literal) => {
        concat!(
            "SELECT id, certificate_id, from_account_id, to_account_id, revoke_old, state, old_version_id, order_id, new_version_id, last_error, started_at, created_at, updated_at FROM certificate_moves ",
            $tail
        )
    };
}

impl Db {
    /// Queues moves of `moves` to `to`, all or none (a certificate already moving is a
    /// conflict).
    pub async fn queue_moves(
        &self,
        moves: &[NewMove],
        to: AccountId,
        revoke_old: bool,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "INSERT INTO certificate_moves (id, certificate_id, from_account_id, to_account_id, revoke_old, state, old_version_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $7)";
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            for m in moves {
                sqlx::query(Q)
                    .bind(Uuid::now_v7())
                    .bind(m.certificate_id.0)
                    .bind(m.from_account_id.0)
                    .bind(to.0)
                    .bind(revoke_old)
                    .bind(m.old_version_id.map(|v| v.0))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// Every move, newest first (at most `limit`).
    pub async fn moves(&self, limit: i64) -> Result<Vec<CertificateMove>> {
        const Q: &str = select_moves!("ORDER BY created_at DESC, id DESC LIMIT $1");
        let rows: Vec<MoveRow> =
            on_pool!(self, p => sqlx::query_as(Q).bind(limit).fetch_all(p).await)?;
        rows.into_iter().map(MoveRow::into_model).collect()
    }

    /// Unfinished moves in `state`, oldest first.
    pub async fn moves_in(&self, state: MoveState, limit: i64) -> Result<Vec<CertificateMove>> {
        const Q: &str = select_moves!("WHERE state = $1 ORDER BY created_at, id LIMIT $2");
        let rows: Vec<MoveRow> = on_pool!(self, p => sqlx::query_as(Q).bind(state.as_str()).bind(limit).fetch_all(p).await)?;
        rows.into_iter().map(MoveRow::into_model).collect()
    }

    /// Moves started (ordered) since `since`: what the move rate counts.
    pub async fn moves_started_since(&self, since: OffsetDateTime) -> Result<i64> {
        const Q: &str = "SELECT COUNT(*) FROM certificate_moves WHERE started_at >= $1";
        Ok(on_pool!(self, p => sqlx::query_scalar(Q).bind(since).fetch_one(p).await)?)
    }

    /// A queued move starts ordering at `now` (its order is attached next, so a crash in
    /// between finds the order by its account and time instead of placing a second one).
    pub async fn move_started(&self, id: Uuid, now: OffsetDateTime) -> Result<()> {
        const Q: &str = "UPDATE certificate_moves SET state = 'ordering', started_at = $2, updated_at = $2 WHERE id = $1 AND state = 'queued'";
        on_pool!(self, p => sqlx::query(Q).bind(id).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The order of an ordering move.
    pub async fn move_ordered(&self, id: Uuid, order: OrderId, now: OffsetDateTime) -> Result<()> {
        const Q: &str = "UPDATE certificate_moves SET order_id = $2, updated_at = $3 WHERE id = $1 AND state = 'ordering'";
        on_pool!(self, p => sqlx::query(Q).bind(id).bind(order.0).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// A move's order was issued: the certificate belongs to the target account from now on
    /// (its renewals go there), in one transaction with the move's step.
    pub async fn move_issued(
        &self,
        m: &CertificateMove,
        version: VersionId,
        now: OffsetDateTime,
    ) -> Result<()> {
        const MOVE: &str = "UPDATE certificate_moves SET state = 'issued', new_version_id = $2, updated_at = $3 WHERE id = $1 AND state = 'ordering'";
        const CERT: &str = "UPDATE certificates SET account_id = $2, updated_at = $3 WHERE id = $1";
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(MOVE).bind(m.id).bind(version.0).bind(now).execute(&mut *tx).await?;
            sqlx::query(CERT).bind(m.certificate_id.0).bind(m.to_account_id.0).bind(now).execute(&mut *tx).await?;
            tx.commit().await
        })?;
        Ok(())
    }

    /// Ends a move: `done`, or `failed` with `error`.
    pub async fn finish_move(
        &self,
        id: Uuid,
        state: MoveState,
        error: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "UPDATE certificate_moves SET state = $2, last_error = $3, updated_at = $4 WHERE id = $1";
        on_pool!(self, p => sqlx::query(Q).bind(id).bind(state.as_str()).bind(error).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}
