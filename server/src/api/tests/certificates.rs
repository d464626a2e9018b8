//! `/api/v1/certificates`: lifecycle, issuer domain limits, key downloads.

use axum::http::{StatusCode, header};
use certkeep_api_types::pfx::open_pfx;
use serde_json::{Value, json};

use super::ADMIN;
use super::testapp::TestApp;
use crate::model::Scope;

backends!(certificates_lifecycle);
async fn certificates_lifecycle(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let acc = app.account("acme").await;
    let r = app
        .call("POST", "/api/v1/certificates", Some(&admin), Some(json!({
            "name": "www", "dns_names": ["WWW.example.com", "bücher.example.com"], "account": "acme", "key_type": "rsa3072",
        })))
        .await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "{}: {}",
        app.backend,
        r.json()
    );
    let c = r.json();
    assert_eq!(c["state"], "pending");
    assert_eq!(
        c["dns_names"],
        json!(["www.example.com", "xn--bcher-kva.example.com"])
    );
    assert_eq!(c["display_names"][1], "bücher.example.com");
    let id = c["id"].as_str().unwrap().to_owned();
    // Ordered at once: one queued order.
    let detail = app
        .call("GET", "/api/v1/certificates/www", Some(&admin), None)
        .await
        .json();
    assert_eq!(detail["orders"].as_array().unwrap().len(), 1);
    assert_eq!(detail["orders"][0]["state"], "queued");
    assert_eq!(detail["orders"][0]["events"][0]["kind"], "queued");
    // Renew now is idempotent while that order is in flight.
    let r = app
        .call(
            "POST",
            &format!("/api/v1/certificates/{id}/renew"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.json()["id"], detail["orders"][0]["id"]);
    app.call(
        "POST",
        "/api/v1/certificates",
        Some(&admin),
        Some(json!({"name": "www", "dns_names": ["a.example.com"], "account": "acme"})),
    )
    .await
    .problem(409);
    // Outside the account's domains, unknown account, refused key types.
    for (body, field) in [
        (
            json!({"name": "x", "dns_names": ["www.other.org"], "account": "acme"}),
            "dns_names",
        ),
        (
            json!({"name": "x", "dns_names": ["a.example.com"], "account": "nope"}),
            "account",
        ),
        (
            json!({"name": "x", "dns_names": ["a.example.com"], "account": "acme", "key_type": "ecdsa-p521"}),
            "key_type",
        ),
        (
            json!({"name": "x", "dns_names": ["a.example.com"], "account": "acme", "key_type": "rsa1024"}),
            "key_type",
        ),
        (
            json!({"name": "x", "dns_names": ["a.example.com"], "account": "acme", "renew_fraction": 1.5}),
            "renew_fraction",
        ),
    ] {
        let p = app
            .call("POST", "/api/v1/certificates", Some(&admin), Some(body))
            .await
            .problem(422);
        assert_eq!(p["field"], field, "{p}");
    }
    let p = app
        .call("POST", "/api/v1/certificates", Some(&admin), Some(json!({"name": "x", "dns_names": ["a.example.com"], "account": "acme", "key_type": "ecdsa-p521"})))
        .await
        .problem(422);
    assert!(p["detail"].as_str().unwrap().contains("P-521"), "{p}");
    // Filters and pagination.
    let api = app.certificate(&acc, "api", &["api.example.com"]).await;
    app.issue(&api, 10).await;
    let mail = app.certificate(&acc, "mail", &["mail.example.com"]).await;
    app.issue(&mail, 80).await;
    let names = |v: Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (app_ref, admin_ref) = (&app, &admin);
    let list = |q: &str| {
        let path = format!("/api/v1/certificates{q}");
        async move { app_ref.call("GET", &path, Some(admin_ref), None).await }
    };
    assert_eq!(names(list("").await.json()), ["www", "api", "mail"]);
    assert_eq!(names(list("?expiring_within=30d").await.json()), ["api"]);
    assert_eq!(
        names(
            list("?state=pending&dns_name=MAIL.example.com")
                .await
                .json()
        ),
        ["mail"]
    );
    assert_eq!(
        names(list(&format!("?account={}", acc.id)).await.json()).len(),
        3
    );
    let page1 = list("?limit=2").await.json();
    assert_eq!(names(page1.clone()), ["www", "api"]);
    let page2 = list(&format!(
        "?limit=2&cursor={}",
        page1["next_cursor"].as_str().unwrap()
    ))
    .await
    .json();
    assert_eq!(names(page2.clone()), ["mail"]);
    assert!(page2["next_cursor"].is_null());
    // With `expiring_within`, soonest expiry first, and the cursor follows that order.
    let soon = app.certificate(&acc, "soon", &["soon.example.com"]).await;
    app.issue(&soon, 5).await;
    assert_eq!(
        names(list("?expiring_within=100d").await.json()),
        ["soon", "api", "mail"]
    );
    let page1 = list("?expiring_within=100d&limit=2").await.json();
    assert_eq!(names(page1.clone()), ["soon", "api"]);
    let page2 = list(&format!(
        "?expiring_within=100d&limit=2&cursor={}",
        page1["next_cursor"].as_str().unwrap()
    ))
    .await
    .json();
    assert_eq!(names(page2), ["mail"]);
    assert_eq!(names(list("?expiring_within=7d").await.json()), ["soon"]);
    for (q, field) in [
        ("?state=bogus", "state"),
        ("?expiring_within=soon", "expiring_within"),
        // Multibyte text once split a byte index inside `é` and panicked the handler.
        ("?expiring_within=1%C3%A9", "expiring_within"),
        ("?expiring_within=", "expiring_within"),
        ("?expiring_within=99999999999999999999d", "expiring_within"),
        ("?limit=0", "limit"),
        ("?dns_name=../x", "dns_name"),
    ] {
        assert_eq!(list(q).await.problem(422)["field"], field);
    }
    list("?color=red").await.problem(400);
    // Versions and retirement.
    let versions = app
        .call(
            "GET",
            "/api/v1/certificates/api/versions",
            Some(&admin),
            None,
        )
        .await
        .json();
    assert_eq!(versions.as_array().unwrap().len(), 1);
    let r = app
        .call(
            "POST",
            "/api/v1/certificates/mail/retire",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.json()["state"], "retired");
    app.call(
        "POST",
        "/api/v1/certificates/mail/renew",
        Some(&admin),
        None,
    )
    .await
    .problem(409);
    // Revoking a version needs one; the engine reports the CA's answer.
    app.call(
        "POST",
        "/api/v1/certificates/www/revoke",
        Some(&admin),
        Some(json!({})),
    )
    .await
    .problem(409);
}

