//! A server with certificates and agents created directly through its database, the way
//! `tests/tests/agent.rs` does it: an account, certificates with an issued version from an rcgen
//! test CA, agents with client certificates from the server's internal CA, assignments.

use anyhow::Context as _;
use certkeep_api_types::pfx::testing::{KeyKind, TestCa};
use certkeep_server::bootstrap::{new_token_secret, token_hash};
use certkeep_server::db::accounts::NewAccount;
use certkeep_server::db::agents::NewAgent;
use certkeep_server::db::certificates::NewCertificate;
use certkeep_server::model::{
    AccountId, AgentId, Certificate, KeyType, PfxEncryption, RenewalPolicy,
};
use certkeep_server::testkit::TestServer;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::now;

/// CCS password every benchmark agent uses.
pub const PASSWORD: &str = "bench ccs password";

/// A running server with one ACME account and a test CA for certificate chains.
pub struct Fleet {
    pub server: TestServer,
    pub account: AccountId,
    pub test_ca: TestCa,
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
        Self::start_in(database_url, None).await
    }

    /// [`Fleet::start`] with the server's data directory (age identity, CA file) at `data_dir`
    /// instead of a fresh temporary one, so a server can be restarted on the same database.
    pub async fn start_in(
        database_url: Option<String>,
        data_dir: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let server = TestServer::start_with(|config| {
            if let Some(url) = database_url {
                config.database_url = Some(secrecy::SecretString::from(url));
            }
            if let Some(dir) = data_dir {
                config.data_dir = dir.to_path_buf();
            }
        })
        .await;
        let account = server
            .state
            .db
            .insert_account(
                &server.state.secrets,
                &NewAccount {
                    name: "bench-ca",
                    directory_url: "https://ca.invalid/dir",
                    contact: &[],
                    allowed_domains: &["*.example.com".into(), "example.com".into()],
                    eab_kid: None,
                    eab_hmac: None,
                    extra_roots_pem: None,
                },
                now(),
            )
            .await?
            .id;
        Ok(Self {
            server,
            account,
            test_ca: TestCa::new(),
        })
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
            out.push(self.certificate(&format!("bench-{i}"), &names).await?);
        }
        Ok(out)
    }

    /// Defines one certificate and stores an issued current version for `names`.
    pub async fn certificate(&self, name: &str, names: &[String]) -> anyhow::Result<Certificate> {
        let db = &self.server.state.db;
        let cert = db
            .insert_certificate(
                &NewCertificate {
                    name,
                    dns_names: names,
                    key_type: KeyType::EcdsaP256,
                    account_id: self.account,
                    policy: RenewalPolicy::default(),
                    created_by: None,
                },
                now(),
            )
            .await?;
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let leaf = self.test_ca.leaf(&refs, KeyKind::Ecdsa);
        certkeep_server::testkit::store_test_version(
            db,
            &self.server.state.secrets,
            cert.id,
            &leaf,
            time::Duration::days(90),
        )
        .await?;
        Ok(cert)
    }

    /// Creates a pending agent with a join token (for enrollment by the real agent binary).
    pub async fn pending_agent(&self, name: &str) -> anyhow::Result<(AgentId, Zeroizing<String>)> {
        let token = new_token_secret();
        let at = now();
        let agent = self
            .server
            .state
            .db
            .insert_agent(
                &self.server.state.secrets,
                &NewAgent {
                    name,
                    join_token_hash: &token_hash(&token),
                    join_token_expires_at: at + time::Duration::hours(24),
                    ccs_password: PASSWORD,
                    pfx_mode: PfxEncryption::Legacy,
                },
                at,
            )
            .await?;
        Ok((agent.id, token))
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
