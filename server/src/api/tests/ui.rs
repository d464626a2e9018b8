//! The dashboard over plain HTTP (no browser): login and session cookie, CSRF and origin checks
//! on every form, sessions that die with their token, the security headers on every page, the
//! API's scope checks and audit on every action, and the list page's query count.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};

use super::ADMIN;
use super::testapp::{Resp, TestApp};
use crate::model::Scope;
use crate::ui::session::{self, SessionOwner};
use certkeep_api_types::target::ServedStatus;

/// The host the requests name; `Origin` must be `https://` this.
const HOST: &str = "certkeep.test";
const ORIGIN: &str = "https://certkeep.test";

/// A logged-in browser: its cookie and the CSRF token of its session.
struct Browser {
    cookie: String,
    csrf: String,
}

/// A form POST with optional cookie and `Origin`.
async fn post(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
    body: &str,
) -> Resp {
    let mut req = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    if let Some(o) = origin {
        req = req.header(header::ORIGIN, o);
    }
    app.send(req.body(Body::from(body.to_owned())).unwrap())
        .await
}

/// A GET with an optional cookie.
async fn get(app: &TestApp, path: &str, cookie: Option<&str>) -> Resp {
    let mut req = Request::builder().uri(path).header(header::HOST, HOST);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    app.send(req.body(Body::empty()).unwrap()).await
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The `name=value` part of a response's `Set-Cookie`.
fn cookie_of(r: &Resp) -> String {
    let set = r.headers[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

/// The CSRF token in a page's forms.
fn csrf_in(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF field")
        + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

/// Turns a session-opening response into a browser holding its cookie.
async fn browser_from(app: &TestApp, opened: Resp) -> Browser {
    assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", text(&opened));
    assert_eq!(opened.headers[header::LOCATION], "/ui/");
    let cookie = cookie_of(&opened);
    let overview = get(app, "/ui/", Some(&cookie)).await;
    assert_eq!(overview.status, StatusCode::OK, "{}", text(&overview));
    Browser {
        csrf: csrf_in(&text(&overview)),
        cookie,
    }
}

/// Logs in with a token.
async fn login(app: &TestApp, secret: &str) -> Browser {
    let r = post(
        app,
        "/ui/login",
        None,
        Some(ORIGIN),
        &format!("token={secret}"),
    )
    .await;
    browser_from(app, r).await
}

backends!(
    login_sets_a_strict_session_cookie_and_logout_ends_it,
    search_matches_names_and_sans_literally,
    assigning_from_the_dashboard_is_a_key_delivery_act,
    every_form_needs_the_csrf_token_and_this_origin,
    a_revoked_tokens_session_is_refused_at_once,
    idle_and_old_sessions_end,
    every_page_carries_the_security_headers,
    actions_use_the_api_scope_checks_and_audit,
    an_oidc_session_acts_as_its_subject,
    the_first_page_of_10000_certificates_takes_one_query_per_list,
);

async fn login_sets_a_strict_session_cookie_and_logout_ends_it(app: TestApp) {
    let secret = app.token(&[Scope::Reader], &[]).await;
    let r = post(
        &app,
        "/ui/login",
        None,
        Some(ORIGIN),
        &format!("token={secret}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/ui"] {
        assert!(set.split("; ").any(|f| f == flag), "{flag} missing: {set}");
    }
    let value = cookie_of(&r);
    let id = value.strip_prefix("certkeep_session=").unwrap();
    assert!(id.len() >= 43, "an opaque 256-bit id: {id}");
    assert!(!id.contains(&secret[3..]), "the cookie is not the token");
    let b = browser_from(&app, r).await;
    assert!(text(&get(&app, "/ui/", Some(&b.cookie)).await).contains("token test"));

    // A wrong token: a page, no cookie.
    let wrong = post(&app, "/ui/login", None, Some(ORIGIN), "token=ck_wrong").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(!wrong.headers.contains_key(header::SET_COOKIE));
    assert!(text(&wrong).contains("Unknown, revoked or expired token"));

    let empty = post(&app, "/ui/login", None, Some(ORIGIN), "").await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(text(&empty).contains("invalid login form"));

    let out = post(
        &app,
        "/ui/logout",
        Some(&b.cookie),
        Some(ORIGIN),
        &format!("csrf={}", b.csrf),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // The old cookie no longer opens anything: the session is gone server-side.
    let after = get(&app, "/ui/", Some(&b.cookie)).await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert_eq!(after.headers[header::LOCATION], "/ui/login");
}

async fn every_form_needs_the_csrf_token_and_this_origin(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let account = app.account("acme").await;
    let cert = app.certificate(&account, "web", &["www.example.com"]).await;
    app.issue(&cert, 90).await;
    let b = login(&app, &admin).await;
    let audit_before = app.state.db.verify_audit_chain().await.unwrap().unwrap();
    let forms = [
        ("/ui/logout", String::new()),
        (
            "/ui/certificates",
            "name=new&dns_names=new.example.com&account=acme&key_type=ecdsa-p256".into(),
        ),
        ("/ui/certificates/web/renew", String::new()),
        ("/ui/certificates/web/retire", String::new()),
        (
            "/ui/certificates/web/revoke",
            "reason=superseded&confirm=web".into(),
        ),
        ("/ui/certificates/web/assign", "agent=host1".into()),
        ("/ui/certificates/web/unassign", "agent=host1".into()),
    ];
    for (path, fields) in &forms {
        let with = |csrf: &str| {
            if fields.is_empty() {
                format!("csrf={csrf}")
            } else {
                format!("{fields}&csrf={csrf}")
            }
        };
        let cases = [
            ("no CSRF token", fields.clone(), Some(ORIGIN)),
            ("a wrong CSRF token", with("forged"), Some(ORIGIN)),
            (
                "a foreign Origin",
                with(&b.csrf),
                Some("https://evil.example"),
            ),
            (
                "an http Origin",
                with(&b.csrf),
                Some("http://certkeep.test"),
            ),
            ("no Origin or Referer", with(&b.csrf), None),
        ];
        for (what, body, origin) in cases {
            let r = post(&app, path, Some(&b.cookie), origin, &body).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{path} with {what}: {}",
                text(&r)
            );
            assert!(
                r.headers[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html")
            );
            assert!(text(&r).contains("Refused"), "{path} with {what}");
        }
    }
    // What a browser sends from our own pages (`Origin: null` under `no-referrer`) passes only
    // with its `Sec-Fetch-Site: same-origin`.
    for (site, status) in [
        (None, StatusCode::FORBIDDEN),
        (Some("cross-site"), StatusCode::FORBIDDEN),
        (Some("same-site"), StatusCode::FORBIDDEN),
    ] {
        let mut req = Request::builder()
            .method("POST")
            .uri("/ui/certificates/web/retire")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, "null")
            .header(header::COOKIE, &b.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(site) = site {
            req = req.header("sec-fetch-site", site);
        }
        let r = app
            .send(req.body(Body::from(format!("csrf={}", b.csrf))).unwrap())
            .await;
        assert_eq!(r.status, status, "Origin: null, Sec-Fetch-Site: {site:?}");
    }
    // The login form is checked for its origin too.
    let r = post(
        &app,
        "/ui/login",
        None,
        Some("https://evil.example"),
        &format!("token={admin}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Nothing happened: no audit event, the certificate is untouched, the session still works.
    assert_eq!(
        app.state.db.verify_audit_chain().await.unwrap().unwrap(),
        audit_before
    );
    assert_eq!(
        app.state.db.certificate(cert.id).await.unwrap().state,
        cert.state
    );
    assert_eq!(
        get(&app, "/ui/", Some(&b.cookie)).await.status,
        StatusCode::OK
    );
    let req = Request::builder()
        .method("POST")
        .uri("/ui/certificates/web/renew")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "null")
        .header("sec-fetch-site", "same-origin")
        .header(header::COOKIE, &b.cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("csrf={}", b.csrf)))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::SEE_OTHER);
    // A Referer from this site is accepted in place of Origin.
    let req = Request::builder()
        .method("POST")
        .uri("/ui/certificates/web/renew")
        .header(header::HOST, HOST)
        .header(header::REFERER, "https://certkeep.test/ui/certificates/web")
        .header(header::COOKIE, &b.cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("csrf={}", b.csrf)))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::SEE_OTHER);
}

async fn a_revoked_tokens_session_is_refused_at_once(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let reader = app.token(&[Scope::Reader], &[]).await;
    let b = login(&app, &reader).await;
    let tokens = app
        .call("GET", "/api/v1/tokens", Some(&admin), None)
        .await
        .json();
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["scopes"] == serde_json::json!(["reader"]))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .call(
            "POST",
            &format!("/api/v1/tokens/{id}/revoke"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let page = get(&app, "/ui/certificates", Some(&b.cookie)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.headers[header::LOCATION], "/ui/login");
    // The session row is gone too, so a later un-revoke could not revive it.
    let hash = crate::bootstrap::token_hash(b.cookie.strip_prefix("certkeep_session=").unwrap());
    assert!(matches!(
        app.state.db.ui_session(&hash).await,
        Err(crate::db::Error::NotFound)
    ));
}

async fn every_page_carries_the_security_headers(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let account = app.account("acme").await;
    let cert = app.certificate(&account, "web", &["www.example.com"]).await;
    app.issue(&cert, 20).await;
    let b = login(&app, &admin).await;
    let overview = text(&get(&app, "/ui/", Some(&b.cookie)).await);
    assert!(
        overview.contains("<svg"),
        "the expiry timeline is inline SVG"
    );
    assert!(!overview.contains("<script"), "no script");
    assert!(
        !overview.contains("style="),
        "no inline style (the CSP forbids it)"
    );
    let css_at = overview.find("/ui/assets/app.").unwrap();
    let css = overview[css_at..].split('"').next().unwrap().to_owned();
    let pages = [
        ("/", false),
        ("/ui/login", false),
        ("/ui/", true),
        ("/ui/certificates", true),
        ("/ui/certificates?q=www&expiring=30d", true),
        ("/ui/certificates/new", true),
        ("/ui/certificates/web", true),
        ("/ui/agents", true),
        ("/ui/accounts", true),
        ("/ui/tokens", true),
        ("/ui/audit", true),
        ("/ui/no-such-page", true),
        ("/ui/certificates/no-such-cert", true),
        (css.as_str(), false),
    ];
    for (path, with_cookie) in pages {
        let r = get(&app, path, with_cookie.then_some(b.cookie.as_str())).await;
        assert_eq!(
            r.headers[header::CONTENT_SECURITY_POLICY],
            crate::ui::CSP,
            "{path}"
        );
        assert_eq!(
            r.headers[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff",
            "{path}"
        );
        assert_eq!(r.headers[header::REFERRER_POLICY], "no-referrer", "{path}");
    }
    let sheet = get(&app, &css, None).await;
    assert_eq!(sheet.status, StatusCode::OK);
    assert_eq!(
        sheet.headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert!(text(&sheet).contains("@media (max-width: 600px)"));
    assert_eq!(
        get(&app, "/ui/assets/app.0000000000000000.css", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let detail = text(&get(&app, "/ui/certificates/web", Some(&b.cookie)).await);
    assert!(detail.contains("www.example.com") && detail.contains("Revoke the current version"));
    // Without a session every page goes to the login.
    let r = get(&app, "/ui/certificates", None).await;
    assert_eq!(r.headers[header::LOCATION], "/ui/login");
}

async fn actions_use_the_api_scope_checks_and_audit(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let reader = app.token(&[Scope::Reader], &[]).await;
    let account = app.account("acme").await;
    let cert = app.certificate(&account, "web", &["www.example.com"]).await;
    app.issue(&cert, 20).await;

    let r = login(&app, &reader).await;
    let refused = post(
        &app,
        "/ui/certificates/web/renew",
        Some(&r.cookie),
        Some(ORIGIN),
        &format!("csrf={}", r.csrf),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        text(&refused).contains("needs one of the scopes: admin, operator, issuer"),
        "{}",
        text(&refused)
    );
    let refused = post(
        &app,
        "/ui/certificates/web/revoke",
        Some(&r.cookie),
        Some(ORIGIN),
        &format!("reason=superseded&confirm=web&csrf={}", r.csrf),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(text(&refused).contains("needs one of the scopes: admin, operator"));
    let refused = get(&app, "/ui/audit", Some(&r.cookie)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let a = login(&app, &admin).await;
    let renewed = post(
        &app,
        "/ui/certificates/web/renew",
        Some(&a.cookie),
        Some(ORIGIN),
        &format!("csrf={}", a.csrf),
    )
    .await;
    assert_eq!(renewed.status, StatusCode::SEE_OTHER);
    assert_eq!(renewed.headers[header::LOCATION], "/ui/certificates/web");
    let events = app
        .call(
            "GET",
            "/api/v1/audit-events?action=certificate.renew",
            Some(&admin),
            None,
        )
        .await
        .json();
    let event = &events["items"][0];
    assert!(
        event["actor"].as_str().unwrap().starts_with("token:"),
        "{event}"
    );
    assert_eq!(event["subject"], format!("certificate:{}", cert.id));
    let page = text(&get(&app, "/ui/certificates/web", Some(&a.cookie)).await);
    assert!(page.contains("manual order"), "the renewal order is shown");

    // Revocation needs the typed name.
    let wrong = post(
        &app,
        "/ui/certificates/web/revoke",
        Some(&a.cookie),
        Some(ORIGIN),
        &format!("reason=superseded&confirm=wbe&csrf={}", a.csrf),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text(&wrong).contains("type the certificate"));

    let created = post(&app, "/ui/certificates", Some(&a.cookie), Some(ORIGIN), &format!("name=api&dns_names=api.example.com%0D%0Aapi2.example.com&account=acme&key_type=ecdsa-p384&csrf={}", a.csrf)).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", text(&created));
    let api = app.state.db.certificate_by_name("api").await.unwrap();
    assert_eq!(api.dns_names, ["api.example.com", "api2.example.com"]);
    let outside = post(
        &app,
        "/ui/certificates",
        Some(&a.cookie),
        Some(ORIGIN),
        &format!(
            "name=x&dns_names=x.example.org&account=acme&key_type=ecdsa-p256&csrf={}",
            a.csrf
        ),
    )
    .await;
    assert_eq!(outside.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(text(&outside).contains("outside account"));

    let retired = post(
        &app,
        "/ui/certificates/web/retire",
        Some(&a.cookie),
        Some(ORIGIN),
        &format!("csrf={}", a.csrf),
    )
    .await;
    assert_eq!(retired.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.state.db.certificate(cert.id).await.unwrap().state,
        crate::model::CertificateState::Retired
    );
}

async fn an_oidc_session_acts_as_its_subject(app: TestApp) {
    let account = app.account("acme").await;
    let cert = app.certificate(&account, "web", &["www.example.com"]).await;
    let opened = session::open(
        &app.state,
        SessionOwner::Oidc {
            subject: "alice-1234".into(),
            display: "Alice Example".into(),
            scopes: vec![Scope::Operator],
        },
    )
    .await
    .unwrap();
    let (parts, body) = opened.into_parts();
    let opened = Resp {
        status: parts.status,
        headers: parts.headers,
        body: axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    };
    let b = browser_from(&app, opened).await;
    assert!(text(&get(&app, "/ui/", Some(&b.cookie)).await).contains("Alice Example"));
    let r = post(
        &app,
        "/ui/certificates/web/retire",
        Some(&b.cookie),
        Some(ORIGIN),
        &format!("csrf={}", b.csrf),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let admin = app.token(ADMIN, &[]).await;
    let events = app
        .call(
            "GET",
            "/api/v1/audit-events?action=certificate.retire",
            Some(&admin),
            None,
        )
        .await
        .json();
    assert_eq!(events["items"][0]["actor"], "oidc:alice-1234");
    assert_eq!(
        events["items"][0]["subject"],
        format!("certificate:{}", cert.id)
    );
    // Operator, not admin: the token list is refused with the scope it needs.
    let refused = get(&app, "/ui/tokens", Some(&b.cookie)).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(text(&refused).contains("needs one of the scopes: admin"));
}

async fn the_first_page_of_10000_certificates_takes_one_query_per_list(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let account = app.account("acme").await;
    let template = app
        .certificate(&account, "cert-0", &["cert-0.example.com"])
        .await;
    app.issue(&template, 60).await;
    // 9,999 copies of the issued template, in one statement per backend.
    let copies = if app.backend == "sqlite" {
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 9999) INSERT INTO certificates (id, name, dns_names, key_type, account_id, renew_fraction, renew_days, state, current_version_id, renew_after, consecutive_failures, last_error, created_by, created_at, updated_at, current_not_after) SELECT randomblob(16), 'cert-' || i, '[\"cert-' || i || '.example.com\"]', key_type, account_id, renew_fraction, renew_days, state, current_version_id, renew_after, consecutive_failures, last_error, created_by, created_at, updated_at, current_not_after FROM certificates, n"
    } else {
        "INSERT INTO certificates (id, name, dns_names, key_type, account_id, renew_fraction, renew_days, state, current_version_id, renew_after, consecutive_failures, last_error, created_by, created_at, updated_at, current_not_after) SELECT gen_random_uuid(), 'cert-' || i, '[\"cert-' || i || '.example.com\"]', key_type, account_id, renew_fraction, renew_days, state, current_version_id, renew_after, consecutive_failures, last_error, created_by, created_at, updated_at, current_not_after FROM certificates, generate_series(1, 9999) AS i"
    };
    assert_eq!(app.state.db.execute_raw(copies).await.unwrap(), 9999);
    let b = login(&app, &admin).await;
    for path in [
        "/ui/certificates",
        "/ui/certificates?expiring=90d",
        "/ui/certificates?q=cert-99",
    ] {
        let before = app.state.db.statements_run();
        let page = get(&app, path, Some(&b.cookie)).await;
        let statements = app.state.db.statements_run() - before;
        assert_eq!(page.status, StatusCode::OK);
        let html = text(&page);
        let rows = html.matches("<td><a href=\"/ui/certificates/cert-").count();
        assert_eq!(rows, 50, "{path}: one page of 50");
        assert!(html.contains("Next page"), "{path}");
        // The session and its token (2), the page of certificates (1), their current
        // versions (1), the account filter's list (1): never one per row.
        assert_eq!(statements, 5, "{path}: statements for one page");
    }
}

async fn search_matches_names_and_sans_literally(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let account = app.account("acme").await;
    app.certificate(&account, "shop_eu", &["www.example.com"])
        .await;
    app.certificate(&account, "shopXeu", &["shop.example.com"])
        .await;
    app.certificate(&account, "Mail", &["smtp.example.com"])
        .await;
    let names = |q: &'static str| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let r = app
                .call(
                    "GET",
                    &format!("/api/v1/certificates?search={q}"),
                    Some(&admin),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{q}: {}", text(&r));
            let mut names: Vec<String> = r.json()["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            names
        }
    };
    // `_` and `%` are no wildcards; names match case-insensitively, SANs too.
    assert_eq!(names("p_e").await, ["shop_eu"]);
    assert_eq!(names("%25").await, Vec::<String>::new());
    assert_eq!(names("SHOP").await, ["shopXeu", "shop_eu"]);
    assert_eq!(names("smtp").await, ["Mail"]);
    assert_eq!(names("mail").await, ["Mail"]);
    let too_long = "x".repeat(101);
    let r = app
        .call(
            "GET",
            &format!("/api/v1/certificates?search={too_long}"),
            Some(&admin),
            None,
        )
        .await;
    r.problem(422);
    // The dashboard's list uses the same search.
    let b = login(&app, &admin).await;
    let page = text(&get(&app, "/ui/certificates?q=p_e", Some(&b.cookie)).await);
    assert!(
        page.contains(">shop_eu</a>") && !page.contains(">shopXeu</a>"),
        "{page}"
    );
}

#[tokio::test]
async fn failed_logins_count_in_the_api_limiter() {
    let app = TestApp::on(crate::testkit::TestDb::sqlite().await, |c| {
        c.auth_failures_per_minute = 2;
    })
    .await;
    for _ in 0..2 {
        let r = post(&app, "/ui/login", None, Some(ORIGIN), "token=ck_wrong").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = post(&app, "/ui/login", None, Some(ORIGIN), "token=ck_wrong").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(text(&r).contains("Too many failed logins"));
    // The same count limits the API's bearer tokens.
    app.call("GET", "/api/v1/certificates", Some("ck_wrong"), None)
        .await
        .problem(429);
}

#[tokio::test]
async fn a_disabled_dashboard_is_not_served() {
    let app = TestApp::on(crate::testkit::TestDb::sqlite().await, |c| {
        c.ui.enabled = false;
    })
    .await;
    for path in ["/", "/ui/", "/ui/login"] {
        get(&app, path, None).await.problem(404);
    }
    let r = post(&app, "/ui/login", None, Some(ORIGIN), "token=x").await;
    r.problem(404);
}

async fn assigning_from_the_dashboard_is_a_key_delivery_act(app: TestApp) {
    let admin = app.token(ADMIN, &[]).await;
    let operator = app.token(&[Scope::Operator], &[]).await;
    let account = app.account("acme").await;
    let cert = app.certificate(&account, "web", &["www.example.com"]).await;
    app.issue(&cert, 60).await;
    let r = app
        .call(
            "POST",
            "/api/v1/agents",
            Some(&admin),
            Some(serde_json::json!({"name": "iis-01", "ccs_password": "ccs-secret-1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // An operator without `export` may not let keys reach a host: refused, audited, explained.
    let o = login(&app, &operator).await;
    let page = text(&get(&app, "/ui/certificates/web", Some(&o.cookie)).await);
    assert!(
        page.contains("<option value=\"iis-01\">"),
        "the agent is offered"
    );
    let refused = post(
        &app,
        "/ui/certificates/web/assign",
        Some(&o.cookie),
        Some(ORIGIN),
        &format!("agent=iis-01&csrf={}", o.csrf),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        text(&refused).contains("needs the `export` scope"),
        "{}",
        text(&refused)
    );
    let denied = app
        .call(
            "GET",
            "/api/v1/audit-events?action=agent.assign",
            Some(&admin),
            None,
        )
        .await
        .json();
    assert_eq!(denied["items"][0]["outcome"], "denied");

    let a = login(&app, &admin).await;
    let r = post(
        &app,
        "/ui/certificates/web/assign",
        Some(&a.cookie),
        Some(ORIGIN),
        &format!("agent=iis-01&csrf={}", a.csrf),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    let page = text(&get(&app, "/ui/certificates/web", Some(&a.cookie)).await);
    assert!(
        page.contains("<td>iis-01</td>") && page.contains("state-pending"),
        "assigned, not installed yet: {page}"
    );
    assert!(page.contains("not probed"), "{page}");
    // What the agent's probe saw served shows next to what it installed.
    let agent = app.state.db.agent_by_name("iis-01").await.unwrap();
    let probe = crate::db::served::NewServed {
        certificate_id: cert.id,
        target: "ccs",
        address: "127.0.0.1:443",
        name: "www.example.com",
        status: ServedStatus::Stale,
        thumbprint: Some("00"),
        error: None,
        expected: "11",
    };
    app.state
        .db
        .record_probes(agent.id, &[probe], crate::now())
        .await
        .unwrap();
    let page = text(&get(&app, "/ui/certificates/web", Some(&a.cookie)).await);
    assert!(
        page.contains(
            "www.example.com @ 127.0.0.1:443: <span class=\"badge state-stale\">stale</span>"
        ),
        "{page}"
    );
    let agents = text(&get(&app, "/ui/agents", Some(&a.cookie)).await);
    assert!(agents.contains("href=\"/ui/certificates/web\""), "{agents}");

    // Unassigning needs no key-delivery right.
    let r = post(
        &app,
        "/ui/certificates/web/unassign",
        Some(&o.cookie),
        Some(ORIGIN),
        &format!("agent=iis-01&csrf={}", o.csrf),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let page = text(&get(&app, "/ui/certificates/web", Some(&a.cookie)).await);
    assert!(page.contains("Not assigned to any agent."));
}

async fn idle_and_old_sessions_end(app: TestApp) {
    let reader = app.token(&[Scope::Reader], &[]).await;
    let session_hash = |b: &Browser| {
        crate::bootstrap::token_hash(b.cookie.strip_prefix("certkeep_session=").unwrap())
    };
    // Unused for longer than `session_idle_secs`, then past `session_max_secs`.
    for stale in [
        "UPDATE ui_sessions SET last_seen_at = '2000-01-01T00:00:00Z'",
        "UPDATE ui_sessions SET expires_at = '2000-01-01T00:00:00Z'",
    ] {
        let b = login(&app, &reader).await;
        assert_eq!(
            get(&app, "/ui/agents", Some(&b.cookie)).await.status,
            StatusCode::OK
        );
        app.state.db.execute_raw(stale).await.unwrap();
        let r = get(&app, "/ui/agents", Some(&b.cookie)).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{stale}");
        assert_eq!(r.headers[header::LOCATION], "/ui/login");
        assert!(
            matches!(
                app.state.db.ui_session(&session_hash(&b)).await,
                Err(crate::db::Error::NotFound)
            ),
            "{stale}: deleted"
        );
    }
    // A forged cookie is no session either.
    let r = get(&app, "/ui/", Some("certkeep_session=forged")).await;
    assert_eq!(r.headers[header::LOCATION], "/ui/login");
}
