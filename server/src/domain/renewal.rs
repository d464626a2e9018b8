//! Renewal decisions: when a certificate is renewed (a fraction of its lifetime or a number of
//! days before expiry, or inside the CA's ARI window), with jitter so renewals do not bunch up,
//! and when a failed renewal is tried again. Pure: time and randomness are parameters.

use time::{Duration, OffsetDateTime};

use crate::model::RenewalPolicy;

/// Largest jitter subtracted from a renewal time.
const MAX_JITTER: Duration = Duration::hours(12);
/// First retry after a failed renewal; doubles per consecutive failure.
const FIRST_RETRY: Duration = Duration::minutes(15);
/// Longest gap between renewal retries.
const MAX_RETRY: Duration = Duration::hours(12);

/// When to renew a certificate valid from `not_before` to `not_after`.
///
/// The policy's `days` wins over its `fraction`, which wins over `default_fraction` (the
/// fraction of the lifetime that remains when renewal starts: 1/3 renews a 90-day certificate
/// 30 days before expiry and a 47-day one about 16 days before). `jitter` in `[0, 1)` moves the
/// time earlier by up to 5 % of the lifetime (at most 12 h).
pub fn renew_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    policy: &RenewalPolicy,
    default_fraction: f64,
    jitter: f64,
) -> OffsetDateTime {
    let lifetime = (not_after - not_before).max(Duration::ZERO);
    let lead = match (policy.days, policy.fraction) {
        (Some(days), _) => Duration::days(i64::from(days.max(0))).min(lifetime),
        (None, Some(f)) => lifetime * f.clamp(0.0, 1.0),
        (None, None) => lifetime * default_fraction.clamp(0.0, 1.0),
    };
    let spread = (lifetime / 20_i32).min(MAX_JITTER);
    (not_after - lead - spread * jitter.clamp(0.0, 1.0)).max(not_before)
}

/// A time inside the CA's ARI window `[start, end]`, chosen by `jitter` in `[0, 1)`, with the
/// window first clamped to `[earliest, latest]` (the certificate's `not_before` and its
/// renewal time by policy): a CA's window can bring renewal forward, never push it towards or
/// past expiry.
pub fn ari_renew_at(
    start: OffsetDateTime,
    end: OffsetDateTime,
    jitter: f64,
    earliest: OffsetDateTime,
    latest: OffsetDateTime,
) -> OffsetDateTime {
    let clamp = |t: OffsetDateTime| t.clamp(earliest, latest.max(earliest));
    let (start, end) = (clamp(start), clamp(end));
    if end <= start {
        return start;
    }
    start + (end - start) * jitter.clamp(0.0, 1.0)
}

/// Whether an ARI window ending at `end` can concern a certificate valid from `not_before`:
/// a window that ended before the certificate began was suggested for its predecessor (a CA
/// still answering the old window), and following it would renew every new version at once.
pub fn ari_window_applies(end: OffsetDateTime, not_before: OffsetDateTime) -> bool {
    end > not_before
}

