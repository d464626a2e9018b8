//! Lookups shared by the resource modules: a path segment (id or unique name) to the model it
//! names, with the visibility rules applied where a caller may see only some rows. Knows no SQL
//! and no wire types; resource modules import it, never each other.

use uuid::Uuid;

use super::auth::Auth;
use super::error::ApiError;
use crate::app::AppState;
use crate::domain::names::all_covered;
use crate::model::{
    Account, AccountId, AccountState, Agent, AgentId, Certificate, CertificateId,
    CertificateVersion, VersionId,
};

/// A path segment naming a resource by id or by its unique name.
enum Key<'a> {
    Id(Uuid),
    Name(&'a str),
}

impl<'a> Key<'a> {
    /// A UUID is an id; anything else a name.
    fn parse(text: &'a str) -> Self {
        match Uuid::parse_str(text) {
            Ok(id) => Key::Id(id),
            Err(_) => Key::Name(text),
        }
    }
}

/// The account named by `key` (id or name).
pub(super) async fn find_account(state: &AppState, key: &str) -> Result<Account, ApiError> {
    Ok(match Key::parse(key) {
        Key::Id(id) => state.db.account(AccountId(id)).await?,
        Key::Name(name) => state.db.account_by_name(name).await?,
    })
}

/// The account a new certificate (created or imported) goes under: it must exist (a bad
/// `account` field, not 404), be usable, and allow every one of `names` (else an error on
/// `names_field`).
pub(super) async fn issuing_account(
    state: &AppState,
    key: &str,
    names: &[String],
    names_field: &str,
) -> Result<Account, ApiError> {
    let account = find_account(state, key).await.map_err(|e| match e {
        ApiError::NotFound => ApiError::field("account", format!("no account `{key}`")),
        other => other,
    })?;
    if matches!(
        account.state,
        AccountState::Deactivated | AccountState::Failed
    ) {
        return Err(ApiError::field(
            "account",
            format!("account `{}` is {}", account.name, account.state),
        ));
    }
    covered(&account, names, names_field)?;
    Ok(account)
}

/// Every one of `names` is within `account`'s allowed domains, else an error on `names_field`
/// naming the first one outside.
pub(super) fn covered(
    account: &Account,
    names: &[String],
    names_field: &str,
) -> Result<(), ApiError> {
    all_covered(&account.allowed_domains, names).map_err(|outside| {
        ApiError::field(
            names_field,
            format!(
                "`{outside}` is outside account `{}`'s allowed domains",
                account.name
            ),
        )
    })
}

/// The certificate named by `key` (id or name).
pub(super) async fn find_certificate(state: &AppState, key: &str) -> Result<Certificate, ApiError> {
    Ok(match Key::parse(key) {
        Key::Id(id) => state.db.certificate(CertificateId(id)).await?,
        Key::Name(name) => state.db.certificate_by_name(name).await?,
    })
}

/// The certificate named by `key` (id or name), if this caller may see it; 404 otherwise.
pub(super) async fn find_visible(
    state: &AppState,
    auth: &Auth,
    key: &str,
) -> Result<Certificate, ApiError> {
    let cert = find_certificate(state, key).await?;
    if !auth.can_see(&cert.dns_names) {
        return Err(ApiError::NotFound);
    }
    Ok(cert)
}

/// The requested version of `cert`, or its current one.
pub(super) async fn pick_version(
    state: &AppState,
    cert: &Certificate,
    requested: Option<Uuid>,
) -> Result<CertificateVersion, ApiError> {
    let id = match requested {
        Some(v) => VersionId(v),
        None => cert.current_version_id.ok_or_else(|| {
            ApiError::Conflict("the certificate has no issued version yet".into())
        })?,
    };
    let version = state.db.version(id).await?;
    if version.certificate_id != cert.id {
        return Err(ApiError::NotFound);
    }
    Ok(version)
}

/// The agent named by `key` (id or name).
pub(super) async fn find_agent(state: &AppState, key: &str) -> Result<Agent, ApiError> {
    Ok(match Key::parse(key) {
        Key::Id(id) => state.db.agent(AgentId(id)).await?,
        Key::Name(name) => state.db.agent_by_name(name).await?,
    })
}
