//! `certkeep cert ...`: certificates, through the API: define, list, show, renew, revoke,
//! retire and download.

use std::path::PathBuf;
use std::time::Duration;

use certkeep_api_types::api::{
    CertificateDetail, CertificateList, CertificateResponse, CreateCertificateRequest,
    DownloadFormat, DownloadRequest, OrderResponse, RevocationReason, RevokeCertificateRequest,
    VersionResponse,
};
use certkeep_api_types::enums::{CertificateState, KeyType, PfxEncryption};
use clap::Subcommand;
use reqwest::Method;
use zeroize::Zeroizing;

use crate::client::{CliError, encode, read_secret};
use crate::session::{Output, Session};
use crate::table::{Table, opt, time};

#[derive(Subcommand, Debug)]
pub(crate) enum CertCommand {
    /// Request a certificate; `--wait` follows it until it is issued or fails.
    #[command(
        after_help = "Example:\n  certkeep cert add --name www --dns www.example.edu --dns example.edu --account incommon --wait"
    )]
    Add {
        #[arg(long)]
        name: String,
        /// DNS name; repeatable.
        #[arg(long = "dns", required = true, value_name = "NAME")]
        dns_names: Vec<String>,
        /// ACME account name or id.
        #[arg(long)]
        account: String,
        /// Key type (default ecdsa-p256).
        #[arg(long, value_enum, ignore_case = true)]
        key_type: Option<KeyType>,
        /// Renew this many days before expiry.
        #[arg(long, conflicts_with = "renew_fraction")]
        renew_days: Option<i32>,
        /// Renew when this fraction of the lifetime remains.
        #[arg(long)]
        renew_fraction: Option<f64>,
        /// Show progress until the certificate is issued (exit 0) or fails (exit 1).
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 900, requires = "wait")]
        timeout: u64,
    },
    /// List certificates.
    #[command(after_help = "Example:\n  certkeep cert list --expiring-within 30d --state valid")]
    List {
        #[arg(long, value_enum)]
        state: Option<CertificateState>,
        /// Account name or id.
        #[arg(long)]
        account: Option<String>,
        /// Expiring within a span: 30d, 12h, 90m.
        #[arg(long)]
        expiring_within: Option<String>,
        /// Carrying this DNS name.
        #[arg(long)]
        dns_name: Option<String>,
    },
    /// Show a certificate with its versions, orders and deployments.
    #[command(after_help = "Example:\n  certkeep cert show www")]
    Show { certificate: String },
    /// Renew now (idempotent while an order is in flight).
    #[command(after_help = "Example:\n  certkeep cert renew www")]
    Renew { certificate: String },
    /// Revoke the current (or a given) version at the CA.
    #[command(after_help = "Example:\n  certkeep cert revoke www --reason key-compromise")]
    Revoke {
        certificate: String,
        #[arg(long, value_enum, default_value_t = RevocationReason::Unspecified)]
        reason: RevocationReason,
        /// Version id; default the current version.
        #[arg(long)]
        version: Option<uuid::Uuid>,
    },
    /// Retire a certificate: it is no longer renewed.
    #[command(after_help = "Example:\n  certkeep cert retire old-www")]
    Retire { certificate: String },
    /// Download the chain, the private key or a PFX (key and PFX need the export scope).
    #[command(
        after_help = "Example:\n  certkeep cert download www --format pem-chain --out www.pem\n  certkeep cert download www --format pfx --password-file pw.txt --out www.pfx"
    )]
    Download {
        certificate: String,
        #[arg(long, value_enum, default_value_t = DownloadFormat::PemChain)]
        format: DownloadFormat,
        /// Output file (created 0600 for keys and PFX). Default stdout for PEM.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// File holding the PFX password (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// PFX encryption.
        #[arg(long, value_enum)]
        encryption: Option<PfxEncryption>,
        /// Version id; default the current version.
        #[arg(long)]
        version: Option<uuid::Uuid>,
    },
    /// Lifecycle commands (`edit`), in `cert_lifecycle.rs`.
    #[command(flatten)]
    Lifecycle(crate::cert_lifecycle::LifecycleCommand),
}

