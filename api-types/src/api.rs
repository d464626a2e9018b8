//! REST API types (`/api/v1/...`), shared by the server and its admin CLI.
//!
//! Requests refuse unknown fields; responses accept them so an older CLI keeps working against a
//! newer server. Secrets in requests (HMAC keys, passwords) are redacted from `Debug`; responses
//! never carry them, except the one-time token and join-token secrets.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::OrderEventKind;
pub use crate::enums::DeploymentState;
use crate::enums::{
    AccountState, AgentState, CertificateState, DeploymentStatus, KeyType, OrderReason, OrderState,
    PfxEncryption, Scope,
};

#[cfg(feature = "schema")]
pub use self::constrained::{Label, MailtoUri, ResourceName, Secret};

/// An RFC 9457 problem document, the body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Problem {
    /// Stable URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong in this case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request field at fault, for validation errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Writes `Debug` for a request, printing `<redacted>` for the named secret fields.
macro_rules! redacted_debug {
    ($ty:ident { $($plain:ident),* ; $($secret:ident),* }) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($plain), &self.$plain))*
                    $(.field(stringify!($secret), &self.$secret.as_ref().map(|_| "<redacted>")))*
                    .finish()
            }
        }
    };
}

// ---------------------------------------------------------------- ACME accounts

/// Create an ACME account at a CA. The EAB key id and HMAC key are write-only.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CreateAccountRequest {
    /// Unique name, e.g. `incommon-rsa` (letters, digits, `.`, `_`, `-`; at most 64).
    #[cfg_attr(feature = "schema", schema(value_type = ResourceName))]
    pub name: String,
    /// ACME directory URL (`https://...`).
    #[cfg_attr(
        feature = "schema",
        schema(pattern = "^[Hh][Tt][Tt][Pp][Ss]://[^/?#\\s]+")
    )]
    pub directory_url: String,
    /// Contact URIs (`mailto:...`), at most 10.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(value_type = Vec<MailtoUri>, max_items = 10))]
    pub contact: Vec<String>,
    /// Names this account may order: exact names and `*.suffix` patterns. 1 to 100.
    #[cfg_attr(feature = "schema", schema(min_items = 1, max_items = 100))]
    pub allowed_domains: Vec<String>,
    /// External account binding key id (write-only), 1 to 100 characters.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(value_type = Option<Label>))]
    pub eab_kid: Option<String>,
    /// External account binding HMAC key, base64url as the CA hands it out (write-only).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(value_type = Option<Secret>))]
    pub eab_hmac_key: Option<String>,
    /// Extra PEM CA certificates trusted for the directory's TLS (test CAs).
    #[serde(default)]
    pub extra_roots_pem: Option<String>,
}

impl fmt::Debug for CreateAccountRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateAccountRequest")
            .field("name", &self.name)
            .field("directory_url", &self.directory_url)
            .field("allowed_domains", &self.allowed_domains)
            .field("eab_kid", &self.eab_kid.as_ref().map(|_| "<redacted>"))
            .field(
                "eab_hmac_key",
                &self.eab_hmac_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// Where an account's external account binding stands. The HMAC key is single use at the CA, so
/// it is kept (sealed) only until the account is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum EabBinding {
    /// The account was created without external account binding.
    None,
    /// The HMAC key is stored, sealed, until the account is registered.
    Pending,
    /// The account is registered; the HMAC key has been deleted.
    Bound,
}

/// An ACME account. Never carries the EAB key id or HMAC key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct AccountResponse {
    pub id: Uuid,
    pub name: String,
    pub directory_url: String,
    pub contact: Vec<String>,
    pub allowed_domains: Vec<String>,
    /// Whether the account was created with external account binding.
    pub external_account_binding: bool,
    /// `none`, `pending` (HMAC key held until registration) or `bound` (registered; the HMAC
    /// key is deleted).
    pub eab: EabBinding,
    pub state: AccountState,
    /// The account URL at the CA, once registered.
    pub account_url: Option<String>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

// ---------------------------------------------------------------- certificates

