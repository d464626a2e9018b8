//! certkeep-tests: the end-to-end fixtures shared by `tests/tests/` and `bench/`: a server
//! seeded through its database ([`seeded`]), notification channels ([`notify`]), BIND for dns-01 ([`bind`]) and the always-valid
//! challenge solver for Pebble ([`solver`]). Pebble, the fault proxy and PostgreSQL, which need
//! nothing of certkeep, are in `certkeep-testsupport`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test harness: a failed set-up is a failed test, with the message as its explanation"
)]

pub mod bind;
pub mod notify;
pub mod seeded;
pub mod solver;
