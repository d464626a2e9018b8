//! Notification rules: which subscription hears about an event, when a failed delivery is tried
//! again or given up, which expiry threshold a version crossed, and the words each event says
//! (what happened, what certkeep does next, the one command that fixes it).

use std::time::Duration;

use certkeep_api_types::notification::{NotificationEvent, SubscriptionScope};
use time::OffsetDateTime;
use uuid::Uuid;

use super::names::pattern_matches;

/// What routing looks at in an event.
#[derive(Debug, Clone, Default)]
pub struct EventSubject {
    pub certificate_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub dns_names: Vec<String>,
}

/// A subscription: a channel hears about these kinds within this scope.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: Uuid,
    pub name: String,
    pub channel_id: Uuid,
    pub events: Vec<NotificationEvent>,
    pub scope: SubscriptionScope,
    pub account_id: Option<Uuid>,
    pub domain_patterns: Vec<String>,
    pub agent_id: Option<Uuid>,
    pub digest: bool,
    pub digest_when_empty: bool,
    pub digest_last_on: Option<String>,
    pub created_at: OffsetDateTime,
}

impl Subscription {
    /// Whether this subscription receives an event of `kind` about `subject`.
    pub fn matches(&self, kind: NotificationEvent, subject: &EventSubject) -> bool {
        self.events.contains(&kind) && self.covers(subject)
    }

    /// Whether `subject` lies within the scope (kinds aside).
    pub fn covers(&self, subject: &EventSubject) -> bool {
        match self.scope {
            SubscriptionScope::All => true,
            SubscriptionScope::Account => {
                self.account_id.is_some() && self.account_id == subject.account_id
            }
            SubscriptionScope::Agent => {
                self.agent_id.is_some() && self.agent_id == subject.agent_id
            }
            SubscriptionScope::Domains => subject.dns_names.iter().any(|name| {
                self.domain_patterns
                    .iter()
                    .any(|p| pattern_matches(p, name))
            }),
        }
    }
}

/// A certificate's events muted until a time (maintenance).
#[derive(Debug, Clone)]
pub struct Mute {
    pub id: Uuid,
    pub certificate_id: Uuid,
    /// Empty: every kind.
    pub events: Vec<NotificationEvent>,
    pub until: OffsetDateTime,
    pub reason: String,
    pub created_by: Option<String>,
    pub created_at: OffsetDateTime,
}

/// Whether an event of `kind` about `certificate` is muted at `now`.
pub fn muted(
    mutes: &[Mute],
    kind: NotificationEvent,
    certificate: Option<Uuid>,
    now: OffsetDateTime,
) -> bool {
    certificate.is_some_and(|c| {
        mutes.iter().any(|m| {
            m.certificate_id == c
                && m.until > now
                && (m.events.is_empty() || m.events.contains(&kind))
        })
    })
}

/// The channels an event goes to: one per channel, however many subscriptions match.
pub fn channels_for(
    subscriptions: &[Subscription],
    mutes: &[Mute],
    kind: NotificationEvent,
    subject: &EventSubject,
    now: OffsetDateTime,
) -> Vec<Uuid> {
    if muted(mutes, kind, subject.certificate_id, now) {
        return Vec::new();
    }
    let mut channels: Vec<Uuid> = subscriptions
        .iter()
        .filter(|s| s.matches(kind, subject))
        .map(|s| s.channel_id)
        .collect();
    channels.sort();
    channels.dedup();
    channels
}

/// When to try a delivery again after `attempts` failed attempts (`first` after the first,
/// doubling up to `cap`), or `None` when the event is older than `dead_letter_after` and the
/// delivery is given up.
pub fn next_attempt(
    event_created: OffsetDateTime,
    attempts: i32,
    first: Duration,
    cap: Duration,
    dead_letter_after: Duration,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    if now - event_created >= dead_letter_after {
        return None;
    }
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let delay = first.saturating_mul(1 << exponent).min(cap);
    Some(now + delay)
}

/// The tightest expiry threshold (in days) that `not_after` has crossed at `now`, if any: a
/// version at 2 days left with thresholds `[14, 7, 3, 1]` is at threshold 3.
pub fn expiring_threshold(
    not_after: OffsetDateTime,
    now: OffsetDateTime,
    thresholds: &[u32],
) -> Option<u32> {
    let left = not_after - now;
    if left <= time::Duration::ZERO {
        return None;
    }
    thresholds
        .iter()
        .copied()
        .filter(|days| left <= time::Duration::days(i64::from(*days)))
        .min()
}

