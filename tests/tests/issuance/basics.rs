//! Accounts with EAB, issuance for every key type, multi-SAN, renewal, revocation, scope.

use base64::Engine as _;
use certkeep_server::db::accounts::NewAccount;
use certkeep_server::engine::revoke_version;
use certkeep_server::model::{
    AccountState, CertificateState, KeyType, OrderReason, OrderState, RenewalPolicy,
};
use certkeep_server::testkit::TestDb;
use certkeep_testsupport::pebble::{Pebble, PebbleOptions};
use certkeep_testsupport::proxy::{Action, Kind, rename_challenges};
use x509_parser::prelude::FromDer as _;

use crate::support::{
    Env, LONG, Running, app_state, certificate, certificate_with, history, register, test_config,
    wait_event, wait_order_ended, wait_versions,
};

fn leaf_key_oid(chain_pem: &str) -> String {
    let pem = x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&pem.contents).unwrap();
    cert.public_key().algorithm.algorithm.to_id_string()
}

#[tokio::test]
async fn eab_account_issues_rsa_and_ecdsa_with_several_names_on_every_backend() {
    let Some(pebble) = Pebble::start(PebbleOptions::fresh_authorizations()).await else {
        return;
    };
    for (i, t) in TestDb::all().await.into_iter().enumerate() {
        let state = app_state(
            t.db.clone(),
            certkeep_server::secrets::Secrets::generate(),
            test_config(),
        )
        .await;
        let account = register(
            &state,
            "pebble",
            &pebble.directory_url,
            &pebble,
            i * 2,
            &["*.example.test", "example.test"],
        )
        .await;
        assert_eq!(account.state, AccountState::Valid, "{}", t.backend);
        assert!(
            account
                .account_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://127.0.0.1:"))
        );
        let creds = state
            .db
            .account_credentials(&state.secrets, account.id)
            .await
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&creds).contains("key_pkcs8"),
            "credentials are stored (sealed) at once"
        );

        let rsa = certificate(
            &state,
            &account,
            "rsa",
            &["rsa.example.test"],
            KeyType::Rsa2048,
        )
        .await;
        let p256 = certificate(
            &state,
            &account,
            "multi",
            &["www.example.test", "example.test", "*.api.example.test"],
            KeyType::EcdsaP256,
        )
        .await;
        let p384 = certificate(
            &state,
            &account,
            "p384",
            &["p384.example.test"],
            KeyType::EcdsaP384,
        )
        .await;
        let mut solvers = certkeep_server::engine::Solvers::default();
        let solver = std::sync::Arc::new(certkeep_tests::solver::AlwaysValidSolver::default());
        solvers.add("*.example.test", solver.clone()).unwrap();
        solvers.add("example.test", solver.clone()).unwrap();
        let engine = Running::start(&state, Some(solvers));
        for (cert, oid) in [
            (&rsa, "1.2.840.113549.1.1.1"),
            (&p256, "1.2.840.10045.2.1"),
            (&p384, "1.2.840.10045.2.1"),
        ] {
            let versions = wait_versions(&state, cert.id, 1, LONG).await;
            let v = &versions[0];
            assert_eq!(
                leaf_key_oid(&v.chain_pem),
                oid,
                "{} on {}",
                cert.name,
                t.backend
            );
            let mut sans = v.dns_names.clone();
            sans.sort();
            let mut wanted = cert.dns_names.clone();
            wanted.sort();
            assert_eq!(sans, wanted);
            assert!(
                v.chain_pem.matches("BEGIN CERTIFICATE").count() >= 2,
                "the full chain is stored"
            );
            assert_eq!(v.thumbprint.len(), 64);
            let stored = state.db.certificate(cert.id).await.unwrap();
            assert_eq!(stored.state, CertificateState::Valid);
            assert_eq!(stored.current_version_id, Some(v.id));
            assert!(
                stored
                    .renew_after
                    .is_some_and(|r| r > v.not_before && r < v.not_after)
            );
            let key = state.db.version_key(&state.secrets, v.id).await.unwrap();
            assert!(!key.is_empty());
            // The `issued` event is written just after the version.
            wait_event(&state, cert.id, "issued", LONG).await;
            let events = history(&state, cert.id).await;
            for kind in [
                "queued",
                "created",
                "challenge-answered",
                "key-stored",
                "finalizing",
                "issued",
            ] {
                assert!(
                    events.iter().any(|e| e.starts_with(kind)),
                    "{kind} missing in {events:?}"
                );
            }
        }
        assert!(solver.cleaned() >= solver.presented() && solver.presented() >= 5);
        engine.stop().await;
    }
}

