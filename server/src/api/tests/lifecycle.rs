//! Lifecycle endpoints: `/api/v1/domains` (the domain-validation ledger) and certificate edits.

use base64::Engine as _;
use certkeep_api_types::pfx::testing::{KeyKind, TestCa, TestLeaf};
use serde_json::json;
use time::Duration;

use super::ADMIN;
use super::testapp::TestApp;
use crate::model::Scope;

backends!(domains_list_soonest_lapse_first_filtered_and_scoped);
async fn domains_list_soonest_lapse_first_filtered_and_scoped(app: TestApp) {
    let account = app.account("acme").await;
    let now = crate::now().replace_nanosecond(0).unwrap();
    app.state
        .db
        .record_domain_validations(
            account.id,
            &[
                ("www.example.com".into(), now + Duration::days(200)),
                ("api.example.com".into(), now + Duration::days(12)),
                ("*.other.example".into(), now + Duration::days(5)),
            ],
            now,
        )
        .await
        .unwrap();
    let admin = app.token(ADMIN, &[]).await;
    let all = app
        .call("GET", "/api/v1/domains", Some(&admin), None)
        .await
        .json();
    let names: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["*.other.example", "api.example.com", "www.example.com"],
        "{}",
        app.backend
    );
    assert_eq!(all["items"][0]["account"], "acme");
    let lapsing = app
        .call(
            "GET",
            "/api/v1/domains?lapsing_within=30d&account=acme",
            Some(&admin),
            None,
        )
        .await
        .json();
    assert_eq!(lapsing["items"].as_array().unwrap().len(), 2);
    let expires = time::OffsetDateTime::parse(
        lapsing["items"][1]["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires, now + Duration::days(12));

    // An issuer sees only the names within its patterns.
    let issuer = app.token(&[Scope::Issuer], &["*.example.com"]).await;
    let seen = app
        .call("GET", "/api/v1/domains", Some(&issuer), None)
        .await
        .json();
    assert_eq!(seen["items"].as_array().unwrap().len(), 2, "{seen}");

    for bad in [
        "/api/v1/domains?lapsing_within=soon",
        "/api/v1/domains?account=nope",
        "/api/v1/domains?limit=0",
    ] {
        let r = app.call("GET", bad, Some(&admin), None).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.json());
    }
}

