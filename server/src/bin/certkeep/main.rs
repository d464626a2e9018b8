//! `certkeep`: parses the command line, starts tracing and dispatches to one module per
//! subcommand. The API subcommands (`account`, `cert`, `agent`, `token`, `audit`, `domain`) talk to the API
//! over HTTPS; the local ones (`serve`, `migrate`, `rekey`, `dns-key`, `audit verify --local`)
//! open the configured database.
//!
//! Secrets (HMAC keys, passwords, the API token) come from files, stdin (`-`) or the
//! environment, never from arguments. Exit codes: 0 ok, 1 negative answer (chain broken,
//! issuance failed), 2 usage, 3 API refusal (4xx), 4 server or network error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::session::ClientArgs;

mod account;
mod agent;
mod audit;
mod cert;
mod cert_lifecycle;
mod client;
mod dns_key;
mod domain;
mod notify;
mod rekey;
mod serve;
mod session;
mod table;
mod target;
mod token;

/// certkeep: the one guarded place that holds EAB secrets, orders, renews and delivers certificates.
#[derive(Parser)]
#[command(version, about, long_about = None, after_help = "Example:\n  certkeep serve --config /etc/certkeep/certkeep.toml")]
struct Cli {
    #[command(flatten)]
    server: serve::ServerArgs,
    #[command(subcommand)]
    command: Command,
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
    DnsKey(dns_key::DnsKeyCommand),
    /// ACME accounts (API client).
    #[command(
        after_help = "Example:\n  CERTKEEP_TOKEN=$(cat certkeep-data/admin-token) certkeep --ca-file certkeep-data/ca.pem account list"
    )]
    Account {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: account::AccountCommand,
    },
    /// Certificates (API client).
    #[command(
        after_help = "Example:\n  certkeep cert add --name www --dns www.example.edu --account incommon --wait"
    )]
    Cert {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: cert::CertCommand,
    },
    /// Agents (API client).
    #[command(
        after_help = "Example:\n  certkeep agent add --name web1 --ccs-password-file ccs.txt"
    )]
    Agent {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: agent::AgentCommand,
    },
    /// API tokens (API client).
    #[command(
        after_help = "Example:\n  certkeep token create --name ci --scope issuer --domain '*.ci.example.edu'"
    )]
    Token {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Notifications: mail and webhook channels, subscriptions, mutes, deliveries (API client).
    #[command(
        after_help = "Example:\n  certkeep notify channel add --name ops-hook --webhook-url https://hooks.example.edu/certkeep\n  certkeep notify list --state failed"
    )]
    Notify {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: notify::NotifyCommand,
    },
    /// Domain validations at the CAs and when they lapse (API client).
    #[command(after_help = "Example:\n  certkeep domain list --lapsing-within 30d")]
    Domain {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: domain::DomainCommand,
    },
    /// The audit log (API client; `verify --local` reads the database directly).
    #[command(after_help = "Example:\n  certkeep audit verify")]
    Audit {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    certkeep_server::init_logging();
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

/// Runs one subcommand.
async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let args = &cli.server;
    let done = |()| ExitCode::SUCCESS;
    match cli.command {
        Command::Openapi => {
            println!("{}", certkeep_server::api::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::PrintConfig => serve::print_config(args).map(done),
        Command::Migrate => serve::migrate(args).await.map(done),
        Command::Serve { no_migrate } => serve::serve(args, no_migrate).await.map(done),
        Command::DnsKey(command) => dns_key::run(args, command).await.map(done),
        Command::Rekey { new_identity } => rekey::rekey(args, &new_identity).await.map(done),
        Command::Audit {
            command: audit::AuditCommand::Verify { local: true },
            ..
        } => audit::verify_local(args).await,
        Command::Account { client, command } => {
            Ok(session::run(&client, async |s| account::run(s, command).await).await)
        }
        Command::Cert { client, command } => {
            Ok(session::run(&client, async |s| cert::run(s, command).await).await)
        }
        Command::Agent { client, command } => {
            Ok(session::run(&client, async |s| agent::run(s, command).await).await)
        }
        Command::Token { client, command } => {
            Ok(session::run(&client, async |s| token::run(s, command).await).await)
        }
        Command::Notify { client, command } => {
            Ok(session::run(&client, async |s| notify::run(s, command).await).await)
        }
        Command::Audit { client, command } => {
            Ok(session::run(&client, async |s| audit::run(s, command).await).await)
        }
        Command::Domain { client, command } => {
            Ok(session::run(&client, async |s| domain::run(s, command).await).await)
        }
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
