//! Shared set-up for the issuance tests: application state over a test database, accounts,
//! certificates, engines that can be stopped or crashed, and bounded waits on the database.

use std::cell::Cell;
use std::future::Future;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use certkeep_server::app::AppState;
use certkeep_server::ca::InternalCa;
use certkeep_server::config::{Config, EngineConfig};
use certkeep_server::db::Db;
use certkeep_server::db::accounts::NewAccount;
use certkeep_server::db::certificates::NewCertificate;
use certkeep_server::engine::{Engine, Solvers};
use certkeep_server::model::{
    Account, Certificate, CertificateId, CertificateVersion, KeyType, Order, OrderReason,
    OrderState, RenewalPolicy,
};
use certkeep_server::secrets::Secrets;
use certkeep_server::testkit::TestDb;
use certkeep_tests::solver::AlwaysValidSolver;
use certkeep_testsupport::pebble::{Pebble, PebbleOptions};
use certkeep_testsupport::postgres::PgCluster;
use certkeep_testsupport::proxy::Proxy;
use tokio_util::sync::CancellationToken;

/// How long the tests wait for an order or a version.
pub(crate) const LONG: Duration = Duration::from_secs(60);

/// Engine settings with second-scale waits.
pub(crate) fn test_config() -> Config {
    Config {
        engine: EngineConfig {
            enabled: true,
            workers: 4,
            poll_interval_secs: 1,
            lease_secs: 3,
            order_deadline_secs: 600,
            max_inline_wait_secs: 2,
            request_timeout_secs: 5,
            finalize_timeout_secs: 10,
            directory_requests_per_sec: 1000,
            renew_fraction: 1.0 / 3.0,
            renewal_scan_secs: 1,
        },
        ..Config::default()
    }
}

/// Application state over `db` (a "server process" without listeners).
pub(crate) async fn app_state(db: Db, secrets: Secrets, config: Config) -> AppState {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = InternalCa::load_or_create(&db, &secrets, certkeep_server::now())
        .await
        .expect("internal CA");
    AppState::new(db, secrets, ca, config)
}

/// Pebble, a proxy in front of it, and a server state on a fresh SQLite database.
pub(crate) struct Env {
    pub(crate) pebble: Pebble,
    pub(crate) proxy: Proxy,
    pub(crate) state: AppState,
    pub(crate) solver: Arc<AlwaysValidSolver>,
    _db: TestDb,
}

impl Env {
    /// Starts everything, or `None` when Pebble is not installed (the test then skips).
    pub(crate) async fn start(
        options: PebbleOptions,
        adjust: impl FnOnce(&mut Config),
    ) -> Option<Self> {
        let pebble = Pebble::start(options).await?;
        let proxy = Proxy::start(&pebble.pki, pebble.port).await;
        let db = TestDb::sqlite().await;
        let mut config = test_config();
        adjust(&mut config);
        let state = app_state(db.db.clone(), Secrets::generate(), config).await;
        Some(Self {
            pebble,
            proxy,
            state,
            solver: Arc::default(),
            _db: db,
        })
    }

    /// Starts with default Pebble options and settings, and registers [`Env::account`].
    pub(crate) async fn with_account() -> Option<(Self, Account)> {
        let env = Self::start(PebbleOptions::default(), |_| {}).await?;
        let account = env.account().await;
        Some((env, account))
    }

    /// A registered account on the proxy's directory with EAB `kid-1`, for `*.example.test`.
    pub(crate) async fn account(&self) -> Account {
        register(
            &self.state,
            "acme",
            &self.proxy.directory_url,
            &self.pebble,
            0,
            &["*.example.test"],
        )
        .await
    }

    /// Solvers answering Pebble's challenges (always valid).
    pub(crate) fn solvers(&self) -> Solvers {
        let mut solvers = Solvers::default();
        solvers
            .add("*.example.test", self.solver.clone())
            .expect("pattern");
        solvers
    }

    /// Starts an engine with the always-valid solver.
    pub(crate) fn engine(&self) -> Running {
        Running::start(&self.state, Some(self.solvers()))
    }

    /// Runs an engine until the newest order of `cert` ends, asserts that it failed, and
    /// returns its recorded error.
    pub(crate) async fn run_until_failed(&self, cert: CertificateId) -> String {
        let engine = self.engine();
        let order = wait_order_ended(&self.state, cert, LONG).await;
        engine.stop().await;
        assert_eq!(order.state, OrderState::Failed);
        order.last_error.expect("a failed order records its error")
    }
}

/// Stores and registers an account on `directory_url` with Pebble's EAB key number `eab`.
pub(crate) async fn register(
    state: &AppState,
    name: &str,
    directory_url: &str,
    pebble: &Pebble,
    eab: usize,
    patterns: &[&str],
) -> Account {
    let key = &pebble.eab[eab];
    let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
    let account = state
        .db
        .insert_account(
            &state.secrets,
            &NewAccount {
                name,
                directory_url,
                contact: &[],
                allowed_domains: &patterns,
                eab_kid: Some(&key.kid),
                eab_hmac: Some(&key.hmac),
                extra_roots_pem: Some(&pebble.pki.ca_pem),
            },
            certkeep_server::now(),
        )
        .await
        .expect("insert account");
    certkeep_server::engine::register_account(state, account.id)
        .await
        .expect("register account")
}

/// Defines a certificate and queues its first order, as the API does.
pub(crate) async fn certificate(
    state: &AppState,
    account: &Account,
    name: &str,
    names: &[&str],
    key_type: KeyType,
) -> Certificate {
    certificate_with(
        state,
        account,
        name,
        names,
        key_type,
        RenewalPolicy::default(),
    )
    .await
}

