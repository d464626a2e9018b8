//! `certkeep cert edit`, `certkeep cert import` and `certkeep cert move`: lifecycle commands of
//! the `cert` resource, through the API.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use certkeep_api_types::api::CertificateResponse;
use certkeep_api_types::enums::KeyType;
use certkeep_api_types::lifecycle::{
    EditCertificateRequest, ImportCertificateRequest, MoveList, MovePlan, MoveRequest,
};
use clap::Subcommand;
use reqwest::Method;
use zeroize::Zeroizing;

use crate::cert::cert_table;
use crate::client::{CliError, encode, read_secret};
use crate::session::Session;
use crate::table::{Table, list, opt, time};

#[derive(Subcommand, Debug)]
pub(crate) enum LifecycleCommand {
    /// Change a certificate's names, key type or key reuse.
    ///
    /// A change of names or key type is issued through a new order; the current version stays
    /// installed until then.
    #[command(
        after_help = "Example:\n  certkeep cert edit www --add-dns api.example.edu --remove-dns old.example.edu\n  certkeep cert edit www --key-type rsa3072 --no-reuse-key"
    )]
    Edit {
        /// Certificate name or id.
        certificate: String,
        /// DNS name to add; repeatable.
        #[arg(long = "add-dns", value_name = "NAME")]
        add_dns_names: Vec<String>,
        /// DNS name to remove; repeatable.
        #[arg(long = "remove-dns", value_name = "NAME")]
        remove_dns_names: Vec<String>,
        /// New key type.
        #[arg(long, value_enum, ignore_case = true)]
        key_type: Option<KeyType>,
        /// Renewals reuse the current key while its type matches.
        #[arg(long, conflicts_with = "no_reuse_key")]
        reuse_key: bool,
        /// Renewals make a new key (the default).
        #[arg(long)]
        no_reuse_key: bool,
    },
    /// Import a certificate obtained elsewhere, with its key.
    ///
    /// A PKCS#12 file with its password, or PEM chain and key files. Each file is read once, into memory only. The key must
    /// match, the chain build, the leaf not be expired and its names be within the account's
    /// patterns; certkeep then renews it as usual.
    #[command(
        after_help = "Example:\n  certkeep cert import --name www --account incommon --pfx-file www.pfx --password-file pw.txt\n  certkeep cert import --name www --account incommon --cert-file fullchain.pem --key-file privkey.pem"
    )]
    Import {
        #[arg(long)]
        name: String,
        /// ACME account name or id that renews it.
        #[arg(long)]
        account: String,
        /// PKCS#12 file (key, leaf and chain).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["cert_file", "key_file"], requires = "password_file")]
        pfx_file: Option<PathBuf>,
        /// File holding the PKCS#12 password (`-` for stdin).
        #[arg(long, value_name = "FILE", requires = "pfx_file")]
        password_file: Option<PathBuf>,
        /// PEM chain, leaf first, then the issuing CA certificate(s).
        #[arg(
            long,
            value_name = "FILE",
            requires = "key_file",
            required_unless_present = "pfx_file"
        )]
        cert_file: Option<PathBuf>,
        /// PEM private key (PKCS#8, `BEGIN PRIVATE KEY`).
        #[arg(long, value_name = "FILE", requires = "cert_file")]
        key_file: Option<PathBuf>,
    },
    /// Move certificates to another ACME account (another CA endpoint).
    ///
    /// One certificate, or every certificate of `--account`. `--dry-run` prints the plan (names allowed by the
    /// target's patterns, key type, agents receiving the new version, order of work) and
    /// changes nothing; `--status` shows the progress of the moves.
    #[command(
        after_help = "Example:\n  certkeep cert move --account incommon --to-account certinext --dry-run\n  certkeep cert move --account incommon --to-account certinext --revoke-old\n  certkeep cert move www --to-account certinext\n  certkeep cert move --status"
    )]
    Move {
        /// Certificate name or id (or give --account).
        #[arg(required_unless_present_any = ["account", "status"], conflicts_with = "account")]
        certificate: Option<String>,
        /// Move every certificate of this account.
        #[arg(long, value_name = "FROM")]
        account: Option<String>,
        /// The account to issue under from now on.
        #[arg(long, value_name = "TO", required_unless_present = "status")]
        to_account: Option<String>,
        /// Print the plan only; nothing changes.
        #[arg(long)]
        dry_run: bool,
        /// Revoke each old version (superseded) once every assigned agent reported the new one.
        #[arg(long)]
        revoke_old: bool,
        /// Show the progress of the moves instead.
        #[arg(long, conflicts_with_all = ["certificate", "account", "to_account", "dry_run", "revoke_old"])]
        status: bool,
    },
}

