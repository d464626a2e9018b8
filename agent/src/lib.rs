//! certkeep-agent: enrolls with a certkeep server, pulls certificates over mTLS and installs them
//! into the targets the server defines for it (IIS Centralized Certificate Store folders, PEM
//! directories).
//!
//! `main.rs` only parses the command line; everything it runs is here, so tests can drive the
//! agent against any server URL and CA: [`enroll`], [`sync_once`], [`run`], [`status`].

pub mod client;
pub mod config;
mod fsio;
mod host;
pub mod identity;
pub mod install;
pub mod poll;
mod probe;
mod reload;
#[cfg(windows)]
pub mod service;
pub mod state;
mod sync;

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use certkeep_api_types::agent::EnrollRequest;
use reqwest::Url;
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

pub use crate::sync::{ProbeOutcome, SyncOutcome, probe_once, run, sync_once};
use crate::{
    client::AgentClient,
    config::{Config, config_toml, default_state_dir},
    identity::Identity,
    state::SyncState,
};

/// The current time; the only clock read in the agent.
#[expect(
    clippy::disallowed_methods,
    reason = "the agent's single clock read; decisions in `poll` take `now` as an argument"
)]
pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A time as RFC 3339, e.g. `2026-12-23T13:10:16Z`.
pub fn format_time(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Log filter from `RUST_LOG`, `info` by default.
pub fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Inputs of [`enroll`].
pub struct EnrollOptions {
    /// Agent listener URL.
    pub server: Url,
    /// certkeep's internal CA (PEM), the only root trusted for the listener.
    pub ca_file: PathBuf,
    /// One-time join token.
    pub token: Zeroizing<String>,
    /// Config file: its `state_dir` is used if it exists, a complete one is written if not.
    pub config_path: PathBuf,
    /// State directory when there is no config yet (default: platform default).
    pub state_dir: Option<PathBuf>,
}

/// What [`enroll`] did.
#[derive(Debug)]
pub struct Enrolled {
    /// The agent's id.
    pub agent_id: Uuid,
    /// End of the client certificate's validity.
    pub not_after: OffsetDateTime,
    /// Where key and certificate were written.
    pub state_dir: PathBuf,
    /// The config file was written (it needs no edit: targets come from the server).
    pub config_written: bool,
}

/// Generates a key, exchanges the join token for a client certificate and stores both.
///
/// Also used to re-enroll after the certificate expired: the old key and certificate are replaced.
pub async fn enroll(options: EnrollOptions) -> anyhow::Result<Enrolled> {
    let ca_file = std::path::absolute(&options.ca_file)
        .with_context(|| format!("bad CA file path {}", options.ca_file.display()))?;
    let ca_pem =
        fs::read(&ca_file).with_context(|| format!("cannot read CA file {}", ca_file.display()))?;
    let existing = config::enroll_settings(&options.config_path)?;
    let state_dir = match &existing {
        Some(settings) => {
            if settings.server.as_ref() != Some(&options.server) {
                bail!(
                    "{} points at another server; edit it or pass --config for a new file",
                    options.config_path.display()
                );
            }
            settings.state_dir.clone()
        }
        None => match options.state_dir {
            Some(dir) => std::path::absolute(dir)?,
            None => default_state_dir(),
        },
    };
    create_private_dir(&state_dir)?;
    let _lock = state::lock(&state_dir)?;

    let (key_pem, csr_pem) = identity::new_key_and_csr()?;
    let client = AgentClient::new(&options.server, &ca_pem, None)?;
    let response = client
        .enroll(&EnrollRequest {
            token: options.token.to_string(),
            csr_pem,
        })
        .await
        .context("enrollment refused")?;
    let identity = identity::accept_enrollment(&state_dir, key_pem, response)?;
    tracing::info!(agent.id = %identity.agent_id, "enrolled");

    let config_written = existing.is_none();
    if config_written {
        if let Some(parent) = options.config_path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(
            &options.config_path,
            config_toml(&options.server, &ca_file, &state_dir),
        )
        .with_context(|| format!("cannot write {}", options.config_path.display()))?;
    }
    Ok(Enrolled {
        agent_id: identity.agent_id,
        not_after: identity.not_after,
        state_dir,
        config_written,
    })
}

/// A human-readable status: identity, certificate expiry, last sync and its targets. No network.
pub fn status(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "server:      {}", config.server);
    match Identity::load(&config.state_dir) {
        Ok(identity) => {
            let renew_at = identity.not_before + (identity.not_after - identity.not_before) * 2 / 3;
            let _ = writeln!(out, "agent id:    {}", identity.agent_id);
            let _ = writeln!(
                out,
                "certificate: valid until {} (renews from {})",
                format_time(identity.not_after),
                format_time(renew_at)
            );
            if let Err(e) = identity.ensure_valid(now()) {
                let _ = writeln!(out, "             {e}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "agent id:    {e:#}");
        }
    }
    match SyncState::load(&config.state_dir).last_sync {
        None => {
            let _ = writeln!(out, "last sync:   never");
        }
        Some(last) => {
            let result = match (last.success, last.unchanged) {
                (true, true) => "ok, unchanged",
                (true, false) => "ok",
                (false, _) => "FAILED",
            };
            let _ = writeln!(
                out,
                "last sync:   {} {result}: {} installed, {} failed, {} kept",
                format_time(last.at),
                last.installed,
                last.failed,
                last.kept
            );
            for target in &last.targets {
                let _ = writeln!(out, "  target: {target}");
            }
            for error in &last.errors {
                let _ = writeln!(out, "  error: {error}");
            }
            for note in &last.notes {
                let _ = writeln!(out, "  note:  {note}");
            }
        }
    }
    out
}

/// Creates the state directory, owner-only on Unix.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    Ok(())
}
