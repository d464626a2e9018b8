//! Challenge solvers end to end, validated for real by Pebble (no `PEBBLE_VA_ALWAYS_VALID`,
//! names resolved through a real BIND 9): dns-01 through TSIG-signed RFC 2136 updates, http-01
//! through the central responder of a full server, and the failures (bad TSIG secret,
//! unreachable DNS server, a challenge the CA marks invalid), each recorded and leaving no
//! record behind. Skips (loudly) without `named` or `pebble`.

use std::time::Duration;

use certkeep_server::acme::CaChallenge;
use certkeep_server::app::AppState;
use certkeep_server::config::{Config, Http01Config, SolversConfig};
use certkeep_server::db::solvers::NewChallengeResponse;
use certkeep_server::engine::ChallengeSolver as _;
use certkeep_server::model::{Certificate, KeyType, Order, OrderState};
use certkeep_server::secrets::Secrets;
use certkeep_server::solvers::{self, dns01};
use certkeep_server::testkit::{TestDb, TestServer};
use certkeep_tests::bind::{Bind, KEY_NAME};
use certkeep_testsupport::free_port;
use certkeep_testsupport::pebble::{Pebble, PebbleOptions};

use crate::support::{
    Running, app_state, certificate, history, register, test_config, wait_event, wait_order_ended,
    wait_until,
};

const LONG: Duration = Duration::from_secs(30);
const RECORD: &str = "_acme-challenge.example.test";

/// BIND, and Pebble resolving names through it and validating for real on `http_port`.
async fn bind_and_pebble(http_port: Option<u16>) -> Option<(Bind, Pebble)> {
    let bind = Bind::start().await?;
    let pebble = Pebble::start(PebbleOptions {
        authz_reuse: 0,
        always_valid: false,
        dns_server: Some(bind.addr),
        http_port,
        ..PebbleOptions::default()
    })
    .await?;
    Some((bind, pebble))
}

/// Solver settings with short DNS timeouts.
fn solver_config() -> SolversConfig {
    SolversConfig {
        dns_timeout_secs: 2,
        dns_propagation_timeout_secs: 10,
        ..SolversConfig::default()
    }
}

/// Registers an account for `example.test` and below and queues a certificate for `names`.
async fn queue(state: &AppState, pebble: &Pebble, names: &[&str]) -> Certificate {
    let account = register(
        state,
        "acme",
        &pebble.directory_url,
        pebble,
        0,
        &["*.example.test", "example.test"],
    )
    .await;
    certificate(state, &account, "challenged", names, KeyType::EcdsaP256).await
}

/// Runs the engine with the solvers of `config` until the order of `cert` ends.
async fn run(state: &AppState, config: &SolversConfig, cert: &Certificate) -> Order {
    let engine = Running::start(
        state,
        Some(
            solvers::build(config, &state.db, &state.secrets)
                .await
                .expect("solvers"),
        ),
    );
    let order = wait_order_ended(state, cert.id, LONG).await;
    engine.stop().await;
    order
}

async fn sqlite_state() -> (TestDb, AppState) {
    let db = TestDb::sqlite().await;
    let state = app_state(db.db.clone(), Secrets::generate(), test_config()).await;
    (db, state)
}

/// Waits until the order's job has removed every response it published (it does so right after
/// recording the outcome) and recorded its outcome event (written just after the ended order);
/// returns the certificate's history then.
async fn cleaned_history(state: &AppState, cert: &Certificate, order: &Order) -> Vec<String> {
    wait_until("the challenge responses to be removed", LONG, || async {
        let left = state.db.challenge_responses(order.id).await.unwrap();
        left.is_empty().then_some(())
    })
    .await;
    let outcome = if order.state == OrderState::Failed {
        "failed"
    } else {
        "issued"
    };
    wait_event(state, cert.id, outcome, LONG).await;
    history(state, cert.id).await
}

/// Asserts that no challenge response of `order` is left in the database.
async fn assert_no_responses(state: &AppState, order: &Order) {
    assert!(
        state
            .db
            .challenge_responses(order.id)
            .await
            .unwrap()
            .is_empty()
    );
}

fn assert_events(events: &[String], kinds: &[&str]) {
    for kind in kinds {
        assert!(
            events.iter().any(|e| e.starts_with(&format!("{kind}:"))),
            "`{kind}` missing in {events:#?}"
        );
    }
}

