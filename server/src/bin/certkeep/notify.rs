//! `certkeep notify ...`: notification channels, subscriptions, mutes and deliveries, through
//! the API. Channel secrets come from a file or stdin (`-`), never from the command line.

use std::path::PathBuf;

use certkeep_api_types::notification::{
    ChannelResponse, ChannelTestResponse, CreateChannelRequest, CreateMuteRequest,
    CreateSubscriptionRequest, CreatedChannelResponse, DeliveryResponse, DeliveryState,
    MuteResponse, NotificationEvent, SmtpSettings, SmtpTls, SubscriptionResponse,
    SubscriptionScope, WebhookFormat, WebhookSettings,
};
use clap::{Args, Subcommand};
use reqwest::Method;

use crate::client::{CliError, encode, read_secret};
use crate::session::Session;
use crate::table::{Table, list, opt, time};

#[derive(Subcommand, Debug)]
pub(crate) enum NotifyCommand {
    /// Mail and webhook channels.
    #[command(subcommand, after_help = "Example:\n  certkeep notify channel list")]
    Channel(ChannelCommand),
    /// Subscribe a channel to event kinds within a scope.
    #[command(
        after_help = "Example:\n  certkeep notify subscribe --name med-team --channel med-mail --event certificate.renewal_failed --event certificate.expiring --domain '*.med.example.edu' --digest\n  certkeep notify subscribe --name all-failures --channel ops-hook --event certificate.renewal_failed"
    )]
    Subscribe(SubscribeArgs),
    /// List subscriptions.
    #[command(after_help = "Example:\n  certkeep notify subscriptions")]
    Subscriptions,
    /// Delete a subscription.
    #[command(after_help = "Example:\n  certkeep notify unsubscribe 01912345-...")]
    Unsubscribe { id: uuid::Uuid },
    /// Mute a certificate's events for a while (maintenance).
    #[command(
        after_help = "Example:\n  certkeep notify mute --certificate www --for 2d --reason 'load balancer swap'"
    )]
    Mute {
        /// Certificate name or id.
        #[arg(long)]
        certificate: String,
        /// How long: 2d, 12h (at most 90d).
        #[arg(long = "for")]
        duration: String,
        /// Why (shown in the list).
        #[arg(long)]
        reason: String,
        /// Only these kinds; repeatable (default: every kind).
        #[arg(long = "event", value_enum)]
        events: Vec<NotificationEvent>,
    },
    /// List mutes in force.
    #[command(after_help = "Example:\n  certkeep notify mutes")]
    Mutes,
    /// Send a test message through a channel now and print the receiver's answer (exit 1 when
    /// it was not accepted).
    #[command(after_help = "Example:\n  certkeep notify test ops-hook")]
    Test { channel: String },
    /// List deliveries with their outcome, newest first.
    #[command(after_help = "Example:\n  certkeep notify list --state failed")]
    List {
        /// Only deliveries in this state (`failed`: given up).
        #[arg(long, value_enum)]
        state: Option<DeliveryState>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ChannelCommand {
    /// Add a channel: mail (`--smtp-host`) or webhook (`--webhook-url`).
    #[command(
        after_help = "Example:\n  certkeep notify channel add --name med-mail --smtp-host mail.example.edu --smtp-user certkeep --secret-file smtp-pw.txt --from 'certkeep <certkeep@example.edu>' --to pki@med.example.edu\n  certkeep notify channel add --name ops-hook --webhook-url https://hooks.example.edu/certkeep\n  certkeep notify channel add --name chat --webhook-url https://hooks.slack.com/... --format slack"
    )]
    Add(AddChannelArgs),
    /// List channels (never their secrets).
    #[command(after_help = "Example:\n  certkeep notify channel list")]
    List,
    /// Remove a channel with its subscriptions and deliveries.
    #[command(after_help = "Example:\n  certkeep notify channel remove ops-hook")]
    Remove { channel: String },
}

