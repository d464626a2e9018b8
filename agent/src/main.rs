//! `certkeep-agent` command line: parses arguments, starts logging, loads the config and calls
//! the library. Exit codes: 0 all current, 1 something failed, 2 usage or config error.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use certkeep_agent::{
    EnrollOptions,
    config::{Config, default_config_path, parse_server},
};
use clap::{ArgGroup, Args, Parser, Subcommand};
use zeroize::Zeroizing;

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// Pulls certificates from a certkeep server over mTLS and installs them into the targets the
/// server defines for this host (IIS Centralized Certificate Store folders, PEM directories).
#[derive(Parser)]
#[command(
    name = "certkeep-agent",
    version,
    after_help = "Example, from enrollment to files:
  certkeep-agent enroll --server https://certkeep.example.net:8444 --ca-file ca.pem --token-file token.txt
  certkeep-agent sync
  (targets and assignments are managed on the server: certkeep agent target add ...)
  certkeep-agent status"
)]
struct Cli {
    /// Config file [default: %ProgramData%\certkeep\agent.toml on Windows,
    /// /etc/certkeep/agent.toml elsewhere]
    #[arg(
        long,
        global = true,
        env = "CERTKEEP_AGENT_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll this host: generate a key here and exchange a one-time join token for a client
    /// certificate. Writes the config if there is none; it needs no edit. Also used to re-enroll after the
    /// agent certificate expired.
    #[command(after_help = "Example:
  certkeep-agent enroll --server https://certkeep.example.net:8444 \\
      --ca-file /etc/certkeep/ca.pem --token-file /root/join-token.txt
  echo \"$TOKEN\" | certkeep-agent enroll --server https://certkeep.example.net:8444 \\
      --ca-file ca.pem --token-file -")]
    Enroll(EnrollArgs),
    /// Sync once: fetch the manifest, install what changed, report. Exit code 0 when everything
    /// is current, 1 when anything failed, 2 for usage or config errors.
    #[command(after_help = "Example:\n  certkeep-agent --config /etc/certkeep/agent.toml sync")]
    Sync,
    /// Probe what the targets serve (TLS with SNI per name) and report it; installs nothing.
    /// Prints one line per name; the server judges each (serving, stale, wrong, unreachable).
    #[command(after_help = "Example:\n  certkeep-agent --config /etc/certkeep/agent.toml probe")]
    Probe,
    /// Sync every `interval_secs` (±10 % jitter, backoff after errors) until Ctrl-C or SIGTERM.
    #[command(after_help = "Example:\n  certkeep-agent --config /etc/certkeep/agent.toml run")]
    Run,
    /// Show the agent id, certificate expiry and the last sync result. No network access.
    #[command(after_help = "Example:\n  certkeep-agent status")]
    Status,
    /// Manage the Windows service (run as Administrator).
    #[cfg(windows)]
    #[command(after_help = "Example:
  certkeep-agent --config C:\\ProgramData\\certkeep\\agent.toml service install
  certkeep-agent service start")]
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
}

