//! The admin CLI inside the `certkeep` binary: subcommands that talk to the API over HTTPS.
//!
//! Secrets (HMAC keys, passwords, the API token) come from files, stdin (`-`) or the
//! environment, never from arguments. Exit codes: 0 ok, 1 negative answer (chain broken,
//! issuance failed), 2 usage, 3 API refusal (4xx), 4 server or network error.

use std::path::PathBuf;
use std::time::Duration;

use certkeep_api_types::agent::PfxEncryption;
use certkeep_api_types::api::{
    AccountResponse, AgentResponse, AuditEventList, AuditVerifyResponse, CertificateDetail,
    CertificateList, CertificateResponse, CreateAccountRequest, CreateAgentRequest,
    CreateCertificateRequest, CreateTokenRequest, CreatedTokenResponse, DownloadFormat,
    DownloadRequest, EabBinding, JoinTokenResponse, OrderResponse, RevocationReason,
    RevokeCertificateRequest, TokenResponse, UpdateAgentRequest, VersionResponse,
};
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde::Serialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use self::client::{CliError, Client, encode, read_secret};
use self::table::Table;

pub mod client;
mod table;

/// How to reach the API. Every API subcommand accepts these.
#[derive(Args, Debug)]
pub struct ClientArgs {
    /// API base URL.
    #[arg(
        long,
        global = true,
        env = "CERTKEEP_SERVER",
        default_value = "https://127.0.0.1:8443"
    )]
    pub server: String,
    /// File holding the API token (`-` for stdin). Else the CERTKEEP_TOKEN environment variable.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate to trust for the server (e.g. certkeep-data/ca.pem).
    #[arg(long, global = true, env = "CERTKEEP_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Output format of API subcommands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Readable tables.
    Table,
    /// The API's JSON, pretty-printed.
    Json,
}

/// `certkeep account ...`
#[derive(Subcommand, Debug)]
pub enum AccountCommand {
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

/// `certkeep cert ...`
#[derive(Subcommand, Debug)]
pub enum CertCommand {
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
        /// rsa2048, rsa3072, rsa4096, ecdsa-p256 (default) or ecdsa-p384.
        #[arg(long)]
        key_type: Option<String>,
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
        #[arg(long)]
        state: Option<String>,
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
        #[arg(long, value_enum, default_value_t = Reason::Unspecified)]
        reason: Reason,
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
        #[arg(long, value_enum, default_value_t = Format::PemChain)]
        format: Format,
        /// Output file (created 0600 for keys and PFX). Default stdout for PEM.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// File holding the PFX password (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// PFX encryption.
        #[arg(long, value_enum)]
        encryption: Option<Encryption>,
        /// Version id; default the current version.
        #[arg(long)]
        version: Option<uuid::Uuid>,
    },
}

/// `certkeep agent ...`
#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Create an agent; prints its one-time join token.
    #[command(
        after_help = "Example:\n  certkeep agent add --name web1 --ccs-password-file ccs.txt --pfx-encryption legacy"
    )]
    Add {
        #[arg(long)]
        name: String,
        /// File holding the CCS PFX password (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        ccs_password_file: PathBuf,
        #[arg(long, value_enum)]
        pfx_encryption: Option<Encryption>,
    },
    /// List agents with their deployment state.
    #[command(after_help = "Example:\n  certkeep agent list")]
    List,
    /// Show an agent.
    #[command(after_help = "Example:\n  certkeep agent show web1")]
    Show { agent: String },
    /// Rotate the CCS password and/or change the PFX encryption.
    #[command(after_help = "Example:\n  certkeep agent update web1 --pfx-encryption aes256")]
    Update {
        agent: String,
        #[arg(long, value_name = "FILE")]
        ccs_password_file: Option<PathBuf>,
        #[arg(long, value_enum)]
        pfx_encryption: Option<Encryption>,
    },
    /// Assign a certificate to an agent.
    #[command(after_help = "Example:\n  certkeep agent assign web1 www")]
    Assign { agent: String, certificate: String },
    /// Unassign a certificate from an agent.
    #[command(after_help = "Example:\n  certkeep agent unassign web1 www")]
    Unassign { agent: String, certificate: String },
    /// Issue a new one-time join token (re-enrollment).
    #[command(after_help = "Example:\n  certkeep agent join-token web1")]
    JoinToken { agent: String },
    /// Revoke an agent at once.
    #[command(after_help = "Example:\n  certkeep agent revoke web1")]
    Revoke { agent: String },
}

