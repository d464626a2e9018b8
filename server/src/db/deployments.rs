//! `deployments`: the files each agent last reported, per certificate. A report replaces the
//! agent's previous rows as a whole.

use time::OffsetDateTime;
use uuid::Uuid;

use super::BeginWrite as _;
use super::agents::one_row;
use super::notify::{NewEvent, Outbox as _};
use super::{Db, Result, on_pool, to_json};
use crate::model::{AgentId, CertificateId, Deployment, DeploymentStatus};

/// One file of a report.
pub struct NewDeployment<'a> {
    pub certificate_id: CertificateId,
    pub target: &'a str,
    pub file_name: &'a str,
    pub thumbprint: Option<&'a str>,
    pub status: DeploymentStatus,
    pub error: Option<&'a str>,
}

#[derive(sqlx::FromRow)]
struct DeploymentRow {
    agent_id: Uuid,
    certificate_id: Uuid,
    target: String,
    file_name: String,
    thumbprint: Option<String>,
    status: String,
    error: Option<String>,
    reported_at: OffsetDateTime,
}

impl TryFrom<DeploymentRow> for Deployment {
    type Error = super::Error;

    fn try_from(r: DeploymentRow) -> Result<Self> {
        Ok(Deployment {
            agent_id: AgentId(r.agent_id),
            certificate_id: CertificateId(r.certificate_id),
            target: r.target,
            file_name: r.file_name,
            thumbprint: r.thumbprint,
            status: r.status.parse().map_err(super::Error::Corrupt)?,
            error: r.error,
            reported_at: r.reported_at,
        })
    }
}

/// `SELECT <every model column> FROM deployments <tail>`.
macro_rules! select_deployments {
    ($tail:literal) => {
        concat!(
            "SELECT agent_id, certificate_id, target, file_name, thumbprint, status, error, reported_at FROM deployments ",
            $tail
        )
    };
}

impl Db {
    /// Replaces the agent's deployment rows with one report and stores its general errors, in
    /// one transaction. Every `certificate_id` must exist (callers drop unknown ones first).
    pub async fn record_deployments(
        &self,
        agent: AgentId,
        files: &[NewDeployment<'_>],
        errors: &[String],
        events: &[NewEvent],
        now: OffsetDateTime,
    ) -> Result<()> {
        const CLEAR: &str = "DELETE FROM deployments WHERE agent_id = $1";
        const INSERT: &str = "INSERT INTO deployments (agent_id, certificate_id, target, file_name, thumbprint, status, error, reported_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (agent_id, certificate_id, target, file_name) DO UPDATE SET thumbprint = excluded.thumbprint, status = excluded.status, error = excluded.error, reported_at = excluded.reported_at";
        const ERRORS: &str =
            "UPDATE agents SET last_report_errors = $2, last_seen_at = $3 WHERE id = $1";
        let updated = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(CLEAR).bind(agent.0).execute(&mut *tx).await?;
            for f in files {
                sqlx::query(INSERT)
                    .bind(agent.0)
                    .bind(f.certificate_id.0)
                    .bind(f.target)
                    .bind(f.file_name)
                    .bind(f.thumbprint)
                    .bind(f.status.as_str())
                    .bind(f.error)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            let updated = sqlx::query(ERRORS).bind(agent.0).bind(to_json(&errors)).bind(now).execute(&mut *tx).await?.rows_affected();
            for e in events {
                tx.enqueue_event(e).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(updated)
        })?;
        one_row(updated)
    }

    /// Reported files, optionally for one agent or one certificate.
    pub async fn deployments(
        &self,
        agent: Option<AgentId>,
        certificate: Option<CertificateId>,
    ) -> Result<Vec<Deployment>> {
        const Q: &str = select_deployments!(
            "WHERE ($1 IS NULL OR agent_id = $1) AND ($2 IS NULL OR certificate_id = $2) ORDER BY target, file_name"
        );
        let rows: Vec<DeploymentRow> = on_pool!(self, p => sqlx::query_as(Q)
            .bind(agent.map(|a| a.0))
            .bind(certificate.map(|c| c.0))
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(TryInto::try_into).collect()
    }
}
