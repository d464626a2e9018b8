//! A challenge solver for Pebble started with `PEBBLE_VA_ALWAYS_VALID=1`.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use certkeep_server::acme::CaChallenge;
use certkeep_server::engine::ChallengeSolver;

/// A challenge solver for Pebble with `PEBBLE_VA_ALWAYS_VALID=1`: it answers http-01 (dns-01 for
/// wildcards) and publishes nothing, since Pebble accepts every answer. Counts what it did.
#[derive(Default)]
pub struct AlwaysValidSolver {
    presented: AtomicUsize,
    cleaned: AtomicUsize,
}

impl AlwaysValidSolver {
    /// Challenges presented so far.
    pub fn presented(&self) -> usize {
        self.presented.load(Ordering::SeqCst)
    }

    /// Challenges cleaned up so far.
    pub fn cleaned(&self) -> usize {
        self.cleaned.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ChallengeSolver for AlwaysValidSolver {
    fn kinds(&self) -> &[&'static str] {
        &["http-01", "dns-01"]
    }

    fn describe(&self) -> String {
        "always-valid test solver".into()
    }

    async fn present(&self, _name: &str, _challenge: &CaChallenge) -> Result<String, String> {
        self.presented.fetch_add(1, Ordering::SeqCst);
        Ok("nothing published".into())
    }

    async fn cleanup(&self, _name: &str, _challenge: &CaChallenge) -> Result<String, String> {
        self.cleaned.fetch_add(1, Ordering::SeqCst);
        Ok("nothing to remove".into())
    }
}
