//! Agent protocol types (mTLS listener, `/agent/v1/...`).
//!
//! Requests refuse unknown fields; responses accept them so a newer server can add fields
//! without breaking older agents.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub use crate::enums::{DeploymentStatus, PfxEncryption};
pub use crate::target::{ProbeReport, ProbeResult, ServedStatus, TargetSettings, TargetSpec};

/// `POST`: exchange a one-time join token and a CSR for a client certificate (no client cert).
pub const ENROLL_PATH: &str = "/agent/v1/enroll";
/// `POST`: renew the agent's own client certificate (client cert required).
pub const RENEW_PATH: &str = "/agent/v1/renew";
/// `GET`: what this agent must have installed; honours `If-None-Match`.
pub const MANIFEST_PATH: &str = "/agent/v1/manifest";
/// `POST`: per-file deployment results.
pub const REPORT_PATH: &str = "/agent/v1/report";
/// `POST`: what the agent's probes saw served.
pub const PROBE_REPORT_PATH: &str = "/agent/v1/probe-report";
/// `GET`: the agent's PFX password, to open its downloads (client cert required, audited).
pub const PFX_PASSWORD_PATH: &str = "/agent/v1/pfx-password";
/// Media type of a PFX download.
pub const PKCS12_MEDIA_TYPE: &str = "application/x-pkcs12";
/// Prefix of the URI SAN that binds a client certificate to an agent: `urn:certkeep:agent:<uuid>`.
pub const AGENT_URI_PREFIX: &str = "urn:certkeep:agent:";

/// Enrollment: a one-time join token and a PKCS#10 CSR for a key generated on the host.
///
/// The server uses only the CSR's public key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct EnrollRequest {
    /// Join token from `certkeep agent add`; single use, expires.
    pub token: String,
    /// PEM-encoded CSR.
    pub csr_pem: String,
}

impl fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Renewal of the agent's own client certificate, over mTLS with the current one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RenewRequest {
    /// PEM-encoded CSR; the key may be new or the current one.
    pub csr_pem: String,
}

/// The agent's client certificate, answer to both enroll and renew.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    /// Agent id, also in the certificate as URI SAN `urn:certkeep:agent:<uuid>`.
    pub agent_id: Uuid,
    /// PEM client certificate (clientAuth EKU), issued by certkeep's internal CA.
    pub certificate_pem: String,
    /// PEM of the internal CA that issued it.
    pub ca_pem: String,
    /// End of the certificate's validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

/// Everything one agent must have installed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Manifest {
    /// The agent this manifest is for.
    pub agent_id: Uuid,
    /// Encryption of every PFX download.
    pub pfx_encryption: PfxEncryption,
    /// Current version of every certificate assigned to the agent.
    pub certificates: Vec<ManifestEntry>,
    /// Where the agent installs them, by name; each entry names its targets.
    #[serde(default)]
    pub targets: Vec<TargetSpec>,
    /// Seconds between two probes of the targets' probe addresses.
    #[serde(default = "default_probe_interval")]
    pub probe_interval_secs: u64,
}

fn default_probe_interval() -> u64 {
    3600
}

/// The agent's PFX password (the CCS password IIS is configured with).
#[derive(Clone, Serialize, Deserialize)]
pub struct PfxPassword {
    pub password: String,
}

impl fmt::Debug for PfxPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PfxPassword(<redacted>)")
    }
}

/// One certificate version to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ManifestEntry {
    /// Certificate id.
    pub certificate_id: Uuid,
    /// Human name of the certificate; the directory name for `directory` targets.
    pub certificate_name: String,
    /// Id of this issued version.
    pub version_id: Uuid,
    /// Lowercase hex SHA-256 of the leaf DER.
    pub thumbprint: String,
    /// Lowercase hex serial number.
    pub serial: String,
    /// End of the leaf's validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// CCS file names, one per DNS SAN, e.g. `_.contoso.com.pfx`.
    pub file_names: Vec<String>,
    /// Path of the PFX download on the agent listener, e.g. `/agent/v1/certificates/{id}/pfx`.
    pub download_path: String,
    /// Names of the manifest's targets this certificate goes to.
    #[serde(default)]
    pub targets: Vec<String>,
    /// The leaf's DNS names, probed with SNI.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// Why this version must not be installed yet (change window, canaries); the agent keeps
    /// what it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
}

/// Result of one sync, sent after every run that fetched a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Report {
    /// Agent version (`CARGO_PKG_VERSION`).
    pub agent_version: String,
    /// Operating system name, e.g. `windows`.
    pub os_name: String,
    /// Operating system build, e.g. `10.0.17763`.
    pub os_build: String,
    /// One entry per file the agent manages.
    pub files: Vec<FileReport>,
    /// Errors not tied to one file (e.g. a download that failed).
    pub errors: Vec<String>,
}

/// State of one file on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct FileReport {
    /// Certificate the file belongs (or belonged) to.
    pub certificate_id: Uuid,
    /// Target the file is in; none from agents older than server-managed targets.
    #[serde(default)]
    pub target: Option<String>,
    /// File name, e.g. `www.contoso.com.pfx`, or directory name for `directory` targets.
    pub file_name: String,
    /// Lowercase hex SHA-256 of the leaf the file holds now, if known.
    pub thumbprint: Option<String>,
    /// Outcome.
    pub status: DeploymentStatus,
    /// Why it failed or was kept.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields() {
        let err = serde_json::from_str::<EnrollRequest>(r#"{"token":"t","csr_pem":"c","x":1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
    }

    #[test]
    fn enroll_request_debug_hides_token() {
        let req = EnrollRequest {
            token: "secret-token".into(),
            csr_pem: String::new(),
        };
        assert!(!format!("{req:?}").contains("secret-token"));
    }

    #[test]
    fn manifest_wire_shape() {
        let json = r#"{"agent_id":"6f1c1a8e-8a8e-4b4e-9d57-1b4a3a1f0c11","pfx_encryption":"aes256",
            "certificates":[{"certificate_id":"6f1c1a8e-8a8e-4b4e-9d57-1b4a3a1f0c12",
            "certificate_name":"web","version_id":"6f1c1a8e-8a8e-4b4e-9d57-1b4a3a1f0c13",
            "thumbprint":"ab","serial":"01","not_after":"2030-01-01T00:00:00Z",
            "file_names":["_.contoso.com.pfx"],"download_path":"/agent/v1/certificates/x/pfx"}]}"#;
        let manifest: Manifest = serde_json::from_str(json).unwrap();
        assert_eq!(manifest.pfx_encryption, PfxEncryption::Aes256);
        assert_eq!(manifest.certificates[0].file_names, ["_.contoso.com.pfx"]);
        let status = serde_json::to_string(&DeploymentStatus::Kept).unwrap();
        assert_eq!(status, r#""kept""#);
    }
}