#[derive(Args, Debug)]
pub(crate) struct AddChannelArgs {
    #[arg(long)]
    name: String,
    /// Mail server host name.
    #[arg(
        long,
        conflicts_with = "webhook_url",
        required_unless_present = "webhook_url"
    )]
    smtp_host: Option<String>,
    /// Mail server port (default 587 starttls, 465 tls, 25 plain).
    #[arg(long, requires = "smtp_host")]
    smtp_port: Option<u16>,
    /// Connection protection.
    #[arg(long, value_enum, default_value_t = SmtpTls::Starttls, requires = "smtp_host")]
    smtp_tls: SmtpTls,
    /// SMTP AUTH user; the password comes from --secret-file.
    #[arg(long, requires = "smtp_host")]
    smtp_user: Option<String>,
    /// Sender address.
    #[arg(long, requires = "smtp_host", required_unless_present = "webhook_url")]
    from: Option<String>,
    /// Recipient; repeatable.
    #[arg(long, requires = "smtp_host")]
    to: Vec<String>,
    /// Webhook URL (https://; http:// only to a loopback address).
    #[arg(long)]
    webhook_url: Option<String>,
    /// Webhook body format.
    #[arg(long, value_enum, default_value_t = WebhookFormat::Standard, requires = "webhook_url")]
    format: WebhookFormat,
    /// Seconds to wait for the webhook's answer (1 to 60).
    #[arg(long, default_value_t = 10, requires = "webhook_url")]
    timeout_secs: u64,
    /// Extra PEM CA file the server trusts for the mail server or webhook (a path on the
    /// server; `--ca-file` is the CLI's own trust in the API).
    #[arg(long)]
    receiver_ca_file: Option<String>,
    /// File holding the SMTP password or the webhook secret (`whsec_...`); `-` reads stdin.
    /// A webhook without one gets a generated secret, printed once.
    #[arg(long)]
    secret_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct SubscribeArgs {
    #[arg(long)]
    name: String,
    /// Channel name or id.
    #[arg(long)]
    channel: String,
    /// Event kind; repeatable.
    #[arg(long = "event", value_enum)]
    events: Vec<NotificationEvent>,
    /// Only events about this ACME account (name or id).
    #[arg(long, conflicts_with_all = ["domain_patterns", "agent"])]
    account: Option<String>,
    /// Only events about names matching this pattern (`*.med.example.edu`); repeatable.
    #[arg(long = "domain", value_name = "PATTERN", conflicts_with = "agent")]
    domain_patterns: Vec<String>,
    /// Only events about this agent (name or id).
    #[arg(long)]
    agent: Option<String>,
    /// Also send a daily digest at the server's `notifications.digest_time`.
    #[arg(long)]
    digest: bool,
    /// Send the digest even when it has nothing to report.
    #[arg(long, requires = "digest")]
    digest_when_empty: bool,
}

fn channel_table(channels: Vec<ChannelResponse>) {
    let mut t = Table::new(["NAME", "KIND", "TARGET", "SECRET", "ID"]);
    for c in channels {
        let target = match (&c.smtp, &c.webhook) {
            (Some(s), _) => format!("{} via {} ({})", s.to.join(","), s.host, s.tls),
            (_, Some(w)) => format!("{} ({})", w.url, w.format),
            _ => String::new(),
        };
        let secret = if c.has_secret { "stored" } else { "-" };
        t.row([
            c.name,
            c.kind.to_string(),
            target,
            secret.into(),
            c.id.to_string(),
        ]);
    }
    t.print();
}

fn subscription_table(subs: Vec<SubscriptionResponse>) {
    let mut t = Table::new(["NAME", "EVENTS", "SCOPE", "DIGEST", "CHANNEL", "ID"]);
    for s in subs {
        let scope = match s.scope {
            SubscriptionScope::Domains => list(&s.domain_patterns),
            SubscriptionScope::Account => format!(
                "account {}",
                opt(s.account_id.map(|a| a.to_string()).as_deref())
            ),
            SubscriptionScope::Agent => format!(
                "agent {}",
                opt(s.agent_id.map(|a| a.to_string()).as_deref())
            ),
            SubscriptionScope::All => "all".into(),
        };
        t.row([
            s.name,
            list(&s.events),
            scope,
            if s.digest { "yes" } else { "no" }.into(),
            s.channel_id.to_string(),
            s.id.to_string(),
        ]);
    }
    t.print();
}

fn mute_table(mutes: Vec<MuteResponse>) {
    let mut t = Table::new(["CERTIFICATE", "EVENTS", "UNTIL", "REASON", "BY", "ID"]);
    for m in mutes {
        let events = if m.events.is_empty() {
            "all".into()
        } else {
            list(&m.events)
        };
        t.row([
            m.certificate_id.to_string(),
            events,
            time(Some(m.until)),
            m.reason,
            opt(m.created_by.as_deref()),
            m.id.to_string(),
        ]);
    }
    t.print();
}

fn delivery_table(deliveries: Vec<DeliveryResponse>) {
    let mut t = Table::new([
        "WHEN",
        "EVENT",
        "SUMMARY",
        "CHANNEL",
        "STATE",
        "TRIES",
        "LAST ANSWER",
    ]);
    for d in deliveries {
        t.row([
            time(Some(d.created_at)),
            d.event.kind.to_string(),
            d.event.summary.chars().take(60).collect(),
            d.channel_name,
            d.state.to_string(),
            d.attempts.to_string(),
            opt(d.last_reply.as_deref()).chars().take(60).collect(),
        ]);
    }
    t.print();
}