/// Whether an order failure is worth a `certificate.renewal_failed`: when certkeep gives up
/// (`given_up`: nothing retries it), exactly when the consecutive failures reach the threshold
/// (once per streak), or when the current version has less than `lifetime_threshold` left
/// (once per version: the caller dedupes).
pub fn renewal_failure_notice(
    given_up: bool,
    consecutive_failures: i32,
    attempts_threshold: u32,
    not_after: Option<OffsetDateTime>,
    lifetime_threshold: time::Duration,
    now: OffsetDateTime,
) -> Option<RenewalFailureNotice> {
    if given_up {
        return Some(RenewalFailureNotice::GivenUp);
    }
    if i64::from(consecutive_failures) == i64::from(attempts_threshold.max(1)) {
        return Some(RenewalFailureNotice::Streak);
    }
    match not_after {
        Some(end) if end - now < lifetime_threshold => Some(RenewalFailureNotice::Lifetime),
        _ => None,
    }
}

/// Why a renewal failure is notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalFailureNotice {
    /// The order failed for good; nothing retries it.
    GivenUp,
    /// The configured number of failures in a row.
    Streak,
    /// The remaining lifetime fell under the threshold while renewal still fails.
    Lifetime,
}

/// The words of an event: what happened, what certkeep does next, what fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Words {
    pub summary: String,
    pub next_step: String,
    pub fix: String,
}

