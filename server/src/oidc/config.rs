//! `[ui.oidc]`: the relying party's settings and the group → scope mapping.
//!
//! The client secret is never in the file itself: it is read from `client_secret_file`, or
//! opened from `client_secret_sealed` (an age ciphertext to the server's own recipient). Neither
//! `Debug` nor the printed configuration shows the sealed value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use openidconnect::url;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::model::Scope;

/// Login with campus SSO: OpenID Connect authorization code flow with PKCE.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Issuer URL; its `/.well-known/openid-configuration` is read on the first login. Must be
    /// `https://` (plain `http://` only on a loopback address, for tests).
    pub issuer: String,
    /// Client id registered at the IdP.
    pub client_id: String,
    /// File holding the client secret (trimmed). Exactly one of this and
    /// `client_secret_sealed` must be set.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// The client secret as an ASCII-armored age ciphertext to this server's recipient
    /// (`age -a -r age1...`; the recipient is in the identity file's comment).
    #[serde(default, serialize_with = "redact_opt")]
    pub client_secret_sealed: Option<String>,
    /// The callback registered at the IdP: `https://<this server>/ui/oidc/callback`.
    pub redirect_url: String,
    /// Scopes requested besides `openid` (e.g. `groups` where the IdP needs it).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// ID token claim holding the user's groups (a list of strings, or one string).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Group → scope (or list of scopes). A user in no mapped group is refused.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleScopes>,
    /// PEM file of CA certificates trusted for the IdP besides the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Seconds a user has from the redirect to the IdP until the callback.
    #[serde(default = "default_login_ttl_secs")]
    pub login_ttl_secs: u64,
    /// Timeout of one request to the IdP in seconds.
    #[serde(default = "default_http_timeout_secs")]
    pub http_timeout_secs: u64,
}

/// The scopes one group grants: `"admin"` or `["operator", "export"]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "OneOrMany")]
pub struct RoleScopes(pub Vec<Scope>);

/// How a role is written in the file.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl TryFrom<OneOrMany> for RoleScopes {
    type Error = String;

    fn try_from(value: OneOrMany) -> Result<Self, String> {
        let names = match value {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        names
            .iter()
            .map(|n| n.parse::<Scope>())
            .collect::<Result<_, _>>()
            .map(RoleScopes)
    }
}

impl RoleScopes {
    fn scopes(&self) -> &[Scope] {
        &self.0
    }
}

fn default_scopes() -> Vec<String> {
    vec!["profile".into()]
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_login_ttl_secs() -> u64 {
    600
}

fn default_http_timeout_secs() -> u64 {
    10
}

fn redact_opt<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_some("<redacted>"),
        None => s.serialize_none(),
    }
}

impl fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret_file", &self.client_secret_file)
            .field(
                "client_secret_sealed",
                &self.client_secret_sealed.as_ref().map(|_| "<redacted>"),
            )
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("groups_claim", &self.groups_claim)
            .field("roles", &self.roles)
            .field("ca_file", &self.ca_file)
            .field("login_ttl_secs", &self.login_ttl_secs)
            .field("http_timeout_secs", &self.http_timeout_secs)
            .finish()
    }
}