pub(crate) fn cert_table(certs: Vec<CertificateResponse>) {
    let mut t = Table::new([
        "NAME",
        "STATE",
        "NAMES",
        "KEY",
        "NOT AFTER",
        "RENEW AFTER",
        "ID",
    ]);
    for c in certs {
        t.row([
            c.name,
            c.state.to_string(),
            c.display_names.join(","),
            c.key_type.to_string(),
            time(c.current_version.as_ref().map(|v| v.not_after)),
            time(c.renew_after),
            c.id.to_string(),
        ]);
    }
    t.print();
}

fn version_table(versions: &[VersionResponse]) {
    let mut t = Table::new(["VERSION", "SERIAL", "NOT AFTER", "REVOKED", "THUMBPRINT"]);
    for v in versions {
        t.row([
            v.id.to_string(),
            v.serial.clone(),
            time(Some(v.not_after)),
            time(v.revoked_at),
            v.thumbprint.clone(),
        ]);
    }
    t.print();
}

fn order_table(orders: &[OrderResponse]) {
    let mut t = Table::new([
        "ORDER",
        "REASON",
        "STATE",
        "ATTEMPTS",
        "CREATED",
        "LAST ERROR",
    ]);
    for o in orders {
        t.row([
            o.id.to_string(),
            o.reason.to_string(),
            o.state.to_string(),
            o.attempts.to_string(),
            time(Some(o.created_at)),
            opt(o.last_error.as_deref()),
        ]);
    }
    t.print();
}

fn cert_detail(d: CertificateDetail) {
    cert_table(vec![d.certificate]);
    println!();
    version_table(&d.versions);
    println!();
    order_table(&d.orders);
    println!();
    let mut t = Table::new(["AGENT", "STATE", "CURRENT THUMBPRINT"]);
    for dep in &d.deployments {
        t.row([
            dep.agent_name.clone(),
            dep.state.to_string(),
            opt(dep.current_thumbprint.as_deref()),
        ]);
    }
    t.print();
    crate::target::served_table(&d.deployments);
}

