//! `certkeep agent ...`: agents, their assignments and join tokens, through the API.

use std::path::PathBuf;

use certkeep_api_types::api::{
    AgentResponse, CreateAgentRequest, JoinTokenResponse, UpdateAgentRequest,
};
use certkeep_api_types::enums::PfxEncryption;
use certkeep_api_types::target::RolloutSettings;
use clap::Subcommand;
use reqwest::Method;

use crate::client::{CliError, encode, read_secret};
use crate::session::{Output, Session};
use crate::table::{Table, list, time};
use crate::target::{TargetCommand, served_table, target_table};

#[derive(Subcommand, Debug)]
pub(crate) enum AgentCommand {
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
        pfx_encryption: Option<PfxEncryption>,
    },
    /// List agents with their deployment state.
    #[command(after_help = "Example:\n  certkeep agent list")]
    List,
    /// Show an agent and its targets.
    #[command(after_help = "Example:\n  certkeep agent show web1")]
    Show { agent: String },
    /// Rotate the CCS password and/or change the PFX encryption.
    #[command(after_help = "Example:\n  certkeep agent update web1 --pfx-encryption aes256")]
    Update {
        agent: String,
        #[arg(long, value_name = "FILE")]
        ccs_password_file: Option<PathBuf>,
        #[arg(long, value_enum)]
        pfx_encryption: Option<PfxEncryption>,
    },
    /// Assign a certificate to an agent, for some or all of its targets.
    #[command(
        after_help = "Example:\n  certkeep agent assign web1 www\n  certkeep agent assign web1 www --target ccs --target nginx"
    )]
    Assign {
        agent: String,
        certificate: String,
        /// Target of the agent to install into; repeat. Default: every target, now and later.
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
    },
    /// Unassign a certificate from an agent.
    #[command(after_help = "Example:\n  certkeep agent unassign web1 www")]
    Unassign { agent: String, certificate: String },
    /// Issue a new one-time join token (re-enrollment).
    #[command(after_help = "Example:\n  certkeep agent join-token web1")]
    JoinToken { agent: String },
    /// Revoke an agent at once.
    #[command(after_help = "Example:\n  certkeep agent revoke web1")]
    Revoke { agent: String },
    /// Set the agent's rollout guard: a change window for renewals and/or canary status.
    #[command(
        after_help = "Example:\n  certkeep agent rollout web1 --window 'Sat 02:00-04:00 +01:00'\n  certkeep agent rollout web1 --canary"
    )]
    Rollout {
        /// Agent id or name.
        agent: String,
        /// `[Mon|…|Sun] HH:MM-HH:MM [+HH:MM|-HH:MM|UTC]`, the agent's local time; renewals
        /// outside it wait unless the replaced version expires soon. Omit for any time.
        #[arg(long, value_name = "WINDOW")]
        window: Option<String>,
        /// Make the agent a canary: it installs renewals first, the others wait until every
        /// canary serves them.
        #[arg(long)]
        canary: bool,
    },
    /// Where the agent installs certificates (CCS folder, PEM directory, Windows store).
    #[command(
        subcommand,
        after_help = "Example:\n  certkeep agent target add web1 nginx --kind directory --path /etc/ssl/certkeep"
    )]
    Target(TargetCommand),
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
            .map(|c| format!("{}={}", c.certificate_name, c.state))
            .collect();
        let os = match (&a.os_name, &a.os_build) {
            (Some(n), Some(b)) => format!("{n} {b}"),
            (Some(n), None) => n.clone(),
            _ => "-".into(),
        };
        t.row([
            a.name,
            a.state.to_string(),
            time(a.last_seen_at),
            os,
            a.pfx_encryption.to_string(),
            list(&certs),
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
    println!(
        "\nOn the host, save the token as join-token.txt next to the server's ca.pem and run:\n  {}",
        j.enroll_command
    );
}

/// Runs `certkeep agent ...`.
pub(crate) async fn run(s: &Session, command: AgentCommand) -> Result<(), CliError> {
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
                pfx_encryption,
            };
            s.print(
                s.client.json(Method::POST, "/agents", Some(&req)).await?,
                join_token,
            );
        }
        AgentCommand::List => s.print(s.client.get("/agents").await?, agent_table),
        AgentCommand::Show { agent } => {
            let shown = s.client.get(&format!("/agents/{}", encode(&agent))).await?;
            s.print(shown, |a: AgentResponse| {
                let certificates = a.certificates.clone();
                agent_table(vec![a]);
                served_table(&certificates);
            });
            // JSON output stays the agent alone; `agent target list` gives the targets.
            if s.output == Output::Table {
                let (targets, _) = s
                    .client
                    .get(&format!("/agents/{}/targets", encode(&agent)))
                    .await?;
                println!();
                target_table(targets);
                let (rollout, _): (RolloutSettings, _) = s
                    .client
                    .get(&format!("/agents/{}/rollout", encode(&agent)))
                    .await?;
                println!(
                    "\nrollout: change window {}, {}",
                    rollout
                        .change_window
                        .as_deref()
                        .unwrap_or("none (any time)"),
                    if rollout.canary {
                        "canary"
                    } else {
                        "not a canary"
                    }
                );
            }
        }
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
                pfx_encryption,
            };
            let path = format!("/agents/{}", encode(&agent));
            s.print(
                s.client.json(Method::PATCH, &path, Some(&req)).await?,
                |a| agent_table(vec![a]),
            );
        }
        AgentCommand::Assign {
            agent,
            certificate,
            targets,
        } => {
            let mut path = format!(
                "/agents/{}/certificates/{}",
                encode(&agent),
                encode(&certificate)
            );
            if !targets.is_empty() {
                path.push_str(&format!("?targets={}", encode(&targets.join(","))));
            }
            s.client.no_content(Method::PUT, &path).await?;
            let to = if targets.is_empty() {
                "every target".to_owned()
            } else {
                format!("target {}", targets.join(", "))
            };
            eprintln!("certkeep: assigned {certificate} to {agent} ({to})");
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
            s.print(s.client.post(&path).await?, join_token);
        }
        AgentCommand::Revoke { agent } => {
            let path = format!("/agents/{}/revoke", encode(&agent));
            s.print(s.client.post(&path).await?, |a| agent_table(vec![a]));
        }
        AgentCommand::Rollout {
            agent,
            window,
            canary,
        } => crate::target::set_rollout(s, agent, window, canary).await?,
        AgentCommand::Target(command) => crate::target::run(s, command).await?,
    }
    Ok(())
}
