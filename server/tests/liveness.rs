//! The real `certkeep` binary and the processes around one database: a second server on the
//! same SQLite data directory is refused, `rekey` is refused while a server runs, and a server
//! killed with SIGKILL while the CA is `processing` is resumed by the next start within seconds,
//! finalizing once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step must panic"
)]

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use certkeep_server::config::Config;
use certkeep_server::db::Db;
use certkeep_server::db::accounts::NewAccount;
use certkeep_server::db::certificates::NewCertificate;
use certkeep_server::model::{CertificateId, KeyType, OrderReason, RenewalPolicy};
use certkeep_server::secrets::Secrets;
use certkeep_testsupport::pebble::{Pebble, PebbleOptions};
use certkeep_testsupport::proxy::{Kind, Proxy, still_processing};
use common::ServerProcess;

/// Runs `certkeep args...` in `dir` (its `certkeep-data` is the data directory).
fn certkeep(dir: &std::path::Path, args: &[&str]) -> Output {
    certkeep_with(dir, args, &[])
}

fn certkeep_with(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_certkeep"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let first = ServerProcess::start();
    let started = Instant::now();
    let second =
        ServerProcess::start_in(first.dir.clone(), &[("CERTKEEP_ENGINE__ENABLED", "false")]);
    let Err(log) = second else {
        panic!("a second server started on the same data directory");
    };
    assert!(
        log.contains("another certkeep process")
            && log.contains(&format!("pid {}", first.child_id()))
            && log.contains("stop it first"),
        "{log}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");
}

#[test]
fn rekey_migrate_and_dns_key_import_wait_for_the_server_to_stop() {
    let mut server = ServerProcess::start();
    let dir = server.dir.clone();
    let new_identity = dir.path().join("new-identity.txt");
    let new = Secrets::generate();
    new.write_identity(&new_identity).unwrap();
    let args = ["rekey", "--new-identity", new_identity.to_str().unwrap()];
    let tsig = dir.path().join("tsig.txt");
    std::fs::write(&tsig, "c2VjcmV0LXRzaWcta2V5LWJ5dGVzLTAxMjM0NTY3\n").unwrap();
    let import = [
        "dns-key",
        "import",
        "--key-name",
        "certkeep.",
        "--secret-file",
        tsig.to_str().unwrap(),
    ];
    for command in [&args[..], &["migrate"], &import] {
        let refused = certkeep(dir.path(), command);
        assert!(!refused.status.success(), "{command:?}");
        let stderr = text(&refused.stderr);
        assert!(
            stderr.contains("another certkeep process") && stderr.contains("stop it first"),
            "{command:?}: {stderr}"
        );
    }
    let ended = server.terminate();
    assert!(ended.status.success(), "{}", ended.log);
    let done = certkeep(dir.path(), &args);
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert!(
        text(&done.stdout).contains("re-encrypted"),
        "{}",
        text(&done.stdout)
    );
    // A secret is never sealed to the identity the rekey retired.
    let stale = certkeep(dir.path(), &import);
    assert!(!stale.status.success());
    assert!(
        text(&stale.stderr).contains("does not open this database's secrets"),
        "{}",
        text(&stale.stderr)
    );
    let stored = certkeep_with(
        dir.path(),
        &import,
        &[("CERTKEEP_AGE_IDENTITY_FILE", new_identity.to_str().unwrap())],
    );
    assert!(stored.status.success(), "{}", text(&stored.stderr));
}

/// Waits (bounded) until `check` holds.
async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prepares a data directory as a first start would, with a registered account on `proxy` and
/// one queued order; returns the certificate. Nothing of it stays open.
async fn prepare(data_dir: &std::path::Path, pebble: &Pebble, proxy: &Proxy) -> CertificateId {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    let now = certkeep_server::now();
    let state = certkeep_server::bootstrap::prepare(config, now)
        .await
        .unwrap();
    let key = &pebble.eab[0];
    let account = state
        .db
        .insert_account(
            &state.secrets,
            &NewAccount {
                name: "acme",
                directory_url: &proxy.directory_url,
                contact: &[],
                allowed_domains: &["*.example.test".into()],
                eab_kid: Some(&key.kid),
                eab_hmac: Some(&key.hmac),
                extra_roots_pem: Some(&pebble.pki.ca_pem),
            },
            now,
        )
        .await
        .unwrap();
    certkeep_server::engine::register_account(&state, account.id)
        .await
        .unwrap();
    let cert = state
        .db
        .insert_certificate(
            &NewCertificate {
                name: "crash",
                dns_names: &["crash.example.test".into()],
                key_type: KeyType::EcdsaP256,
                account_id: account.id,
                policy: RenewalPolicy::default(),
                created_by: Some("test"),
            },
            now,
        )
        .await
        .unwrap();
    state
        .db
        .enqueue_order(
            cert.id,
            account.id,
            OrderReason::New,
            now + time::Duration::minutes(10),
            now,
        )
        .await
        .unwrap();
    state.db.close().await;
    cert.id
}

#[tokio::test]
async fn a_server_killed_while_the_ca_is_processing_resumes_within_seconds_of_restart() {
    let Some(pebble) = Pebble::start(PebbleOptions::fresh_authorizations()).await else {
        return;
    };
    let proxy = Proxy::start(&pebble.pki, pebble.port).await;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let data = dir.path().join("certkeep-data");
    let cert = prepare(&data, &pebble, &proxy).await;
    // Default engine settings (lease_secs among them); http-01 answers are recorded for a
    // responder and Pebble accepts every challenge.
    let env = [(
        "CERTKEEP_SOLVERS__HTTP01__PATTERNS",
        r#"["*.example.test"]"#,
    )];
    // After finalize the CA keeps answering `processing`, Retry-After 1 s.
    proxy.add(Kind::Order, None, still_processing(1));

    let mut first = ServerProcess::start_in(dir.clone(), &env).unwrap();
    let long = Duration::from_secs(60);
    proxy.wait_seen(Kind::Finalize, 1, long).await;
    let polls = proxy.seen(Kind::Order);
    proxy.wait_seen(Kind::Order, polls + 1, long).await;
    first.kill();

    let restarted = Instant::now();
    let second = ServerProcess::start_in(dir.clone(), &env).unwrap();
    let mut resumed = None;
    wait_for(
        "the restarted server's next CA request for the order",
        long,
        async || {
            resumed = proxy.first_seen_after(Kind::Order, restarted);
            resumed.is_some()
        },
    )
    .await;
    let waited = resumed.unwrap() - restarted;
    assert!(
        waited <= Duration::from_secs(5),
        "the order resumed {waited:?} after the restart"
    );

    proxy.clear();
    let db = Db::open_sqlite(&data.join("certkeep.db")).await.unwrap();
    wait_for("the certificate to be stored", long, async || {
        !db.versions(cert).await.unwrap().is_empty()
    })
    .await;
    assert_eq!(db.versions(cert).await.unwrap().len(), 1);
    assert_eq!(db.orders_for(cert).await.unwrap().len(), 1);
    assert_eq!(proxy.forwarded(Kind::NewOrder), 1, "one order placed");
    assert_eq!(
        proxy.forwarded(Kind::Finalize),
        1,
        "one finalize reached the CA"
    );
    db.close().await;
    drop(second);
}
