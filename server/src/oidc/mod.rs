//! Login with campus SSO: an OpenID Connect relying party (authorization code flow with PKCE,
//! the `openidconnect` crate).
//!
//! [`OidcClient::begin`] stores a pending login (state as its SHA-256, nonce, sealed PKCE
//! verifier) in the database, so any server process sharing it can complete the login, and
//! returns the IdP's authorization URL. [`OidcClient::complete`] takes that row exactly once,
//! redeems the code at the token endpoint and verifies the ID token: signature (asymmetric
//! algorithms only, keys from the IdP's JWKS), `iss`, `aud` (no other audience trusted),
//! `azp`, expiry, `nonce` and, when present, `at_hash`. The user's groups (claim
//! `groups_claim`) map to API scopes through `[ui.oidc.roles]`; a user in no mapped group is
//! refused. The IdP's metadata and keys are read on first use and re-read every
//! [`METADATA_TTL`], or at once when an ID token names a key they lack. Knows no HTML: `routes.rs` is the HTTP side.

pub mod config;
pub mod routes;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AsyncHttpClient, AuthorizationCode, Client, ClientId,
    ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    HttpRequest, HttpResponse, IdToken, IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, StandardErrorResponse,
    StandardTokenResponse, TokenResponse as _,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

pub use config::OidcConfig;

use crate::db::Db;
use crate::db::oidc_logins::OidcLogin;
use crate::model::Scope;
use crate::secrets::{Binding, Secrets, SecretsError};

/// How long the IdP's metadata and signing keys are used before they are read again.
pub const METADATA_TTL: Duration = Duration::from_secs(15 * 60);

/// Most logins pending at once (each row lives `login_ttl_secs`): an anonymous client cannot
/// fill the database by starting logins.
const MAX_PENDING_LOGINS: i64 = 10_000;

/// Largest answer read from the IdP.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Asymmetric signature algorithms accepted on ID tokens (never `none`, never HMAC with the
/// client secret).
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 8] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
];

/// The ID token's claims beyond the standard ones (the groups claim has a configurable name).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct OtherClaims {
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for OtherClaims {}

type IdTokenFieldsT = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type TokenResponseT = StandardTokenResponse<IdTokenFieldsT, CoreTokenType>;
type IdTokenT = IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type ProviderClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponseT,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A user the IdP vouched for, with the scopes their groups grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIdentity {
    /// The IdP's `sub`.
    pub subject: String,
    /// What to call them: `name`, else `preferred_username`, else `email`, else `sub`.
    pub display: String,
    /// Their groups as the IdP listed them.
    pub groups: Vec<String>,
    /// Granted scopes (never empty).
    pub scopes: Vec<Scope>,
}

/// Why a login failed. Messages name no token, code or secret.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider {issuer} cannot be used: {reason}")]
    Provider { issuer: String, reason: String },
    #[error("too many logins are in progress; try again in a few minutes")]
    Busy,
    #[error("this login is unknown or was already used; start the login again")]
    UnknownState,
    #[error(
        "this login was started in another browser, or its cookie expired; start the login again"
    )]
    OtherBrowser,
    #[error("this login took longer than {0} seconds; start the login again")]
    Expired(u64),
    #[error("the identity provider refused the login: {0}")]
    Refused(String),
    #[error("the ID token was refused: {0}")]
    InvalidToken(String),
    #[error("{0} is in no group that grants access to certkeep")]
    NoRole(String),
    /// `[ui.oidc]` or its client secret is unusable.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Sealed(#[from] SecretsError),
    #[error(transparent)]
    Db(#[from] crate::db::Error),
}

/// What the token endpoint answered for one login, before the ID token is verified.
pub struct Redeemed {
    /// The raw ID token (a compact JWS).
    pub id_token: String,
    /// The access token, for the `at_hash` check.
    pub access_token: SecretString,
    /// The nonce stored with the pending login.
    pub nonce: String,
}

