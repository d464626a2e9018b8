//! `/api/v1/acme-accounts`: EAB stays write-only, deactivation, the EAB view.

use axum::http::StatusCode;
use serde_json::json;

use super::ADMIN;
use super::testapp::TestApp;

backends!(accounts_keep_eab_write_only);
async fn accounts_keep_eab_write_only(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let hmac = "c2VjcmV0LWhtYWMta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMzI";
    let body = json!({
        "name": "sectigo", "directory_url": "https://acme.invalid/directory",
        "contact": ["mailto:pki@example.com"], "allowed_domains": ["*.example.com"],
        "eab_kid": "kid-secret-77", "eab_hmac_key": hmac,
    });
    let r = app
        .call(
            "POST",
            "/api/v1/acme-accounts",
            Some(&admin),
            Some(body.clone()),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}: {}",
        app.backend,
        r.json()
    );
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        !text.contains("kid-secret-77") && !text.contains(hmac),
        "EAB material returned: {text}"
    );
    assert_eq!(r.json()["external_account_binding"], true);
    assert_eq!(
        r.json()["eab"],
        "pending",
        "not registered: the HMAC is still held"
    );
    let id = r.json()["id"].as_str().unwrap().to_owned();
    for path in [
        "/api/v1/acme-accounts",
        "/api/v1/acme-accounts/sectigo",
        &format!("/api/v1/acme-accounts/{id}"),
    ] {
        let r = app.call("GET", path, Some(&admin), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(!String::from_utf8_lossy(&r.body).contains("kid-secret-77"));
    }
    app.call("POST", "/api/v1/acme-accounts", Some(&admin), Some(body))
        .await
        .problem(409);
    for (patch, field) in [
        (
            json!({"directory_url": "http://acme.invalid/dir"}),
            "directory_url",
        ),
        (json!({"eab_hmac_key": "c2hvcnQ"}), "eab_hmac_key"),
        (json!({"eab_kid": null}), "eab_kid"),
        (json!({"allowed_domains": []}), "allowed_domains"),
        (json!({"allowed_domains": ["../x"]}), "allowed_domains"),
        (json!({"contact": ["pki@example.com"]}), "contact"),
        (json!({"name": "has space"}), "name"),
        (json!({"extra_roots_pem": "not pem"}), "extra_roots_pem"),
    ] {
        let mut body = json!({
            "name": "other", "directory_url": "https://acme.invalid/directory",
            "allowed_domains": ["*.example.com"], "eab_kid": "k", "eab_hmac_key": hmac,
        });
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let p = app
            .call("POST", "/api/v1/acme-accounts", Some(&admin), Some(body))
            .await
            .problem(422);
        assert_eq!(p["field"], field, "{p}");
    }
    let r = app
        .call(
            "POST",
            "/api/v1/acme-accounts/sectigo/deactivate",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.json()["state"], "deactivated");
    app.call("GET", "/api/v1/acme-accounts/nope", Some(&admin), None)
        .await
        .problem(404);
    let audit = app
        .state
        .db
        .list_audit(&crate::db::audit::AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"account.create") && actions.contains(&"account.deactivate"),
        "{actions:?}"
    );
    assert!(!audit.iter().any(|e| e.detail.contains(hmac)));
}

backends!(deactivating_an_account_stops_renewals_and_ends_its_orders_at_once);
async fn deactivating_an_account_stops_renewals_and_ends_its_orders_at_once(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let acc = app.account("acme").await;
    let cert = app.certificate(&acc, "www", &["www.example.com"]).await;
    app.issue(&cert, 90).await;
    // An order waiting for a retry an hour from now, as after a CA outage.
    let now = crate::now();
    let order = app
        .state
        .db
        .enqueue_order(
            cert.id,
            acc.id,
            crate::model::OrderReason::Renewal,
            now + time::Duration::days(1),
            now,
        )
        .await
        .unwrap();
    let lease = now + time::Duration::minutes(1);
    app.state.db.claim_order("w", lease, now).await.unwrap();
    let later = now + time::Duration::hours(1);
    app.state
        .db
        .reschedule_order(order.id, "w", later, Some("503"), true, now)
        .await
        .unwrap();

    let r = app
        .call(
            "POST",
            "/api/v1/acme-accounts/acme/deactivate",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", app.backend);
    assert_eq!(r.json()["state"], "deactivated");
    let waiting = app.state.db.order(order.id).await.unwrap();
    assert!(
        waiting.next_attempt_at <= crate::now(),
        "the waiting order is due at once, for the engine to end it ({})",
        app.backend
    );

    let p = app
        .call("POST", "/api/v1/certificates/www/renew", Some(&admin), None)
        .await
        .problem(409);
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("`acme`") && detail.contains("deactivated"),
        "{detail}"
    );
    assert_eq!(
        app.state.db.orders_for(cert.id).await.unwrap().len(),
        1,
        "no order was queued"
    );
}

backends!(the_account_view_says_whether_the_eab_hmac_is_still_held);
async fn the_account_view_says_whether_the_eab_hmac_is_still_held(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let acc = app.account("acme").await;
    let eab = || async {
        app.call("GET", "/api/v1/acme-accounts/acme", Some(&admin), None)
            .await
            .json()["eab"]
            .clone()
    };
    assert_eq!(eab().await, "pending", "{}", app.backend);
    app.state
        .db
        .set_account_registered(
            &app.state.secrets,
            acc.id,
            b"{}",
            "https://acme.invalid/acct/1",
            crate::now(),
        )
        .await
        .unwrap();
    assert_eq!(eab().await, "bound", "{}", app.backend);
    let plain = app
        .state
        .db
        .insert_account(
            &app.state.secrets,
            &crate::db::accounts::NewAccount {
                name: "plain",
                directory_url: "https://acme.invalid/directory",
                contact: &[],
                allowed_domains: &["*.example.com".into()],
                eab_kid: None,
                eab_hmac: None,
                extra_roots_pem: None,
            },
            crate::now(),
        )
        .await
        .unwrap();
    let r = app
        .call(
            "GET",
            &format!("/api/v1/acme-accounts/{}", plain.id),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.json()["eab"], "none");
}
