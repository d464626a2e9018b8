//! `agents` and `agent_assignments`: enrolled hosts, their hashed one-time join tokens, sealed
//! CCS passwords, and which certificates each must hold.

use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::agent_changes::AgentChange;
use super::certificates::CertificateRow;
use super::{Db, Error, Result, from_json, on_pool};
use crate::model::{
    Agent, AgentId, AgentState, Certificate, CertificateId, PfxEncryption, VersionId,
};
use crate::secrets::{Binding, Secrets};

/// What is needed to create an agent. `join_token_hash` is SHA-256 of the one-time secret.
pub struct NewAgent<'a> {
    pub name: &'a str,
    pub join_token_hash: &'a [u8],
    pub join_token_expires_at: OffsetDateTime,
    pub ccs_password: &'a str,
    pub pfx_mode: PfxEncryption,
}

/// One agent × certificate assignment, with what is needed to judge its deployment.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub agent_id: AgentId,
    pub agent_name: String,
    pub agent_state: AgentState,
    pub certificate_id: CertificateId,
    pub certificate_name: String,
    /// Thumbprint of the certificate's current version, once issued.
    pub current_thumbprint: Option<String>,
}

/// What an agent's manifest lists for one assigned certificate: its current version, read in
/// one query with the assignment (no chain, no key).
#[derive(Debug, Clone)]
pub struct ManifestSource {
    pub certificate_id: CertificateId,
    pub certificate_name: String,
    pub version_id: VersionId,
    pub thumbprint: String,
    pub serial: String,
    pub not_after: OffsetDateTime,
    /// The issued leaf's DNS SANs, in certificate order.
    pub dns_names: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct ManifestRow {
    certificate_id: Uuid,
    certificate_name: String,
    version_id: Uuid,
    thumbprint: String,
    serial: String,
    not_after: OffsetDateTime,
    dns_names: String,
}

#[derive(sqlx::FromRow)]
struct AssignmentRow {
    agent_id: Uuid,
    agent_name: String,
    agent_state: String,
    certificate_id: Uuid,
    certificate_name: String,
    current_thumbprint: Option<String>,
}

impl AssignmentRow {
    fn into_model(self) -> Result<Assignment> {
        Ok(Assignment {
            agent_id: AgentId(self.agent_id),
            agent_state: self.agent_state.parse().map_err(Error::Corrupt)?,
            agent_name: self.agent_name,
            certificate_id: CertificateId(self.certificate_id),
            certificate_name: self.certificate_name,
            current_thumbprint: self.current_thumbprint,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AgentRow {
    id: Uuid,
    name: String,
    state: String,
    join_token_expires_at: Option<OffsetDateTime>,
    cert_serial: Option<String>,
    previous_cert_serial: Option<String>,
    cert_not_after: Option<OffsetDateTime>,
    pfx_encryption: String,
    last_seen_at: Option<OffsetDateTime>,
    os_name: Option<String>,
    os_build: Option<String>,
    agent_version: Option<String>,
    last_report_errors: Option<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl AgentRow {
    fn into_model(self) -> Result<Agent> {
        Ok(Agent {
            id: AgentId(self.id),
            state: self.state.parse().map_err(Error::Corrupt)?,
            pfx_mode: self.pfx_encryption.parse().map_err(Error::Corrupt)?,
            last_report_errors: match &self.last_report_errors {
                Some(text) => from_json("last_report_errors", text)?,
                None => Vec::new(),
            },
            name: self.name,
            join_token_expires_at: self.join_token_expires_at,
            cert_serial: self.cert_serial,
            previous_cert_serial: self.previous_cert_serial,
            cert_not_after: self.cert_not_after,
            last_seen_at: self.last_seen_at,
            os_name: self.os_name,
            os_build: self.os_build,
            agent_version: self.agent_version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// `SELECT <every model column> FROM agents <tail>`.
macro_rules! select_agents {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, state, join_token_expires_at, cert_serial, previous_cert_serial, cert_not_after, pfx_encryption, last_seen_at, os_name, os_build, agent_version, last_report_errors, created_at, updated_at FROM agents ",
            $tail
        )
    };
}

fn password_binding(id: AgentId) -> Binding {
    Binding::new("agents", "ccs_password_enc", id.0)
}

/// Opens the sealed CCS password `sealed` of agent `id` (column `agents.ccs_password_enc`).
pub(super) fn open_ccs_password(
    secrets: &Secrets,
    id: AgentId,
    sealed: &[u8],
) -> Result<Zeroizing<String>> {
    Ok(secrets.open_string(password_binding(id), sealed)?)
}

/// Fails with `NotFound` when an update touched no row.
pub(super) fn one_row(rows: u64) -> Result<()> {
    if rows == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

impl Db {
    /// [`one_row`] for an update of the agent row `id` that may change its identity or
    /// manifest: when it touched the row, tells the agent cache.
    fn agent_row_changed(&self, id: AgentId, rows: u64) -> Result<()> {
        one_row(rows)?;
        self.agent_changed(AgentChange::Agent(id));
        Ok(())
    }

    /// Stores a new agent in state `pending` with a hashed join token and sealed CCS password.
    pub async fn insert_agent(
        &self,
        secrets: &Secrets,
        new: &NewAgent<'_>,
        now: OffsetDateTime,
    ) -> Result<Agent> {
        const Q: &str = "INSERT INTO agents (id, name, state, join_token_hash, join_token_expires_at, ccs_password_enc, pfx_encryption, created_at, updated_at) VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $7)";
        let id = AgentId::new();
        let password = secrets.seal(password_binding(id), new.ccs_password.as_bytes())?;
        on_pool!(self, p => sqlx::query(Q)
            .bind(id.0)
            .bind(new.name)
            .bind(new.join_token_hash)
            .bind(new.join_token_expires_at)
            .bind(password)
            .bind(new.pfx_mode.as_str())
            .bind(now)
            .execute(p)
            .await
            .map(|r| r.rows_affected()))?;
        self.agent(id).await
    }

    /// One agent by id.
    pub async fn agent(&self, id: AgentId) -> Result<Agent> {
        const Q: &str = select_agents!("WHERE id = $1");
        let row: AgentRow = on_pool!(self, p => sqlx::query_as(Q).bind(id.0).fetch_one(p).await)?;
        row.into_model()
    }

    /// One agent by its unique name.
    pub async fn agent_by_name(&self, name: &str) -> Result<Agent> {
        const Q: &str = select_agents!("WHERE name = $1");
        let row: AgentRow = on_pool!(self, p => sqlx::query_as(Q).bind(name).fetch_one(p).await)?;
        row.into_model()
    }

    /// The agent whose unused join token hashes to `hash`, whatever its expiry (callers check
    /// `join_token_expires_at` and the state, then call [`Db::activate_agent`]).
    pub async fn agent_by_join_token_hash(&self, hash: &[u8]) -> Result<Agent> {
        const Q: &str = select_agents!("WHERE join_token_hash = $1");
        let row: AgentRow = on_pool!(self, p => sqlx::query_as(Q).bind(hash).fetch_one(p).await)?;
        row.into_model()
    }

    /// Every agent, by name.
    pub async fn list_agents(&self) -> Result<Vec<Agent>> {
        const Q: &str = select_agents!("ORDER BY name");
        let rows: Vec<AgentRow> = on_pool!(self, p => sqlx::query_as(Q).fetch_all(p).await)?;
        rows.into_iter().map(AgentRow::into_model).collect()
    }

    /// Records the client certificate of an enrollment: state `active`, the join token is
    /// consumed and every earlier certificate stops working. A revoked agent stays revoked
    /// (`NotFound`).
    pub async fn activate_agent(
        &self,
        id: AgentId,
        cert_serial: &str,
        cert_not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "UPDATE agents SET state = 'active', cert_serial = $2, previous_cert_serial = NULL, cert_not_after = $3, join_token_hash = NULL, join_token_expires_at = NULL, updated_at = $4 WHERE id = $1 AND state <> 'revoked'";
        let rows = on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(cert_serial).bind(cert_not_after).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        self.agent_row_changed(id, rows)
    }

    /// Records a renewed client certificate for an active agent that authenticated with
    /// `presented_serial` (its current or still-accepted previous certificate): `new_serial`
    /// becomes current and `presented_serial` stays accepted until [`Db::retire_previous_agent_cert`].
    /// So a renewal whose reply is lost can be repeated with the same certificate. `NotFound`
    /// when the agent is no longer active or `presented_serial` is no longer accepted.
    pub async fn renew_agent_cert(
        &self,
        id: AgentId,
        presented_serial: &str,
        new_serial: &str,
        new_not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "UPDATE agents SET cert_serial = $3, previous_cert_serial = $2, cert_not_after = $4, updated_at = $5 WHERE id = $1 AND state = 'active' AND (cert_serial = $2 OR previous_cert_serial = $2)";
        let rows = on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(presented_serial).bind(new_serial).bind(new_not_after).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        self.agent_row_changed(id, rows)
    }

    /// The agent has authenticated with its current certificate `serial`: the previous one stops
    /// working. Returns whether a previous certificate was retired (false when another renewal
    /// changed the row first, or there was none).
    pub async fn retire_previous_agent_cert(
        &self,
        id: AgentId,
        serial: &str,
        now: OffsetDateTime,
    ) -> Result<bool> {
        const Q: &str = "UPDATE agents SET previous_cert_serial = NULL, updated_at = $3 WHERE id = $1 AND cert_serial = $2 AND previous_cert_serial IS NOT NULL";
        let rows = on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(serial).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(self.agent_row_changed(id, rows).is_ok())
    }

    /// Gives a non-revoked agent a new join token (re-enrollment), replacing any unused one.
    pub async fn set_join_token(
        &self,
        id: AgentId,
        hash: &[u8],
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "UPDATE agents SET join_token_hash = $2, join_token_expires_at = $3, updated_at = $4 WHERE id = $1 AND state <> 'revoked'";
        one_row(
            on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(hash).bind(expires_at).bind(now).execute(p).await.map(|r| r.rows_affected()))?,
        )
    }

    /// Records what the agent reported about itself.
    pub async fn touch_agent(
        &self,
        id: AgentId,
        os_name: &str,
        os_build: &str,
        agent_version: &str,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "UPDATE agents SET last_seen_at = $5, os_name = $2, os_build = $3, agent_version = $4 WHERE id = $1";
        one_row(
            on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(os_name).bind(os_build).bind(agent_version).bind(now).execute(p).await.map(|r| r.rows_affected()))?,
        )
    }

    /// Revokes an agent: its client certificate and join token stop working at once.
    pub async fn revoke_agent(&self, id: AgentId, now: OffsetDateTime) -> Result<()> {
        const Q: &str = "UPDATE agents SET state = 'revoked', previous_cert_serial = NULL, join_token_hash = NULL, join_token_expires_at = NULL, updated_at = $2 WHERE id = $1";
        let rows = on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        self.agent_row_changed(id, rows)
    }

    /// Changes the CCS password (sealed) and/or the PFX encryption of an agent.
    pub async fn update_agent_ccs(
        &self,
        secrets: &Secrets,
        id: AgentId,
        password: Option<&str>,
        mode: Option<PfxEncryption>,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "UPDATE agents SET ccs_password_enc = COALESCE($2, ccs_password_enc), pfx_encryption = COALESCE($3, pfx_encryption), updated_at = $4 WHERE id = $1";
        let sealed = password
            .map(|p| secrets.seal(password_binding(id), p.as_bytes()))
            .transpose()?;
        let rows = on_pool!(self, p => sqlx::query(Q).bind(id.0).bind(sealed).bind(mode.map(PfxEncryption::as_str)).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        self.agent_row_changed(id, rows)
    }

    /// The agent's CCS password, for building its PFX files.
    pub async fn agent_ccs_password(
        &self,
        secrets: &Secrets,
        id: AgentId,
    ) -> Result<Zeroizing<String>> {
        const Q: &str = "SELECT ccs_password_enc FROM agents WHERE id = $1";
        let ct: Vec<u8> = on_pool!(self, p => sqlx::query_scalar(Q).bind(id.0).fetch_one(p).await)?;
        open_ccs_password(secrets, id, &ct)
    }

    /// Assigns a certificate to an agent; assigning twice is a no-op.
    pub async fn assign_certificate(
        &self,
        agent: AgentId,
        certificate: CertificateId,
        now: OffsetDateTime,
    ) -> Result<()> {
        const Q: &str = "INSERT INTO agent_assignments (agent_id, certificate_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
        on_pool!(self, p => sqlx::query(Q).bind(agent.0).bind(certificate.0).bind(now).execute(p).await.map(|r| r.rows_affected()))?;
        self.agent_changed(AgentChange::Agent(agent));
        Ok(())
    }

    /// Removes an assignment; removing a missing one is a no-op.
    pub async fn unassign_certificate(
        &self,
        agent: AgentId,
        certificate: CertificateId,
    ) -> Result<()> {
        const Q: &str = "DELETE FROM agent_assignments WHERE agent_id = $1 AND certificate_id = $2";
        on_pool!(self, p => sqlx::query(Q).bind(agent.0).bind(certificate.0).execute(p).await.map(|r| r.rows_affected()))?;
        self.agent_changed(AgentChange::Agent(agent));
        Ok(())
    }

    /// The certificates assigned to an agent, by name.
    pub async fn assigned_certificates(&self, agent: AgentId) -> Result<Vec<Certificate>> {
        const Q: &str = "SELECT c.id, c.name, c.dns_names, c.key_type, c.account_id, c.renew_fraction, c.renew_days, c.reuse_key, c.state, c.current_version_id, c.renew_after, c.consecutive_failures, c.last_error, c.created_by, c.created_at, c.updated_at FROM certificates c JOIN agent_assignments a ON a.certificate_id = c.id WHERE a.agent_id = $1 ORDER BY c.name";
        let rows: Vec<CertificateRow> =
            on_pool!(self, p => sqlx::query_as(Q).bind(agent.0).fetch_all(p).await)?;
        rows.into_iter().map(CertificateRow::into_model).collect()
    }

    /// The assigned certificates that have a current version, by certificate name, with that
    /// version's manifest fields: one round trip for a whole manifest.
    pub async fn manifest_sources(&self, agent: AgentId) -> Result<Vec<ManifestSource>> {
        const Q: &str = "SELECT c.id AS certificate_id, c.name AS certificate_name, v.id AS version_id, v.thumbprint, v.serial, v.not_after, v.dns_names FROM agent_assignments a JOIN certificates c ON c.id = a.certificate_id JOIN certificate_versions v ON v.id = c.current_version_id WHERE a.agent_id = $1 ORDER BY c.name";
        let rows: Vec<ManifestRow> =
            on_pool!(self, p => sqlx::query_as(Q).bind(agent.0).fetch_all(p).await)?;
        rows.into_iter()
            .map(|r| {
                Ok(ManifestSource {
                    certificate_id: CertificateId(r.certificate_id),
                    certificate_name: r.certificate_name,
                    version_id: VersionId(r.version_id),
                    thumbprint: r.thumbprint,
                    serial: r.serial,
                    not_after: r.not_after,
                    dns_names: from_json("dns_names", &r.dns_names)?,
                })
            })
            .collect()
    }

    /// Assignments with both names and the certificate's current thumbprint, optionally for one
    /// agent or one certificate, by agent and certificate name.
    pub async fn assignments(
        &self,
        agent: Option<AgentId>,
        certificate: Option<CertificateId>,
    ) -> Result<Vec<Assignment>> {
        const Q: &str = "SELECT a.id AS agent_id, a.name AS agent_name, a.state AS agent_state, c.id AS certificate_id, c.name AS certificate_name, v.thumbprint AS current_thumbprint FROM agent_assignments x JOIN agents a ON a.id = x.agent_id JOIN certificates c ON c.id = x.certificate_id LEFT JOIN certificate_versions v ON v.id = c.current_version_id WHERE ($1 IS NULL OR x.agent_id = $1) AND ($2 IS NULL OR x.certificate_id = $2) ORDER BY a.name, c.name";
        let rows: Vec<AssignmentRow> = on_pool!(self, p => sqlx::query_as(Q)
            .bind(agent.map(|a| a.0))
            .bind(certificate.map(|c| c.0))
            .fetch_all(p)
            .await)?;
        rows.into_iter().map(AssignmentRow::into_model).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestDb;

    #[tokio::test]
    async fn a_renewal_keeps_the_presented_serial_until_the_new_one_is_used() {
        let secrets = Secrets::generate();
        for t in TestDb::all().await {
            let db = &t.db;
            let now = crate::now();
            let later = now + time::Duration::days(30);
            let agent = db
                .insert_agent(
                    &secrets,
                    &NewAgent {
                        name: "web-1",
                        join_token_hash: b"hash",
                        join_token_expires_at: later,
                        ccs_password: "pw",
                        pfx_mode: PfxEncryption::Legacy,
                    },
                    now,
                )
                .await
                .unwrap();
            let serials = |a: Agent| (a.cert_serial, a.previous_cert_serial);
            let pair = |c: &str, p: Option<&str>| (Some(c.to_owned()), p.map(str::to_owned));
            db.activate_agent(agent.id, "aa", later, now).await.unwrap();
            assert_eq!(serials(db.agent(agent.id).await.unwrap()), pair("aa", None));

            db.renew_agent_cert(agent.id, "aa", "bb", later, now)
                .await
                .unwrap();
            assert_eq!(
                serials(db.agent(agent.id).await.unwrap()),
                pair("bb", Some("aa")),
                "{}",
                t.backend
            );
            // The reply was lost: the agent renews again with the same certificate.
            db.renew_agent_cert(agent.id, "aa", "cc", later, now)
                .await
                .unwrap();
            assert_eq!(
                serials(db.agent(agent.id).await.unwrap()),
                pair("cc", Some("aa"))
            );
            // The certificate that never arrived is no longer accepted.
            assert!(matches!(
                db.renew_agent_cert(agent.id, "bb", "dd", later, now).await,
                Err(Error::NotFound)
            ));
            // Another serial than the current one retires nothing.
            assert!(
                !db.retire_previous_agent_cert(agent.id, "aa", now)
                    .await
                    .unwrap()
            );
            assert!(
                db.retire_previous_agent_cert(agent.id, "cc", now)
                    .await
                    .unwrap()
            );
            assert!(
                !db.retire_previous_agent_cert(agent.id, "cc", now)
                    .await
                    .unwrap()
            );
            assert_eq!(serials(db.agent(agent.id).await.unwrap()), pair("cc", None));
            assert!(matches!(
                db.renew_agent_cert(agent.id, "aa", "dd", later, now).await,
                Err(Error::NotFound)
            ));

            // Enrollment and revocation both end the previous certificate.
            db.renew_agent_cert(agent.id, "cc", "dd", later, now)
                .await
                .unwrap();
            db.activate_agent(agent.id, "ee", later, now).await.unwrap();
            assert_eq!(serials(db.agent(agent.id).await.unwrap()), pair("ee", None));
            db.renew_agent_cert(agent.id, "ee", "ff", later, now)
                .await
                .unwrap();
            db.revoke_agent(agent.id, now).await.unwrap();
            let revoked = db.agent(agent.id).await.unwrap();
            assert_eq!(revoked.previous_cert_serial, None);
            assert!(matches!(
                db.renew_agent_cert(agent.id, "ff", "gg", later, now).await,
                Err(Error::NotFound)
            ));
        }
    }
}
