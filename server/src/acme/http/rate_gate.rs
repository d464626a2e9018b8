//! The per-directory rate limiter: a token bucket that a 429 pauses as a whole.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::acme::AcmeError;

/// Pause of a whole directory after a 429 without `Retry-After`.
pub(super) const DEFAULT_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);

/// A per-directory token bucket that a 429 pauses as a whole. Shared by every account and
/// worker of this process that talks to the same directory URL.
#[derive(Debug)]
pub struct Gate {
    per_sec: f64,
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    tokens: f64,
    refilled: Instant,
    paused_until: Option<Instant>,
}

/// Why a request cannot be sent yet.
#[derive(Debug)]
enum Wait {
    /// The directory is paused after a 429 for this long.
    Paused(Duration),
    /// The next token of the bucket arrives in this long.
    Token(Duration),
}

static GATES: LazyLock<Mutex<HashMap<String, Arc<Gate>>>> = LazyLock::new(Mutex::default);

impl Gate {
    /// The gate of `directory_url`, created with `per_sec` requests per second on first use.
    pub fn for_directory(directory_url: &str, per_sec: u32) -> Arc<Gate> {
        let mut gates = GATES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gates
            .entry(directory_url.to_owned())
            .or_insert_with(|| Arc::new(Gate::new(per_sec)))
            .clone()
    }

    fn new(per_sec: u32) -> Self {
        let per_sec = f64::from(per_sec.max(1));
        Self {
            per_sec,
            state: Mutex::new(GateState {
                tokens: per_sec,
                refilled: Instant::now(),
                paused_until: None,
            }),
        }
    }

    /// Pauses the whole directory for `pause` (a 429 answer; callers cap it, and a pause that
    /// `Instant` cannot represent becomes the default pause).
    pub fn pause(&self, pause: Duration) {
        let now = Instant::now();
        let until = now
            .checked_add(pause)
            .unwrap_or(now + DEFAULT_RATE_LIMIT_PAUSE);
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
    }

    /// How long until this directory is no longer paused.
    pub fn paused_for(&self) -> Duration {
        let s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.paused_until.map_or(Duration::ZERO, |p| {
            p.saturating_duration_since(Instant::now())
        })
    }

    /// Takes a token, or says how long to wait for one.
    fn try_take(&self) -> Result<(), Wait> {
        let now = Instant::now();
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = s.paused_until {
            if p > now {
                return Err(Wait::Paused(p - now));
            }
            s.paused_until = None;
        }
        let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.per_sec).min(self.per_sec);
        s.refilled = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Ok(())
        } else {
            Err(Wait::Token(Duration::from_secs_f64(
                (1.0 - s.tokens) / self.per_sec,
            )))
        }
    }

    /// Waits for a token. A paused directory is an error instead, so the job is rescheduled
    /// for the end of the pause rather than holding a worker that other directories need.
    pub async fn acquire(&self) -> Result<(), AcmeError> {
        loop {
            match self.try_take() {
                Ok(()) => return Ok(()),
                Err(Wait::Paused(wait)) => {
                    return Err(AcmeError::Transient {
                        detail: format!(
                            "the ACME endpoint is paused for {}s after a rate limit (HTTP 429)",
                            wait.as_secs().max(1)
                        ),
                        retry_after: Some(wait),
                        rate_limited: true,
                    });
                }
                Err(Wait::Token(wait)) => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_huge_pause_neither_panics_nor_holds_the_caller() {
        let gate = Gate::new(1000);
        gate.pause(Duration::from_secs(u64::MAX));
        let err = gate.acquire().await.unwrap_err();
        assert!(
            matches!(err, AcmeError::Transient { rate_limited: true, retry_after: Some(d), .. } if d > Duration::from_secs(50)),
            "{err:?}"
        );
        // A short pause is not slept through either: the job is rescheduled.
        let gate = Gate::new(1000);
        gate.pause(Duration::from_secs(2));
        assert!(gate.acquire().await.unwrap_err().is_transient());
    }

    #[tokio::test]
    async fn gate_paces_and_pauses() {
        let gate = Gate::new(1000);
        for _ in 0..10 {
            gate.acquire().await.unwrap();
        }
        gate.pause(Duration::from_secs(3600));
        let err = gate.acquire().await.unwrap_err();
        assert!(err.is_transient());
        assert!(err.retry_after().unwrap() > Duration::from_secs(3500));
        assert!(err.to_string().contains("429"), "{err}");
    }
}
