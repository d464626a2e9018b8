//! The dashboard in a real browser: headless chromium driven over WebDriver (chromedriver,
//! fantoccini) against the API listener served over TLS, with certificates Pebble issued. Skips
//! without chromium and chromedriver unless `CERTKEEP_TEST_REQUIRE_BROWSER=1`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use certkeep_api_types::pfx::testing::{KeyKind, TestCa};
use certkeep_server::app::AppState;
use certkeep_server::db::certificates::NewCertificate;
use certkeep_server::listener::{ListenerTls, harden, tls_server};
use certkeep_server::model::{CertificateState, KeyType, RenewalPolicy, Scope};
use certkeep_tests::seeded::api_token;
use certkeep_testsupport::chromedriver::ChromeDriver;
use certkeep_testsupport::pebble::PebbleOptions;
use certkeep_testsupport::proxy::{Kind, turns_invalid};
use fantoccini::{Client, ClientBuilder, Locator};

use crate::support::{Env, LONG, certificate, wait_until, wait_versions};

/// How long a page may take to appear.
const PAGE: Duration = Duration::from_secs(20);

/// A token with `scopes`; its secret.
async fn token(state: &AppState, name: &str, scopes: &[Scope]) -> String {
    let (_, secret) = api_token(state, name, scopes).await.expect("token");
    secret.to_string()
}

/// Serves the API listener (with the dashboard) over TLS from the internal CA on a free port;
/// its base URL. The server ends with the test's runtime.
async fn serve_api(state: &AppState) -> String {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    tcp.set_nonblocking(true).expect("nonblocking");
    let addr = tcp.local_addr().expect("addr");
    let tls = ListenerTls::new(state, certkeep_server::now()).expect("listener TLS");
    let limits = &state.config.listeners;
    let (router, _) = certkeep_server::api::router(state.clone());
    let server = tls_server(tcp, tls.api, limits, "api")
        .expect("server")
        .serve(harden(router, limits).into_make_service_with_connect_info::<SocketAddr>());
    tokio::spawn(server);
    format!("https://{addr}")
}

/// A headless chromium session through `driver`. The server's certificate comes from
/// certkeep's internal CA, which this throwaway profile does not trust, hence
/// `acceptInsecureCerts`.
async fn browser(driver: &ChromeDriver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "args": driver.chromium_args() }),
    );
    caps.insert("acceptInsecureCerts".into(), true.into());
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("WebDriver session: {e}\n{}", driver.log()))
}

