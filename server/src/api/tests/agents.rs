//! `/api/v1/agents`: assignments and deployment state.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::ADMIN;
use super::testapp::TestApp;
use crate::bootstrap::token_hash;
use crate::db::deployments::NewDeployment;

backends!(agents_assignments_and_deployment_state);
async fn agents_assignments_and_deployment_state(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let acc = app.account("acme").await;
    let www = app.certificate(&acc, "www", &["www.example.com"]).await;
    let (v1, _) = app.issue(&www, 90).await;
    let r = app
        .call(
            "POST",
            "/api/v1/agents",
            Some(&admin),
            Some(json!({"name": "web1", "ccs_password": "ccs-secret-1"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}: {}",
        app.backend,
        r.json()
    );
    let created = r.json();
    assert!(!String::from_utf8_lossy(&r.body).contains("ccs-secret-1"));
    let join = created["join_token"].as_str().unwrap();
    let agent = app
        .state
        .db
        .agent_by_join_token_hash(&token_hash(join))
        .await
        .unwrap();
    assert_eq!(agent.name, "web1");
    assert_eq!(created["agent"]["pfx_encryption"], "legacy");
    assert_eq!(ccs_password(&app, agent.id).await, "ccs-secret-1");
    app.call(
        "POST",
        "/api/v1/agents",
        Some(&admin),
        Some(json!({"name": "web1", "ccs_password": "x"})),
    )
    .await
    .problem(409);
    app.call(
        "POST",
        "/api/v1/agents",
        Some(&admin),
        Some(json!({"name": "web2", "ccs_password": ""})),
    )
    .await
    .problem(422);
    // Assign; pending until the agent reports.
    let r = app
        .call(
            "PUT",
            "/api/v1/agents/web1/certificates/www",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.call(
            "PUT",
            "/api/v1/agents/web1/certificates/www",
            Some(&admin),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    let state_of = |v: Value| v["certificates"][0]["state"].as_str().unwrap().to_owned();
    let show = || app.call("GET", "/api/v1/agents/web1", Some(&admin), None);
    assert_eq!(state_of(show().await.json()), "pending");
    let report = |thumb: &str, status: &'static str| {
        let thumb = thumb.to_owned();
        let db = app.state.db.clone();
        let (agent, cert) = (agent.id, www.id);
        async move {
            db.touch_agent(agent, "windows", "10.0.17763", "0.1.0", crate::now())
                .await
                .unwrap();
            db.record_deployments(
                agent,
                &[NewDeployment {
                    certificate_id: cert,
                    target: "iis",
                    file_name: "www.example.com.pfx",
                    thumbprint: Some(&thumb),
                    status: status.parse().unwrap(),
                    error: None,
                }],
                &[],
                &[],
                crate::now(),
            )
            .await
            .unwrap();
        }
    };
    report(&v1.thumbprint, "installed").await;
    let shown = show().await.json();
    assert_eq!(state_of(shown.clone()), "deployed");
    assert_eq!(shown["os_build"], "10.0.17763");
    let (v2, _) = app.issue(&www, 90).await;
    assert_eq!(state_of(show().await.json()), "stale");
    let metrics = app.call("GET", "/metrics", Some(&admin), None).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("certkeep_certificate_expiry_timestamp_seconds{certificate=\"www\"}"),
        "{text}"
    );
    assert!(
        text.contains("certkeep_agent_last_seen_timestamp_seconds{agent=\"web1\"}"),
        "{text}"
    );
    assert!(
        text.contains("certkeep_agents_serving_stale_version 0"),
        "pending agents do not count: {text}"
    );
    app.state
        .db
        .activate_agent(
            agent.id,
            "01",
            crate::now() + time::Duration::days(30),
            crate::now(),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&app.call("GET", "/metrics", Some(&admin), None).await.body)
        .into_owned();
    assert!(
        text.contains("certkeep_agents_serving_stale_version 1"),
        "{text}"
    );
    report(&v2.thumbprint, "failed").await;
    assert_eq!(state_of(show().await.json()), "failed");
    // The certificate shows which agent has what.
    let detail = app
        .call("GET", "/api/v1/certificates/www", Some(&admin), None)
        .await
        .json();
    assert_eq!(detail["deployments"][0]["agent_name"], "web1");
    assert_eq!(detail["deployments"][0]["state"], "failed");
    assert_eq!(detail["versions"].as_array().unwrap().len(), 2);
    // Update, list, join token, unassign, revoke.
    let r = app
        .call(
            "PATCH",
            "/api/v1/agents/web1",
            Some(&admin),
            Some(json!({"ccs_password": "ccs-secret-2", "pfx_encryption": "aes256"})),
        )
        .await;
    assert_eq!(r.json()["pfx_encryption"], "aes256");
    assert_eq!(ccs_password(&app, agent.id).await, "ccs-secret-2");
    app.call(
        "PATCH",
        "/api/v1/agents/web1",
        Some(&admin),
        Some(json!({})),
    )
    .await
    .problem(422);
    let list = app
        .call("GET", "/api/v1/agents", Some(&admin), None)
        .await
        .json();
    assert_eq!(list[0]["certificates"][0]["certificate_name"], "www");
    let r = app
        .call("POST", "/api/v1/agents/web1/join-token", Some(&admin), None)
        .await
        .json();
    let join2 = r["join_token"].as_str().unwrap();
    assert!(
        app.state
            .db
            .agent_by_join_token_hash(&token_hash(join))
            .await
            .is_err(),
        "the old join token still works"
    );
    assert!(
        app.state
            .db
            .agent_by_join_token_hash(&token_hash(join2))
            .await
            .is_ok()
    );
    assert_eq!(
        app.call(
            "DELETE",
            "/api/v1/agents/web1/certificates/www",
            Some(&admin),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert!(
        app.call("GET", "/api/v1/agents/web1", Some(&admin), None)
            .await
            .json()["certificates"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let r = app
        .call("POST", "/api/v1/agents/web1/revoke", Some(&admin), None)
        .await;
    assert_eq!(r.json()["state"], "revoked");
    assert!(
        app.state
            .db
            .agent_by_join_token_hash(&token_hash(join2))
            .await
            .is_err()
    );
    app.call(
        "PUT",
        "/api/v1/agents/web1/certificates/www",
        Some(&admin),
        None,
    )
    .await
    .problem(409);
    app.call("POST", "/api/v1/agents/web1/join-token", Some(&admin), None)
        .await
        .problem(409);
}

/// The agent's CCS password as stored (sealed at rest).
async fn ccs_password(app: &TestApp, agent: crate::model::AgentId) -> String {
    app.state
        .db
        .agent_ccs_password(&app.state.secrets, agent)
        .await
        .unwrap()
        .to_string()
}