/// Asserts that `order` is done and its `events` record a whole challenge: solver chosen,
/// response presented, challenge answered, validated and cleaned up.
fn assert_solved(order: &Order, events: &[String], pebble: &Pebble) {
    assert_eq!(
        order.state,
        OrderState::Done,
        "{events:#?}\n{}",
        pebble.log()
    );
    assert_events(
        events,
        &[
            "challenge-solver",
            "challenge-presented",
            "challenge-answered",
            "challenges-valid",
            "challenge-cleaned",
        ],
    );
}

#[tokio::test]
async fn dns01_issues_wildcard_and_apex_through_bind_and_removes_every_record() {
    let Some((bind, pebble)) = bind_and_pebble(None).await else {
        return;
    };
    let (_db, state) = sqlite_state().await;
    let mut config = solver_config();
    config.dns01.push(bind.dns01_config());
    // The TSIG secret sealed in the database, as `certkeep dns-key import` stores it.
    config.dns01[0].secret_file = None;
    state
        .db
        .store_tsig_key(
            &state.secrets,
            &config.dns01[0].key_name,
            bind.secret.as_bytes(),
            certkeep_server::now(),
        )
        .await
        .unwrap();
    let cert = queue(&state, &pebble, &["*.example.test", "example.test"]).await;

    // A record left behind by a run that crashed: the job owning the order removes it.
    let order = state.db.active_order(cert.id).await.unwrap().unwrap();
    let secret = dns01::decode_secret(&bind.secret).unwrap();
    let timeouts = dns01::DnsTimeouts {
        request: Duration::from_secs(2),
        propagation: Duration::from_secs(5),
    };
    let solver = dns01::Dns01Solver::new(&config.dns01[0], &secret, timeouts).unwrap();
    let stale = CaChallenge {
        kind: "dns-01".into(),
        url: "https://ca.invalid/chall/stale".into(),
        token: "stale-token".into(),
        pending: false,
        key_authorization: "stale-token.thumbprint".into(),
        error: None,
    };
    state
        .db
        .record_challenge_response(
            &NewChallengeResponse {
                order_id: order.id,
                name: "stale.example.test",
                kind: &stale.kind,
                url: &stale.url,
                token: &stale.token,
                key_authorization: &stale.key_authorization,
            },
            certkeep_server::now(),
        )
        .await
        .unwrap();
    solver.present("stale.example.test", &stale).await.unwrap();
    assert_eq!(
        bind.txt("_acme-challenge.stale.example.test").await,
        [dns01::txt_value(&stale.key_authorization)]
    );

    let order = run(&state, &config, &cert).await;
    let events = cleaned_history(&state, &cert, &order).await;
    assert_solved(&order, &events, &pebble);
    assert_events(&events, &["issued"]);
    let solver_events: Vec<&String> = events
        .iter()
        .filter(|e| e.starts_with("challenge-solver:"))
        .collect();
    assert_eq!(solver_events.len(), 2, "{events:#?}");
    assert!(
        solver_events
            .iter()
            .all(|e| e.contains("dns-01 by RFC 2136") && e.contains(KEY_NAME)),
        "{solver_events:#?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.starts_with("challenge-cleaned:"))
            .count(),
        3,
        "both answers and the stale record are removed: {events:#?}"
    );
    assert!(bind.txt(RECORD).await.is_empty(), "{}", bind.log());
    assert!(
        bind.txt("_acme-challenge.stale.example.test")
            .await
            .is_empty()
    );
    assert_no_responses(&state, &order).await;
    let versions = state.db.versions(cert.id).await.unwrap();
    let mut sans = versions[0].dns_names.clone();
    sans.sort();
    assert_eq!(sans, ["*.example.test", "example.test"]);
}