/// Whether `url` is `https://`, or `http://` to a loopback host.
fn secure_url(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

impl OidcConfig {
    /// Checks every field; the error names the key.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(format!("ui.oidc.{msg}")));
        for (key, value) in [
            ("issuer", &self.issuer),
            ("redirect_url", &self.redirect_url),
        ] {
            match url::Url::parse(value) {
                Ok(u) if secure_url(&u) => {}
                Ok(_) => {
                    return bad(format!(
                        "{key} `{value}` must be https:// (http:// only on a loopback address)"
                    ));
                }
                Err(e) => return bad(format!("{key} `{value}` is not a URL: {e}")),
            }
        }
        if self.client_id.trim().is_empty() {
            return bad("client_id must not be empty".into());
        }
        if self.client_secret_file.is_some() == self.client_secret_sealed.is_some() {
            return Err(ConfigError::Invalid(
                "ui.oidc needs exactly one of client_secret_file and client_secret_sealed (the secret itself never goes into the file)".into(),
            ));
        }
        if self.groups_claim.trim().is_empty() {
            return bad("groups_claim must not be empty".into());
        }
        if self.roles.is_empty() {
            return bad(
                "roles must map at least one group to scopes (e.g. \"pki-admins\" = \"admin\")"
                    .into(),
            );
        }
        for (group, scopes) in &self.roles {
            if scopes.scopes().is_empty() {
                return bad(format!("roles.\"{group}\" grants no scope"));
            }
            if scopes.scopes().contains(&Scope::Issuer) {
                return bad(format!(
                    "roles.\"{group}\": `issuer` needs domain patterns, which a group cannot carry; map it to operator or reader"
                ));
            }
        }
        if !(60..=3600).contains(&self.login_ttl_secs) {
            return bad("login_ttl_secs must be between 60 and 3600".into());
        }
        if !(1..=120).contains(&self.http_timeout_secs) {
            return bad("http_timeout_secs must be between 1 and 120".into());
        }
        Ok(())
    }

    /// The scopes the user's groups grant (sorted, each once), or `None` when no group of
    /// theirs is mapped.
    pub fn scopes_for<'a>(&self, groups: impl IntoIterator<Item = &'a str>) -> Option<Vec<Scope>> {
        let granted: BTreeSet<&'static str> = groups
            .into_iter()
            .filter_map(|g| self.roles.get(g))
            .flat_map(|r| r.scopes().iter().map(|s| s.as_str()))
            .collect();
        if granted.is_empty() {
            return None;
        }
        Some(
            Scope::ALL
                .iter()
                .copied()
                .filter(|s| granted.contains(s.as_str()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(roles: &str) -> Result<OidcConfig, String> {
        let text = format!(
            "issuer = \"https://sso.example.edu/realms/campus\"\nclient_id = \"certkeep\"\nclient_secret_file = \"/etc/certkeep/oidc-secret\"\nredirect_url = \"https://certkeep.example.edu:8443/ui/oidc/callback\"\n[roles]\n{roles}"
        );
        let c: OidcConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn groups_map_to_the_union_of_their_scopes() {
        let c = config(
            "\"pki-admins\" = \"admin\"\n\"pki-ops\" = [\"operator\", \"export\"]\n\"pki-readers\" = \"reader\"\n",
        )
        .unwrap();
        assert_eq!(c.scopes_for(["pki-admins"]), Some(vec![Scope::Admin]));
        assert_eq!(
            c.scopes_for(["staff", "pki-readers"]),
            Some(vec![Scope::Reader])
        );
        assert_eq!(
            c.scopes_for(["pki-readers", "pki-ops", "pki-ops"]),
            Some(vec![Scope::Operator, Scope::Reader, Scope::Export])
        );
        assert_eq!(c.scopes_for(["students", "staff"]), None);
        assert_eq!(c.scopes_for([]), None);
        // Group names are compared exactly.
        assert_eq!(c.scopes_for(["PKI-Admins"]), None);
        assert_eq!((c.groups_claim.as_str(), c.login_ttl_secs), ("groups", 600));
    }

    #[test]
    fn bad_role_mappings_are_refused_with_the_key() {
        for (roles, wanted) in [
            ("", "roles must map at least one group"),
            ("\"x\" = []\n", "roles.\"x\" grants no scope"),
            ("\"x\" = \"issuer\"\n", "needs domain patterns"),
            ("\"x\" = \"root\"\n", "unknown Scope `root`"),
        ] {
            let err = config(roles).unwrap_err();
            assert!(err.contains(wanted), "{roles:?}: {err}");
        }
    }

    #[test]
    fn secret_sources_and_urls_are_checked_and_the_sealed_secret_is_not_shown() {
        let mut c = config("\"a\" = \"admin\"\n").unwrap();
        c.client_secret_sealed = Some("-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("exactly one of"), "{err}");
        c.client_secret_file = None;
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains("YWdl"), "{c:?}");
        let printed = toml::to_string(&c).unwrap();
        assert!(
            !printed.contains("YWdl") && printed.contains("<redacted>"),
            "{printed}"
        );
        c.client_secret_sealed = None;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("exactly one of"), "{err}");

        let mut c = config("\"a\" = \"admin\"\n").unwrap();
        for (issuer, ok) in [
            ("http://sso.example.edu", false),
            ("http://127.0.0.1:9000", true),
            ("http://localhost:9000", true),
            ("ftp://sso.example.edu", false),
            ("not a url", false),
        ] {
            c.issuer = issuer.into();
            assert_eq!(c.validate().is_ok(), ok, "{issuer}");
        }
    }

    #[test]
    fn ui_oidc_is_read_and_checked_when_the_configuration_loads() {
        #[expect(
            clippy::result_large_err,
            reason = "figment's Jail API returns its own error type"
        )]
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[ui.oidc]\nissuer = \"https://sso.example.edu\"\nclient_id = \"certkeep\"\nredirect_url = \"https://c.example.edu/ui/oidc/callback\"\n[ui.oidc.roles]\n\"pki-admins\" = \"admin\"\n",
            )?;
            let load = || {
                crate::config::Config::load(
                    Some(std::path::Path::new("c.toml")),
                    figment::Figment::new(),
                )
            };
            let err = load().unwrap_err().to_string();
            assert!(err.contains("ui.oidc needs exactly one of"), "{err}");
            jail.set_env("CERTKEEP_UI__OIDC__CLIENT_SECRET_FILE", "/run/secrets/oidc");
            let c = load().unwrap();
            let oidc = c.ui.oidc.as_ref().unwrap();
            assert_eq!(
                oidc.client_secret_file.as_deref(),
                Some(std::path::Path::new("/run/secrets/oidc"))
            );
            assert_eq!(oidc.scopes_for(["pki-admins"]), Some(vec![Scope::Admin]));
            assert!(c.to_redacted_toml().contains("[ui.oidc.roles]"));
            Ok(())
        });
    }
}
