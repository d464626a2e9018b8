//! The issuance engine: workers that claim order jobs with row leases and run them
//! (`job.rs`), a scheduler that queues renewals and re-issuance (`scheduler.rs`), and
//! revocation (`revoke.rs`). Several processes may share one PostgreSQL database: a job runs
//! in one process at a time, and a crashed process's jobs are taken over when their lease
//! expires. On shutdown the leases held are released. Each job runs in its own task: a job
//! that panics fails its order with the panic recorded, and a worker or scheduler task that
//! panics is started again, so one bad answer cannot stop issuance for everyone.
//!
//! Talks to CAs only through [`crate::acme::Issuer`]; decisions live in `domain/`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use crate::acme::{self, AcmeError, Issuer};
use crate::app::AppState;
use crate::db::orders::OrderFailure;
use crate::domain::notify as notify_rules;
use crate::domain::{issuance, renewal};
use crate::model::{Account, AccountId, Order, OrderEventKind};
use crate::now;
use certkeep_api_types::notification::NotificationEvent;

mod accounts;
mod ari;
pub mod challenge;
mod crl;
mod job;
mod keys;
mod ledger;
mod moves;
mod revoke;
mod scheduler;

pub use accounts::register_account;
pub use challenge::{ChallengeSolver, Solvers};
pub use revoke::revoke_version;

/// What can stop an engine operation outside a job (registration, revocation): the CA or
/// storage, kept apart.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The CA refused, failed or could not be reached (see [`AcmeError`]).
    #[error(transparent)]
    Acme(#[from] AcmeError),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] crate::db::Error),
}

/// Shortest idle sleep between scans, so a burst of due jobs does not spin.
const MIN_IDLE: Duration = Duration::from_millis(20);

/// Builds and starts the engine.
pub struct Engine {
    state: AppState,
    solvers: Solvers,
    /// Opened ACME accounts to start with (tests put fakes here).
    issuers: HashMap<AccountId, Arc<dyn Issuer>>,
}

impl Engine {
    /// An engine over `state`, with no challenge solvers (pre-validated domains only).
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            solvers: Solvers::default(),
            issuers: HashMap::new(),
        }
    }

    /// Uses `issuer` for every order of `account` instead of opening the account at its CA.
    #[cfg(any(test, feature = "testkit"))]
    pub fn with_issuer(mut self, account: AccountId, issuer: Arc<dyn Issuer>) -> Self {
        self.issuers.insert(account, issuer);
        self
    }

    /// Uses `solvers` for `pending` authorizations.
    pub fn with_solvers(mut self, solvers: Solvers) -> Self {
        self.solvers = solvers;
        self
    }

    /// Starts the workers and the scheduler. They stop when `shutdown` is cancelled, after
    /// which the leases this engine holds are released. Aborting the handle stops everything at
    /// once without releasing (as a crash would).
    pub fn spawn(self, shutdown: CancellationToken) -> JoinHandle<()> {
        let shared = Arc::new(Shared {
            owner: format!(
                "certkeep-{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            state: self.state,
            solvers: self.solvers,
            issuers: Mutex::new(self.issuers),
            crls: crl::CrlCache::default(),
        });
        tokio::spawn(async move {
            tracing::info!(engine.owner = %shared.owner, workers = shared.state.config.engine.workers, "issuance engine started");
            let mut tasks = JoinSet::new();
            let mut roles = HashMap::new();
            let start = |tasks: &mut JoinSet<()>, role: Role| match role {
                Role::Worker => tasks.spawn(worker(shared.clone(), shutdown.clone())).id(),
                Role::Scheduler => tasks
                    .spawn(scheduler::run(shared.clone(), shutdown.clone()))
                    .id(),
            };
            for _ in 0..shared.state.config.engine.workers {
                roles.insert(start(&mut tasks, Role::Worker), Role::Worker);
            }
            roles.insert(start(&mut tasks, Role::Scheduler), Role::Scheduler);
            while let Some(ended) = tasks.join_next_with_id().await {
                let (id, panic) = match ended {
                    Ok((id, ())) => (id, None),
                    Err(e) => (e.id(), e.try_into_panic().ok()),
                };
                if let (Some(role), Some(payload)) = (roles.remove(&id), panic)
                    && !shutdown.is_cancelled()
                {
                    tracing::error!(task = ?role, panic = %panic_text(payload), "an engine task panicked; starting a new one");
                    roles.insert(start(&mut tasks, role), role);
                }
            }
            match shared.state.db.release_leases(&shared.owner).await {
                Ok(n) => {
                    tracing::info!(engine.owner = %shared.owner, released = n, "issuance engine stopped")
                }
                Err(e) => tracing::warn!(error = %e, "could not release the engine's leases"),
            }
        })
    }
}

