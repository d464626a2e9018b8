//! End-to-end issuance tests against a real Pebble, mostly through the fault-injecting proxy,
//! and challenge solvers against a real BIND 9. They skip (loudly) without `pebble` or `named`
//! unless `CERTKEEP_TEST_REQUIRE_PEBBLE=1` / `CERTKEEP_TEST_REQUIRE_BIND=1`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers: a failed set-up is a failed test"
)]

mod accounts;
mod basics;
mod challenges;
mod crash;
mod faults;
mod lifecycle;
mod scale;
mod support;
