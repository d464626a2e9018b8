//! Rules for deployment targets: what a target's settings and probe addresses may hold, and
//! what a probe's result means.
//!
//! Paths are the agent host's (a Linux server stores `\\fs\ccs$` as text); the agent checks
//! that they exist. A reload command runs on the host, so it is an argv, never a shell line.

use certkeep_api_types::target::{
    DEFAULT_PROBE, MAX_PATH_BYTES, MAX_PROBES, ServedStatus, TargetSettings,
};

/// A refused field: its JSON path and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub detail: String,
}

fn invalid(field: &str, detail: impl Into<String>) -> Invalid {
    Invalid {
        field: field.to_owned(),
        detail: detail.into(),
    }
}

/// Text of at most `max` bytes, not empty, without control characters.
fn text(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("must be 1 to {max} bytes without control characters"),
        ));
    }
    Ok(())
}

/// Checks a target's settings.
pub fn check_settings(settings: &TargetSettings) -> Result<(), Invalid> {
    match settings {
        TargetSettings::Ccs { path } => text("settings.path", path, MAX_PATH_BYTES),
        TargetSettings::Directory {
            path,
            reload_command,
        } => {
            text("settings.path", path, MAX_PATH_BYTES)?;
            if let Some(argv) = reload_command {
                if argv.is_empty() || argv.len() > 64 {
                    return Err(invalid(
                        "settings.reload_command",
                        "must name a program and at most 63 arguments; leave it out for none",
                    ));
                }
                for arg in argv {
                    text("settings.reload_command", arg, MAX_PATH_BYTES)?;
                }
            }
            Ok(())
        }
        TargetSettings::WindowsStore {
            iis_site, bindings, ..
        } => {
            if let Some(site) = iis_site {
                text("settings.iis_site", site, 256)?;
            }
            if bindings.len() > 64 {
                return Err(invalid("settings.bindings", "at most 64 bindings"));
            }
            if !bindings.is_empty() && iis_site.is_none() {
                return Err(invalid(
                    "settings.bindings",
                    "bindings need an iis_site whose bindings they are",
                ));
            }
            for b in bindings {
                host("settings.bindings", b)?;
            }
            Ok(())
        }
    }
}

/// A host name or IP literal as a probe or binding names it.
fn host(field: &str, value: &str) -> Result<(), Invalid> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*' | ':'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("`{value}` is not a host name (letters, digits, `.`, `-`; at most 253)"),
        ))
    }
}

/// The probe addresses to store: `requested`, or [`DEFAULT_PROBE`] when absent. Each is
/// `host:port` (`[v6]:port` for IPv6); at most [`MAX_PROBES`], no duplicates.
pub fn probe_addresses(requested: Option<&[String]>) -> Result<Vec<String>, Invalid> {
    let Some(list) = requested else {
        return Ok(vec![DEFAULT_PROBE.to_owned()]);
    };
    if list.len() > MAX_PROBES {
        return Err(invalid("probe", format!("at most {MAX_PROBES} addresses")));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for address in list {
        let bad = || invalid("probe", format!("`{address}` is not host:port"));
        let (h, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let h = h
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h);
        port.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(bad)?;
        host("probe", h)?;
        if out.contains(address) {
            return Err(invalid("probe", format!("`{address}` is listed twice")));
        }
        out.push(address.clone());
    }
    Ok(out)
}

/// What a probe that saw `seen` (no leaf: `None`) means for a certificate whose current
/// thumbprint is `current` and whose earlier versions had `earlier`.
pub fn served_status(seen: Option<&str>, current: &str, earlier: &[String]) -> ServedStatus {
    match seen {
        None => ServedStatus::Unreachable,
        Some(t) if t == current => ServedStatus::Serving,
        Some(t) if earlier.iter().any(|e| e == t) => ServedStatus::Stale,
        Some(_) => ServedStatus::Wrong,
    }
}

#[cfg(test)]
mod tests {
    use certkeep_api_types::target::WindowsStore;

    use super::*;

    #[test]
    fn settings() {
        let ok = [
            TargetSettings::Ccs {
                path: r"\\fs\ccs$".into(),
            },
            TargetSettings::Directory {
                path: "/etc/ssl/certkeep".into(),
                reload_command: Some(vec!["systemctl".into(), "reload".into(), "nginx".into()]),
            },
            TargetSettings::WindowsStore {
                store: WindowsStore::WebHosting,
                iis_site: Some("Default Web Site".into()),
                bindings: vec!["www.contoso.com".into()],
            },
        ];
        for s in &ok {
            assert_eq!(check_settings(s), Ok(()), "{s:?}");
        }
        let bad = [
            (
                TargetSettings::Ccs {
                    path: String::new(),
                },
                "settings.path",
            ),
            (
                TargetSettings::Directory {
                    path: "/x".into(),
                    reload_command: Some(vec![]),
                },
                "settings.reload_command",
            ),
            (
                TargetSettings::Directory {
                    path: "/x\n".into(),
                    reload_command: None,
                },
                "settings.path",
            ),
            (
                TargetSettings::WindowsStore {
                    store: WindowsStore::My,
                    iis_site: None,
                    bindings: vec!["www.contoso.com".into()],
                },
                "settings.bindings",
            ),
            (
                TargetSettings::WindowsStore {
                    store: WindowsStore::My,
                    iis_site: Some("s".into()),
                    bindings: vec!["a b".into()],
                },
                "settings.bindings",
            ),
        ];
        for (s, field) in &bad {
            assert_eq!(check_settings(s).unwrap_err().field, *field, "{s:?}");
        }
    }

    #[test]
    fn served() {
        let earlier = ["old".to_owned()];
        assert_eq!(
            served_status(Some("new"), "new", &earlier),
            ServedStatus::Serving
        );
        assert_eq!(
            served_status(Some("old"), "new", &earlier),
            ServedStatus::Stale
        );
        assert_eq!(
            served_status(Some("other"), "new", &earlier),
            ServedStatus::Wrong
        );
        assert_eq!(
            served_status(None, "new", &earlier),
            ServedStatus::Unreachable
        );
    }

    #[test]
    fn probes() {
        assert_eq!(probe_addresses(None).unwrap(), ["127.0.0.1:443"]);
        assert!(probe_addresses(Some(&[])).unwrap().is_empty());
        let list = ["web1.contoso.com:443".to_owned(), "[::1]:8443".to_owned()];
        assert_eq!(probe_addresses(Some(&list)).unwrap(), list);
        for bad in ["web1", "web1:0", "web1:x", ":443", "a b:443"] {
            assert!(probe_addresses(Some(&[bad.to_owned()])).is_err(), "{bad}");
        }
        let twice = ["a:1".to_owned(), "a:1".to_owned()];
        assert!(probe_addresses(Some(&twice)).is_err());
        let many: Vec<String> = (1..=17).map(|p| format!("a:{p}")).collect();
        assert!(probe_addresses(Some(&many)).is_err());
    }
}
