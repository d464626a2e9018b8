//! certkeep-tests: harness for the end-to-end tests (Pebble, BIND, the fault-injecting proxy).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test harness: a failed set-up is a failed test, with the message as its explanation"
)]

pub mod bind;
pub mod pebble;
pub mod proxy;
