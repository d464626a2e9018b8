//! ACME adapter: the narrow [`Issuer`] trait the engine talks to, its instant-acme
//! implementation (`instant.rs`), the HTTP client under it (`http.rs`), account registration
//! with EAB and lenient EAB key decoding.
//!
//! Knows ACME and HTTP; knows nothing about jobs or scheduling. Errors are operator-facing text
//! and never contain key material.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use tracing::instrument;
use zeroize::Zeroizing;

use crate::app::AppState;
use crate::model::{Account, AccountId, AccountState};

pub mod http;
mod instant;

pub use instant::ari_cert_id;

/// Shortest accepted EAB HMAC key, in bytes.
pub const MIN_EAB_KEY_BYTES: usize = 32;

/// Errors talking to an ACME CA, classified for the engine.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// Wrong configuration (directory URL, EAB key, trust roots, missing credentials). Not retried.
    #[error("{0}")]
    Config(String),
    /// The CA refused the request with a problem document. Not retried.
    #[error("the CA refused the request: {0}")]
    Rejected(String),
    /// Temporary trouble (429, 5xx, timeouts, resets, badNonce). Retried later.
    #[error("{detail}")]
    Transient {
        detail: String,
        retry_after: Option<Duration>,
        rate_limited: bool,
    },
    /// The CA's answer was larger than `ca_limits.max_response_bytes`. Not retried.
    #[error(
        "the CA's answer to {what} is larger than {limit} bytes (ca_limits.max_response_bytes); refused"
    )]
    TooLarge { what: String, limit: usize },
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] crate::db::Error),
    /// A local failure (key generation, CSR, parsing).
    #[error("{0}")]
    Internal(String),
}

impl AcmeError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, AcmeError::Transient { .. })
    }

    /// The delay the CA asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AcmeError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Decodes an EAB HMAC key leniently: surrounding and inner whitespace, `=` padding and both
/// base64 alphabets are accepted. Keys under [`MIN_EAB_KEY_BYTES`] bytes are refused.
pub fn decode_eab_hmac(text: &str) -> Result<Zeroizing<Vec<u8>>, AcmeError> {
    let cleaned: Zeroizing<String> = Zeroizing::new(
        text.chars()
            .filter(|c| !c.is_whitespace() && *c != '=')
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect(),
    );
    if cleaned.is_empty() {
        return Err(AcmeError::Config("the EAB HMAC key is empty".into()));
    }
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cleaned.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| {
            AcmeError::Config(
                "the EAB HMAC key is not valid base64 (base64url or standard alphabet, padding optional)".into(),
            )
        })?;
    if key.len() < MIN_EAB_KEY_BYTES {
        return Err(AcmeError::Config(format!(
            "the EAB HMAC key decodes to {} bytes; at least {MIN_EAB_KEY_BYTES} are required (check that the whole key was copied)",
            key.len()
        )));
    }
    Ok(key)
}

/// Status of an ACME order, in RFC 8555 order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaOrderStatus {
    Pending,
    Ready,
    Processing,
    Valid,
    Invalid,
}

/// An order as the CA last described it.
#[derive(Debug, Clone)]
pub struct CaOrder {
    pub url: String,
    pub status: CaOrderStatus,
    /// The CA's error, for an invalid order.
    pub error: Option<String>,
    /// `Retry-After` of the response, if any.
    pub retry_after: Option<Duration>,
}

/// Status of an ACME authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaAuthzStatus {
    Pending,
    Valid,
    Invalid,
    Other,
}

/// One challenge offered for an authorization.
#[derive(Debug, Clone)]
pub struct CaChallenge {
    /// Challenge type as the CA spells it (`http-01`, `dns-01`, `sectigo-email-01`, ...).
    pub kind: String,
    pub url: String,
    pub token: String,
    /// Whether the CA still waits for us to answer it.
    pub pending: bool,
    /// `token.thumbprint`, for http-01 and (hashed) dns-01.
    pub key_authorization: String,
    /// The CA's problem document (JSON) for a challenge that failed validation.
    pub error: Option<String>,
}

/// An authorization as the CA last described it.
#[derive(Debug, Clone)]
pub struct CaAuthorization {
    pub url: String,
    /// The identifier, `*.`-prefixed for wildcards.
    pub name: String,
    pub status: CaAuthzStatus,
    pub challenges: Vec<CaChallenge>,
}

