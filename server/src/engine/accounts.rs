//! ACME accounts with their stored secrets: the storage half of [`acme::open`] and
//! [`acme::register`]. The ACME layer takes and returns credentials; this module reads them
//! from the database (sealed) and stores what a registration returns.

use std::sync::Arc;

use tracing::instrument;

use super::EngineError;
use crate::acme::{self, AcmeError, ClientSettings, Issuer};
use crate::app::AppState;
use crate::model::{Account, AccountId, AccountState};
use crate::now;

/// Opens the registered ACME account `account` for issuing, from its sealed credentials.
pub(crate) async fn connect(
    state: &AppState,
    account: &Account,
) -> Result<Arc<dyn Issuer>, EngineError> {
    acme::check_usable(account)?;
    let credentials = state
        .db
        .account_credentials(&state.secrets, account.id)
        .await?
        .ok_or_else(|| {
            AcmeError::Config(format!(
                "the credentials of ACME account `{}` are missing: the account key is lost; register a new account (a new EAB from the CA may be needed)",
                account.name
            ))
        })?;
    let settings = ClientSettings::from_config(&state.config);
    Ok(acme::open(account, &credentials, &settings).await?)
}

/// Registers the stored `pending` account `id` with its CA, with EAB when one is stored, and
/// persists the account key and URL (sealed) the moment the CA accepts them. On failure the
/// account becomes `failed` with the error recorded.
#[instrument(skip_all, fields(account.id = %id))]
pub async fn register_account(state: &AppState, id: AccountId) -> Result<Account, EngineError> {
    let account = state.db.account(id).await?;
    if account.state == AccountState::Valid && account.account_url.is_some() {
        return Ok(account);
    }
    let registered = async {
        let hmac = state.db.account_eab_hmac(&state.secrets, id).await?;
        let settings = ClientSettings::from_config(&state.config);
        let registered =
            acme::register(&account, hmac.as_deref().map(|h| &h[..]), &settings).await?;
        state
            .db
            .set_account_registered(
                &state.secrets,
                id,
                &registered.credentials_json,
                &registered.account_url,
                now(),
            )
            .await?;
        Ok::<_, EngineError>(())
    };
    match registered.await {
        Ok(()) => {
            tracing::info!(account.name = %account.name, "ACME account registered");
            Ok(state.db.account(id).await?)
        }
        Err(e) => {
            tracing::warn!(account.name = %account.name, error = %e, "ACME account registration failed");
            let error = e.to_string();
            let event = crate::notify::events::account_problem(id.0, &account.name, &error, now());
            state.db.fail_account(id, &error, &event, now()).await?;
            Err(e)
        }
    }
}
