//! Bearer authentication: the failed-authentication limiter.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};

use super::ADMIN;
use super::testapp::TestApp;

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
