//! A server with certificates and agents created directly through its database (the shared
//! fixture `certkeep_tests::seeded`, as `tests/tests/agent.rs` uses it): an account,
//! certificates with an issued version from an rcgen test CA, agents with client certificates
//! from the server's internal CA, assignments.

use anyhow::Context as _;
use certkeep_server::model::Certificate;
use certkeep_server::testkit::TestServer;
use certkeep_tests::seeded::Seeded;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::now;

/// CCS password every benchmark agent uses.
pub const PASSWORD: &str = "bench ccs password";

/// A running server with one ACME account and a test CA for certificate chains.
pub struct Fleet {
    pub server: TestServer,
    pub seeded: Seeded,
}

/// An agent's client identity, as the load generator needs it.
#[derive(Serialize, Deserialize, Clone)]
pub struct AgentKeys {
    pub id: uuid::Uuid,
    /// PKCS#8 PEM of the agent key.
    pub key_pem: String,
    /// Client certificate PEM.
    pub cert_pem: String,
    /// Certificates assigned to this agent.
    pub certificate_ids: Vec<uuid::Uuid>,
}

impl Fleet {
    /// Starts a server (engine off) on SQLite, or on PostgreSQL when `database_url` is given.
    pub async fn start(database_url: Option<String>) -> anyhow::Result<Self> {
        Self::start_with(database_url, |_| {}).await
    }

    /// [`Fleet::start`] with `adjust` applied to the server's configuration before it starts.
    pub async fn start_with(
        database_url: Option<String>,
        adjust: impl FnOnce(&mut certkeep_server::config::Config),
    ) -> anyhow::Result<Self> {
        let server = TestServer::start_with(|config| {
            if let Some(url) = database_url {
                config.database_url = Some(secrecy::SecretString::from(url));
            }
            adjust(config);
        })
        .await;
        let seeded = Seeded::on(&server.state).await?;
        Ok(Self { server, seeded })
    }

    /// [`Fleet::start`] with the server's data directory (age identity, CA file) at `data_dir`
    /// instead of a fresh temporary one, so a server can be restarted on the same database.
    pub async fn start_in(
        database_url: Option<String>,
        data_dir: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        Self::start_with(database_url, |config| {
            if let Some(dir) = data_dir {
                config.data_dir = dir.to_path_buf();
            }
        })
        .await
    }

    /// Defines `count` ECDSA certificates `bench-<i>` (two DNS names each) with one issued
    /// version each.
    pub async fn certificates(&self, count: usize) -> anyhow::Result<Vec<Certificate>> {
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let names = [
                format!("bench-{i}.example.com"),
                format!("www.bench-{i}.example.com"),
            ];
            let names = [names[0].as_str(), names[1].as_str()];
            out.push(
                self.seeded
                    .certificate(&format!("bench-{i}"), &names)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Creates a pending agent with a join token valid for 24 hours (for enrollment by the
    /// real agent binary).
    pub async fn pending_agent(
        &self,
        name: &str,
    ) -> anyhow::Result<(certkeep_server::model::AgentId, Zeroizing<String>)> {
        Ok(self
            .seeded
            .pending_agent(name, PASSWORD, time::Duration::hours(24))
            .await?)
    }

    /// Creates an active agent whose client certificate the internal CA signs directly (what
    /// the enroll endpoint does, minus HTTP), and assigns `certificates` to it.
    pub async fn enrolled_agent(
        &self,
        name: &str,
        certificates: &[&Certificate],
    ) -> anyhow::Result<AgentKeys> {
        let (id, _token) = self.pending_agent(name).await?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let csr = CertificateParams::default().serialize_request(&key)?;
        let state = &self.server.state;
        let at = now();
        let issued = state
            .ca
            .issue_agent_cert(id, &csr.pem()?, 30, at)
            .context("issue agent certificate")?;
        state
            .db
            .activate_agent(id, &issued.serial, issued.not_after, at)
            .await?;
        for cert in certificates {
            state.db.assign_certificate(id, cert.id, at).await?;
        }
        Ok(AgentKeys {
            id: id.0,
            key_pem: key.serialize_pem(),
            cert_pem: issued.cert_pem,
            certificate_ids: certificates.iter().map(|c| c.id.0).collect(),
        })
    }
}
