//! certkeep-testsupport: throwaway services for tests, started on loopback and stopped when
//! dropped: a PostgreSQL cluster ([`postgres`]), Pebble ([`pebble`]), a fault-injecting ACME
//! proxy in front of it ([`proxy`]), nginx ([`nginx`]), Wine ([`wine`]), chromedriver with a
//! headless chromium ([`chromedriver`]), an OpenID Provider on Node ([`oidc_idp`]) and child
//! processes that log when they are ready
//! ([`process`], e.g. a real `certkeep serve`). Knows nothing of certkeep's crates, so the server's own
//! tests, the end-to-end tests and the benchmarks can all use it without a dependency cycle.
//!
//! A service whose binaries are missing is skipped with a loud notice, unless its
//! `CERTKEEP_TEST_REQUIRE_*` variable is `1`, which makes that an error.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test harness: a failed set-up is a failed test, with the message as its explanation"
)]

use std::path::PathBuf;

pub mod chromedriver;
pub mod nginx;
pub mod oidc_idp;
pub mod pebble;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod smtp;
pub mod wine;

/// Picks a free loopback TCP port.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// An external program a test tier needs.
pub struct Tool {
    /// Binaries that must all be there; the path of the first is returned.
    pub binaries: &'static [&'static str],
    /// Directory searched after `PATH` (Debian puts some daemons in `/usr/sbin`).
    pub fallback_dir: Option<&'static str>,
    /// Variable that turns a missing tool into a panic when it is `1`.
    pub require_var: &'static str,
    /// What is skipped without it, e.g. "the ACME end-to-end tests".
    pub skipped: &'static str,
    /// How to install it, e.g. "the Debian package `pebble`".
    pub install: &'static str,
}

impl Tool {
    /// The path of the first binary, or `None` after a loud notice when one is missing;
    /// panics instead when `require_var` is `1`.
    pub fn find_or_skip(&self) -> Option<PathBuf> {
        let found: Option<Vec<PathBuf>> = self.binaries.iter().map(|b| self.find(b)).collect();
        if let Some(first) = found.and_then(|paths| paths.into_iter().next()) {
            return Some(first);
        }
        let names = self.binaries.join(", ");
        let place = self
            .fallback_dir
            .map_or_else(|| "on PATH".to_owned(), |d| format!("on PATH or in {d}"));
        self.missing(&format!("{names} not found {place}"));
        None
    }

    /// Reports that `what` is missing: a loud notice that the tier is skipped, or a panic when
    /// `require_var` is `1`.
    pub fn missing(&self, what: &str) {
        let required = std::env::var(self.require_var).is_ok_and(|v| v == "1");
        assert!(!required, "{}=1 but {what}", self.require_var);
        eprintln!(
            "\n!!! NOTICE: {what}: {} are SKIPPED.\n!!! Install {} or set {}=1 to make this an error.\n",
            self.skipped, self.install, self.require_var
        );
    }

    fn find(&self, name: &str) -> Option<PathBuf> {
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        });
        on_path.or_else(|| {
            self.fallback_dir
                .map(|d| PathBuf::from(d).join(name))
                .filter(|p| p.is_file())
        })
    }
}
