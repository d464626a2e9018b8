//! `windows-store` targets: what changes when a certificate is renewed. The PFX goes into
//! `LocalMachine\<store>`, the site's https bindings whose host names the certificate covers (or
//! the configured ones) are pointed at the new thumbprint, and certificates this agent imported
//! earlier are removed from the store only once no binding uses them.
//!
//! The decisions are pure ([`plan`]) and applied through the narrow [`CertStore`] trait
//! ([`apply`]), so both are tested on Linux with a fake store. The Windows implementation of the
//! trait (crypto API import with a non-exportable key, http.sys bindings) is not written yet;
//! until then the agent reports `windows-store` targets as unsupported.

use std::collections::BTreeSet;

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
pub trait CertStore {
    /// True when the store holds the certificate with `thumbprint`.
    fn contains(&self, thumbprint: &str) -> bool;
    /// Imports a PFX, its private key non-exportable.
    fn import(&mut self, pfx: &[u8], password: &str) -> Result<(), String>;
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
) -> Vec<String> {
    if plan.import {
        if let Err(e) = store.import(pfx, password) {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A store and a site in memory; `fail_bind` makes every rebind fail.
    #[derive(Default)]
    struct FakeStore {
        certs: BTreeSet<String>,
        bindings: Vec<Binding>,
        /// Thumbprint each imported PFX turns out to hold.
        pfx_holds: BTreeMap<Vec<u8>, String>,
        fail_bind: bool,
    }

    impl CertStore for FakeStore {
        fn contains(&self, thumbprint: &str) -> bool {
            self.certs.contains(thumbprint)
        }
        fn import(&mut self, pfx: &[u8], _password: &str) -> Result<(), String> {
            let t = self.pfx_holds.get(pfx).ok_or("not a PFX")?;
            self.certs.insert(t.clone());
            Ok(())
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
        assert!(apply(&mut store, &p, "new", b"pfx-new", "pw").is_empty());
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
        let errors = apply(&mut store, &p, "new", b"pfx-new", "pw");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(store.certs.contains("old") && store.certs.contains("new"));
        let bad_import = apply(&mut site(), &p, "new", b"garbage", "pw");
        assert!(bad_import[0].contains("import"), "{bad_import:?}");
    }
}
