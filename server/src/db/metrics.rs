//! Aggregate reads for `/metrics`, computed at scrape time so no series outlives its row.

use time::OffsetDateTime;

use super::{Db, Result, on_pool};

/// Expiry and renewal timing of one certificate that is not retired.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CertificateTiming {
    pub name: String,
    pub state: String,
    /// End of the current version, once issued.
    pub not_after: Option<OffsetDateTime>,
    /// When renewal is due.
    pub renew_after: Option<OffsetDateTime>,
    pub consecutive_failures: i32,
}

impl Db {
    /// Timing of every certificate that is not retired, by name.
    pub async fn certificate_timings(&self) -> Result<Vec<CertificateTiming>> {
        const Q: &str = "SELECT c.name, c.state, v.not_after, c.renew_after, c.consecutive_failures FROM certificates c LEFT JOIN certificate_versions v ON v.id = c.current_version_id WHERE c.state <> 'retired' ORDER BY c.name";
        Ok(on_pool!(self, p => sqlx::query_as(Q).fetch_all(p).await)?)
    }

    /// Orders in flight whose next attempt is due: work the engine has not picked up yet.
    pub async fn jobs_waiting(&self, now: OffsetDateTime) -> Result<i64> {
        const Q: &str = "SELECT COUNT(*) FROM orders WHERE state NOT IN ('done', 'failed') AND next_attempt_at <= $1";
        Ok(on_pool!(self, p => sqlx::query_scalar(Q).bind(now).fetch_one(p).await)?)
    }
}
