//! The local commands that run the server or prepare its database: `serve`, `migrate`,
//! `print-config`, and the flags that override the configuration for every local command.

use std::net::SocketAddr;
use std::path::PathBuf;

use certkeep_server::config::Config;
use certkeep_server::{bootstrap, now};
use clap::Args;
use figment::Figment;
use figment::providers::Serialized;

/// Flags that override the configuration file and environment. Secrets are never flags.
#[derive(Args)]
pub(crate) struct ServerArgs {
    /// TOML configuration file (see deploy/certkeep.example.toml).
    #[arg(long, global = true, env = "CERTKEEP_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (SQLite database, age identity, ca.pem, admin-token).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// API listener address.
    #[arg(long, global = true)]
    api_addr: Option<SocketAddr>,
    /// Agent mTLS listener address.
    #[arg(long, global = true)]
    agent_addr: Option<SocketAddr>,
}

impl ServerArgs {
    /// The configuration: defaults, file, `CERTKEEP_*` environment, then these flags.
    pub(crate) fn load(&self) -> anyhow::Result<Config> {
        let mut flags = Figment::new();
        if let Some(d) = &self.data_dir {
            flags = flags.merge(Serialized::default("data_dir", d));
        }
        if let Some(a) = self.api_addr {
            flags = flags.merge(Serialized::default("api_addr", a));
        }
        if let Some(a) = self.agent_addr {
            flags = flags.merge(Serialized::default("agent_addr", a));
        }
        Ok(Config::load(self.config.as_deref(), flags)?)
    }
}

/// `certkeep serve`: the API and agent listeners, issuance and renewal workers.
pub(crate) async fn serve(args: &ServerArgs, no_migrate: bool) -> anyhow::Result<()> {
    let mut config = args.load()?;
    config.migrate_on_start &= !no_migrate;
    let listeners = certkeep_server::Listeners::bind(&config)?;
    let state = bootstrap::prepare(config, now()).await?;
    certkeep_server::serve(state, listeners, shutdown_signal()).await
}

/// `certkeep migrate`: applies pending migrations (on SQLite refused while a server runs on the
/// data directory; a starting server migrates it itself).
pub(crate) async fn migrate(args: &ServerArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let db = bootstrap::open_db_exclusive(&config).await?;
    bootstrap::migrate(&db).await?;
    Ok(())
}

/// `certkeep print-config`: the effective configuration, secrets redacted.
pub(crate) fn print_config(args: &ServerArgs) -> anyhow::Result<()> {
    print!("{}", args.load()?.to_redacted_toml());
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
