//! What one ACME operation saw on the wire. instant-acme hides the HTTP status and
//! `Retry-After` of the response behind an error, so each operation runs inside [`observe`],
//! and the client records the last response's status and (capped) `Retry-After` in a
//! task-local context, together with an optional per-operation timeout (finalize's longer one).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::retry_after::RetryAfter;

tokio::task_local! {
    /// Per-operation context: an optional timeout override and what the responses said.
    static CALL: CallContext;
}

/// What one ACME operation observed on the wire (the last response wins).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// HTTP status of the last response, if one arrived.
    pub status: Option<u16>,
    /// `Retry-After` of the last response, as a delay from when it arrived (capped).
    pub retry_after: Option<Duration>,
    /// Whether that `Retry-After` asked for more than the cap.
    pub retry_after_capped: bool,
}

/// Response bodies kept by [`observe_bodies`], with the URL each answered.
type Bodies = Arc<Mutex<Vec<(String, bytes::Bytes)>>>;

struct CallContext {
    timeout: Option<Duration>,
    observed: Arc<Mutex<Observed>>,
    /// Set when the operation wants the successful response bodies (what instant-acme parses
    /// away, e.g. an authorization's `expires`).
    bodies: Option<Bodies>,
}

/// Runs `op` with `timeout` (if given) for each request and returns what the responses said.
pub async fn observe<T>(timeout: Option<Duration>, op: impl Future<Output = T>) -> (T, Observed) {
    let observed = Arc::new(Mutex::new(Observed::default()));
    let ctx = CallContext {
        timeout,
        observed: observed.clone(),
        bodies: None,
    };
    let out = CALL.scope(ctx, op).await;
    let seen = observed.lock().map(|o| o.clone()).unwrap_or_default();
    (out, seen)
}

/// Like [`observe`] without a timeout override, also returning every successful response
/// body with the URL it answered, in order.
pub async fn observe_bodies<T>(
    op: impl Future<Output = T>,
) -> (T, Observed, Vec<(String, bytes::Bytes)>) {
    let observed = Arc::new(Mutex::new(Observed::default()));
    let bodies = Bodies::default();
    let ctx = CallContext {
        timeout: None,
        observed: observed.clone(),
        bodies: Some(bodies.clone()),
    };
    let out = CALL.scope(ctx, op).await;
    let seen = observed.lock().map(|o| o.clone()).unwrap_or_default();
    let kept = bodies.lock().map(|b| b.clone()).unwrap_or_default();
    (out, seen, kept)
}

/// Keeps a successful response body for the running operation, if it asked for them.
pub(super) fn keep_body(url: &str, body: &bytes::Bytes) {
    let _ = CALL.try_with(|c| {
        if let Some(bodies) = &c.bodies
            && let Ok(mut b) = bodies.lock()
        {
            b.push((url.to_owned(), body.clone()));
        }
    });
}

/// The timeout the running operation asked for, if any.
pub(super) fn timeout_override() -> Option<Duration> {
    CALL.try_with(|c| c.timeout).ok().flatten()
}

/// Records the last response of the running operation (no-op outside [`observe`]).
pub(super) fn record(status: Option<u16>, retry_after: Option<RetryAfter>) {
    let _ = CALL.try_with(|c| {
        if let Ok(mut o) = c.observed.lock() {
            *o = Observed {
                status,
                retry_after: retry_after.map(|r| r.delay),
                retry_after_capped: retry_after.is_some_and(|r| r.capped),
            };
        }
    });
}