/// The relying party: configuration, client secret, HTTP client and the cached IdP metadata.
pub struct OidcClient {
    config: OidcConfig,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    client_secret: ClientSecret,
    http: IdpHttp,
    secrets: Secrets,
    provider: tokio::sync::Mutex<Option<(Instant, Arc<ProviderClient>)>>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl OidcClient {
    /// Reads the client secret (file, or sealed value opened with `secrets`) and builds the
    /// HTTP client; the IdP is contacted on the first login.
    pub fn new(config: &OidcConfig, secrets: &Secrets) -> Result<Self, OidcError> {
        config
            .validate()
            .map_err(|e| OidcError::Config(e.to_string()))?;
        let secret = read_client_secret(config, secrets)?;
        let bad_url = |e: openidconnect::url::ParseError| OidcError::Provider {
            issuer: config.issuer.clone(),
            reason: e.to_string(),
        };
        Ok(Self {
            issuer: IssuerUrl::new(config.issuer.clone()).map_err(bad_url)?,
            redirect: RedirectUrl::new(config.redirect_url.clone()).map_err(bad_url)?,
            client_secret: ClientSecret::new(secret.to_string()),
            http: IdpHttp::new(config)?,
            secrets: secrets.clone(),
            config: config.clone(),
            provider: tokio::sync::Mutex::new(None),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    fn provider_error(&self, reason: impl std::fmt::Display) -> OidcError {
        OidcError::Provider {
            issuer: self.config.issuer.clone(),
            reason: reason.to_string(),
        }
    }

    /// The IdP's client, from metadata at most [`METADATA_TTL`] old, or read afresh.
    async fn provider(&self, fresh: bool) -> Result<Arc<ProviderClient>, OidcError> {
        let mut cached = self.provider.lock().await;
        if let Some((at, client)) = cached.as_ref()
            && at.elapsed() < METADATA_TTL
            && !fresh
        {
            return Ok(client.clone());
        }
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| self.provider_error(format!("discovery: {}", error_chain(&e))))?;
        if metadata.token_endpoint().is_none() {
            return Err(self.provider_error("its metadata names no token endpoint"));
        }
        let client = Arc::new(
            ProviderClient::from_provider_metadata(
                metadata,
                ClientId::new(self.config.client_id.clone()),
                Some(self.client_secret.clone()),
            )
            .set_redirect_uri(self.redirect.clone()),
        );
        *cached = Some((Instant::now(), client.clone()));
        Ok(client)
    }

    /// Starts a login: stores the pending login and returns the IdP URL to redirect to, and
    /// the state (for the browser-binding cookie).
    pub async fn begin(&self, db: &Db) -> Result<(String, String), OidcError> {
        let provider = self.provider(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = provider
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            request = request.add_scope(openidconnect::Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let id = Uuid::now_v7();
        let now = crate::now();
        let login = OidcLogin {
            id,
            state_hash: state_hash(state.secret()),
            nonce: nonce.secret().clone(),
            pkce_verifier_enc: self
                .secrets
                .seal(verifier_binding(id), verifier.secret().as_bytes())?,
            created_at: now,
            expires_at: now + ttl(&self.config),
        };
        if !db.insert_oidc_login(&login, MAX_PENDING_LOGINS).await? {
            return Err(OidcError::Busy);
        }
        Ok((url.to_string(), state.secret().clone()))
    }

    /// Takes the pending login for `state` (once) and redeems `code` at the token endpoint.
    pub async fn redeem(&self, db: &Db, code: &str, state: &str) -> Result<Redeemed, OidcError> {
        let login = db
            .take_oidc_login(&state_hash(state))
            .await?
            .ok_or(OidcError::UnknownState)?;
        if login.expires_at <= crate::now() {
            return Err(OidcError::Expired(self.config.login_ttl_secs));
        }
        let verifier = self
            .secrets
            .open_string(verifier_binding(login.id), &login.pkce_verifier_enc)?;
        let provider = self.provider(false).await?;
        let response = provider
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| self.provider_error(e))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => OidcError::Refused(format!(
                    "token endpoint: {}{}",
                    r.error(),
                    r.error_description()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                )),
                // Its answer holds tokens: a parse error could quote one, so it is not shown.
                RequestTokenError::Parse(..) => {
                    self.provider_error("the token endpoint's answer does not parse")
                }
                RequestTokenError::Request(e) => {
                    self.provider_error(format!("token endpoint: {}", error_chain(&e)))
                }
                RequestTokenError::Other(e) => self.provider_error(format!("token endpoint: {e}")),
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::InvalidToken("the token endpoint sent no ID token".into()))?;
        Ok(Redeemed {
            id_token: id_token.to_string(),
            access_token: SecretString::from(response.access_token().secret().clone()),
            nonce: login.nonce,
        })
    }

    /// Verifies a redeemed ID token and maps the user's groups to scopes.
    /// A token signed with a key the cached JWKS lacks makes the metadata be read again (the
    /// IdP rotated its keys); ID tokens reach this only from the token endpoint, over TLS.
    pub async fn verify(&self, redeemed: &Redeemed) -> Result<OidcIdentity, OidcError> {
        let invalid = |e: &dyn std::fmt::Display| OidcError::InvalidToken(e.to_string());
        // A parse error could quote the token: it is not shown.
        let token: IdTokenT = redeemed.id_token.parse().map_err(|_: serde_json::Error| {
            OidcError::InvalidToken("the ID token is not a JWT this server can read".into())
        })?;
        let mut provider = self.provider(false).await?;
        let unknown_key = matches!(
            token.signing_key(&provider.id_token_verifier()),
            Err(openidconnect::SignatureVerificationError::NoMatchingKey)
        );
        if unknown_key {
            tracing::info!(oidc.issuer = %self.config.issuer, "ID token signed with an unknown key: reading the IdP's keys again");
            provider = self.provider(true).await?;
        }
        let verifier = provider.id_token_verifier().set_allowed_algs(ALLOWED_ALGS);
        let claims = token
            .claims(&verifier, &Nonce::new(redeemed.nonce.clone()))
            .map_err(|e| invalid(&e))?;
        if let Some(expected) = claims.access_token_hash() {
            let alg = token.signing_alg().map_err(|e| invalid(&e))?;
            let key = token.signing_key(&verifier).map_err(|e| invalid(&e))?;
            let actual = AccessTokenHash::from_token(
                &openidconnect::AccessToken::new(redeemed.access_token.expose_secret().to_owned()),
                alg,
                key,
            )
            .map_err(|e| invalid(&e))?;
            if actual != *expected {
                return Err(OidcError::InvalidToken(
                    "at_hash does not match the access token".into(),
                ));
            }
        }
        let subject = claims.subject().to_string();
        let localized = |c: Option<&openidconnect::LocalizedClaim<_>>| {
            c.and_then(|c| c.get(None))
                .map(|v: &openidconnect::EndUserName| v.to_string())
        };
        let display = localized(claims.name())
            .or_else(|| claims.preferred_username().map(|u| u.to_string()))
            .or_else(|| claims.email().map(|e| e.to_string()))
            .unwrap_or_else(|| subject.clone());
        let groups = groups_of(
            &claims.additional_claims().claims,
            &self.config.groups_claim,
        )?;
        let scopes = self
            .config
            .scopes_for(groups.iter().map(String::as_str))
            .ok_or_else(|| OidcError::NoRole(display.clone()))?;
        Ok(OidcIdentity {
            subject,
            display,
            groups,
            scopes,
        })
    }

    /// The callback's work: [`Self::redeem`] then [`Self::verify`].
    pub async fn complete(
        &self,
        db: &Db,
        code: &str,
        state: &str,
    ) -> Result<OidcIdentity, OidcError> {
        let redeemed = self.redeem(db, code, state).await?;
        self.verify(&redeemed).await
    }
}

/// The groups in claim `name`: a list of strings or one string; absent means none.
fn groups_of(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Vec<String>, OidcError> {
    let bad = || OidcError::InvalidToken(format!("claim `{name}` is not a list of group names"));
    match claims.get(name) {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::String(g)) => Ok(vec![g.clone()]),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

fn ttl(config: &OidcConfig) -> time::Duration {
    time::Duration::seconds(i64::try_from(config.login_ttl_secs).unwrap_or(i64::MAX))
}

fn state_hash(state: &str) -> Vec<u8> {
    Sha256::digest(state.as_bytes()).to_vec()
}

fn verifier_binding(id: Uuid) -> Binding {
    Binding::new("oidc_logins", "pkce_verifier_enc", id)
}

fn read_client_secret(
    config: &OidcConfig,
    secrets: &Secrets,
) -> Result<Zeroizing<String>, OidcError> {
    let secret = match (&config.client_secret_file, &config.client_secret_sealed) {
        (Some(path), _) => Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            OidcError::Config(format!(
                "ui.oidc.client_secret_file: cannot read {}: {e}",
                path.display()
            ))
        })?),
        (None, Some(sealed)) => {
            let bytes =
                secrets.open_sealed_value("ui.oidc.client_secret_sealed", sealed.as_bytes())?;
            Zeroizing::new(String::from_utf8(bytes.to_vec()).map_err(|_| {
                OidcError::Config("ui.oidc.client_secret_sealed is not UTF-8 text".into())
            })?)
        }
        (None, None) => {
            return Err(OidcError::Config(
                "set ui.oidc.client_secret_file or ui.oidc.client_secret_sealed".into(),
            ));
        }
    };
    let trimmed = Zeroizing::new(secret.trim().to_owned());
    if trimmed.is_empty() {
        return Err(OidcError::Config(
            "ui.oidc: the client secret is empty".into(),
        ));
    }
    Ok(trimmed)
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The HTTP client towards the IdP: reqwest with rustls, the system roots plus `ca_file`, a
/// per-request timeout, no redirects (an IdP endpoint that redirects is refused, so a hostile
/// metadata document cannot bounce requests elsewhere) and a cap on the answer's size.
struct IdpHttp {
    client: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
enum IdpHttpError {
    #[error(transparent)]
    Reqwest(#[from] reqwest::Error),
    #[error("the answer exceeds {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    Http(#[from] http::Error),
}

impl IdpHttp {
    fn new(config: &OidcConfig) -> Result<Self, OidcError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.http_timeout_secs))
            .user_agent(concat!("certkeep/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let unusable = |reason: String| OidcError::Provider {
                issuer: config.issuer.clone(),
                reason: format!("ca_file {}: {reason}", path.display()),
            };
            let pem = std::fs::read(path).map_err(|e| unusable(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| unusable(format!("not a PEM certificate: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder.build().map_err(|e| OidcError::Provider {
            issuer: config.issuer.clone(),
            reason: format!("cannot set up TLS: {e}"),
        })?;
        Ok(Self { client })
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, IdpHttpError> {
        let mut response = self
            .client
            .execute(reqwest::Request::try_from(request)?)
            .await?;
        let mut builder = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(IdpHttpError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(builder.body(body)?)
    }
}

impl<'c> AsyncHttpClient<'c> for IdpHttp {
    type Error = IdpHttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, IdpHttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_a_list_or_one_string() {
        let claims = |v: serde_json::Value| v.as_object().unwrap().clone();
        let c = claims(
            serde_json::json!({"groups": ["a", "b"], "role": "x", "n": 3, "mixed": ["a", 1]}),
        );
        assert_eq!(groups_of(&c, "groups").unwrap(), ["a", "b"]);
        assert_eq!(groups_of(&c, "role").unwrap(), ["x"]);
        assert!(groups_of(&c, "absent").unwrap().is_empty());
        for bad in ["n", "mixed"] {
            let err = groups_of(&c, bad).unwrap_err().to_string();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    /// A configuration for an IdP that is never contacted, its secret in a file in `dir`.
    fn offline_config(dir: &std::path::Path) -> OidcConfig {
        let file = dir.join("secret");
        std::fs::write(&file, "file-secret-1234\n").unwrap();
        toml::from_str(&format!(
            "issuer = \"https://sso.example.edu\"\nclient_id = \"certkeep\"\nclient_secret_file = {file:?}\nredirect_url = \"https://c.example.edu/ui/oidc/callback\"\n[roles]\n\"a\" = \"admin\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_client_secret_comes_from_a_file_or_a_sealed_value_and_is_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::generate();
        let mut config = offline_config(dir.path());
        let client = OidcClient::new(&config, &secrets).unwrap();
        assert_eq!(client.client_secret.secret(), "file-secret-1234");
        assert!(!format!("{client:?}").contains("file-secret"));

        let recipient: age::x25519::Recipient = secrets.recipient().parse().unwrap();
        let sealed = age::encrypt_and_armor(&recipient, b"sealed-secret-5678").unwrap();
        config.client_secret_file = None;
        config.client_secret_sealed = Some(sealed.clone());
        let client = OidcClient::new(&config, &secrets).unwrap();
        assert_eq!(client.client_secret.secret(), "sealed-secret-5678");
        let err = OidcClient::new(&config, &Secrets::generate())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ui.oidc.client_secret_sealed"), "{err}");
        assert!(!err.contains("sealed-secret"), "{err}");

        config.client_secret_sealed = None;
        config.client_secret_file = Some(dir.path().join("missing"));
        let err = OidcClient::new(&config, &secrets).unwrap_err().to_string();
        assert!(
            err.contains("ui.oidc.client_secret_file: cannot read"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_expired_login_is_refused_and_used_up() {
        let t = crate::testkit::TestDb::sqlite().await;
        let dir = tempfile::tempdir().unwrap();
        let client = OidcClient::new(&offline_config(dir.path()), &Secrets::generate()).unwrap();
        let id = Uuid::now_v7();
        let now = crate::now();
        t.db.insert_oidc_login(
            &OidcLogin {
                id,
                state_hash: state_hash("late"),
                nonce: "n".into(),
                pkce_verifier_enc: client.secrets.seal(verifier_binding(id), b"v").unwrap(),
                created_at: now - time::Duration::minutes(20),
                expires_at: now - time::Duration::minutes(10),
            },
            10,
        )
        .await
        .unwrap();
        let late = client.redeem(&t.db, "code", "late").await;
        assert!(
            matches!(late, Err(OidcError::Expired(600))),
            "{:?}",
            late.err()
        );
        let again = client.redeem(&t.db, "code", "late").await;
        assert!(
            matches!(again, Err(OidcError::UnknownState)),
            "{:?}",
            again.err()
        );
    }
}
