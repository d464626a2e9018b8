//! Per-source limit on denied enrollments, and their aggregated audit.
//!
//! A source whose join tokens were refused `listeners.enroll_failures_per_window` times in one
//! window gets 429 for the rest of it. The first denial of a window is audited at once; later
//! denials and refusals are counted and audited as one summary event per source when the window
//! ends, so a flood of attempts costs one audit write per source per window, not one each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::db::Db;
use crate::model::NewAuditEvent;

/// Most sources tracked at once. When every tracked window is still open, a new source is
/// refused until one closes: enrollment fails closed rather than growing without bound.
const MAX_SOURCES: usize = 100_000;

/// One source's current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    /// Join tokens refused in this window.
    denied: u32,
    /// Denials not yet audited (all but the first).
    unreported_denied: u64,
    /// Attempts answered 429 in this window.
    limited: u64,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            denied: 0,
            unreported_denied: 0,
            limited: 0,
        }
    }

    fn has_unreported(&self) -> bool {
        self.unreported_denied > 0 || self.limited > 0
    }
}

/// Counts not yet audited, for one source and one ended window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The source address.
    pub source: IpAddr,
    /// Refused join tokens after the window's first (which was audited at once).
    pub denied: u64,
    /// Attempts answered 429.
    pub limited: u64,
}

impl Summary {
    fn of(source: IpAddr, w: &Window) -> Self {
        Self {
            source,
            denied: w.unreported_denied,
            limited: w.limited,
        }
    }
}

/// The enrollment limiter of one agent listener.
pub struct EnrollLimiter {
    limit: u32,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    windows: HashMap<IpAddr, Window>,
    /// Summaries of windows that ended while their source was still active.
    ended: Vec<Summary>,
}

impl EnrollLimiter {
    /// `limit` denials per source per `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            state: Mutex::default(),
        }
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the counters consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The source's open window, starting a new one (and keeping the summary of the old one)
    /// when it ended. `None` when no room is left for a new source.
    fn window_of(&self, state: &mut State, source: IpAddr, now: Instant) -> Option<Window> {
        if let Some(w) = state.windows.get(&source).copied() {
            if now.duration_since(w.started) < self.window {
                return Some(w);
            }
            if w.has_unreported() {
                state.ended.push(Summary::of(source, &w));
            }
            state.windows.remove(&source);
        }
        if state.windows.len() >= MAX_SOURCES {
            let window = self.window;
            let State { windows, ended } = state;
            windows.retain(|ip, w| {
                let open = now.duration_since(w.started) < window;
                if !open && w.has_unreported() {
                    ended.push(Summary::of(*ip, w));
                }
                open
            });
            if windows.len() >= MAX_SOURCES {
                return None;
            }
        }
        Some(Window::new(now))
    }

    /// Whether `source` may try to enroll now; a refusal is counted for the summary.
    pub fn admit(&self, source: IpAddr, now: Instant) -> bool {
        let mut state = self.state();
        let Some(mut w) = self.window_of(&mut state, source, now) else {
            return false;
        };
        let admitted = w.denied < self.limit;
        if !admitted {
            w.limited += 1;
        }
        state.windows.insert(source, w);
        admitted
    }

    /// Records a refused join token from `source`; true when it is the window's first, which
    /// the caller audits at once.
    pub fn record_denied(&self, source: IpAddr, now: Instant) -> bool {
        let mut state = self.state();
        let Some(mut w) = self.window_of(&mut state, source, now) else {
            return false;
        };
        w.denied = w.denied.saturating_add(1);
        let first = w.denied == 1;
        if !first {
            w.unreported_denied += 1;
        }
        state.windows.insert(source, w);
        first
    }

    /// Takes the summaries of every ended window, forgetting those windows.
    pub fn take_ended(&self, now: Instant) -> Vec<Summary> {
        let mut state = self.state();
        let window = self.window;
        let State { windows, ended } = &mut *state;
        windows.retain(|ip, w| {
            let open = now.duration_since(w.started) < window;
            if !open && w.has_unreported() {
                ended.push(Summary::of(*ip, w));
            }
            open
        });
        std::mem::take(ended)
    }
}

/// Audits one summary.
async fn audit_summary(db: &Db, window: Duration, s: Summary) {
    let event = NewAuditEvent {
        actor: "anonymous".into(),
        action: "agent.enroll".into(),
        subject: "agent:unknown".into(),
        source: Some(s.source.to_string()),
        outcome: "denied".into(),
        detail: format!(
            "{} further denied attempts in one {}s window: {} unknown, used or expired join tokens, {} over listeners.enroll_failures_per_window",
            s.denied + s.limited,
            window.as_secs(),
            s.denied,
            s.limited
        ),
    };
    if let Err(e) = db.append_audit(&event, crate::now()).await {
        tracing::error!(error = %e, source = %s.source, "cannot audit denied enrollments");
    }
}

/// Audits the summaries of ended windows once per window, until the limiter is dropped (with its
/// listener). Summaries of windows still open at shutdown are lost; their first denial was
/// audited.
pub(super) fn spawn_reporter(limiter: &Arc<EnrollLimiter>, db: Db) {
    let limiter: Weak<EnrollLimiter> = Arc::downgrade(limiter);
    let Some(window) = limiter.upgrade().map(|l| l.window()) else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(window);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(limiter) = limiter.upgrade() else {
                return;
            };
            let ended = limiter.take_ended(Instant::now());
            drop(limiter);
            for summary in ended {
                audit_summary(&db, window, summary).await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn limits_per_source_and_summarises_once_per_window() {
        let l = EnrollLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let mut firsts = 0;
        for _ in 0..3 {
            assert!(l.admit(A, t0));
            firsts += usize::from(l.record_denied(A, t0));
        }
        assert_eq!(
            firsts, 1,
            "only the window's first denial is audited at once"
        );
        for _ in 0..5 {
            assert!(!l.admit(A, t0), "over the limit");
        }
        assert!(l.admit(B, t0), "another source is not limited");
        assert!(l.take_ended(t0).is_empty(), "the window is still open");
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            l.take_ended(later),
            [Summary {
                source: A,
                denied: 2,
                limited: 5
            }]
        );
        assert!(l.take_ended(later).is_empty(), "reported once");
        // A new window: admitted again, its first denial audited at once again.
        assert!(l.admit(A, later));
        assert!(l.record_denied(A, later));
    }

    #[test]
    fn an_active_source_keeps_its_previous_summary() {
        let l = EnrollLimiter::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(l.record_denied(A, t0));
        assert!(!l.admit(A, t0));
        let t1 = t0 + Duration::from_secs(11);
        assert!(l.admit(A, t1), "the new window admits");
        assert_eq!(
            l.take_ended(t1),
            [Summary {
                source: A,
                denied: 0,
                limited: 1
            }]
        );
    }
}
