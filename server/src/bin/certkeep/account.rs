//! `certkeep account ...`: ACME accounts, through the API.

use std::path::PathBuf;

use certkeep_api_types::api::{AccountResponse, CreateAccountRequest, EabBinding};
use certkeep_api_types::enums::AccountState;
use clap::Subcommand;
use reqwest::Method;

use crate::client::{CliError, encode, read_secret};
use crate::session::Session;
use crate::table::Table;

#[derive(Subcommand, Debug)]
pub(crate) enum AccountCommand {
    /// Create an ACME account and register it at the CA.
    #[command(
        after_help = "Example:\n  certkeep account add --name incommon --directory-url https://acme.sectigo.com/v2/InCommonRSAOV \\\n    --allow '*.example.edu' --contact mailto:pki@example.edu --eab-kid KID --eab-hmac-file hmac.txt"
    )]
    Add {
        #[arg(long)]
        name: String,
        /// ACME directory URL.
        #[arg(long)]
        directory_url: String,
        /// Domain pattern this account may order (`example.edu`, `*.example.edu`); repeatable.
        #[arg(long = "allow", required = true, value_name = "PATTERN")]
        allowed_domains: Vec<String>,
        /// Contact URI (`mailto:`); repeatable.
        #[arg(long)]
        contact: Vec<String>,
        /// External account binding key id.
        #[arg(long, requires = "eab_hmac_file")]
        eab_kid: Option<String>,
        /// File holding the EAB HMAC key (`-` for stdin).
        #[arg(long, requires = "eab_kid", value_name = "FILE")]
        eab_hmac_file: Option<PathBuf>,
        /// PEM file of extra CA certificates trusted for the directory.
        #[arg(long, value_name = "FILE")]
        extra_roots_file: Option<PathBuf>,
    },
    /// List ACME accounts.
    #[command(after_help = "Example:\n  certkeep account list --output json")]
    List,
    /// Show one ACME account.
    #[command(after_help = "Example:\n  certkeep account show incommon")]
    Show {
        /// Account name or id.
        account: String,
    },
    /// Deactivate an ACME account.
    #[command(after_help = "Example:\n  certkeep account deactivate incommon")]
    Deactivate {
        /// Account name or id.
        account: String,
    },
}

fn account_table(accounts: Vec<AccountResponse>) {
    let mut t = Table::new(["NAME", "STATE", "DIRECTORY", "ALLOWED", "EAB", "ID"]);
    for a in accounts {
        t.row([
            a.name,
            a.state.to_string(),
            a.directory_url,
            a.allowed_domains.join(","),
            match a.eab {
                EabBinding::None => "no",
                EabBinding::Pending => "pending",
                EabBinding::Bound => "bound",
            }
            .into(),
            a.id.to_string(),
        ]);
    }
    t.print();
}

/// Runs `certkeep account ...`.
pub(crate) async fn run(s: &Session, command: AccountCommand) -> Result<(), CliError> {
    match command {
        AccountCommand::Add {
            name,
            directory_url,
            allowed_domains,
            contact,
            eab_kid,
            eab_hmac_file,
            extra_roots_file,
        } => {
            let eab_hmac_key = eab_hmac_file.as_deref().map(read_secret).transpose()?;
            let extra_roots_pem = extra_roots_file
                .map(|f| {
                    std::fs::read_to_string(&f)
                        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", f.display())))
                })
                .transpose()?;
            let req = CreateAccountRequest {
                name,
                directory_url,
                contact,
                allowed_domains,
                eab_kid,
                eab_hmac_key: eab_hmac_key.as_ref().map(|k| k.to_string()),
                extra_roots_pem,
            };
            let answer: (AccountResponse, _) = s
                .client
                .json(Method::POST, "/acme-accounts", Some(&req))
                .await?;
            let failed = answer
                .0
                .last_error
                .clone()
                .filter(|_| answer.0.state == AccountState::Failed);
            s.print(answer, |a| account_table(vec![a]));
            match failed {
                Some(e) => Err(CliError::Failed(format!(
                    "the CA refused the registration: {e}"
                ))),
                None => Ok(()),
            }
        }
        AccountCommand::List => {
            s.print(s.client.get("/acme-accounts").await?, account_table);
            Ok(())
        }
        AccountCommand::Show { account } => {
            s.print(
                s.client
                    .get(&format!("/acme-accounts/{}", encode(&account)))
                    .await?,
                |a| account_table(vec![a]),
            );
            Ok(())
        }
        AccountCommand::Deactivate { account } => {
            let path = format!("/acme-accounts/{}/deactivate", encode(&account));
            s.print(s.client.post(&path).await?, |a| account_table(vec![a]));
            Ok(())
        }
    }
}
