//! In-process API tests: every resource on every backend, the bad-input list, rate limiting,
//! audit tamper detection and OpenAPI drift.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use certkeep_api_types::pfx::open_pfx;
use serde_json::{Value, json};

use super::testapp::TestApp;
use crate::bootstrap::token_hash;
use crate::db::deployments::NewDeployment;
use crate::model::Scope;

const ADMIN: &[Scope] = &[Scope::Admin, Scope::Export];

#[tokio::test]
async fn tokens_create_list_revoke_and_expire() {
    for app in TestApp::all().await {
        let admin = app.token(ADMIN, &[]).await;
        let r = app
            .call("POST", "/api/v1/tokens", Some(&admin), Some(json!({"name": "ci", "scopes": ["issuer"], "domain_patterns": ["*.Example.com"]})))
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
}

#[tokio::test]
async fn accounts_keep_eab_write_only() {
    for app in TestApp::all().await {
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
}

#[tokio::test]
async fn certificates_lifecycle() {
    for app in TestApp::all().await {
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

#[tokio::test]
async fn downloads_need_export_and_are_audited() {
    for app in TestApp::all().await {
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
}

#[tokio::test]
async fn agents_assignments_and_deployment_state() {
    for app in TestApp::all().await {
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
        assert_eq!(
            app.state
                .db
                .agent_ccs_password(&app.state.secrets, agent.id)
                .await
                .unwrap()
                .as_str(),
            "ccs-secret-1"
        );
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
                        file_name: "www.example.com.pfx",
                        thumbprint: Some(&thumb),
                        status: status.parse().unwrap(),
                        error: None,
                    }],
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
        let text =
            String::from_utf8_lossy(&app.call("GET", "/metrics", Some(&admin), None).await.body)
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
        assert_eq!(
            app.state
                .db
                .agent_ccs_password(&app.state.secrets, agent.id)
                .await
                .unwrap()
                .as_str(),
            "ccs-secret-2"
        );
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
}

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

#[tokio::test]
async fn failed_authentication_is_rate_limited_per_address() {
    let app = TestApp::on(crate::testkit::TestDb::sqlite().await, |c| {
        c.auth_failures_per_minute = 3
    })
    .await;
    let from = |ip: [u8; 4], token: &str| {
        let mut req = Request::get("/api/v1/tokens")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        app.send(req)
    };
    for _ in 0..3 {
        from([192, 0, 2, 1], "ck_guess").await.problem(401);
    }
    from([192, 0, 2, 1], "ck_guess").await.problem(429);
    assert_eq!(
        from([192, 0, 2, 2], "ck_guess").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_valid_token_is_never_locked_out_by_failures_from_its_address() {
    let app = TestApp::on(crate::testkit::TestDb::sqlite().await, |c| {
        c.auth_failures_per_minute = 3
    })
    .await;
    let admin = app.token(ADMIN, &[]).await;
    let from = |token: &str| {
        let mut req = Request::get("/api/v1/tokens")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 40000))));
        app.send(req)
    };
    for _ in 0..10 {
        from("ck_guess").await;
    }
    from("ck_guess").await.problem(429);
    assert_eq!(from(&admin).await.status, StatusCode::OK);
    // Still limited for the failures, still open for the valid token.
    from("ck_guess").await.problem(429);
    assert_eq!(from(&admin).await.status, StatusCode::OK);
}

#[tokio::test]
async fn audit_verify_detects_edited_and_deleted_rows() {
    for app in TestApp::all().await {
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
}

#[tokio::test]
async fn health_docs_and_served_spec() {
    let app = TestApp::sqlite().await;
    assert_eq!(app.call("GET", "/healthz", None, None).await.body, b"ok");
    assert_eq!(
        app.call("GET", "/readyz", None, None).await.status,
        StatusCode::OK
    );
    let served = app.call("GET", "/openapi.json", None, None).await.json();
    let generated: Value = serde_json::from_str(&super::openapi_json()).unwrap();
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
        committed.trim_end() == super::openapi_json().trim_end(),
        "openapi/openapi.json is out of date; regenerate it with:\n  cargo run -p certkeep-server -- openapi > openapi/openapi.json"
    );
}

#[test]
fn every_operation_documents_scope_and_errors() {
    let spec: Value = serde_json::from_str(&super::openapi_json()).unwrap();
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

#[tokio::test]
async fn deactivating_an_account_stops_renewals_and_ends_its_orders_at_once() {
    for app in TestApp::all().await {
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
}

#[tokio::test]
async fn the_account_view_says_whether_the_eab_hmac_is_still_held() {
    for app in TestApp::all().await {
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
}