/// The narrow view of an ACME CA the engine works with. Every method is one operation that
/// may be retried as a whole (fresh nonce, fresh signature).
#[async_trait]
pub trait Issuer: Send + Sync {
    /// Whether the directory advertises ARI (`renewalInfo`); only then is `replaces` sent.
    fn supports_renewal_info(&self) -> bool;
    /// Places a new order for `names` (A-labels), optionally replacing an ARI certificate id.
    async fn new_order(
        &self,
        names: &[String],
        replaces: Option<&str>,
    ) -> Result<CaOrder, AcmeError>;
    /// Reads an existing order.
    async fn order(&self, url: &str) -> Result<CaOrder, AcmeError>;
    /// Reads the authorizations of an order.
    async fn authorizations(&self, order_url: &str) -> Result<Vec<CaAuthorization>, AcmeError>;
    /// Tells the CA a challenge is ready to be validated.
    async fn challenge_ready(
        &self,
        order_url: &str,
        authz_url: &str,
        kind: &str,
    ) -> Result<(), AcmeError>;
    /// Finalizes a `ready` order with `csr_der` (with the long finalize timeout).
    async fn finalize(&self, order_url: &str, csr_der: &[u8]) -> Result<CaOrder, AcmeError>;
    /// Downloads the chain of a `valid` order exactly as served (PEM, leaf first).
    async fn certificate(&self, order_url: &str) -> Result<String, AcmeError>;
    /// Revokes `leaf_der` with an RFC 5280 reason code.
    async fn revoke(&self, leaf_der: &[u8], reason: u8) -> Result<(), AcmeError>;
    /// The ARI window `(start, end)` for the certificate with ARI id `cert_id`.
    async fn renewal_window(
        &self,
        cert_id: &str,
    ) -> Result<(time::OffsetDateTime, time::OffsetDateTime), AcmeError>;
}

/// Refuses a revocation reason that is not an RFC 5280 code, before any request.
pub fn check_revocation_reason(reason: u8) -> Result<(), AcmeError> {
    instant::revocation_reason(reason).map(|_| ())
}

/// HTTP settings from the engine configuration.
pub(crate) fn http_settings(state: &AppState) -> http::HttpSettings {
    http::HttpSettings {
        timeout: Duration::from_secs(state.config.engine.request_timeout_secs),
        requests_per_sec: state.config.engine.directory_requests_per_sec,
        max_retry_after: state.config.ca_limits.max_retry_after(),
        max_response_bytes: state.config.ca_limits.max_response_bytes,
    }
}

/// Whether `account` may be used for requests to its CA: only a registered (`valid`) one. A
/// deactivated account is never used again, not even through an opened connection.
pub fn check_usable(account: &Account) -> Result<(), AcmeError> {
    match account.state {
        AccountState::Valid => Ok(()),
        AccountState::Deactivated => Err(AcmeError::Config(format!(
            "ACME account `{}` is deactivated: nothing is ordered, renewed or retried through it",
            account.name
        ))),
        AccountState::Pending | AccountState::Failed => Err(AcmeError::Config(format!(
            "ACME account `{}` is not registered (state {}{})",
            account.name,
            account.state,
            account
                .last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ))),
    }
}

/// Opens the registered ACME account `account` for issuing.
pub async fn connect(state: &AppState, account: &Account) -> Result<Arc<dyn Issuer>, AcmeError> {
    check_usable(account)?;
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
    let issuer = instant::InstantIssuer::open(state, account, &credentials).await?;
    Ok(Arc::new(issuer))
}

/// Registers the stored `pending` account `id` with its CA, with EAB when one is stored, and
/// persists the account key and URL (sealed) the moment the CA accepts them. On failure the
/// account becomes `failed` with the error recorded.
#[instrument(skip_all, fields(account.id = %id))]
pub async fn register_account(state: &AppState, id: AccountId) -> Result<Account, AcmeError> {
    let account = state.db.account(id).await?;
    if account.state == AccountState::Valid && account.account_url.is_some() {
        return Ok(account);
    }
    match instant::register(state, &account).await {
        Ok(()) => {
            tracing::info!(account.name = %account.name, "ACME account registered");
            Ok(state.db.account(id).await?)
        }
        Err(e) => {
            tracing::warn!(account.name = %account.name, error = %e, "ACME account registration failed");
            state
                .db
                .set_account_state(id, AccountState::Failed, Some(&e.to_string()), crate::now())
                .await?;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eab_keys_decode_leniently() {
        let raw: Vec<u8> = (0u8..64)
            .map(|i| i.wrapping_mul(37).wrapping_add(250))
            .collect();
        let url_nopad = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        let url_pad = base64::engine::general_purpose::URL_SAFE.encode(&raw);
        let std_pad = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert!(
            std_pad.contains('+') || std_pad.contains('/'),
            "the sample must exercise the alphabets"
        );
        let spaced = format!("  {}\n {} \t", &url_nopad[..20], &url_nopad[20..]);
        for text in [&url_nopad, &url_pad, &std_pad, &spaced] {
            assert_eq!(&decode_eab_hmac(text).unwrap()[..], &raw[..], "{text:?}");
        }
        let key32 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32]);
        assert_eq!(decode_eab_hmac(&key32).unwrap().len(), 32);
    }

    #[test]
    fn short_or_garbage_eab_keys_are_refused_clearly() {
        let short = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 16]);
        let err = decode_eab_hmac(&short).unwrap_err().to_string();
        assert!(err.contains("16 bytes") && err.contains("32"), "{err}");
        assert!(!err.contains(&short), "the key must not be echoed: {err}");
        assert!(
            decode_eab_hmac("   ")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            decode_eab_hmac("not*base64!")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
    }
}
