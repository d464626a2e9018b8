//! The README's run command on a bare machine: `certkeep serve` in an empty directory creates
//! its data directory and answers `/healthz` over HTTPS trusted through `ca.pem`, then stops
//! cleanly on SIGTERM.
#![allow(
    clippy::unwrap_used,
    reason = "integration test: a failed step must panic"
)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn first_start_on_a_bare_directory() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (api, agent) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_certkeep"))
        .args(["serve", "--api-addr", &format!("127.0.0.1:{api}")])
        .args(["--agent-addr", &format!("127.0.0.1:{agent}")])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CERTKEEP_ENGINE__ENABLED", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the server says it is serving (its log line), bounded by the process's life.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("certkeep is serving") {
            break;
        }
    }
    assert!(
        log.contains("certkeep is serving"),
        "server did not start:\n{log}"
    );
    // Keep draining the log so the server never blocks on a full pipe.
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());

    let data = dir.path().join("certkeep-data");
    assert_eq!(mode(&data.join("admin-token")), 0o600);
    assert_eq!(mode(&data.join("age-identity.txt")), 0o600);
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    assert!(token.trim().starts_with("ck_") && token.trim().len() > 40);
    assert!(!log.contains(token.trim()), "the admin token was logged");

    let ca = reqwest::Certificate::from_pem(&std::fs::read(data.join("ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let body = client
            .get(format!("https://{host}:{api}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
    }
    let ready = client
        .get(format!("https://127.0.0.1:{api}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // Plain HTTP is not served.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{api}/healthz"))
            .await
            .is_err()
    );

    drop(client);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "server exited with {exit}");
    let rest = rest.join().unwrap().join("\n");
    assert!(rest.contains("shutting down"), "{rest}");
    assert!(!rest.contains(token.trim()), "the admin token was logged");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains("admin-token"), "{stdout}");
    assert!(
        !stdout.contains(token.trim()),
        "the admin token was printed"
    );
}