/// What a task of the engine does.
#[derive(Debug, Clone, Copy)]
enum Role {
    Worker,
    Scheduler,
}

/// The message of a panic, shortened (the text is recorded on the order).
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    text.chars().take(300).collect()
}

/// State shared by the workers of one engine.
pub(crate) struct Shared {
    state: AppState,
    /// This engine's lease owner id.
    owner: String,
    solvers: Solvers,
    /// Opened ACME accounts, restored once per account.
    issuers: Mutex<HashMap<AccountId, Arc<dyn Issuer>>>,
    /// CRLs downloaded for the outside-revocation check.
    crls: crl::CrlCache,
}

impl Shared {
    fn lease(&self) -> Duration {
        Duration::from_secs(self.state.config.engine.lease_secs.max(1))
    }

    /// The opened ACME account, restored from its credentials on first use. An account that
    /// is no longer usable (deactivated) is dropped from the cache and refused.
    async fn issuer(&self, account: &Account) -> Result<Arc<dyn Issuer>, EngineError> {
        {
            let mut issuers = self
                .issuers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = acme::check_usable(account) {
                issuers.remove(&account.id);
                return Err(e.into());
            }
            if let Some(found) = issuers.get(&account.id) {
                return Ok(found.clone());
            }
        }
        let opened = accounts::connect(&self.state, account).await?;
        self.issuers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(account.id, opened.clone());
        Ok(opened)
    }

    /// How long an idle worker sleeps: until the next job may be due, at most the poll interval.
    async fn idle_wait(&self) -> Duration {
        let poll = Duration::from_secs(self.state.config.engine.poll_interval_secs.max(1));
        match self.state.db.next_order_due().await {
            Ok(Some(at)) => {
                let until = (at - now()).try_into().unwrap_or(Duration::ZERO);
                poll.min(until).max(MIN_IDLE)
            }
            Ok(None) => poll,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the order queue");
                poll
            }
        }
    }
}

/// Wakes the issuance workers when jobs were queued, batched: while a wake-up is outstanding
/// (sent, and no worker has claimed since), further ones are dropped, so a burst of creates
/// wakes one worker rather than every idle one for a claim that finds nothing. A worker that
/// claims a job passes the wake-up on ([`Wake::notify_one`] again), so idle workers join one
/// by one for as long as claims succeed.
#[derive(Debug, Default)]
pub struct Wake {
    notify: tokio::sync::Notify,
    /// A wake-up was sent and no worker has started a claim since.
    outstanding: std::sync::atomic::AtomicBool,
}

