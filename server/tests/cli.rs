//! The admin CLI as users run it: the real `certkeep` binary against a `certkeep serve` started
//! by the test on loopback ports, trusting the server through `ca.pem`.
#![allow(
    clippy::unwrap_used,
    reason = "test harness: a panic is the failure report"
)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;

use certkeep_server::db::Db;
use certkeep_server::model::AccountState;
use certkeep_server::secrets::Secrets;

/// A `certkeep serve` child process with the CLI pointed at it.
struct Server(common::ServerProcess);

impl std::ops::Deref for Server {
    type Target = common::ServerProcess;
    fn deref(&self) -> &common::ServerProcess {
        &self.0
    }
}

impl Server {
    fn start() -> Self {
        Self(common::ServerProcess::start())
    }

    /// Runs `certkeep args...` as an admin, with `stdin` piped in.
    fn cli(&self, args: &[&str], stdin: &str) -> Output {
        self.cli_as(&self.data().join("admin-token"), args, stdin)
    }

    /// `account add` of an EAB account named `name`, the HMAC key from stdin, then marked valid
    /// in the database. Registration against this unreachable CA may fail (exit 1) once the
    /// engine is wired; the account exists either way.
    async fn eab_account(&self, db: &Db, name: &str) -> Output {
        let out = self.cli(
            &[
                "account",
                "add",
                "--name",
                name,
                "--directory-url",
                "https://acme.invalid/dir",
                "--allow",
                "*.example.com",
                "--eab-kid",
                "kid-1",
                "--eab-hmac-file",
                "-",
            ],
            "c2VjcmV0LWhtYWMta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMzI\n",
        );
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{}",
            text(&out.stderr)
        );
        let account = db.account_by_name(name).await.unwrap();
        db.set_account_state(
            account.id,
            AccountState::Valid,
            None,
            certkeep_server::now(),
        )
        .await
        .unwrap();
        out
    }

    fn cli_as(&self, token_file: &Path, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_certkeep"))
            .args(args)
            .arg("--token-file")
            .arg(token_file)
            .current_dir(self.dir.path())
            .env_clear()
            .env("CERTKEEP_SERVER", &self.url)
            .env("CERTKEEP_CA_FILE", self.data().join("ca.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    async fn db(&self) -> (Db, Secrets) {
        let db = Db::open_sqlite(&self.data().join("certkeep.db"))
            .await
            .unwrap();
        (
            db,
            Secrets::load(&self.data().join("age-identity.txt")).unwrap(),
        )
    }
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_certificate_walkthrough_and_exit_codes() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let server = Server::start();

    // Account: the HMAC key comes from stdin.
    let (db, secrets) = server.db().await;
    let out = server.eab_account(&db, "acme").await;
    assert!(
        !text(&out.stdout).contains("c2VjcmV0"),
        "the HMAC key was echoed"
    );
    assert!(ok(&server.cli(&["account", "list"], "")).contains("acme"));

    // Certificate: defined and queued; JSON output is the API's.
    let out = ok(&server.cli(
        &[
            "cert",
            "add",
            "--name",
            "www",
            "--dns",
            "www.example.com",
            "--account",
            "acme",
            "--output",
            "json",
        ],
        "",
    ));
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["state"], "pending");
    let table = ok(&server.cli(&["cert", "list"], ""));
    assert!(
        table.starts_with("NAME") && table.contains("www.example.com"),
        "{table}"
    );
    assert!(ok(&server.cli(&["cert", "show", "www"], "")).contains("queued"));

    // Issue a version behind the API (no CA here), then download it.
    let cert = db.certificate_by_name("www").await.unwrap();
    let leaf = certkeep_api_types::pfx::testing::TestCa::new().leaf(
        &["www.example.com"],
        certkeep_api_types::pfx::testing::KeyKind::Ecdsa,
    );
    let chain_pem = certkeep_server::testkit::store_test_version(
        &db,
        &secrets,
        cert.id,
        &leaf,
        time::Duration::days(90),
    )
    .await
    .unwrap()
    .chain_pem;
    assert_eq!(ok(&server.cli(&["cert", "download", "www"], "")), chain_pem);
    let pfx_path = server.dir.path().join("www.pfx");
    ok(&server.cli(
        &[
            "cert",
            "download",
            "www",
            "--format",
            "pfx",
            "--password-file",
            "-",
            "--out",
            pfx_path.to_str().unwrap(),
        ],
        "correct horse\n",
    ));
    let opened =
        certkeep_api_types::pfx::open_pfx(&std::fs::read(&pfx_path).unwrap(), "correct horse")
            .unwrap();
    assert_eq!(opened.leaf_der, leaf.chain_der[0]);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&pfx_path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Agent with a CCS password from stdin; its join token is printed once.
    let out = ok(&server.cli(
        &["agent", "add", "--name", "web1", "--ccs-password-file", "-"],
        "ccs-pass\n",
    ));
    assert!(out.contains("join token") && out.contains("ck_"), "{out}");
    assert!(
        out.contains("certkeep-agent enroll --server https://127.0.0.1:")
            && out.contains("--token-file join-token.txt"),
        "the enroll command line: {out}"
    );
    ok(&server.cli(
        &[
            "agent",
            "target",
            "add",
            "web1",
            "nginx",
            "--kind",
            "directory",
            "--path",
            "/etc/ssl/certkeep",
            "--reload-command",
            "systemctl reload nginx",
        ],
        "",
    ));
    let out = ok(&server.cli(&["agent", "target", "list", "web1"], ""));
    assert!(
        out.contains("directory /etc/ssl/certkeep (reload: systemctl reload nginx)")
            && out.contains("127.0.0.1:443"),
        "{out}"
    );
    ok(&server.cli(&["agent", "assign", "web1", "www", "--target", "nginx"], ""));
    assert!(ok(&server.cli(&["agent", "list"], "")).contains("www=pending"));
    ok(&server.cli(
        &[
            "agent",
            "rollout",
            "web1",
            "--window",
            "Sat 02:00-04:00 +01:00",
            "--canary",
        ],
        "",
    ));
    let shown = ok(&server.cli(&["agent", "show", "web1"], ""));
    assert!(
        shown.contains("nginx")
            && shown.contains("rollout: change window Sat 02:00-04:00 +01:00, canary"),
        "{shown}"
    );

    // An issuer token for another domain is refused: exit 3.
    let out = ok(&server.cli(
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--scope",
            "issuer",
            "--domain",
            "*.ci.example.com",
            "--output",
            "json",
        ],
        "",
    ));
    let secret = serde_json::from_str::<serde_json::Value>(&out).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let token_file = server.dir.path().join("ci-token");
    std::fs::write(&token_file, &secret).unwrap();
    let out = server.cli_as(
        &token_file,
        &[
            "cert",
            "add",
            "--name",
            "x",
            "--dns",
            "www.example.com",
            "--account",
            "acme",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("www.example.com"),
        "{}",
        text(&out.stderr)
    );
    assert!(ok(&server.cli(&["token", "list"], "")).contains("issuer"));

    // An operator without `export` cannot route a private key to an agent: exit 3, and the
    // message names the missing scope.
    let out = ok(&server.cli(
        &[
            "token", "create", "--name", "ops", "--scope", "operator", "--output", "json",
        ],
        "",
    ));
    let secret = serde_json::from_str::<serde_json::Value>(&out).unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let ops_file = server.dir.path().join("ops-token");
    std::fs::write(&ops_file, &secret).unwrap();
    for (args, stdin) in [
        (
            &[
                "agent",
                "add",
                "--name",
                "rogue",
                "--ccs-password-file",
                "-",
            ][..],
            "rogue-pw",
        ),
        (&["agent", "join-token", "web1"][..], ""),
        (&["agent", "assign", "web1", "www"][..], ""),
        (
            &["agent", "update", "web1", "--ccs-password-file", "-"][..],
            "new-pw",
        ),
    ] {
        let out = server.cli_as(&ops_file, args, stdin);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains("403") && stderr.contains("`export` scope"),
            "{args:?}: {stderr}"
        );
        assert!(!text(&out.stdout).contains("ck_"), "no join token printed");
    }
    assert!(!ok(&server.cli(&["agent", "list"], "")).contains("rogue"));

    // Refusals, usage errors and unreachable servers have their own exit codes.
    assert_eq!(
        server.cli(&["cert", "show", "nope"], "").status.code(),
        Some(3)
    );
    assert_eq!(
        server.cli(&["cert", "frobnicate"], "").status.code(),
        Some(2)
    );
    assert_eq!(
        server
            .cli(
                &[
                    "cert", "download", "www", "--format", "pfx", "--out", "x.pfx"
                ],
                ""
            )
            .status
            .code(),
        Some(2)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_certkeep"))
        .args(["cert", "list", "--server", "https://127.0.0.1:1"])
        .env_clear()
        .env("CERTKEEP_TOKEN", &secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_certkeep"))
        .args(["cert", "list"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no token is a usage error");

    // The audit log through the API, and tampering detected by both verify paths.
    let audit = ok(&server.cli(&["audit", "list"], ""));
    for action in [
        "account.create",
        "certificate.create",
        "certificate.key_release",
        "agent.assign",
        "token.create",
    ] {
        assert!(audit.contains(action), "{action} missing from:\n{audit}");
    }
    assert!(ok(&server.cli(&["audit", "verify"], "")).contains("intact"));
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        server.data().join("certkeep.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE audit_events SET outcome = 'denied' WHERE seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    let out = server.cli(&["audit", "verify"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("BROKEN at event 2"),
        "{}",
        text(&out.stdout)
    );

    // After all of that, the server stops cleanly and never logged a secret it handed out.
    let token = std::fs::read_to_string(server.data().join("admin-token")).unwrap();
    let mut server = server;
    let ended = server.0.terminate();
    assert!(
        ended.status.success(),
        "server exited with {}",
        ended.status
    );
    assert!(ended.stdout.contains("admin-token"), "{}", ended.stdout);
    for log in [&server.startup_log, &ended.log, &ended.stdout] {
        assert!(
            !log.contains(token.trim()),
            "the admin token was logged or printed"
        );
    }
}

#[test]
fn every_command_has_help_with_an_example() {
    let commands: &[&[&str]] = &[
        &["account", "add"],
        &["account", "list"],
        &["account", "show"],
        &["account", "deactivate"],
        &["cert", "add"],
        &["cert", "list"],
        &["cert", "show"],
        &["cert", "renew"],
        &["cert", "revoke"],
        &["cert", "retire"],
        &["cert", "download"],
        &["cert", "edit"],
        &["cert", "import"],
        &["cert", "move"],
        &["domain", "list"],
        &["domain"],
        &["agent", "add"],
        &["agent", "list"],
        &["agent", "show"],
        &["agent", "update"],
        &["agent", "assign"],
        &["agent", "unassign"],
        &["agent", "join-token"],
        &["agent", "revoke"],
        &["agent", "target"],
        &["agent", "target", "add"],
        &["agent", "target", "list"],
        &["agent", "target", "remove"],
        &["agent", "rollout"],
        &["token", "create"],
        &["token", "list"],
        &["token", "revoke"],
        &["audit", "list"],
        &["audit", "verify"],
        &["notify", "channel", "add"],
        &["notify", "channel", "list"],
        &["notify", "channel", "remove"],
        &["notify", "subscribe"],
        &["notify", "subscriptions"],
        &["notify", "unsubscribe"],
        &["notify", "mute"],
        &["notify", "mutes"],
        &["notify", "test"],
        &["notify", "list"],
        &["notify", "channel"],
        &["notify"],
        &["account"],
        &["cert"],
        &["agent"],
        &["token"],
        &["audit"],
    ];
    for args in commands {
        let out = Command::new(env!("CARGO_BIN_EXE_certkeep"))
            .args(*args)
            .arg("--help")
            .output()
            .unwrap();
        let help = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(
            help.contains("Example:"),
            "`certkeep {} --help` has no example:\n{help}",
            args.join(" ")
        );
    }
}

/// A webhook receiver for the crash test: verifies the signature, holds the first request
/// until the test is done with it (the server is killed meanwhile), and accepts the rest.
struct HoldingReceiver {
    url: String,
    /// `webhook-id` of every verified request, in arrival order.
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl HoldingReceiver {
    async fn start(secret: &str) -> Self {
        let key = certkeep_server::notify::webhook::secret_key(secret).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
                let (log, key) = (log.clone(), key.clone());
                async move {
                    let h = |n: &str| headers[n].to_str().unwrap().to_owned();
                    let (id, ts) = (h("webhook-id"), h("webhook-timestamp"));
                    let sig = certkeep_server::notify::webhook::signature(
                        &key,
                        &id,
                        ts.parse().unwrap(),
                        &body,
                    );
                    if sig != h("webhook-signature") {
                        return http::StatusCode::UNAUTHORIZED;
                    }
                    let first = {
                        let mut log = log.lock().unwrap();
                        log.push(id);
                        log.len() == 1
                    };
                    if first {
                        std::future::pending::<()>().await;
                    }
                    http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            seen,
            _server: server,
        }
    }

    async fn wait_requests(&self, n: usize) -> Vec<String> {
        let start = std::time::Instant::now();
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "{} of {n} webhook requests arrived",
                seen.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// kill -9 of a real server between claiming a delivery and recording its outcome: nothing is
/// marked delivered without the receiver's 2xx, and after a restart the event is delivered (the
/// same `webhook-id`, so the receiver can drop a duplicate).
#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_interrupted_by_kill_9_is_delivered_after_restart() {
    let env = [
        ("CERTKEEP_ENGINE__ENABLED", "false"),
        ("CERTKEEP_NOTIFICATIONS__LEASE_SECS", "2"),
        ("CERTKEEP_NOTIFICATIONS__WORKER_INTERVAL_SECS", "1"),
    ];
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut server = Server(common::ServerProcess::start_in(dir.clone(), &env).unwrap());
    let secret = certkeep_server::notify::webhook::new_secret();
    let receiver = HoldingReceiver::start(&secret).await;
    ok(&server.cli(
        &[
            "notify",
            "channel",
            "add",
            "--name",
            "hook",
            "--webhook-url",
            &receiver.url,
            "--secret-file",
            "-",
        ],
        &secret,
    ));
    ok(&server.cli(
        &[
            "notify",
            "subscribe",
            "--name",
            "audit",
            "--channel",
            "hook",
            "--event",
            "audit.chain_broken",
        ],
        "",
    ));
    // Break the audit chain behind the server's back; verifying raises audit.chain_broken.
    let raw = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        server.data().join("certkeep.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE audit_events SET detail = 'tampered' WHERE seq = 1")
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    let verify = server.cli(&["audit", "verify"], "");
    assert_eq!(verify.status.code(), Some(1), "{}", text(&verify.stdout));
    let first = receiver.wait_requests(1).await;
    server.0.kill();
    {
        let (db, _) = server.db().await;
        let all = db.deliveries(None, 10).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].delivered_at, None, "never delivered without a 2xx");
        assert_eq!(all[0].attempts, 0, "the attempt was never recorded");
        db.close().await;
    }
    let server = Server(common::ServerProcess::start_in(dir.clone(), &env).unwrap());
    let both = receiver.wait_requests(2).await;
    assert_eq!(
        both[1], first[0],
        "the same event, with the same webhook-id"
    );
    let start = std::time::Instant::now();
    loop {
        let out = ok(&server.cli(&["notify", "list", "--output", "json"], ""));
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        if list[0]["state"] == "delivered" {
            assert_eq!(list[0]["attempts"], 1, "{list}");
            assert_eq!(list[0]["last_code"], 204, "{list}");
            assert_eq!(list[0]["event"]["type"], "audit.chain_broken");
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        receiver.seen.lock().unwrap().len(),
        2,
        "nothing sent after acceptance"
    );
}

/// The lifecycle commands as users run them: import from PEM files, the domain-validation
/// ledger, an edit, a move plan and the move status.
#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_commands() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let server = Server::start();
    let (db, _) = server.db().await;
    for name in ["incommon", "certinext"] {
        server.eab_account(&db, name).await;
    }

    // Import from PEM files.
    let leaf = certkeep_api_types::pfx::testing::TestCa::new().leaf(
        &["shop.example.com"],
        certkeep_api_types::pfx::testing::KeyKind::Ecdsa,
    );
    let chain: String = leaf
        .chain_der
        .iter()
        .map(|d| certkeep_api_types::pem::encode("CERTIFICATE", d))
        .collect();
    let dir = server.dir.path();
    std::fs::write(dir.join("chain.pem"), chain).unwrap();
    std::fs::write(
        dir.join("key.pem"),
        certkeep_api_types::pem::encode("PRIVATE KEY", &leaf.key_pkcs8_der),
    )
    .unwrap();
    let out = ok(&server.cli(
        &[
            "cert",
            "import",
            "--name",
            "shop",
            "--account",
            "incommon",
            "--cert-file",
            "chain.pem",
            "--key-file",
            "key.pem",
        ],
        "",
    ));
    assert!(
        out.contains("shop.example.com") && out.contains("valid"),
        "{out}"
    );
    // A key that does not match is refused (exit 3, the API's 422).
    let other = certkeep_api_types::pfx::testing::TestCa::new().leaf(
        &["shop.example.com"],
        certkeep_api_types::pfx::testing::KeyKind::Ecdsa,
    );
    std::fs::write(
        dir.join("other-key.pem"),
        certkeep_api_types::pem::encode("PRIVATE KEY", &other.key_pkcs8_der),
    )
    .unwrap();
    let refused = server.cli(
        &[
            "cert",
            "import",
            "--name",
            "shop2",
            "--account",
            "incommon",
            "--cert-file",
            "chain.pem",
            "--key-file",
            "other-key.pem",
        ],
        "",
    );
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused.stderr));

    // The ledger.
    let incommon = db.account_by_name("incommon").await.unwrap();
    let now = certkeep_server::now();
    db.record_domain_validations(
        incommon.id,
        &[
            ("shop.example.com".into(), now + time::Duration::days(10)),
            ("later.example.com".into(), now + time::Duration::days(300)),
        ],
        now,
    )
    .await
    .unwrap();
    let listed = ok(&server.cli(&["domain", "list", "--lapsing-within", "30d"], ""));
    assert!(
        listed.starts_with("NAME") && listed.contains("shop.example.com"),
        "{listed}"
    );
    assert!(!listed.contains("later.example.com"), "{listed}");

    // A move plan changes nothing; the status lists no move.
    let plan = ok(&server.cli(
        &[
            "cert",
            "move",
            "--account",
            "incommon",
            "--to-account",
            "certinext",
            "--dry-run",
        ],
        "",
    ));
    assert!(
        plan.contains("shop") && plan.contains("plan only"),
        "{plan}"
    );
    assert_eq!(db.moves(10).await.unwrap().len(), 0);
    let status = ok(&server.cli(&["cert", "move", "--status"], ""));
    assert!(status.starts_with("CERTIFICATE"), "{status}");

    // An edit adds a name through a new order.
    let edited = ok(&server.cli(
        &["cert", "edit", "shop", "--add-dns", "www.example.com"],
        "",
    ));
    assert!(edited.contains("www.example.com"), "{edited}");
    let cert = db.certificate_by_name("shop").await.unwrap();
    assert_eq!(cert.dns_names, ["shop.example.com", "www.example.com"]);
}