#[derive(Args)]
#[command(group(ArgGroup::new("token_source").required(true).args(["token_file", "token"])))]
struct EnrollArgs {
    /// Agent listener URL, e.g. https://certkeep.example.net:8444
    #[arg(long, value_name = "URL")]
    server: String,
    /// certkeep's internal CA certificate (the server's <data_dir>/ca.pem)
    #[arg(long, value_name = "FILE")]
    ca_file: PathBuf,
    /// File holding the join token; `-` reads standard input. Preferred over --token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The join token itself. Other local users can see it in the process list and it lands in
    /// shell history: prefer --token-file.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// State directory when no config exists yet [default: %ProgramData%\certkeep\state on
    /// Windows, /var/lib/certkeep-agent elsewhere]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[cfg(windows)]
#[derive(Subcommand)]
enum ServiceAction {
    /// Register the service (automatic start, restart on failure) with this --config.
    Install,
    /// Stop and remove the service.
    Uninstall,
    /// Start the service.
    Start,
    /// Stop the service.
    Stop,
    /// Entry point for the Service Control Manager; not for interactive use.
    #[command(hide = true)]
    Run,
}

fn main() -> ExitCode {
    // Err only if a provider is already installed, which cannot happen this early.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let config_path = cli.config.unwrap_or_else(default_config_path);

    #[cfg(windows)]
    if let Command::Service {
        action: ServiceAction::Run,
    } = cli.command
    {
        return exit(certkeep_agent::service::dispatch(config_path), EXIT_FAILED);
    }

    tracing_subscriber::fmt()
        .with_env_filter(certkeep_agent::log_filter())
        .with_writer(std::io::stderr)
        .init();

    match cli.command {
        Command::Enroll(args) => exit(enroll(args, config_path), EXIT_FAILED),
        Command::Sync => with_config(&config_path, |config| {
            match runtime()?.block_on(certkeep_agent::sync_once(&config)) {
                Ok(outcome) if outcome.is_success() => Ok(ExitCode::SUCCESS),
                Ok(_) => Ok(ExitCode::from(EXIT_FAILED)),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    Ok(ExitCode::from(EXIT_FAILED))
                }
            }
        }),
        Command::Probe => with_config(&config_path, |config| {
            let outcome = runtime()?.block_on(certkeep_agent::probe_once(&config))?;
            for p in &outcome.probes {
                let seen = p
                    .thumbprint
                    .as_deref()
                    .or(p.error.as_deref())
                    .unwrap_or("-");
                println!("{} {} {}: {seen}", p.target, p.address, p.name);
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Run => with_config(&config_path, |config| {
            runtime()?.block_on(certkeep_agent::run(&config, shutdown_signal()));
            Ok(ExitCode::SUCCESS)
        }),
        Command::Status => with_config(&config_path, |config| {
            print!("{}", certkeep_agent::status(&config));
            Ok(ExitCode::SUCCESS)
        }),
        #[cfg(windows)]
        Command::Service { action } => {
            use certkeep_agent::service;
            let result = match action {
                ServiceAction::Install => service::install(&config_path),
                ServiceAction::Uninstall => service::uninstall(),
                ServiceAction::Start => service::start(),
                ServiceAction::Stop => service::stop(),
                ServiceAction::Run => unreachable!("dispatched above"),
            };
            exit(result, EXIT_FAILED)
        }
    }
}

fn enroll(args: EnrollArgs, config_path: PathBuf) -> anyhow::Result<()> {
    let server = parse_server(&args.server)?;
    let token = match (&args.token_file, args.token) {
        (Some(path), _) => read_token(path)?,
        (None, Some(token)) => Zeroizing::new(token.trim().to_owned()),
        (None, None) => anyhow::bail!("give --token-file or --token"),
    };
    anyhow::ensure!(!token.is_empty(), "the join token is empty");
    let enrolled = runtime()?.block_on(certkeep_agent::enroll(EnrollOptions {
        server,
        ca_file: args.ca_file,
        token,
        config_path: config_path.clone(),
        state_dir: args.state_dir,
    }))?;
    println!(
        "enrolled as agent {}; certificate valid until {}; key and certificate in {}",
        enrolled.agent_id,
        certkeep_agent::format_time(enrolled.not_after),
        enrolled.state_dir.display()
    );
    if enrolled.config_written {
        println!(
            "wrote {}; targets come from the server: run `certkeep-agent sync`",
            config_path.display()
        );
    }
    Ok(())
}

fn read_token(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let mut raw = Zeroizing::new(String::new());
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut raw)
            .context("cannot read the token from standard input")?;
    } else {
        *raw = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read token file {}", path.display()))?;
    }
    Ok(Zeroizing::new(
        raw.trim_start_matches('\u{feff}').trim().to_owned(),
    ))
}

/// Loads the config (exit 2 on failure) and runs `f` with it.
fn with_config(path: &Path, f: impl FnOnce(Config) -> anyhow::Result<ExitCode>) -> ExitCode {
    match Config::load(path) {
        Ok(config) => f(config).unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn exit(result: anyhow::Result<()>, code: u8) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Resolves on Ctrl-C, or SIGTERM on Unix (systemd stop).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("stopping");
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
