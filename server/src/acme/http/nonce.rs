//! The nonce pool: every response's `Replay-Nonce`, handed out once to the next request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most unused nonces kept per client.
const NONCE_POOL: usize = 64;
/// Age after which a kept nonce is no longer handed out (CAs expire them).
const NONCE_MAX_AGE: Duration = Duration::from_secs(60);
/// The `Replay-Nonce` response header.
pub(super) const REPLAY_NONCE: &str = "replay-nonce";

/// Fresh nonces taken from the CA's responses, each handed out once.
///
/// instant-acme keeps a response's nonce only inside the order object that made the request
/// and asks `HEAD newNonce` whenever it has none, which for certkeep (one order object per
/// step) is before nearly every signed request. Every response's `Replay-Nonce` is moved into
/// this pool instead, and a `HEAD newNonce` is answered from it while it holds one, so each
/// nonce is used exactly once and the round trip is saved. A nonce the CA no longer accepts
/// costs one `badNonce` answer, which carries a fresh nonce that instant-acme retries with.
#[derive(Debug, Default)]
pub(super) struct NoncePool(Mutex<std::collections::VecDeque<(http::HeaderValue, Instant)>>);

impl NoncePool {
    /// Keeps `nonce`, dropping the oldest when the pool is full.
    pub(super) fn put(&self, nonce: http::HeaderValue) {
        let mut pool = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.len() == NONCE_POOL {
            pool.pop_front();
        }
        pool.push_back((nonce, Instant::now()));
    }

    /// The freshest nonce that is not too old.
    pub(super) fn take(&self) -> Option<http::HeaderValue> {
        let mut pool = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pool.retain(|(_, at)| at.elapsed() < NONCE_MAX_AGE);
        pool.pop_back().map(|(nonce, _)| nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_pool_hands_out_each_nonce_once_freshest_first() {
        let pool = NoncePool::default();
        assert!(pool.take().is_none());
        for i in 0..NONCE_POOL + 2 {
            pool.put(http::HeaderValue::from_str(&format!("n{i}")).unwrap());
        }
        assert_eq!(pool.take().unwrap(), format!("n{}", NONCE_POOL + 1));
        let mut rest = 0;
        while pool.take().is_some() {
            rest += 1;
        }
        assert_eq!(rest, NONCE_POOL - 1, "bounded, oldest dropped, each once");
    }
}
