//! [`AcmeError`]: what can go wrong talking to a CA, classified for the engine. Storage is not
//! part of it: the ACME layer never touches the database.

use std::time::Duration;

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