#[tokio::test]
async fn hmac_encodings_register_and_short_keys_fail_before_any_request() {
    let Some(env) = Env::start(PebbleOptions::default(), |_| {}).await else {
        return;
    };
    let b64 = |engine: &base64::engine::GeneralPurpose, raw: &[u8]| engine.encode(raw);
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
    let keys = &env.pebble.eab;
    let variants = [
        ("unpadded", &keys[0], b64(&URL_SAFE_NO_PAD, &keys[0].hmac)),
        ("padded", &keys[2], b64(&URL_SAFE, &keys[2].hmac)),
        ("standard", &keys[3], b64(&STANDARD, &keys[3].hmac)),
        (
            "whitespace",
            &keys[4],
            format!("\n  {}\t\n", b64(&URL_SAFE_NO_PAD, &keys[4].hmac)),
        ),
        ("32-byte", &keys[1], b64(&URL_SAFE_NO_PAD, &keys[1].hmac)),
    ];
    for (name, key, text) in variants {
        let hmac =
            certkeep_server::acme::decode_eab_hmac(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let account = env
            .state
            .db
            .insert_account(
                &env.state.secrets,
                &NewAccount {
                    name,
                    directory_url: &env.proxy.directory_url,
                    contact: &[],
                    allowed_domains: &[],
                    eab_kid: Some(&key.kid),
                    eab_hmac: Some(&hmac),
                    extra_roots_pem: Some(&env.pebble.pki.ca_pem),
                },
                certkeep_server::now(),
            )
            .await
            .unwrap();
        let registered = certkeep_server::engine::register_account(&env.state, account.id).await;
        assert_eq!(
            registered.unwrap_or_else(|e| panic!("{name}: {e}")).state,
            AccountState::Valid,
            "{name}"
        );
    }
    let before = env.proxy.seen(Kind::Directory) + env.proxy.seen(Kind::NewAccount);
    let short = URL_SAFE_NO_PAD.encode(&keys[0].hmac[..16]);
    let err = certkeep_server::acme::decode_eab_hmac(&short)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("16 bytes") && err.contains("at least 32"),
        "{err}"
    );
    assert_eq!(
        env.proxy.seen(Kind::Directory) + env.proxy.seen(Kind::NewAccount),
        before,
        "no request for a short key"
    );
}

#[tokio::test]
async fn missing_eab_fails_fast_naming_external_account_required() {
    let Some(env) = Env::start(PebbleOptions::default(), |_| {}).await else {
        return;
    };
    let account = env
        .state
        .db
        .insert_account(
            &env.state.secrets,
            &NewAccount {
                name: "no-eab",
                directory_url: &env.proxy.directory_url,
                contact: &[],
                allowed_domains: &[],
                eab_kid: None,
                eab_hmac: None,
                extra_roots_pem: Some(&env.pebble.pki.ca_pem),
            },
            certkeep_server::now(),
        )
        .await
        .unwrap();
    let err = certkeep_server::engine::register_account(&env.state, account.id)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("externalAccountRequired"), "{err}");
    assert_eq!(
        env.proxy.seen(Kind::NewAccount),
        0,
        "no newAccount was sent"
    );
    assert_eq!(
        env.proxy.seen(Kind::Nonce),
        0,
        "not even a nonce was fetched"
    );
    let stored = env.state.db.account(account.id).await.unwrap();
    assert_eq!(stored.state, AccountState::Failed);
    assert!(
        stored
            .last_error
            .unwrap()
            .contains("externalAccountRequired")
    );
}

#[tokio::test]
async fn out_of_scope_names_are_refused_without_an_order() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    let cert = certificate(
        &env.state,
        &account,
        "evil",
        &["www.example.test", "evil.example.org"],
        KeyType::EcdsaP256,
    )
    .await;
    let error = env.run_until_failed(cert.id).await;
    assert!(
        error.contains("`evil.example.org` is outside the allowed domains"),
        "{error}"
    );
    assert_eq!(env.proxy.seen(Kind::NewOrder), 0);
    assert_eq!(
        env.state.db.certificate(cert.id).await.unwrap().state,
        CertificateState::Failed
    );
}