/// Words for an event about the certificate `name` with `names`; `detail` is the error or the
/// days left.
pub fn certificate_words(kind: NotificationEvent, name: &str, detail: &str) -> Words {
    let show = format!("certkeep cert show {name}");
    let (summary, next_step, fix) = match kind {
        NotificationEvent::CertificateIssued => (
            format!("Certificate {name} was issued"),
            "Agents assigned to it install it at their next poll; renewal is scheduled.".to_owned(),
            show,
        ),
        NotificationEvent::CertificateRenewed => (
            format!("Certificate {name} was renewed"),
            "Agents assigned to it install the new version at their next poll.".to_owned(),
            show,
        ),
        NotificationEvent::CertificateRenewalFailed => (
            format!("Renewal of certificate {name} failed: {detail}"),
            "certkeep keeps retrying with back-off until the certificate expires.".to_owned(),
            format!("fix the cause, then: certkeep cert renew {name}"),
        ),
        NotificationEvent::CertificateExpiring => (
            format!("Certificate {name} expires in {detail} without a successful renewal"),
            "certkeep keeps trying to renew it; this warning repeats at the next threshold."
                .to_owned(),
            format!("certkeep cert renew {name}"),
        ),
        NotificationEvent::CertificateRevoked => (
            format!("Certificate {name} was revoked ({detail})"),
            "certkeep orders a replacement unless the certificate is retired.".to_owned(),
            show,
        ),
        _ => (format!("{kind}: {name}: {detail}"), String::new(), show),
    };
    Words {
        summary,
        next_step,
        fix,
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn sub(scope: SubscriptionScope, patterns: &[&str]) -> Subscription {
        Subscription {
            id: Uuid::new_v4(),
            name: "s".into(),
            channel_id: Uuid::new_v4(),
            events: vec![NotificationEvent::CertificateRenewalFailed],
            scope,
            account_id: None,
            domain_patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
            agent_id: None,
            digest: false,
            digest_when_empty: false,
            digest_last_on: None,
            created_at: datetime!(2026-01-01 0:00 UTC),
        }
    }

    fn subject(names: &[&str]) -> EventSubject {
        EventSubject {
            certificate_id: Some(Uuid::from_u128(1)),
            account_id: Some(Uuid::from_u128(2)),
            agent_id: None,
            dns_names: names.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    #[test]
    fn domain_scope_hears_only_its_own_names() {
        let med = sub(SubscriptionScope::Domains, &["*.med.example.edu"]);
        let kind = NotificationEvent::CertificateRenewalFailed;
        assert!(med.matches(kind, &subject(&["www.med.example.edu"])));
        assert!(med.matches(kind, &subject(&["a.example.edu", "x.y.med.example.edu"])));
        assert!(!med.matches(kind, &subject(&["med.example.edu"])));
        assert!(!med.matches(kind, &subject(&["www.law.example.edu"])));
        assert!(!med.matches(
            NotificationEvent::CertificateIssued,
            &subject(&["www.med.example.edu"])
        ));
    }

    #[test]
    fn account_and_agent_scopes_need_their_id() {
        let mut s = sub(SubscriptionScope::Account, &[]);
        let kind = NotificationEvent::CertificateRenewalFailed;
        assert!(!s.matches(kind, &subject(&["a.example.edu"])));
        s.account_id = Some(Uuid::from_u128(2));
        assert!(s.matches(kind, &subject(&["a.example.edu"])));
        let mut a = sub(SubscriptionScope::Agent, &[]);
        assert!(!a.matches(kind, &EventSubject::default()));
        a.agent_id = Some(Uuid::from_u128(9));
        let on_agent = EventSubject {
            agent_id: Some(Uuid::from_u128(9)),
            ..EventSubject::default()
        };
        assert!(a.matches(kind, &on_agent));
    }

    #[test]
    fn one_channel_once_and_mutes_silence_until_they_end() {
        let now = datetime!(2026-03-01 12:00 UTC);
        let a = sub(SubscriptionScope::All, &[]);
        let mut b = sub(SubscriptionScope::Domains, &["*.example.edu"]);
        b.channel_id = a.channel_id;
        let kind = NotificationEvent::CertificateRenewalFailed;
        let ev = subject(&["www.example.edu"]);
        let subs = [a.clone(), b];
        assert_eq!(channels_for(&subs, &[], kind, &ev, now), vec![a.channel_id]);
        let mute = Mute {
            id: Uuid::new_v4(),
            certificate_id: Uuid::from_u128(1),
            events: vec![],
            until: now + time::Duration::hours(1),
            reason: "maintenance".into(),
            created_by: None,
            created_at: now,
        };
        assert!(channels_for(&subs, std::slice::from_ref(&mute), kind, &ev, now).is_empty());
        let later = now + time::Duration::hours(2);
        assert_eq!(
            channels_for(&subs, std::slice::from_ref(&mute), kind, &ev, later).len(),
            1
        );
        let other_kind = Mute {
            events: vec![NotificationEvent::CertificateIssued],
            ..mute
        };
        assert_eq!(channels_for(&subs, &[other_kind], kind, &ev, now).len(), 1);
    }

    #[test]
    fn back_off_doubles_to_the_cap_and_gives_up_after_the_dead_letter_age() {
        let created = datetime!(2026-03-01 12:00 UTC);
        let cap = Duration::from_secs(60);
        let dead = Duration::from_secs(3600);
        let delay = |attempts, now: OffsetDateTime| {
            next_attempt(created, attempts, Duration::from_secs(5), cap, dead, now)
                .map(|at| (at - now).whole_seconds())
        };
        assert_eq!(delay(1, created), Some(5));
        assert_eq!(delay(2, created), Some(10));
        assert_eq!(delay(4, created), Some(40));
        assert_eq!(delay(5, created), Some(60));
        assert_eq!(delay(500, created), Some(60));
        assert_eq!(delay(3, created + time::Duration::hours(1)), None);
    }

    #[test]
    fn the_tightest_crossed_threshold_counts() {
        let now = datetime!(2026-03-01 12:00 UTC);
        let t = [14, 7, 3, 1];
        let at = |days: i64| expiring_threshold(now + time::Duration::days(days), now, &t);
        assert_eq!(at(20), None);
        assert_eq!(at(14), Some(14));
        assert_eq!(at(10), Some(14));
        assert_eq!(at(2), Some(3));
        assert_eq!(
            expiring_threshold(now + time::Duration::hours(5), now, &t),
            Some(1)
        );
        assert_eq!(at(-1), None, "expired is no longer expiring");
    }

    #[test]
    fn renewal_failures_notify_once_per_streak_and_under_the_lifetime_threshold() {
        let now = datetime!(2026-03-01 12:00 UTC);
        let week = time::Duration::days(7);
        let far = Some(now + time::Duration::days(40));
        let near = Some(now + time::Duration::days(3));
        assert_eq!(renewal_failure_notice(false, 2, 3, far, week, now), None);
        assert_eq!(
            renewal_failure_notice(false, 3, 3, far, week, now),
            Some(RenewalFailureNotice::Streak)
        );
        assert_eq!(renewal_failure_notice(false, 4, 3, far, week, now), None);
        assert_eq!(
            renewal_failure_notice(false, 5, 3, near, week, now),
            Some(RenewalFailureNotice::Lifetime)
        );
        assert_eq!(
            renewal_failure_notice(true, 1, 3, None, week, now),
            Some(RenewalFailureNotice::GivenUp)
        );
    }

    #[test]
    fn words_name_the_certificate_and_the_fix() {
        let w = certificate_words(
            NotificationEvent::CertificateRenewalFailed,
            "www",
            "rate limited",
        );
        assert!(w.summary.contains("www") && w.summary.contains("rate limited"));
        assert!(w.fix.contains("certkeep cert renew www"));
        assert!(!w.next_step.is_empty());
    }
}
