//! Account life cycle against the engine: a deactivated account takes effect at once, even
//! though the engine holds an opened connection for it.

use std::time::Duration;

use certkeep_server::model::{CertificateState, KeyType, OrderState};
use certkeep_testsupport::proxy::{Kind, Proxy, unavailable};

use crate::support::{
    Env, LONG, certificate, history, wait_event, wait_order_ended, wait_versions,
};

/// Every request that reached the proxy, of any kind.
fn requests(proxy: &Proxy) -> usize {
    [
        Kind::Directory,
        Kind::Nonce,
        Kind::NewAccount,
        Kind::NewOrder,
        Kind::Order,
        Kind::Authz,
        Kind::Challenge,
        Kind::Finalize,
        Kind::Certificate,
        Kind::Revoke,
        Kind::Other,
    ]
    .into_iter()
    .map(|k| proxy.seen(k))
    .sum()
}

/// An order waiting for its retry when the account is deactivated fails at once, naming the
/// account, and not one more request reaches the CA through the engine's cached connection.
#[tokio::test]
async fn a_deactivated_account_is_never_used_again() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    let engine = env.engine();
    // A first certificate opens (and caches) the account's connection.
    let first = certificate(
        &env.state,
        &account,
        "first",
        &["first.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    wait_versions(&env.state, first.id, 1, LONG).await;
    let done = env.state.db.orders_for(first.id).await.unwrap();
    assert!(
        !done[0].has_key,
        "the finished order keeps no copy of the key: {done:?}"
    );
    // The CA is in maintenance for two minutes: the second order waits for its retry.
    env.proxy.add(Kind::NewOrder, None, unavailable(120));
    let second = certificate(
        &env.state,
        &account,
        "second",
        &["second.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    wait_event(&env.state, second.id, "retry", LONG).await;
    let before = requests(&env.proxy);

    // As `POST /acme-accounts/{account}/deactivate` does.
    env.state
        .db
        .deactivate_account(account.id, certkeep_server::now())
        .await
        .unwrap();
    env.state.wake.notify_one();

    let ended = wait_order_ended(&env.state, second.id, Duration::from_secs(20)).await;
    engine.stop().await;
    let events = history(&env.state, second.id).await;
    assert_eq!(ended.state, OrderState::Failed, "{events:?}");
    let error = ended.last_error.unwrap_or_default();
    assert!(
        error.contains("`acme`") && error.contains("deactivated"),
        "the reason names the deactivated account: {error}"
    );
    assert_eq!(
        requests(&env.proxy),
        before,
        "no request went through the cached connection after deactivation"
    );
    let cert = env.state.db.certificate(second.id).await.unwrap();
    assert_eq!(cert.state, CertificateState::Failed);
    // The scheduler queues nothing through it, even for a certificate that is due.
    assert!(
        env.state
            .db
            .renewals_due(certkeep_server::now() + time::Duration::days(365), 10)
            .await
            .unwrap()
            .is_empty()
    );
}
