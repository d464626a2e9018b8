//! The listeners against hostile clients, over real TLS on loopback: slow headers, connection
//! floods, panicking handlers, enrollment floods, and listener certificate rotation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tower::ServiceExt as _;

use crate::db::audit::AuditFilter;
use crate::testkit::TestServer;

/// Bound of every wait on the server.
const DEADLINE: Duration = Duration::from_secs(30);

fn connector(server: &TestServer) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read_to_string(server.ca_file()).unwrap();
    for cert in crate::tls::certs_from_pem("ca", &pem).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

/// A TLS connection to `url`, handshake completed.
async fn connect(tls: &TlsConnector, url: &str) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port(url))).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(DEADLINE, tls.connect(name, tcp))
        .await
        .map_err(std::io::Error::other)?
}

/// Waits (bounded) until the server ends the connection: EOF or an error on read.
async fn assert_closed_by_server(conn: &mut TlsStream<TcpStream>) {
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(DEADLINE, conn.read(&mut buf))
        .await
        .expect("the server kept the connection open");
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!(
            "expected the connection closed, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_headers_are_dropped_after_the_header_timeout() {
    let server = TestServer::start_with(|c| c.listeners.header_read_timeout_secs = 1).await;
    let tls = connector(&server);
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut conn = connect(&tls, &server.api_url).await.unwrap();
        conn.write_all(b"GET /healthz HT").await.unwrap();
        conn.flush().await.unwrap();
        conns.push(conn);
    }
    // One that completes the handshake but never sends a byte.
    conns.push(connect(&tls, &server.api_url).await.unwrap());
    // One that is served once, then stalls in the headers of its next request.
    let mut kept = connect(&tls, &server.api_url).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"ok") {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(DEADLINE, kept.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    kept.write_all(b"GET /healthz HT").await.unwrap();
    conns.push(kept);
    for conn in &mut conns {
        assert_closed_by_server(conn).await;
    }
    assert!(started.elapsed() < DEADLINE);
    // A prompt client is served as before.
    let mut conn = connect(&tls, &server.api_url).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_tls_handshake_is_dropped() {
    let server = TestServer::start_with(|c| c.listeners.tls_handshake_timeout_secs = 1).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", port(&server.agent_url)))
        .await
        .unwrap();
    // Half a TLS record header, then silence.
    tcp.write_all(&[0x16, 0x03]).await.unwrap();
    let mut buf = [0u8; 64];
    // Well before axum-server's own 10 s default.
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the server kept a stalled handshake open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_are_closed() {
    const CAP: usize = 4;
    let server = TestServer::start_with(|c| {
        c.listeners.max_connections = CAP;
        c.listeners.header_read_timeout_secs = 300;
    })
    .await;
    let tls = connector(&server);
    for url in [&server.api_url, &server.agent_url] {
        let mut open = Vec::new();
        for _ in 0..CAP {
            open.push(connect(&tls, url).await.unwrap());
        }
        // The next one is closed before its handshake completes, repeatedly.
        for _ in 0..3 {
            assert!(
                connect(&tls, url).await.is_err(),
                "connection {} on {url} was accepted",
                CAP + 1
            );
        }
        // Closing one frees its place (the server notices the close asynchronously).
        drop(open.pop());
        let started = Instant::now();
        let replacement = loop {
            if let Ok(conn) = connect(&tls, url).await {
                break conn;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the freed place never came back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        drop(replacement);
        drop(open);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_answers_500_problem() {
    let router = super::harden(
        axum::Router::new().route(
            "/boom",
            get(|| async {
                let text = String::from("1é");
                // The bug this guards against: a byte index inside a multibyte character.
                let tail = &text[..2];
                tail.to_owned()
            }),
        ),
        &crate::config::ListenersConfig::default(),
    );
    let response = router
        .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(
        response.headers()["content-type"],
        crate::api::error::PROBLEM_MEDIA_TYPE
    );
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["status"], 500);
    assert_eq!(problem["type"], "https://certkeep.dev/problems/internal");
    assert!(
        !String::from_utf8_lossy(&body).contains("char boundary"),
        "the panic message leaked"
    );
}

#[tokio::test]
async fn a_request_over_the_time_limit_answers_408_problem() {
    let limits = crate::config::ListenersConfig {
        request_timeout_secs: 1,
        ..Default::default()
    };
    let router = super::harden(
        axum::Router::new().route("/slow", get(std::future::pending::<&'static str>)),
        &limits,
    );
    let response = tokio::time::timeout(
        DEADLINE,
        router.oneshot(Request::get("/slow").body(Body::empty()).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status(), 408);
    assert_eq!(
        response.headers()["content-type"],
        crate::api::error::PROBLEM_MEDIA_TYPE
    );
}

/// Everything a test's log subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn requests_are_traced_with_their_id_and_never_log_credentials() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let router = super::harden(
        axum::Router::new().route(
            "/hello",
            get(|| async {
                tracing::info!("handled");
                "hi"
            }),
        ),
        &crate::config::ListenersConfig::default(),
    );
    // Without an id the request gets a fresh one, echoed on the response.
    let response = router
        .clone()
        .oneshot(
            Request::get("/hello")
                .header("authorization", "Bearer ck_header-secret")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    // The client's id is kept.
    let response = router
        .oneshot(
            Request::get("/hello?token=ck_query-secret")
                .header("x-request-id", "client-chosen-42")
                .header("cookie", "session=ck_cookie-secret")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-42");
    let text = logs.text();
    for id in [generated.as_str(), "client-chosen-42"] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("request.id={id}")) && l.contains("handled")),
            "the handler's event carries request id {id}:\n{text}"
        );
        assert!(
            text.lines().any(|l| l.contains(&format!("request.id={id}"))
                && l.contains("status=200")
                && l.contains("http.path=/hello")),
            "the response of {id} is logged:\n{text}"
        );
    }
    assert!(!text.contains("secret"), "a credential was logged:\n{text}");
}

/// The serial of the leaf certificate a new handshake with `url` presents.
async fn serial(tls: &TlsConnector, url: &str) -> String {
    let conn = connect(tls, url).await.unwrap();
    let leaf = conn.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    cert.raw_serial_as_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn listener_certificates_rotate_without_a_restart() {
    let server = TestServer::start_with(|c| c.listeners.cert_lifetime_secs = 3).await;
    let tls = connector(&server);
    for url in [&server.api_url, &server.agent_url] {
        let first = serial(&tls, url).await;
        let started = Instant::now();
        loop {
            let now = serial(&tls, url).await;
            if now != first {
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{url} still presents serial {first}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn enroll_denials_are_limited_and_audited_in_aggregate() {
    const LIMIT: u32 = 3;
    let server = TestServer::start_with(|c| {
        c.listeners.enroll_failures_per_window = LIMIT;
        c.listeners.enroll_window_secs = 2;
    })
    .await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(server.ca_file()).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let body = serde_json::json!({ "token": "ck_join_not-a-real-token", "csr_pem": csr });
    let url = format!(
        "{}{}",
        server.agent_url,
        certkeep_api_types::agent::ENROLL_PATH
    );
    let mut attempts = 0u64;
    let mut limited = 0u64;
    let mut unauthorized = 0u64;
    // Until a few attempts in a row were refused with 429 (bounded).
    while limited < 5 {
        assert!(attempts < 200, "never limited");
        let response = client.post(&url).json(&body).send().await.unwrap();
        attempts += 1;
        match response.status().as_u16() {
            429 => limited += 1,
            401 => unauthorized += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(unauthorized >= u64::from(LIMIT));
    // Every attempt is accounted for in the audit log, in far fewer events than attempts:
    // one event for each window's first denial, one summary per window with more.
    let started = Instant::now();
    let events = loop {
        let events = server
            .state
            .db
            .list_audit(&AuditFilter {
                action: Some("agent.enroll".into()),
                limit: 10_000,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let accounted: u64 = events
            .iter()
            .map(|e| {
                assert_eq!(
                    (e.outcome.as_str(), e.source.as_deref()),
                    ("denied", Some("127.0.0.1"))
                );
                if e.detail.contains("further denied attempts") {
                    e.detail.split(' ').next().unwrap().parse::<u64>().unwrap()
                } else {
                    1
                }
            })
            .sum();
        if accounted == attempts {
            break events;
        }
        assert!(accounted < attempts, "{accounted} audited for {attempts}");
        assert!(
            started.elapsed() < DEADLINE,
            "{accounted} of {attempts} attempts audited"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        events.iter().any(|e| e
            .detail
            .contains("over listeners.enroll_failures_per_window")),
        "no aggregated entry: {events:?}"
    );
    assert!(
        (events.len() as u64) < attempts,
        "{} events for {attempts} attempts",
        events.len()
    );
    server.stop().await;
}

/// Writes a leaf from `ca` for 127.0.0.1 as the configured API certificate files (the key by
/// rename, as the example config advises).
fn write_api_files(ca: &certkeep_api_types::pfx::testing::TestCa, dir: &std::path::Path) {
    use certkeep_api_types::pem::encode;
    let leaf = ca.leaf(
        &["127.0.0.1"],
        certkeep_api_types::pfx::testing::KeyKind::Ecdsa,
    );
    let chain: String = leaf
        .chain_der
        .iter()
        .map(|der| encode("CERTIFICATE", der))
        .collect();
    let key = encode("PRIVATE KEY", &leaf.key_pkcs8_der);
    for (name, text) in [("key.pem", key), ("cert.pem", chain)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_api_certificate_files_reload_when_they_change() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = certkeep_api_types::pfx::testing::TestCa::new();
    let files = tempfile::tempdir().unwrap();
    write_api_files(&ca, files.path());
    let server = TestServer::start_with(|c| {
        c.tls_cert_file = Some(files.path().join("cert.pem"));
        c.tls_key_file = Some(files.path().join("key.pem"));
        c.listeners.cert_file_check_secs = 1;
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(
            ca.leaf(&["x"], certkeep_api_types::pfx::testing::KeyKind::Ecdsa)
                .root_der,
        ))
        .unwrap();
    let tls = TlsConnector::from(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ));
    let first = serial(&tls, &server.api_url).await;
    write_api_files(&ca, files.path());
    let started = Instant::now();
    while serial(&tls, &server.api_url).await == first {
        assert!(
            started.elapsed() < DEADLINE,
            "the new API certificate was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

/// Lines logged at `max_level` while `harden`ed routes answer `GET /poll` (304) and `GET /sync`
/// (200).
async fn logged_at(max_level: tracing::Level) -> String {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(max_level)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let router = super::harden(
        axum::Router::new()
            .route("/poll", get(|| async { StatusCode::NOT_MODIFIED }))
            .route("/sync", get(|| async { "changed" })),
        &crate::config::ListenersConfig::default(),
    );
    for path in ["/poll", "/sync"] {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(response.status().as_u16() < 400, "{path}");
    }
    logs.text()
}

#[tokio::test]
async fn polls_that_changed_nothing_are_logged_only_at_debug() {
    let info = logged_at(tracing::Level::INFO).await;
    assert!(
        info.lines()
            .any(|l| l.contains("status=200") && l.contains("http.path=/sync")),
        "{info}"
    );
    assert!(
        !info.contains("status=304"),
        "a 304 was logged at info:\n{info}"
    );
    let debug = logged_at(tracing::Level::DEBUG).await;
    assert!(
        debug
            .lines()
            .any(|l| l.contains("status=304") && l.contains("http.path=/poll")),
        "{debug}"
    );
}
