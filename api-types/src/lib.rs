//! Wire types shared by the certkeep server, its CLI and the agent.
//!
//! This crate knows JSON shapes only: no HTTP, no storage, no ACME. The agent depends on it and
//! must never depend on the server crate. The optional `pfx` feature adds the PKCS#12 and CCS
//! file-name rules both sides must apply identically.

pub mod agent;
pub mod api;
pub mod enums;
pub mod lifecycle;
pub mod notification;
pub mod order_event;
#[cfg(feature = "pfx")]
pub mod pem;
#[cfg(feature = "pfx")]
pub mod pfx;
pub mod target;

pub use order_event::OrderEventKind;
