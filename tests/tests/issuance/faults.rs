//! Slow and flaky CA behaviour injected by the proxy (docs/CA-BEHAVIOUR.md, scenarios 2-9),
//! and hostile or broken CAs: absurd `Retry-After`, oversized answers, certificates for other
//! names or another key, and a job that panics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use certkeep_api_types::notification::{NotificationEvent, SubscriptionScope};
use certkeep_server::acme::{AcmeError, Issuer, IssuerOrder, RenewalWindow};
use certkeep_server::engine::Engine;
use certkeep_server::model::{CertificateState, KeyType, OrderReason, OrderState};
use certkeep_tests::notify::{routed_deliveries, webhook_subscription};
use certkeep_testsupport::pebble::PebbleOptions;
use certkeep_testsupport::proxy::{
    Action, Cut, Kind, LeafKey, Proxy, html_error, rate_limited, still_processing, substitute_leaf,
    turns_invalid, unavailable,
};

use crate::support::{
    Env, LONG, Running, certificate, count_panics, enqueue, history, register, wait_event,
    wait_order_ended, wait_versions,
};

/// Scenario 2: `processing` with `Retry-After` for a few polls, then `valid`.
#[tokio::test]
async fn long_processing_honours_retry_after() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    env.proxy.add(Kind::Order, Some(2), still_processing(2));
    let cert = certificate(
        &env.state,
        &account,
        "slow",
        &["slow.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let started = Instant::now();
    let engine = env.engine();
    wait_versions(&env.state, cert.id, 1, LONG).await;
    engine.stop().await;
    // Without the header the back-off would have polled after 0.5 s and 1 s.
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "two Retry-After: 2 waits were honoured"
    );
    assert_eq!(env.proxy.forwarded(Kind::Finalize), 1);
    assert_eq!(env.proxy.forwarded(Kind::NewOrder), 1);
    let events = history(&env.state, cert.id).await;
    assert!(
        events.iter().any(|e| e.starts_with("processing")),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.starts_with("parked")),
        "short waits stay inline: {events:?}"
    );
}

