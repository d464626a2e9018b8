//! Deployment targets: where an agent installs certificates. Defined on the server per agent
//! (`/api/v1/agents/{agent}/targets`), carried to the agent in its manifest, and each
//! assignment names the targets it goes to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::enums::text_enum;

/// Probe address of a target created without `probe`.
pub const DEFAULT_PROBE: &str = "127.0.0.1:443";
/// Most probe addresses of one target.
pub const MAX_PROBES: usize = 16;
/// Most targets of one agent.
pub const MAX_TARGETS: usize = 32;
/// Longest target path or reload-command argument, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

text_enum!(/// Kind of a deployment target.
    TargetKind {
    /// IIS Centralized Certificate Store folder: one `<host>.pfx` per DNS name.
    Ccs => "ccs",
    /// PEM directory (nginx, Apache): `<path>/<certificate>/{fullchain,privkey}.pem`.
    Directory => "directory",
    /// Windows certificate store and the https bindings of an IIS site (Windows agents only).
    WindowsStore => "windows-store",
});

text_enum!(/// What a target's probe address served for one DNS name of a certificate.
    ServedStatus {
    /// The leaf is the certificate's current version.
    Serving => "serving",
    /// The leaf is an earlier version of the certificate.
    Stale => "stale",
    /// The leaf is some other certificate.
    Wrong => "wrong",
    /// No TLS handshake (refused, timed out, or the server failed it).
    Unreachable => "unreachable",
});

/// One probe of one DNS name at one address, as the agent saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ProbeResult {
    pub certificate_id: Uuid,
    /// Target whose probe address this is.
    pub target: String,
    /// `host:port` probed.
    pub address: String,
    /// DNS name sent as SNI.
    pub name: String,
    /// Lowercase hex SHA-256 of the leaf served; none when the handshake failed.
    pub thumbprint: Option<String>,
    /// Why there is no leaf.
    pub error: Option<String>,
}

/// Every probe of one round; replaces the agent's earlier results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ProbeReport {
    pub probes: Vec<ProbeResult>,
}

/// What one host serves for one name: the last probe, judged against the current version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ServedName {
    pub target: String,
    pub address: String,
    pub name: String,
    pub status: ServedStatus,
    /// Leaf served, if any.
    pub thumbprint: Option<String>,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub probed_at: OffsetDateTime,
    /// First probe that did not see the current version, while that lasts.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub pending_since: Option<OffsetDateTime>,
    /// When it was found lagging (`deployment.lagging_minutes` after `pending_since`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub lagging_at: Option<OffsetDateTime>,
}

/// An agent's rollout guard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RolloutSettings {
    /// `[Mon|…|Sun] HH:MM-HH:MM [+HH:MM|-HH:MM|UTC]` in the agent's local time, e.g.
    /// `Sat 02:00-04:00 +01:00`; outside it a renewal waits unless the replaced version expires
    /// within `deployment.window_margin_days`. None: any time.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schema(max_length = 64, pattern = "^[A-Za-z0-9:+ -]*$")
    )]
    pub change_window: Option<String>,
    /// Canaries install renewals first; the other agents of a certificate wait until every
    /// canary's probe sees the new version served.
    #[serde(default)]
    pub canary: bool,
}

/// Windows certificate store of a `windows-store` target, under `LocalMachine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum WindowsStore {
    /// `LocalMachine\My` (Personal).
    #[cfg_attr(feature = "clap", value(name = "My"))]
    My,
    /// `LocalMachine\WebHosting`, the store IIS meant for many sites.
    #[cfg_attr(feature = "clap", value(name = "WebHosting"))]
    WebHosting,
}

impl WindowsStore {
    /// The store's Windows name.
    pub fn as_str(self) -> &'static str {
        match self {
            WindowsStore::My => "My",
            WindowsStore::WebHosting => "WebHosting",
        }
    }
}