#[tokio::test]
async fn pending_authorization_without_solver_fails_with_a_clear_message() {
    let Some(env) = Env::start(PebbleOptions::fresh_authorizations(), |_| {}).await else {
        return;
    };
    let account = env.account().await;
    let cert = certificate(
        &env.state,
        &account,
        "unvalidated",
        &["new.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = Running::start(&env.state, None);
    let order = wait_order_ended(&env.state, cert.id, LONG).await;
    engine.stop().await;
    assert_eq!(
        order.last_error.as_deref(),
        Some(
            "domain not pre-validated at the CA and no challenge solver configured for new.example.test"
        )
    );
    assert_eq!(env.proxy.seen(Kind::Challenge), 0);
    assert_eq!(env.proxy.seen(Kind::Finalize), 0);
}

/// Scenario 1: names validated before (authorization reuse) get no challenge; unknown
/// challenge types (`sectigo-email-01`) on valid authorizations are left alone.
#[tokio::test]
async fn pre_validated_order_touches_no_challenge() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    let warm = certificate(
        &env.state,
        &account,
        "warm-up",
        &["pre.example.test", "www.pre.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    wait_versions(&env.state, warm.id, 1, LONG).await;
    engine.stop().await;
    let challenges = env.proxy.seen(Kind::Challenge);
    env.proxy
        .add(Kind::Authz, None, rename_challenges("sectigo-email-01"));
    // Pebble answers `ready` at once (like Sectigo often does); also show the other form, a
    // `pending` order whose authorizations are all `valid` already.
    env.proxy.add(
        Kind::NewOrder,
        Some(1),
        Action::Rewrite(std::sync::Arc::new(|json, _| {
            let ready = json["status"] == "ready";
            if ready {
                json["status"] = "pending".into();
            }
            ready
        })),
    );
    let cert = certificate(
        &env.state,
        &account,
        "pre",
        &["pre.example.test", "www.pre.example.test"],
        KeyType::Rsa2048,
    )
    .await;
    let engine = Running::start(&env.state, None);
    wait_versions(&env.state, cert.id, 1, LONG).await;
    engine.stop().await;
    assert_eq!(
        env.proxy.seen(Kind::Challenge),
        challenges,
        "no challenge touched"
    );
    let events = history(&env.state, cert.id).await;
    assert!(
        events.iter().any(|e| e.starts_with("pre-validated")),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.starts_with("challenge-answered")),
        "{events:?}"
    );
    assert!(
        env.proxy.seen(Kind::Authz) > 0,
        "the valid authorizations were read"
    );
}

#[tokio::test]
async fn renewal_adds_a_version_and_keeps_the_previous_one() {
    let Some(env) = Env::start(
        PebbleOptions {
            validity_secs: Some(3600),
            ..PebbleOptions::default()
        },
        |_| {},
    )
    .await
    else {
        return;
    };
    let account = env.account().await;
    // Renew when the whole lifetime remains: right after issuance, through the scheduler.
    let policy = RenewalPolicy {
        fraction: Some(1.0),
        days: None,
    };
    let cert = certificate_with(
        &env.state,
        &account,
        "renew",
        &["renew.example.test"],
        KeyType::EcdsaP256,
        policy,
    )
    .await;
    let engine = env.engine();
    let versions = wait_versions(&env.state, cert.id, 2, LONG).await;
    engine.stop().await;
    let (newest, previous) = (&versions[0], &versions[1]);
    assert_ne!(newest.serial, previous.serial);
    assert_eq!(
        env.state
            .db
            .certificate(cert.id)
            .await
            .unwrap()
            .current_version_id,
        Some(newest.id)
    );
    assert!(
        env.state
            .db
            .version_key(&env.state.secrets, previous.id)
            .await
            .is_ok(),
        "previous version kept"
    );
    let orders = env.state.db.orders_for(cert.id).await.unwrap();
    assert!(
        orders
            .iter()
            .any(|o| o.reason == OrderReason::Renewal && o.state == OrderState::Done)
    );
    assert!(
        orders.iter().all(|o| o.replaces.is_none()),
        "no `replaces` without renewalInfo"
    );
}

#[tokio::test]
async fn revocation_marks_the_version_and_reissues() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    let cert = certificate(
        &env.state,
        &account,
        "revoke",
        &["revoke.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    let first = wait_versions(&env.state, cert.id, 1, LONG).await.remove(0);
    let err = revoke_version(&env.state, first.id, 7)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("RFC 5280"), "{err}");
    revoke_version(&env.state, first.id, 4).await.unwrap();
    assert_eq!(env.proxy.forwarded(Kind::Revoke), 1);
    let stored = env.state.db.version(first.id).await.unwrap();
    assert!(stored.revoked_at.is_some());
    assert_eq!(stored.revocation_reason, Some(4));
    let versions = wait_versions(&env.state, cert.id, 2, LONG).await;
    assert_ne!(versions[0].id, first.id);
    let orders = env.state.db.orders_for(cert.id).await.unwrap();
    assert_eq!(orders[0].reason, OrderReason::Reissue);
    wait_event(&env.state, cert.id, "revoked", LONG).await;
    // Revoking again is not an error (alreadyRevoked).
    revoke_version(&env.state, first.id, 4).await.unwrap();
    engine.stop().await;
}
