//! The bad-input list: every malformed request a 4xx problem document, never a 500.

use axum::body::Body;
use axum::http::{Request, header};
use serde_json::{Value, json};

use super::ADMIN;
use super::testapp::TestApp;

/// The bad-input list of issue 4: every one a 4xx problem document naming the field where
/// there is one, never a 500.
#[tokio::test]
async fn bad_input_is_a_problem_never_a_500() {
    let app = TestApp::on(crate::testkit::TestDb::sqlite().await, |c| {
        c.max_body_bytes = 64 * 1024
    })
    .await;
    let admin = app.token(ADMIN, &[]).await;
    app.account("acme").await;
    let create = |names: Value| {
        app.call(
            "POST",
            "/api/v1/certificates",
            Some(&admin),
            Some(json!({"name": "x", "dns_names": names, "account": "acme"})),
        )
    };
    let long = format!("{}.example.com", ["a"; 130].join("."));
    for bad in [
        "../x",
        "a..example.com",
        ".example.com",
        "",
        "192.168.1.1",
        "[::1]",
        "::1",
        long.as_str(),
        "*.*.example.com",
        "a b.example.com",
    ] {
        let p = create(json!([bad])).await.problem(422);
        assert_eq!(p["field"], "dns_names", "{bad:?}: {p}");
    }
    let many: Vec<String> = (0..10_000).map(|i| format!("h{i}.example.com")).collect();
    let p = app
        .call(
            "POST",
            "/api/v1/certificates",
            Some(&admin),
            Some(json!({"name": "x", "dns_names": many[..3000], "account": "acme"})),
        )
        .await
        .problem(422);
    assert_eq!(p["field"], "dns_names");
    // 10,000 names exceed this app's 64 KiB limit: 413, with or without Content-Length.
    let big =
        serde_json::to_vec(&json!({"name": "x", "dns_names": many, "account": "acme"})).unwrap();
    for with_length in [true, false] {
        let mut req = Request::post("/api/v1/certificates")
            .header(header::AUTHORIZATION, format!("Bearer {admin}"))
            .header(header::CONTENT_TYPE, "application/json");
        if with_length {
            req = req.header(header::CONTENT_LENGTH, big.len());
        }
        app.send(req.body(Body::from(big.clone())).unwrap())
            .await
            .problem(413);
    }
    // Malformed JSON, unknown and missing fields, wrong types, wrong media type.
    let raw = |body: &'static str, ct: &'static str| {
        let req = Request::post("/api/v1/certificates")
            .header(header::AUTHORIZATION, format!("Bearer {admin}"))
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body))
            .unwrap();
        app.send(req)
    };
    raw("{\"name\": \"x\",", "application/json")
        .await
        .problem(400);
    raw("name=x", "application/json").await.problem(400);
    assert_eq!(
        raw(
            r#"{"name":"x","dns_names":["a.example.com"],"account":"acme","colour":1}"#,
            "application/json"
        )
        .await
        .problem(422)["field"],
        "colour"
    );
    assert_eq!(
        raw(r#"{"name":"x","account":"acme"}"#, "application/json")
            .await
            .problem(422)["field"],
        "dns_names"
    );
    assert_eq!(
        raw(
            r#"{"name":"x","dns_names":"a.example.com","account":"acme"}"#,
            "application/json"
        )
        .await
        .problem(422)["field"],
        "dns_names"
    );
    raw(r#"{"name":"x"}"#, "text/plain").await.problem(415);
    // Routing errors are problems too.
    app.call("GET", "/api/v1/nothing-here", Some(&admin), None)
        .await
        .problem(404);
    app.call("DELETE", "/api/v1/certificates", Some(&admin), None)
        .await
        .problem(405);
    app.call(
        "POST",
        "/api/v1/tokens/not-a-uuid/revoke",
        Some(&admin),
        None,
    )
    .await
    .problem(400);
    app.call("GET", "/api/v1/certificates/nope", Some(&admin), None)
        .await
        .problem(404);
}
