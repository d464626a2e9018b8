//! Wire types of the certificate lifecycle: the domain-validation ledger.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// One ACME account's validation of one name, as the CA last showed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DomainValidationResponse {
    pub account_id: Uuid,
    /// The account's name.
    pub account: String,
    /// The validated name (A-label; `*.`-prefixed for a wildcard).
    pub name: String,
    /// When a valid authorization for it was last seen.
    #[serde(with = "time::serde::rfc3339")]
    pub last_valid_at: OffsetDateTime,
    /// When the validation lapses (the authorization's `expires`): orders after this need the
    /// name validated again.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// The domain-validation ledger, soonest lapse first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DomainList {
    pub items: Vec<DomainValidationResponse>,
}

/// Change a certificate: its names, key type or key reuse. Names are checked as on create;
/// the change takes effect through a new order, and the current version stays current (and
/// installed) until that order is issued.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct EditCertificateRequest {
    /// DNS names to add (Unicode or A-labels, `*.` wildcards allowed), at most 100.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_items = 100))]
    pub add_dns_names: Vec<String>,
    /// DNS names to remove, at most 100.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_items = 100))]
    pub remove_dns_names: Vec<String>,
    /// A new key type (a new key is made for the next order). Accepted in any case.
    #[serde(default, deserialize_with = "crate::api::de::key_type")]
    pub key_type: Option<crate::enums::KeyType>,
    /// Whether renewals reuse the current key while its type matches.
    #[serde(default)]
    pub reuse_key: Option<bool>,
}

/// Import a certificate obtained elsewhere (bought by hand, issued by an old connector) with
/// its key: PEM (`chain_pem` + `key_pem`) or PKCS#12 (`pfx_base64` + `pfx_password`). The key
/// must match the leaf, the chain must build, the leaf must not be expired, and its names must
/// be within the account's `allowed_domains`; certkeep then renews it like any other.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ImportCertificateRequest {
    /// Unique name, e.g. `www` (letters, digits, `.`, `_`, `-`; at most 64).
    #[cfg_attr(feature = "schema", schema(value_type = crate::api::ResourceName))]
    pub name: String,
    /// The ACME account that renews it: id or name.
    pub account: String,
    /// The chain, leaf first, then the issuing CA certificate(s); at most 64 KiB.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_length = 65536))]
    pub chain_pem: Option<String>,
    /// The private key, PKCS#8 PEM (`BEGIN PRIVATE KEY`); at most 16 KiB.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_length = 16384))]
    pub key_pem: Option<String>,
    /// A PKCS#12 file (key, leaf and chain), base64; at most 128 KiB.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_length = 131072))]
    pub pfx_base64: Option<String>,
    /// The PKCS#12 file's password.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(value_type = Option<crate::api::Secret>))]
    pub pfx_password: Option<String>,
}

impl std::fmt::Debug for ImportCertificateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportCertificateRequest")
            .field("name", &self.name)
            .field("account", &self.account)
            .field("chain_pem", &self.chain_pem.as_ref().map(String::len))
            .field("pfx_base64", &self.pfx_base64.as_ref().map(String::len))
            .finish_non_exhaustive()
    }
}

/// Move certificates to another ACME account (another CA endpoint): the named ones, or every
/// certificate of `from_account`. With `dry_run` the answer is the plan and nothing changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct MoveRequest {
    /// Certificates (id or name), at most 1000; or give `from_account`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_items = 1000))]
    pub certificates: Vec<String>,
    /// Move every (not retired) certificate of this account (id or name).
    #[serde(default)]
    pub from_account: Option<String>,
    /// The account to issue under from now on (id or name).
    pub to_account: String,
    /// Only plan: nothing is changed.
    #[serde(default)]
    pub dry_run: bool,
    /// Revoke each old version (`superseded`) once every assigned agent reported the new one.
    #[serde(default)]
    pub revoke_old: bool,
}

/// What a move would do to one certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct MovePlanItem {
    /// Position in the order of work (soonest expiry first), from 1.
    pub position: usize,
    pub certificate_id: Uuid,
    pub certificate: String,
    pub dns_names: Vec<String>,
    pub key_type: crate::enums::KeyType,
    /// Whether the target account's `allowed_domains` cover every name.
    pub allowed: bool,
    /// The first name outside them.
    pub outside: Option<String>,
    /// Agents that will receive the new version.
    pub agents: Vec<String>,
    /// Expiry of the current version.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
}

/// The plan of a move (also the answer of a queued one).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct MovePlan {
    pub dry_run: bool,
    pub to_account: String,
    pub revoke_old: bool,
    pub items: Vec<MovePlanItem>,
}

/// Progress of one certificate's move.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct MoveResponse {
    pub id: Uuid,
    pub certificate_id: Uuid,
    pub from_account_id: Uuid,
    pub to_account_id: Uuid,
    pub state: crate::enums::MoveState,
    pub revoke_old: bool,
    pub order_id: Option<Uuid>,
    pub new_version_id: Option<Uuid>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Moves, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct MoveList {
    pub items: Vec<MoveResponse>,
}