fn plan_table(plan: MovePlan) {
    let mut t = Table::new([
        "#",
        "CERTIFICATE",
        "NAMES",
        "KEY",
        "ALLOWED",
        "AGENTS",
        "EXPIRES",
    ]);
    for i in plan.items {
        let allowed = match &i.outside {
            None => "yes".to_owned(),
            Some(name) => format!("no: {name}"),
        };
        t.row([
            i.position.to_string(),
            i.certificate,
            list(&i.dns_names),
            i.key_type.to_string(),
            allowed,
            list(&i.agents),
            time(i.not_after),
        ]);
    }
    t.print();
    let what = if plan.dry_run {
        "plan only; nothing changed"
    } else {
        "queued"
    };
    println!("\nto account {} ({what})", plan.to_account);
}

fn moves_table(moves: MoveList) {
    let mut t = Table::new(["CERTIFICATE", "STATE", "REVOKE OLD", "ERROR", "UPDATED"]);
    for m in moves.items {
        t.row([
            m.certificate_id.to_string(),
            m.state.to_string(),
            m.revoke_old.to_string(),
            opt(m.last_error.as_deref()),
            time(Some(m.updated_at)),
        ]);
    }
    t.print();
}

/// Reads a file the user named, once.
fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, CliError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

/// A PEM file as text.
fn read_pem(path: &Path) -> Result<String, CliError> {
    String::from_utf8(read_file(path)?.to_vec())
        .map_err(|_| CliError::Usage(format!("{} is not a PEM text file", path.display())))
}

/// Runs the lifecycle commands of `certkeep cert`.
pub(crate) async fn run(s: &Session, command: LifecycleCommand) -> Result<(), CliError> {
    match command {
        LifecycleCommand::Edit {
            certificate,
            add_dns_names,
            remove_dns_names,
            key_type,
            reuse_key,
            no_reuse_key,
        } => {
            let req = EditCertificateRequest {
                add_dns_names,
                remove_dns_names,
                key_type,
                reuse_key: (reuse_key || no_reuse_key).then_some(reuse_key),
            };
            let path = format!("/certificates/{}", encode(&certificate));
            let answer: (CertificateResponse, _) =
                s.client.json(Method::PATCH, &path, Some(&req)).await?;
            s.print(answer, |c| cert_table(vec![c]));
        }
        LifecycleCommand::Import {
            name,
            account,
            pfx_file,
            password_file,
            cert_file,
            key_file,
        } => {
            let mut req = ImportCertificateRequest {
                name,
                account,
                ..ImportCertificateRequest::default()
            };
            match (pfx_file, password_file, cert_file, key_file) {
                (Some(pfx), Some(password), None, None) => {
                    req.pfx_base64 =
                        Some(base64::engine::general_purpose::STANDARD.encode(read_file(&pfx)?));
                    req.pfx_password = Some(read_secret(&password)?.to_string());
                }
                (None, None, Some(cert), Some(key)) => {
                    req.chain_pem = Some(read_pem(&cert)?);
                    req.key_pem = Some(read_pem(&key)?);
                }
                _ => {
                    return Err(CliError::Usage(
                        "give --pfx-file with --password-file, or --cert-file with --key-file"
                            .into(),
                    ));
                }
            }
            let answer: (CertificateResponse, _) = s
                .client
                .json(Method::POST, "/certificates/import", Some(&req))
                .await?;
            s.print(answer, |c| cert_table(vec![c]));
        }
        LifecycleCommand::Move { status: true, .. } => {
            s.print(s.client.get("/moves").await?, moves_table);
        }
        LifecycleCommand::Move {
            certificate,
            account,
            to_account,
            dry_run,
            revoke_old,
            status: false,
        } => {
            let req = MoveRequest {
                certificates: certificate.into_iter().collect(),
                from_account: account,
                to_account: to_account
                    .ok_or_else(|| CliError::Usage("--to-account is required".into()))?,
                dry_run,
                revoke_old,
            };
            let answer: (MovePlan, _) = s.client.json(Method::POST, "/moves", Some(&req)).await?;
            s.print(answer, plan_table);
        }
    }
    Ok(())
}
