//! ACME adapter: the narrow [`Issuer`] trait the engine talks to and its instant-acme
//! implementation (`instant.rs`), opening and registering accounts from credentials the caller
//! supplies (`account.rs`), the directory document (`directory.rs`), lenient EAB key decoding
//! (`eab.rs`), the error type (`error.rs`) and the HTTP client under it all (`http/`).
//!
//! Knows ACME and HTTP; knows nothing about jobs, scheduling or storage: it takes and returns
//! credentials, and the engine stores them. Errors are operator-facing text and never contain
//! key material.

use std::time::Duration;

use async_trait::async_trait;

use crate::model::{Account, AccountState};

mod account;
mod directory;
mod eab;
mod error;
pub mod http;
mod instant;

pub use account::{ClientSettings, Registered, open, register};
pub use eab::{MIN_EAB_KEY_BYTES, decode_eab_hmac};
pub use error::AcmeError;
pub use instant::ari_cert_id;

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
    /// When the authorization (for a valid one: the name's validation) expires, if the CA
    /// said.
    pub expires: Option<time::OffsetDateTime>,
}

/// The CA's ARI answer (RFC 9773) for one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalWindow {
    /// The suggested window `[start, end]`.
    pub start: time::OffsetDateTime,
    pub end: time::OffsetDateTime,
    /// When to ask again (`Retry-After`), uncapped: the caller clamps it.
    pub retry_after: Duration,
}

/// The narrow view of an ACME CA the engine works with. Every method is one operation that
/// may be retried as a whole (fresh nonce, fresh signature).
#[async_trait]
pub trait Issuer: Send + Sync {
    /// Whether the directory advertises ARI (`renewalInfo`); only then is `replaces` sent.
    fn supports_renewal_info(&self) -> bool;
    /// Places a new order for `names` (A-labels), optionally replacing an ARI certificate id;
    /// the order comes back as the CA's answer described it (no second read).
    async fn new_order(
        &self,
        names: &[String],
        replaces: Option<&str>,
    ) -> Result<Box<dyn IssuerOrder>, AcmeError>;
    /// Opens an existing order from its URL (one read: how a resumed job learns its state).
    async fn order(&self, url: &str) -> Result<Box<dyn IssuerOrder>, AcmeError>;
    /// Revokes `leaf_der` with an RFC 5280 reason code.
    async fn revoke(&self, leaf_der: &[u8], reason: u8) -> Result<(), AcmeError>;
    /// The ARI window and `Retry-After` for the certificate with ARI id `cert_id`. Goes
    /// through the directory's rate gate like every other request.
    async fn renewal_window(&self, cert_id: &str) -> Result<RenewalWindow, AcmeError>;
}

/// One order, opened for one run of its job. It keeps what the CA last said (the order body
/// of new-order, of the last poll or of finalize, and the authorization bodies once read), so
/// the steps of a run use the answers of earlier requests instead of re-reading the order by
/// URL. Only [`IssuerOrder::refresh`] reads the order again. Every method is one operation
/// that may be retried as a whole.
#[async_trait]
pub trait IssuerOrder: Send + Sync {
    /// The order as the CA last described it.
    fn view(&self) -> &CaOrder;
    /// Reads the order again (a poll); the authorizations are read again after it.
    async fn refresh(&mut self) -> Result<CaOrder, AcmeError>;
    /// The order's authorizations: read once per order body, then as read.
    async fn authorizations(&mut self) -> Result<Vec<CaAuthorization>, AcmeError>;
    /// Tells the CA the challenge of type `kind` of the authorization at `authz_url` is ready
    /// to be validated.
    async fn challenge_ready(&mut self, authz_url: &str, kind: &str) -> Result<(), AcmeError>;
    /// Finalizes the order with `csr_der` (with the long finalize timeout) if it was last
    /// seen `ready`, and returns the CA's answer (finalize returns the order).
    async fn finalize(&mut self, csr_der: &[u8]) -> Result<CaOrder, AcmeError>;
    /// Downloads the chain of a `valid` order exactly as served (PEM, leaf first).
    async fn certificate(&mut self) -> Result<String, AcmeError>;
}

/// Refuses a revocation reason that is not an RFC 5280 code, before any request.
pub fn check_revocation_reason(reason: u8) -> Result<(), AcmeError> {
    instant::revocation_reason(reason).map(|_| ())
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `.rs` file below `dir`, with its text.
    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.display().to_string(), text));
            }
        }
    }

    /// acme/ takes and returns credentials and never touches `AppState` or the database; its
    /// metric names are the consts of `metrics.rs`.
    #[test]
    fn the_acme_layer_never_reaches_into_state_or_storage() {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/acme"),
            &mut files,
        );
        assert!(files.len() > 5, "the acme sources were found");
        for (path, text) in files {
            // Tests may use anything (this one names what it looks for).
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            for banned in ["crate::app", "AppState", "crate::db", "crate::secrets"] {
                assert!(
                    !text.contains(banned),
                    "{path} uses `{banned}`: the engine reads and stores, acme/ takes and returns"
                );
            }
            for name in ["counter!(\"", "histogram!(\"", "gauge!(\""] {
                assert!(
                    !text.contains(name),
                    "{path} names a metric with a literal: use a const of metrics.rs"
                );
            }
        }
    }
}