#[tokio::test]
async fn issuer_tokens_stay_within_their_domains() {
    let app = TestApp::sqlite().await;
    let acc = app.account("acme").await;
    let theirs = app
        .certificate(&acc, "ci-app", &["app.ci.example.com"])
        .await;
    let other = app.certificate(&acc, "www", &["www.example.com"]).await;
    let issuer = app.token(&[Scope::Issuer], &["*.ci.example.com"]).await;
    let r = app
        .call(
            "POST",
            "/api/v1/certificates",
            Some(&issuer),
            Some(json!({"name": "ci-new", "dns_names": ["new.ci.example.com"], "account": "acme"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let p = app
        .call("POST", "/api/v1/certificates", Some(&issuer), Some(json!({"name": "x", "dns_names": ["new.ci.example.com", "www.example.com"], "account": "acme"})))
        .await
        .problem(403);
    assert!(p["detail"].as_str().unwrap().contains("www.example.com"));
    let listed: Vec<Value> = app
        .call("GET", "/api/v1/certificates", Some(&issuer), None)
        .await
        .json()["items"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        app.call(
            "GET",
            &format!("/api/v1/certificates/{}", theirs.id),
            Some(&issuer),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    // Another domain's certificate does not exist for this token, whatever the action.
    app.call(
        "GET",
        &format!("/api/v1/certificates/{}", other.id),
        Some(&issuer),
        None,
    )
    .await
    .problem(404);
    app.call(
        "POST",
        "/api/v1/certificates/www/renew",
        Some(&issuer),
        None,
    )
    .await
    .problem(404);
    app.call(
        "POST",
        "/api/v1/certificates/ci-app/renew",
        Some(&issuer),
        None,
    )
    .await;
    app.call(
        "POST",
        "/api/v1/certificates/ci-app/retire",
        Some(&issuer),
        None,
    )
    .await
    .problem(403);
}

backends!(downloads_need_export_and_are_audited);
async fn downloads_need_export_and_are_audited(app: TestApp) {
    let acc = app.account("acme").await;
    let cert = app.certificate(&acc, "www", &["www.example.com"]).await;
    let (version, key) = app.issue(&cert, 90).await;
    let exporter = app.token(ADMIN, &[]).await;
    let admin_only = app.token(&[Scope::Admin], &[]).await;
    let app_ref = &app;
    let dl = |token: &str, body: Value| {
        let token = token.to_owned();
        async move {
            app_ref
                .call(
                    "POST",
                    "/api/v1/certificates/www/download",
                    Some(&token),
                    Some(body),
                )
                .await
        }
    };
    let chain = dl(&admin_only, json!({"format": "pem-chain"})).await;
    assert_eq!(chain.status, StatusCode::OK);
    assert_eq!(
        chain.headers[header::CONTENT_TYPE],
        "application/pem-certificate-chain"
    );
    assert_eq!(
        String::from_utf8_lossy(&chain.body)
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    dl(&admin_only, json!({"format": "pem-key"}))
        .await
        .problem(403);
    dl(&admin_only, json!({"format": "pfx", "password": "pw"}))
        .await
        .problem(403);
    let pem = dl(&exporter, json!({"format": "pem-key"})).await;
    assert_eq!(pem.status, StatusCode::OK);
    assert_eq!(pem.headers[header::CACHE_CONTROL], "no-store");
    assert!(String::from_utf8_lossy(&pem.body).starts_with("-----BEGIN PRIVATE KEY-----"));
    for enc in ["legacy", "aes256"] {
        let pfx = dl(
            &exporter,
            json!({"format": "pfx", "password": "correct horse", "encryption": enc}),
        )
        .await;
        assert_eq!(pfx.status, StatusCode::OK, "{}", app.backend);
        assert_eq!(pfx.headers[header::CONTENT_TYPE], "application/x-pkcs12");
        let opened = open_pfx(&pfx.body, "correct horse").unwrap();
        assert_eq!(
            certkeep_api_types::pfx::thumbprint(&opened.leaf_der),
            version.thumbprint
        );
        assert_eq!(&opened.key_pkcs8_der[..], &key[..]);
    }
    for (body, field) in [
        (json!({"format": "pfx"}), "password"),
        (json!({"format": "pfx", "password": ""}), "password"),
        (json!({"format": "pem-key", "password": "x"}), "password"),
        (
            json!({"format": "pem-chain", "encryption": "aes256"}),
            "encryption",
        ),
        (json!({"format": "der"}), "format"),
    ] {
        assert_eq!(dl(&exporter, body).await.problem(422)["field"], field);
    }
    let releases = app
        .state
        .db
        .list_audit(&crate::db::audit::AuditFilter {
            action: Some("certificate.key_release".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let outcomes: Vec<&str> = releases.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        ["denied", "denied", "success", "success", "success"],
        "{}",
        app.backend
    );
    assert!(
        releases
            .iter()
            .all(|e| e.subject == format!("certificate:{}", cert.id))
    );
    assert!(!releases.iter().any(|e| e.detail.contains("correct horse")));
}

backends!(a_list_page_carries_each_current_version);
/// The list loads a page's current versions in one query: each item carries exactly the version
/// its detail view shows, none where nothing was issued.
async fn a_list_page_carries_each_current_version(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let acc = app.account("acme").await;
    let mut expected = Vec::new();
    for (name, issued) in [("twice", 2), ("never", 0), ("once", 1)] {
        let cert = app
            .certificate(&acc, name, &[&format!("{name}.example.com")])
            .await;
        let mut current = Value::Null;
        for _ in 0..issued {
            current = json!(app.issue(&cert, 30).await.0.id.0.to_string());
        }
        expected.push((name, current));
    }
    let page = app
        .call("GET", "/api/v1/certificates", Some(&admin), None)
        .await
        .json();
    let items = page["items"].as_array().unwrap();
    for (name, current) in &expected {
        let item = items.iter().find(|c| c["name"] == *name).unwrap();
        assert_eq!(
            item["current_version"]["id"], *current,
            "{}: {name}",
            app.backend
        );
        let detail = app
            .call(
                "GET",
                &format!("/api/v1/certificates/{name}"),
                Some(&admin),
                None,
            )
            .await
            .json();
        assert_eq!(
            detail["certificate"]["current_version"], item["current_version"],
            "{}: {name}",
            app.backend
        );
    }
}
