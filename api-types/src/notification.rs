//! Notifications: the event kinds, the payload every channel receives, and the wire types of
//! channels, subscriptions, mutes and deliveries (`/api/v1/notification-channels`,
//! `/api/v1/subscriptions`, `/api/v1/notification-mutes`, `/api/v1/notifications`).
//!
//! Secrets in requests (SMTP password, webhook signing secret) are write-only: redacted from
//! `Debug`, never part of a response.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::enums::text_enum;

/// Something that happened and that someone may need to hear about. The text (e.g.
/// `certificate.renewal_failed`) is what the database stores, what subscriptions list and what
/// a webhook's `type` carries; it never changes for an existing kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum NotificationEvent {
    /// A certificate's first version was issued.
    #[serde(rename = "certificate.issued")]
    #[cfg_attr(feature = "clap", value(name = "certificate.issued"))]
    CertificateIssued,
    /// A renewed version became current.
    #[serde(rename = "certificate.renewed")]
    #[cfg_attr(feature = "clap", value(name = "certificate.renewed"))]
    CertificateRenewed,
    /// Renewal failed the configured number of times in a row, or keeps failing while the
    /// remaining lifetime fell under a threshold.
    #[serde(rename = "certificate.renewal_failed")]
    #[cfg_attr(feature = "clap", value(name = "certificate.renewal_failed"))]
    CertificateRenewalFailed,
    /// The current version expires within a configured threshold (14, 7, 3, 1 days) and no
    /// renewal succeeded.
    #[serde(rename = "certificate.expiring")]
    #[cfg_attr(feature = "clap", value(name = "certificate.expiring"))]
    CertificateExpiring,
    /// The current version was revoked (by certkeep, or detected outside).
    #[serde(rename = "certificate.revoked")]
    #[cfg_attr(feature = "clap", value(name = "certificate.revoked"))]
    CertificateRevoked,
    /// An agent did not poll within its expected interval.
    #[serde(rename = "agent.stale")]
    #[cfg_attr(feature = "clap", value(name = "agent.stale"))]
    AgentStale,
    /// An agent could not install a certificate.
    #[serde(rename = "agent.install_failed")]
    #[cfg_attr(feature = "clap", value(name = "agent.install_failed"))]
    AgentInstallFailed,
    /// A host still serves or holds the previous version some time after a renewal.
    #[serde(rename = "deployment.lagging")]
    #[cfg_attr(feature = "clap", value(name = "deployment.lagging"))]
    DeploymentLagging,
    /// An ACME account has a problem: EAB or authorization errors, rate limited for long, or
    /// its directory unreachable.
    #[serde(rename = "account.problem")]
    #[cfg_attr(feature = "clap", value(name = "account.problem"))]
    AccountProblem,
    /// A domain's validation at the CA lapses soon.
    #[serde(rename = "domain.validation_lapsing")]
    #[cfg_attr(feature = "clap", value(name = "domain.validation_lapsing"))]
    DomainValidationLapsing,
    /// Verification of the audit log's hash chain failed.
    #[serde(rename = "audit.chain_broken")]
    #[cfg_attr(feature = "clap", value(name = "audit.chain_broken"))]
    AuditChainBroken,
    /// The daily digest of one subscription.
    #[serde(rename = "notification.digest")]
    #[cfg_attr(feature = "clap", value(name = "notification.digest"))]
    Digest,
    /// A test message (`certkeep notify test`).
    #[serde(rename = "notification.test")]
    #[cfg_attr(feature = "clap", value(name = "notification.test"))]
    Test,
}

impl NotificationEvent {
    /// Every kind, in declaration order.
    pub const ALL: &'static [NotificationEvent] = &[
        Self::CertificateIssued,
        Self::CertificateRenewed,
        Self::CertificateRenewalFailed,
        Self::CertificateExpiring,
        Self::CertificateRevoked,
        Self::AgentStale,
        Self::AgentInstallFailed,
        Self::DeploymentLagging,
        Self::AccountProblem,
        Self::DomainValidationLapsing,
        Self::AuditChainBroken,
        Self::Digest,
        Self::Test,
    ];

    /// The stored (and JSON) text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CertificateIssued => "certificate.issued",
            Self::CertificateRenewed => "certificate.renewed",
            Self::CertificateRenewalFailed => "certificate.renewal_failed",
            Self::CertificateExpiring => "certificate.expiring",
            Self::CertificateRevoked => "certificate.revoked",
            Self::AgentStale => "agent.stale",
            Self::AgentInstallFailed => "agent.install_failed",
            Self::DeploymentLagging => "deployment.lagging",
            Self::AccountProblem => "account.problem",
            Self::DomainValidationLapsing => "domain.validation_lapsing",
            Self::AuditChainBroken => "audit.chain_broken",
            Self::Digest => "notification.digest",
            Self::Test => "notification.test",
        }
    }

    /// Whether a subscription may list this kind (digests and tests are addressed to one
    /// subscription or channel, never routed).
    pub fn is_routed(self) -> bool {
        !matches!(self, Self::Digest | Self::Test)
    }
}

