//! `/api/v1/domains`: the domain-validation ledger.

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
