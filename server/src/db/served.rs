//! `served_names`: what each agent's probes last saw served, per target, address and DNS name,
//! and since when a name has not served its certificate's current version.

use certkeep_api_types::target::ServedStatus;
use time::OffsetDateTime;
use uuid::Uuid;

use super::BeginWrite as _;
use super::notify::{NewEvent, Outbox as _};
use super::{Db, Error, Result, on_pool};
use crate::model::{AgentId, CertificateId};

/// One probed name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub agent_id: AgentId,
    pub certificate_id: CertificateId,
    pub target: String,
    pub address: String,
    pub name: String,
    pub status: ServedStatus,
    pub thumbprint: Option<String>,
    pub error: Option<String>,
    /// The current thumbprint when probed.
    pub expected: String,
    pub pending_since: Option<OffsetDateTime>,
    pub lagging_at: Option<OffsetDateTime>,
    pub probed_at: OffsetDateTime,
}

/// One probe result, judged.
pub struct NewServed<'a> {
    pub certificate_id: CertificateId,
    pub target: &'a str,
    pub address: &'a str,
    pub name: &'a str,
    pub status: ServedStatus,
    pub thumbprint: Option<&'a str>,
    pub error: Option<&'a str>,
    pub expected: &'a str,
}

#[derive(sqlx::FromRow)]
struct ServedRow {
    agent_id: Uuid,
    certificate_id: Uuid,
    target: String,
    address: String,
    name: String,
    status: String,
    thumbprint: Option<String>,
    error: Option<String>,
    expected: String,
    pending_since: Option<OffsetDateTime>,
    lagging_at: Option<OffsetDateTime>,
    probed_at: OffsetDateTime,
}

impl ServedRow {
    fn into_model(self) -> Result<Served> {
        Ok(Served {
            agent_id: AgentId(self.agent_id),
            certificate_id: CertificateId(self.certificate_id),
            status: self.status.parse().map_err(Error::Corrupt)?,
            target: self.target,
            address: self.address,
            name: self.name,
            thumbprint: self.thumbprint,
            error: self.error,
            expected: self.expected,
            pending_since: self.pending_since,
            lagging_at: self.lagging_at,
            probed_at: self.probed_at,
        })
    }
}

/// `SELECT <every model column> FROM served_names <tail>`.
macro_rules! select_served {
    ($tail:literal) => {
        concat!(
            "SELECT agent_id, certificate_id, target, address, name, status, thumbprint, error, expected, pending_since, lagging_at, probed_at FROM served_names ",
            $tail
        )
    };
}

impl Db {
    /// Replaces the agent's probe results with one round, in one transaction. A name keeps its
    /// `pending_since` (and `lagging_at`) while it goes on not serving the same current version.
    pub async fn record_probes(
        &self,
        agent: AgentId,
        probes: &[NewServed<'_>],
        now: OffsetDateTime,
    ) -> Result<()> {
        const UPSERT: &str = "INSERT INTO served_names (agent_id, certificate_id, target, address, name, status, thumbprint, error, expected, pending_since, lagging_at, probed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11) \
            ON CONFLICT (agent_id, certificate_id, target, address, name) DO UPDATE SET \
            pending_since = CASE WHEN excluded.status = 'serving' THEN NULL \
                WHEN served_names.expected = excluded.expected AND served_names.pending_since IS NOT NULL THEN served_names.pending_since \
                ELSE excluded.probed_at END, \
            lagging_at = CASE WHEN excluded.status = 'serving' OR served_names.expected <> excluded.expected THEN NULL ELSE served_names.lagging_at END, \
            status = excluded.status, thumbprint = excluded.thumbprint, error = excluded.error, expected = excluded.expected, probed_at = excluded.probed_at";
        const STALE_ROWS: &str = "DELETE FROM served_names WHERE agent_id = $1 AND probed_at <> $2";
        // PostgreSQL keeps microseconds: the round's rows must compare equal to `now` below.
        let now = now
            .replace_nanosecond(now.nanosecond() / 1000 * 1000)
            .unwrap_or(now);
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            for s in probes {
                sqlx::query(UPSERT)
                    .bind(agent.0)
                    .bind(s.certificate_id.0)
                    .bind(s.target)
                    .bind(s.address)
                    .bind(s.name)
                    .bind(s.status.as_str())
                    .bind(s.thumbprint)
                    .bind(s.error)
                    .bind(s.expected)
                    .bind((s.status != ServedStatus::Serving).then_some(now))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(STALE_ROWS).bind(agent.0).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        })?;
        Ok(())
    }

