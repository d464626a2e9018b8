//! `TestApp`: the API router over a fresh database on either backend, driven in-process with
//! `tower::ServiceExt::oneshot`, plus fixtures (accounts, certificates, issued versions, tokens).

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use certkeep_api_types::pfx::testing::{KeyKind, TestCa};
use serde_json::Value;
use tower::ServiceExt as _;

use crate::app::AppState;
use crate::bootstrap::{new_token_secret, token_hash};
use crate::config::Config;
use crate::db::accounts::NewAccount;
use crate::db::agents::NewAgent;
use crate::db::certificates::NewCertificate;
use crate::db::tokens::NewToken;
use crate::model::{
    Account, AccountState, Agent, Certificate, CertificateVersion, KeyType, RenewalPolicy, Scope,
};
use crate::secrets::Secrets;
use crate::testkit::TestDb;

/// The API over one test database.
pub(super) struct TestApp {
    pub(super) state: AppState,
    pub(super) router: Router,
    pub(super) backend: &'static str,
    /// The database under the app (for what is at rest).
    pub(super) test_db: TestDb,
}

/// A response, body read.
pub(super) struct Resp {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
}

impl Resp {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }

    /// Asserts a problem document with `status`, and returns it.
    #[track_caller]
    pub(super) fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let p = self.json();
        assert_eq!(p["status"], status);
        assert!(
            p["type"]
                .as_str()
                .unwrap()
                .starts_with("https://certkeep.dev/problems/"),
            "{p}"
        );
        p
    }
}

impl TestApp {
    /// An app over `t`, after `adjust` edited the default configuration.
    pub(super) async fn on(t: TestDb, adjust: impl FnOnce(&mut Config)) -> Self {
        let secrets = Secrets::generate();
        let ca = crate::ca::InternalCa::load_or_create(&t.db, &secrets, crate::now())
            .await
            .unwrap();
        let mut config = Config::default();
        adjust(&mut config);
        let state = AppState::new(t.db.clone(), secrets, ca, config);
        let (router, _) = crate::api::router(state.clone());
        Self {
            state,
            router,
            backend: t.backend,
            test_db: t,
        }
    }

    /// An app on SQLite with the default configuration.
    pub(super) async fn sqlite() -> Self {
        Self::on(TestDb::sqlite().await, |_| {}).await
    }

    /// An app on a fresh PostgreSQL database with the default configuration; `None` when no
    /// PostgreSQL is available (a failure instead with `CERTKEEP_TEST_REQUIRE_POSTGRES`).
    pub(super) async fn postgres() -> Option<Self> {
        Some(Self::on(TestDb::postgres().await?, |_| {}).await)
    }

    /// A new token with these scopes (and issuer patterns); returns its secret.
    pub(super) async fn token(&self, scopes: &[Scope], patterns: &[&str]) -> String {
        let secret = new_token_secret();
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        self.state
            .db
            .insert_token(
                &NewToken {
                    name: "test",
                    hash: &token_hash(&secret),
                    scopes,
                    domain_patterns: &patterns,
                    expires_at: None,
                    created_by: None,
                },
                crate::now(),
            )
            .await
            .unwrap();
        secret.to_string()
    }

    /// Sends a prepared request.
    pub(super) async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        assert!(
            status != StatusCode::INTERNAL_SERVER_ERROR,
            "500: {}",
            String::from_utf8_lossy(&body)
        );
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Sends `method path` with an optional bearer token and JSON body.
    pub(super) async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&b).unwrap())),
            None => req.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    /// A registered account allowed to order `*.example.com` and `example.com`.
    pub(super) async fn account(&self, name: &str) -> Account {
        let a = self
            .state
            .db
            .insert_account(
                &self.state.secrets,
                &NewAccount {
                    name,
                    directory_url: "https://acme.invalid/directory",
                    contact: &[],
                    allowed_domains: &["*.example.com".into(), "example.com".into()],
                    eab_kid: Some("kid-1"),
                    eab_hmac: Some(&[7u8; 32]),
                    extra_roots_pem: None,
                },
                crate::now(),
            )
            .await
            .unwrap();
        self.state
            .db
            .set_account_state(a.id, AccountState::Valid, None, crate::now())
            .await
            .unwrap();
        self.state.db.account(a.id).await.unwrap()
    }

    /// A pending agent (join token never handed out).
    pub(super) async fn agent(&self, name: &str) -> Agent {
        self.state
            .db
            .insert_agent(
                &self.state.secrets,
                &NewAgent {
                    name,
                    join_token_hash: &[1; 32],
                    join_token_expires_at: crate::now() + time::Duration::hours(1),
                    ccs_password: "pw",
                    pfx_mode: crate::model::PfxEncryption::Legacy,
                },
                crate::now(),
            )
            .await
            .unwrap()
    }

    /// A certificate definition (no order queued).
    pub(super) async fn certificate(
        &self,
        account: &Account,
        name: &str,
        names: &[&str],
    ) -> Certificate {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        self.state
            .db
            .insert_certificate(
                &NewCertificate {
                    name,
                    dns_names: &names,
                    key_type: KeyType::EcdsaP256,
                    account_id: account.id,
                    policy: RenewalPolicy::default(),
                    created_by: None,
                },
                crate::now(),
            )
            .await
            .unwrap()
    }

    /// Stores an rcgen-issued version of `cert` (leaf + intermediate), making it current.
    /// Returns it with its PKCS#8 key.
    pub(super) async fn issue(
        &self,
        cert: &Certificate,
        days: i64,
    ) -> (CertificateVersion, Vec<u8>) {
        let names: Vec<&str> = cert.dns_names.iter().map(String::as_str).collect();
        let leaf = TestCa::new().leaf(&names, KeyKind::Ecdsa);
        let version = crate::testkit::store_test_version(
            &self.state.db,
            &self.state.secrets,
            cert.id,
            &leaf,
            time::Duration::days(days),
        )
        .await
        .unwrap();
        (version, leaf.key_pkcs8_der)
    }
}
