//! End-to-end issuance tests against a real Pebble, mostly through the fault-injecting proxy,
//! challenge solvers against a real BIND 9, and the notification a failing order raises. They
//! skip (loudly) without `pebble` or `named` unless `CERTKEEP_TEST_REQUIRE_PEBBLE=1` /
//! `CERTKEEP_TEST_REQUIRE_BIND=1`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers: a failed set-up is a failed test"
)]

mod accounts;
mod basics;
mod challenges;
mod crash;
mod dashboard;
mod faults;
mod lifecycle;
mod notify;
mod requests;
mod scale;
mod support;