/// What a target is, by kind. The JSON names the kind in `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum TargetSettings {
    /// IIS CCS folder (local path or UNC share); must exist on the host.
    Ccs {
        /// E.g. `\\files01\ccs$`.
        path: String,
    },
    /// PEM directory; must exist on the host.
    Directory {
        /// E.g. `/etc/ssl/certkeep`.
        path: String,
        /// Program and arguments run once per sync after this target's files changed, e.g.
        /// `["systemctl", "reload", "nginx"]`; no shell. It runs as the agent's user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reload_command: Option<Vec<String>>,
    },
    /// `LocalMachine\<store>` and the https bindings of one IIS site.
    WindowsStore {
        store: WindowsStore,
        /// IIS site whose https bindings point at the certificate; none imports only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        iis_site: Option<String>,
        /// SNI host names of the bindings to manage; empty means every https binding of the
        /// site whose host name is a DNS name of the certificate.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        bindings: Vec<String>,
    },
}

impl TargetSettings {
    /// The kind of these settings.
    pub fn kind(&self) -> TargetKind {
        match self {
            TargetSettings::Ccs { .. } => TargetKind::Ccs,
            TargetSettings::Directory { .. } => TargetKind::Directory,
            TargetSettings::WindowsStore { .. } => TargetKind::WindowsStore,
        }
    }

    /// One line for tables, e.g. `directory /etc/ssl/certkeep (reload: systemctl reload nginx)`.
    pub fn describe(&self) -> String {
        match self {
            TargetSettings::Ccs { path } => format!("ccs {path}"),
            TargetSettings::Directory {
                path,
                reload_command,
            } => match reload_command {
                Some(cmd) => format!("directory {path} (reload: {})", cmd.join(" ")),
                None => format!("directory {path}"),
            },
            TargetSettings::WindowsStore {
                store,
                iis_site,
                bindings,
            } => {
                let mut text = format!("windows-store {}", store.as_str());
                if let Some(site) = iis_site {
                    text.push_str(&format!(" site '{site}'"));
                }
                if !bindings.is_empty() {
                    text.push_str(&format!(" bindings {}", bindings.join(",")));
                }
                text
            }
        }
    }
}

/// A target as the manifest carries it to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct TargetSpec {
    /// Unique per agent; assignments and reports name it.
    pub name: String,
    pub settings: TargetSettings,
    /// `host:port` addresses the agent checks with TLS after installing (SNI per DNS name);
    /// empty means no probe.
    pub probe: Vec<String>,
}

/// Create a target of an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct CreateTargetRequest {
    /// Unique per agent (letters, digits, `.`, `_`, `-`; at most 64).
    #[cfg_attr(feature = "schema", schema(value_type = crate::api::ResourceName))]
    pub name: String,
    pub settings: TargetSettings,
    /// `host:port` probe addresses, at most 16; default `["127.0.0.1:443"]`, `[]` for none.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schema(max_items = 16))]
    pub probe: Option<Vec<String>>,
}

/// A target of an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct TargetResponse {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub name: String,
    pub settings: TargetSettings,
    pub probe: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_wire_shape() {
        let json = r#"{"kind":"windows-store","store":"WebHosting","iis_site":"Default Web Site"}"#;
        let s: TargetSettings = serde_json::from_str(json).unwrap();
        assert_eq!(s.kind(), TargetKind::WindowsStore);
        assert_eq!(serde_json::to_string(&s).unwrap(), json);
        let err = serde_json::from_str::<TargetSettings>(r#"{"kind":"ccs","path":"p","x":1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
        for kind in TargetKind::ALL {
            assert_eq!(kind.as_str().parse::<TargetKind>().unwrap(), *kind);
            assert_eq!(serde_json::to_string(kind).unwrap(), format!("\"{kind}\""));
        }
        assert_eq!(
            TargetSettings::Directory {
                path: "/etc/ssl/ck".into(),
                reload_command: Some(vec!["systemctl".into(), "reload".into(), "nginx".into()]),
            }
            .describe(),
            "directory /etc/ssl/ck (reload: systemctl reload nginx)"
        );
    }
}