/// Polls a certificate until it is issued or fails, printing each change on stderr.
async fn wait_for(s: &Session, id: uuid::Uuid, timeout: Duration) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let (d, _): (CertificateDetail, _) = s.client.get(&format!("/certificates/{id}")).await?;
        let event = d.orders.first().and_then(|o| {
            o.events
                .last()
                .map(|e| format!("{}: {} {}", o.state, e.kind, e.detail))
        });
        let line = format!("{} {}", d.certificate.state, event.unwrap_or_default());
        if line != last {
            eprintln!("certkeep: {}: {}", d.certificate.name, line.trim());
            last = line;
        }
        match d.certificate.state {
            CertificateState::Valid => return Ok(()),
            CertificateState::Failed | CertificateState::Revoked | CertificateState::Retired => {
                return Err(CliError::Failed(format!(
                    "{} is {}: {}",
                    d.certificate.name,
                    d.certificate.state,
                    d.certificate.last_error.unwrap_or_default()
                )));
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Failed(format!(
                "gave up waiting after {}s; the order continues on the server",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Runs `certkeep cert ...`.
pub(crate) async fn run(s: &Session, command: CertCommand) -> Result<(), CliError> {
    match command {
        CertCommand::Add {
            name,
            dns_names,
            account,
            key_type,
            renew_days,
            renew_fraction,
            wait,
            timeout,
        } => {
            let req = CreateCertificateRequest {
                name,
                dns_names,
                key_type,
                account,
                renew_fraction,
                renew_days,
            };
            let answer: (CertificateResponse, _) = s
                .client
                .json(Method::POST, "/certificates", Some(&req))
                .await?;
            let id = answer.0.id;
            s.print(answer, |c| cert_table(vec![c]));
            if wait {
                wait_for(s, id, Duration::from_secs(timeout)).await?;
                if s.output == Output::Table {
                    cert_table(vec![
                        s.client
                            .get::<CertificateDetail>(&format!("/certificates/{id}"))
                            .await?
                            .0
                            .certificate,
                    ]);
                }
            }
            Ok(())
        }
        CertCommand::Lifecycle(command) => crate::cert_lifecycle::run(s, command).await,
        CertCommand::List {
            state,
            account,
            expiring_within,
            dns_name,
        } => {
            let mut query: Vec<String> = [
                ("state", state.map(|s| s.as_str().to_owned())),
                ("account", account),
                ("expiring_within", expiring_within),
                ("dns_name", dns_name),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(&v))))
            .collect();
            query.push("limit=1000".into());
            let mut all: Vec<CertificateResponse> = Vec::new();
            let mut raw: Vec<serde_json::Value> = Vec::new();
            let mut cursor: Option<uuid::Uuid> = None;
            loop {
                let mut q = query.clone();
                if let Some(c) = cursor {
                    q.push(format!("cursor={c}"));
                }
                let (page, value): (CertificateList, serde_json::Value) = s
                    .client
                    .get(&format!("/certificates?{}", q.join("&")))
                    .await?;
                if let Some(items) = value.get("items").and_then(|i| i.as_array()) {
                    raw.extend(items.iter().cloned());
                }
                all.extend(page.items);
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            s.print((all, serde_json::Value::Array(raw)), cert_table);
            Ok(())
        }
        CertCommand::Show { certificate } => {
            s.print(
                s.client
                    .get(&format!("/certificates/{}", encode(&certificate)))
                    .await?,
                cert_detail,
            );
            Ok(())
        }
        CertCommand::Renew { certificate } => {
            let path = format!("/certificates/{}/renew", encode(&certificate));
            s.print(s.client.post(&path).await?, |o: OrderResponse| {
                order_table(&[o])
            });
            Ok(())
        }
        CertCommand::Revoke {
            certificate,
            reason,
            version,
        } => {
            let path = format!("/certificates/{}/revoke", encode(&certificate));
            let req = RevokeCertificateRequest {
                reason,
                version_id: version,
            };
            s.print(
                s.client.json(Method::POST, &path, Some(&req)).await?,
                |v: VersionResponse| version_table(&[v]),
            );
            Ok(())
        }
        CertCommand::Retire { certificate } => {
            let path = format!("/certificates/{}/retire", encode(&certificate));
            s.print(s.client.post(&path).await?, |c| cert_table(vec![c]));
            Ok(())
        }
        CertCommand::Download {
            certificate,
            format,
            out,
            password_file,
            encryption,
            version,
        } => {
            download(
                s,
                &certificate,
                format,
                out,
                password_file,
                encryption,
                version,
            )
            .await
        }
    }
}

async fn download(
    s: &Session,
    certificate: &str,
    format: DownloadFormat,
    out: Option<PathBuf>,
    password_file: Option<PathBuf>,
    encryption: Option<PfxEncryption>,
    version: Option<uuid::Uuid>,
) -> Result<(), CliError> {
    let password = match (format, password_file) {
        (DownloadFormat::Pfx, Some(f)) => Some(read_secret(&f)?),
        (DownloadFormat::Pfx, None) => {
            return Err(CliError::Usage(
                "--format pfx needs --password-file FILE (or - for stdin)".into(),
            ));
        }
        (_, Some(_)) => {
            return Err(CliError::Usage(
                "--password-file is only for --format pfx".into(),
            ));
        }
        (_, None) => None,
    };
    if format == DownloadFormat::Pfx && out.is_none() {
        return Err(CliError::Usage("--format pfx needs --out FILE".into()));
    }
    let req = DownloadRequest {
        format,
        password: password.as_ref().map(|p| p.to_string()),
        encryption,
        version_id: version,
    };
    let path = format!("/certificates/{}/download", encode(certificate));
    let resp = s.client.send(Method::POST, &path, Some(&req)).await?;
    let bytes = Zeroizing::new(
        resp.bytes()
            .await
            .map_err(|e| CliError::Server(format!("download interrupted: {e}")))?
            .to_vec(),
    );
    match out {
        Some(path) => {
            let private = format != DownloadFormat::PemChain;
            write_out(&path, &bytes, private)?;
            eprintln!("certkeep: wrote {}", path.display());
        }
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(&bytes)
                .map_err(|e| CliError::Usage(format!("cannot write stdout: {e}")))?;
        }
    }
    Ok(())
}

/// Writes a download; private material is created with mode 0600 and never replaces a file.
fn write_out(path: &std::path::Path, bytes: &[u8], private: bool) -> Result<(), CliError> {
    let result = if private {
        certkeep_server::fsutil::write_private_new(path, bytes)
    } else {
        std::fs::write(path, bytes)
    };
    result.map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))
}