/// Define a certificate; the server orders it at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CreateCertificateRequest {
    /// Unique name, e.g. `www` (letters, digits, `.`, `_`, `-`; at most 64).
    #[cfg_attr(feature = "schema", schema(value_type = ResourceName))]
    pub name: String,
    /// DNS names (Unicode or A-labels, `*.` wildcards allowed), 1 to 100, no duplicates.
    #[cfg_attr(feature = "schema", schema(min_items = 1, max_items = 100))]
    pub dns_names: Vec<String>,
    /// Default `ecdsa-p256`. Accepted in any case; P-521 and RSA under 2048 bits are refused.
    #[serde(default, deserialize_with = "de::key_type")]
    pub key_type: Option<KeyType>,
    /// The ACME account to order with: id or name.
    pub account: String,
    /// Renew when this fraction of the lifetime remains (0 < f < 1).
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schema(exclusive_minimum = 0.0, exclusive_maximum = 1.0)
    )]
    pub renew_fraction: Option<f64>,
    /// Or renew this many days before expiry (1 to 365).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(minimum = 1, maximum = 365))]
    pub renew_days: Option<i32>,
}

/// A certificate definition and its current version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CertificateResponse {
    pub id: Uuid,
    pub name: String,
    /// A-label names, as ordered from the CA.
    pub dns_names: Vec<String>,
    /// The same names in Unicode, for display.
    pub display_names: Vec<String>,
    pub key_type: KeyType,
    pub account_id: Uuid,
    pub state: CertificateState,
    pub renew_fraction: Option<f64>,
    pub renew_days: Option<i32>,
    /// Renewals reuse the current key while its type matches `key_type`.
    #[serde(default)]
    pub reuse_key: bool,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub renew_after: Option<OffsetDateTime>,
    pub consecutive_failures: i32,
    pub last_error: Option<String>,
    /// Actor that created it, e.g. `token:<id>`.
    pub created_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The version agents install, once issued.
    pub current_version: Option<VersionResponse>,
}

/// One page of certificates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CertificateList {
    pub items: Vec<CertificateResponse>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

/// A certificate with its versions, order history and deployments.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CertificateDetail {
    pub certificate: CertificateResponse,
    /// Every issued version, newest first.
    pub versions: Vec<VersionResponse>,
    /// Every order, newest first, with its events.
    pub orders: Vec<OrderResponse>,
    /// Which agents have which version deployed.
    pub deployments: Vec<DeploymentResponse>,
}

/// One issued version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct VersionResponse {
    pub id: Uuid,
    /// Lowercase hex serial number.
    pub serial: String,
    /// Lowercase hex SHA-256 of the leaf DER.
    pub thumbprint: String,
    /// DNS SANs of the leaf.
    pub dns_names: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// RFC 5280 reason code.
    pub revocation_reason: Option<i32>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An order job and its history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct OrderResponse {
    pub id: Uuid,
    pub reason: OrderReason,
    pub state: OrderState,
    pub attempts: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub deadline_at: OffsetDateTime,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Steps, oldest first.
    pub events: Vec<OrderEventResponse>,
}

/// One step of an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct OrderEventResponse {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub kind: OrderEventKind,
    pub detail: String,
}

/// Why a certificate is revoked (RFC 5280 reason codes a subscriber may use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RevocationReason {
    /// Code 0.
    #[default]
    Unspecified,
    /// Code 1: the private key leaked.
    KeyCompromise,
    /// Code 3.
    AffiliationChanged,
    /// Code 4: replaced by a new certificate.
    Superseded,
    /// Code 5: the names are no longer used.
    CessationOfOperation,
}

impl RevocationReason {
    /// The RFC 5280 `CRLReason` code.
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
        }
    }
}

/// Revoke the current (or a given) version of a certificate at the CA.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RevokeCertificateRequest {
    #[serde(default)]
    pub reason: RevocationReason,
    /// The version to revoke; default the current one.
    #[serde(default)]
    pub version_id: Option<Uuid>,
}

/// What to download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DownloadFormat {
    /// PEM chain, leaf first (`application/pem-certificate-chain`).
    PemChain,
    /// PEM PKCS#8 private key (`application/x-pem-file`); needs the `export` scope.
    PemKey,
    /// PKCS#12 with key and chain (`application/x-pkcs12`); needs `export` and a password.
    Pfx,
}

/// Download a version as PEM or PFX. A POST so the PFX password never sits in a URL.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DownloadRequest {
    pub format: DownloadFormat,
    /// PFX password (required for `pfx`, refused otherwise), at most 1024 bytes.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(value_type = Option<Secret>))]
    pub password: Option<String>,
    /// PFX encryption, default `legacy`.
    #[serde(default)]
    pub encryption: Option<PfxEncryption>,
    /// The version to download; default the current one.
    #[serde(default)]
    pub version_id: Option<Uuid>,
}

