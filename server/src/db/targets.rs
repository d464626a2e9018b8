//! `agent_targets` and `assignment_targets`: where each agent installs certificates, and which
//! targets each assignment goes to (none listed: every target of the agent).

use certkeep_api_types::target::TargetSettings;
use time::OffsetDateTime;
use uuid::Uuid;

use super::BeginWrite as _;
use super::agent_changes::AgentChange;
use super::{Db, Error, Result, from_json, on_pool, to_json};
use crate::model::{AgentId, CertificateId};

/// A deployment target of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTarget {
    pub id: Uuid,
    pub agent_id: AgentId,
    pub name: String,
    pub settings: TargetSettings,
    /// `host:port` probe addresses; empty for none.
    pub probe: Vec<String>,
    pub created_at: OffsetDateTime,
}

/// What is needed to create a target.
pub struct NewTarget<'a> {
    pub agent_id: AgentId,
    pub name: &'a str,
    pub settings: &'a TargetSettings,
    pub probe: &'a [String],
}

#[derive(sqlx::FromRow)]
struct TargetRow {
    id: Uuid,
    agent_id: Uuid,
    name: String,
    settings: String,
    probe: String,
    created_at: OffsetDateTime,
}

impl TargetRow {
    fn into_model(self) -> Result<AgentTarget> {
        Ok(AgentTarget {
            id: self.id,
            agent_id: AgentId(self.agent_id),
            settings: from_json("settings", &self.settings)?,
            probe: from_json("probe", &self.probe)?,
            name: self.name,
            created_at: self.created_at,
        })
    }
}

/// `(certificate, target)` pairs of an agent's assignments that name their targets.
#[derive(sqlx::FromRow)]
struct PairRow {
    certificate_id: Uuid,
    target_id: Uuid,
}

