//! Test fixtures that need the server's own types, shared by its unit tests, the `tests/`
//! package and the benchmarks: fresh migrated databases on both backends (PostgreSQL on the
//! throwaway cluster of `certkeep-testsupport`), a whole server in-process, stored test
//! versions. Compiled only for tests or with the `testkit` feature.
#![allow(
    clippy::expect_used,
    reason = "test harness: a failed set-up step must stop the test loudly"
)]

use std::path::{Path, PathBuf};

use certkeep_testsupport::postgres::PgCluster;
use secrecy::SecretString;

use crate::db::Db;

/// A database for one test, on either backend.
pub struct TestDb {
    pub db: Db,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Database name on the shared cluster (PostgreSQL only).
    pub pg_name: Option<String>,
    /// SQLite file (SQLite only).
    pub sqlite_path: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A migrated SQLite database in a temporary directory.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("certkeep.db");
        let db = Db::open_sqlite(&path).await.expect("open sqlite");
        db.migrate().await.expect("migrate sqlite");
        Self {
            db,
            backend: "sqlite",
            pg_name: None,
            sqlite_path: Some(path),
            _dir: Some(dir),
        }
    }

    /// A migrated database on the shared PostgreSQL cluster, or `None` when that tier is skipped.
    pub async fn postgres() -> Option<Self> {
        let cluster = PgCluster::shared()?;
        let name = cluster.create_database().await;
        let url = SecretString::from(cluster.url(&name));
        let db = Db::connect_postgres(&url).await.expect("connect postgres");
        db.migrate().await.expect("migrate postgres");
        Some(Self {
            db,
            backend: "postgres",
            pg_name: Some(name),
            sqlite_path: None,
            _dir: None,
        })
    }

    /// Every available backend: SQLite always, PostgreSQL when its tier runs.
    pub async fn all() -> Vec<Self> {
        let mut dbs = vec![Self::sqlite().await];
        dbs.extend(Self::postgres().await);
        dbs
    }

    /// The raw bytes at rest: the SQLite files, or a `pg_dump`.
    pub fn raw_contents(&self) -> Vec<u8> {
        match (&self.sqlite_path, &self.pg_name) {
            (Some(path), _) => {
                let mut bytes = Vec::new();
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    if let Ok(b) = std::fs::read(Path::new(&p)) {
                        bytes.extend(b);
                    }
                }
                bytes
            }
            (None, Some(name)) => PgCluster::shared().expect("cluster").dump(name),
            (None, None) => Vec::new(),
        }
    }
}