/// Scenario 3: a wait longer than the inline limit parks the job; a restarted server resumes
/// the same order.
#[tokio::test]
async fn processing_past_the_inline_limit_parks_and_resumes_after_restart() {
    let Some(env) = Env::start(PebbleOptions::default(), |c| {
        c.engine.max_inline_wait_secs = 1
    })
    .await
    else {
        return;
    };
    let account = env.account().await;
    env.proxy.add(Kind::Order, Some(1), still_processing(3));
    let cert = certificate(
        &env.state,
        &account,
        "parked",
        &["parked.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    wait_event(&env.state, cert.id, "parked", LONG).await;
    let parked = env
        .state
        .db
        .active_order(cert.id)
        .await
        .unwrap()
        .expect("parked order");
    assert_eq!(parked.state, OrderState::Processing);
    assert!(parked.lease_owner.is_none(), "a parked job holds no worker");
    assert!(parked.next_attempt_at > certkeep_server::now() + time::Duration::seconds(1));
    engine.crash().await;
    let engine = env.engine();
    wait_versions(&env.state, cert.id, 1, LONG).await;
    engine.stop().await;
    let orders = env.state.db.orders_for(cert.id).await.unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(
        orders[0].order_url, parked.order_url,
        "the same order was resumed"
    );
    assert_eq!(env.proxy.forwarded(Kind::NewOrder), 1);
    assert_eq!(env.proxy.forwarded(Kind::Finalize), 1);
}

/// Scenario 4: `processing` turns `invalid`: the CA error is recorded, no polling loop.
#[tokio::test]
async fn invalid_order_records_the_ca_error() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    env.proxy.add(
        Kind::Order,
        Some(1),
        turns_invalid(
            "urn:ietf:params:acme:error:rejectedIdentifier",
            "OV validation refused",
        ),
    );
    let cert = certificate(
        &env.state,
        &account,
        "refused",
        &["refused.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    let order = wait_order_ended(&env.state, cert.id, LONG).await;
    let polls = env.proxy.seen(Kind::Order);
    engine.stop().await;
    assert_eq!(order.state, OrderState::Failed);
    let error = order.last_error.unwrap();
    assert!(
        error.contains("rejectedIdentifier") && error.contains("OV validation refused"),
        "{error}"
    );
    assert_eq!(
        env.state.db.certificate(cert.id).await.unwrap().state,
        CertificateState::Failed
    );
    assert_eq!(
        env.proxy.seen(Kind::Order),
        polls,
        "no polling after the order failed"
    );
    assert_eq!(env.proxy.forwarded(Kind::Finalize), 1);
}

/// Scenario 5: 503 with `Retry-After` once on directory, newNonce, new-order, order and
/// certificate download.
#[tokio::test]
async fn unavailable_once_everywhere_then_completes() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    for kind in [
        Kind::Directory,
        Kind::Nonce,
        Kind::NewOrder,
        Kind::Order,
        Kind::Certificate,
    ] {
        env.proxy.add(kind, Some(1), unavailable(1));
    }
    let cert = certificate(
        &env.state,
        &account,
        "busy",
        &["busy.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    wait_versions(&env.state, cert.id, 1, LONG).await;
    engine.stop().await;
    for kind in [
        Kind::Directory,
        Kind::Nonce,
        Kind::NewOrder,
        Kind::Order,
        Kind::Certificate,
    ] {
        assert!(
            env.proxy.seen(kind) > env.proxy.forwarded(kind),
            "{kind:?} was answered 503 and retried"
        );
    }
    assert_eq!(env.proxy.forwarded(Kind::NewOrder), 1);
    assert_eq!(env.proxy.forwarded(Kind::Finalize), 1);
    let events = history(&env.state, cert.id).await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("retry") && e.contains("maintenance")),
        "{events:?}"
    );
}

/// Scenario 6: nginx/Apache HTML error pages are transient errors that keep their status.
#[tokio::test]
async fn html_error_pages_are_transient_and_keep_the_status() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    env.proxy.add(Kind::Directory, Some(1), html_error(504));
    env.proxy.add(Kind::NewOrder, Some(1), html_error(502));
    env.proxy.add(Kind::Finalize, Some(1), html_error(504));
    env.proxy.add(Kind::Order, Some(1), html_error(500));
    let cert = certificate(
        &env.state,
        &account,
        "html",
        &["html.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    wait_versions(&env.state, cert.id, 1, LONG).await;
    engine.stop().await;
    let events = history(&env.state, cert.id).await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("retry") && e.contains("HTTP 502")),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e.contains("HTTP 504")), "{events:?}");
    assert_eq!(
        env.proxy.forwarded(Kind::Finalize),
        1,
        "the 504 finalize never reached the CA; one finalize did"
    );
    assert_eq!(env.proxy.forwarded(Kind::NewOrder), 1);
}

/// Scenario 9: connections reset before the response, after the headers and mid-body.
#[tokio::test]
async fn connection_resets_are_retried_without_a_second_certificate() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    env.proxy
        .add(Kind::Order, Some(1), Action::Reset(Cut::AfterHeaders));
    env.proxy
        .add(Kind::Finalize, Some(1), Action::Reset(Cut::BeforeResponse));
    env.proxy
        .add(Kind::Certificate, Some(1), Action::Reset(Cut::MidBody));
    let cert = certificate(
        &env.state,
        &account,
        "reset",
        &["reset.example.test"],
        KeyType::Rsa2048,
    )
    .await;
    let engine = env.engine();
    wait_versions(&env.state, cert.id, 1, LONG).await;
    engine.stop().await;
    assert_eq!(
        env.proxy.forwarded(Kind::Finalize),
        1,
        "finalize reached the CA once; the lost answer was re-read"
    );
    assert_eq!(env.proxy.forwarded(Kind::NewOrder), 1);
    assert!(
        env.proxy.forwarded(Kind::Certificate) >= 2,
        "the cut download was repeated"
    );
    assert_eq!(env.state.db.versions(cert.id).await.unwrap().len(), 1);
}