impl Db {
    /// Stores a new target; `Conflict` when the agent already has one of that name.
    pub async fn insert_target(
        &self,
        new: &NewTarget<'_>,
        now: OffsetDateTime,
    ) -> Result<AgentTarget> {
        const Q: &str = "INSERT INTO agent_targets (id, agent_id, name, kind, settings, probe, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let id = Uuid::now_v7();
        on_pool!(self, p => sqlx::query(Q)
            .bind(id)
            .bind(new.agent_id.0)
            .bind(new.name)
            .bind(new.settings.kind().as_str())
            .bind(to_json(new.settings))
            .bind(to_json(&new.probe))
            .bind(now)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        self.agent_changed(AgentChange::Agent(new.agent_id));
        self.target(id).await
    }

    /// One target by id.
    pub async fn target(&self, id: Uuid) -> Result<AgentTarget> {
        const Q: &str = "SELECT id, agent_id, name, settings, probe, created_at FROM agent_targets WHERE id = $1";
        let row: TargetRow = on_pool!(self, p => sqlx::query_as(Q).bind(id).fetch_one(p).await)?;
        row.into_model()
    }

    /// The targets of an agent, by name.
    pub async fn targets(&self, agent: AgentId) -> Result<Vec<AgentTarget>> {
        const Q: &str = "SELECT id, agent_id, name, settings, probe, created_at FROM agent_targets WHERE agent_id = $1 ORDER BY name";
        let rows: Vec<TargetRow> =
            on_pool!(self, p => sqlx::query_as(Q).bind(agent.0).fetch_all(p).await)?;
        rows.into_iter().map(TargetRow::into_model).collect()
    }

    /// Removes a target. `Conflict` naming the certificates when it is the only target an
    /// assignment names (it would otherwise silently go to every target).
    pub async fn delete_target(&self, target: &AgentTarget) -> Result<()> {
        const SOLE: &str = "SELECT c.name FROM assignment_targets t JOIN certificates c ON c.id = t.certificate_id WHERE t.target_id = $1 AND NOT EXISTS (SELECT 1 FROM assignment_targets o WHERE o.agent_id = t.agent_id AND o.certificate_id = t.certificate_id AND o.target_id <> t.target_id) ORDER BY c.name";
        const DELETE: &str = "DELETE FROM agent_targets WHERE id = $1";
        let sole: Vec<String> = on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let sole: Vec<String> = sqlx::query_scalar(SOLE).bind(target.id).fetch_all(&mut *tx).await?;
            if sole.is_empty() {
                sqlx::query(DELETE).bind(target.id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(sole)
        })?;
        self.agent_changed(AgentChange::Agent(target.agent_id));
        if sole.is_empty() {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "target {} is the only target of the assignment of {}; unassign or assign them to another target first",
                target.name,
                sole.join(", ")
            )))
        }
    }

    /// Assigns a certificate to an agent for `targets` (ids of the agent's targets; empty means
    /// every target), replacing the targets of an existing assignment, in one transaction.
    pub async fn assign_to_targets(
        &self,
        agent: AgentId,
        certificate: CertificateId,
        targets: &[Uuid],
        now: OffsetDateTime,
    ) -> Result<()> {
        const ASSIGN: &str = "INSERT INTO agent_assignments (agent_id, certificate_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
        const CLEAR: &str =
            "DELETE FROM assignment_targets WHERE agent_id = $1 AND certificate_id = $2";
        const ADD: &str = "INSERT INTO assignment_targets (agent_id, certificate_id, target_id) VALUES ($1, $2, $3)";
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            sqlx::query(ASSIGN).bind(agent.0).bind(certificate.0).bind(now).execute(&mut *tx).await?;
            sqlx::query(CLEAR).bind(agent.0).bind(certificate.0).execute(&mut *tx).await?;
            for target in targets {
                sqlx::query(ADD).bind(agent.0).bind(certificate.0).bind(target).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        })?;
        self.agent_changed(AgentChange::Agent(agent));
        Ok(())
    }

    /// The `(certificate, target id)` pairs of the agent's assignments that name targets.
    pub async fn assignment_targets(&self, agent: AgentId) -> Result<Vec<(CertificateId, Uuid)>> {
        const Q: &str = "SELECT certificate_id, target_id FROM assignment_targets WHERE agent_id = $1 ORDER BY certificate_id, target_id";
        let rows: Vec<PairRow> =
            on_pool!(self, p => sqlx::query_as(Q).bind(agent.0).fetch_all(p).await)?;
        Ok(rows
            .into_iter()
            .map(|r| (CertificateId(r.certificate_id), r.target_id))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestDb;

    #[tokio::test]
    async fn targets_assignments_and_removal() {
        for t in TestDb::all().await {
            let db = &t.db;
            let now = crate::now();
            let (_, cert) = t.account_and_certificate("www", "www.example.com").await;
            let cert = cert.id;
            let agent = db
                .insert_agent(
                    &crate::secrets::Secrets::generate(),
                    &crate::db::agents::NewAgent {
                        name: "web-1",
                        join_token_hash: b"hash",
                        join_token_expires_at: now,
                        ccs_password: "pw",
                        pfx_mode: crate::model::PfxEncryption::Legacy,
                    },
                    now,
                )
                .await
                .unwrap()
                .id;
            let ccs = TargetSettings::Ccs {
                path: r"\\fs\ccs$".into(),
            };
            let new = |name| NewTarget {
                agent_id: agent,
                name,
                settings: &ccs,
                probe: &[],
            };
            let a = db.insert_target(&new("a"), now).await.unwrap();
            let b = db.insert_target(&new("b"), now).await.unwrap();
            assert!(
                matches!(
                    db.insert_target(&new("a"), now).await,
                    Err(Error::Conflict(_))
                ),
                "{}",
                t.backend
            );
            assert_eq!(db.targets(agent).await.unwrap(), [a.clone(), b.clone()]);

            db.assign_to_targets(agent, cert, &[a.id], now)
                .await
                .unwrap();
            assert_eq!(db.assignment_targets(agent).await.unwrap(), [(cert, a.id)]);
            let err = db.delete_target(&a).await.unwrap_err();
            assert!(err.to_string().contains("only target"), "{err}");
            db.delete_target(&b).await.unwrap();

            // Re-assigning replaces the targets; no targets means every target.
            db.assign_to_targets(agent, cert, &[], now).await.unwrap();
            assert!(db.assignment_targets(agent).await.unwrap().is_empty());
            db.delete_target(&a).await.unwrap();
            assert!(db.targets(agent).await.unwrap().is_empty());
        }
    }
}