/// Runs a dns-01 order for `example.test` that must fail; returns its error and history after
/// checking nothing was left in the zone or the database.
async fn failed_dns01(
    adjust: impl FnOnce(&Bind, &mut SolversConfig),
) -> Option<(String, Vec<String>, String)> {
    let (bind, pebble) = bind_and_pebble(None).await?;
    let (_db, state) = sqlite_state().await;
    let mut config = solver_config();
    config.dns01.push(bind.dns01_config());
    adjust(&bind, &mut config);
    let cert = queue(&state, &pebble, &["example.test"]).await;
    let order = run(&state, &config, &cert).await;
    let events = cleaned_history(&state, &cert, &order).await;
    assert_eq!(order.state, OrderState::Failed, "{events:#?}");
    assert!(bind.txt(RECORD).await.is_empty(), "{}", bind.log());
    assert_no_responses(&state, &order).await;
    let error = order.last_error.clone().unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("failed:") && e.contains(&error)),
        "{events:#?}"
    );
    Some((error, events, bind.secret.clone()))
}

#[tokio::test]
async fn a_bad_tsig_secret_fails_the_order_naming_server_and_key_but_not_the_secret() {
    let wrong = "d3Jvbmd3cm9uZ3dyb25nd3Jvbmd3cm9uZ3dyb25nMTI=";
    let mut server = None;
    let Some((error, events, secret)) = failed_dns01(|bind, config| {
        config.dns01[0].secret_file = Some(bind.secret_file(wrong));
        server = Some(bind.addr);
    })
    .await
    else {
        return;
    };
    let server = server.unwrap().to_string();
    assert!(
        error.contains("NOTAUTH") && error.contains("BADSIG"),
        "{error}"
    );
    assert!(
        error.contains(&server) && error.contains(KEY_NAME),
        "{error}"
    );
    for text in events.iter().chain([&error]) {
        assert!(!text.contains(wrong) && !text.contains(&secret), "{text}");
    }
}

#[tokio::test]
async fn an_unreachable_dns_server_fails_the_order_naming_it() {
    let unreachable = format!("127.0.0.1:{}", free_port());
    let Some((error, _, _)) = failed_dns01(|_, config| {
        config.dns01[0].server = unreachable.parse().unwrap();
    })
    .await
    else {
        return;
    };
    assert!(
        error.contains(&unreachable) && error.contains(KEY_NAME),
        "{error}"
    );
    assert!(error.contains("no DNS answer"), "{error}");
}

/// A full server (API, agent listener, engine) with the http-01 responder on `responder`.
async fn server_with_http01(responder: Option<u16>) -> TestServer {
    TestServer::start_with(|c: &mut Config| {
        c.engine = test_config().engine;
        c.solvers.http01 = Some(Http01Config {
            addr: responder.map(|port| ([127, 0, 0, 1], port).into()),
            patterns: vec!["*.example.test".into()],
        });
    })
    .await
}

#[tokio::test]
async fn http01_is_answered_by_the_central_responder() {
    let port = free_port();
    let Some((_bind, pebble)) = bind_and_pebble(Some(port)).await else {
        return;
    };
    let server = server_with_http01(Some(port)).await;
    let cert = queue(
        &server.state,
        &pebble,
        &["www.example.test", "api.example.test"],
    )
    .await;
    let order = wait_order_ended(&server.state, cert.id, LONG).await;
    let events = cleaned_history(&server.state, &cert, &order).await;
    assert_solved(&order, &events, &pebble);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("challenge-solver: http-01 for www.example.test")),
        "{events:#?}"
    );
    let client = reqwest::Client::new();
    for path in [
        "/.well-known/acme-challenge/LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
        "/",
        "/api/v1/certificates",
    ] {
        let status = client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_challenge_the_ca_marks_invalid_fails_the_order_with_its_problem() {
    // Pebble validates http-01 on a port where nothing answers.
    let Some((_bind, pebble)) = bind_and_pebble(Some(free_port())).await else {
        return;
    };
    let server = server_with_http01(None).await;
    let cert = queue(&server.state, &pebble, &["www.example.test"]).await;
    let order = wait_order_ended(&server.state, cert.id, LONG).await;
    let events = cleaned_history(&server.state, &cert, &order).await;
    assert_eq!(order.state, OrderState::Failed, "{events:#?}");
    let error = order.last_error.clone().unwrap_or_default();
    assert!(
        error.starts_with("the CA marked the challenge invalid: http-01 for www.example.test: {")
            && error.contains("urn:ietf:params:acme:error:"),
        "{error}"
    );
    assert_events(
        &events,
        &["challenge-invalid", "challenge-cleaned", "failed"],
    );
    assert_no_responses(&server.state, &order).await;
    server.stop().await;
}
