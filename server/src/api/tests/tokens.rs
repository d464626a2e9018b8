//! `/api/v1/tokens`: create, list, revoke, expire; validation.

use axum::http::{StatusCode, header};
use serde_json::json;

use super::ADMIN;
use super::testapp::TestApp;
use crate::bootstrap::token_hash;
use crate::model::Scope;

backends!(tokens_create_list_revoke_and_expire);
async fn tokens_create_list_revoke_and_expire(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let r = app
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&admin),
            Some(json!({"name": "ci", "scopes": ["issuer"], "domain_patterns": ["*.Example.com"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", app.backend);
    let created = r.json();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("ck_"));
    assert_eq!(
        created["token"]["domain_patterns"],
        json!(["*.example.com"])
    );
    let stored = app
        .state
        .db
        .token_by_hash(&token_hash(&secret))
        .await
        .unwrap();
    assert_eq!(stored.scopes, vec![Scope::Issuer]);
    let list = app.call("GET", "/api/v1/tokens", Some(&admin), None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(
        !String::from_utf8_lossy(&list.body).contains(&secret),
        "a token secret was listed"
    );
    // The new token works, then stops working once revoked.
    assert_eq!(
        app.call("GET", "/api/v1/certificates", Some(&secret), None)
            .await
            .status,
        StatusCode::OK
    );
    let id = created["token"]["id"].as_str().unwrap();
    let r = app
        .call(
            "POST",
            &format!("/api/v1/tokens/{id}/revoke"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["revoked_at"].is_string());
    let p = app
        .call("GET", "/api/v1/certificates", Some(&secret), None)
        .await
        .problem(401);
    assert!(p.get("detail").is_none(), "a 401 must not say why: {p}");
    // Validation.
    for (body, field) in [
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": "x", "scopes": ["root"]}), "scopes"),
        (
            json!({"name": "x", "scopes": ["issuer"]}),
            "domain_patterns",
        ),
        (
            json!({"name": "x", "scopes": ["reader"], "domain_patterns": ["a.example.com"]}),
            "domain_patterns",
        ),
        (
            json!({"name": "x", "scopes": ["reader"], "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (json!({"name": "", "scopes": ["reader"]}), "name"),
    ] {
        let p = app
            .call("POST", "/api/v1/tokens", Some(&admin), Some(body))
            .await
            .problem(422);
        assert_eq!(p["field"], field, "{p}");
    }
    // An expired token is a plain 401.
    let expired = crate::bootstrap::new_token_secret();
    app.state
        .db
        .insert_token(
            &crate::db::tokens::NewToken {
                name: "old",
                hash: &token_hash(&expired),
                scopes: &[Scope::Admin],
                domain_patterns: &[],
                expires_at: Some(crate::now() - time::Duration::seconds(1)),
                created_by: None,
            },
            crate::now(),
        )
        .await
        .unwrap();
    app.call("GET", "/api/v1/tokens", Some(&expired), None)
        .await
        .problem(401);
    let r = app.call("GET", "/api/v1/tokens", None, None).await;
    r.problem(401);
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
}
