//! `certkeep`: parses the command line, starts tracing, loads config, calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use certkeep_server::cli::{self, ApiCommand, AuditCommand};
use certkeep_server::config::Config;
use certkeep_server::{bootstrap, now};
use clap::{Args, Parser, Subcommand};
use figment::Figment;
use figment::providers::Serialized;

/// certkeep: the one guarded place that holds EAB secrets, orders, renews and delivers certificates.
#[derive(Parser)]
#[command(version, about, long_about = None, after_help = "Example:\n  certkeep serve --config /etc/certkeep/certkeep.toml")]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags that override the configuration file and environment. Secrets are never flags.
#[derive(Args)]
struct ServerArgs {
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

#[derive(Subcommand)]
enum Command {
    /// Run the server: API and agent listeners, issuance and renewal workers.
    #[command(
        after_help = "Example:\n  certkeep serve                 # embedded SQLite in ./certkeep-data\n  CERTKEEP_DATABASE_URL_FILE=/run/secrets/db certkeep serve"
    )]
    Serve {
        /// Do not apply migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending database migrations and exit.
    #[command(
        after_help = "Example:\n  CERTKEEP_DATABASE_URL_FILE=/run/secrets/db certkeep migrate"
    )]
    Migrate,
    /// Print the effective configuration with secrets redacted.
    #[command(after_help = "Example:\n  certkeep --config certkeep.toml print-config")]
    PrintConfig,
    /// Print the OpenAPI document.
    #[command(after_help = "Example:\n  certkeep openapi > openapi/openapi.json")]
    Openapi,
    /// Re-encrypt every stored secret to a new age identity, in one transaction. Refused while
    /// a server runs on the database.
    #[command(
        after_help = "Example:\n  age-keygen -o new-identity.txt && certkeep rekey --new-identity new-identity.txt"
    )]
    Rekey {
        /// File holding the new identity (AGE-SECRET-KEY-1... line).
        #[arg(long)]
        new_identity: PathBuf,
    },
    /// TSIG keys of dns-01 solvers, stored age-encrypted in the database (runs against it
    /// directly, like `migrate`).
    #[command(subcommand)]
    DnsKey(DnsKeyCommand),
    /// ACME accounts (API client).
    #[command(
        after_help = "Example:\n  CERTKEEP_TOKEN=$(cat certkeep-data/admin-token) certkeep --ca-file certkeep-data/ca.pem account list"
    )]
    Account {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::AccountCommand,
    },
    /// Certificates (API client).
    #[command(
        after_help = "Example:\n  certkeep cert add --name www --dns www.example.edu --account incommon --wait"
    )]
    Cert {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::CertCommand,
    },
    /// Agents (API client).
    #[command(
        after_help = "Example:\n  certkeep agent add --name web1 --ccs-password-file ccs.txt"
    )]
    Agent {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::AgentCommand,
    },
    /// API tokens (API client).
    #[command(
        after_help = "Example:\n  certkeep token create --name ci --scope issuer --domain '*.ci.example.edu'"
    )]
    Token {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::TokenCommand,
    },
    /// The audit log (API client; `verify --local` reads the database directly).
    #[command(after_help = "Example:\n  certkeep audit verify")]
    Audit {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum DnsKeyCommand {
    /// Store (or replace) the secret of a TSIG key, sealed with the server's age identity.
    #[command(
        after_help = "Example:\n  certkeep dns-key import --key-name certkeep. --secret-file tsig.key\n  grep -o '[A-Za-z0-9+/=]\\{20,\\}' /etc/bind/certkeep.key | certkeep dns-key import --key-name certkeep. --secret-file -"
    )]
    Import {
        /// TSIG key name, as configured on the DNS server and in `solvers.dns01.key_name`.
        #[arg(long)]
        key_name: String,
        /// File holding the base64 secret (as in BIND's `secret "..."`); `-` reads stdin.
        #[arg(long)]
        secret_file: PathBuf,
    },
}

