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
