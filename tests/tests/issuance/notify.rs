//! Notifications through the whole chain with Pebble: a certificate whose CA order fails for
//! good raises `certificate.renewal_failed` in the order's failing transaction, routed to the
//! subscription covering its names and not to another domain's; a refused EAB raises
//! `account.problem`.

use certkeep_api_types::notification::{NotificationEvent, SubscriptionScope};
use certkeep_server::db::accounts::NewAccount;
use certkeep_server::model::{AccountState, KeyType, OrderReason};
use certkeep_testsupport::pebble::PebbleOptions;
use certkeep_testsupport::proxy::{Kind, LeafKey, substitute_leaf};

use certkeep_tests::notify::{routed_deliveries, webhook_subscription};

use crate::support::{Env, LONG, certificate, enqueue, wait_versions};

#[tokio::test]
async fn an_order_failing_for_good_notifies_the_subscription_of_its_names_only() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    let db = &env.state.db;
    let mut channels = Vec::new();
    for (name, pattern) in [("team", "*.example.test"), ("other", "*.example.edu")] {
        let channel = webhook_subscription(
            &env.state,
            name,
            &[NotificationEvent::CertificateRenewalFailed],
            SubscriptionScope::Domains,
            None,
            &[pattern.to_owned()],
        )
        .await;
        channels.push(channel);
    }
    // The CA serves a certificate for another key: the order fails for good.
    env.proxy.add(
        Kind::Certificate,
        None,
        substitute_leaf(&["fails.example.test"], LeafKey::Fresh),
    );
    let cert = certificate(
        &env.state,
        &account,
        "fails",
        &["fails.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let error = env.run_until_failed(cert.id).await;
    let deliveries = routed_deliveries(db).await;
    let failed: Vec<_> = deliveries
        .iter()
        .filter(|d| d.payload.kind == NotificationEvent::CertificateRenewalFailed)
        .collect();
    assert_eq!(failed.len(), 1, "{deliveries:?}");
    let d = failed[0];
    assert_eq!(
        d.channel_id, channels[0].id,
        "the team covering the name hears it"
    );
    assert_eq!(d.payload.certificate_name.as_deref(), Some("fails"));
    assert_eq!(d.payload.dns_names, vec!["fails.example.test".to_owned()]);
    assert_eq!(d.payload.detail.as_deref(), Some(error.as_str()));
    assert!(
        d.payload.fix.contains("certkeep cert renew fails"),
        "{:?}",
        d.payload
    );
}

/// A CA refusing the external account binding marks the account failed and raises
/// `account.problem` in the same transaction, for a subscription scoped to that account.
#[tokio::test]
async fn a_refused_eab_raises_account_problem() {
    let Some(env) = Env::start(PebbleOptions::default(), |_| {}).await else {
        return;
    };
    let (db, secrets, now) = (&env.state.db, &env.state.secrets, certkeep_server::now());
    let account = db
        .insert_account(
            secrets,
            &NewAccount {
                name: "wrong-eab",
                directory_url: &env.proxy.directory_url,
                contact: &[],
                allowed_domains: &["*.example.test".to_owned()],
                eab_kid: Some(&env.pebble.eab[0].kid),
                eab_hmac: Some(&[9u8; 32]),
                extra_roots_pem: Some(&env.pebble.pki.ca_pem),
            },
            now,
        )
        .await
        .unwrap();
    webhook_subscription(
        &env.state,
        "ops",
        &[NotificationEvent::AccountProblem],
        SubscriptionScope::Account,
        Some(account.id.0),
        &[],
    )
    .await;
    let refused = certkeep_server::engine::register_account(&env.state, account.id).await;
    assert!(refused.is_err(), "Pebble accepted a wrong EAB HMAC");
    assert_eq!(
        db.account(account.id).await.unwrap().state,
        AccountState::Failed
    );
    let deliveries = routed_deliveries(db).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let p = &deliveries[0].payload;
    assert_eq!(p.kind, NotificationEvent::AccountProblem);
    assert_eq!(p.account_name.as_deref(), Some("wrong-eab"));
    assert!(p.fix.contains("certkeep account show wrong-eab"), "{p:?}");
}

/// The first version raises `certificate.issued`, the next `certificate.renewed`, each written
/// in the transaction that makes the version current.
#[tokio::test]
async fn issuance_and_renewal_raise_issued_then_renewed() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    let db = &env.state.db;
    webhook_subscription(
        &env.state,
        "all",
        &[
            NotificationEvent::CertificateIssued,
            NotificationEvent::CertificateRenewed,
        ],
        SubscriptionScope::All,
        None,
        &[],
    )
    .await;
    let cert = certificate(
        &env.state,
        &account,
        "www",
        &["www.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    wait_versions(&env.state, cert.id, 1, LONG).await;
    let cert = db.certificate(cert.id).await.unwrap();
    enqueue(&env.state, &cert, &account, OrderReason::Renewal).await;
    wait_versions(&env.state, cert.id, 2, LONG).await;
    engine.stop().await;
    let mut kinds: Vec<NotificationEvent> = routed_deliveries(db)
        .await
        .into_iter()
        .map(|d| d.payload.kind)
        .collect();
    kinds.sort_by_key(|k| k.as_str());
    assert_eq!(
        kinds,
        vec![
            NotificationEvent::CertificateIssued,
            NotificationEvent::CertificateRenewed
        ],
        "one of each"
    );
}