/// Reads a secret from a file, or from standard input for `-`.
fn read_secret_source(path: &std::path::Path) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let mut text = zeroize::Zeroizing::new(String::new());
    if path.as_os_str() == "-" {
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("read stdin")?;
    } else {
        *text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    }
    Ok(text)
}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CERTKEEP_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("certkeep: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("certkeep: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: &ServerArgs) -> anyhow::Result<Config> {
    let mut flags = Figment::new();
    if let Some(d) = &args.data_dir {
        flags = flags.merge(Serialized::default("data_dir", d));
    }
    if let Some(a) = args.api_addr {
        flags = flags.merge(Serialized::default("api_addr", a));
    }
    if let Some(a) = args.agent_addr {
        flags = flags.merge(Serialized::default("agent_addr", a));
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    Ok(Config::load(args.config.as_deref(), flags, &env)?)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Openapi => {
            println!("{}", certkeep_server::api::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::PrintConfig => {
            print!("{}", load_config(&cli.server)?.to_redacted_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let config = load_config(&cli.server)?;
            let db = bootstrap::open_db(&config).await?;
            bootstrap::migrate(&db).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { no_migrate } => {
            let mut config = load_config(&cli.server)?;
            config.migrate_on_start &= !no_migrate;
            let listeners = certkeep_server::Listeners::bind(&config)?;
            let state = bootstrap::prepare(config, now()).await?;
            certkeep_server::serve(state, listeners, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DnsKey(DnsKeyCommand::Import {
            key_name,
            secret_file,
        }) => {
            let config = load_config(&cli.server)?;
            let secrets = bootstrap::load_secrets(&config)?;
            let text = read_secret_source(&secret_file)?;
            certkeep_server::solvers::dns01::decode_secret(&text)
                .map_err(|e| anyhow::anyhow!("{e} (key {key_name})"))?;
            let db = bootstrap::open_db(&config).await?;
            if config.migrate_on_start {
                bootstrap::migrate(&db).await?;
            }
            db.store_tsig_key(&secrets, &key_name, text.trim().as_bytes(), now())
                .await
                .context("store the TSIG secret")?;
            println!(
                "stored the TSIG secret of key {key_name}; solvers.dns01 entries with this key_name and no secret_file use it from the next start"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Rekey { new_identity } => {
            let config = load_config(&cli.server)?;
            let old = bootstrap::load_secrets(&config)?;
            let new = certkeep_server::secrets::Secrets::load(&new_identity)?;
            // On SQLite this takes the lock file a running server holds: refused while one runs.
            let db = bootstrap::open_db_exclusive(&config).await?;
            let alive_since = now() - std::time::Duration::from_secs(config.liveness.stale_secs);
            let count = db
                .rekey(&old, &new, alive_since)
                .await
                .context("re-encrypt secrets")?;
            println!(
                "re-encrypted {count} secrets to {}. Now point age_identity_file at {} (or move it to {}) before the next start, and keep the old identity until backups made with it expire.",
                new.recipient(),
                new_identity.display(),
                config.identity_path().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Verify { local: true },
            ..
        } => {
            let config = load_config(&cli.server)?;
            let db = bootstrap::open_db(&config).await?;
            match db.verify_audit_chain().await? {
                Ok(n) => {
                    println!("audit chain intact: {n} events");
                    Ok(ExitCode::SUCCESS)
                }
                Err(b) => {
                    println!("audit chain BROKEN at event {}: {}", b.seq, b.reason);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Account { client, command } => {
            Ok(cli::run(&client, ApiCommand::Account(command)).await)
        }
        Command::Cert { client, command } => Ok(cli::run(&client, ApiCommand::Cert(command)).await),
        Command::Agent { client, command } => {
            Ok(cli::run(&client, ApiCommand::Agent(command)).await)
        }
        Command::Token { client, command } => {
            Ok(cli::run(&client, ApiCommand::Token(command)).await)
        }
        Command::Audit { client, command } => {
            Ok(cli::run(&client, ApiCommand::Audit(command)).await)
        }
    }
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }
}