    /// Probe results, optionally for one agent or one certificate.
    pub async fn served(
        &self,
        agent: Option<AgentId>,
        certificate: Option<CertificateId>,
    ) -> Result<Vec<Served>> {
        const Q: &str = select_served!(
            "WHERE ($1 IS NULL OR agent_id = $1) AND ($2 IS NULL OR certificate_id = $2) ORDER BY target, address, name"
        );
        let rows: Vec<ServedRow> = on_pool!(self, p => sqlx::query_as(Q)
            .bind(agent.map(|a| a.0))
            .bind(certificate.map(|c| c.0))
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(ServedRow::into_model).collect()
    }

    /// Marks the agent's names that have not served their current version since `before` or
    /// earlier as lagging (once per version) and returns them.
    pub async fn mark_lagging(
        &self,
        agent: AgentId,
        before: OffsetDateTime,
        now: OffsetDateTime,
        event: impl Fn(&Served) -> Option<NewEvent>,
    ) -> Result<Vec<Served>> {
        const Q: &str = "UPDATE served_names SET lagging_at = $3 WHERE agent_id = $1 AND lagging_at IS NULL AND pending_since IS NOT NULL AND pending_since <= $2 RETURNING agent_id, certificate_id, target, address, name, status, thumbprint, error, expected, pending_since, lagging_at, probed_at";
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            let rows: Vec<ServedRow> = sqlx::query_as(Q)
                .bind(agent.0)
                .bind(before)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
            let lagging = rows
                .into_iter()
                .map(ServedRow::into_model)
                .collect::<Result<Vec<Served>>>()?;
            for s in &lagging {
                if let Some(e) = event(s) {
                    tx.enqueue_event(&e).await?;
                }
            }
            tx.commit().await?;
            Ok::<_, Error>(lagging)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestDb;

    #[tokio::test]
    async fn pending_and_lagging_follow_the_current_version() {
        for t in TestDb::all().await {
            let db = &t.db;
            let t0 = crate::now().replace_nanosecond(0).unwrap();
            let (_, cert) = t.account_and_certificate("www", "www.example.com").await;
            let agent = db
                .insert_agent(
                    &crate::secrets::Secrets::generate(),
                    &crate::db::agents::NewAgent {
                        name: "web-1",
                        join_token_hash: b"hash",
                        join_token_expires_at: t0,
                        ccs_password: "pw",
                        pfx_mode: crate::model::PfxEncryption::Legacy,
                    },
                    t0,
                )
                .await
                .unwrap()
                .id;
            let probe = |status, seen, expected| NewServed {
                certificate_id: cert.id,
                target: "nginx",
                address: "127.0.0.1:443",
                name: "www.example.com",
                status,
                thumbprint: Some(seen),
                error: None,
                expected,
            };
            let minutes = time::Duration::minutes;
            let one = |rows: Vec<Served>| {
                assert_eq!(rows.len(), 1, "{}: {rows:?}", t.backend);
                rows.into_iter().next().unwrap()
            };
            db.record_probes(agent, &[probe(ServedStatus::Stale, "v1", "v2")], t0)
                .await
                .unwrap();
            assert_eq!(
                one(db.served(Some(agent), None).await.unwrap()).pending_since,
                Some(t0)
            );
            // Still stale ten minutes later: the clock keeps running from the first probe.
            let t1 = t0 + minutes(10);
            db.record_probes(agent, &[probe(ServedStatus::Stale, "v1", "v2")], t1)
                .await
                .unwrap();
            let row = one(db.served(Some(agent), None).await.unwrap());
            assert_eq!((row.pending_since, row.probed_at), (Some(t0), t1));
            assert!(
                db.mark_lagging(agent, t1 - minutes(30), t1, |_| None)
                    .await
                    .unwrap()
                    .is_empty()
            );
            let t2 = t0 + minutes(31);
            let event = |s: &Served| {
                Some(crate::notify::events::deployment_lagging(
                    &cert, cert.id.0, "web-1", None, &s.name, t2,
                ))
            };
            let lagging = one(db
                .mark_lagging(agent, t2 - minutes(30), t2, event)
                .await
                .unwrap());
            assert!(
                !db.enqueue_event(&event(&lagging).unwrap()).await.unwrap(),
                "{}: the deployment.lagging event went to the outbox with the mark",
                t.backend
            );
            assert_eq!(
                (lagging.lagging_at, lagging.status),
                (Some(t2), ServedStatus::Stale)
            );
            assert!(
                db.mark_lagging(agent, t2, t2, |_| None)
                    .await
                    .unwrap()
                    .is_empty(),
                "found lagging once per version"
            );
            // A newer current version restarts the clock; serving clears it.
            let t3 = t2 + minutes(1);
            db.record_probes(agent, &[probe(ServedStatus::Stale, "v1", "v3")], t3)
                .await
                .unwrap();
            let row = one(db.served(Some(agent), None).await.unwrap());
            assert_eq!((row.pending_since, row.lagging_at), (Some(t3), None));
            db.record_probes(
                agent,
                &[probe(ServedStatus::Serving, "v3", "v3")],
                t3 + minutes(1),
            )
            .await
            .unwrap();
            let row = one(db.served(Some(agent), None).await.unwrap());
            assert_eq!((row.pending_since, row.lagging_at), (None, None));
            // A round without the name drops it.
            db.record_probes(agent, &[], t3 + minutes(2)).await.unwrap();
            assert!(db.served(Some(agent), None).await.unwrap().is_empty());
        }
    }
}
