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
    let hmac = "c2VjcmV0LWhtYWMta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMzI\n";

    // Account: the HMAC key comes from stdin. Registration against this unreachable CA may
    // fail (exit 1) once the engine is wired; the account exists either way.
    let out = server.cli(
        &[
            "account",
            "add",
            "--name",
            "acme",
            "--directory-url",
            "https://acme.invalid/dir",
            "--allow",
            "*.example.com",
            "--eab-kid",
            "kid-1",
            "--eab-hmac-file",
            "-",
        ],
        hmac,
    );
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stdout).contains("c2VjcmV0"),
        "the HMAC key was echoed"
    );
    let (db, secrets) = server.db().await;
    let account = db.account_by_name("acme").await.unwrap();
    db.set_account_state(
        account.id,
        AccountState::Valid,
        None,
        certkeep_server::now(),
    )
    .await
    .unwrap();
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
    ok(&server.cli(&["agent", "assign", "web1", "www"], ""));
    assert!(ok(&server.cli(&["agent", "list"], "")).contains("www=pending"));

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
        &["token", "create"],
        &["token", "list"],
        &["token", "revoke"],
        &["audit", "list"],
        &["audit", "verify"],
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

/// The lifecycle commands as users run them: import from PEM files, the domain-validation
/// ledger, an edit, a move plan and the move status.
#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_commands() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let server = Server::start();
    let hmac = "c2VjcmV0LWhtYWMta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMzI\n";
    let (db, _) = server.db().await;
    for name in ["incommon", "certinext"] {
        let out = server.cli(
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
            hmac,
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