redacted_debug!(DownloadRequest { format, encryption, version_id ; password });

// ---------------------------------------------------------------- agents

/// Create an agent; the answer holds its one-time join token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CreateAgentRequest {
    /// Unique name, e.g. the host name (letters, digits, `.`, `_`, `-`; at most 64).
    #[cfg_attr(feature = "schema", schema(value_type = ResourceName))]
    pub name: String,
    /// Password of the PFX files in the agent's CCS folder (IIS needs it too), at most 1024
    /// bytes.
    #[cfg_attr(feature = "schema", schema(value_type = Secret))]
    pub ccs_password: String,
    /// PFX encryption, default `legacy` (readable by every IIS 8+).
    #[serde(default)]
    pub pfx_encryption: Option<PfxEncryption>,
}

impl fmt::Debug for CreateAgentRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateAgentRequest")
            .field("name", &self.name)
            .field("ccs_password", &"<redacted>")
            .field("pfx_encryption", &self.pfx_encryption)
            .finish()
    }
}

/// Rotate an agent's CCS password and/or change its PFX encryption.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct UpdateAgentRequest {
    /// New CCS password, at most 1024 bytes.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(value_type = Option<Secret>))]
    pub ccs_password: Option<String>,
    #[serde(default)]
    pub pfx_encryption: Option<PfxEncryption>,
}

redacted_debug!(UpdateAgentRequest { pfx_encryption ; ccs_password });

/// One agent × certificate pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DeploymentResponse {
    pub agent_id: Uuid,
    pub agent_name: String,
    pub certificate_id: Uuid,
    pub certificate_name: String,
    pub state: DeploymentState,
    /// Thumbprint of the certificate's current version.
    pub current_thumbprint: Option<String>,
    /// Files as last reported.
    pub files: Vec<DeployedFile>,
    /// What the agent's probes saw served, per target, address and name.
    #[serde(default)]
    pub served: Vec<crate::target::ServedName>,
}

/// One file as an agent reported it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct DeployedFile {
    /// Target the file is in (empty for agents without server-managed targets).
    #[serde(default)]
    pub target: String,
    pub file_name: String,
    pub thumbprint: Option<String>,
    pub status: DeploymentStatus,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub reported_at: OffsetDateTime,
}

/// An agent and what it has deployed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct AgentResponse {
    pub id: Uuid,
    pub name: String,
    pub state: AgentState,
    /// When the unused join token expires.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub join_token_expires_at: Option<OffsetDateTime>,
    /// End of the agent's client certificate.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub client_cert_not_after: Option<OffsetDateTime>,
    pub pfx_encryption: PfxEncryption,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<OffsetDateTime>,
    pub os_name: Option<String>,
    pub os_build: Option<String>,
    pub agent_version: Option<String>,
    pub last_report_errors: Vec<String>,
    /// Assigned certificates and their deployment state.
    pub certificates: Vec<DeploymentResponse>,
}

/// An agent with a fresh one-time join token (shown once).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct JoinTokenResponse {
    pub agent: AgentResponse,
    /// `certkeep-agent enroll --token-file` takes this. Single use.
    pub join_token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The command that enrolls the host, once the token is saved in `join-token.txt` and the
    /// server's `ca.pem` copied next to it; the host then needs no configuration.
    #[serde(default)]
    pub enroll_command: String,
}

// ---------------------------------------------------------------- tokens

/// Create an API token. The secret is returned once and stored only as a hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CreateTokenRequest {
    /// What the token is for: 1 to 100 characters, no control characters.
    #[cfg_attr(feature = "schema", schema(value_type = Label))]
    pub name: String,
    /// At least one.
    #[serde(deserialize_with = "de::texts")]
    #[cfg_attr(feature = "schema", schema(min_items = 1))]
    pub scopes: Vec<Scope>,
    /// Names an `issuer` token may order: exact names and `*.suffix`, at most 100. Required for
    /// `issuer`, refused for other tokens.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_items = 100))]
    pub domain_patterns: Vec<String>,
    /// When the token stops working; default never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// An API token (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    pub id: Uuid,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub domain_patterns: Vec<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    pub created_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A new token with its secret, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CreatedTokenResponse {
    pub token: TokenResponse,
    /// The bearer secret (`ck_...`). Not retrievable later.
    pub secret: String,
}

