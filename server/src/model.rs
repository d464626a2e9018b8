//! Domain model shared by storage, engine and API: ids, states and records. Pure data, no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub use certkeep_api_types::OrderEventKind;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(/// An ACME account row.
    AccountId);
id_type!(/// A certificate (the long-lived definition).
    CertificateId);
id_type!(/// One issued version of a certificate.
    VersionId);
id_type!(/// A durable order job.
    OrderId);
id_type!(/// An enrolled (or pending) agent.
    AgentId);
id_type!(/// An API token.
    TokenId);

pub use certkeep_api_types::enums::{
    AccountState, AgentState, CertificateState, DeploymentStatus, KeyType, OrderReason, OrderState,
    PfxEncryption, Scope,
};

/// An ACME account as stored (secrets stay encrypted in storage; see `db::accounts`).
#[derive(Debug, Clone)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub directory_url: String,
    pub contact: Vec<String>,
    pub allowed_domains: Vec<String>,
    pub eab_kid: Option<String>,
    /// Whether the sealed EAB HMAC key is still stored (only until registration).
    pub eab_hmac_held: bool,
    pub extra_roots_pem: Option<String>,
    pub account_url: Option<String>,
    pub state: AccountState,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// When to renew: a fraction of the lifetime remaining, or a number of days before expiry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct RenewalPolicy {
    pub fraction: Option<f64>,
    pub days: Option<i32>,
}

/// A certificate definition.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub id: CertificateId,
    pub name: String,
    /// A-label names, as ordered from the CA.
    pub dns_names: Vec<String>,
    pub key_type: KeyType,
    pub account_id: AccountId,
    pub policy: RenewalPolicy,
    /// Renewals reuse the current version's key while its type matches `key_type`.
    pub reuse_key: bool,
    pub state: CertificateState,
    pub current_version_id: Option<VersionId>,
    pub renew_after: Option<OffsetDateTime>,
    pub consecutive_failures: i32,
    pub last_error: Option<String>,
    pub created_by: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// One issued version of a certificate. The private key stays encrypted in storage.
#[derive(Debug, Clone)]
pub struct CertificateVersion {
    pub id: VersionId,
    pub certificate_id: CertificateId,
    pub order_id: Option<OrderId>,
    pub chain_pem: String,
    pub serial: String,
    pub thumbprint: String,
    pub dns_names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub revocation_reason: Option<i32>,
    pub created_at: OffsetDateTime,
}

/// A durable order job.
#[derive(Debug, Clone)]
pub struct Order {
    pub id: OrderId,
    pub certificate_id: CertificateId,
    pub account_id: AccountId,
    pub reason: OrderReason,
    pub state: OrderState,
    pub order_url: Option<String>,
    pub has_key: bool,
    pub csr_der: Option<Vec<u8>>,
    pub replaces: Option<String>,
    pub attempts: i32,
    pub next_attempt_at: OffsetDateTime,
    pub deadline_at: OffsetDateTime,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

/// One step in an order's history.
#[derive(Debug, Clone)]
pub struct OrderEvent {
    pub order_id: OrderId,
    pub at: OffsetDateTime,
    pub kind: OrderEventKind,
    pub detail: String,
}

/// An agent (a host that pulls certificates).
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    pub state: AgentState,
    pub join_token_expires_at: Option<OffsetDateTime>,
    pub cert_serial: Option<String>,
    /// Serial of the certificate the agent renewed from, still accepted until the agent first
    /// uses `cert_serial` (so a lost renewal reply does not lock it out).
    pub previous_cert_serial: Option<String>,
    pub cert_not_after: Option<OffsetDateTime>,
    pub pfx_mode: PfxEncryption,
    pub last_seen_at: Option<OffsetDateTime>,
    pub os_name: Option<String>,
    pub os_build: Option<String>,
    pub agent_version: Option<String>,
    pub last_report_errors: Vec<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// One file an agent reported.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub agent_id: AgentId,
    pub certificate_id: CertificateId,
    /// Target name; empty for reports of agents without server-managed targets.
    pub target: String,
    pub file_name: String,
    pub thumbprint: Option<String>,
    pub status: DeploymentStatus,
    pub error: Option<String>,
    pub reported_at: OffsetDateTime,
}

/// An API token (the secret itself is never stored, only its hash).
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub id: TokenId,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub domain_patterns: Vec<String>,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    pub created_by: Option<String>,
    pub created_at: OffsetDateTime,
}

/// One entry of the hash-chained audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    pub seq: i64,
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub source: Option<String>,
    pub outcome: String,
    pub detail: String,
    #[serde(skip)]
    pub prev_hash: Vec<u8>,
    #[serde(skip)]
    pub hash: Vec<u8>,
}

/// What to append to the audit log.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub source: Option<String>,
    pub outcome: String,
    pub detail: String,
}
