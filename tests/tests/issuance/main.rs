//! End-to-end issuance tests against a real Pebble, mostly through the fault-injecting proxy.
//! They skip (loudly) without `pebble` unless `CERTKEEP_TEST_REQUIRE_PEBBLE=1`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers: a failed set-up is a failed test"
)]

mod basics;
mod crash;
mod faults;
mod scale;
mod support;