backends!(an_edit_is_checked_as_on_create_and_issued_through_a_new_order);
async fn an_edit_is_checked_as_on_create_and_issued_through_a_new_order(app: TestApp) {
    let account = app.account("acme").await;
    let cert = app.certificate(&account, "www", &["www.example.com"]).await;
    let (v1, _) = app.issue(&cert, 90).await;
    let admin = app.token(ADMIN, &[]).await;
    let edit = |body: serde_json::Value| {
        app.call(
            "PATCH",
            "/api/v1/certificates/www",
            Some(&admin),
            Some(body),
        )
    };
    for (body, field) in [
        (
            json!({"add_dns_names": ["www.elsewhere.org"]}),
            "add_dns_names",
        ),
        (
            json!({"add_dns_names": ["WWW.example.com"]}),
            "add_dns_names",
        ),
        (
            json!({"remove_dns_names": ["api.example.com"]}),
            "remove_dns_names",
        ),
        (
            json!({"remove_dns_names": ["www.example.com"]}),
            "add_dns_names",
        ),
        (json!({"add_dns_names": ["10.0.0.1"]}), "add_dns_names"),
        (json!({}), "add_dns_names"),
        (json!({"key_type": "ecdsa-p521"}), "key_type"),
    ] {
        let r = edit(body.clone()).await;
        assert_eq!(r.status, 422, "{}: {body}: {}", app.backend, r.json());
        assert_eq!(r.json()["field"], field, "{body}: {}", r.json());
    }
    // An issuer may not add a name outside its own patterns, even one the account allows.
    let issuer = app.token(&[Scope::Issuer], &["www.example.com"]).await;
    let r = app
        .call(
            "PATCH",
            "/api/v1/certificates/www",
            Some(&issuer),
            Some(json!({"add_dns_names": ["api.example.com"]})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.json());
    assert!(app.state.db.active_order(cert.id).await.unwrap().is_none());

    // Toggling key reuse alone orders nothing.
    let r = edit(json!({"reuse_key": true})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["reuse_key"], true);
    assert!(app.state.db.active_order(cert.id).await.unwrap().is_none());

    // Adding a name: stored, ordered, the old version still current.
    let r = edit(json!({"add_dns_names": ["api.example.com"], "key_type": "ECDSA-P384"})).await;
    assert_eq!(r.status, 202, "{}", r.json());
    let body = r.json();
    assert_eq!(
        body["dns_names"],
        json!(["www.example.com", "api.example.com"])
    );
    assert_eq!(body["key_type"], "ecdsa-p384");
    assert_eq!(body["current_version"]["id"], v1.id.to_string());
    let order = app.state.db.active_order(cert.id).await.unwrap().unwrap();
    assert_eq!(order.reason, crate::model::OrderReason::Manual);
    // While it is in flight, another edit waits.
    let r = edit(json!({"remove_dns_names": ["api.example.com"]})).await;
    assert_eq!(r.status, 409, "{}", r.json());
    let audit = app
        .call(
            "GET",
            "/api/v1/audit-events?action=certificate.edit",
            Some(&admin),
            None,
        )
        .await
        .json();
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
}

/// A PEM import for `cert`'s names from `leaf`.
fn pem_import(name: &str, leaf: &TestLeaf, key: &[u8]) -> serde_json::Value {
    let chain: String = leaf
        .chain_der
        .iter()
        .map(|d| certkeep_api_types::pem::encode("CERTIFICATE", d))
        .collect();
    json!({
        "name": name,
        "account": "acme",
        "chain_pem": chain,
        "key_pem": certkeep_api_types::pem::encode("PRIVATE KEY", key),
    })
}

backends!(imports_pem_and_pfx_are_checked_sealed_audited_and_renewable);
async fn imports_pem_and_pfx_are_checked_sealed_audited_and_renewable(app: TestApp) {
    app.account("acme").await;
    let admin = app.token(ADMIN, &[]).await;
    let ca = TestCa::new();
    let leaf = ca.leaf(&["www.example.com", "example.com"], KeyKind::Ecdsa);
    let import = |body: serde_json::Value| {
        app.call(
            "POST",
            "/api/v1/certificates/import",
            Some(&admin),
            Some(body),
        )
    };

    // Refused: a key of another leaf, a chain without its issuer, names outside the
    // account's patterns, a wrong PFX password, nothing to import.
    let other = ca.leaf(&["www.example.com"], KeyKind::Ecdsa);
    let outside = ca.leaf(&["www.elsewhere.org"], KeyKind::Ecdsa);
    let mut no_issuer = pem_import("a", &leaf, &leaf.key_pkcs8_der);
    no_issuer["chain_pem"] =
        certkeep_api_types::pem::encode("CERTIFICATE", &leaf.chain_der[0]).into();
    let pfx = certkeep_api_types::pfx::build_pfx(
        &leaf.key_pkcs8_der,
        &leaf.chain_der,
        "secret-pw",
        crate::model::PfxEncryption::Aes256,
    )
    .unwrap();
    let pfx_b64 = base64::engine::general_purpose::STANDARD.encode(&pfx);
    for (body, field, says) in [
        (
            pem_import("a", &leaf, &other.key_pkcs8_der),
            "chain_pem",
            "does not belong",
        ),
        (no_issuer, "chain_pem", "only the leaf"),
        (
            pem_import("a", &outside, &outside.key_pkcs8_der),
            "chain_pem",
            "outside account",
        ),
        (
            json!({"name": "a", "account": "acme", "pfx_base64": pfx_b64, "pfx_password": "wrong"}),
            "pfx_base64",
            "password",
        ),
        (json!({"name": "a", "account": "acme"}), "chain_pem", "give"),
    ] {
        let r = import(body).await;
        assert_eq!(r.status, 422, "{}: {}", app.backend, r.json());
        assert_eq!(r.json()["field"], field, "{}", r.json());
        assert!(
            r.json()["detail"].as_str().unwrap().contains(says),
            "{}",
            r.json()
        );
    }

    // PEM: stored valid and current, renewable, key sealed (absent from the database file).
    let r = import(pem_import("www", &leaf, &leaf.key_pkcs8_der)).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let body = r.json();
    assert_eq!(body["state"], "valid");
    assert_eq!(body["key_type"], "ecdsa-p256");
    assert_eq!(body["dns_names"], json!(["www.example.com", "example.com"]));
    assert_eq!(
        body["current_version"]["thumbprint"],
        certkeep_api_types::pfx::thumbprint(&leaf.chain_der[0])
    );
    assert!(body["renew_after"].is_string());
    let cert = app.state.db.certificate_by_name("www").await.unwrap();
    let key = app
        .state
        .db
        .version_key(&app.state.secrets, cert.current_version_id.unwrap())
        .await
        .unwrap();
    assert_eq!(*key, leaf.key_pkcs8_der);
    let tail = &leaf.key_pkcs8_der[leaf.key_pkcs8_der.len() - 32..];
    assert!(
        !app.test_db.raw_contents().windows(32).any(|w| w == tail),
        "{}: the imported key is readable at rest",
        app.backend
    );
    let r = import(pem_import("www", &leaf, &leaf.key_pkcs8_der)).await;
    assert_eq!(r.status, 409, "{}", r.json());

    // PFX.
    let r = import(json!({"name": "www-pfx", "account": "acme", "pfx_base64": pfx_b64, "pfx_password": "secret-pw"})).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let audit = app
        .call(
            "GET",
            "/api/v1/audit-events?action=certificate.import",
            Some(&admin),
            None,
        )
        .await
        .json();
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{audit}");
    assert!(!audit.to_string().contains("PRIVATE KEY"));
}

backends!(an_expired_certificate_is_not_imported);
async fn an_expired_certificate_is_not_imported(app: TestApp) {
    app.account("acme").await;
    let admin = app.token(ADMIN, &[]).await;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params = rcgen::CertificateParams::new(vec!["old.example.com".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = params.signed_by(&key, &issuer).unwrap();
    let body = json!({
        "name": "old",
        "account": "acme",
        "chain_pem": format!("{}{}", leaf.pem(), ca_cert.pem()),
        "key_pem": key.serialize_pem(),
    });
    let r = app
        .call(
            "POST",
            "/api/v1/certificates/import",
            Some(&admin),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.json());
    assert!(
        r.json()["detail"].as_str().unwrap().contains("expired"),
        "{}",
        r.json()
    );
}

/// What a move may change, read back: certificates, their orders, moves and the audit log.
async fn move_state(app: &TestApp) -> String {
    let db = &app.state.db;
    let certs = db
        .list_certificates(&crate::db::certificates::CertificateFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = format!("{certs:?}");
    for c in &certs {
        out.push_str(&format!("{:?}", db.orders_for(c.id).await.unwrap()));
    }
    out.push_str(&format!("{:?}", db.moves(100).await.unwrap()));
    let audit = db
        .list_audit(&crate::db::audit::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    out.push_str(&format!("{}", audit.len()));
    out
}

backends!(a_move_plan_changes_nothing_and_a_real_move_is_queued_once);
async fn a_move_plan_changes_nothing_and_a_real_move_is_queued_once(app: TestApp) {
    let old = app.account("old-ca").await;
    let new = app.account("new-ca").await;
    let narrow = app.account("narrow").await;
    app.state
        .db
        .execute_raw("UPDATE acme_accounts SET allowed_domains = '[\"www.example.com\"]' WHERE name = 'narrow'")
        .await
        .unwrap();
    let www = app.certificate(&old, "www", &["www.example.com"]).await;
    let api = app.certificate(&old, "api", &["api.example.com"]).await;
    app.issue(&www, 60).await;
    app.issue(&api, 30).await;
    let admin = app.token(ADMIN, &[]).await;
    let post =
        |body: serde_json::Value| app.call("POST", "/api/v1/moves", Some(&admin), Some(body));

    let before = move_state(&app).await;
    let r = post(json!({"from_account": "old-ca", "to_account": "narrow", "dry_run": true})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let plan = r.json();
    // Soonest expiry first; `api` is outside the narrow account's patterns.
    assert_eq!(plan["items"][0]["certificate"], "api");
    assert_eq!(plan["items"][0]["position"], 1);
    assert_eq!(plan["items"][0]["allowed"], false);
    assert_eq!(plan["items"][0]["outside"], "api.example.com");
    assert_eq!(plan["items"][1]["certificate"], "www");
    assert_eq!(plan["items"][1]["allowed"], true);
    assert_eq!(
        move_state(&app).await,
        before,
        "{}: a dry run changes nothing",
        app.backend
    );

    let r = post(json!({"from_account": "old-ca", "to_account": "narrow"})).await;
    assert_eq!(r.status, 422, "{}", r.json());
    assert_eq!(move_state(&app).await, before);
    for bad in [
        json!({"to_account": "new-ca"}),
        json!({"certificates": ["www"], "from_account": "old-ca", "to_account": "new-ca"}),
        json!({"certificates": ["nope"], "to_account": "new-ca"}),
        json!({"certificates": ["www"], "to_account": "nope"}),
        json!({"certificates": ["www"], "to_account": "old-ca"}),
    ] {
        let r = post(bad.clone()).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.json());
    }

    let r =
        post(json!({"from_account": "old-ca", "to_account": "new-ca", "revoke_old": true})).await;
    assert_eq!(r.status, 202, "{}", r.json());
    let moves = app.state.db.moves(10).await.unwrap();
    assert_eq!(moves.len(), 2);
    assert!(
        moves
            .iter()
            .all(|m| m.state == certkeep_api_types::enums::MoveState::Queued
                && m.to_account_id == new.id
                && m.from_account_id == old.id
                && m.revoke_old
                && m.old_version_id.is_some())
    );
    let r = post(json!({"certificates": ["www"], "to_account": "new-ca"})).await;
    assert_eq!(r.status, 409, "{}: already moving", r.json());
    let listed = app
        .call("GET", "/api/v1/moves", Some(&admin), None)
        .await
        .json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert_eq!(listed["items"][0]["state"], "queued");
    let _ = narrow;
}
