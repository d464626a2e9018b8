//! `windows-store` targets: what changes when a certificate is renewed. The PFX goes into
//! `LocalMachine\<store>`, the site's https bindings whose host names the certificate covers (or
//! the configured ones) are pointed at the new thumbprint, and certificates this agent imported
//! earlier are removed from the store only once no binding uses them.
//!
//! The decisions are pure ([`plan`]) and applied through the narrow [`CertStore`] trait
//! ([`apply`], [`StoreInstaller`]), so they are tested on Linux with a fake store. On Windows
//! `winstore.rs` implements the trait: the crypto API (`PFXImportCertStore` with a
//! non-exportable key, `LocalMachine` system stores) and the http.sys SNI bindings IIS uses, set
//! with `netsh http update sslcert`. Thumbprints here are certkeep's (SHA-256 of the leaf); the
//! Windows side maps them to the SHA-1 hashes Windows uses.

use std::collections::{BTreeSet, HashSet};

use certkeep_api_types::agent::{DeploymentStatus, FileReport, ManifestEntry};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{Bundle, Finish, InstallError, Installer, failed_reports, file_report};

/// One https binding of a site (SNI host name and port) and the certificate it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// SNI host name, e.g. `www.contoso.com`.
    pub host: String,
    pub port: u16,
    /// Thumbprint of the certificate the binding uses, if any.
    pub thumbprint: Option<String>,
}

/// The platform calls a `windows-store` target needs.
pub trait CertStore: Send {
    /// True when the store holds the certificate with `thumbprint`.
    fn contains(&self, thumbprint: &str) -> bool;
    /// Imports a PFX, its private key non-exportable, marked with `label`.
    fn import(&mut self, pfx: &[u8], password: &str, label: &str) -> Result<(), String>;
    /// Thumbprints of the certificates in the store marked with `label`.
    fn labelled(&self, label: &str) -> Result<Vec<String>, String>;
    /// Removes the certificate with `thumbprint` (and its key).
    fn remove(&mut self, thumbprint: &str) -> Result<(), String>;
    /// The site's https bindings.
    fn bindings(&self) -> Result<Vec<Binding>, String>;
    /// Points `binding` at the certificate with `thumbprint`.
    fn bind(&mut self, binding: &Binding, thumbprint: &str) -> Result<(), String>;
}

/// What installing one version changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StorePlan {
    /// The store does not hold the new certificate yet.
    pub import: bool,
    /// Bindings to point at the new thumbprint.
    pub rebind: Vec<Binding>,
    /// Earlier certificates of ours no binding uses once `rebind` is done.
    pub remove: Vec<String>,
}