/// When to try again after `failures` consecutive failed renewals of a certificate expiring at
/// `not_after`: 15 min, 30 min, 1 h ... at most 12 h, and at least four tries before expiry.
pub fn retry_at(
    failures: i32,
    not_after: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> OffsetDateTime {
    let backoff = FIRST_RETRY * 2f64.powi(failures.clamp(1, 16) - 1);
    let mut gap = backoff.min(MAX_RETRY);
    if let Some(end) = not_after {
        gap = gap.min(((end - now) / 4_i32).max(Duration::minutes(1)));
    }
    now + gap
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const START: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    #[test]
    fn default_third_of_the_lifetime() {
        let end = START + Duration::days(90);
        let at = renew_at(START, end, &RenewalPolicy::default(), 1.0 / 3.0, 0.0);
        assert_eq!(at, START + Duration::days(60));
        // 47-day certificates work unchanged.
        let end = START + Duration::days(47);
        let at = renew_at(START, end, &RenewalPolicy::default(), 1.0 / 3.0, 0.0);
        assert!(
            at > START + Duration::days(31) && at < START + Duration::days(32),
            "{at}"
        );
    }

    #[test]
    fn policy_overrides() {
        let end = START + Duration::days(90);
        let days = RenewalPolicy {
            fraction: Some(0.5),
            days: Some(10),
        };
        assert_eq!(
            renew_at(START, end, &days, 1.0 / 3.0, 0.0),
            end - Duration::days(10)
        );
        let fraction = RenewalPolicy {
            fraction: Some(0.5),
            days: None,
        };
        assert_eq!(
            renew_at(START, end, &fraction, 1.0 / 3.0, 0.0),
            START + Duration::days(45)
        );
        let too_many_days = RenewalPolicy {
            fraction: None,
            days: Some(400),
        };
        assert_eq!(renew_at(START, end, &too_many_days, 1.0 / 3.0, 0.0), START);
    }

    #[test]
    fn jitter_moves_earlier_within_bounds() {
        let end = START + Duration::days(90);
        let base = renew_at(START, end, &RenewalPolicy::default(), 1.0 / 3.0, 0.0);
        let jittered = renew_at(START, end, &RenewalPolicy::default(), 1.0 / 3.0, 0.999);
        assert!(jittered < base && base - jittered <= MAX_JITTER);
        let short_end = START + Duration::hours(10);
        let short = renew_at(
            START,
            short_end,
            &RenewalPolicy::default(),
            1.0 / 3.0,
            0.999,
        );
        assert!(short >= START && short_end - short <= Duration::hours(4));
    }

    #[test]
    fn ari_window() {
        let end = START + Duration::days(2);
        let (first, last) = (START - Duration::days(30), START + Duration::days(60));
        assert_eq!(ari_renew_at(START, end, 0.0, first, last), START);
        assert_eq!(
            ari_renew_at(START, end, 0.5, first, last),
            START + Duration::days(1)
        );
        assert_eq!(ari_renew_at(end, START, 0.5, first, last), end);
    }

    #[test]
    fn ari_windows_are_clamped_before_expiry() {
        let (not_before, by_policy) = (START, START + Duration::days(60));
        // A window at or after expiry (or centuries away) renews by policy at the latest.
        let far = datetime!(9999-12-31 00:00 UTC);
        assert_eq!(
            ari_renew_at(START + Duration::days(89), far, 0.5, not_before, by_policy),
            by_policy
        );
        // A window straddling the policy time is cut there.
        assert_eq!(
            ari_renew_at(
                START + Duration::days(50),
                START + Duration::days(70),
                1.0,
                not_before,
                by_policy
            ),
            by_policy
        );
        // A window in the past renews at once (not before the certificate's start).
        assert_eq!(
            ari_renew_at(
                START - Duration::days(9),
                START - Duration::days(8),
                0.5,
                not_before,
                by_policy
            ),
            not_before
        );
    }

    #[test]
    fn a_window_that_ended_before_the_certificate_began_is_not_its_own() {
        assert!(ari_window_applies(START + Duration::seconds(1), START));
        assert!(!ari_window_applies(START, START));
        assert!(!ari_window_applies(START - Duration::days(1), START));
    }

    #[test]
    fn short_lifetimes_renew_by_fraction() {
        // 10-day certificates: a third of the lifetime left, jitter at most 5 % (12 h).
        let end = START + Duration::days(10);
        let policy = RenewalPolicy::default();
        let earliest = renew_at(START, end, &policy, 1.0 / 3.0, 0.999);
        let latest = renew_at(START, end, &policy, 1.0 / 3.0, 0.0);
        assert_eq!(latest, end - Duration::days(10) / 3_i32);
        assert!(latest - earliest <= Duration::hours(12), "{earliest}");
        assert!(earliest > START + Duration::days(6), "{earliest}");
        // 47-day certificates with the policy's days and fraction.
        let end = START + Duration::days(47);
        let days = RenewalPolicy {
            fraction: None,
            days: Some(10),
        };
        assert_eq!(
            renew_at(START, end, &days, 1.0 / 3.0, 0.0),
            end - Duration::days(10)
        );
        let half = RenewalPolicy {
            fraction: Some(0.5),
            days: None,
        };
        assert_eq!(
            renew_at(START, end, &half, 1.0 / 3.0, 0.0),
            START + Duration::hours(47 * 12)
        );
        // A 1-day certificate is never renewed before it starts, whatever the jitter.
        let end = START + Duration::days(1);
        assert!(renew_at(START, end, &days, 1.0 / 3.0, 0.999) >= START);
    }

    #[test]
    fn retries_back_off_but_stay_well_before_expiry() {
        let now = START;
        assert_eq!(retry_at(1, None, now), now + Duration::minutes(15));
        assert_eq!(retry_at(3, None, now), now + Duration::hours(1));
        assert_eq!(retry_at(30, None, now), now + Duration::hours(12));
        assert_eq!(
            retry_at(30, Some(now + Duration::hours(8)), now),
            now + Duration::hours(2)
        );
        assert_eq!(retry_at(1, Some(now), now), now + Duration::minutes(1));
    }
}
