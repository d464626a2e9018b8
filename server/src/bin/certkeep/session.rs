//! What every API subcommand shares: the connection flags, the output format, and running one
//! command so that its failure becomes the exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use zeroize::Zeroizing;

use crate::client::{CliError, Client};

/// How to reach the API. Every API subcommand accepts these.
#[derive(Args, Debug)]
pub(crate) struct ClientArgs {
    /// API base URL.
    #[arg(
        long,
        global = true,
        env = "CERTKEEP_SERVER",
        default_value = "https://127.0.0.1:8443"
    )]
    pub(crate) server: String,
    /// File holding the API token (`-` for stdin). Else the CERTKEEP_TOKEN environment variable.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// PEM CA certificate to trust for the server (e.g. certkeep-data/ca.pem).
    #[arg(long, global = true, env = "CERTKEEP_CA_FILE", value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub(crate) output: Output,
}

/// Output format of API subcommands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Readable tables.
    Table,
    /// The API's JSON, pretty-printed.
    Json,
}

/// Runs one API subcommand; a failure is printed on stderr and becomes the exit code.
pub(crate) async fn run(
    args: &ClientArgs,
    command: impl AsyncFnOnce(&Session) -> Result<(), CliError>,
) -> ExitCode {
    let outcome = match Session::open(args) {
        Ok(s) => command(&s).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certkeep: {}", e.message());
            e.exit_code()
        }
    }
}

/// An API subcommand with its connection settings.
pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) output: Output,
}

impl Session {
    /// Connects per `args`; the token comes from `--token-file` or `CERTKEEP_TOKEN`.
    fn open(args: &ClientArgs) -> Result<Self, CliError> {
        let env_token = std::env::var("CERTKEEP_TOKEN").ok().map(Zeroizing::new);
        Ok(Self {
            client: Client::new(
                &args.server,
                env_token,
                args.token_file.as_ref(),
                args.ca_file.as_ref(),
            )?,
            output: args.output,
        })
    }

    /// Prints `value` as JSON, or the table `render` makes of `typed`.
    pub(crate) fn print<T>(&self, (typed, value): (T, serde_json::Value), render: impl FnOnce(T)) {
        match self.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            ),
            Output::Table => render(typed),
        }
    }
}
