//! Pure decisions of the sync loop: what to download, when to renew, how long to wait.
//!
//! No I/O and no clock: time and randomness come in as arguments so every rule is unit-tested.

use std::{collections::HashMap, time::Duration};

use certkeep_api_types::agent::ManifestEntry;
use time::OffsetDateTime;
use uuid::Uuid;

/// First wait after a failed sync; doubles per consecutive failure, capped at the interval.
const FIRST_BACKOFF: Duration = Duration::from_secs(15);

/// What one sync does with the manifest's entries.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    /// Entries whose files already hold the manifest's thumbprint: nothing to download.
    pub current: Vec<&'a ManifestEntry>,
    /// Entries to download, verify and install.
    pub download: Vec<&'a ManifestEntry>,
    /// Entries refused because a file name already belongs to an earlier entry.
    pub conflicts: Vec<(&'a ManifestEntry, String)>,
}

/// Splits entries into current, to-download and conflicting ones.
///
/// A file name can hold only one certificate; the first entry naming it wins and later ones fail.
pub fn plan(
    entries: &[ManifestEntry],
    mut is_current: impl FnMut(&ManifestEntry) -> bool,
) -> Plan<'_> {
    let mut owners: HashMap<&str, Uuid> = HashMap::new();
    let mut plan = Plan::default();
    for entry in entries {
        let clash = entry.file_names.iter().find_map(|name| {
            owners
                .get(name.as_str())
                .filter(|&&owner| owner != entry.certificate_id)
                .map(|owner| format!("file name {name} already belongs to certificate {owner}"))
        });
        if let Some(reason) = clash {
            plan.conflicts.push((entry, reason));
            continue;
        }
        for name in &entry.file_names {
            owners.insert(name, entry.certificate_id);
        }
        if is_current(entry) {
            plan.current.push(entry);
        } else {
            plan.download.push(entry);
        }
    }
    plan
}

/// True once two thirds of the agent certificate's lifetime have passed.
pub fn renewal_due(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> bool {
    now >= not_before + (not_after - not_before) * 2 / 3
}

/// Wait before the next sync: `interval` scaled by 0.9–1.1 with `unit` in `[0, 1)`.
pub fn jittered(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(0.9 + 0.2 * unit.clamp(0.0, 1.0))
}

/// Wait after `failures` consecutive failed syncs (≥ 1): 15 s doubling, at most `interval`.
pub fn backoff(failures: u32, interval: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(1 << doublings).min(interval)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn entry(id: u128, names: &[&str], thumbprint: &str) -> ManifestEntry {
        ManifestEntry {
            certificate_id: Uuid::from_u128(id),
            certificate_name: format!("cert-{id}"),
            version_id: Uuid::from_u128(id + 100),
            thumbprint: thumbprint.into(),
            serial: "01".into(),
            not_after: datetime!(2030-01-01 0:00 UTC),
            file_names: names.iter().map(|n| (*n).to_owned()).collect(),
            download_path: format!("/agent/v1/certificates/{id}/pfx"),
            targets: Vec::new(),
            dns_names: Vec::new(),
            hold: None,
        }
    }

    #[test]
    fn plan_downloads_only_what_changed_and_refuses_name_clashes() {
        let entries = [
            entry(1, &["a.pfx", "b.pfx"], "t1"),
            entry(2, &["c.pfx"], "t2"),
            entry(3, &["b.pfx"], "t3"),
        ];
        let plan = plan(&entries, |e| e.thumbprint == "t1");
        assert_eq!(plan.current, [&entries[0]]);
        assert_eq!(plan.download, [&entries[1]]);
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].0, &entries[2]);
        assert!(plan.conflicts[0].1.contains("b.pfx"));
    }

    #[test]
    fn renews_at_two_thirds() {
        let nb = datetime!(2026-01-01 0:00 UTC);
        let na = datetime!(2026-01-31 0:00 UTC);
        assert!(!renewal_due(nb, na, datetime!(2026-01-20 23:59 UTC)));
        assert!(renewal_due(nb, na, datetime!(2026-01-21 0:00 UTC)));
        assert!(renewal_due(nb, na, datetime!(2026-02-10 0:00 UTC)));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let interval = Duration::from_secs(300);
        assert_eq!(jittered(interval, 0.0), Duration::from_secs(270));
        assert_eq!(jittered(interval, 0.5), Duration::from_secs(300));
        assert!(jittered(interval, 0.999_999) <= Duration::from_secs(330));
    }

    #[test]
    fn backoff_doubles_and_is_capped_by_the_interval() {
        let interval = Duration::from_secs(300);
        assert_eq!(backoff(1, interval), Duration::from_secs(15));
        assert_eq!(backoff(2, interval), Duration::from_secs(30));
        assert_eq!(backoff(5, interval), Duration::from_secs(240));
        assert_eq!(backoff(6, interval), interval);
        assert_eq!(backoff(u32::MAX, interval), interval);
    }
}
