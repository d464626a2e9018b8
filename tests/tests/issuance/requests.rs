//! How many requests a certificate costs at the CA, by kind, counted by the proxy for each
//! ACME order: within one run the engine opens an order once and reuses the CA's answers
//! (new-order's order, the challenge POST, finalize's order) instead of re-reading the order
//! by URL before each step.

use std::collections::HashMap;

use certkeep_server::model::KeyType;
use certkeep_testsupport::pebble::PebbleOptions;
use certkeep_testsupport::proxy::Kind;

use crate::support::{Env, LONG, certificate, wait_versions};

/// Requests of every kind in `counts`.
fn total(counts: &HashMap<Kind, usize>) -> usize {
    counts.values().sum()
}

/// Requests of `kind` in `counts`.
fn of(counts: &HashMap<Kind, usize>, kind: Kind) -> usize {
    counts.get(&kind).copied().unwrap_or(0)
}

/// A certificate for a new name (one http-01 authorization) costs at most 8 requests: one
/// new-order, one read of the authorization to choose the challenge and one after validation
/// (its lapse time for the domain-validation ledger), one challenge POST, one look at the
/// order after answering and one more while it is processing, one finalize, one download.
#[tokio::test]
async fn a_new_name_costs_at_most_eight_requests() {
    let Some(env) = Env::start(PebbleOptions::fresh_authorizations(), |_| {}).await else {
        return;
    };
    let account = env.account().await;
    let nonces = env.proxy.seen(Kind::Nonce);
    let engine = env.engine();
    for i in 0..3 {
        let name = format!("count{i}.example.test");
        let cert = certificate(
            &env.state,
            &account,
            &format!("count{i}"),
            &[name.as_str()],
            KeyType::EcdsaP256,
        )
        .await;
        wait_versions(&env.state, cert.id, 1, LONG).await;
    }
    engine.stop().await;
    let orders = env.proxy.per_order();
    assert_eq!(orders.len(), 3, "{orders:?}");
    for counts in &orders {
        let most = [
            (Kind::NewOrder, 1),
            (Kind::Authz, 2),
            (Kind::Challenge, 1),
            (Kind::Order, 2),
            (Kind::Finalize, 1),
            (Kind::Certificate, 1),
        ];
        for (kind, n) in most {
            assert!(of(counts, kind) <= n, "{kind:?}: {counts:?}");
        }
        for kind in [Kind::NewOrder, Kind::Authz, Kind::Challenge, Kind::Finalize] {
            assert!(of(counts, kind) >= 1, "{kind:?} is needed: {counts:?}");
        }
        assert_eq!(of(counts, Kind::Certificate), 1, "{counts:?}");
        assert!(total(counts) <= 8, "{counts:?}");
    }
    // Nonces come from the previous responses: at most one fetched by the engine in all.
    let seen = env.proxy.seen_by_kind();
    assert!(
        of(&seen, Kind::Nonce) <= nonces + 1,
        "{nonces} before: {seen:?}"
    );
}

/// An order that is `ready` when created (Pebble reuses the valid authorization of the
/// account's earlier certificate for the name, as Sectigo does for pre-validated domains)
/// reads no authorization when the ledger knows the name's validation beyond the warning
/// horizon: it costs new-order, finalize, at most one look while processing, and the
/// download. A validation the ledger has lapsing within the horizon (Pebble's last one hour)
/// is read again, since a re-validation would have moved it.
#[tokio::test]
async fn a_ready_order_reads_no_authorization_the_ledger_knows() {
    let Some(env) = Env::start(PebbleOptions::default(), |_| {}).await else {
        return;
    };
    let account = env.account().await;
    let engine = env.engine();
    let name = "again.example.test";
    let issue = |i: usize| {
        let (state, account) = (&env.state, &account);
        async move {
            let label = format!("again{i}");
            let cert = certificate(state, account, &label, &[name], KeyType::EcdsaP256).await;
            wait_versions(state, cert.id, 1, LONG).await;
        }
    };
    // Solved, then ready with the ledger's entry lapsing within the horizon.
    issue(0).await;
    issue(1).await;
    // A validation lapsing in 60 days, as the CA's portal shows for a pre-validated domain.
    let t = certkeep_server::now();
    env.state
        .db
        .record_domain_validations(
            account.id,
            &[(name.to_owned(), t + time::Duration::days(60))],
            t,
        )
        .await
        .unwrap();
    issue(2).await;
    engine.stop().await;
    let orders = env.proxy.per_order();
    assert_eq!(orders.len(), 3, "{orders:?}");
    assert!(of(&orders[0], Kind::Challenge) == 1, "solved: {orders:?}");
    assert_eq!(of(&orders[1], Kind::Challenge), 0, "reused: {orders:?}");
    assert_eq!(
        of(&orders[1], Kind::Authz),
        1,
        "lapsing soon, read: {orders:?}"
    );
    let known = &orders[2];
    for (kind, n) in [
        (Kind::Authz, 0),
        (Kind::Challenge, 0),
        (Kind::NewOrder, 1),
        (Kind::Finalize, 1),
        (Kind::Certificate, 1),
    ] {
        assert_eq!(of(known, kind), n, "{kind:?}: {known:?}");
    }
    assert!(of(known, Kind::Order) <= 1, "{known:?}");
}
