//! Health, Swagger UI, and the OpenAPI document (served, committed, documented).

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::testapp::TestApp;

#[tokio::test]
async fn health_docs_and_served_spec() {
    let app = TestApp::sqlite().await;
    assert_eq!(app.call("GET", "/healthz", None, None).await.body, b"ok");
    assert_eq!(
        app.call("GET", "/readyz", None, None).await.status,
        StatusCode::OK
    );
    let served = app.call("GET", "/openapi.json", None, None).await.json();
    let generated: Value = serde_json::from_str(&crate::api::openapi_json()).unwrap();
    assert_eq!(served, generated);
    let docs = app.call("GET", "/docs/", None, None).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(
        String::from_utf8_lossy(&docs.body).contains("swagger"),
        "Swagger UI is not served"
    );
    let js = app
        .call("GET", "/docs/swagger-ui-bundle.js", None, None)
        .await;
    assert_eq!(
        js.status,
        StatusCode::OK,
        "Swagger UI assets are not vendored"
    );
}

#[test]
fn committed_openapi_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed.trim_end() == crate::api::openapi_json().trim_end(),
        "openapi/openapi.json is out of date; regenerate it with:\n  cargo run -p certkeep-server -- openapi > openapi/openapi.json"
    );
}

#[test]
fn every_operation_documents_scope_and_errors() {
    let spec: Value = serde_json::from_str(&crate::api::openapi_json()).unwrap();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let public = op.get("security").is_some_and(|s| s == &json!([{}]));
            if public {
                continue;
            }
            let description = op["description"].as_str().unwrap_or_default();
            assert!(
                description.contains("Scope:"),
                "{method} {path} does not name its scope"
            );
            for code in ["401", "403", "500"] {
                let schema =
                    &op["responses"][code]["content"]["application/problem+json"]["schema"]["$ref"];
                assert_eq!(
                    schema, "#/components/schemas/Problem",
                    "{method} {path} lacks {code}"
                );
            }
        }
    }
}
