//! The release `certkeep serve` binary as a child process on a fresh data directory (embedded
//! SQLite, or a database of the shared throwaway PostgreSQL cluster), with an HTTPS client
//! holding its admin token: what the issuance and intake benchmarks measure.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use certkeep_testsupport::free_port;
use certkeep_testsupport::pebble::Pebble;
use certkeep_testsupport::postgres::PgCluster;
use certkeep_testsupport::process::LoggedChild;

/// A `certkeep serve` child process on a fresh data directory, killed on drop.
pub struct Server {
    /// The server process.
    pub child: LoggedChild,
    _dir: tempfile::TempDir,
    api: String,
    token: String,
    http: reqwest::Client,
}

impl Server {
    /// Starts `binary` on `backend` (`sqlite` or `postgres`) with `config` (TOML sections)
    /// appended to the addresses and data directory, and waits until it serves.
    pub async fn start(binary: &Path, backend: &str, config: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let api_port = free_port();
        let config = format!(
            "data_dir = {data:?}\napi_addr = \"127.0.0.1:{api_port}\"\nagent_addr = \"127.0.0.1:{}\"\n{config}",
            free_port(),
        );
        let config_path = dir.path().join("certkeep.toml");
        std::fs::write(&config_path, config)?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdout(Stdio::null());
        if backend == "postgres" {
            let cluster = PgCluster::shared().context("initdb/pg_ctl not on PATH")?;
            let url_file = dir.path().join("database-url");
            std::fs::write(&url_file, cluster.create_database().await)?;
            command.env("CERTKEEP_DATABASE_URL_FILE", &url_file);
        }
        // Reading the log until the server serves blocks; keep it off the runtime's workers.
        let child = tokio::task::spawn_blocking(move || {
            LoggedChild::start(&mut command, "certkeep is serving")
        })
        .await?
        .map_err(|log| anyhow::anyhow!("certkeep serve {log}"))?;
        let token = std::fs::read_to_string(data.join("admin-token"))?
            .trim()
            .to_owned();
        let ca = std::fs::read(data.join("ca.pem"))?;
        let http = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca)?)
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Self {
            child,
            _dir: dir,
            api: format!("https://127.0.0.1:{api_port}"),
            token,
            http,
        })
    }

    /// `POST /api/v1{path}` with `body` as the admin; the answer, which must be a success.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let rsp = self
            .http
            .post(format!("{}/api/v1{path}", self.api))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let status = rsp.status();
        let text = rsp.text().await?;
        ensure!(
            status.is_success(),
            "POST {path}: {status}: {text}\nserver log:\n{}",
            self.child.tail(20)
        );
        Ok(serde_json::from_str(&text)?)
    }

    /// Registers the ACME account `pebble` at `directory_url` (Pebble's directory, or a proxy in
    /// front of it) with Pebble's first EAB key, for names under `*.certkeep.bench.test`.
    pub async fn register_pebble_account(
        &self,
        pebble: &Pebble,
        directory_url: &str,
    ) -> anyhow::Result<()> {
        let eab = &pebble.eab[0];
        let account = self
            .post(
                "/acme-accounts",
                &serde_json::json!({
                    "name": "pebble",
                    "directory_url": directory_url,
                    "contact": ["mailto:bench@certkeep.bench.test"],
                    "allowed_domains": ["*.certkeep.bench.test"],
                    "eab_kid": eab.kid,
                    "eab_hmac_key": eab.b64url(),
                    "extra_roots_pem": pebble.pki.ca_pem,
                }),
            )
            .await?;
        ensure!(
            account["state"] == "valid",
            "account registration failed: {account}"
        );
        Ok(())
    }

    /// `GET {path}` (from the root, e.g. `/metrics`) as the admin; the body, which must be a success.
    pub async fn get(&self, path: &str) -> anyhow::Result<String> {
        let rsp = self
            .http
            .get(format!("{}{path}", self.api))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?;
        Ok(rsp.text().await?)
    }
}