impl FromStr for NotificationEvent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown notification event `{s}` (expected one of: {})",
                    all.join(", ")
                )
            })
    }
}

impl fmt::Display for NotificationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

text_enum!(/// How a notification reaches people.
    ChannelKind {
    /// Mail over SMTP.
    Smtp => "smtp",
    /// A signed JSON POST (Standard Webhooks), or a Slack-style `text` body.
    Webhook => "webhook",
});

text_enum!(/// How the SMTP connection is protected.
    SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server cannot.
    Starttls => "starttls",
    /// TLS from the first byte (port 465).
    Tls => "tls",
    /// No TLS at all: only for a relay on the same host or in tests.
    Plain => "plain",
});

text_enum!(/// Body of a webhook.
    WebhookFormat {
    /// The JSON notification payload, signed per Standard Webhooks.
    Standard => "standard",
    /// `{"text": "..."}`, accepted by Slack, Mattermost and Teams workflow webhooks (also signed).
    Slack => "slack",
});

text_enum!(/// Which events of the listed kinds a subscription receives.
    SubscriptionScope {
    /// Every event.
    All => "all",
    /// Events about one ACME account's certificates (and the account itself).
    Account => "account",
    /// Events about certificates with a name matching one of the domain patterns.
    Domains => "domains",
    /// Events about one agent.
    Agent => "agent",
});

text_enum!(/// Where one delivery of an event to a channel stands.
    DeliveryState {
    /// Not tried yet.
    Pending => "pending",
    /// Tried and refused or unreachable; tried again at `next_attempt_at`.
    Retrying => "retrying",
    /// The receiver accepted it (HTTP 2xx, SMTP 250).
    Delivered => "delivered",
    /// Given up after the dead-letter age; never retried.
    Failed => "failed",
});

/// What every channel receives about one event: JSON body of a standard webhook, and the source
/// of a mail's subject and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct NotificationPayload {
    /// Event id; also the `webhook-id`, so a receiver can drop the rare duplicate.
    pub id: Uuid,
    /// What kind of event.
    #[serde(rename = "type")]
    pub kind: NotificationEvent,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// One line: what happened.
    pub summary: String,
    /// What certkeep does next on its own.
    pub next_step: String,
    /// The one command or page that fixes it.
    pub fix: String,
    /// The names concerned.
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// More detail: the CA's error, the days left, the digest's lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// SMTP settings of a channel (the password is set apart, write-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SmtpSettings {
    /// Mail server host name (also the name its TLS certificate must carry).
    pub host: String,
    /// Port; default 587 for `starttls`, 465 for `tls`, 25 for `plain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Connection protection, default `starttls`.
    #[serde(default = "default_tls")]
    pub tls: SmtpTls,
    /// User name for SMTP AUTH; the password goes in the request's `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Sender, e.g. `certkeep <certkeep@example.edu>`.
    pub from: String,
    /// Recipients, 1 to 50.
    #[cfg_attr(feature = "schema", schema(min_items = 1, max_items = 50))]
    pub to: Vec<String>,
    /// Extra PEM CA file trusted for the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

fn default_tls() -> SmtpTls {
    SmtpTls::Starttls
}

/// Webhook settings of a channel (the signing secret is set apart, write-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct WebhookSettings {
    /// Where to POST (`https://...`; `http://` only to a loopback address).
    pub url: String,
    /// Body format, default `standard`.
    #[serde(default = "default_format")]
    pub format: WebhookFormat,
    /// Seconds to wait for the receiver's answer, 1 to 60 (default 10).
    #[serde(default = "default_timeout")]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 60))]
    pub timeout_secs: u64,
    /// Extra PEM CA file trusted for the receiver's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

fn default_format() -> WebhookFormat {
    WebhookFormat::Standard
}

fn default_timeout() -> u64 {
    10
}

/// Create a notification channel: exactly one of `smtp` and `webhook`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CreateChannelRequest {
    /// Unique name (letters, digits, `.`, `_`, `-`; at most 64).
    #[cfg_attr(feature = "schema", schema(value_type = crate::api::ResourceName))]
    pub name: String,
    #[serde(default)]
    pub smtp: Option<SmtpSettings>,
    #[serde(default)]
    pub webhook: Option<WebhookSettings>,
    /// Write-only: the SMTP password, or the webhook signing secret (`whsec_` + base64 of 24
    /// to 64 random bytes; omitted: one is generated and returned once).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(value_type = Option<crate::api::Secret>))]
    pub secret: Option<String>,
}

