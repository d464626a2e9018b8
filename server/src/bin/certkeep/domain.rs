//! `certkeep domain ...`: the domain-validation ledger (when each account's validation of a
//! name lapses), through the API.

use certkeep_api_types::lifecycle::DomainList;
use clap::Subcommand;

use crate::client::{CliError, encode};
use crate::session::Session;
use crate::table::{Table, time};

#[derive(Subcommand, Debug)]
pub(crate) enum DomainCommand {
    /// List domain validations, soonest lapse first.
    #[command(after_help = "Example:\n  certkeep domain list --lapsing-within 30d")]
    List {
        /// Only validations lapsing within a span: 30d, 12h, 90m (lapsed ones included).
        #[arg(long)]
        lapsing_within: Option<String>,
        /// Account name or id.
        #[arg(long)]
        account: Option<String>,
    },
}

fn domain_table(list: DomainList) {
    let mut t = Table::new(["NAME", "ACCOUNT", "LAPSES", "LAST VALID"]);
    for d in list.items {
        t.row([
            d.name,
            d.account,
            time(Some(d.expires_at)),
            time(Some(d.last_valid_at)),
        ]);
    }
    t.print();
}

/// Runs `certkeep domain ...`.
pub(crate) async fn run(s: &Session, command: DomainCommand) -> Result<(), CliError> {
    match command {
        DomainCommand::List {
            lapsing_within,
            account,
        } => {
            let query: Vec<String> = [("lapsing_within", lapsing_within), ("account", account)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(&v))))
                .chain(["limit=1000".to_owned()])
                .collect();
            let path = format!("/domains?{}", query.join("&"));
            s.print(s.client.get(&path).await?, domain_table);
        }
    }
    Ok(())
}
