//! `certkeep audit ...`: the audit log through the API, and `verify --local` on the database.

use std::process::ExitCode;

use certkeep_api_types::api::{AuditEventList, AuditVerifyResponse};
use clap::Subcommand;

use crate::client::{CliError, encode};
use crate::session::Session;
use crate::table::{Table, opt, time};

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// List audit events, oldest first.
    #[command(after_help = "Example:\n  certkeep audit list --action certificate.key_release")]
    List {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        subject: Option<String>,
        /// Events after this sequence number.
        #[arg(long)]
        after: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Walk the hash chain and report the first break (exit 1 when broken).
    #[command(
        after_help = "Example:\n  certkeep audit verify            # through the API\n  certkeep audit verify --local    # directly on the database in the configuration"
    )]
    Verify {
        /// Read the database named by the server configuration instead of the API.
        #[arg(long)]
        local: bool,
    },
}

/// Runs `certkeep audit list` and `certkeep audit verify` (through the API).
pub(crate) async fn run(s: &Session, command: AuditCommand) -> Result<(), CliError> {
    match command {
        AuditCommand::List {
            actor,
            action,
            subject,
            after,
            limit,
        } => {
            let mut query: Vec<String> =
                [("actor", actor), ("action", action), ("subject", subject)]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(&v))))
                    .collect();
            query.push(format!("limit={limit}"));
            if let Some(a) = after {
                query.push(format!("after_seq={a}"));
            }
            s.print(
                s.client
                    .get(&format!("/audit-events?{}", query.join("&")))
                    .await?,
                |l: AuditEventList| {
                    let mut t = Table::new([
                        "SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "SOURCE", "OUTCOME", "DETAIL",
                    ]);
                    for e in l.items {
                        t.row([
                            e.seq.to_string(),
                            time(Some(e.at)),
                            e.actor,
                            e.action,
                            e.subject,
                            opt(e.source.as_deref()),
                            e.outcome,
                            e.detail,
                        ]);
                    }
                    t.print();
                    if let Some(next) = l.next_after_seq {
                        println!("\nmore: --after {next}");
                    }
                },
            );
            Ok(())
        }
        AuditCommand::Verify { .. } => {
            let answer: (AuditVerifyResponse, _) = s.client.get("/audit-events/verify").await?;
            let result = answer.0.clone();
            s.print(answer, |r| match (r.broken_at, r.reason) {
                (Some(at), Some(reason)) => println!("audit chain BROKEN at event {at}: {reason}"),
                _ => println!("audit chain intact: {} events", r.events),
            });
            if result.intact {
                Ok(())
            } else {
                Err(CliError::Failed("the audit chain is broken".into()))
            }
        }
    }
}

/// `certkeep audit verify --local`: walks the chain on the configured database (exit 1 when
/// broken).
pub(crate) async fn verify_local(args: &crate::serve::ServerArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    let db = certkeep_server::bootstrap::open_db(&config).await?;
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