/// True when `pattern` (a DNS name of the certificate, maybe `*.suffix`) covers `host`.
fn covers(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// What installing the version with thumbprint `new` and DNS names `dns_names` changes:
/// bindings for `managed` host names (every host `dns_names` covers when empty) that do not use
/// `new` yet are rebound; certificates in `ours` (imported by this agent before) other than
/// `new` are removed when no binding, rebound or not, still uses them.
pub fn plan(
    new: &str,
    dns_names: &[String],
    managed: &[String],
    bindings: &[Binding],
    ours: &[String],
    store_has_new: bool,
) -> StorePlan {
    let wanted = |host: &str| {
        if managed.is_empty() {
            dns_names.iter().any(|n| covers(n, host))
        } else {
            managed.iter().any(|m| m.eq_ignore_ascii_case(host))
        }
    };
    let rebind: Vec<Binding> = bindings
        .iter()
        .filter(|b| wanted(&b.host) && b.thumbprint.as_deref() != Some(new))
        .cloned()
        .collect();
    let in_use: BTreeSet<&str> = bindings
        .iter()
        .filter(|b| !rebind.contains(b))
        .filter_map(|b| b.thumbprint.as_deref())
        .collect();
    let remove = ours
        .iter()
        .filter(|t| t.as_str() != new && !in_use.contains(t.as_str()))
        .cloned()
        .collect();
    StorePlan {
        import: !store_has_new,
        rebind,
        remove,
    }
}

/// Applies `plan` in the order that never leaves a binding without its certificate: import,
/// rebind, then remove. A failed rebind stops before anything is removed. Returns the errors.
pub fn apply(
    store: &mut dyn CertStore,
    plan: &StorePlan,
    new: &str,
    pfx: &[u8],
    password: &str,
    label: &str,
) -> Vec<String> {
    if plan.import {
        if let Err(e) = store.import(pfx, password, label) {
            return vec![format!("import into the certificate store failed: {e}")];
        }
        if !store.contains(new) {
            return vec![format!("the store does not show {new} after the import")];
        }
    }
    let mut errors: Vec<String> = plan
        .rebind
        .iter()
        .filter_map(|b| {
            store
                .bind(b, new)
                .err()
                .map(|e| format!("binding {}:{} not updated: {e}", b.host, b.port))
        })
        .collect();
    if errors.is_empty() {
        errors.extend(plan.remove.iter().filter_map(|t| {
            store
                .remove(t)
                .err()
                .map(|e| format!("previous certificate {t} not removed: {e}"))
        }));
    }
    errors
}

/// The mark of the certificates this agent imported for one certificate.
fn label(entry: &ManifestEntry) -> String {
    format!("certkeep {}", entry.certificate_id)
}

/// One `windows-store` target: installs through a [`CertStore`].
pub struct StoreInstaller<S> {
    store: S,
    /// Configured binding host names; empty: every one the certificate covers.
    managed: Vec<String>,
    password: Zeroizing<String>,
}

impl<S: CertStore> StoreInstaller<S> {
    /// An installer over `store` for the bindings `managed` (empty: all covered ones), opening
    /// PFX files with `password`.
    pub fn new(store: S, managed: Vec<String>, password: Zeroizing<String>) -> Self {
        Self {
            store,
            managed,
            password,
        }
    }

    fn plan_for(&self, entry: &ManifestEntry) -> Result<StorePlan, String> {
        Ok(plan(
            &entry.thumbprint,
            &entry.dns_names,
            &self.managed,
            &self.store.bindings()?,
            &self.store.labelled(&label(entry))?,
            self.store.contains(&entry.thumbprint),
        ))
    }
}

impl<S: CertStore> Installer for StoreInstaller<S> {
    fn recover(&mut self) -> Result<(), InstallError> {
        self.store
            .bindings()
            .map(drop)
            .map_err(|message| InstallError {
                path: "certificate store".into(),
                message,
            })
    }

    fn is_current(&self, entry: &ManifestEntry) -> bool {
        self.plan_for(entry)
            .is_ok_and(|p| !p.import && p.rebind.is_empty() && p.remove.is_empty())
    }

    fn report_names(&self, entry: &ManifestEntry) -> Vec<String> {
        vec![entry.certificate_name.clone()]
    }

    fn install(&mut self, entry: &ManifestEntry, bundle: &Bundle) -> Vec<FileReport> {
        let names = self.report_names(entry);
        let errors = match self.plan_for(entry) {
            Ok(p) => apply(
                &mut self.store,
                &p,
                &entry.thumbprint,
                &bundle.pfx,
                &self.password,
                &label(entry),
            ),
            Err(e) => vec![e],
        };
        if errors.is_empty() {
            names
                .iter()
                .map(|n| {
                    file_report(
                        entry,
                        n,
                        Some(&entry.thumbprint),
                        DeploymentStatus::Installed,
                        None,
                    )
                })
                .collect()
        } else {
            failed_reports(entry, &names, &errors.join("; "))
        }
    }

    /// Certificates no longer assigned stay in the store and in their bindings.
    fn finish(&mut self, _entries: &[ManifestEntry], _incomplete: &HashSet<Uuid>) -> Finish {
        Finish::default()
    }
}

/// One SNI binding of `netsh http show sslcert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslCert {
    pub host: String,
    pub port: u16,
    /// SHA-1 certificate hash, lowercase hex.
    pub hash: String,
    /// Application ID, with braces.
    pub app_id: String,
}

