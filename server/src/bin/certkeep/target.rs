//! `certkeep agent target ...`: an agent's deployment targets, through the API.

use certkeep_api_types::api::DeploymentResponse;
use certkeep_api_types::target::{
    CreateTargetRequest, RolloutSettings, TargetKind, TargetResponse, TargetSettings, WindowsStore,
};
use clap::Subcommand;
use reqwest::Method;

use crate::client::{CliError, encode};
use crate::session::Session;
use crate::table::{Table, list, time};

#[derive(Subcommand, Debug)]
pub(crate) enum TargetCommand {
    /// Add a target; the agent applies it on its next sync.
    #[command(after_help = "Example:
  certkeep agent target add iis-farm-1 ccs --kind ccs --path '\\\\fs\\ccs$'
  certkeep agent target add web1 nginx --kind directory --path /etc/ssl/certkeep \\
      --reload-command 'systemctl reload nginx'
  certkeep agent target add iis1 store --kind windows-store --store WebHosting \\
      --iis-site 'Default Web Site'")]
    Add {
        /// Agent id or name.
        agent: String,
        /// Target name, unique per agent.
        name: String,
        #[arg(long, value_enum)]
        kind: TargetKind,
        /// Folder on the host (`ccs`, `directory`).
        #[arg(long, required_if_eq_any([("kind", "ccs"), ("kind", "directory")]))]
        path: Option<String>,
        /// Program and arguments separated by spaces, run after a change (`directory`); no
        /// shell and no quoting: point it at a script for anything more.
        #[arg(long, value_name = "COMMAND")]
        reload_command: Option<String>,
        /// Certificate store under LocalMachine (`windows-store`).
        #[arg(long, value_enum, required_if_eq("kind", "windows-store"))]
        store: Option<WindowsStore>,
        /// IIS site whose https bindings follow the certificate (`windows-store`).
        #[arg(long)]
        iis_site: Option<String>,
        /// SNI host name of a binding to manage (`windows-store`); repeat. Default: every
        /// https binding of the site whose host name the certificate covers.
        #[arg(long = "binding", value_name = "HOST")]
        bindings: Vec<String>,
        /// `host:port` the agent probes after installing; repeat. Default 127.0.0.1:443.
        #[arg(long = "probe", value_name = "HOST:PORT", conflicts_with = "no_probe")]
        probes: Vec<String>,
        /// Do not probe this target.
        #[arg(long)]
        no_probe: bool,
    },
    /// List an agent's targets.
    #[command(after_help = "Example:\n  certkeep agent target list web1")]
    List {
        /// Agent id or name.
        agent: String,
    },
    /// Remove a target; the agent leaves its files in place.
    #[command(after_help = "Example:\n  certkeep agent target remove web1 nginx")]
    Remove {
        /// Agent id or name.
        agent: String,
        /// Target name.
        name: String,
    },
}

/// Prints targets as a table.
pub(crate) fn target_table(targets: Vec<TargetResponse>) {
    let mut t = Table::new(["TARGET", "SETTINGS", "PROBE", "CREATED"]);
    for target in targets {
        t.row([
            target.name,
            target.settings.describe(),
            list(&target.probe),
            time(Some(target.created_at)),
        ]);
    }
    t.print();
}

/// Prints what the agents' probes saw served, one row per agent, certificate, target, address
/// and name; nothing when nothing was probed.
pub(crate) fn served_table(deployments: &[DeploymentResponse]) {
    let mut t = Table::new([
        "AGENT",
        "CERTIFICATE",
        "TARGET",
        "ADDRESS",
        "NAME",
        "SERVED",
        "THUMBPRINT",
        "PROBED",
        "LAGGING SINCE",
    ]);
    let mut rows = 0;
    for d in deployments {
        for s in &d.served {
            rows += 1;
            let seen = match (&s.thumbprint, &s.error) {
                (Some(t), _) => t.chars().take(16).collect(),
                (None, Some(e)) => e.clone(),
                (None, None) => "-".into(),
            };
            t.row([
                d.agent_name.clone(),
                d.certificate_name.clone(),
                s.target.clone(),
                s.address.clone(),
                s.name.clone(),
                s.status.to_string(),
                seen,
                time(Some(s.probed_at)),
                time(s.lagging_at.and(s.pending_since)),
            ]);
        }
    }
    if rows > 0 {
        println!();
        t.print();
    }
}

