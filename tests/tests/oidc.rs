//! SSO login against a real OpenID Provider (`oidc-provider` on Node, `tests/oidc-idp/`):
//! the relying party's begin/complete with group → scope mapping, the ID token checks
//! (audience, signature, nonce, single-use state) and the two browser routes of a running
//! server. Skipped (loudly) without Node or `npm ci` in tests/oidc-idp, unless
//! `CERTKEEP_TEST_REQUIRE_NODE=1`.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers: a failed set-up is a failed test"
)]

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use certkeep_server::model::Scope;
use certkeep_server::oidc::config::RoleScopes;
use certkeep_server::oidc::{OidcClient, OidcConfig, OidcError, Redeemed};
use certkeep_server::secrets::Secrets;
use certkeep_server::testkit::{TestDb, TestServer};
use certkeep_testsupport::oidc_idp::{IdpClient, OidcIdp};
use reqwest::{StatusCode, Url, header};

/// Where the IdP sends the relying-party tests' browser back; never contacted.
const REDIRECT: &str = "https://certkeep.test/ui/oidc/callback";

fn idp_client(client_id: &str, redirect_uri: &str) -> IdpClient {
    IdpClient {
        client_id: client_id.into(),
        client_secret: format!("{client_id}-secret-0123456789abcdef"),
        redirect_uri: redirect_uri.into(),
    }
}

/// The `[ui.oidc]` of `client` at `issuer`, its secret in a file under `dir`.
fn config(issuer: &str, client: &IdpClient, dir: &std::path::Path) -> OidcConfig {
    let secret_file = dir.join(format!("{}.secret", client.client_id));
    std::fs::write(&secret_file, format!("{}\n", client.client_secret)).unwrap();
    OidcConfig {
        issuer: issuer.into(),
        client_id: client.client_id.clone(),
        client_secret_file: Some(secret_file),
        client_secret_sealed: None,
        redirect_url: client.redirect_uri.clone(),
        scopes: vec!["profile".into(), "groups".into()],
        groups_claim: "groups".into(),
        roles: BTreeMap::from([
            ("pki-admins".into(), RoleScopes(vec![Scope::Admin])),
            ("pki-readers".into(), RoleScopes(vec![Scope::Reader])),
        ]),
        ca_file: None,
        login_ttl_secs: 600,
        http_timeout_secs: 10,
    }
}

/// A browser without JavaScript: follows redirects itself, keeps the IdP's cookies and fills
/// in the dev login form (any password).
struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let response = request
            .header(header::COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        for value in response.headers().get_all(header::SET_COOKIE) {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.insert(name.into(), value.into());
        }
        response
    }

    /// Signs `user` in at the IdP from `auth_url` and returns the URL the IdP redirects to
    /// (the callback, with `code` and `state`).
    async fn sign_in(&mut self, auth_url: &str, user: &str, callback: &str) -> Url {
        let mut url = Url::parse(auth_url).unwrap();
        for _ in 0..10 {
            let response = self.send(self.http.get(url.clone())).await;
            let response = if response.status() == StatusCode::OK {
                let page = response.text().await.unwrap();
                assert!(
                    page.contains("name=\"prompt\" value=\"login\""),
                    "unexpected IdP page: {page}"
                );
                let action = page
                    .split("action=\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .expect("login form action");
                // The user names are plain ASCII: nothing to percent-encode.
                let form = format!("prompt=login&login={user}&password=any");
                let post = self
                    .http
                    .post(url.join(action).unwrap())
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form);
                self.send(post).await
            } else {
                response
            };
            assert!(
                response.status().is_redirection(),
                "IdP answered {}",
                response.status()
            );
            let location = response.headers()[header::LOCATION].to_str().unwrap();
            url = url.join(location).unwrap();
            if url.as_str().starts_with(callback) {
                return url;
            }
        }
        panic!("the IdP did not redirect to {callback} within 10 steps");
    }
}

fn query(url: &Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("{url} has no {name}"))
        .1
        .into_owned()
}