/// Waits until the page's source contains `text`; returns the source. Panics with the page
/// last seen after [`PAGE`].
async fn wait_page(client: &Client, text: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let source = client.source().await.expect("page source");
        if source.contains(text) {
            return source;
        }
        assert!(
            started.elapsed() < PAGE,
            "no page showing {text:?} within {PAGE:?}; last page:\n{source}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logs in with `secret` and waits for the overview.
async fn log_in(client: &Client, base: &str, secret: &str) {
    client
        .goto(&format!("{base}/ui/login"))
        .await
        .expect("login page");
    let field = client
        .find(Locator::Css("input[name=token]"))
        .await
        .expect("token field");
    field.send_keys(secret).await.expect("type the token");
    client
        .find(Locator::Css("form.login button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("submit");
    wait_page(client, "<h1>Overview</h1>").await;
}

/// Fills the revoke form of the open certificate page and submits it.
async fn revoke_from_page(client: &Client, reason: &str, confirm: &str) {
    let form = client
        .find(Locator::Css("form.revoke"))
        .await
        .expect("revoke form");
    form.find(Locator::Css("select[name=reason]"))
        .await
        .expect("reason")
        .select_by_value(reason)
        .await
        .expect("pick the reason");
    form.find(Locator::Css("input[name=confirm]"))
        .await
        .expect("confirmation field")
        .send_keys(confirm)
        .await
        .expect("type the name");
    form.find(Locator::Css("button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("submit");
}

/// Where the screenshots go: `target/ui-artifacts/`.
fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

#[tokio::test]
async fn log_in_see_renew_and_revoke_in_a_real_browser() {
    let Some(driver) = ChromeDriver::start().await else {
        return;
    };
    let Some(env) = Env::start(PebbleOptions::default(), |_| {}).await else {
        return;
    };
    let account = env.account().await;
    let state = &env.state;
    // An order the CA refuses, so the overview has an error to show.
    env.proxy.add(
        Kind::Order,
        Some(1),
        turns_invalid(
            "urn:ietf:params:acme:error:rejectedIdentifier",
            "Policy forbids issuing for this name",
        ),
    );
    let refused = certificate(
        state,
        &account,
        "crm",
        &["crm.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    env.run_until_failed(refused.id).await;
    let cert = certificate(
        state,
        &account,
        "web",
        &["www.example.test", "shop.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    let first = wait_versions(state, cert.id, 1, LONG).await.remove(0);
    // A few more with stored versions, so the timeline has weeks to draw.
    let ca = TestCa::new();
    for (name, days, failing) in [
        ("mail", 9, false),
        ("vpn", 16, true),
        ("wiki", 23, false),
        ("intranet", 44, false),
        ("lab", 64, false),
    ] {
        let host = format!("{name}.example.test");
        let c = state
            .db
            .insert_certificate(
                &NewCertificate {
                    name,
                    dns_names: std::slice::from_ref(&host),
                    key_type: KeyType::EcdsaP256,
                    account_id: account.id,
                    policy: RenewalPolicy::default(),
                    created_by: Some("test"),
                },
                certkeep_server::now(),
            )
            .await
            .expect("certificate")
            .id;
        certkeep_server::testkit::store_test_version(
            &state.db,
            &state.secrets,
            c,
            &ca.leaf(&[&host], KeyKind::Ecdsa),
            time::Duration::days(days),
        )
        .await
        .expect("version");
        // As if issued by certkeep; one of them failing to renew.
        let (state_now, error) = if failing {
            (
                CertificateState::Failing,
                Some("urn:ietf:params:acme:error:rateLimited: too many new orders recently"),
            )
        } else {
            (CertificateState::Valid, None)
        };
        state
            .db
            .set_certificate_state(c, state_now, error, certkeep_server::now())
            .await
            .expect("state");
    }
    let admin = token(state, "security-team", &[Scope::Admin]).await;
    let reader = token(state, "helpdesk", &[Scope::Reader]).await;
    let base = serve_api(state).await;
    let client = browser(&driver).await;

    // A read-only login sees the certificate and is refused the revocation, by name of scope.
    log_in(&client, &base, &reader).await;
    client
        .goto(&format!("{base}/ui/certificates/web"))
        .await
        .expect("detail");
    let page = wait_page(&client, "shop.example.test").await;
    assert!(
        page.contains(&first.serial[..16]),
        "the Pebble-issued version is listed"
    );
    revoke_from_page(&client, "superseded", "web").await;
    let refused = wait_page(&client, "Not allowed").await;
    assert!(
        refused.contains("needs one of the scopes: admin, operator"),
        "{refused}"
    );
    assert!(
        state
            .db
            .version(first.id)
            .await
            .expect("version")
            .revoked_at
            .is_none()
    );
    client.goto(&format!("{base}/ui/")).await.expect("overview");
    client
        .find(Locator::Css("form.logout button"))
        .await
        .expect("logout")
        .click()
        .await
        .expect("log out");
    wait_page(&client, "name=\"token\"").await;

    // The security team: the overview, then renew and revoke.
    log_in(&client, &base, &admin).await;
    let overview = client.source().await.expect("source");
    assert!(
        overview.contains("Policy forbids issuing for this name"),
        "the CA's error text is on the overview"
    );
    assert!(overview.contains("<svg"), "the timeline");
    client
        .set_window_size(1280, 1500)
        .await
        .expect("a tall desktop window");
    std::fs::write(
        artifacts().join("overview.png"),
        client.screenshot().await.expect("screenshot"),
    )
    .expect("save the screenshot");
    client.set_window_size(390, 844).await.expect("phone size");
    std::fs::write(
        artifacts().join("overview-390.png"),
        client.screenshot().await.expect("screenshot"),
    )
    .expect("save the screenshot");
    client
        .set_window_size(1280, 900)
        .await
        .expect("desktop size");

    client
        .goto(&format!("{base}/ui/certificates/web"))
        .await
        .expect("detail");
    wait_page(&client, "Renew now").await;
    client
        .find(Locator::Css("form[action$='/renew'] button"))
        .await
        .expect("renew")
        .click()
        .await
        .expect("renew");
    let second = wait_versions(state, cert.id, 2, LONG).await.remove(0);
    client.refresh().await.expect("reload");
    let page = wait_page(&client, &second.serial[..16]).await;
    assert!(page.contains("manual order"), "the renewal's order");
    for event in [
        "<strong>queued</strong>",
        "<strong>finalizing</strong>",
        "<strong>issued</strong>",
    ] {
        assert!(page.contains(event), "the renewal's event {event}: {page}");
    }
    std::fs::write(
        artifacts().join("certificate.png"),
        client.screenshot().await.expect("screenshot"),
    )
    .expect("save the screenshot");

    revoke_from_page(&client, "superseded", "web").await;
    wait_until("the revocation", LONG, || async {
        state
            .db
            .version(second.id)
            .await
            .expect("version")
            .revoked_at
    })
    .await;
    let page = wait_page(&client, "state-revoked").await;
    assert!(
        !page.contains("Revoke the current version"),
        "nothing left to revoke"
    );
    engine.stop().await;
    client.close().await.expect("close the browser");
}
