//! Opening and registering ACME accounts. The caller reads the stored credentials (and the EAB
//! key) and stores what a registration returns: nothing here touches storage.

use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::http::HttpSettings;
use super::{AcmeError, Issuer, check_usable, instant};
use crate::config::Config;
use crate::model::Account;

/// How certkeep talks to CAs: `[engine]` timeouts and request rate, `[ca_limits]` bounds.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Settings of the HTTP client towards each directory.
    pub http: HttpSettings,
    /// Timeout of a finalize request, which a CA may answer slowly.
    pub finalize_timeout: Duration,
}

impl ClientSettings {
    /// The settings from the server configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            http: HttpSettings {
                timeout: Duration::from_secs(config.engine.request_timeout_secs),
                requests_per_sec: config.engine.directory_requests_per_sec,
                max_retry_after: config.ca_limits.max_retry_after(),
                max_response_bytes: config.ca_limits.max_response_bytes,
            },
            finalize_timeout: Duration::from_secs(config.engine.finalize_timeout_secs),
        }
    }
}

/// What a successful registration returns, for the caller to store (sealed).
pub struct Registered {
    /// instant-acme's account credentials as JSON; they hold the account private key.
    pub credentials_json: Zeroizing<Vec<u8>>,
    /// The account URL the CA assigned.
    pub account_url: String,
}

/// Opens the registered `account` for issuing from its stored `credentials_json` (one
/// directory GET). A deactivated or unregistered account is refused before any request.
pub async fn open(
    account: &Account,
    credentials_json: &[u8],
    settings: &ClientSettings,
) -> Result<Arc<dyn Issuer>, AcmeError> {
    check_usable(account)?;
    let issuer = instant::InstantIssuer::open(account, credentials_json, settings).await?;
    Ok(Arc::new(issuer))
}

/// Registers `account` with its CA, bound to the EAB key id of the account and `eab_hmac` when
/// both are given. A directory that requires EAB is refused without a newAccount request when
/// there is none.
pub async fn register(
    account: &Account,
    eab_hmac: Option<&[u8]>,
    settings: &ClientSettings,
) -> Result<Registered, AcmeError> {
    instant::register(account, eab_hmac, settings).await
}
