//! What a PFX download reads on every request: the assignment, the certificate's current
//! version and the agent's sealed CCS password, in one round trip. The chain and the key are
//! read only when the PFX has to be built (`agent_api::pfx_cache`).

use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::agents::open_ccs_password;
use super::{Db, Error, Result, on_pool};
use crate::model::{AgentId, CertificateId, PfxEncryption, VersionId};
use crate::secrets::Secrets;

/// An assigned certificate's current version as one agent downloads it.
pub struct PfxSource {
    /// The agent downloading.
    pub agent_id: AgentId,
    /// The certificate's current version.
    pub version_id: VersionId,
    /// That version's thumbprint (for the audit event).
    pub thumbprint: String,
    /// SHA-256 of the agent's sealed CCS password. Every seal is a fresh age ciphertext, so
    /// the tag changes whenever the password is set (or re-sealed by `rekey`); it says nothing
    /// about the password itself.
    pub password_tag: [u8; 32],
    /// The agent's PFX encryption mode, read with the password.
    pub mode: PfxEncryption,
    sealed_password: Vec<u8>,
}

impl PfxSource {
    /// The CCS password this source's [`password_tag`](Self::password_tag) stands for.
    pub fn password(&self, secrets: &Secrets) -> Result<Zeroizing<String>> {
        open_ccs_password(secrets, self.agent_id, &self.sealed_password)
    }
}

#[derive(sqlx::FromRow)]
struct PfxSourceRow {
    version_id: Uuid,
    thumbprint: String,
    ccs_password_enc: Vec<u8>,
    pfx_encryption: String,
}

impl Db {
    /// The current version of `certificate` for `agent`, if it is assigned to the agent and
    /// has one; with the agent's sealed CCS password and PFX mode.
    pub async fn pfx_source(
        &self,
        agent: AgentId,
        certificate: CertificateId,
    ) -> Result<Option<PfxSource>> {
        const Q: &str = "SELECT v.id AS version_id, v.thumbprint, g.ccs_password_enc, g.pfx_encryption FROM agent_assignments a JOIN certificates c ON c.id = a.certificate_id JOIN certificate_versions v ON v.id = c.current_version_id JOIN agents g ON g.id = a.agent_id WHERE a.agent_id = $1 AND a.certificate_id = $2";
        let row: Option<PfxSourceRow> = on_pool!(self, p => sqlx::query_as(Q).bind(agent.0).bind(certificate.0).fetch_optional(p).await)?;
        row.map(|r| {
            Ok(PfxSource {
                agent_id: agent,
                version_id: VersionId(r.version_id),
                thumbprint: r.thumbprint,
                password_tag: Sha256::digest(&r.ccs_password_enc).into(),
                mode: r.pfx_encryption.parse().map_err(Error::Corrupt)?,
                sealed_password: r.ccs_password_enc,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use certkeep_api_types::pfx::testing::{KeyKind, TestCa};

    use super::*;
    use crate::db::agents::NewAgent;
    use crate::model::PfxEncryption;
    use crate::testkit::{TestDb, store_test_version};

    /// The source exists only for an assigned certificate with a version; its password tag
    /// changes with the password and only with it.
    #[tokio::test]
    async fn a_source_follows_the_assignment_the_version_and_the_password() {
        let secrets = Secrets::generate();
        let ca = TestCa::new();
        for t in TestDb::all().await {
            let db = &t.db;
            let now = crate::now();
            let (_, cert) = t.account_and_certificate("web", "www.example.com").await;
            let agent = db
                .insert_agent(
                    &secrets,
                    &NewAgent {
                        name: "web-1",
                        join_token_hash: b"hash",
                        join_token_expires_at: now,
                        ccs_password: "first",
                        pfx_mode: PfxEncryption::Legacy,
                    },
                    now,
                )
                .await
                .unwrap();
            db.assign_certificate(agent.id, cert.id, now).await.unwrap();
            assert!(
                db.pfx_source(agent.id, cert.id).await.unwrap().is_none(),
                "no version yet ({})",
                t.backend
            );
            let leaf = ca.leaf(&["www.example.com"], KeyKind::Ecdsa);
            let version =
                store_test_version(db, &secrets, cert.id, &leaf, time::Duration::days(30))
                    .await
                    .unwrap();
            let source = db.pfx_source(agent.id, cert.id).await.unwrap().unwrap();
            assert_eq!(source.version_id, version.id, "{}", t.backend);
            assert_eq!(source.thumbprint, version.thumbprint);
            assert_eq!(source.password(&secrets).unwrap().as_str(), "first");

            // Changing only the mode keeps the sealed password, so the tag.
            db.update_agent_ccs(&secrets, agent.id, None, Some(PfxEncryption::Aes256), now)
                .await
                .unwrap();
            let same = db.pfx_source(agent.id, cert.id).await.unwrap().unwrap();
            assert_eq!(same.password_tag, source.password_tag);
            assert_eq!(
                (source.mode, same.mode),
                (PfxEncryption::Legacy, PfxEncryption::Aes256)
            );
            // Setting the password, even to the same text, gives a new tag.
            for password in ["second", "second"] {
                let before = db.pfx_source(agent.id, cert.id).await.unwrap().unwrap();
                db.update_agent_ccs(&secrets, agent.id, Some(password), None, now)
                    .await
                    .unwrap();
                let after = db.pfx_source(agent.id, cert.id).await.unwrap().unwrap();
                assert_ne!(after.password_tag, before.password_tag, "{}", t.backend);
                assert_eq!(after.password(&secrets).unwrap().as_str(), password);
            }

            db.unassign_certificate(agent.id, cert.id).await.unwrap();
            assert!(db.pfx_source(agent.id, cert.id).await.unwrap().is_none());
        }
    }
}
