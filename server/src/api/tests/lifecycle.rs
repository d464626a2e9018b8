//! Lifecycle endpoints: `/api/v1/domains` (the domain-validation ledger) and certificate edits.

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
