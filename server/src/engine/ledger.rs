//! The domain-validation ledger: every valid authorization the engine sees records, per
//! account and name, when the validation was last seen valid and when it lapses (the
//! authorization's `expires`), so a team re-validates in the CA's portal before renewals start
//! failing; and the one place a coming lapse is reported.

use time::{Duration, OffsetDateTime};

use super::Shared;
use crate::acme::{CaAuthorization, CaAuthzStatus};
use crate::model::AccountId;
use crate::now;

/// Most lapsing validations reported per scan.
const BATCH: i64 = 200;

/// Records the valid authorizations among `authzs` (those whose lapse the CA gave).
pub(super) async fn record(
    shared: &Shared,
    account: AccountId,
    authzs: &[CaAuthorization],
) -> Result<(), crate::db::Error> {
    let valid: Vec<(String, OffsetDateTime)> = authzs
        .iter()
        .filter(|a| a.status == CaAuthzStatus::Valid)
        .filter_map(|a| a.expires.map(|at| (a.name.clone(), at)))
        .collect();
    if valid.is_empty() {
        return Ok(());
    }
    shared
        .state
        .db
        .record_domain_validations(account, &valid, now())
        .await
}

/// Whether the ledger already holds, for each of `names`, a validation of `account` that
/// lapses after the warning horizon (`lifecycle.validation_warn_days`). A `ready` order for
/// such names (reused or pre-validated authorizations) then needs no authorization read: what
/// its authorizations would say is known, and a validation nearing its lapse is read again
/// (a re-validation in the CA's portal moves it).
pub(super) async fn knows(
    shared: &Shared,
    account: AccountId,
    names: &[String],
) -> Result<bool, crate::db::Error> {
    let days = i64::from(shared.state.config.lifecycle.validation_warn_days);
    let horizon = now() + Duration::days(days);
    for name in names {
        match shared
            .state
            .db
            .domain_validation_expiry(account, name)
            .await?
        {
            Some(at) if at > horizon => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Reports, once each, the validations that lapse within `lifecycle.validation_warn_days`
/// (the hook of the `domain.validation_lapsing` event).
pub(super) async fn note_lapsing(shared: &Shared) -> Result<(), crate::db::Error> {
    let t = now();
    let days = i64::from(shared.state.config.lifecycle.validation_warn_days);
    let lapsing = shared
        .state
        .db
        .take_lapsing_validations(t + Duration::days(days), t, BATCH, |v| {
            crate::notify::events::domain_validation_lapsing(
                v.account_id.0,
                &v.account_name,
                &v.name,
                v.expires_at,
                t,
            )
        })
        .await?;
    for v in lapsing {
        tracing::warn!(account.name = %v.account_name, domain = %v.name, lapses_at = %v.expires_at, "the CA's validation of this name lapses soon: re-validate it before renewals need it");
    }
    Ok(())
}
