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