impl Wake {
    /// Wakes one idle worker, unless a wake-up is already outstanding (which is enough: the
    /// worker it reaches claims after this call).
    pub fn notify_one(&self) {
        if !self
            .outstanding
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            self.notify.notify_one();
        }
    }

    /// Waits for a wake-up.
    async fn notified(&self) {
        self.notify.notified().await;
    }

    /// A worker is about to claim: wake-ups from now on are new.
    fn claiming(&self) {
        self.outstanding
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Claims and runs jobs until shutdown.
async fn worker(shared: Arc<Shared>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let t = now();
        shared.state.wake.claiming();
        match shared
            .state
            .db
            .claim_order(&shared.owner, t + shared.lease(), t)
            .await
        {
            Ok(Some(order)) => {
                // There may be more: another idle worker tries.
                shared.state.wake.notify_one();
                supervise(&shared, order, &shutdown).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot claim an order"),
        }
        let idle = shared.idle_wait().await;
        tokio::select! {
            () = shared.state.wake.notified() => {}
            () = tokio::time::sleep(idle) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// Runs one claimed job in a task of its own. If it panics, the order fails with the panic
/// message recorded (and its published challenge responses are removed); the worker goes on.
async fn supervise(shared: &Arc<Shared>, order: Order, shutdown: &CancellationToken) {
    let (id, certificate) = (order.id, order.certificate_id);
    let mut job = JoinSet::new();
    let (owned, stop) = (shared.clone(), shutdown.clone());
    job.spawn(async move { work(&owned, order, &stop).await });
    let Some(Err(e)) = job.join_next().await else {
        return;
    };
    if !e.is_panic() {
        return;
    }
    let message = format!(
        "internal error: the order's job panicked ({}); the order was stopped, see the server log",
        panic_text(e.into_panic())
    );
    tracing::error!(order.id = %id, error = %message, "order job panicked");
    job::remove_responses(shared, id, true).await;
    if let Err(e) = fail(shared, id, certificate, &message).await {
        tracing::warn!(error = %e, "cannot record the panic on the order; it will be resumed");
    }
}

/// Runs one claimed job while keeping its lease alive, then records how it ended.
#[instrument(skip_all, fields(order.id = %order.id, certificate.id = %order.certificate_id))]
async fn work(shared: &Shared, order: Order, shutdown: &CancellationToken) {
    let claimed = order.clone();
    let (id, certificate, account) = (order.id, order.certificate_id, order.account_id);
    let mut result = tokio::select! {
        r = job::run(shared, order) => r,
        () = heartbeat(shared, id) => Err(job::Stop::LeaseLost),
        () = shutdown.cancelled() => {
            if let Err(e) = shared.state.db.reschedule_order(id, &shared.owner, now(), None, false, now()).await {
                tracing::warn!(error = %e, "cannot release the order's lease at shutdown");
            }
            return;
        }
    };
    if !matches!(result, Ok(job::Outcome::Done) | Err(job::Stop::LeaseLost))
        && let Some(why) = unusable_account(shared, account).await
    {
        // Deactivated while this run went on: no park, no retry through it.
        result = Err(job::Stop::Failed(why));
    }
    let t = now();
    let recorded = match result {
        Ok(job::Outcome::Done) => record_duration(shared, account, claimed.created_at, t).await,
        Ok(job::Outcome::Park { until, why }) => park(shared, id, until, &why).await,
        Err(job::Stop::LeaseLost) => {
            tracing::warn!("lost the order's lease to another process; leaving the order to it");
            return;
        }
        Err(job::Stop::Failed(message)) => fail(shared, id, certificate, &message).await,
        Err(job::Stop::Acme(e)) if !e.is_transient() => {
            fail(shared, id, certificate, &e.to_string()).await
        }
        Err(job::Stop::Acme(e)) => {
            note_lasting_trouble(shared, account, &claimed, &e, t).await;
            retry_or_fail(shared, &claimed, &e.to_string(), e.retry_after(), t).await
        }
        Err(job::Stop::Storage(e)) => {
            retry_or_fail(shared, &claimed, &format!("storage: {e}"), None, t).await
        }
    };
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "cannot record the order's outcome; it will be resumed");
    }
}

/// Why the order's account, read afresh, can no longer be used; `None` when it can (or cannot
/// be read now, in which case the next run checks again).
async fn unusable_account(shared: &Shared, account: AccountId) -> Option<String> {
    match shared.state.db.account(account).await {
        Ok(account) => acme::check_usable(&account).err().map(|e| e.to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the order's account");
            None
        }
    }
}

/// Raises `account.problem` when a transient error says the account's CA will stay unusable for
/// a while: a rate limit of at least `notifications.account_rate_limited_secs`, or the
/// `notifications.renewal_failed_attempts`-th transient failure in a row of one order. Once per
/// account, kind and day (the event's dedupe key), so a paused directory with many orders
/// raises it once; a crash before it is stored means the next failing run stores it.
async fn note_lasting_trouble(
    shared: &Shared,
    account: AccountId,
    order: &Order,
    e: &AcmeError,
    t: time::OffsetDateTime,
) {
    let AcmeError::Transient {
        rate_limited,
        retry_after,
        ..
    } = e
    else {
        return;
    };
    let config = &shared.state.config.notifications;
    let limit = Duration::from_secs(config.account_rate_limited_secs);
    let (kind, detail) = if *rate_limited && retry_after.is_some_and(|d| d >= limit) {
        (
            "rate-limited",
            format!("the CA rate-limits it for a long while: {e}"),
        )
    } else if i64::from(order.attempts) + 1 >= i64::from(config.renewal_failed_attempts) {
        (
            "failing",
            format!(
                "the CA failed {} attempts in a row of one order: {e}",
                order.attempts + 1
            ),
        )
    } else {
        return;
    };
    let stored = async {
        let name = shared.state.db.account(account).await?.name;
        let mut event = crate::notify::events::account_problem(account.0, &name, &detail, t);
        event.dedupe_key = Some(format!("account.problem:{}:{kind}:{}", account.0, t.date()));
        shared.state.db.enqueue_event(&event).await
    };
    if let Err(err) = stored.await {
        tracing::warn!(error = %err, "cannot store the account.problem event");
    }
}

/// After a transient error: retries `order` after its back-off (or the CA's `Retry-After`), or
/// fails it when that would be past its deadline.
async fn retry_or_fail(
    shared: &Shared,
    order: &Order,
    error: &str,
    retry_after: Option<Duration>,
    t: time::OffsetDateTime,
) -> Result<(), crate::db::Error> {
    let delay = issuance::retry_delay(
        order.attempts,
        retry_after,
        shared.state.config.ca_limits.max_retry_after(),
    );
    match issuance::after(t, delay).filter(|at| *at < order.deadline_at) {
        Some(at) => {
            retry(shared, order.id, at, error).await;
            Ok(())
        }
        None => {
            let message = format!("the order's deadline passed; last error: {error}");
            fail(shared, order.id, order.certificate_id, &message).await
        }
    }
}

async fn retry(shared: &Shared, id: crate::model::OrderId, at: time::OffsetDateTime, error: &str) {
    let db = &shared.state.db;
    tracing::info!(retry_at = %at, error = %error, "transient ACME error; order rescheduled");
    let result = async {
        if db
            .reschedule_order(id, &shared.owner, at, Some(error), true, now())
            .await?
        {
            db.add_order_event(
                id,
                OrderEventKind::Retry,
                &format!("{error}; retrying at {at}"),
                now(),
            )
            .await?;
        }
        Ok::<_, crate::db::Error>(())
    };
    if let Err(e) = result.await {
        tracing::warn!(error = %e, "cannot reschedule the order");
    }
}

async fn park(
    shared: &Shared,
    id: crate::model::OrderId,
    until: time::OffsetDateTime,
    why: &str,
) -> Result<(), crate::db::Error> {
    let db = &shared.state.db;
    if db
        .reschedule_order(id, &shared.owner, until, None, false, now())
        .await?
    {
        db.add_order_event(
            id,
            OrderEventKind::Parked,
            &format!("{why}; resuming at {until}"),
            now(),
        )
        .await?;
        tracing::info!(resume_at = %until, "order parked");
    }
    Ok(())
}

async fn fail(
    shared: &Shared,
    id: crate::model::OrderId,
    certificate: crate::model::CertificateId,
    message: &str,
) -> Result<(), crate::db::Error> {
    let db = &shared.state.db;
    let cert = db.certificate(certificate).await?;
    let not_after = match cert.current_version_id {
        Some(v) => Some(db.version(v).await?.not_after),
        None => None,
    };
    let t = now();
    let certificate_state = issuance::state_after_failure(&cert);
    let retry_at =
        not_after.map(|end| renewal::retry_at(cert.consecutive_failures + 1, Some(end), t));
    let failure = OrderFailure {
        error: message,
        certificate_state,
        retry_at,
        event: renewal_failed_event(shared, &cert, retry_at.is_none(), not_after, message, t),
    };
    if db
        .fail_order(id, &shared.owner, certificate, &failure, t)
        .await?
    {
        db.add_order_event(id, OrderEventKind::Failed, message, t)
            .await?;
        if not_after.is_some() {
            metrics::counter!(crate::metrics::RENEWAL_FAILURES, "certificate" => cert.name.clone())
                .increment(1);
        }
        tracing::warn!(error = %message, "order failed");
    }
    Ok(())
}

/// The `certificate.renewal_failed` a failure raises, if the notification rules want one.
fn renewal_failed_event(
    shared: &Shared,
    cert: &crate::model::Certificate,
    given_up: bool,
    not_after: Option<time::OffsetDateTime>,
    message: &str,
    t: time::OffsetDateTime,
) -> Option<crate::db::notify::NewEvent> {
    let n = &shared.state.config.notifications;
    let notice = notify_rules::renewal_failure_notice(
        given_up,
        cert.consecutive_failures + 1,
        n.renewal_failed_attempts,
        not_after,
        time::Duration::days(i64::from(n.renewal_failed_lifetime_days)),
        t,
    )?;
    let dedupe = match (notice, cert.current_version_id) {
        (notify_rules::RenewalFailureNotice::Lifetime, Some(v)) => {
            Some(format!("renewal_failed:lifetime:{v}"))
        }
        _ => None,
    };
    Some(crate::notify::events::certificate(
        NotificationEvent::CertificateRenewalFailed,
        cert,
        &cert.dns_names,
        Some(message),
        dedupe,
        t,
    ))
}

/// Records how long an issued order took from queue to certificate, per directory.
async fn record_duration(
    shared: &Shared,
    account: AccountId,
    queued_at: time::OffsetDateTime,
    t: time::OffsetDateTime,
) -> Result<(), crate::db::Error> {
    let directory = shared.state.db.account(account).await?.directory_url;
    metrics::histogram!(crate::metrics::ORDER_DURATION, "directory" => directory)
        .record((t - queued_at).as_seconds_f64().max(0.0));
    Ok(())
}

/// Renews the lease every third of its length; returns when it was lost.
async fn heartbeat(shared: &Shared, id: crate::model::OrderId) {
    let lease = shared.lease();
    loop {
        tokio::time::sleep(lease / 3).await;
        match shared
            .state
            .db
            .renew_lease(id, &shared.owner, now() + lease)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(error = %e, "cannot renew the order's lease"),
        }
    }
}
