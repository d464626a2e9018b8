//! The README's run command on a bare machine: `certkeep serve` in an empty directory creates
//! its data directory and answers `/healthz` over HTTPS trusted through `ca.pem`, then stops
//! cleanly on SIGTERM.
#![allow(
    clippy::unwrap_used,
    reason = "integration test: a failed step must panic"
)]

mod common;

use std::os::unix::fs::PermissionsExt;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn first_start_on_a_bare_directory() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut server = common::ServerProcess::start();

    let data = server.data();
    assert_eq!(mode(&data.join("admin-token")), 0o600);
    assert_eq!(mode(&data.join("age-identity.txt")), 0o600);
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let token = token.trim().to_owned();
    assert!(token.starts_with("ck_") && token.len() > 40);
    assert!(
        !server.startup_log.contains(&token),
        "the admin token was logged"
    );

    let ca = reqwest::Certificate::from_pem(&std::fs::read(data.join("ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    for host in ["127.0.0.1", "localhost"] {
        let body = client
            .get(format!("https://{host}:{port}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
    }
    let ready = client
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // Plain HTTP is not served.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err()
    );

    drop(client);
    let ended = server.terminate();
    assert!(
        ended.status.success(),
        "server exited with {}",
        ended.status
    );
    assert!(ended.log.contains("shutting down"), "{}", ended.log);
    assert!(!ended.log.contains(&token), "the admin token was logged");
    assert!(ended.stdout.contains("admin-token"), "{}", ended.stdout);
    assert!(
        !ended.stdout.contains(&token),
        "the admin token was printed"
    );
}

/// `certkeep dns-key import` seals a TSIG secret read from stdin into the database and refuses a
/// malformed one without echoing it.
#[tokio::test]
async fn dns_key_import_seals_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let import = |secret: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_certkeep"))
            .args([
                "dns-key",
                "import",
                "--key-name",
                "certkeep.",
                "--secret-file",
                "-",
            ])
            .current_dir(dir.path())
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), secret.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let bad = import("hunter2 is not base64!");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("certkeep.") && !stderr.contains("hunter2"),
        "{stderr}"
    );

    let secret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=";
    let good = import(&format!("{secret}\n"));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let data = dir.path().join("certkeep-data");
    let db = certkeep_server::db::Db::open_sqlite(&data.join("certkeep.db"))
        .await
        .unwrap();
    let secrets = certkeep_server::secrets::Secrets::load(&data.join("age-identity.txt")).unwrap();
    let stored = db.tsig_key(&secrets, "certkeep.").await.unwrap().unwrap();
    assert_eq!(&stored[..], secret.as_bytes());
    db.close().await;
    let mut raw = std::fs::read(data.join("certkeep.db")).unwrap();
    raw.extend(std::fs::read(data.join("certkeep.db-wal")).unwrap_or_default());
    assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
}

/// `certkeep print-config` with `env` only (plus `PATH`), parsed.
fn print_config(dir: &std::path::Path, env: &[(&str, &str)]) -> toml::Table {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certkeep"))
        .arg("print-config")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{env:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("hunter2"), "a secret was printed:\n{text}");
    text.parse().unwrap()
}

/// Every environment variable the README and the deploy files document works, together: the
/// server settings (nested ones with `__`), the database URL from a file, the config file's
/// path, the log filter `CERTKEEP_LOG` (once refused as "unknown field `log`") and the admin
/// CLI's `CERTKEEP_SERVER`, `CERTKEEP_TOKEN` and `CERTKEEP_CA_FILE`.
#[tokio::test(flavor = "multi_thread")]
async fn documented_environment_variables_work() {
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("database-url");
    std::fs::write(
        &url_file,
        "postgres://certkeep:hunter2@db.example.edu/certkeep\n",
    )
    .unwrap();
    let config_file = dir.path().join("certkeep.toml");
    std::fs::write(&config_file, "server_names = [\"certkeep.example.edu\"]\n").unwrap();
    let c = print_config(
        dir.path(),
        &[
            ("CERTKEEP_LOG", "debug,sqlx=warn"),
            ("CERTKEEP_CONFIG", config_file.to_str().unwrap()),
            ("CERTKEEP_DATA_DIR", "/srv/certkeep"),
            ("CERTKEEP_DATABASE_URL_FILE", url_file.to_str().unwrap()),
            ("CERTKEEP_API_ADDR", "127.0.0.1:9443"),
            ("CERTKEEP_AGENT_ADDR", "127.0.0.1:9444"),
            ("CERTKEEP_ENGINE__WORKERS", "3"),
            ("CERTKEEP_LISTENERS__MAX_CONNECTIONS", "50"),
            ("CERTKEEP_SERVER", "https://certkeep.example.edu:8443"),
            ("CERTKEEP_TOKEN", "ck_not-a-setting"),
            ("CERTKEEP_CA_FILE", "/srv/certkeep/ca.pem"),
        ],
    );
    assert_eq!(c["server_names"][0].as_str(), Some("certkeep.example.edu"));
    assert_eq!(c["data_dir"].as_str(), Some("/srv/certkeep"));
    assert_eq!(c["database_url"].as_str(), Some("<redacted>"));
    assert_eq!(c["api_addr"].as_str(), Some("127.0.0.1:9443"));
    assert_eq!(c["agent_addr"].as_str(), Some("127.0.0.1:9444"));
    assert_eq!(c["engine"]["workers"].as_integer(), Some(3));
    assert_eq!(c["listeners"]["max_connections"].as_integer(), Some(50));
    let c = print_config(
        dir.path(),
        &[(
            "CERTKEEP_DATABASE_URL",
            "postgres://certkeep:hunter2@db.example.edu/certkeep",
        )],
    );
    assert_eq!(c["database_url"].as_str(), Some("<redacted>"));

    // `serve` starts with the log filter and logs at its level.
    let server = common::ServerProcess::start_with_env(&[("CERTKEEP_LOG", "debug")]);
    assert!(
        server.startup_log.contains("DEBUG"),
        "no debug output:\n{}",
        server.startup_log
    );
    // The CLI takes its server, token and CA from the environment alone.
    let token = std::fs::read_to_string(server.data().join("admin-token")).unwrap();
    assert!(
        !server.startup_log.contains(token.trim()),
        "the admin token was logged at debug level"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certkeep"))
        .args(["token", "list"])
        .env_clear()
        .env("CERTKEEP_SERVER", &server.url)
        .env("CERTKEEP_TOKEN", token.trim())
        .env(
            "CERTKEEP_CA_FILE",
            server.data().join("ca.pem").to_str().unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin"));
}
