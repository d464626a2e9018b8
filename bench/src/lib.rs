//! Benchmarks for certkeep (issue 7): shared harness for the binaries in `src/bin/`.
//!
//! Everything a benchmark needs (server, PostgreSQL, nginx, agents) is started on loopback by
//! the benchmark and stopped when it ends. Numbers go to stdout; `BENCHMARKS.md` at the
//! repository root records them. Nothing here is a test: performance is never asserted.

pub mod build;
pub mod fleet;
pub mod loadgen;
pub mod nginx;
pub mod procfs;
pub mod server;
pub mod stats;

/// Wall-clock time, read through the server's one clock edge.
pub fn now() -> time::OffsetDateTime {
    certkeep_server::now()
}

/// PEM text for one DER object.
pub use certkeep_api_types::pem::encode as pem;
