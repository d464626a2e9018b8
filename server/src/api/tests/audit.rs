//! `/api/v1/audit-events`: tamper detection.

use serde_json::json;

use super::ADMIN;
use super::testapp::TestApp;

backends!(audit_verify_detects_edited_and_deleted_rows);
async fn audit_verify_detects_edited_and_deleted_rows(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    for name in ["a", "b", "c", "d"] {
        app.call(
            "POST",
            "/api/v1/tokens",
            Some(&admin),
            Some(json!({"name": name, "scopes": ["reader"]})),
        )
        .await;
    }
    let verify = || app.call("GET", "/api/v1/audit-events/verify", Some(&admin), None);
    assert_eq!(
        verify().await.json(),
        json!({"intact": true, "events": 4, "broken_at": null, "reason": null})
    );
    let listed = app
        .call(
            "GET",
            "/api/v1/audit-events?action=token.create&limit=2",
            Some(&admin),
            None,
        )
        .await
        .json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert_eq!(listed["next_after_seq"], 2);
    assert!(
        listed["items"][0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("token:")
    );
    app.state
        .db
        .execute_raw("UPDATE audit_events SET detail = 'scopes=admin' WHERE seq = 3")
        .await
        .unwrap();
    let r = verify().await.json();
    assert_eq!(
        (r["intact"].clone(), r["broken_at"].clone()),
        (json!(false), json!(3)),
        "{}: {r}",
        app.backend
    );
    app.state
        .db
        .execute_raw("UPDATE audit_events SET detail = 'scopes=reader' WHERE seq = 3")
        .await
        .unwrap();
    assert_eq!(verify().await.json()["intact"], true);
    app.state
        .db
        .execute_raw("DELETE FROM audit_events WHERE seq = 2")
        .await
        .unwrap();
    let r = verify().await.json();
    assert_eq!(r["broken_at"], 2, "{}: {r}", app.backend);
    assert!(r["reason"].as_str().unwrap().contains("missing"));
}
