//! End-to-end delivery over real mTLS on loopback: enrollment, manifest, PFX into a CCS folder,
//! renewal, isolation between agents, revocation, join-token misuse, foreign client CAs.
#![allow(
    clippy::unwrap_used,
    reason = "integration test: a failed step must panic"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use certkeep_agent::client::AgentClient;
use certkeep_agent::config::Config as AgentConfig;
use certkeep_agent::{EnrollOptions, enroll, sync_once};
use certkeep_api_types::agent::DeploymentStatus;
use certkeep_api_types::notification::{NotificationEvent, SubscriptionScope};
use certkeep_api_types::pem::encode as pem;
use certkeep_api_types::pfx::testing::{KeyKind, TestCa};
use certkeep_api_types::target::TargetSettings;
use certkeep_server::model::{AgentId, Certificate, Scope};
use certkeep_server::testkit::TestServer;
use certkeep_tests::notify::{routed_deliveries, webhook_subscription};
use certkeep_tests::seeded::{Seeded, api_token};
use zeroize::Zeroizing;

const PASSWORD: &str = "correct horse battery staple";

struct Fixture {
    server: TestServer,
    seeded: Seeded,
    dir: tempfile::TempDir,
}

/// The seeding helpers (`certificate`, `issue`, `pending_agent`) of the shared fixture.
impl std::ops::Deref for Fixture {
    type Target = Seeded;

    fn deref(&self) -> &Seeded {
        &self.seeded
    }
}

impl Fixture {
    async fn new() -> Self {
        let server = TestServer::start().await;
        let seeded = Seeded::on(&server.state).await.unwrap();
        Self {
            server,
            seeded,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn enroll_options(&self, name: &str, token: Zeroizing<String>) -> EnrollOptions {
        EnrollOptions {
            server: self.server.agent_url.parse().unwrap(),
            ca_file: self.server.ca_file(),
            token,
            config_path: self.dir.path().join(name).join("agent.toml"),
            state_dir: Some(self.dir.path().join(name).join("state")),
        }
    }

    /// Enrolls an agent host with the config `enroll` writes, and gives the agent a CCS target
    /// on the server (the folder `ccs` beside the state directory).
    async fn host(&self, name: &str, agent: AgentId, token: Zeroizing<String>) -> AgentConfig {
        let root = self.dir.path().join(name);
        enroll(self.enroll_options(name, token)).await.unwrap();
        let ccs = root.join("ccs");
        std::fs::create_dir_all(&ccs).unwrap();
        self.target(
            agent,
            "ccs",
            TargetSettings::Ccs {
                path: ccs.to_string_lossy().into_owned(),
            },
        )
        .await
        .unwrap();
        AgentConfig::load(&root.join("agent.toml")).unwrap()
    }
}

impl Fixture {
    /// An API token with `scopes`; returns its id (the audit actor is `token:<id>`) and secret.
    async fn api_token(&self, name: &str, scopes: &[Scope]) -> (String, Zeroizing<String>) {
        let (id, secret) = api_token(&self.server.state, name, scopes).await.unwrap();
        (id.to_string(), secret)
    }

    /// One call to the real API over TLS: status and body text.
    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, String) {
        let ca = std::fs::read(self.server.ca_file()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
            .build()
            .unwrap();
        let mut req = client
            .request(method, format!("{}{path}", self.server.api_url))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// One call to the real API that must answer `expected`; the body text.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
        expected: u16,
    ) -> String {
        let (status, text) = self.api(method, path, token, body).await;
        assert_eq!(status, expected, "{path}: {text}");
        text
    }

    /// Assigns certificate `certificate` to agent `agent` through the API (as `token`).
    async fn assign(&self, agent: &str, certificate: &str, token: &str) {
        let path = format!("/api/v1/agents/{agent}/certificates/{certificate}");
        self.call(reqwest::Method::PUT, &path, token, None, 204)
            .await;
    }

    /// Adds the target `body` to agent `agent` through the API (as `token`).
    async fn add_target(&self, agent: &str, token: &str, body: serde_json::Value) {
        let path = format!("/api/v1/agents/{agent}/targets");
        self.call(reqwest::Method::POST, &path, token, Some(body), 201)
            .await;
    }

    /// A pending agent `name` with the test PFX password and a join token valid for a day.
    async fn agent(&self, name: &str) -> (AgentId, Zeroizing<String>) {
        self.pending_agent(name, PASSWORD, time::Duration::hours(24))
            .await
            .unwrap()
    }

    /// A pending agent `name` enrolled with the config `enroll` writes, but no target yet: its
    /// id, its config and its folder (where `host` puts the CCS folder).
    async fn enrolled(&self, name: &str) -> (AgentId, AgentConfig, PathBuf) {
        let (agent, token) = self.agent(name).await;
        let enrolled = enroll(self.enroll_options(name, token)).await.unwrap();
        assert!(enrolled.config_written);
        let root = self.dir.path().join(name);
        let config = AgentConfig::load(&root.join("agent.toml")).unwrap();
        (agent, config, root)
    }

    /// The deployments the server records for `agent`.
    async fn deployments(&self, agent: AgentId) -> Vec<certkeep_server::model::Deployment> {
        self.server
            .state
            .db
            .deployments(Some(agent), None)
            .await
            .unwrap()
    }
}

/// `.pfx` files in a folder with their modification times.
fn pfx_files(dir: &Path) -> BTreeMap<String, std::time::SystemTime> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pfx"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().modified().unwrap(),
            )
        })
        .collect()
}