// ---------------------------------------------------------------- audit

/// One audit event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct AuditEventResponse {
    /// Position in the chain, from 1.
    pub seq: i64,
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `token:<id>`, `agent:<id>` or `system`.
    pub actor: String,
    /// e.g. `certificate.create`, `certificate.key_release`.
    pub action: String,
    /// e.g. `certificate:<id>`.
    pub subject: String,
    /// Source IP address.
    pub source: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    pub detail: String,
}

/// One page of audit events, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct AuditEventList {
    pub items: Vec<AuditEventResponse>,
    /// Pass as `after_seq` for the next page; absent on the last page.
    pub next_after_seq: Option<i64>,
}

/// Result of walking the audit hash chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct AuditVerifyResponse {
    /// Whether every event links to its predecessor and matches its hash.
    pub intact: bool,
    /// Events checked before the first break (all of them when intact).
    pub events: u64,
    /// Sequence number of the first broken event.
    pub broken_at: Option<i64>,
    /// What is wrong there.
    pub reason: Option<String>,
}

/// The spec's constrained strings. Request fields stay `String` and name these as their
/// schema; the server's `validate` checks exactly these rules.
#[cfg(feature = "schema")]
mod constrained {
    use std::borrow::Cow;

    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

    /// A schema-only string type with length bounds and a pattern.
    macro_rules! constrained_string {
        ($(#[$doc:meta])* $name:ident, $min:literal..=$max:literal, $pattern:literal, $description:literal) => {
            $(#[$doc])*
            pub struct $name;

            impl utoipa::PartialSchema for $name {
                fn schema() -> RefOr<Schema> {
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some($min))
                        .max_length(Some($max))
                        .pattern(Some($pattern))
                        .description(Some($description))
                        .into()
                }
            }

            impl utoipa::ToSchema for $name {
                fn name() -> Cow<'static, str> {
                    Cow::Borrowed(stringify!($name))
                }
            }
        };
    }

    constrained_string!(
        /// A resource name (accounts, certificates, agents).
        ResourceName, 1..=64, "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        "1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or digit"
    );
    constrained_string!(
        /// Free text such as a token name.
        Label, 1..=100, "^[^\\x00-\\x1F\\x7F-\\x9F]*$",
        "1 to 100 characters, no control characters"
    );
    constrained_string!(
        /// A contact URI of an ACME account.
        MailtoUri, 7..=254, "^mailto:[^\\x00-\\x1F\\x7F-\\x9F]*$",
        "A `mailto:` URI of at most 254 bytes, no control characters"
    );
    constrained_string!(
        /// A secret the caller chooses (password, HMAC key).
        Secret, 1..=1024, "^[^\\x00]*$",
        "1 to 1024 bytes of UTF-8, no NUL"
    );
}

/// Field deserialisers whose errors name the field itself, with the server's explanation.
pub(crate) mod de {
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, de::Error as _};

    use crate::enums::KeyType;

    /// A requested key type, in any case; P-521 and short RSA keys are refused with a reason.
    pub(crate) fn key_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<KeyType>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| KeyType::parse_requested(&t).map_err(D::Error::custom))
            .transpose()
    }

    /// A list of vocabulary texts; an unknown one is an error of the whole field.
    pub(super) fn texts<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr<Err = String>,
    {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| T::from_str(t).map_err(D::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_debug() {
        let req = DownloadRequest {
            format: DownloadFormat::Pfx,
            password: Some("hunter2".into()),
            encryption: None,
            version_id: None,
        };
        assert!(!format!("{req:?}").contains("hunter2"));
        let req: CreateAccountRequest = serde_json::from_str(
            r#"{"name":"a","directory_url":"https://x","allowed_domains":[],"eab_kid":"kid-9","eab_hmac_key":"s3cret"}"#,
        )
        .unwrap();
        let debug = format!("{req:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("kid-9"),
            "{debug}"
        );
    }

    #[test]
    fn wire_names() {
        assert_eq!(
            serde_json::to_string(&DownloadFormat::PemChain).unwrap(),
            r#""pem-chain""#
        );
        assert_eq!(
            serde_json::to_string(&RevocationReason::KeyCompromise).unwrap(),
            r#""key-compromise""#
        );
        assert_eq!(RevocationReason::Superseded.code(), 4);
    }
}
