//! A server's database seeded directly, as the agent tests and the benchmarks need it: one ACME
//! account, certificates with an issued version from an rcgen test CA, pending agents holding a
//! join token (for enrollment over the real agent listener) and their targets.

use certkeep_api_types::pfx::testing::{KeyKind, TestCa};
use certkeep_api_types::target::TargetSettings;
use certkeep_server::app::AppState;
use certkeep_server::bootstrap::{new_token_secret, token_hash};
use certkeep_server::db;
use certkeep_server::db::accounts::NewAccount;
use certkeep_server::db::agents::NewAgent;
use certkeep_server::db::certificates::NewCertificate;
use certkeep_server::db::targets::{AgentTarget, NewTarget};
use certkeep_server::db::tokens::NewToken;
use certkeep_server::model::{
    AccountId, AgentId, Certificate, CertificateVersion, KeyType, PfxEncryption, RenewalPolicy,
    Scope, TokenId,
};
use zeroize::Zeroizing;

/// Stores an API token `name` with `scopes` (every domain, no expiry) in `state`; returns its
/// id (the audit actor is `token:<id>`) and its secret.
pub async fn api_token(
    state: &AppState,
    name: &str,
    scopes: &[Scope],
) -> Result<(TokenId, Zeroizing<String>), db::Error> {
    let secret = new_token_secret();
    let token = state
        .db
        .insert_token(
            &NewToken {
                name,
                hash: &token_hash(&secret),
                scopes,
                domain_patterns: &[],
                expires_at: None,
                created_by: None,
            },
            certkeep_server::now(),
        )
        .await?;
    Ok((token.id, secret))
}

/// A server's state with the ACME account `test-ca` (allowed `*.example.com` and
/// `example.com`, no EAB, never contacted) and a test CA that signs the chains of stored
/// versions.
pub struct Seeded {
    pub state: AppState,
    pub account: AccountId,
    pub test_ca: TestCa,
}

impl Seeded {
    /// Stores the account in `state` (usually a running `TestServer`'s).
    pub async fn on(state: &AppState) -> Result<Self, db::Error> {
        let account = state
            .db
            .insert_account(
                &state.secrets,
                &NewAccount {
                    name: "test-ca",
                    directory_url: "https://ca.invalid/dir",
                    contact: &[],
                    allowed_domains: &["*.example.com".into(), "example.com".into()],
                    eab_kid: None,
                    eab_hmac: None,
                    extra_roots_pem: None,
                },
                certkeep_server::now(),
            )
            .await?
            .id;
        Ok(Self {
            state: state.clone(),
            account,
            test_ca: TestCa::new(),
        })
    }

    /// Defines an ECDSA P-256 certificate for `names` and stores an issued current version.
    pub async fn certificate(&self, name: &str, names: &[&str]) -> Result<Certificate, db::Error> {
        let cert = self
            .state
            .db
            .insert_certificate(
                &NewCertificate {
                    name,
                    dns_names: &names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
                    key_type: KeyType::EcdsaP256,
                    account_id: self.account,
                    policy: RenewalPolicy::default(),
                    created_by: None,
                },
                certkeep_server::now(),
            )
            .await?;
        self.issue(&cert, names).await?;
        Ok(cert)
    }

    /// Stores a new current version of `cert` for `names`, valid for 90 days from now.
    pub async fn issue(
        &self,
        cert: &Certificate,
        names: &[&str],
    ) -> Result<CertificateVersion, db::Error> {
        let leaf = self.test_ca.leaf(names, KeyKind::Ecdsa);
        certkeep_server::testkit::store_test_version(
            &self.state.db,
            &self.state.secrets,
            cert.id,
            &leaf,
            time::Duration::days(90),
        )
        .await
    }

    /// Creates a pending agent with `ccs_password` (legacy PFX encryption) and a join token
    /// that expires `expires_in` from now; returns the agent and the token.
    pub async fn pending_agent(
        &self,
        name: &str,
        ccs_password: &str,
        expires_in: time::Duration,
    ) -> Result<(AgentId, Zeroizing<String>), db::Error> {
        let token = new_token_secret();
        let now = certkeep_server::now();
        let agent = self
            .state
            .db
            .insert_agent(
                &self.state.secrets,
                &NewAgent {
                    name,
                    join_token_hash: &token_hash(&token),
                    join_token_expires_at: now + expires_in,
                    ccs_password,
                    pfx_mode: PfxEncryption::Legacy,
                },
                now,
            )
            .await?;
        Ok((agent.id, token))
    }

    /// Gives `agent` a target of `settings` named `name`, without a probe; assignments that
    /// name no target go to it.
    pub async fn target(
        &self,
        agent: AgentId,
        name: &str,
        settings: TargetSettings,
    ) -> Result<AgentTarget, db::Error> {
        self.state
            .db
            .insert_target(
                &NewTarget {
                    agent_id: agent,
                    name,
                    settings: &settings,
                    probe: &[],
                },
                certkeep_server::now(),
            )
            .await
    }
}
