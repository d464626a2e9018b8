//! Scenario 12: the server is killed at each order state and a new one resumes on the same
//! database. Each run must end with the certificate stored, one order placed and exactly one
//! finalize reaching the CA.

use std::time::Duration;

use certkeep_server::model::KeyType;
use certkeep_tests::pebble::PebbleOptions;
use certkeep_tests::proxy::{Action, Hold, Kind, still_processing};

use crate::support::{Env, certificate, history, wait_event, wait_versions};

const LONG: Duration = Duration::from_secs(60);

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
    let Some(env) = Env::start(
        PebbleOptions {
            authz_reuse: 0,
            ..PebbleOptions::default()
        },
        |c| {
            c.engine.max_inline_wait_secs = 1;
        },
    )
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