/// A whole server (API + agent listeners) running in this process on loopback ports chosen by
/// the OS, with its own data directory. Stops when dropped.
pub struct TestServer {
    pub state: crate::app::AppState,
    /// `https://127.0.0.1:<port>` of the API listener.
    pub api_url: String,
    /// `https://127.0.0.1:<port>` of the agent listener.
    pub agent_url: String,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server on embedded SQLite with the issuance engine disabled.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` has edited its default configuration (data_dir and
    /// listener addresses are set here).
    pub async fn start_with(adjust: impl FnOnce(&mut crate::config::Config)) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = crate::config::Config {
            data_dir: data_dir.path().join("data"),
            api_addr: "127.0.0.1:0".parse().expect("addr"),
            agent_addr: "127.0.0.1:0".parse().expect("addr"),
            ..crate::config::Config::default()
        };
        config.engine.enabled = false;
        adjust(&mut config);
        let listeners = crate::Listeners::bind(&config).expect("bind listeners");
        let api_url = format!(
            "https://127.0.0.1:{}",
            listeners.api.local_addr().expect("addr").port()
        );
        let agent_url = format!(
            "https://127.0.0.1:{}",
            listeners.agent.local_addr().expect("addr").port()
        );
        let state = crate::bootstrap::prepare(config, crate::now())
            .await
            .expect("prepare server");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::serve(state.clone(), listeners, async {
            let _ = rx.await;
        }));
        Self {
            state,
            api_url,
            agent_url,
            data_dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Path of the internal CA certificate (`<data_dir>/ca.pem`).
    pub fn ca_file(&self) -> PathBuf {
        self.state.config.data_dir.join("ca.pem")
    }

    /// The first admin token written at first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.state.config.data_dir.join("admin-token"))
            .expect("admin-token")
            .trim()
            .to_owned()
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestDb {
    /// Stores an account without EAB, allowed `*.<domain of dns_name>`, and one P-256
    /// certificate called `name` for `dns_name`: the fixture storage tests of orders build on.
    pub async fn account_and_certificate(
        &self,
        name: &str,
        dns_name: &str,
    ) -> (crate::model::Account, crate::model::Certificate) {
        let now = crate::now();
        let suffix = dns_name.split_once('.').map_or(dns_name, |(_, rest)| rest);
        let account = self
            .db
            .insert_account(
                &crate::secrets::Secrets::generate(),
                &crate::db::accounts::NewAccount {
                    name: &format!("account-{name}"),
                    directory_url: "https://ca.example/dir",
                    contact: &[],
                    allowed_domains: &[format!("*.{suffix}")],
                    eab_kid: None,
                    eab_hmac: None,
                    extra_roots_pem: None,
                },
                now,
            )
            .await
            .expect("insert account");
        let certificate = self
            .db
            .insert_certificate(
                &crate::db::certificates::NewCertificate {
                    name,
                    dns_names: &[dns_name.to_owned()],
                    key_type: crate::model::KeyType::EcdsaP256,
                    account_id: account.id,
                    policy: crate::model::RenewalPolicy::default(),
                    created_by: None,
                },
                now,
            )
            .await
            .expect("insert certificate");
        (account, certificate)
    }
}

/// Stores `leaf` (from the test PKI) as `certificate`'s current version, valid from now for
/// `validity`. Serial, thumbprint and DNS SANs are read from the chain as the engine reads an
/// issued one, so the stored row is what issuance would have stored.
pub async fn store_test_version(
    db: &Db,
    secrets: &crate::secrets::Secrets,
    certificate: crate::model::CertificateId,
    leaf: &certkeep_api_types::pfx::testing::TestLeaf,
    validity: time::Duration,
) -> Result<crate::model::CertificateVersion, crate::db::Error> {
    let chain_pem: String = leaf
        .chain_der
        .iter()
        .map(|d| certkeep_api_types::pem::encode("CERTIFICATE", d))
        .collect();
    let issued =
        crate::domain::issuance::parse_chain(&chain_pem).map_err(crate::db::Error::Corrupt)?;
    let now = crate::now();
    db.insert_version(
        secrets,
        &crate::db::versions::NewVersion {
            id: crate::model::VersionId::new(),
            certificate_id: certificate,
            order_id: None,
            chain_pem: &chain_pem,
            key_pkcs8_der: &leaf.key_pkcs8_der,
            serial: &issued.serial,
            thumbprint: &issued.thumbprint,
            dns_names: &issued.dns_names,
            not_before: now,
            not_after: now + validity,
        },
        now,
    )
    .await
}

/// A CA that issues leaves with a CRL distribution point and signs CRLs (rcgen), for the
/// outside-revocation tests.
mod crl_ca {
    use rcgen::{
        CertificateParams, CertificateRevocationListParams, CrlDistributionPoint, IsCa, Issuer,
        KeyIdMethod, KeyPair, RevocationReason, RevokedCertParams, SerialNumber,
    };
    use time::{Duration, OffsetDateTime};

    /// A CA named `name`; two with the same name differ only in their keys. `der` is its
    /// certificate.
    pub struct CrlCa {
        pub der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    impl CrlCa {
        pub fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let key = KeyPair::generate().expect("CA key");
            let cert = params.self_signed(&key).expect("CA cert");
            Self {
                der: cert.der().to_vec(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A leaf for `names` (DER) with serial `serial` and a CRL distribution point at `url`.
        pub fn leaf(&self, names: &[&str], serial: u64, url: &str) -> (Vec<u8>, KeyPair) {
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.serial_number = Some(SerialNumber::from(serial));
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.to_owned()],
            }];
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &self.issuer).expect("leaf");
            (cert.der().to_vec(), key)
        }

        /// A CRL (DER) issued at `now` listing `serials` with reason key compromise.
        pub fn crl(&self, serials: &[u64], now: OffsetDateTime) -> Vec<u8> {
            let params = CertificateRevocationListParams {
                this_update: now - Duration::minutes(1),
                next_update: now + Duration::hours(1),
                crl_number: SerialNumber::from(1u64),
                issuing_distribution_point: None,
                revoked_certs: serials
                    .iter()
                    .map(|s| RevokedCertParams {
                        serial_number: SerialNumber::from(*s),
                        revocation_time: now - Duration::minutes(1),
                        reason_code: Some(RevocationReason::KeyCompromise),
                        invalidity_date: None,
                    })
                    .collect(),
                key_identifier_method: KeyIdMethod::Sha256,
            };
            params.signed_by(&self.issuer).expect("CRL").der().to_vec()
        }
    }
}
pub use crl_ca::CrlCa;
