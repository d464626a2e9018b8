//! Lifecycle against Pebble: the domain-validation ledger, and ACME Renewal Information polled
//! continuously through the proxy's `renewalInfo` endpoint (Debian's Pebble 2.4 has none),
//! certificate edits, revocations found in a CRL served by the test, and moves between two
//! Pebble accounts.

use std::time::{Duration, Instant};

use certkeep_api_types::enums::MoveState;
use certkeep_server::db::agents::NewAgent;
use certkeep_server::db::deployments::NewDeployment;
use certkeep_server::db::lifecycle::DomainFilter;
use certkeep_server::db::moves::NewMove;
use certkeep_server::db::versions::NewVersion;
use certkeep_server::model::{DeploymentStatus, KeyType, OrderReason, PfxEncryption, VersionId};
use certkeep_server::testkit::CrlCa;
use certkeep_testsupport::pebble::PebbleOptions;
use certkeep_testsupport::proxy::{Kind, RenewalInfo};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::{
    Env, LONG, certificate, enqueue, history, register, wait_until, wait_versions,
};

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// Whole seconds (what the CA's window says and what is stored).
fn whole(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap()
}

/// A CA that advertises `renewalInfo` but drops `replaces` from its orders (instant-acme
/// refuses such an order) gets the renewal ordered again without it, not retried for ever.
#[tokio::test]
async fn a_ca_that_drops_replaces_still_gets_the_renewal() {
    let Some(env) = Env::start(PebbleOptions::default(), |c| {
        c.lifecycle.ari_min_poll_secs = 1;
    })
    .await
    else {
        return;
    };
    let serve = |start: OffsetDateTime, end: OffsetDateTime| {
        env.proxy.serve_renewal_info(Some(RenewalInfo {
            start: rfc3339(start),
            end: rfc3339(end),
            retry_after_secs: 1,
            reflect_replaces: false,
        }));
    };
    let now = whole(certkeep_server::now());
    serve(
        now + time::Duration::days(20),
        now + time::Duration::days(21),
    );
    let account = env.account().await;
    let cert = certificate(
        &env.state,
        &account,
        "drops",
        &["drops.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    let v1 = wait_versions(&env.state, cert.id, 1, LONG).await.remove(0);
    wait_until("the past window to be over", LONG, || async {
        (certkeep_server::now() > v1.not_before + time::Duration::seconds(2)).then_some(())
    })
    .await;
    serve(v1.not_before, v1.not_before + time::Duration::seconds(1));
    wait_versions(&env.state, cert.id, 2, LONG).await;
    engine.stop().await;
    let replaces = env.proxy.replaces();
    assert_eq!(replaces.len(), 3, "{replaces:?}");
    assert!(
        replaces[1].is_some(),
        "asked with replaces first: {replaces:?}"
    );
    assert_eq!(replaces[2], None, "then without: {replaces:?}");
}

/// The validations an order's authorizations carried land in the ledger with their
/// `expires`, per account and name, and come back through the API's listing filter.
#[tokio::test]
async fn an_orders_authorization_expiry_lands_in_the_ledger() {
    let Some(env) = Env::start(PebbleOptions::fresh_authorizations(), |_| {}).await else {
        return;
    };
    let account = env.account().await;
    let before = whole(certkeep_server::now());
    let cert = certificate(
        &env.state,
        &account,
        "ledger",
        &["ledger.example.test", "www.ledger.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    wait_versions(&env.state, cert.id, 1, LONG).await;
    engine.stop().await;
    let ledger = env
        .state
        .db
        .domain_validations(&DomainFilter {
            limit: 100,
            ..DomainFilter::default()
        })
        .await
        .unwrap();
    let mut names: Vec<&str> = ledger.iter().map(|d| d.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["ledger.example.test", "www.ledger.example.test"]);
    for d in &ledger {
        assert_eq!(d.account_id, account.id);
        assert!(d.last_valid_at >= before, "{d:?}");
        assert!(
            d.expires_at > certkeep_server::now(),
            "a fresh validation lapses in the future: {d:?}"
        );
    }
    // `--lapsing-within` a span longer than Pebble's authorization lifetime lists them all;
    // one that ended already lists none.
    let within = |span: time::Duration| DomainFilter {
        lapsing_before: Some(certkeep_server::now() + span),
        limit: 100,
        ..DomainFilter::default()
    };
    let all = env
        .state
        .db
        .domain_validations(&within(time::Duration::days(3650)))
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let none = env
        .state
        .db
        .domain_validations(&within(-time::Duration::days(1)))
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
}

/// The renewal time follows the CA's window as it changes, an absurd `Retry-After` is
/// clamped to `ari_max_poll_secs`, and a window in the past orders the renewal (with
/// `replaces`) in the same scan that read it.
#[tokio::test]
async fn renewal_follows_the_ari_window_and_a_past_window_renews_at_once() {
    let Some(env) = Env::start(PebbleOptions::default(), |c| {
        c.lifecycle.ari_min_poll_secs = 1;
        c.lifecycle.ari_max_poll_secs = 3;
    })
    .await
    else {
        return;
    };
    let serve = |start: OffsetDateTime, end: OffsetDateTime, retry_after_secs: u64| {
        env.proxy.serve_renewal_info(Some(RenewalInfo {
            start: rfc3339(start),
            end: rfc3339(end),
            retry_after_secs,
            reflect_replaces: true,
        }));
    };
    let now = whole(certkeep_server::now());
    let first = (
        now + time::Duration::days(20),
        now + time::Duration::days(21),
    );
    serve(first.0, first.1, 1);
    let account = env.account().await;
    let cert = certificate(
        &env.state,
        &account,
        "ari",
        &["ari.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    let v1 = wait_versions(&env.state, cert.id, 1, LONG).await.remove(0);
    let db = &env.state.db;
    let renew_after = || async { db.certificate(cert.id).await.unwrap().renew_after.unwrap() };

    // The window in the future: the renewal time lies inside it.
    wait_until("the first ARI poll", LONG, || async {
        db.ari_poll(v1.id)
            .await
            .unwrap()
            .filter(|p| p.window == Some(first))
    })
    .await;
    let at = renew_after().await;
    assert!(first.0 <= at && at <= first.1, "{at} outside {first:?}");

    // The window moves (with an absurd Retry-After): picked again inside the new window, and
    // the next poll is due after ari_max_poll_secs, not in 30 years.
    let second = (
        now + time::Duration::days(10),
        now + time::Duration::days(11),
    );
    serve(second.0, second.1, 1_000_000_000);
    let poll = wait_until("the moved window", LONG, || async {
        db.ari_poll(v1.id)
            .await
            .unwrap()
            .filter(|p| p.window == Some(second))
    })
    .await;
    assert_eq!(
        poll.next_poll_at - poll.polled_at,
        time::Duration::seconds(3)
    );
    let at = renew_after().await;
    assert!(second.0 <= at && at <= second.1, "{at} outside {second:?}");

    // The window moves into the past (after this version began): renewed at once, replacing
    // the version the CA was asked about.
    let past = (v1.not_before, v1.not_before + time::Duration::seconds(1));
    wait_until("the past window to be over", LONG, || async {
        (certkeep_server::now() > past.1 + time::Duration::seconds(1)).then_some(())
    })
    .await;
    let t0 = Instant::now();
    serve(past.0, past.1, 1);
    let v2 = wait_versions(&env.state, cert.id, 2, LONG).await.remove(0);
    engine.stop().await;
    assert_ne!(v2.id, v1.id);
    let orders = db.orders_for(cert.id).await.unwrap();
    assert_eq!(orders[0].reason, OrderReason::Renewal, "{orders:?}");
    let asked = env.proxy.renewal_info_asked();
    let replaces = env.proxy.replaces();
    assert_eq!(replaces.len(), 2, "{replaces:?}");
    assert_eq!(replaces[0], None, "a first order replaces nothing");
    assert_eq!(
        replaces[1].as_deref(),
        asked.first().map(String::as_str),
        "the renewal replaces the certificate ARI was asked about"
    );
    // Ordered in the scan that read the past window: no second poll in between.
    let saw_past = env
        .proxy
        .first_seen_after(Kind::RenewalInfo, t0)
        .expect("the past window was read");
    let ordered = env
        .proxy
        .first_seen_after(Kind::NewOrder, t0)
        .expect("the renewal was ordered");
    if let Some(next_poll) = env.proxy.first_seen_after(Kind::RenewalInfo, saw_past) {
        assert!(
            ordered < next_poll,
            "the renewal waited for another poll ({:?} after the past window was read)",
            ordered - saw_past
        );
    }
    assert!(ordered - saw_past < Duration::from_secs(5));
}

/// An edit is issued through a new order: an added name is in the new version, which reuses
/// the key when asked to; a new key type gets a new key. The old version stays current until
/// the new one is issued.
#[tokio::test]
async fn an_edit_issues_a_new_version_with_the_added_name() {
    let Some((env, account)) = Env::with_account().await else {
        return;
    };
    let cert = certificate(
        &env.state,
        &account,
        "edit",
        &["edit.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    let v1 = wait_versions(&env.state, cert.id, 1, LONG).await.remove(0);
    let db = &env.state.db;
    let secrets = &env.state.secrets;
    let state = &env.state;
    let account = &account;
    let edit = async |names: &[&str], key_type: KeyType| {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        db.edit_certificate(cert.id, &names, key_type, true, certkeep_server::now())
            .await
            .unwrap();
        let cert = db.certificate(cert.id).await.unwrap();
        enqueue(state, &cert, account, OrderReason::Manual).await;
    };
    edit(
        &["edit.example.test", "api.edit.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let v2 = wait_versions(&env.state, cert.id, 2, LONG).await.remove(0);
    assert_eq!(v2.dns_names, ["edit.example.test", "api.edit.example.test"]);
    assert_eq!(
        *db.version_key(secrets, v2.id).await.unwrap(),
        *db.version_key(secrets, v1.id).await.unwrap(),
        "the key was reused"
    );
    assert_eq!(
        db.certificate(cert.id).await.unwrap().current_version_id,
        Some(v2.id)
    );

    edit(&["edit.example.test"], KeyType::EcdsaP384).await;
    let v3 = wait_versions(&env.state, cert.id, 3, LONG).await.remove(0);
    engine.stop().await;
    assert_eq!(v3.dns_names, ["edit.example.test"]);
    assert_ne!(
        *db.version_key(secrets, v3.id).await.unwrap(),
        *db.version_key(secrets, v2.id).await.unwrap(),
        "a new key type needs a new key"
    );
    let events = history(&env.state, cert.id).await;
    assert!(
        events
            .iter()
            .any(|e| e.contains("key (current version's) and CSR stored")),
        "{events:?}"
    );
}

/// A one-route HTTP server on loopback answering every request with the current `body` (a
/// CA's CRL distribution point); counts the requests.
struct CrlServer {
    url: String,
    body: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CrlServer {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ca.crl", listener.local_addr().unwrap());
        let body = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (serving, counting) = (body.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let crl = serving.lock().unwrap().clone();
                let mut rsp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    crl.len()
                )
                .into_bytes();
                rsp.extend(crl);
                let _ = tcp.write_all(&rsp).await;
            }
        });
        Self {
            url,
            body,
            hits,
            task,
        }
    }

    fn serve(&self, crl: Vec<u8>) {
        *self.body.lock().unwrap() = crl;
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A revocation done outside certkeep is found in the leaf's CRL (signed by the issuer in the
/// stored chain) and healed: re-issued at once under a new key, the history saying `detected:
/// outside` with the reason. A CRL with a bad signature listing the serial is not trusted.
#[tokio::test]
async fn a_revocation_found_in_the_crl_is_reissued_under_a_new_key() {
    let Some(env) = Env::start(PebbleOptions::default(), |c| {
        c.lifecycle.crl_check_interval_secs = 1;
    })
    .await
    else {
        return;
    };
    let account = env.account().await;
    let cert = certificate(
        &env.state,
        &account,
        "crl",
        &["crl.example.test"],
        KeyType::EcdsaP256,
    )
    .await;
    let engine = env.engine();
    wait_versions(&env.state, cert.id, 1, LONG).await;
    let db = &env.state.db;

    // The current version comes from a CA whose leaves name a CRL served here.
    let crls = CrlServer::start().await;
    let ca = CrlCa::new("certkeep outside-revocation test CA");
    let (leaf, key) = ca.leaf(&["crl.example.test"], 0x4242, &crls.url);
    let chain = format!(
        "{}{}",
        certkeep_api_types::pem::encode("CERTIFICATE", &leaf),
        certkeep_api_types::pem::encode("CERTIFICATE", &ca.der)
    );
    let info = certkeep_server::domain::issuance::parse_chain(&chain).unwrap();
    let now = certkeep_server::now();
    let bought = db
        .insert_version(
            &env.state.secrets,
            &NewVersion {
                id: VersionId::new(),
                certificate_id: cert.id,
                order_id: None,
                chain_pem: &chain,
                key_pkcs8_der: &key.serialize_der(),
                serial: &info.serial,
                thumbprint: &info.thumbprint,
                dns_names: &info.dns_names,
                not_before: info.not_before,
                not_after: info.not_after,
            },
            now,
        )
        .await
        .unwrap();

    // Listed, but signed by an impostor with the issuer's name: ignored.
    crls.serve(
        CrlCa::new("certkeep outside-revocation test CA").crl(&[0x4242], certkeep_server::now()),
    );
    wait_until("two CRL checks", LONG, || async {
        (crls.hits() >= 2).then_some(())
    })
    .await;
    let checked = wait_until("a recorded check", LONG, || async {
        db.revocation_checked_at(bought.id).await.unwrap()
    })
    .await;
    assert!(checked > now);
    assert_eq!(db.version(bought.id).await.unwrap().revoked_at, None);
    assert_eq!(
        db.certificate(cert.id).await.unwrap().current_version_id,
        Some(bought.id)
    );

    // Listed by the issuer itself: revoked with its reason, re-issued under a new key.
    crls.serve(ca.crl(&[7, 0x4242], certkeep_server::now()));
    let reissued = wait_versions(&env.state, cert.id, 3, LONG).await.remove(0);
    engine.stop().await;
    let revoked = db.version(bought.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(revoked.revocation_reason, Some(1), "key compromise");
    assert_ne!(
        *db.version_key(&env.state.secrets, reissued.id)
            .await
            .unwrap(),
        key.serialize_der(),
        "a new key"
    );
    let orders = db.orders_for(cert.id).await.unwrap();
    assert_eq!(orders[0].reason, OrderReason::Reissue);
    let events = history(&env.state, cert.id).await;
    assert!(
        events.iter().any(|e| e.starts_with("revoked:")
            && e.contains("reason 1")
            && e.contains("detected: outside")),
        "{events:?}"
    );
}

/// A real move between two Pebble accounts, crashed as it starts and resumed: every certificate
/// is issued under the target account with one order (the old version current until then),
/// belongs to it afterwards, and its old version is revoked (`superseded`) only once the
/// assigned agent reported the new thumbprint.
#[tokio::test]
async fn a_move_issues_under_the_target_and_revokes_after_the_agent_reported() {
    let Some(env) = Env::start(PebbleOptions::default(), |c| {
        c.lifecycle.move_orders_per_minute = 100;
    })
    .await
    else {
        return;
    };
    let from = env.account().await;
    let to = register(
        &env.state,
        "certinext",
        &env.proxy.directory_url,
        &env.pebble,
        1,
        &["*.example.test"],
    )
    .await;
    let db = &env.state.db;
    let mut certs = Vec::new();
    for name in ["m1", "m2", "m3"] {
        certs.push(
            certificate(
                &env.state,
                &from,
                name,
                &[&format!("{name}.example.test")],
                KeyType::EcdsaP256,
            )
            .await,
        );
    }
    let engine = env.engine();
    let mut old = Vec::new();
    for c in &certs {
        old.push(wait_versions(&env.state, c.id, 1, LONG).await.remove(0));
    }
    // One agent holds m1.
    let agent = db
        .insert_agent(
            &env.state.secrets,
            &NewAgent {
                name: "web1",
                join_token_hash: &[1; 32],
                join_token_expires_at: certkeep_server::now() + time::Duration::hours(1),
                ccs_password: "pw",
                pfx_mode: PfxEncryption::Legacy,
            },
            certkeep_server::now(),
        )
        .await
        .unwrap();
    db.activate_agent(
        agent.id,
        "01",
        certkeep_server::now() + time::Duration::days(30),
        certkeep_server::now(),
    )
    .await
    .unwrap();
    db.assign_certificate(agent.id, certs[0].id, certkeep_server::now())
        .await
        .unwrap();

    let moves: Vec<NewMove> = certs
        .iter()
        .zip(&old)
        .map(|(c, v)| NewMove {
            certificate_id: c.id,
            from_account_id: from.id,
            old_version_id: Some(v.id),
        })
        .collect();
    db.queue_moves(&moves, to.id, true, certkeep_server::now())
        .await
        .unwrap();
    env.state.wake.notify_one();
    let state_of = |id| async move {
        db.moves(10)
            .await
            .unwrap()
            .into_iter()
            .find(|m| m.certificate_id == id)
            .unwrap()
    };
    // A crash as soon as the first move is ordering; a new engine carries on.
    wait_until("a move to start", LONG, || async {
        let moves = db.moves(10).await.unwrap();
        moves
            .iter()
            .any(|m| m.state != MoveState::Queued)
            .then_some(())
    })
    .await;
    engine.crash().await;
    let engine = env.engine();
    for (c, v) in certs.iter().zip(&old).skip(1) {
        wait_until(
            "the move of an unassigned certificate to finish",
            LONG,
            || async { (state_of(c.id).await.state == MoveState::Done).then_some(()) },
        )
        .await;
        assert_eq!(db.version(v.id).await.unwrap().revocation_reason, Some(4));
    }
    // m1: issued under the target, but its old version waits for the agent.
    let issued = wait_until("m1 issued", LONG, || async {
        let m = state_of(certs[0].id).await;
        (m.state == MoveState::Issued).then_some(m)
    })
    .await;
    assert_eq!(db.version(old[0].id).await.unwrap().revoked_at, None);
    let new = db.version(issued.new_version_id.unwrap()).await.unwrap();
    db.record_deployments(
        agent.id,
        &[NewDeployment {
            certificate_id: certs[0].id,
            target: "ccs",
            file_name: "m1.example.test.pfx",
            thumbprint: Some(&new.thumbprint),
            status: DeploymentStatus::Installed,
            error: None,
        }],
        &[],
        &[],
        certkeep_server::now(),
    )
    .await
    .unwrap();
    wait_until("m1's move to finish", LONG, || async {
        (state_of(certs[0].id).await.state == MoveState::Done).then_some(())
    })
    .await;
    engine.stop().await;
    assert_eq!(
        db.version(old[0].id).await.unwrap().revocation_reason,
        Some(4)
    );
    for c in &certs {
        let now = db.certificate(c.id).await.unwrap();
        assert_eq!(now.account_id, to.id, "{} belongs to the target", c.name);
        let orders = db.orders_for(c.id).await.unwrap();
        assert_eq!(orders.len(), 2, "one order per move: {orders:?}");
        assert_eq!(orders[0].account_id, to.id);
        assert_eq!(db.versions(c.id).await.unwrap().len(), 2);
    }
}
