//! `agent_rollout`: each agent's change window and canary flag, and whether the canaries of a
//! certificate serve its current version.

use uuid::Uuid;

use super::{Db, Result, on_pool};
use crate::model::{AgentId, CertificateId};

/// An agent's rollout settings; the default (no row) is no window, not a canary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentRollout {
    /// As written, e.g. `Sat 02:00-04:00 +01:00` (checked by `domain::rollout` before storing).
    pub change_window: Option<String>,
    pub canary: bool,
}

#[derive(sqlx::FromRow)]
struct RolloutRow {
    change_window: Option<String>,
    canary: bool,
}

impl Db {
    /// The agent's rollout settings.
    pub async fn rollout(&self, agent: AgentId) -> Result<AgentRollout> {
        const Q: &str = "SELECT change_window, canary FROM agent_rollout WHERE agent_id = $1";
        let row: Option<RolloutRow> =
            on_pool!(self, p => sqlx::query_as(Q).bind(agent.0).fetch_optional(p).await)?;
        Ok(row.map_or_else(AgentRollout::default, |r| AgentRollout {
            change_window: r.change_window,
            canary: r.canary,
        }))
    }

    /// Replaces the agent's rollout settings.
    pub async fn set_rollout(&self, agent: AgentId, rollout: &AgentRollout) -> Result<()> {
        const Q: &str = "INSERT INTO agent_rollout (agent_id, change_window, canary) VALUES ($1, $2, $3) ON CONFLICT (agent_id) DO UPDATE SET change_window = excluded.change_window, canary = excluded.canary";
        on_pool!(self, p => sqlx::query(Q)
            .bind(agent.0)
            .bind(rollout.change_window.as_deref())
            .bind(rollout.canary)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        // Whether any agent is a canary decides the holds of every other agent.
        self.agent_changed(super::agent_changes::AgentChange::All);
        Ok(())
    }

    /// True when some agent is a canary.
    pub async fn any_canary(&self) -> Result<bool> {
        const Q: &str = "SELECT agent_id FROM agent_rollout WHERE canary LIMIT 1";
        let found: Option<Uuid> =
            on_pool!(self, p => sqlx::query_scalar(Q).fetch_optional(p).await)?;
        Ok(found.is_some())
    }

    /// True when every canary agent the certificate is assigned to has a probe that saw
    /// `thumbprint` served (true when it has no canaries).
    pub async fn canaries_serving(
        &self,
        certificate: CertificateId,
        thumbprint: &str,
    ) -> Result<bool> {
        const Q: &str = "SELECT r.agent_id FROM agent_rollout r JOIN agent_assignments a ON a.agent_id = r.agent_id AND a.certificate_id = $1 WHERE r.canary AND NOT EXISTS (SELECT 1 FROM served_names s WHERE s.agent_id = r.agent_id AND s.certificate_id = $1 AND s.status = 'serving' AND s.thumbprint = $2)";
        let waiting: Vec<Uuid> = on_pool!(self, p => sqlx::query_scalar(Q)
            .bind(certificate.0)
            .bind(thumbprint)
            .fetch_all(p)
            .await)?;
        Ok(waiting.is_empty())
    }
}