/// Parses the `Hostname:port` entries of `netsh http show sslcert` (English output).
pub fn parse_sslcert(text: &str) -> Vec<SslCert> {
    let mut out = Vec::new();
    let mut current: Option<(String, u16)> = None;
    let mut hash = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(" : ") else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "Hostname:port" => {
                current = value
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)));
                hash = None;
            }
            "IP:port" | "Central Certificate Store" => current = None,
            "Certificate Hash" => hash = Some(value.to_ascii_lowercase()),
            "Application ID" => {
                if let (Some((host, port)), Some(h)) = (current.take(), hash.take()) {
                    out.push(SslCert {
                        host,
                        port,
                        hash: h,
                        app_id: value.to_owned(),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A store and a site in memory; `fail_bind` makes every rebind fail.
    #[derive(Default)]
    struct FakeStore {
        certs: BTreeSet<String>,
        bindings: Vec<Binding>,
        /// Thumbprint each imported PFX turns out to hold (else it is opened).
        pfx_holds: BTreeMap<Vec<u8>, String>,
        /// Label of each certificate imported with one.
        labels: BTreeMap<String, String>,
        fail_bind: bool,
    }

    impl CertStore for FakeStore {
        fn contains(&self, thumbprint: &str) -> bool {
            self.certs.contains(thumbprint)
        }
        fn import(&mut self, pfx: &[u8], password: &str, label: &str) -> Result<(), String> {
            let t = match self.pfx_holds.get(pfx) {
                Some(t) => t.clone(),
                None => {
                    certkeep_api_types::pfx::open_pfx(pfx, password)
                        .map_err(|e| e.to_string())?
                        .thumbprint
                }
            };
            self.labels.insert(t.clone(), label.to_owned());
            self.certs.insert(t);
            Ok(())
        }
        fn labelled(&self, label: &str) -> Result<Vec<String>, String> {
            Ok(self
                .labels
                .iter()
                .filter(|(t, l)| *l == label && self.certs.contains(*t))
                .map(|(t, _)| t.clone())
                .collect())
        }
        fn remove(&mut self, thumbprint: &str) -> Result<(), String> {
            assert!(
                self.bindings
                    .iter()
                    .all(|b| b.thumbprint.as_deref() != Some(thumbprint)),
                "{thumbprint} removed while a binding uses it"
            );
            self.certs.remove(thumbprint);
            Ok(())
        }
        fn bindings(&self) -> Result<Vec<Binding>, String> {
            Ok(self.bindings.clone())
        }
        fn bind(&mut self, binding: &Binding, thumbprint: &str) -> Result<(), String> {
            if self.fail_bind {
                return Err("access denied".into());
            }
            let b = self.bindings.iter_mut().find(|b| **b == *binding).unwrap();
            b.thumbprint = Some(thumbprint.to_owned());
            Ok(())
        }
    }

    fn binding(host: &str, thumbprint: &str) -> Binding {
        Binding {
            host: host.into(),
            port: 443,
            thumbprint: Some(thumbprint.into()),
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn site() -> FakeStore {
        FakeStore {
            certs: names(&["old", "other"]).into_iter().collect(),
            bindings: vec![
                binding("www.contoso.com", "old"),
                binding("shop.contoso.com", "old"),
                binding("intranet.fabrikam.com", "other"),
            ],
            pfx_holds: [(b"pfx-new".to_vec(), "new".to_owned())].into(),
            labels: BTreeMap::new(),
            fail_bind: false,
        }
    }

    #[test]
    fn a_renewal_rebinds_covered_hosts_and_removes_the_unused_old_certificate() {
        let mut store = site();
        let bindings = store.bindings().unwrap();
        let p = plan(
            "new",
            &names(&["*.contoso.com"]),
            &[],
            &bindings,
            &names(&["old"]),
            false,
        );
        assert!(p.import);
        assert_eq!(p.rebind, bindings[..2]);
        assert_eq!(p.remove, ["old"]);
        assert!(apply(&mut store, &p, "new", b"pfx-new", "pw", "l").is_empty());
        assert_eq!(store.certs, names(&["new", "other"]).into_iter().collect());
        assert_eq!(store.bindings[2], binding("intranet.fabrikam.com", "other"));
        // Nothing left to do: a re-run changes nothing.
        let again = plan(
            "new",
            &names(&["*.contoso.com"]),
            &[],
            &store.bindings().unwrap(),
            &names(&["new"]),
            true,
        );
        assert_eq!(again, StorePlan::default());
    }

    #[test]
    fn only_configured_bindings_change_and_a_shared_old_certificate_stays() {
        let store = site();
        let p = plan(
            "new",
            &names(&["www.contoso.com", "shop.contoso.com"]),
            &names(&["WWW.contoso.com"]),
            &store.bindings().unwrap(),
            &names(&["old"]),
            false,
        );
        assert_eq!(p.rebind, [binding("www.contoso.com", "old")]);
        assert!(p.remove.is_empty(), "shop.contoso.com still uses old");
    }

    #[test]
    fn a_certificate_not_imported_by_us_is_never_removed_and_wildcards_cover_one_label() {
        let store = site();
        let p = plan(
            "new",
            &names(&["*.fabrikam.com"]),
            &[],
            &store.bindings().unwrap(),
            &[],
            false,
        );
        assert_eq!(p.rebind, [binding("intranet.fabrikam.com", "other")]);
        assert!(
            p.remove.is_empty(),
            "`other` was not imported by this agent"
        );
        assert!(!covers("*.contoso.com", "a.b.contoso.com"));
        assert!(!covers("*.contoso.com", "contoso.com"));
    }

    #[test]
    fn a_failed_rebind_removes_nothing() {
        let mut store = FakeStore {
            fail_bind: true,
            ..site()
        };
        let p = plan(
            "new",
            &names(&["*.contoso.com"]),
            &[],
            &store.bindings().unwrap(),
            &names(&["old"]),
            false,
        );
        let errors = apply(&mut store, &p, "new", b"pfx-new", "pw", "l");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(store.certs.contains("old") && store.certs.contains("new"));
        let bad_import = apply(&mut site(), &p, "new", b"garbage", "pw", "l");
        assert!(bad_import[0].contains("import"), "{bad_import:?}");
    }

    #[test]
    fn the_installer_imports_rebinds_and_later_removes_its_own_previous_version() {
        use crate::install::test_support::{PASSWORD, sync, version};
        use certkeep_api_types::pfx::testing::TestCa;

        let ca = TestCa::new();
        let v1 = version(&ca, 1, &["www.contoso.com"]);
        let v2 = version(&ca, 1, &["www.contoso.com"]);
        let store = |certs: &[&str], bound: &str| FakeStore {
            certs: certs.iter().map(|c| (*c).to_owned()).collect(),
            bindings: vec![
                binding("www.contoso.com", bound),
                binding("api.fabrikam.com", "x"),
            ],
            ..FakeStore::default()
        };
        let installer = |s| -> Box<dyn Installer> {
            Box::new(StoreInstaller::new(
                s,
                Vec::new(),
                Zeroizing::new(PASSWORD.into()),
            ))
        };
        let run = sync(installer(store(&["x"], "x")), &[&v1]);
        assert!(run.errors.is_empty(), "{:?}", run.errors);
        assert_eq!(run.downloaded, 1);
        assert_eq!(run.files[0].status, DeploymentStatus::Installed);

        // The same store after that run: v1 imported (labelled) and bound.
        let mut after = store(&["x", &v1.entry.thumbprint], &v1.entry.thumbprint);
        after
            .labels
            .insert(v1.entry.thumbprint.clone(), label(&v1.entry));
        let unchanged = StoreInstaller::new(after, Vec::new(), Zeroizing::new(PASSWORD.into()));
        assert!(unchanged.is_current(&v1.entry), "nothing to do");
        assert!(!unchanged.is_current(&v2.entry));
        let mut renewing = unchanged;
        let reports = renewing.install(
            &v2.entry,
            &Bundle {
                opened: certkeep_api_types::pfx::open_pfx(&v2.pfx, PASSWORD).unwrap(),
                pfx: v2.pfx.clone(),
            },
        );
        assert_eq!(
            reports[0].status,
            DeploymentStatus::Installed,
            "{reports:?}"
        );
        let s = &renewing.store;
        assert!(s.certs.contains(&v2.entry.thumbprint));
        assert!(
            !s.certs.contains(&v1.entry.thumbprint),
            "our old version is gone"
        );
        assert!(s.certs.contains("x"), "a certificate not ours stays");
        assert_eq!(
            s.bindings[0].thumbprint.as_deref(),
            Some(v2.entry.thumbprint.as_str())
        );
        assert_eq!(s.bindings[1], binding("api.fabrikam.com", "x"));
    }

    #[test]
    fn netsh_sslcert_output_is_parsed() {
        let text = "\nSSL Certificate bindings:\n-------------------------\n\n    IP:port                      : 0.0.0.0:443\n    Certificate Hash             : 1111\n    Application ID               : {4dc3e181-e14b-4a21-b022-59fc669b0914}\n\n    Hostname:port                : www.contoso.com:443\n    Certificate Hash             : ABCD0123\n    Application ID               : {4dc3e181-e14b-4a21-b022-59fc669b0914}\n    Certificate Store Name       : WebHosting\n";
        assert_eq!(
            parse_sslcert(text),
            [SslCert {
                host: "www.contoso.com".into(),
                port: 443,
                hash: "abcd0123".into(),
                app_id: "{4dc3e181-e14b-4a21-b022-59fc669b0914}".into(),
            }]
        );
    }
}