/// The IdP with two clients, `certkeep` and `other-app`, and a relying party for each on one
/// database.
struct Rp {
    idp: OidcIdp,
    db: TestDb,
    certkeep: OidcClient,
    other: OidcClient,
    secrets: Secrets,
    dir: tempfile::TempDir,
}

fn clients() -> [IdpClient; 2] {
    [
        idp_client("certkeep", REDIRECT),
        idp_client("other-app", REDIRECT),
    ]
}

impl Rp {
    async fn start() -> Option<Self> {
        Self::start_with_id_token_ttl(600).await
    }

    async fn start_with_id_token_ttl(id_token_ttl_secs: u32) -> Option<Self> {
        let [certkeep, other] = clients();
        let idp = OidcIdp::start_with_id_token_ttl(&clients(), id_token_ttl_secs)?;
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::generate();
        let rp = |c: &IdpClient| OidcClient::new(&config(&idp.issuer, c, dir.path()), &secrets);
        Some(Self {
            certkeep: rp(&certkeep).unwrap(),
            other: rp(&other).unwrap(),
            db: TestDb::sqlite().await,
            idp,
            secrets,
            dir,
        })
    }

    /// A relying party for `client` of the IdP at `issuer`, on this database.
    fn client_of(&self, issuer: &str, client: &IdpClient) -> OidcClient {
        OidcClient::new(&config(issuer, client, self.dir.path()), &self.secrets).unwrap()
    }

    /// `client` starts a login, `user` signs in at the IdP: the callback's code and state.
    async fn sign_in(&self, client: &OidcClient, user: &str) -> (String, String) {
        let (auth_url, state) = client.begin(&self.db.db).await.unwrap();
        assert!(auth_url.starts_with(&client.config().issuer), "{auth_url}");
        let back = Browser::new().sign_in(&auth_url, user, REDIRECT).await;
        assert_eq!(query(&back, "state"), state);
        assert_eq!(query(&back, "iss"), client.config().issuer);
        (query(&back, "code"), state)
    }

    async fn redeemed(&self, client: &OidcClient, user: &str) -> Redeemed {
        let (code, state) = self.sign_in(client, user).await;
        client.redeem(&self.db.db, &code, &state).await.unwrap()
    }
}

fn invalid_token(result: Result<impl std::fmt::Debug, OidcError>) -> String {
    match result {
        Err(OidcError::InvalidToken(reason)) => reason,
        other => panic!("expected an invalid-token error, got {other:?}"),
    }
}