fn add_request(a: AddChannelArgs) -> Result<CreateChannelRequest, CliError> {
    let secret = a
        .secret_file
        .as_deref()
        .map(read_secret)
        .transpose()?
        .map(|s| s.to_string());
    let (smtp, webhook) = match (a.smtp_host, a.webhook_url) {
        (Some(host), None) => {
            if a.to.is_empty() {
                return Err(CliError::Usage(
                    "a mail channel needs at least one --to".into(),
                ));
            }
            let settings = SmtpSettings {
                host,
                port: a.smtp_port,
                tls: a.smtp_tls,
                username: a.smtp_user,
                from: a.from.unwrap_or_default(),
                to: a.to,
                ca_file: a.receiver_ca_file,
            };
            (Some(settings), None)
        }
        (None, Some(url)) => (
            None,
            Some(WebhookSettings {
                url,
                format: a.format,
                timeout_secs: a.timeout_secs,
                ca_file: a.receiver_ca_file,
            }),
        ),
        _ => {
            return Err(CliError::Usage(
                "give exactly one of --smtp-host and --webhook-url".into(),
            ));
        }
    };
    Ok(CreateChannelRequest {
        name: a.name,
        smtp,
        webhook,
        secret,
    })
}

/// Runs `certkeep notify ...`.
pub(crate) async fn run(s: &Session, command: NotifyCommand) -> Result<(), CliError> {
    match command {
        NotifyCommand::Channel(ChannelCommand::Add(args)) => {
            let req = add_request(args)?;
            s.print(
                s.client
                    .json(Method::POST, "/notification-channels", Some(&req))
                    .await?,
                |c: CreatedChannelResponse| {
                    channel_table(vec![c.channel]);
                    if let Some(secret) = c.generated_secret {
                        println!(
                            "\nsigning secret (shown once; give it to the receiver):\n{secret}"
                        );
                    }
                },
            );
        }
        NotifyCommand::Channel(ChannelCommand::List) => {
            s.print(s.client.get("/notification-channels").await?, channel_table);
        }
        NotifyCommand::Channel(ChannelCommand::Remove { channel }) => {
            s.client
                .no_content(
                    Method::DELETE,
                    &format!("/notification-channels/{}", encode(&channel)),
                )
                .await?;
            println!("removed channel {channel}");
        }
        NotifyCommand::Subscribe(a) => {
            let scope = if a.account.is_some() {
                SubscriptionScope::Account
            } else if a.agent.is_some() {
                SubscriptionScope::Agent
            } else if !a.domain_patterns.is_empty() {
                SubscriptionScope::Domains
            } else {
                SubscriptionScope::All
            };
            let req = CreateSubscriptionRequest {
                name: a.name,
                channel: a.channel,
                events: a.events,
                scope,
                account: a.account,
                domain_patterns: a.domain_patterns,
                agent: a.agent,
                digest: a.digest,
                digest_when_empty: a.digest_when_empty,
            };
            s.print(
                s.client
                    .json(Method::POST, "/subscriptions", Some(&req))
                    .await?,
                |sub| subscription_table(vec![sub]),
            );
        }
        NotifyCommand::Subscriptions => {
            s.print(s.client.get("/subscriptions").await?, subscription_table);
        }
        NotifyCommand::Unsubscribe { id } => {
            s.client
                .no_content(Method::DELETE, &format!("/subscriptions/{id}"))
                .await?;
            println!("removed subscription {id}");
        }
        NotifyCommand::Mute {
            certificate,
            duration,
            reason,
            events,
        } => {
            let span = certkeep_server::domain::span::parse_span(&duration)
                .map_err(|e| CliError::Usage(format!("--for {duration}: {e}")))?;
            let req = CreateMuteRequest {
                certificate,
                events,
                until: certkeep_server::now() + span,
                reason,
            };
            s.print(
                s.client
                    .json(Method::POST, "/notification-mutes", Some(&req))
                    .await?,
                |m| mute_table(vec![m]),
            );
        }
        NotifyCommand::Mutes => s.print(s.client.get("/notification-mutes").await?, mute_table),
        NotifyCommand::Test { channel } => {
            let answer = s
                .client
                .post::<ChannelTestResponse>(&format!(
                    "/notification-channels/{}/test",
                    encode(&channel)
                ))
                .await?;
            let delivered = answer.0.delivered;
            s.print(answer, |r: ChannelTestResponse| {
                let code = r.code.map_or_else(|| "-".to_owned(), |c| c.to_string());
                let verdict = if r.delivered {
                    "delivered"
                } else {
                    "NOT delivered"
                };
                println!("{verdict} (code {code}): {}", r.reply);
            });
            if !delivered {
                return Err(CliError::Failed(format!(
                    "the receiver of `{channel}` did not accept the test message"
                )));
            }
        }
        NotifyCommand::List { state, limit } => {
            let mut path = format!("/notifications?limit={limit}");
            if let Some(state) = state {
                path.push_str(&format!("&state={state}"));
            }
            s.print(s.client.get(&path).await?, delivery_table);
        }
    }
    Ok(())
}