impl fmt::Debug for CreateChannelRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateChannelRequest")
            .field("name", &self.name)
            .field("smtp", &self.smtp)
            .field("webhook", &self.webhook)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A notification channel (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ChannelResponse {
    pub id: Uuid,
    pub name: String,
    pub kind: ChannelKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSettings>,
    /// Whether a password or signing secret is stored.
    pub has_secret: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A created channel; `generated_secret` is the webhook signing secret certkeep generated,
/// shown only now.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CreatedChannelResponse {
    pub channel: ChannelResponse,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_secret: Option<String>,
}

/// The receiver's answer to a test message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ChannelTestResponse {
    /// Whether the receiver accepted it (HTTP 2xx, SMTP 250).
    pub delivered: bool,
    /// HTTP status or SMTP reply code, when the receiver answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The receiver's answer (shortened), or why it could not be reached.
    pub reply: String,
}

/// Subscribe a channel to event kinds within a scope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CreateSubscriptionRequest {
    /// Unique name.
    #[cfg_attr(feature = "schema", schema(value_type = crate::api::ResourceName))]
    pub name: String,
    /// Channel id or name.
    pub channel: String,
    /// Event kinds, 1 to 20 (not `notification.digest` / `notification.test`).
    #[cfg_attr(feature = "schema", schema(min_items = 1, max_items = 20))]
    pub events: Vec<NotificationEvent>,
    /// Default `all`.
    #[serde(default = "default_scope")]
    pub scope: SubscriptionScope,
    /// For scope `account`: the account's id or name.
    #[serde(default)]
    pub account: Option<String>,
    /// For scope `domains`: exact names and `*.suffix` patterns, 1 to 100.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_items = 100))]
    pub domain_patterns: Vec<String>,
    /// For scope `agent`: the agent's id or name.
    #[serde(default)]
    pub agent: Option<String>,
    /// Send a daily digest at `notifications.digest_time`.
    #[serde(default)]
    pub digest: bool,
    /// Send the digest even when it has nothing to report.
    #[serde(default)]
    pub digest_when_empty: bool,
}

fn default_scope() -> SubscriptionScope {
    SubscriptionScope::All
}

/// A subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SubscriptionResponse {
    pub id: Uuid,
    pub name: String,
    pub channel_id: Uuid,
    pub events: Vec<NotificationEvent>,
    pub scope: SubscriptionScope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<Uuid>,
    #[serde(default)]
    pub domain_patterns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Uuid>,
    pub digest: bool,
    pub digest_when_empty: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Mute events about one certificate until a time (maintenance).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CreateMuteRequest {
    /// Certificate id or name.
    pub certificate: String,
    /// Kinds to mute; empty: every kind.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_items = 20))]
    pub events: Vec<NotificationEvent>,
    /// When the mute ends (at most 90 days ahead).
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    /// Why (shown in the list).
    #[cfg_attr(feature = "schema", schema(value_type = crate::api::Label))]
    pub reason: String,
}

/// A mute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct MuteResponse {
    pub id: Uuid,
    pub certificate_id: Uuid,
    pub events: Vec<NotificationEvent>,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// One delivery of an event to a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DeliveryResponse {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub channel_name: String,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: i32,
    /// The receiver's last HTTP status or SMTP reply code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_code: Option<i32>,
    /// The receiver's last answer (shortened), or why it could not be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub delivered_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The event delivered.
    pub event: NotificationPayload,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_texts_round_trip_through_json_parse_and_clap() {
        for k in NotificationEvent::ALL {
            let text = k.as_str();
            assert_eq!(serde_json::to_string(k).unwrap(), format!("\"{text}\""));
            assert_eq!(text.parse::<NotificationEvent>().unwrap(), *k);
            #[cfg(feature = "clap")]
            assert_eq!(
                clap::ValueEnum::to_possible_value(k).unwrap().get_name(),
                text
            );
        }
        let err = "certificate.gone".parse::<NotificationEvent>().unwrap_err();
        assert!(err.contains("certificate.renewal_failed"), "{err}");
    }

    #[test]
    fn other_vocabularies_round_trip() {
        for v in ChannelKind::ALL {
            assert_eq!(v.as_str().parse::<ChannelKind>().unwrap(), *v);
        }
        for v in DeliveryState::ALL {
            assert_eq!(
                serde_json::to_string(v).unwrap(),
                format!("\"{}\"", v.as_str())
            );
        }
        for v in SubscriptionScope::ALL {
            assert_eq!(v.as_str().parse::<SubscriptionScope>().unwrap(), *v);
        }
    }

    #[test]
    fn a_channel_request_never_prints_its_secret() {
        let req = CreateChannelRequest {
            name: "ops".into(),
            smtp: None,
            webhook: None,
            secret: Some("hunter2".into()),
        };
        assert!(!format!("{req:?}").contains("hunter2"));
    }
}