/// `certkeep token ...`
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an API token; prints its secret once.
    #[command(
        after_help = "Example:\n  certkeep token create --name ci --scope issuer --domain '*.ci.example.edu' --expires-in 90d"
    )]
    Create {
        #[arg(long)]
        name: String,
        /// admin, operator, issuer, reader or export; repeatable.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Domain pattern of an issuer token; repeatable.
        #[arg(long = "domain", value_name = "PATTERN")]
        domain_patterns: Vec<String>,
        /// Lifetime: 90d, 12h.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List tokens.
    #[command(after_help = "Example:\n  certkeep token list")]
    List,
    /// Revoke a token.
    #[command(after_help = "Example:\n  certkeep token revoke 01912345-...")]
    Revoke { id: uuid::Uuid },
}

/// `certkeep audit ...`
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
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

/// Revocation reasons.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Reason {
    Unspecified,
    KeyCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
}

/// Download formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    PemChain,
    PemKey,
    Pfx,
}

/// PFX encryption modes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Encryption {
    /// 3DES/SHA-1: every IIS 8+.
    Legacy,
    /// AES-256/SHA-256: Windows Server 2019+ only.
    Aes256,
}

impl From<Encryption> for PfxEncryption {
    fn from(e: Encryption) -> Self {
        match e {
            Encryption::Legacy => PfxEncryption::Legacy,
            Encryption::Aes256 => PfxEncryption::Aes256,
        }
    }
}

impl From<Reason> for RevocationReason {
    fn from(r: Reason) -> Self {
        match r {
            Reason::Unspecified => RevocationReason::Unspecified,
            Reason::KeyCompromise => RevocationReason::KeyCompromise,
            Reason::AffiliationChanged => RevocationReason::AffiliationChanged,
            Reason::Superseded => RevocationReason::Superseded,
            Reason::CessationOfOperation => RevocationReason::CessationOfOperation,
        }
    }
}

/// One API subcommand.
#[derive(Debug)]
pub enum ApiCommand {
    Account(AccountCommand),
    Cert(CertCommand),
    Agent(AgentCommand),
    Token(TokenCommand),
    Audit(AuditCommand),
}

/// Runs one API subcommand; a failure is printed on stderr and becomes the exit code.
pub async fn run(args: &ClientArgs, command: ApiCommand) -> std::process::ExitCode {
    let outcome = match Session::open(args) {
        Ok(s) => match command {
            ApiCommand::Account(c) => account(&s, c).await,
            ApiCommand::Cert(c) => cert(&s, c).await,
            ApiCommand::Agent(c) => agent(&s, c).await,
            ApiCommand::Token(c) => token(&s, c).await,
            ApiCommand::Audit(c) => audit(&s, c).await,
        },
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certkeep: {}", e.message());
            e.exit_code()
        }
    }
}

/// An API subcommand with its connection settings.
struct Session {
    client: Client,
    output: Output,
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
    fn print<T>(&self, (typed, value): (T, serde_json::Value), render: impl FnOnce(T)) {
        match self.output {
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            ),
            Output::Table => render(typed),
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(T, serde_json::Value), CliError> {
        self.client.json(method, path, body).await
    }
}

fn time(t: Option<OffsetDateTime>) -> String {
    t.map(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    })
    .unwrap_or_else(|| "-".into())
}

fn opt(s: Option<&str>) -> String {
    s.unwrap_or("-").to_owned()
}