/// Opens a PFX with the openssl CLI and returns the leaf's SHA-256 thumbprint (lower-case hex).
fn openssl_thumbprint(path: &Path, password: &str) -> String {
    let out = Command::new("openssl")
        .args(["pkcs12", "-legacy", "-in"])
        .arg(path)
        .args([
            "-passin",
            &format!("pass:{password}"),
            "-nokeys",
            "-clcerts",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl pkcs12: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut x509.stdin.take().unwrap(), &out.stdout).unwrap();
    let fp = x509.wait_with_output().unwrap();
    let text = String::from_utf8(fp.stdout).unwrap();
    text.trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase()
}

/// Checks the full chain and key are in the bundle too.
fn openssl_counts(path: &Path, password: &str) -> (usize, usize) {
    let out = Command::new("openssl")
        .args(["pkcs12", "-legacy", "-in"])
        .arg(path)
        .args(["-passin", &format!("pass:{password}"), "-nodes"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    (
        text.matches("BEGIN CERTIFICATE").count(),
        text.matches("PRIVATE KEY-----").count() / 2,
    )
}

async fn current_thumbprint(f: &Fixture, c: &Certificate) -> String {
    let db = &f.server.state.db;
    let id = db
        .certificate(c.id)
        .await
        .unwrap()
        .current_version_id
        .unwrap();
    db.version(id).await.unwrap().thumbprint
}

/// The CCS folder of a [`Fixture::host`].
fn ccs(config: &AgentConfig) -> PathBuf {
    config.state_dir.parent().unwrap().join("ccs")
}

#[tokio::test(flavor = "multi_thread")]
async fn enroll_sync_renew_and_isolate() {
    let f = Fixture::new().await;
    let multi = f
        .certificate("web", &["a.example.com", "b.example.com", "127.0.0.1"])
        .await
        .unwrap();
    let wildcard = f.certificate("wild", &["*.example.com"]).await.unwrap();
    let (agent, token) = f.agent("iis-1").await;
    let config = f.host("iis-1", agent, token.clone()).await;
    let db = &f.server.state.db;
    let now = certkeep_server::now();
    db.assign_certificate(agent, multi.id, now).await.unwrap();
    db.assign_certificate(agent, wildcard.id, now)
        .await
        .unwrap();

    // Foreign files in the CCS folder must survive every sync.
    let folder = ccs(&config);
    std::fs::write(folder.join("foreign.example.org.pfx"), b"not ours").unwrap();
    std::fs::write(folder.join("notes.txt"), b"junk").unwrap();

    let outcome = sync_once(&config).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    let files = pfx_files(&folder);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        vec![
            "_.example.com.pfx",
            "a.example.com.pfx",
            "b.example.com.pfx",
            "foreign.example.org.pfx"
        ]
    );
    let multi_thumb = current_thumbprint(&f, &multi).await;
    for name in ["a.example.com.pfx", "b.example.com.pfx"] {
        assert_eq!(
            openssl_thumbprint(&folder.join(name), PASSWORD),
            multi_thumb,
            "{name}"
        );
        assert_eq!(
            openssl_counts(&folder.join(name), PASSWORD),
            (2, 1),
            "leaf + intermediate + one key"
        );
    }
    assert_eq!(
        std::fs::read(folder.join("a.example.com.pfx")).unwrap(),
        std::fs::read(folder.join("b.example.com.pfx")).unwrap()
    );
    assert_eq!(
        openssl_thumbprint(&folder.join("_.example.com.pfx"), PASSWORD),
        current_thumbprint(&f, &wildcard).await
    );
    assert_eq!(
        std::fs::read(folder.join("foreign.example.org.pfx")).unwrap(),
        b"not ours"
    );
    assert_eq!(std::fs::read(folder.join("notes.txt")).unwrap(), b"junk");

    // The server saw the report and audited the pulls.
    let deployments = f.deployments(agent).await;
    assert_eq!(deployments.len(), 3, "{deployments:?}");
    assert!(
        deployments
            .iter()
            .all(|d| d.status == DeploymentStatus::Installed)
    );
    let pulls = db
        .list_audit(&certkeep_server::db::audit::AuditFilter {
            action: Some("certificate.pfx_pull".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pulls.len(), 2);

    // Nothing changed: a 304, and nothing is written.
    let again = sync_once(&config).await.unwrap();
    assert!(again.unchanged && again.is_success(), "{again:?}");
    assert_eq!(pfx_files(&folder), files);

    // Renewal drops b.example.com and adds c.example.com.
    let renewed = f
        .issue(&multi, &["a.example.com", "c.example.com"])
        .await
        .unwrap()
        .thumbprint;
    let outcome = sync_once(&config).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    let names: Vec<String> = pfx_files(&folder).into_keys().collect();
    assert_eq!(
        names,
        vec![
            "_.example.com.pfx",
            "a.example.com.pfx",
            "c.example.com.pfx",
            "foreign.example.org.pfx"
        ]
    );
    assert_eq!(
        openssl_thumbprint(&folder.join("a.example.com.pfx"), PASSWORD),
        renewed
    );
    assert_eq!(
        openssl_thumbprint(&folder.join("c.example.com.pfx"), PASSWORD),
        renewed
    );
    assert!(
        !folder
            .join(".certkeep-manifest.json")
            .to_string_lossy()
            .ends_with(".pfx")
    );

    // Another agent cannot fetch this agent's certificate, even knowing its id.
    let other_cert = f
        .certificate("other", &["other.example.com"])
        .await
        .unwrap();
    let (other_agent, other_token) = f.agent("iis-2").await;
    let other = f.host("iis-2", other_agent, other_token).await;
    let identity = certkeep_agent::identity::Identity::load(&other.state_dir).unwrap();
    let client = AgentClient::new(
        &other.server,
        &std::fs::read(f.server.ca_file()).unwrap(),
        Some(&identity.client_pem()),
    )
    .unwrap();
    let err = client
        .download(&format!("/agent/v1/certificates/{}/pfx", multi.id))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    let err = client
        .download(&format!("/agent/v1/certificates/{}/pfx", other_cert.id))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("404"),
        "unassigned is 404 too: {err}"
    );

    // A used join token is refused.
    let reused = enroll(f.enroll_options("iis-1-again", token))
        .await
        .unwrap_err();
    assert!(format!("{reused:#}").contains("401"), "{reused:#}");

    // Revocation applies to the very next request.
    db.revoke_agent(agent, certkeep_server::now())
        .await
        .unwrap();
    let err = sync_once(&config).await;
    let text = match err {
        Err(e) => format!("{e:#}"),
        Ok(o) => format!("{:?}", o.errors),
    };
    assert!(text.contains("401"), "{text}");
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_token_and_foreign_client_ca_are_refused() {
    let f = Fixture::new().await;
    let (_, expired) = f
        .pending_agent("late", PASSWORD, time::Duration::seconds(-1))
        .await
        .unwrap();
    let err = enroll(f.enroll_options("late", expired)).await.unwrap_err();
    assert!(format!("{err:#}").contains("401"), "{err:#}");

    // A client certificate from another CA fails the TLS handshake.
    let foreign = TestCa::new().leaf(&["agent.example.com"], KeyKind::Ecdsa);
    let mut identity_pem = pem("CERTIFICATE", &foreign.chain_der[0]);
    identity_pem.push_str(&pem("PRIVATE KEY", &foreign.key_pkcs8_der));
    let client = AgentClient::new(
        &f.server.agent_url.parse().unwrap(),
        &std::fs::read(f.server.ca_file()).unwrap(),
        Some(identity_pem.as_bytes()),
    )
    .unwrap();
    let err = client.manifest(None).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("cannot reach"),
        "expected a handshake failure: {text}"
    );
    // Control: without any client certificate the handshake succeeds and the route says 401.
    let anonymous = AgentClient::new(
        &f.server.agent_url.parse().unwrap(),
        &std::fs::read(f.server.ca_file()).unwrap(),
        None,
    )
    .unwrap();
    let err = anonymous.manifest(None).await.unwrap_err();
    assert!(format!("{err:#}").contains("401"), "{err:#}");
}

/// The custody hole, reproduced through the real API over TLS: an `operator` token without
/// `export` tries every way of getting a private key onto a host it controls (a new agent, a
/// join token to take over an existing one, an assignment, a CCS password it knows). Each is
/// refused naming the missing scope and audited, and the agent listener then hands the host
/// nothing. With `export` the same assignment delivers, so the check can see a delivery.
#[tokio::test]
async fn an_operator_without_export_cannot_route_keys_to_an_agent() {
    let f = Fixture::new().await;
    let www = f.certificate("www", &["www.example.com"]).await.unwrap();
    let (web1, token) = f.agent("web1").await;
    let config = f.host("web1", web1, token).await;
    let (operator_id, operator) = f.api_token("ops", &[Scope::Operator]).await;
    let (_, exporter) = f
        .api_token("ops-export", &[Scope::Operator, Scope::Export])
        .await;
    let rogue = serde_json::json!({"name": "rogue", "ccs_password": "rogue-pw"});
    let attempts = [
        (reqwest::Method::POST, "/api/v1/agents", Some(rogue)),
        (
            reqwest::Method::POST,
            "/api/v1/agents/web1/join-token",
            None,
        ),
        (
            reqwest::Method::PUT,
            "/api/v1/agents/web1/certificates/www",
            None,
        ),
        (
            reqwest::Method::PATCH,
            "/api/v1/agents/web1",
            Some(serde_json::json!({"ccs_password": "rogue-pw"})),
        ),
    ];
    for (method, path, body) in attempts {
        let (status, text) = f.api(method.clone(), path, &operator, body).await;
        assert_eq!(status, 403, "{method} {path}: {text}");
        assert!(text.contains("`export` scope"), "{method} {path}: {text}");
        assert!(!text.contains("ck_"), "no join token leaked: {text}");
    }
    let db = &f.server.state.db;
    let denied = db
        .list_audit(&certkeep_server::db::audit::AuditFilter {
            actor: Some(format!("token:{operator_id}")),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 4, "{denied:?}");
    assert!(denied.iter().all(|e| e.outcome == "denied"), "{denied:?}");
    assert!(
        db.agent_by_name("rogue").await.is_err(),
        "no agent was created"
    );

    // The agent listener hands the host nothing: an empty manifest, no file, the PFX is 404.
    let outcome = sync_once(&config).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(pfx_files(&ccs(&config)).is_empty());
    let identity = certkeep_agent::identity::Identity::load(&config.state_dir).unwrap();
    let client = AgentClient::new(
        &config.server,
        &std::fs::read(f.server.ca_file()).unwrap(),
        Some(&identity.client_pem()),
    )
    .unwrap();
    let err = client
        .download(&format!("/agent/v1/certificates/{}/pfx", www.id))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    // With `export` the assignment delivers, under the unchanged CCS password.
    f.assign("web1", "www", &exporter).await;
    let outcome = sync_once(&config).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    let folder = ccs(&config);
    assert_eq!(
        pfx_files(&folder).into_keys().collect::<Vec<_>>(),
        vec!["www.example.com.pfx".to_owned()]
    );
    assert_eq!(
        openssl_thumbprint(&folder.join("www.example.com.pfx"), PASSWORD),
        current_thumbprint(&f, &www).await
    );
    f.server.stop().await;
}

/// A client presenting `identity` to the agent listener.
fn client_for(f: &Fixture, identity: &certkeep_agent::identity::Identity) -> AgentClient {
    AgentClient::new(
        &f.server.agent_url.parse().unwrap(),
        &std::fs::read(f.server.ca_file()).unwrap(),
        Some(&identity.client_pem()),
    )
    .unwrap()
}

/// Asserts the listener answers 401 to a manifest request with this client certificate.
async fn refused(client: &AgentClient, what: &str) {
    let err = client.manifest(None).await.unwrap_err();
    assert!(format!("{err:#}").contains("401"), "{what}: {err:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_renewal_reply_does_not_lock_the_agent_out() {
    use certkeep_agent::identity::{Identity, renew};

    let f = Fixture::new().await;
    let cert = f.certificate("web", &["www.example.com"]).await.unwrap();
    let (agent, token) = f.agent("iis").await;
    let config = f.host("iis", agent, token).await;
    let db = &f.server.state.db;
    db.assign_certificate(agent, cert.id, certkeep_server::now())
        .await
        .unwrap();
    let original = Identity::load(&config.state_dir).unwrap();
    let original_client = client_for(&f, &original);

    // The server issues a renewal, but the reply never reaches the agent's state directory.
    let lost_dir = tempfile::tempdir().unwrap();
    let lost = renew(&original_client, &original, lost_dir.path())
        .await
        .unwrap();
    assert_eq!(lost.agent_id, original.agent_id);
    let outcome = sync_once(&config).await.unwrap();
    assert!(
        outcome.is_success(),
        "the certificate the agent still has must keep working: {outcome:?}"
    );

    // Renewing again with the same certificate works, and this time the agent stores it.
    let renewed = renew(&original_client, &original, &config.state_dir)
        .await
        .unwrap();
    refused(
        &client_for(&f, &lost),
        "a renewal superseded before any use",
    )
    .await;
    let stored = Identity::load(&config.state_dir).unwrap();
    assert_eq!(stored.client_pem(), renewed.client_pem());
    original_client.manifest(None).await.unwrap();

    // The first request with the new certificate retires the old one.
    let outcome = sync_once(&config).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    refused(
        &original_client,
        "the certificate renewed from, after the new one was used",
    )
    .await;
    let renewals = db
        .list_audit(&certkeep_server::db::audit::AuditFilter {
            action: Some("agent.renew".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(renewals.len(), 2, "every renewal is audited");

    // A revoked agent is accepted with neither its current nor its previous certificate.
    let renewed_client = client_for(&f, &renewed);
    let pending = renew(&renewed_client, &renewed, lost_dir.path())
        .await
        .unwrap();
    db.revoke_agent(agent, certkeep_server::now())
        .await
        .unwrap();
    refused(&renewed_client, "previous certificate of a revoked agent").await;
    refused(
        &client_for(&f, &pending),
        "current certificate of a revoked agent",
    )
    .await;
    f.server.stop().await;
}

/// Enroll in one command with no config edit; every target comes from the server. A target
/// added through the API changes the manifest and the next sync applies it. With a CCS folder
/// and a PEM directory, both are written; when the CCS folder is gone the directory is still
/// written and the report names the failing target.
#[tokio::test(flavor = "multi_thread")]
async fn targets_come_from_the_server_and_fail_independently() {
    let f = Fixture::new().await;
    let www = f.certificate("www", &["www.example.com"]).await.unwrap();
    let (agent, config, root) = f.enrolled("web1").await;
    let admin = f.server.admin_token();
    f.assign("web1", "www", &admin).await;
    webhook_subscription(
        &f.server.state,
        "hosts",
        &[NotificationEvent::AgentInstallFailed],
        SubscriptionScope::All,
        None,
        &[],
    )
    .await;

    // No target yet: nothing is written and the agent says why.
    let outcome = sync_once(&config).await.unwrap();
    assert!(!outcome.is_success());
    assert!(
        outcome.errors.iter().any(|e| e.contains("no target")),
        "{outcome:?}"
    );

    // A CCS target added on the server reaches the agent on its next poll.
    let (folder, pem) = (root.join("ccs"), root.join("pem"));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::create_dir_all(&pem).unwrap();
    let add = |name: &str, settings: serde_json::Value| serde_json::json!({"name": name, "settings": settings, "probe": []});
    let ccs = add("ccs", serde_json::json!({"kind": "ccs", "path": folder}));
    f.add_target("web1", &admin, ccs).await;
    let outcome = sync_once(&config).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    let thumbprint = current_thumbprint(&f, &www).await;
    assert_eq!(
        openssl_thumbprint(&folder.join("www.example.com.pfx"), PASSWORD),
        thumbprint
    );
    assert!(
        sync_once(&config).await.unwrap().unchanged,
        "same manifest: 304"
    );

    // A second target, a PEM directory whose reload command leaves a mark: both are served.
    let mark = root.join("reloaded");
    let dir = add(
        "nginx",
        serde_json::json!({"kind": "directory", "path": pem,
            "reload_command": ["touch", mark]}),
    );
    f.add_target("web1", &admin, dir).await;
    let outcome = sync_once(&config).await.unwrap();
    assert!(!outcome.unchanged && outcome.is_success(), "{outcome:?}");
    assert!(pem.join("www").join("fullchain.pem").exists());
    assert!(mark.exists(), "the reload command ran");
    let pulls = f
        .server
        .state
        .db
        .list_audit(&certkeep_server::db::audit::AuditFilter {
            action: Some("certificate.pfx_pull".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pulls.len(), 2, "one pull per sync that needed the PFX");

    // The CCS folder disappears and the certificate is renewed: the directory still gets it.
    std::fs::remove_dir_all(&folder).unwrap();
    std::fs::remove_file(&mark).unwrap();
    let renewed = f
        .issue(&www, &["www.example.com"])
        .await
        .unwrap()
        .thumbprint;
    let outcome = sync_once(&config).await.unwrap();
    assert!(!outcome.is_success());
    assert!(
        outcome.errors.iter().any(|e| e.starts_with("target ccs:")),
        "{outcome:?}"
    );
    assert!(mark.exists(), "the directory target was reloaded");
    let deployments = f.deployments(agent).await;
    let by_target: BTreeMap<&str, (&Option<String>, DeploymentStatus)> = deployments
        .iter()
        .map(|d| (d.target.as_str(), (&d.thumbprint, d.status)))
        .collect();
    assert_eq!(
        by_target["ccs"].1,
        DeploymentStatus::Failed,
        "{deployments:?}"
    );
    assert_eq!(
        by_target["nginx"],
        (&Some(renewed), DeploymentStatus::Installed),
        "{deployments:?}"
    );
    // The failure raised `agent.install_failed` once, with the report; polls that keep failing
    // do not raise it again.
    assert!(!sync_once(&config).await.unwrap().is_success());
    let failed: Vec<_> = routed_deliveries(&f.server.state.db)
        .await
        .into_iter()
        .map(|d| d.payload)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].kind, NotificationEvent::AgentInstallFailed);
    assert_eq!(failed[0].agent_name.as_deref(), Some("web1"));
    assert_eq!(failed[0].certificate_name.as_deref(), Some("www"));
    assert!(
        failed[0]
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("target ccs"),
        "{:?}",
        failed[0]
    );
    f.server.stop().await;
}

/// What the server shows for `www`'s probed names on the one agent, via the real API.
async fn served_www(f: &Fixture, admin: &str) -> Vec<serde_json::Value> {
    let text = f
        .call(
            reqwest::Method::GET,
            "/api/v1/certificates/www",
            admin,
            None,
            200,
        )
        .await;
    let detail: serde_json::Value = serde_json::from_str(&text).unwrap();
    detail["deployments"][0]["served"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Probes until the server shows `www.example.com` as `status` with `thumbprint`, for at most
/// 20 s (nginx starts new workers a moment after `-s reload` returns).
async fn probe_until(
    f: &Fixture,
    config: &AgentConfig,
    admin: &str,
    status: &str,
    thumbprint: &str,
) {
    let started = std::time::Instant::now();
    loop {
        let served = served_www(f, admin).await;
        if served.len() == 1
            && served[0]["status"] == status
            && served[0]["thumbprint"] == thumbprint
        {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "not {status} {thumbprint} within 20 s: {served:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        certkeep_agent::probe_once(config).await.unwrap();
    }
}

/// The closed loop with a real nginx: a directory target whose reload command reloads it,
/// probed at nginx's port. After a renewal the probe sees the new thumbprint served; with the
/// reload command broken, nginx keeps the old one and the server shows the name `stale`.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_serves_the_renewal_and_a_broken_reload_shows_stale() {
    let f = Fixture::new().await;
    let www = f.certificate("www", &["www.example.com"]).await.unwrap();
    let (agent, config, root) = f.enrolled("web1").await;
    let pem = root.join("pem");
    std::fs::create_dir_all(&pem).unwrap();
    let db = &f.server.state.db;
    db.assign_certificate(agent, www.id, certkeep_server::now())
        .await
        .unwrap();
    let admin = f.server.admin_token();
    let add_target = async |reload: Vec<String>, probe: String| {
        let body = serde_json::json!({"name": "nginx", "probe": [probe],
            "settings": {"kind": "directory", "path": pem, "reload_command": reload}});
        f.add_target("web1", &admin, body).await;
    };

    // nginx needs the files before it starts: a first target without nginx to reload.
    add_target(vec!["true".into()], "127.0.0.1:1".into()).await;
    let outcome = sync_once(&config).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    assert!(
        outcome.probes[0]
            .error
            .as_deref()
            .unwrap()
            .contains("127.0.0.1:1"),
        "{outcome:?}"
    );
    assert_eq!(served_www(&f, &admin).await[0]["status"], "unreachable");
    let Some(nginx) = certkeep_testsupport::nginx::Nginx::start(&pem, "www").await else {
        return;
    };
    f.call(
        reqwest::Method::DELETE,
        "/api/v1/agents/web1/targets/nginx",
        &admin,
        None,
        204,
    )
    .await;
    add_target(nginx.reload_command(), nginx.address()).await;
    let v1 = current_thumbprint(&f, &www).await;
    probe_until(&f, &config, &admin, "serving", &v1).await;

    // Renewal: installed, nginx reloaded, the new version served.
    let v2 = f
        .issue(&www, &["www.example.com"])
        .await
        .unwrap()
        .thumbprint;
    let outcome = sync_once(&config).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?} {}", nginx.log());
    probe_until(&f, &config, &admin, "serving", &v2).await;

    // The reload command breaks: the files switch, nginx keeps serving v2, and v3 is stale.
    f.call(
        reqwest::Method::DELETE,
        "/api/v1/agents/web1/targets/nginx",
        &admin,
        None,
        204,
    )
    .await;
    add_target(
        vec![
            "sh".into(),
            "-c".into(),
            "echo nginx: broken >&2; exit 7".into(),
        ],
        nginx.address(),
    )
    .await;
    let v3 = f
        .issue(&www, &["www.example.com"])
        .await
        .unwrap()
        .thumbprint;
    let outcome = sync_once(&config).await.unwrap();
    assert!(
        outcome
            .errors
            .iter()
            .any(|e| e.starts_with("target nginx: reload command") && e.contains("broken")),
        "{outcome:?}"
    );
    let files = f.deployments(agent).await;
    assert_eq!(
        files[0].thumbprint.as_deref(),
        Some(v3.as_str()),
        "{files:?}"
    );
    let served = served_www(&f, &admin).await;
    assert_eq!(served[0]["status"], "stale", "{served:?}");
    assert_eq!(served[0]["thumbprint"], v2.as_str());
    assert!(served[0]["pending_since"].is_string(), "{served:?}");
    f.server.stop().await;
}

/// The mingw-built Windows agent under Wine against this Linux server: enrolls with the
/// one-command enroll, syncs into a CCS folder from a server-defined target and reports. The
/// PFX opens with `openssl pkcs12` and the server shows it deployed. (The `windows-store` target
/// needs the Windows certificate store and IIS, which Wine does not provide; the Wine test stays
/// on CCS.)
#[tokio::test(flavor = "multi_thread")]
async fn the_windows_agent_under_wine_enrolls_syncs_and_reports() {
    use certkeep_testsupport::wine::Wine;

    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let exe = target_dir.join("x86_64-pc-windows-gnu/debug/certkeep-agent.exe");
    let Some(wine) = Wine::with_program(&exe) else {
        return;
    };
    let f = Fixture::new().await;
    let www = f.certificate("www", &["www.example.com"]).await.unwrap();
    let (agent, token) = f.agent("iis-wine").await;
    let root = f.dir.path().join("iis-wine");
    let ccs = root.join("ccs");
    std::fs::create_dir_all(&ccs).unwrap();
    std::fs::write(root.join("join-token.txt"), token.as_str()).unwrap();
    std::fs::copy(f.server.ca_file(), root.join("ca.pem")).unwrap();
    f.target(
        agent,
        "ccs",
        TargetSettings::Ccs {
            path: Wine::windows_path(&ccs),
        },
    )
    .await
    .unwrap();
    f.server
        .state
        .db
        .assign_certificate(agent, www.id, certkeep_server::now())
        .await
        .unwrap();
    let win = |p: &str| Wine::windows_path(&root.join(p));
    let config = ["--config".to_owned(), win("agent.toml")];
    let limit = std::time::Duration::from_secs(300);
    let enroll = [
        "enroll",
        "--server",
        &f.server.agent_url,
        "--ca-file",
        &win("ca.pem"),
        "--token-file",
        &win("join-token.txt"),
        "--state-dir",
        &win("state"),
    ]
    .map(str::to_owned);
    let out = wine.run(&[&config[..], &enroll[..]].concat(), limit).await;
    let log = |out: &std::process::Output| {
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(out.status.success(), "enroll under Wine: {}", log(&out));
    let out = wine
        .run(&[&config[..], &["sync".to_owned()][..]].concat(), limit)
        .await;
    assert!(out.status.success(), "sync under Wine: {}", log(&out));

    let pfx = ccs.join("www.example.com.pfx");
    assert_eq!(
        openssl_thumbprint(&pfx, PASSWORD),
        current_thumbprint(&f, &www).await
    );
    let deployments = f.deployments(agent).await;
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    assert_eq!(deployments[0].status, DeploymentStatus::Installed);
    assert_eq!(deployments[0].target, "ccs");
    let shown = f.server.state.db.agent(agent).await.unwrap();
    assert_eq!(shown.os_name.as_deref(), Some("windows"), "{shown:?}");
    f.server.stop().await;
}

/// Canary rollout with a real nginx: after a renewal the non-canary agent keeps the old version
/// (reported as held) until the canary's probe sees the new one served; its next sync then
/// installs it.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_serving_the_renewal_releases_the_other_agents() {
    let f = Fixture::new().await;
    let www = f.certificate("www", &["www.example.com"]).await.unwrap();
    let admin = f.server.admin_token();
    let db = &f.server.state.db;
    // The canary: a PEM directory served by nginx (sorted first by name).
    let (canary, canary_config, root) = f.enrolled("a-canary").await;
    let pem = root.join("pem");
    std::fs::create_dir_all(&pem).unwrap();
    f.target(
        canary,
        "nginx",
        TargetSettings::Directory {
            path: pem.to_string_lossy().into_owned(),
            reload_command: None,
        },
    )
    .await
    .unwrap();
    db.assign_certificate(canary, www.id, certkeep_server::now())
        .await
        .unwrap();
    assert!(sync_once(&canary_config).await.unwrap().is_success());
    let Some(nginx) = certkeep_testsupport::nginx::Nginx::start(&pem, "www").await else {
        return;
    };
    db.delete_target(&db.targets(canary).await.unwrap()[0])
        .await
        .unwrap();
    let body = serde_json::json!({"name": "nginx", "probe": [nginx.address()],
        "settings": {"kind": "directory", "path": pem, "reload_command": nginx.reload_command()}});
    f.add_target("a-canary", &admin, body).await;
    f.call(
        reqwest::Method::PUT,
        "/api/v1/agents/a-canary/rollout",
        &admin,
        Some(serde_json::json!({"canary": true})),
        200,
    )
    .await;
    // Another agent, CCS, no probe.
    let (other, token) = f.agent("web2").await;
    let other_config = f.host("web2", other, token).await;
    db.assign_certificate(other, www.id, certkeep_server::now())
        .await
        .unwrap();
    let v1 = current_thumbprint(&f, &www).await;
    assert!(sync_once(&other_config).await.unwrap().is_success());
    let file = ccs(&other_config).join("www.example.com.pfx");
    assert_eq!(
        openssl_thumbprint(&file, PASSWORD),
        v1,
        "a first install never waits"
    );

    let v2 = f
        .issue(&www, &["www.example.com"])
        .await
        .unwrap()
        .thumbprint;
    let held = sync_once(&other_config).await.unwrap();
    assert!(held.is_success(), "{held:?}");
    assert!(
        held.files.iter().all(|r| r.status == DeploymentStatus::Kept
            && r.error.as_deref().unwrap().contains("canary")),
        "{held:?}"
    );
    assert_eq!(openssl_thumbprint(&file, PASSWORD), v1, "held back");

    assert!(sync_once(&canary_config).await.unwrap().is_success());
    probe_until(&f, &canary_config, &admin, "serving", &v2).await;
    let released = sync_once(&other_config).await.unwrap();
    assert!(released.is_success() && !released.unchanged, "{released:?}");
    assert_eq!(
        openssl_thumbprint(&file, PASSWORD),
        v2,
        "released by the canary"
    );
    f.server.stop().await;
}

/// A certificate bought elsewhere, imported through the API as a PKCS#12 file, reaches an
/// agent's CCS folder and opens there with `openssl pkcs12` under the agent's password.
#[tokio::test]
async fn an_imported_certificate_is_delivered_to_the_ccs_folder() {
    use base64::Engine as _;
    let f = Fixture::new().await;
    let (agent, token) = f.agent("web1").await;
    let config = f.host("web1", agent, token).await;
    let (_, admin) = f.api_token("admin", &[Scope::Admin]).await;
    let bought = TestCa::new().leaf(&["shop.example.com"], KeyKind::Rsa);
    let pfx = certkeep_api_types::pfx::build_pfx(
        &bought.key_pkcs8_der,
        &bought.chain_der,
        "bought-pw",
        certkeep_api_types::agent::PfxEncryption::Legacy,
    )
    .unwrap();
    let body = serde_json::json!({
        "name": "shop",
        "account": "test-ca",
        "pfx_base64": base64::engine::general_purpose::STANDARD.encode(&pfx),
        "pfx_password": "bought-pw",
    });
    f.call(
        reqwest::Method::POST,
        "/api/v1/certificates/import",
        &admin,
        Some(body),
        201,
    )
    .await;
    f.assign("web1", "shop", &admin).await;
    let outcome = sync_once(&config).await.unwrap();
    assert!(outcome.is_success(), "{outcome:?}");
    let file = ccs(&config).join("shop.example.com.pfx");
    assert_eq!(
        openssl_thumbprint(&file, PASSWORD),
        certkeep_api_types::pfx::thumbprint(&bought.chain_der[0])
    );
    f.server.stop().await;
}

/// What `client` downloads for `certificate`, opened with `password`; `None` when the password
/// does not open it (any other failure panics).
async fn pull(
    client: &AgentClient,
    certificate: &Certificate,
    password: &str,
) -> (Vec<u8>, Option<String>) {
    use certkeep_api_types::pfx::{PfxError, open_pfx};
    let pfx = client
        .download(&format!("/agent/v1/certificates/{}/pfx", certificate.id))
        .await
        .unwrap();
    let thumbprint = match open_pfx(&pfx, password) {
        Ok(opened) => Some(opened.thumbprint),
        Err(PfxError::WrongPassword) => None,
        Err(e) => panic!("the PFX does not open: {e}"),
    };
    (pfx, thumbprint)
}

/// The server keeps built PFX files per agent and version: two agents with the same
/// certificate each get, warm or cold, a PFX that opens with their own password only; a
/// password or PFX mode changed through the API, or a new version, gives a new PFX at the next
/// pull; every pull is audited.
#[tokio::test(flavor = "multi_thread")]
async fn cached_pfx_files_follow_each_agent_password_and_the_version() {
    const ROTATED: &str = "rotated password for iis-a";
    const OTHER: &str = "iis-b has a password of its own";
    let f = Fixture::new().await;
    let cert = f.certificate("web", &["www.example.com"]).await.unwrap();
    let (a, a_config, _) = f.enrolled("iis-a").await;
    let (b, b_token) = f
        .pending_agent("iis-b", OTHER, time::Duration::hours(24))
        .await
        .unwrap();
    enroll(f.enroll_options("iis-b", b_token)).await.unwrap();
    let b_state = f.dir.path().join("iis-b").join("state");
    let admin = f.server.admin_token();
    for agent in ["iis-a", "iis-b"] {
        f.assign(agent, "web", &admin).await;
    }
    let a_client = client_for(
        &f,
        &certkeep_agent::identity::Identity::load(&a_config.state_dir).unwrap(),
    );
    let b_client = client_for(
        &f,
        &certkeep_agent::identity::Identity::load(&b_state).unwrap(),
    );
    let first = current_thumbprint(&f, &cert).await;

    // Two builds of the same PFX differ (fresh salts), so equal bytes mean a cached file.
    let leaf = TestCa::new().leaf(&["www.example.com"], KeyKind::Ecdsa);
    let build = || {
        certkeep_api_types::pfx::build_pfx(
            &leaf.key_pkcs8_der,
            &leaf.chain_der,
            PASSWORD,
            certkeep_api_types::agent::PfxEncryption::Legacy,
        )
        .unwrap()
    };
    assert_ne!(build(), build());
    let (a1, opened) = pull(&a_client, &cert, PASSWORD).await;
    assert_eq!(opened.as_deref(), Some(first.as_str()));
    let (b1, opened) = pull(&b_client, &cert, OTHER).await;
    assert_eq!(opened.as_deref(), Some(first.as_str()));
    for _ in 0..2 {
        let (a, opened) = pull(&a_client, &cert, OTHER).await;
        assert_eq!(a, a1, "served from the cache");
        assert_eq!(
            opened, None,
            "iis-a's PFX does not open with iis-b's password"
        );
        let (b, opened) = pull(&b_client, &cert, PASSWORD).await;
        assert_eq!(b, b1, "served from the cache");
        assert_eq!(
            opened, None,
            "iis-b's PFX does not open with iis-a's password"
        );
    }
    assert_ne!(a1, b1);

    // iis-a's password is rotated: its next PFX opens with the new password only.
    f.call(
        reqwest::Method::PATCH,
        "/api/v1/agents/iis-a",
        &admin,
        Some(serde_json::json!({ "ccs_password": ROTATED })),
        200,
    )
    .await;
    let (a2, opened) = pull(&a_client, &cert, PASSWORD).await;
    assert_eq!(opened, None, "the old password no longer opens it");
    assert_ne!(a2, a1);
    let (a3, opened) = pull(&a_client, &cert, ROTATED).await;
    assert_eq!(opened.as_deref(), Some(first.as_str()));
    assert_eq!(a3, a2, "the new PFX is cached in turn");
    let (b2, _) = pull(&b_client, &cert, OTHER).await;
    assert_eq!(b2, b1, "iis-b is not affected");

    // iis-b's PFX mode changes: its next PFX is built anew, and still opens with its password.
    f.call(
        reqwest::Method::PATCH,
        "/api/v1/agents/iis-b",
        &admin,
        Some(serde_json::json!({ "pfx_encryption": "aes256" })),
        200,
    )
    .await;
    let (b3, opened) = pull(&b_client, &cert, OTHER).await;
    assert_ne!(b3, b1, "not the legacy file from the cache");
    assert_eq!(opened.as_deref(), Some(first.as_str()));

    // A new version: both agents get it, each with their own password.
    f.issue(&cert, &["www.example.com"]).await.unwrap();
    let renewed = current_thumbprint(&f, &cert).await;
    assert_ne!(renewed, first);
    let (_, opened) = pull(&a_client, &cert, ROTATED).await;
    assert_eq!(opened.as_deref(), Some(renewed.as_str()));
    let (_, opened) = pull(&b_client, &cert, OTHER).await;
    assert_eq!(opened.as_deref(), Some(renewed.as_str()));

    // Every pull is audited, cached or not.
    let pulls = f
        .server
        .state
        .db
        .list_audit(&certkeep_server::db::audit::AuditFilter {
            action: Some("certificate.pfx_pull".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let by = |agent: AgentId| {
        pulls
            .iter()
            .filter(|e| e.actor == format!("agent:{agent}"))
            .count()
    };
    assert_eq!((by(a), by(b)), (6, 6));
    f.server.stop().await;
}
