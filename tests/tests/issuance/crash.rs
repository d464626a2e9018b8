//! Scenario 12: the server is killed at each order state and a new one resumes on the same
//! database. Each run must end with the certificate stored, one order placed and exactly one
//! finalize reaching the CA.

use std::time::{Duration, Instant};

use certkeep_server::model::KeyType;
use certkeep_testsupport::pebble::{Pebble, PebbleOptions};
use certkeep_testsupport::postgres::PgCluster;
use certkeep_testsupport::proxy::{Action, Hold, Kind, Proxy, still_processing};

use crate::support::{
    Env, LONG, Running, TwoServers, certificate, history, test_config, wait_event, wait_until,
    wait_versions,
};

/// Where the first engine is killed.
#[derive(Debug, Clone, Copy)]
enum CrashPoint {
    /// The order URL is stored; the authorizations were never read.
    AfterNewOrder,
    /// The challenge was answered at the CA; the answer never came back.
    AfterChallenge,
    /// Key and CSR are stored, the order is `ready`; the finalize never reached the CA.
    AtReady,
    /// Finalize reached the CA (processing); its answer never came back.
    FinalizeInFlight,
    /// The order is parked in `processing`.
    WhileParked,
    /// The order is `valid`; the download never reached the CA.
    BeforeDownload,
    /// The CA served the certificate; it never reached storage.
    AfterDownload,
}

async fn crash_and_resume(point: CrashPoint) {
    let Some(env) = Env::start(PebbleOptions::fresh_authorizations(), |c| {
        c.engine.max_inline_wait_secs = 1;
    })
    .await
    else {
        return;
    };
    let account = env.account().await;
    let hold = Hold::new();
    let (kind, action) = match point {
        CrashPoint::AfterNewOrder => (Kind::Authz, Action::Hold(hold.clone())),
        CrashPoint::AfterChallenge => (Kind::Challenge, Action::HoldResponse(hold.clone())),
        CrashPoint::AtReady => (Kind::Finalize, Action::Hold(hold.clone())),
        CrashPoint::FinalizeInFlight => (Kind::Finalize, Action::HoldResponse(hold.clone())),
        CrashPoint::WhileParked => (Kind::Order, still_processing(3)),
        CrashPoint::BeforeDownload => (Kind::Certificate, Action::Hold(hold.clone())),
        CrashPoint::AfterDownload => (Kind::Certificate, Action::HoldResponse(hold.clone())),
    };
    env.proxy.add(kind, Some(1), action);
    let cert = certificate(
        &env.state,
        &account,
        "crash",
        &["crash.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    match point {
        CrashPoint::WhileParked => wait_event(&env.state, cert.id, "parked", LONG).await,
        _ => env.proxy.wait_seen(kind, 1, LONG).await,
    }
    let before = env
        .state
        .db
        .active_order(cert.id)
        .await
        .unwrap()
        .expect("order in flight");
    engine.crash().await;
    hold.release(false);
    env.proxy.clear();

    let engine = env.engine();
    let versions = wait_versions(&env.state, cert.id, 1, LONG).await;
    engine.stop().await;
    let events = history(&env.state, cert.id).await;
    assert_eq!(versions.len(), 1, "{point:?}: {events:?}");
    assert_eq!(
        env.proxy.forwarded(Kind::NewOrder),
        1,
        "{point:?}: one order placed: {events:?}"
    );
    assert_eq!(
        env.proxy.forwarded(Kind::Finalize),
        1,
        "{point:?}: one finalize reached the CA: {events:?}"
    );
    let orders = env.state.db.orders_for(cert.id).await.unwrap();
    assert_eq!(orders.len(), 1, "{point:?}");
    assert_eq!(
        orders[0].order_url, before.order_url,
        "{point:?}: the same order was resumed"
    );
    if before.has_key {
        assert_eq!(
            orders[0].csr_der, before.csr_der,
            "{point:?}: never a second key"
        );
    }
    assert!(
        events.iter().any(|e| e.starts_with("resumed")),
        "{point:?}: {events:?}"
    );
}

#[tokio::test]
async fn crash_after_new_order() {
    crash_and_resume(CrashPoint::AfterNewOrder).await;
}

#[tokio::test]
async fn crash_after_answering_challenges() {
    crash_and_resume(CrashPoint::AfterChallenge).await;
}

#[tokio::test]
async fn crash_at_ready() {
    crash_and_resume(CrashPoint::AtReady).await;
}

#[tokio::test]
async fn crash_with_finalize_in_flight() {
    crash_and_resume(CrashPoint::FinalizeInFlight).await;
}

#[tokio::test]
async fn crash_while_parked_in_processing() {
    crash_and_resume(CrashPoint::WhileParked).await;
}

#[tokio::test]
async fn crash_at_valid_before_download() {
    crash_and_resume(CrashPoint::BeforeDownload).await;
}

#[tokio::test]
async fn crash_after_download_before_storing() {
    crash_and_resume(CrashPoint::AfterDownload).await;
}

/// Two engines ("servers") on one PostgreSQL database: while the CA keeps the order
/// `processing`, the engine holding it renews its lease and the other leaves it alone; once
/// the holder dies, the other resumes the order within the lease (seconds), and the CA sees one
/// finalize.
#[tokio::test]
async fn a_dead_engines_order_moves_to_the_other_engine_on_postgres_within_the_lease() {
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let Some(pebble) = Pebble::start(PebbleOptions::fresh_authorizations()).await else {
        return;
    };
    let proxy = Proxy::start(&pebble.pki, pebble.port).await;
    let config = test_config();
    let lease = Duration::from_secs(config.engine.lease_secs);
    let TwoServers {
        a,
        b,
        account,
        solvers,
    } = TwoServers::start(cluster, &pebble, &proxy, config).await;
    proxy.add(Kind::Order, None, still_processing(1));
    let engine_a = Running::start(&a, Some(solvers.clone()));
    let cert = certificate(
        &a,
        &account,
        "moves",
        &["moves.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    proxy.wait_seen(Kind::Finalize, 1, LONG).await;
    let held =
        a.db.active_order(cert.id)
            .await
            .unwrap()
            .expect("in flight");
    let owner = held.lease_owner.clone().expect("leased");
    let engine_b = Running::start(&b, Some(solvers));
    // The live holder renews its lease past the first expiry; the other engine does not take it.
    let first_expiry = held.lease_expires_at.expect("lease expiry");
    wait_until("the holder to renew its lease", LONG, || async {
        let order = b.db.active_order(cert.id).await.unwrap()?;
        assert_eq!(
            order.lease_owner.as_ref(),
            Some(&owner),
            "taken from a live engine"
        );
        order
            .lease_expires_at
            .filter(|at| *at > first_expiry + time::Duration::seconds(1))
            .map(|_| ())
    })
    .await;

    engine_a.crash().await;
    let crashed = Instant::now();
    let resumed = wait_until(
        "the other engine's CA request for the order",
        LONG,
        || async { proxy.first_seen_after(Kind::Order, crashed) },
    )
    .await;
    let waited = resumed - crashed;
    assert!(
        waited <= lease + Duration::from_secs(2),
        "resumed {waited:?} after the crash (lease {lease:?})"
    );
    proxy.clear();
    let versions = wait_versions(&b, cert.id, 1, LONG).await;
    engine_b.stop().await;
    assert_eq!(versions.len(), 1);
    let orders = b.db.orders_for(cert.id).await.unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(proxy.forwarded(Kind::NewOrder), 1, "one order placed");
    assert_eq!(
        proxy.forwarded(Kind::Finalize),
        1,
        "one finalize reached the CA"
    );
}
