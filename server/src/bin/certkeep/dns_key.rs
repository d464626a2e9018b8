//! `certkeep dns-key ...`: TSIG keys of dns-01 solvers, stored age-encrypted in the database
//! (run against it directly, like `migrate`).

use std::path::PathBuf;

use anyhow::Context as _;
use certkeep_server::{bootstrap, now};
use clap::Subcommand;

use crate::client::read_secret;
use crate::serve::ServerArgs;

/// `certkeep dns-key ...`
#[derive(Subcommand)]
pub(crate) enum DnsKeyCommand {
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

/// Runs `certkeep dns-key ...`.
pub(crate) async fn run(args: &ServerArgs, command: DnsKeyCommand) -> anyhow::Result<()> {
    match command {
        DnsKeyCommand::Import {
            key_name,
            secret_file,
        } => {
            let config = args.load()?;
            let secrets = bootstrap::load_secrets(&config)?;
            let text = read_secret(&secret_file)?;
            certkeep_server::solvers::dns01::decode_secret(&text)
                .map_err(|e| anyhow::anyhow!("{e} (key {key_name})"))?;
            // Like `rekey`: refused on SQLite while a server runs, and never sealed to an
            // identity that no longer opens this database's secrets (e.g. after a rekey).
            let db = bootstrap::open_db_exclusive(&config).await?;
            if config.migrate_on_start {
                bootstrap::migrate(&db).await?;
            }
            certkeep_server::ca::InternalCa::check_identity(&db, &secrets)
                .await
                .context(
                    "the age identity in use does not open this database's secrets (rotated by `certkeep rekey`? point age_identity_file at the new identity)",
                )?;
            db.store_tsig_key(&secrets, &key_name, text.trim().as_bytes(), now())
                .await
                .context("store the TSIG secret")?;
            println!(
                "stored the TSIG secret of key {key_name}; solvers.dns01 entries with this key_name and no secret_file use it from the next start"
            );
            Ok(())
        }
    }
}