/// The settings the flags describe; flags of another kind are refused.
fn settings(
    kind: TargetKind,
    path: Option<String>,
    reload_command: Option<String>,
    store: Option<WindowsStore>,
    iis_site: Option<String>,
    bindings: Vec<String>,
) -> Result<TargetSettings, CliError> {
    let unused = |flag: &str| CliError::Usage(format!("{flag} does not apply to --kind {kind}"));
    let path = || path.ok_or_else(|| CliError::Usage(format!("--kind {kind} needs --path")));
    if kind != TargetKind::Directory && reload_command.is_some() {
        return Err(unused("--reload-command"));
    }
    if kind != TargetKind::WindowsStore {
        if store.is_some() {
            return Err(unused("--store"));
        }
        if iis_site.is_some() {
            return Err(unused("--iis-site"));
        }
        if !bindings.is_empty() {
            return Err(unused("--binding"));
        }
    }
    Ok(match kind {
        TargetKind::Ccs => TargetSettings::Ccs { path: path()? },
        TargetKind::Directory => TargetSettings::Directory {
            path: path()?,
            reload_command: reload_command
                .map(|c| c.split_whitespace().map(str::to_owned).collect()),
        },
        TargetKind::WindowsStore => TargetSettings::WindowsStore {
            store: store
                .ok_or_else(|| CliError::Usage("--kind windows-store needs --store".into()))?,
            iis_site,
            bindings,
        },
    })
}

/// Runs `certkeep agent target ...`.
pub(crate) async fn run(s: &Session, command: TargetCommand) -> Result<(), CliError> {
    match command {
        TargetCommand::Add {
            agent,
            name,
            kind,
            path,
            reload_command,
            store,
            iis_site,
            bindings,
            probes,
            no_probe,
        } => {
            let req = CreateTargetRequest {
                name,
                settings: settings(kind, path, reload_command, store, iis_site, bindings)?,
                probe: if no_probe {
                    Some(Vec::new())
                } else if probes.is_empty() {
                    None
                } else {
                    Some(probes)
                },
            };
            let path = format!("/agents/{}/targets", encode(&agent));
            s.print(s.client.json(Method::POST, &path, Some(&req)).await?, |t| {
                target_table(vec![t])
            });
        }
        TargetCommand::List { agent } => s.print(
            s.client
                .get(&format!("/agents/{}/targets", encode(&agent)))
                .await?,
            target_table,
        ),
        TargetCommand::Remove { agent, name } => {
            let path = format!("/agents/{}/targets/{}", encode(&agent), encode(&name));
            s.client.no_content(Method::DELETE, &path).await?;
            eprintln!("certkeep: removed target {name} of {agent}");
        }
    }
    Ok(())
}

/// Runs `certkeep agent rollout`: sets the agent's change window and canary flag.
pub(crate) async fn set_rollout(
    s: &Session,
    agent: String,
    window: Option<String>,
    canary: bool,
) -> Result<(), CliError> {
    let req = RolloutSettings {
        change_window: window,
        canary,
    };
    let path = format!("/agents/{}/rollout", encode(&agent));
    s.print(
        s.client.json(Method::PUT, &path, Some(&req)).await?,
        |r: RolloutSettings| {
            println!(
                "{agent}: change window {}, {}",
                r.change_window.as_deref().unwrap_or("none (any time)"),
                if r.canary { "canary" } else { "not a canary" }
            );
        },
    );
    Ok(())
}