/// Like [`certificate`] with a renewal policy.
pub(crate) async fn certificate_with(
    state: &AppState,
    account: &Account,
    name: &str,
    names: &[&str],
    key_type: KeyType,
    policy: RenewalPolicy,
) -> Certificate {
    let now = certkeep_server::now();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = state
        .db
        .insert_certificate(
            &NewCertificate {
                name,
                dns_names: &names,
                key_type,
                account_id: account.id,
                policy,
                created_by: Some("test"),
            },
            now,
        )
        .await
        .expect("insert certificate");
    enqueue(state, &cert, account, OrderReason::New).await;
    cert
}

/// Queues an order for `cert` with a ten-minute deadline and wakes the engine.
pub(crate) async fn enqueue(
    state: &AppState,
    cert: &Certificate,
    account: &Account,
    reason: OrderReason,
) -> Order {
    let now = certkeep_server::now();
    let order = state
        .db
        .enqueue_order(
            cert.id,
            account.id,
            reason,
            now + time::Duration::minutes(10),
            now,
        )
        .await
        .expect("enqueue");
    state.wake.notify_one();
    order
}

/// Two application states ("servers") with one set of secrets on one fresh, migrated
/// PostgreSQL database, an account registered through the first on `proxy`'s directory, and
/// always-valid solvers for `*.example.test`.
pub(crate) struct TwoServers {
    pub(crate) a: AppState,
    pub(crate) b: AppState,
    pub(crate) account: Account,
    pub(crate) solvers: Solvers,
}

impl TwoServers {
    pub(crate) async fn start(
        cluster: &PgCluster,
        pebble: &Pebble,
        proxy: &Proxy,
        config: Config,
    ) -> Self {
        let url = secrecy::SecretString::from(cluster.url(&cluster.create_database().await));
        let (db_a, db_b) = (
            Db::connect_postgres(&url).await.expect("connect a"),
            Db::connect_postgres(&url).await.expect("connect b"),
        );
        db_a.migrate().await.expect("migrate");
        let secrets = Secrets::generate();
        let a = app_state(db_a, secrets.clone(), config.clone()).await;
        let b = app_state(db_b, secrets, config).await;
        let account = register(
            &a,
            "shared",
            &proxy.directory_url,
            pebble,
            0,
            &["*.example.test"],
        )
        .await;
        let mut solvers = Solvers::default();
        solvers
            .add("*.example.test", Arc::new(AlwaysValidSolver::default()))
            .expect("pattern");
        Self {
            a,
            b,
            account,
            solvers,
        }
    }
}

/// A running engine that can be stopped cleanly or crashed.
pub(crate) struct Running {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Starts an engine over `state`, with `solvers` if given.
    pub(crate) fn start(state: &AppState, solvers: Option<Solvers>) -> Self {
        Self::spawn(Engine::new(state.clone()).with_solvers(solvers.unwrap_or_default()))
    }

    /// Starts `engine`.
    pub(crate) fn spawn(engine: Engine) -> Self {
        let stop = CancellationToken::new();
        Self {
            handle: engine.spawn(stop.clone()),
            stop,
        }
    }

    /// Stops cleanly (leases released).
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.handle.await.expect("engine task");
    }

    /// Kills the engine mid-flight, as a crash would: no lease is released.
    pub(crate) async fn crash(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// Polls `check` every 50 ms until it yields a value, failing after `timeout`.
pub(crate) async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `cert` has at least `n` versions; returns them newest first.
pub(crate) async fn wait_versions(
    state: &AppState,
    cert: CertificateId,
    n: usize,
    timeout: Duration,
) -> Vec<CertificateVersion> {
    wait_until(
        &format!("{n} version(s) of certificate {cert}"),
        timeout,
        || async {
            let versions = state.db.versions(cert).await.expect("versions");
            (versions.len() >= n).then_some(versions)
        },
    )
    .await
}

/// Waits until the newest order of `cert` has ended; returns it.
pub(crate) async fn wait_order_ended(
    state: &AppState,
    cert: CertificateId,
    timeout: Duration,
) -> Order {
    wait_until(
        &format!("the order of certificate {cert} to end"),
        timeout,
        || async {
            let orders = state.db.orders_for(cert).await.expect("orders");
            orders.into_iter().next().filter(|o| o.state.is_final())
        },
    )
    .await
}

/// Waits until the order of `cert` recorded an event of `kind`.
pub(crate) async fn wait_event(
    state: &AppState,
    cert: CertificateId,
    kind: &str,
    timeout: Duration,
) {
    wait_until(
        &format!("event `{kind}` of certificate {cert}"),
        timeout,
        || async {
            for order in state.db.orders_for(cert).await.expect("orders") {
                if state
                    .db
                    .order_events(order.id)
                    .await
                    .expect("events")
                    .iter()
                    .any(|e| e.kind.as_str() == kind)
                {
                    return Some(());
                }
            }
            None
        },
    )
    .await
}

/// Every event of every order of `cert`, as `kind: detail` lines (for assertion messages).
pub(crate) async fn history(state: &AppState, cert: CertificateId) -> Vec<String> {
    let mut out = Vec::new();
    for order in state.db.orders_for(cert).await.expect("orders") {
        for e in state.db.order_events(order.id).await.expect("events") {
            out.push(format!("{}: {}", e.kind, e.detail));
        }
    }
    out
}

thread_local! {
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

/// Counts the panics on the calling thread from now on; the returned function reads the count.
/// A `#[tokio::test]` runs its runtime, and so every task the engine spawns, on its own thread,
/// so panics of other tests running in parallel are not counted.
pub(crate) fn count_panics() -> impl Fn() -> usize {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
    let start = PANICS.with(Cell::get);
    move || PANICS.with(Cell::get) - start
}