#[tokio::test]
async fn groups_map_to_scopes_and_a_user_in_no_mapped_group_is_refused() {
    let Some(rp) = Rp::start().await else { return };
    let (code, state) = rp.sign_in(&rp.certkeep, "alice").await;
    let alice = rp
        .certkeep
        .complete(&rp.db.db, &code, &state)
        .await
        .unwrap();
    assert_eq!(alice.subject, "alice");
    assert_eq!(alice.display, "Alice Admin");
    assert_eq!(alice.groups, ["pki-admins", "staff"]);
    assert_eq!(alice.scopes, [Scope::Admin]);

    let (code, state) = rp.sign_in(&rp.certkeep, "bob").await;
    let bob = rp
        .certkeep
        .complete(&rp.db.db, &code, &state)
        .await
        .unwrap();
    assert_eq!(
        (bob.display.as_str(), bob.scopes.as_slice()),
        ("Bob Reader", &[Scope::Reader][..])
    );

    let (code, state) = rp.sign_in(&rp.certkeep, "carol").await;
    let err = rp
        .certkeep
        .complete(&rp.db.db, &code, &state)
        .await
        .unwrap_err();
    assert!(matches!(err, OidcError::NoRole(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Carol Student is in no group that grants access to certkeep"
    );
}

#[tokio::test]
async fn a_state_is_used_once() {
    let Some(rp) = Rp::start().await else { return };
    let (code, state) = rp.sign_in(&rp.certkeep, "alice").await;
    rp.certkeep
        .complete(&rp.db.db, &code, &state)
        .await
        .unwrap();
    let replay = rp.certkeep.complete(&rp.db.db, &code, &state).await;
    assert!(matches!(replay, Err(OidcError::UnknownState)), "{replay:?}");
    let unknown = rp.certkeep.complete(&rp.db.db, &code, "made-up").await;
    assert!(
        matches!(unknown, Err(OidcError::UnknownState)),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn an_id_token_issued_to_another_client_is_refused() {
    let Some(rp) = Rp::start().await else { return };
    let redeemed = rp.redeemed(&rp.other, "alice").await;
    // A valid token, for its own audience.
    rp.other.verify(&redeemed).await.unwrap();
    let reason = invalid_token(rp.certkeep.verify(&redeemed).await);
    assert!(reason.contains("Invalid audiences"), "{reason}");
    assert!(reason.contains("certkeep"), "{reason}");
}

#[tokio::test]
async fn an_id_token_with_a_bad_signature_is_refused() {
    let Some(rp) = Rp::start().await else { return };
    let redeemed = rp.redeemed(&rp.certkeep, "bob").await;
    let parts: Vec<&str> = redeemed.id_token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS");
    let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert!(claims.contains("\"pki-readers\""), "{claims}");
    // Bob promotes himself: the payload changes, the IdP's signature stays.
    let promoted = URL_SAFE_NO_PAD.encode(claims.replace("\"pki-readers\"", "\"pki-admins\""));
    let forged = Redeemed {
        id_token: format!("{}.{promoted}.{}", parts[0], parts[2]),
        ..redeemed
    };
    let reason = invalid_token(rp.certkeep.verify(&forged).await);
    assert_eq!(reason, "Signature verification failed");
    let garbled = Redeemed {
        id_token: format!("{}.{promoted}", parts[0]),
        ..forged
    };
    let reason = invalid_token(rp.certkeep.verify(&garbled).await);
    assert_eq!(reason, "the ID token is not a JWT this server can read");
    // The untouched token verifies, with bob's own scope.
    let genuine = Redeemed {
        id_token: parts.join("."),
        ..garbled
    };
    let bob = rp.certkeep.verify(&genuine).await.unwrap();
    assert_eq!(bob.scopes, [Scope::Reader]);
}

#[tokio::test]
async fn an_id_token_for_another_login_nonce_is_refused() {
    let Some(rp) = Rp::start().await else { return };
    let redeemed = rp.redeemed(&rp.certkeep, "alice").await;
    let other_login = Redeemed {
        nonce: "the-nonce-of-another-login".into(),
        ..redeemed
    };
    let reason = invalid_token(rp.certkeep.verify(&other_login).await);
    assert!(reason.contains("Invalid nonce"), "{reason}");
}

#[tokio::test]
async fn an_id_token_from_another_provider_is_refused() {
    let Some(rp) = Rp::start().await else { return };
    let impostor = OidcIdp::start(&clients()).unwrap();
    let impostor_rp = rp.client_of(&impostor.issuer, &clients()[0]);
    // Same client id and user, signed by another provider's keys.
    let redeemed = rp.redeemed(&impostor_rp, "alice").await;
    impostor_rp.verify(&redeemed).await.unwrap();
    let reason = invalid_token(rp.certkeep.verify(&redeemed).await);
    assert!(reason.contains("Invalid issuer"), "{reason}");
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    let Some(rp) = Rp::start_with_id_token_ttl(1).await else {
        return;
    };
    let redeemed = rp.redeemed(&rp.certkeep, "alice").await;
    let payload = redeemed.id_token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while certkeep_server::now().unix_timestamp() <= exp {
        assert!(
            std::time::Instant::now() < deadline,
            "exp {exp} never passed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let reason = invalid_token(rp.certkeep.verify(&redeemed).await);
    assert!(reason.starts_with("Expired"), "{reason}");
}

#[tokio::test]
async fn new_signing_keys_of_the_idp_are_read_when_a_token_names_one() {
    let Some(mut rp) = Rp::start().await else {
        return;
    };
    let before = rp.redeemed(&rp.certkeep, "alice").await;
    rp.certkeep.verify(&before).await.unwrap();
    rp.idp.restart();
    // The cached keys are the old instance's; its tokens no longer verify after the re-read.
    let after = rp.redeemed(&rp.certkeep, "bob").await;
    assert_eq!(
        rp.certkeep.verify(&after).await.unwrap().scopes,
        [Scope::Reader]
    );
    let reason = invalid_token(rp.certkeep.verify(&before).await);
    assert_eq!(reason, "Signature verification failed");
}

#[tokio::test]
async fn the_login_routes_redirect_sign_in_and_refuse_a_callback_from_another_browser() {
    let port = certkeep_testsupport::free_port();
    let callback = format!("https://127.0.0.1:{port}/ui/oidc/callback");
    let client = idp_client("certkeep", &callback);
    let Some(idp) = OidcIdp::start(std::slice::from_ref(&client)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let oidc = config(&idp.issuer, &client, dir.path());
    let server = TestServer::start_with(|c| {
        c.api_addr = format!("127.0.0.1:{port}").parse().unwrap();
        c.ui.oidc = Some(oidc);
        c.auth_failures_per_minute = 5;
    })
    .await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(server.ca_file()).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let login = http
        .get(format!("{}/ui/login/oidc", server.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::FOUND);
    let cookie = login.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/ui/oidc"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let state_cookie = cookie.split(';').next().unwrap().to_owned();
    let auth_url = login.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let back = Browser::new().sign_in(&auth_url, "alice", &callback).await;
    assert_eq!(
        state_cookie,
        format!("certkeep_oidc_state={}", query(&back, "state"))
    );

    let page = |response: reqwest::Response| async move {
        let status = response.status();
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        (status, response.text().await.unwrap())
    };
    // The callback link opened in another browser (no state cookie): refused, login kept.
    let (status, body) = page(http.get(back.clone()).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("started in another browser"), "{body}");
    assert!(!body.contains(&query(&back, "code")), "{body}");

    let signed_in = http
        .get(back.clone())
        .header(header::COOKIE, &state_cookie)
        .send()
        .await
        .unwrap();
    let set_cookies: Vec<String> = signed_in
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        set_cookies
            .iter()
            .any(|c| c.starts_with("certkeep_oidc_state=;") && c.contains("Max-Age=0")),
        "{set_cookies:?}"
    );
    let session = set_cookies
        .iter()
        .find(|c| c.starts_with("certkeep_session="))
        .expect("a dashboard session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (status, body) = page(signed_in).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("Alice Admin") && body.contains("<code>admin</code>"),
        "{body}"
    );
    assert!(
        body.contains("url=/ui/"),
        "moves on to the dashboard: {body}"
    );
    // The session is the dashboard's: Alice is logged in (actor `oidc:<subject>`) as admin.
    let overview = http
        .get(format!("{}/ui/", server.api_url))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), StatusCode::OK);
    let overview = overview.text().await.unwrap();
    assert!(
        overview.contains("Alice Admin") && overview.contains("<h1>Overview</h1>"),
        "{overview}"
    );
    let tokens = http
        .get(format!("{}/ui/tokens", server.api_url))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(tokens.status(), StatusCode::OK, "admin may list tokens");
    // The SSO login itself is in the audit chain, with the subject as actor.
    let audit = http
        .get(format!("{}/ui/audit", server.api_url))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        audit.contains("ui.login") && audit.contains("oidc:alice"),
        "{audit}"
    );

    let (status, body) = page(
        http.get(back)
            .header(header::COOKIE, &state_cookie)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("already used"), "{body}");

    let (status, body) = page(
        http.get(format!(
            "{}/ui/oidc/callback?error=access_denied&error_description=%3Cb%3Eno%3C/b%3E",
            server.api_url
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("access_denied (&lt;b&gt;no&lt;/b&gt;)"),
        "{body}"
    );
    // Failed callbacks count in the API's failed-authentication limiter (5 a minute here; the
    // refusals above were three of them): soon refused with 429 without being looked at.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let status = http
            .get(format!(
                "{}/ui/oidc/callback?code=x&state=forged",
                server.api_url
            ))
            .send()
            .await
            .unwrap()
            .status();
        statuses.push(status);
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(statuses.len() <= 3, "{statuses:?}");
    server.stop().await;
}