fn account_table(accounts: Vec<AccountResponse>) {
    let mut t = Table::new(["NAME", "STATE", "DIRECTORY", "ALLOWED", "EAB", "ID"]);
    for a in accounts {
        t.row([
            a.name,
            a.state,
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
async fn account(s: &Session, command: AccountCommand) -> Result<(), CliError> {
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
            let answer: (AccountResponse, _) =
                s.call(Method::POST, "/acme-accounts", Some(&req)).await?;
            let failed = answer
                .0
                .last_error
                .clone()
                .filter(|_| answer.0.state == "failed");
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
            s.print(s.call(Method::POST, &path, None::<&()>).await?, |a| {
                account_table(vec![a])
            });
            Ok(())
        }
    }
}

fn cert_table(certs: Vec<CertificateResponse>) {
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
            c.state,
            c.display_names.join(","),
            c.key_type,
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
            o.reason.clone(),
            o.state.clone(),
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
    for dep in d.deployments {
        t.row([
            dep.agent_name,
            format!("{:?}", dep.state).to_lowercase(),
            opt(dep.current_thumbprint.as_deref()),
        ]);
    }
    t.print();
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
        match d.certificate.state.as_str() {
            "valid" => return Ok(()),
            "failed" | "revoked" | "retired" => {
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
async fn cert(s: &Session, command: CertCommand) -> Result<(), CliError> {
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
            let answer: (CertificateResponse, _) =
                s.call(Method::POST, "/certificates", Some(&req)).await?;
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
        CertCommand::List {
            state,
            account,
            expiring_within,
            dns_name,
        } => {
            let mut query: Vec<String> = [
                ("state", state),
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
            s.print(
                s.call(Method::POST, &path, None::<&()>).await?,
                |o: OrderResponse| order_table(&[o]),
            );
            Ok(())
        }
        CertCommand::Revoke {
            certificate,
            reason,
            version,
        } => {
            let path = format!("/certificates/{}/revoke", encode(&certificate));
            let req = RevokeCertificateRequest {
                reason: reason.into(),
                version_id: version,
            };
            s.print(
                s.call(Method::POST, &path, Some(&req)).await?,
                |v: VersionResponse| version_table(&[v]),
            );
            Ok(())
        }
        CertCommand::Retire { certificate } => {
            let path = format!("/certificates/{}/retire", encode(&certificate));
            s.print(s.call(Method::POST, &path, None::<&()>).await?, |c| {
                cert_table(vec![c])
            });
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
    format: Format,
    out: Option<PathBuf>,
    password_file: Option<PathBuf>,
    encryption: Option<Encryption>,
    version: Option<uuid::Uuid>,
) -> Result<(), CliError> {
    let password = match (format, password_file) {
        (Format::Pfx, Some(f)) => Some(read_secret(&f)?),
        (Format::Pfx, None) => {
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
    if format == Format::Pfx && out.is_none() {
        return Err(CliError::Usage("--format pfx needs --out FILE".into()));
    }
    let req = DownloadRequest {
        format: match format {
            Format::PemChain => DownloadFormat::PemChain,
            Format::PemKey => DownloadFormat::PemKey,
            Format::Pfx => DownloadFormat::Pfx,
        },
        password: password.as_ref().map(|p| p.to_string()),
        encryption: encryption.map(Into::into),
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
            let private = format != Format::PemChain;
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
        crate::fsutil::write_private_new(path, bytes)
    } else {
        std::fs::write(path, bytes)
    };
    result.map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))
}

fn agent_table(agents: Vec<AgentResponse>) {
    let mut t = Table::new([
        "NAME",
        "STATE",
        "LAST SEEN",
        "OS",
        "PFX",
        "CERTIFICATES",
        "ID",
    ]);
    for a in agents {
        let certs: Vec<String> = a
            .certificates
            .iter()
            .map(|c| {
                format!(
                    "{}={}",
                    c.certificate_name,
                    format!("{:?}", c.state).to_lowercase()
                )
            })
            .collect();
        let os = match (&a.os_name, &a.os_build) {
            (Some(n), Some(b)) => format!("{n} {b}"),
            (Some(n), None) => n.clone(),
            _ => "-".into(),
        };
        t.row([
            a.name,
            a.state,
            time(a.last_seen_at),
            os,
            format!("{:?}", a.pfx_encryption).to_lowercase(),
            if certs.is_empty() {
                "-".into()
            } else {
                certs.join(",")
            },
            a.id.to_string(),
        ]);
    }
    t.print();
}

fn join_token(j: JoinTokenResponse) {
    agent_table(vec![j.agent]);
    println!(
        "\njoin token (single use, expires {}):\n{}",
        time(Some(j.expires_at)),
        j.join_token
    );
}

/// Runs `certkeep agent ...`.
async fn agent(s: &Session, command: AgentCommand) -> Result<(), CliError> {
    match command {
        AgentCommand::Add {
            name,
            ccs_password_file,
            pfx_encryption,
        } => {
            let ccs_password = read_secret(&ccs_password_file)?;
            let req = CreateAgentRequest {
                name,
                ccs_password: ccs_password.to_string(),
                pfx_encryption: pfx_encryption.map(Into::into),
            };
            s.print(
                s.call(Method::POST, "/agents", Some(&req)).await?,
                join_token,
            );
        }
        AgentCommand::List => s.print(s.client.get("/agents").await?, agent_table),
        AgentCommand::Show { agent } => s.print(
            s.client.get(&format!("/agents/{}", encode(&agent))).await?,
            |a| agent_table(vec![a]),
        ),
        AgentCommand::Update {
            agent,
            ccs_password_file,
            pfx_encryption,
        } => {
            let ccs_password = ccs_password_file.as_deref().map(read_secret).transpose()?;
            if ccs_password.is_none() && pfx_encryption.is_none() {
                return Err(CliError::Usage(
                    "give --ccs-password-file and/or --pfx-encryption".into(),
                ));
            }
            let req = UpdateAgentRequest {
                ccs_password: ccs_password.map(|p| p.to_string()),
                pfx_encryption: pfx_encryption.map(Into::into),
            };
            let path = format!("/agents/{}", encode(&agent));
            s.print(s.call(Method::PATCH, &path, Some(&req)).await?, |a| {
                agent_table(vec![a])
            });
        }
        AgentCommand::Assign { agent, certificate } => {
            s.client
                .no_content(
                    Method::PUT,
                    &format!(
                        "/agents/{}/certificates/{}",
                        encode(&agent),
                        encode(&certificate)
                    ),
                )
                .await?;
            eprintln!("certkeep: assigned {certificate} to {agent}");
        }
        AgentCommand::Unassign { agent, certificate } => {
            s.client
                .no_content(
                    Method::DELETE,
                    &format!(
                        "/agents/{}/certificates/{}",
                        encode(&agent),
                        encode(&certificate)
                    ),
                )
                .await?;
            eprintln!("certkeep: unassigned {certificate} from {agent}");
        }
        AgentCommand::JoinToken { agent } => {
            let path = format!("/agents/{}/join-token", encode(&agent));
            s.print(s.call(Method::POST, &path, None::<&()>).await?, join_token);
        }
        AgentCommand::Revoke { agent } => {
            let path = format!("/agents/{}/revoke", encode(&agent));
            s.print(s.call(Method::POST, &path, None::<&()>).await?, |a| {
                agent_table(vec![a])
            });
        }
    }
    Ok(())
}

fn token_table(tokens: Vec<TokenResponse>) {
    let mut t = Table::new([
        "NAME",
        "SCOPES",
        "DOMAINS",
        "EXPIRES",
        "REVOKED",
        "LAST USED",
        "ID",
    ]);
    for k in tokens {
        t.row([
            k.name,
            k.scopes.join(","),
            if k.domain_patterns.is_empty() {
                "-".into()
            } else {
                k.domain_patterns.join(",")
            },
            time(k.expires_at),
            time(k.revoked_at),
            time(k.last_used_at),
            k.id.to_string(),
        ]);
    }
    t.print();
}

/// Runs `certkeep token ...`.
async fn token(s: &Session, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create {
            name,
            scopes,
            domain_patterns,
            expires_in,
        } => {
            let expires_at = expires_in
                .map(|e| {
                    let span = crate::domain::span::parse_span(&e)
                        .map_err(|err| CliError::Usage(format!("--expires-in {e}: {err}")))?;
                    if !span.is_positive() {
                        return Err(CliError::Usage(format!(
                            "--expires-in {e}: must be longer than zero"
                        )));
                    }
                    Ok(crate::now() + span)
                })
                .transpose()?;
            let req = CreateTokenRequest {
                name,
                scopes,
                domain_patterns,
                expires_at,
            };
            s.print(
                s.call(Method::POST, "/tokens", Some(&req)).await?,
                |c: CreatedTokenResponse| {
                    token_table(vec![c.token]);
                    println!("\nsecret (shown once; store it now):\n{}", c.secret);
                },
            );
        }
        TokenCommand::List => s.print(s.client.get("/tokens").await?, token_table),
        TokenCommand::Revoke { id } => {
            s.print(
                s.call(Method::POST, &format!("/tokens/{id}/revoke"), None::<&()>)
                    .await?,
                |t| token_table(vec![t]),
            );
        }
    }
    Ok(())
}

/// Runs `certkeep audit list` and `certkeep audit verify` (through the API).
async fn audit(s: &Session, command: AuditCommand) -> Result<(), CliError> {
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
