//! Notifications end to end inside the process: channels, subscriptions and mutes through the
//! API, and the real delivery worker against a real webhook receiver (axum on a free port, which
//! verifies the Standard Webhooks signature) and a real SMTP server (aiosmtpd).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use certkeep_api_types::notification::{DeliveryState, NotificationEvent};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::ADMIN;
use super::testapp::TestApp;
use crate::model::Scope;
use crate::notify::{events, webhook};
use crate::testkit::TestDb;

/// How long a delivery may take to arrive.
const ARRIVAL: Duration = Duration::from_secs(30);

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// Statuses to answer first, in order; then 200.
    script: Vec<u16>,
    /// Requests whose signature and timestamp verified, by status answered.
    answered: Vec<u16>,
    /// Accepted (2xx) bodies by `webhook-id`, counting duplicates.
    accepted: HashMap<String, usize>,
    /// Requests refused for a bad signature or a stale timestamp.
    refused: usize,
    /// The last verified request, to replay.
    last: Option<(HeaderMap, Vec<u8>)>,
}

/// A webhook receiver that verifies like a Standard Webhooks library: the signature over
/// `id.timestamp.body` with the channel's secret, and a timestamp within 5 minutes.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Seen>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(secret: &str, script: &[u16]) -> Self {
        let key = webhook::secret_key(secret).unwrap();
        let seen = Arc::new(Mutex::new(Seen {
            script: script.iter().rev().copied().collect(),
            ..Seen::default()
        }));
        let shared = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let seen = shared.clone();
                let key = key.clone();
                async move {
                    let mut seen = seen.lock().unwrap();
                    let header = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let (id, ts, sig) = (
                        header("webhook-id"),
                        header("webhook-timestamp"),
                        header("webhook-signature"),
                    );
                    let ts_n: i64 = ts.parse().unwrap_or(0);
                    let fresh = (crate::now().unix_timestamp() - ts_n).abs() <= 300;
                    if !fresh || webhook::signature(&key, &id, ts_n, &body) != sig {
                        seen.refused += 1;
                        return StatusCode::UNAUTHORIZED;
                    }
                    let status = seen.script.pop().unwrap_or(200);
                    seen.answered.push(status);
                    seen.last = Some((headers.clone(), body.to_vec()));
                    if status == 200 {
                        *seen.accepted.entry(id).or_default() += 1;
                    }
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            seen,
            _server: server,
        }
    }

    /// Waits until `n` distinct events were accepted.
    async fn wait_accepted(&self, n: usize) {
        let start = Instant::now();
        while self.seen.lock().unwrap().accepted.len() < n {
            assert!(start.elapsed() < ARRIVAL, "{n} events not accepted in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Apps on SQLite and (when available) PostgreSQL, configured for quick retries.
async fn apps() -> Vec<TestApp> {
    let mut out = vec![TestApp::on(TestDb::sqlite().await, quick).await];
    if let Some(pg) = TestDb::postgres().await {
        out.push(TestApp::on(pg, quick).await);
    }
    out
}

fn quick(c: &mut crate::config::Config) {
    c.notifications.worker_interval_secs = 1;
    c.notifications.backoff_first_secs = 1;
    c.notifications.backoff_cap_secs = 2;
}

async fn add_channel(app: &TestApp, admin: &str, body: Value) -> Value {
    let r = app
        .call(
            "POST",
            "/api/v1/notification-channels",
            Some(admin),
            Some(body),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

async fn subscribe(app: &TestApp, admin: &str, name: &str, channel: &str, pattern: &str) {
    let r = app
        .call(
            "POST",
            "/api/v1/subscriptions",
            Some(admin),
            Some(json!({"name": name, "channel": channel, "events": ["certificate.renewal_failed"], "scope": "domains", "domain_patterns": [pattern]})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

/// A webhook channel `name` to `url` signed with `secret`, and a subscription of the same name
/// sending it `certificate.renewal_failed` for `pattern`.
async fn hooked(app: &TestApp, admin: &str, name: &str, url: &str, secret: &str, pattern: &str) {
    add_channel(
        app,
        admin,
        json!({"name": name, "webhook": {"url": url}, "secret": secret}),
    )
    .await;
    subscribe(app, admin, name, name, pattern).await;
}

/// Raises `certificate.renewal_failed` for a new certificate `name` on `dns_name`.
async fn renewal_failed(
    app: &TestApp,
    account: &crate::model::Account,
    name: &str,
    dns_name: &str,
) {
    let cert = app.certificate(account, name, &[dns_name]).await;
    let event = events::certificate(
        NotificationEvent::CertificateRenewalFailed,
        &cert,
        &cert.dns_names,
        Some("the CA refused the order"),
        None,
        crate::now(),
    );
    assert!(app.state.db.enqueue_event(&event).await.unwrap());
}

backends!(channels_keep_their_secrets_and_refuse_bad_input);
async fn channels_keep_their_secrets_and_refuse_bad_input(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let created = add_channel(
        &app,
        &admin,
        json!({"name": "ops-hook", "webhook": {"url": "https://hooks.example.edu/certkeep"}}),
    )
    .await;
    let secret = created["generated_secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["channel"]["has_secret"], true);
    let mail = add_channel(
        &app,
        &admin,
        json!({"name": "ops-mail", "smtp": {"host": "mail.example.edu", "username": "certkeep", "from": "certkeep <certkeep@example.edu>", "to": ["ops@example.edu"]}, "secret": "smtp-password-1"}),
    )
    .await;
    assert!(mail.get("generated_secret").is_none());
    let list = app
        .call("GET", "/api/v1/notification-channels", Some(&admin), None)
        .await;
    let text = String::from_utf8_lossy(&list.body);
    assert!(
        text.contains("ops-hook") && text.contains("ops-mail"),
        "{text}"
    );
    assert!(
        !text.contains(&secret) && !text.contains("smtp-password-1"),
        "{text}"
    );
    for (body, field) in [
        (
            json!({"name": "x", "webhook": {"url": "http://hooks.example.edu/"}}),
            "webhook.url",
        ),
        (
            json!({"name": "x", "webhook": {"url": "https://h.example.edu/"}, "secret": "plain"}),
            "secret",
        ),
        (
            json!({"name": "x", "webhook": {"url": "https://h.example.edu/", "timeout_secs": 0}}),
            "webhook.timeout_secs",
        ),
        (
            json!({"name": "x", "smtp": {"host": "m.example.edu", "from": "not an address", "to": ["a@example.edu"]}}),
            "smtp",
        ),
        (
            json!({"name": "x", "smtp": {"host": "m.example.edu", "from": "a@example.edu", "to": []}}),
            "smtp.to",
        ),
        (
            json!({"name": "x", "smtp": {"host": "m.example.edu", "from": "a@example.edu", "to": ["b@example.edu"]}, "secret": "pw"}),
            "secret",
        ),
        (json!({"name": "x"}), "smtp"),
    ] {
        let r = app
            .call(
                "POST",
                "/api/v1/notification-channels",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.problem(422)["field"], field, "{body}");
    }
    let bad_sub = app
        .call(
            "POST",
            "/api/v1/subscriptions",
            Some(&admin),
            Some(json!({"name": "s", "channel": "ops-hook", "events": ["certificate.expiring"], "domain_patterns": ["*.example.edu"]})),
        )
        .await;
    assert_eq!(bad_sub.problem(422)["field"], "domain_patterns");
    let digest_kind = app
        .call(
            "POST",
            "/api/v1/subscriptions",
            Some(&admin),
            Some(json!({"name": "s", "channel": "ops-hook", "events": ["notification.test"]})),
        )
        .await;
    assert_eq!(digest_kind.problem(422)["field"], "events");
    let operator = app.token(&[Scope::Operator], &[]).await;
    let r = app
        .call(
            "DELETE",
            "/api/v1/notification-channels/ops-hook",
            Some(&operator),
            None,
        )
        .await;
    r.problem(403);
    let r = app
        .call(
            "DELETE",
            "/api/v1/notification-channels/ops-hook",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn the_test_endpoint_returns_the_receivers_answer() {
    let app = TestApp::on(TestDb::sqlite().await, quick).await;
    let admin = app.token(ADMIN, &[]).await;
    let secret = webhook::new_secret();
    let receiver = Receiver::start(&secret, &[]).await;
    add_channel(
        &app,
        &admin,
        json!({"name": "hook", "webhook": {"url": receiver.url}, "secret": secret}),
    )
    .await;
    let r = app
        .call(
            "POST",
            "/api/v1/notification-channels/hook/test",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.json()["delivered"].clone(), r.json()["code"].clone()),
        (json!(true), json!(200))
    );
    let closed = format!(
        "http://127.0.0.1:{}/hook",
        certkeep_testsupport::free_port()
    );
    add_channel(
        &app,
        &admin,
        json!({"name": "gone", "webhook": {"url": closed}}),
    )
    .await;
    let r = app
        .call(
            "POST",
            "/api/v1/notification-channels/gone/test",
            Some(&admin),
            None,
        )
        .await;
    let answer = r.json();
    assert_eq!(answer["delivered"], false, "{answer}");
    assert!(
        answer["reply"].as_str().unwrap().contains("cannot reach"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_webhook_is_signed_retried_after_500s_and_accepted_exactly_once() {
    for app in apps().await {
        let admin = app.token(ADMIN, &[]).await;
        let secret = webhook::new_secret();
        let med = Receiver::start(&secret, &[500, 500]).await;
        let law = Receiver::start(&secret, &[]).await;
        hooked(&app, &admin, "med", &med.url, &secret, "*.med.example.com").await;
        hooked(&app, &admin, "law", &law.url, &secret, "*.law.example.com").await;
        let account = app.account("acme").await;
        let stop = CancellationToken::new();
        let worker = crate::notify::spawn(app.state.clone(), stop.clone());
        renewal_failed(&app, &account, "www-med", "www.med.example.com").await;
        med.wait_accepted(1).await;
        let (headers, body) = {
            let seen = med.seen.lock().unwrap();
            assert_eq!(seen.answered, vec![500, 500, 200], "{}", app.backend);
            assert_eq!(seen.accepted.values().copied().collect::<Vec<_>>(), vec![1]);
            seen.last.clone().unwrap()
        };
        let payload: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(payload["type"], "certificate.renewal_failed");
        assert_eq!(payload["dns_names"], json!(["www.med.example.com"]));
        assert_eq!(
            headers["webhook-id"].to_str().unwrap(),
            payload["id"].as_str().unwrap()
        );
        // A replay under a fresh timestamp does not verify: the signature covers it.
        let replay = reqwest::Client::new()
            .post(&med.url)
            .header("webhook-id", headers["webhook-id"].clone())
            .header(
                "webhook-timestamp",
                (crate::now().unix_timestamp() + 1).to_string(),
            )
            .header("webhook-signature", headers["webhook-signature"].clone())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
        let delivered = app
            .call(
                "GET",
                "/api/v1/notifications?state=delivered",
                Some(&admin),
                None,
            )
            .await
            .json();
        let rows = delivered.as_array().unwrap();
        assert_eq!(rows.len(), 1, "{delivered}");
        assert_eq!(
            (
                rows[0]["attempts"].clone(),
                rows[0]["last_code"].clone(),
                rows[0]["channel_name"].clone()
            ),
            (json!(3), json!(200), json!("med"))
        );
        assert!(
            law.seen.lock().unwrap().answered.is_empty(),
            "another team's names never reach law"
        );
        stop.cancel();
        worker.await.unwrap();
        assert_eq!(
            med.seen.lock().unwrap().answered.len(),
            3,
            "nothing after acceptance"
        );
    }
}

#[tokio::test]
async fn a_delivery_refused_until_the_dead_letter_age_is_failed_not_delivered() {
    let app = TestApp::on(TestDb::sqlite().await, |c| {
        quick(c);
        c.notifications.dead_letter_after_secs = 2;
    })
    .await;
    let admin = app.token(ADMIN, &[]).await;
    let secret = webhook::new_secret();
    let receiver = Receiver::start(&secret, &[503; 50]).await;
    add_channel(
        &app,
        &admin,
        json!({"name": "med", "webhook": {"url": receiver.url}, "secret": secret}),
    )
    .await;
    subscribe(&app, &admin, "med", "med", "*.example.com").await;
    let account = app.account("acme").await;
    let stop = CancellationToken::new();
    let worker = crate::notify::spawn(app.state.clone(), stop.clone());
    renewal_failed(&app, &account, "www", "www.example.com").await;
    let start = Instant::now();
    loop {
        let failed = app
            .state
            .db
            .deliveries(Some(DeliveryState::Failed), 10)
            .await
            .unwrap();
        if let Some(d) = failed.first() {
            assert_eq!(d.last_code, Some(503));
            assert!(d.delivered_at.is_none());
            break;
        }
        assert!(start.elapsed() < ARRIVAL, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(receiver.seen.lock().unwrap().accepted.is_empty());
    let listed = app
        .call(
            "GET",
            "/api/v1/notifications?state=failed",
            Some(&admin),
            None,
        )
        .await
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn two_notifiers_on_one_postgres_deliver_each_of_200_events_once_per_channel() {
    let Some(pg) = TestDb::postgres().await else {
        return;
    };
    let url = certkeep_testsupport::postgres::PgCluster::shared()
        .unwrap()
        .url(pg.pg_name.as_deref().unwrap());
    let app = TestApp::on(pg, quick).await;
    // The second server: its own connection pool to the same database.
    let other = crate::app::AppState::new(
        crate::db::Db::connect_postgres(&secrecy::SecretString::from(url))
            .await
            .unwrap(),
        app.state.secrets.clone(),
        app.state.ca.clone(),
        app.state.config.clone(),
    );
    let admin = app.token(ADMIN, &[]).await;
    let secret = webhook::new_secret();
    let a = Receiver::start(&secret, &[]).await;
    let b = Receiver::start(&secret, &[]).await;
    hooked(&app, &admin, "a", &a.url, &secret, "*.example.com").await;
    hooked(&app, &admin, "b", &b.url, &secret, "*.example.com").await;
    let account = app.account("acme").await;
    for i in 0..200 {
        renewal_failed(
            &app,
            &account,
            &format!("c{i}"),
            &format!("c{i}.example.com"),
        )
        .await;
    }
    let stop = CancellationToken::new();
    // Two servers: two notifiers with their own pools and lease owners over one database.
    let first = crate::notify::spawn(app.state.clone(), stop.clone());
    let second = crate::notify::spawn(other, stop.clone());
    a.wait_accepted(200).await;
    b.wait_accepted(200).await;
    stop.cancel();
    first.await.unwrap();
    second.await.unwrap();
    for r in [&a, &b] {
        let seen = r.seen.lock().unwrap();
        assert_eq!(seen.accepted.len(), 200);
        assert!(
            seen.accepted.values().all(|n| *n == 1),
            "an event was delivered twice"
        );
    }
}

#[tokio::test]
async fn mail_reaches_the_right_team_once_after_a_451() {
    let Some(sink) = certkeep_testsupport::smtp::SmtpSink::start(true).await else {
        return;
    };
    let app = TestApp::on(TestDb::sqlite().await, quick).await;
    let admin = app.token(ADMIN, &[]).await;
    add_channel(
        &app,
        &admin,
        json!({"name": "med-mail", "smtp": {"host": "127.0.0.1", "port": sink.port, "tls": "plain", "from": "certkeep <certkeep@example.edu>", "to": ["pki-team@med.example.edu"]}}),
    )
    .await;
    subscribe(&app, &admin, "med", "med-mail", "*.med.example.com").await;
    let account = app.account("acme").await;
    let stop = CancellationToken::new();
    let worker = crate::notify::spawn(app.state.clone(), stop.clone());
    renewal_failed(&app, &account, "www-law", "www.law.example.com").await;
    renewal_failed(&app, &account, "www-med", "www.med.example.com").await;
    let mails = sink.wait_messages(1, ARRIVAL).await;
    let start = Instant::now();
    while app
        .state
        .db
        .deliveries(Some(DeliveryState::Delivered), 10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(start.elapsed() < ARRIVAL, "the delivery was not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(
        sink.messages().len(),
        1,
        "one mail: the law certificate is not med's"
    );
    let mail = &mails[0];
    assert!(
        mail.starts_with("X-Envelope-To: pki-team@med.example.edu\r\n"),
        "{mail}"
    );
    assert!(
        mail.contains("Subject: [certkeep] Renewal of certificate www-med"),
        "{mail}"
    );
    assert!(
        mail.contains("www.med.example.com") && !mail.contains("www.law"),
        "{mail}"
    );
    assert!(mail.contains("certkeep cert renew www-med"), "{mail}");
    assert!(mail.contains("text/html"), "{mail}");
    let d = &app.state.db.deliveries(None, 10).await.unwrap()[0];
    assert_eq!(
        (d.attempts, d.last_code, d.state),
        (2, Some(250), DeliveryState::Delivered)
    );
}

#[tokio::test]
async fn scans_raise_expiring_once_per_threshold_and_one_digest_a_day() {
    for t in [Some(TestDb::sqlite().await), TestDb::postgres().await]
        .into_iter()
        .flatten()
    {
        let app = TestApp::on(t, |c| {
            quick(c);
            c.notifications.digest_time = "00:00".into();
        })
        .await;
        let admin = app.token(ADMIN, &[]).await;
        add_channel(
            &app,
            &admin,
            json!({"name": "med", "webhook": {"url": "https://med.example.com/hook"}}),
        )
        .await;
        add_channel(
            &app,
            &admin,
            json!({"name": "law", "webhook": {"url": "https://law.example.com/hook"}}),
        )
        .await;
        for (name, channel, pattern, digest) in [
            ("med", "med", "*.med.example.com", true),
            ("law", "law", "*.law.example.com", false),
        ] {
            let r = app
                .call(
                    "POST",
                    "/api/v1/subscriptions",
                    Some(&admin),
                    Some(json!({"name": name, "channel": channel, "events": ["certificate.expiring"], "scope": "domains", "domain_patterns": [pattern], "digest": digest})),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED);
        }
        let account = app.account("acme").await;
        let cert = app
            .certificate(&account, "www-med", &["www.med.example.com"])
            .await;
        app.issue(&cert, 2).await;
        let now = crate::now();
        // A host that still serves an older version, found lagging: a digest line as well.
        let db = &app.state.db;
        let agent = app.agent("web-1").await.id;
        let probe = crate::db::served::NewServed {
            certificate_id: cert.id,
            target: "nginx",
            address: "127.0.0.1:443",
            name: "www.med.example.com",
            status: certkeep_api_types::target::ServedStatus::Stale,
            thumbprint: Some("00"),
            error: None,
            expected: "11",
        };
        let probed = now - time::Duration::hours(2);
        db.record_probes(agent, &[probe], probed).await.unwrap();
        let lagging = db.mark_lagging(agent, now, now, |_| None).await.unwrap();
        assert_eq!(lagging.len(), 1, "{}", app.backend);
        for _ in 0..2 {
            crate::notify::scan::scan_once(&app.state, now)
                .await
                .unwrap();
        }
        app.state.db.fan_out(100, now).await.unwrap();
        let all = app.state.db.deliveries(None, 100).await.unwrap();
        let kinds: Vec<(&str, NotificationEvent)> = all
            .iter()
            .map(|d| (d.channel_name.as_str(), d.payload.kind))
            .collect();
        assert_eq!(kinds.len(), 2, "{kinds:?} ({})", app.backend);
        assert!(
            kinds.contains(&("med", NotificationEvent::CertificateExpiring)),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&("med", NotificationEvent::Digest)),
            "{kinds:?}"
        );
        let expiring = all
            .iter()
            .find(|d| d.payload.kind == NotificationEvent::CertificateExpiring)
            .unwrap();
        assert!(
            expiring.payload.summary.contains("www-med"),
            "{:?}",
            expiring.payload
        );
        let digest = all
            .iter()
            .find(|d| d.payload.kind == NotificationEvent::Digest)
            .unwrap();
        let lines = digest.payload.detail.as_deref().unwrap();
        assert!(
            lines.contains("www-med") && lines.contains("www.med.example.com"),
            "{lines}"
        );
        assert!(
            lines.contains(
                "deployment lagging: www.med.example.com at 127.0.0.1:443 (target nginx) is stale"
            ),
            "{lines}"
        );
        // A day later the 1-day threshold is crossed: one more warning, and the next digest.
        let later = now + time::Duration::hours(25) - time::Duration::minutes(30);
        crate::notify::scan::scan_once(&app.state, later)
            .await
            .unwrap();
        crate::notify::scan::scan_once(&app.state, later)
            .await
            .unwrap();
        app.state.db.fan_out(100, later).await.unwrap();
        assert_eq!(
            app.state.db.deliveries(None, 100).await.unwrap().len(),
            4,
            "{}",
            app.backend
        );
    }
}

#[tokio::test]
async fn an_agent_silent_for_its_expected_intervals_is_stale_once_per_silence() {
    let app = TestApp::on(TestDb::sqlite().await, |c| {
        quick(c);
        c.notifications.agent_interval_secs = 600;
        c.notifications.stale_agent_factor = 3;
    })
    .await;
    let admin = app.token(ADMIN, &[]).await;
    add_channel(
        &app,
        &admin,
        json!({"name": "hosts", "webhook": {"url": "https://hosts.example.com/hook"}}),
    )
    .await;
    let agent = app.agent("web1").await;
    let r = app
        .call(
            "POST",
            "/api/v1/subscriptions",
            Some(&admin),
            Some(json!({"name": "web1", "channel": "hosts", "events": ["agent.stale"], "scope": "agent", "agent": "web1"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let db = &app.state.db;
    let seen = crate::now();
    db.activate_agent(agent.id, "01", seen + time::Duration::days(30), seen)
        .await
        .unwrap();
    db.touch_agent(agent.id, "Windows", "20348", "1.0", seen)
        .await
        .unwrap();
    let scan = async |at| {
        crate::notify::scan::scan_once(&app.state, at)
            .await
            .unwrap();
        db.fan_out(100, at).await.unwrap();
        db.deliveries(None, 10).await.unwrap()
    };
    assert!(
        scan(seen + time::Duration::minutes(29)).await.is_empty(),
        "within 3 intervals"
    );
    let stale = scan(seen + time::Duration::minutes(31)).await;
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].payload.kind, NotificationEvent::AgentStale);
    assert_eq!(stale[0].payload.agent_name.as_deref(), Some("web1"));
    assert_eq!(
        scan(seen + time::Duration::minutes(45)).await.len(),
        1,
        "once per silence"
    );
}
