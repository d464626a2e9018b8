//! `/api/v1/agents/{agent}/targets` and assignments that name targets.

use axum::http::StatusCode;
use serde_json::json;

use super::ADMIN;
use super::testapp::TestApp;
use crate::model::Scope;

/// Creates agent `web1` (admin token) and returns that token.
async fn with_agent(app: &TestApp) -> String {
    let admin = app.token(ADMIN, &[]).await;
    let r = app
        .call(
            "POST",
            "/api/v1/agents",
            Some(&admin),
            Some(json!({"name": "web1", "ccs_password": "pw"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    assert_eq!(
        r.json()["enroll_command"],
        "certkeep-agent enroll --server https://127.0.0.1:8444 --ca-file ca.pem --token-file join-token.txt"
    );
    admin
}

backends!(targets_are_created_listed_assigned_and_removed);
async fn targets_are_created_listed_assigned_and_removed(app: TestApp) {
    let admin = with_agent(&app).await;
    let acc = app.account("acme").await;
    let www = app.certificate(&acc, "www", &["www.example.com"]).await;
    let add = |body| {
        app.call(
            "POST",
            "/api/v1/agents/web1/targets",
            Some(&admin),
            Some(body),
        )
    };
    let r = add(json!({"name": "ccs", "settings": {"kind": "ccs", "path": r"\\fs\ccs$"}})).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}: {}",
        app.backend,
        r.json()
    );
    assert_eq!(r.json()["probe"], json!(["127.0.0.1:443"]), "default probe");
    let r = add(json!({"name": "nginx", "probe": [],
        "settings": {"kind": "directory", "path": "/etc/ssl/certkeep",
                     "reload_command": ["systemctl", "reload", "nginx"]}}))
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    assert_eq!(r.json()["probe"], json!([]));
    let r = add(
        json!({"name": "store", "settings": {"kind": "windows-store",
        "store": "WebHosting", "iis_site": "Default Web Site"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());

    // Bad input names its field; a taken name is a conflict.
    for (body, field) in [
        (
            json!({"name": "ccs", "settings": {"kind": "ccs", "path": "/x"}}),
            None,
        ),
        (
            json!({"name": "x", "settings": {"kind": "ccs", "path": ""}}),
            Some("settings.path"),
        ),
        (
            json!({"name": "x", "settings": {"kind": "nfs", "path": "/x"}}),
            Some("settings.kind"),
        ),
        (
            json!({"name": "x", "probe": ["nohost"], "settings": {"kind": "ccs", "path": "/x"}}),
            Some("probe"),
        ),
        (
            json!({"name": "../x", "settings": {"kind": "ccs", "path": "/x"}}),
            Some("name"),
        ),
        (
            json!({"name": "x", "settings": {"kind": "directory", "path": "/x", "reload_command": []}}),
            Some("settings.reload_command"),
        ),
    ] {
        let r = add(body.clone()).await;
        match field {
            None => assert!(
                r.problem(409)["detail"]
                    .as_str()
                    .unwrap()
                    .contains("already")
            ),
            Some(f) => assert_eq!(r.problem(422)["field"], f, "{body}"),
        }
    }

    let listed = app
        .call("GET", "/api/v1/agents/web1/targets", Some(&admin), None)
        .await
        .json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ccs", "nginx", "store"]);
    assert_eq!(listed[1]["settings"]["reload_command"][2], "nginx");

    // An assignment names existing targets only; one naming only `ccs` blocks its removal.
    let assign = |path| app.call("PUT", path, Some(&admin), None);
    assert_eq!(
        assign("/api/v1/agents/web1/certificates/www?targets=ccs,nope")
            .await
            .problem(422)["field"],
        "targets"
    );
    assert_eq!(
        assign("/api/v1/agents/web1/certificates/www?targets=ccs")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let agent = app.state.db.agent_by_name("web1").await.unwrap();
    let pairs = app.state.db.assignment_targets(agent.id).await.unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].0, www.id);
    let r = app
        .call(
            "DELETE",
            "/api/v1/agents/web1/targets/ccs",
            Some(&admin),
            None,
        )
        .await;
    assert!(r.problem(409)["detail"].as_str().unwrap().contains("www"));
    assert_eq!(
        app.call(
            "DELETE",
            "/api/v1/agents/web1/targets/nginx",
            Some(&admin),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    app.call(
        "DELETE",
        "/api/v1/agents/web1/targets/nginx",
        Some(&admin),
        None,
    )
    .await
    .problem(404);
    // Re-assigning without targets means every target; then `ccs` can go.
    assert_eq!(
        assign("/api/v1/agents/web1/certificates/www").await.status,
        StatusCode::NO_CONTENT
    );
    assert!(
        app.state
            .db
            .assignment_targets(agent.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        app.call(
            "DELETE",
            "/api/v1/agents/web1/targets/ccs",
            Some(&admin),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
}

backends!(a_target_needs_key_delivery_scope_and_is_audited);
async fn a_target_needs_key_delivery_scope_and_is_audited(app: TestApp) {
    with_agent(&app).await;
    let operator = app.token(&[Scope::Operator], &[]).await;
    let body = json!({"name": "nginx", "settings": {"kind": "directory", "path": "/etc/ssl/ck",
        "reload_command": ["systemctl", "reload", "nginx"]}});
    let r = app
        .call(
            "POST",
            "/api/v1/agents/web1/targets",
            Some(&operator),
            Some(body.clone()),
        )
        .await;
    assert!(
        r.problem(403)["detail"]
            .as_str()
            .unwrap()
            .contains("`export` scope")
    );
    let exporter = app.token(&[Scope::Operator, Scope::Export], &[]).await;
    let r = app
        .call(
            "POST",
            "/api/v1/agents/web1/targets",
            Some(&exporter),
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let events = app
        .state
        .db
        .list_audit(&crate::db::audit::AuditFilter {
            action: Some("agent.target_add".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["denied", "success"], "{}", app.backend);
    assert!(
        events[1].detail.contains("reload: systemctl reload nginx"),
        "{:?}",
        events[1]
    );
}

backends!(the_rollout_guard_is_checked_and_normalised);
async fn the_rollout_guard_is_checked_and_normalised(app: TestApp) {
    let admin = with_agent(&app).await;
    let put = |body| {
        app.call(
            "PUT",
            "/api/v1/agents/web1/rollout",
            Some(&admin),
            Some(body),
        )
    };
    let p = put(json!({"change_window": "Sat 2:00-4:00"}))
        .await
        .problem(422);
    assert_eq!(p["field"], "change_window");
    let r = put(json!({"change_window": "sat 02:00-04:00 +01:00", "canary": true})).await;
    assert_eq!(r.status, StatusCode::OK, "{}: {}", app.backend, r.json());
    assert_eq!(
        r.json(),
        json!({"change_window": "Sat 02:00-04:00 +01:00", "canary": true})
    );
    let shown = app
        .call("GET", "/api/v1/agents/web1/rollout", Some(&admin), None)
        .await
        .json();
    assert_eq!(shown["change_window"], "Sat 02:00-04:00 +01:00");
    let cleared = put(json!({"change_window": ""})).await.json();
    assert_eq!(cleared, json!({"change_window": null, "canary": false}));
}
