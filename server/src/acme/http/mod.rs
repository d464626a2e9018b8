//! The HTTP client under instant-acme, one concern per module:
//!
//! - `client.rs`: [`AcmeHttp`], the [`instant_acme::HttpClient`] every ACME request goes
//!   through: per-request timeouts (a longer one for finalize), bounded bodies, retries of the
//!   safe requests (GET directory, HEAD newNonce) only; signed POSTs are never retried here.
//! - `rate_gate.rs`: [`Gate`], the per-directory token bucket that a 429 pauses as a whole.
//! - `nonce.rs`: the pool of `Replay-Nonce`s that answers `HEAD newNonce` without a round trip.
//! - `classify.rs`: which answers are transient, and non-JSON error pages turned into problem
//!   documents that keep their status.
//! - `retry_after.rs`: `Retry-After` in both forms, capped at `ca_limits.max_retry_after_secs`.
//! - `observe.rs`: what one operation saw on the wire (status, `Retry-After`), for the
//!   classification of instant-acme's errors, and on request the response bodies (fields
//!   instant-acme drops, such as an authorization's `expires`).
//!
//! Knows HTTP and TLS; knows nothing about orders or storage. Never logs bodies.

mod classify;
mod client;
mod nonce;
mod observe;
mod rate_gate;
mod retry_after;

pub use classify::{Class, classify, is_transient_status};
pub use client::{AcmeHttp, HttpSettings, MAX_INLINE_PAUSE};
pub use observe::{Observed, observe, observe_bodies};
pub use rate_gate::Gate;
pub use retry_after::{RetryAfter, parse_retry_after};