/// Scenario 7: badNonce bursts of 1, 3 and 6: short ones absorbed, long ones retried as a
/// whole operation with a fresh nonce and signature; no JWS replayed.
#[tokio::test]
async fn bad_nonce_bursts_are_absorbed_or_retried_without_replay() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    env.proxy.add(
        Kind::NewOrder,
        Some(1),
        Action::BadNonce { with_nonce: true },
    );
    env.proxy.add(
        Kind::Finalize,
        Some(3),
        Action::BadNonce { with_nonce: false },
    );
    env.proxy.add(
        Kind::Certificate,
        Some(6),
        Action::BadNonce { with_nonce: true },
    );
    let cert = certificate(
        &env.state,
        &account,
        "nonce",
        &["nonce.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    wait_versions(&env.state, cert.id, 1, LONG).await;
    engine.stop().await;
    assert_eq!(env.proxy.replayed_jws(), 0, "no JWS was sent twice");
    assert_eq!(env.proxy.forwarded(Kind::Finalize), 1);
    assert_eq!(env.proxy.forwarded(Kind::NewOrder), 1);
    let events = history(&env.state, cert.id).await;
    assert!(
        events
            .iter()
            .filter(|e| e.starts_with("retry") && e.contains("badNonce"))
            .count()
            >= 2,
        "{events:?}"
    );
}

/// Scenario 8: a 429 on one endpoint pauses every order for it; other endpoints continue.
#[tokio::test]
async fn rate_limit_pauses_one_endpoint_only() {
    let Some(env) = Env::start(PebbleOptions::default(), |_| {}).await else {
        return;
    };
    let other = Proxy::start(&env.pebble.pki, env.pebble.port).await;
    let limited = env.account().await;
    let free = register(
        &env.state,
        "other-endpoint",
        &other.directory_url,
        &env.pebble,
        2,
        &["*.example.test"],
    )
    .await;
    env.proxy.add(Kind::NewOrder, Some(1), rate_limited(4));
    let engine = env.engine();
    let first = certificate(
        &env.state,
        &limited,
        "limited-1",
        &["l1.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    env.proxy.wait_seen(Kind::NewOrder, 1, LONG).await;
    let limited_at = Instant::now();
    let second = certificate(
        &env.state,
        &limited,
        "limited-2",
        &["l2.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let elsewhere = certificate(
        &env.state,
        &free,
        "free",
        &["free.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    wait_versions(&env.state, elsewhere.id, 1, LONG).await;
    let free_done = limited_at.elapsed();
    assert!(
        free_done < Duration::from_secs(4),
        "the other endpoint was not paused ({free_done:?})"
    );
    assert_eq!(
        env.proxy.seen(Kind::NewOrder),
        1,
        "the limited endpoint got no new order during the pause"
    );
    wait_versions(&env.state, first.id, 1, LONG).await;
    wait_versions(&env.state, second.id, 1, LONG).await;
    assert!(
        limited_at.elapsed() >= Duration::from_secs(3),
        "Retry-After: 4 was honoured"
    );
    engine.stop().await;
    assert_eq!(env.proxy.forwarded(Kind::NewOrder), 2);
    assert_eq!(other.forwarded(Kind::NewOrder), 1);
}

/// A directory that is not JSON (a guessed `/directory` suffix) is a configuration error
/// naming the URL (behaviour 6 in docs/CA-BEHAVIOUR.md).
#[tokio::test]
async fn wrong_directory_url_is_named() {
    let Some(env) = Env::start(PebbleOptions::default(), |_| {}).await else {
        return;
    };
    let url = format!("{}/directory", env.proxy.directory_url);
    let account = env
        .state
        .db
        .insert_account(
            &env.state.secrets,
            &certkeep_server::db::accounts::NewAccount {
                name: "guessed",
                directory_url: &url,
                contact: &[],
                allowed_domains: &[],
                eab_kid: Some(&env.pebble.eab[0].kid),
                eab_hmac: Some(&env.pebble.eab[0].hmac),
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
    assert!(err.contains(&url), "{err}");
}

/// A 429 with `Retry-After: 18446744073709551615` on one directory: nothing panics, the wait is
/// capped at `ca_limits.max_retry_after_secs`, the paused directory holds no worker (more of its
/// orders than workers: sleeping through the 60 s pause would delay the other directory by as
/// much), another directory keeps issuing, and each affected order says why.
#[tokio::test]
async fn absurd_retry_after_on_one_directory_neither_panics_nor_stops_the_others() {
    let Some(env) = Env::start(PebbleOptions::default(), |c| {
        c.ca_limits.max_retry_after_secs = 60;
        c.notifications.account_rate_limited_secs = 30;
    })
    .await
    else {
        return;
    };
    let panics = count_panics();
    let other = Proxy::start(&env.pebble.pki, env.pebble.port).await;
    let limited = env.account().await;
    let db = &env.state.db;
    webhook_subscription(
        &env.state,
        "ops",
        &[NotificationEvent::AccountProblem],
        SubscriptionScope::All,
        None,
        &[],
    )
    .await;
    let healthy = register(
        &env.state,
        "healthy-directory",
        &other.directory_url,
        &env.pebble,
        2,
        &["*.example.test"],
    )
    .await;
    env.proxy.add(Kind::NewOrder, None, rate_limited(u64::MAX));
    let engine = env.engine();
    let first = certificate(
        &env.state,
        &limited,
        "stuck-0",
        &["stuck0.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    wait_event(&env.state, first.id, "retry", LONG).await;
    let workers = env.state.config.engine.workers;
    let mut stuck = vec![first];
    for i in 1..=workers + 1 {
        stuck.push(
            certificate(
                &env.state,
                &limited,
                &format!("stuck-{i}"),
                &[&format!("stuck{i}.example.test")],
                KeyType::EcdsaP256,
            )
            .await,
        );
    }
    for c in &stuck[1..] {
        wait_event(&env.state, c.id, "retry", LONG).await;
    }
    let healthy_from = Instant::now();
    let mut issued = Vec::new();
    for i in 0..3 {
        issued.push(
            certificate(
                &env.state,
                &healthy,
                &format!("healthy-{i}"),
                &[&format!("healthy{i}.example.test")],
                KeyType::EcdsaP256,
            )
            .await,
        );
    }
    for c in &issued {
        wait_versions(&env.state, c.id, 1, LONG).await;
    }
    let healthy_took = healthy_from.elapsed();
    engine.stop().await;
    assert!(
        healthy_took < Duration::from_secs(30),
        "the other directory was not held up by the paused one ({healthy_took:?})"
    );
    assert_eq!(panics(), 0, "no worker panicked");
    assert_eq!(
        env.proxy.seen(Kind::NewOrder),
        1,
        "the paused directory got no further new-order"
    );
    assert_eq!(env.proxy.forwarded(Kind::NewOrder), 0);
    assert_eq!(other.forwarded(Kind::NewOrder), 3);
    let now = certkeep_server::now();
    for (i, c) in stuck.iter().enumerate() {
        let order = env
            .state
            .db
            .active_order(c.id)
            .await
            .unwrap()
            .expect("order waits");
        assert_eq!(order.state, OrderState::Queued, "{}", c.name);
        assert!(
            order.next_attempt_at <= now + time::Duration::seconds(61)
                && order.next_attempt_at > now,
            "{}: retried after the capped wait, at {}",
            c.name,
            order.next_attempt_at
        );
        let error = order.last_error.expect("the order says why");
        if i == 0 {
            assert!(
                error.contains("too many new orders")
                    && error.contains("ca_limits.max_retry_after_secs")
                    && error.contains("60s"),
                "{error}"
            );
        } else {
            assert!(
                error.contains("paused") && error.contains("HTTP 429"),
                "{error}"
            );
        }
    }
    // The long rate limit is an account problem: raised once for the paused account (however
    // many of its orders waited), never for the healthy one.
    let problems: Vec<_> = routed_deliveries(db)
        .await
        .into_iter()
        .map(|d| d.payload)
        .collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].kind, NotificationEvent::AccountProblem);
    assert_eq!(problems[0].account_id, Some(limited.id.0));
    assert!(
        problems[0].summary.contains("rate-limits"),
        "{}",
        problems[0].summary
    );
}

/// A CA answer larger than `ca_limits.max_response_bytes` is refused with a clear error.
#[tokio::test]
async fn an_oversized_ca_answer_is_refused() {
    let Some(env) = Env::start(PebbleOptions::default(), |c| {
        c.ca_limits.max_response_bytes = 16 * 1024;
    })
    .await
    else {
        return;
    };
    let account = env.account().await;
    env.proxy.add(
        Kind::Certificate,
        None,
        Action::Respond {
            status: 200,
            content_type: "application/pem-certificate-chain",
            headers: Vec::new(),
            body: "A".repeat(64 * 1024),
        },
    );
    let cert = certificate(
        &env.state,
        &account,
        "huge",
        &["huge.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let error = env.run_until_failed(cert.id).await;
    assert!(
        error.contains("larger than 16384 bytes")
            && error.contains("ca_limits.max_response_bytes")
            && error.contains("/certZ/"),
        "{error}"
    );
    assert!(env.state.db.versions(cert.id).await.unwrap().is_empty());
}

/// A renewal whose certificate carries a name that was not requested fails, and the previous
/// version stays current (an added SAN would become an extra CCS file on IIS).
#[tokio::test]
async fn a_certificate_with_an_added_name_is_never_made_current() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    let cert = certificate(
        &env.state,
        &account,
        "sans",
        &["sans.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    let first = wait_versions(&env.state, cert.id, 1, LONG).await;
    env.proxy.add(
        Kind::Certificate,
        Some(1),
        substitute_leaf(
            &["sans.example.test", "intruder.example.test"],
            LeafKey::FromCsr,
        ),
    );
    enqueue(&env.state, &cert, &account, OrderReason::Renewal).await;
    let order = wait_order_ended(&env.state, cert.id, LONG).await;
    engine.stop().await;
    assert_eq!(order.reason, OrderReason::Renewal);
    assert_eq!(order.state, OrderState::Failed);
    let error = order.last_error.unwrap();
    assert!(
        error.contains("not requested: `intruder.example.test`"),
        "{error}"
    );
    let after = env.state.db.certificate(cert.id).await.unwrap();
    assert_eq!(after.current_version_id, Some(first[0].id));
    assert_eq!(after.state, CertificateState::Failing);
    assert_eq!(env.state.db.versions(cert.id).await.unwrap().len(), 1);
}

/// A certificate for another public key than the order's stored key fails the order.
#[tokio::test]
async fn a_certificate_for_another_key_fails_the_order() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    env.proxy.add(
        Kind::Certificate,
        Some(1),
        substitute_leaf(&["otherkey.example.test"], LeafKey::Fresh),
    );
    let cert = certificate(
        &env.state,
        &account,
        "otherkey",
        &["otherkey.example.test"],
        KeyType::Rsa2048,
    )
    .await;
    let error = env.run_until_failed(cert.id).await;
    assert!(error.contains("not the order's key"), "{error}");
    assert!(env.state.db.versions(cert.id).await.unwrap().is_empty());
    let after = env.state.db.certificate(cert.id).await.unwrap();
    assert_eq!(after.state, CertificateState::Failed);
    assert!(after.current_version_id.is_none());
}

/// An [`Issuer`] whose every call panics (a bug reached by a CA's answer).
struct PanickingIssuer;

#[async_trait]
impl Issuer for PanickingIssuer {
    fn supports_renewal_info(&self) -> bool {
        false
    }
    async fn new_order(
        &self,
        _: &[String],
        _: Option<&str>,
    ) -> Result<Box<dyn IssuerOrder>, AcmeError> {
        panic!("injected panic in new-order")
    }
    async fn order(&self, _: &str) -> Result<Box<dyn IssuerOrder>, AcmeError> {
        panic!("injected panic in order")
    }
    async fn revoke(&self, _: &[u8], _: u8) -> Result<(), AcmeError> {
        panic!("injected panic in revoke")
    }
    async fn renewal_window(&self, _: &str) -> Result<RenewalWindow, AcmeError> {
        panic!("injected panic in renewal info")
    }
}

/// A job that panics fails its order with the panic recorded, and the only worker goes on to
/// issue the next order.
#[tokio::test]
async fn a_panicking_job_fails_its_order_and_the_worker_goes_on() {
    let Some(env) = Env::start(PebbleOptions::default(), |c| c.engine.workers = 1).await else {
        return;
    };
    let panics = count_panics();
    let healthy = env.account().await;
    let broken = register(
        &env.state,
        "broken",
        &env.proxy.directory_url,
        &env.pebble,
        1,
        &["*.example.test"],
    )
    .await;
    let doomed = certificate(
        &env.state,
        &broken,
        "doomed",
        &["doomed.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = Running::spawn(
        Engine::new(env.state.clone())
            .with_solvers(env.solvers())
            .with_issuer(broken.id, Arc::new(PanickingIssuer)),
    );
    let order = wait_order_ended(&env.state, doomed.id, LONG).await;
    assert_eq!(order.state, OrderState::Failed);
    let error = order.last_error.unwrap();
    assert!(
        error.contains("panicked") && error.contains("injected panic in new-order"),
        "{error}"
    );
    assert_eq!(
        env.state.db.certificate(doomed.id).await.unwrap().state,
        CertificateState::Failed
    );
    let next = certificate(
        &env.state,
        &healthy,
        "next",
        &["next.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    wait_versions(&env.state, next.id, 1, LONG).await;
    engine.stop().await;
    assert_eq!(panics(), 1, "the injected panic, once");
    let events = history(&env.state, doomed.id).await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("failed") && e.contains("panicked")),
        "{events:?}"
    );
}
