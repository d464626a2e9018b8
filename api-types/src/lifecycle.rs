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
