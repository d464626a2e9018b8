//! Rollout guard: whether an agent may install a renewed certificate now. A change window (e.g.
//! `Sat 02:00-04:00 +01:00`: the agent's local time, given as its UTC offset) outside which a
//! renewal waits, unless the version it replaces expires within a margin; and canary agents,
//! which install first, the others once every canary serves the new version. A first install
//! never waits. Pure: `now` is a parameter.

use std::fmt;
use std::str::FromStr;

use time::{OffsetDateTime, UtcOffset, Weekday};

/// A weekly (or daily) window of local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeWindow {
    /// The day the window starts; `None` for every day.
    day: Option<Weekday>,
    /// Start and end, minutes after local midnight; `end < start` crosses midnight.
    start: u16,
    end: u16,
    offset: UtcOffset,
}

const DAYS: [(&str, Weekday); 7] = [
    ("Mon", Weekday::Monday),
    ("Tue", Weekday::Tuesday),
    ("Wed", Weekday::Wednesday),
    ("Thu", Weekday::Thursday),
    ("Fri", Weekday::Friday),
    ("Sat", Weekday::Saturday),
    ("Sun", Weekday::Sunday),
];

fn minutes(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && text.len() == 5).then_some(h * 60 + m)
}

fn offset(text: &str) -> Option<UtcOffset> {
    if text.eq_ignore_ascii_case("UTC") || text == "Z" {
        return Some(UtcOffset::UTC);
    }
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let m = i32::from(minutes(&text[1..])?);
    UtcOffset::from_whole_seconds(sign * m * 60).ok()
}

impl FromStr for ChangeWindow {
    type Err = String;

    /// `[Mon|…|Sun] HH:MM-HH:MM [+HH:MM|-HH:MM|UTC]`, e.g. `Sat 02:00-04:00 +01:00`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{text}` is not a change window like `Sat 02:00-04:00 +01:00` (day optional, offset default UTC)"
            )
        };
        let mut parts: Vec<&str> = text.split_whitespace().collect();
        let day = match parts
            .first()
            .and_then(|p| DAYS.iter().find(|(n, _)| p.eq_ignore_ascii_case(n)))
        {
            Some((_, d)) => {
                parts.remove(0);
                Some(*d)
            }
            None => None,
        };
        let (range, zone) = match parts.as_slice() {
            [range] => (*range, UtcOffset::UTC),
            [range, zone] => (*range, offset(zone).ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        let (start, end) = range.split_once('-').ok_or_else(bad)?;
        let (start, end) = (
            minutes(start).ok_or_else(bad)?,
            minutes(end).ok_or_else(bad)?,
        );
        if start == end {
            return Err(format!("`{text}`: the window is empty"));
        }
        Ok(Self {
            day,
            start,
            end,
            offset: zone,
        })
    }
}

impl fmt::Display for ChangeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(day) = self.day {
            let name = DAYS.iter().find(|(_, d)| *d == day).map_or("", |(n, _)| n);
            write!(f, "{name} ")?;
        }
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        let (h, m, _) = self.offset.as_hms();
        let sign = if h < 0 || m < 0 { '-' } else { '+' };
        write!(
            f,
            "{}-{} {sign}{:02}:{:02}",
            hm(self.start),
            hm(self.end),
            h.unsigned_abs(),
            m.unsigned_abs()
        )
    }
}

impl ChangeWindow {
    /// True when `now` lies in the window (start included, end excluded).
    pub fn contains(&self, now: OffsetDateTime) -> bool {
        let local = now.to_offset(self.offset);
        let minute = u16::from(local.hour()) * 60 + u16::from(local.minute());
        let on = |day: Weekday| self.day.is_none_or(|d| d == day);
        if self.start < self.end {
            on(local.weekday()) && (self.start..self.end).contains(&minute)
        } else {
            (on(local.weekday()) && minute >= self.start)
                || (on(local.weekday().previous()) && minute < self.end)
        }
    }
}

/// Why a renewal waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Outside the agent's change window.
    OutsideWindow(ChangeWindow),
    /// Not a canary, and a canary does not serve the new version yet.
    WaitingForCanaries,
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::OutsideWindow(w) => write!(f, "held until the change window {w}"),
            Hold::WaitingForCanaries => {
                f.write_str("held until the canary agents serve the new version")
            }
        }
    }
}

/// What the rule needs about one agent and one certificate.
pub struct Rollout<'a> {
    pub window: Option<&'a ChangeWindow>,
    pub canary: bool,
    /// End of the version the current one replaces; `None` for a first version.
    pub replaced_not_after: Option<OffsetDateTime>,
    /// How close to its end the replaced version may come before the window is ignored.
    pub margin: time::Duration,
    /// Every canary agent of the certificate serves the current version (true without any).
    pub canaries_serving: bool,
}

/// Whether the current version waits at `now`, and why.
pub fn hold(r: &Rollout<'_>, now: OffsetDateTime) -> Option<Hold> {
    let replaced = r.replaced_not_after?;
    if replaced - now <= r.margin {
        return None;
    }
    if let Some(w) = r.window
        && !w.contains(now)
    {
        return Some(Hold::OutsideWindow(*w));
    }
    (!r.canary && !r.canaries_serving).then_some(Hold::WaitingForCanaries)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn windows_parse_print_and_contain() {
        let w: ChangeWindow = "Sat 02:00-04:00 +01:00".parse().unwrap();
        assert_eq!(w.to_string(), "Sat 02:00-04:00 +01:00");
        // 2026-12-05 is a Saturday.
        assert!(w.contains(datetime!(2026-12-05 01:00 UTC)), "02:00 local");
        assert!(w.contains(datetime!(2026-12-05 02:59 UTC)));
        assert!(!w.contains(datetime!(2026-12-05 03:00 UTC)), "end excluded");
        assert!(!w.contains(datetime!(2026-12-05 00:59 UTC)));
        assert!(!w.contains(datetime!(2026-12-06 01:30 UTC)), "Sunday");
        let night: ChangeWindow = "Fri 23:00-01:00".parse().unwrap();
        assert!(night.contains(datetime!(2026-12-04 23:30 UTC)));
        assert!(
            night.contains(datetime!(2026-12-05 00:30 UTC)),
            "Saturday 00:30 ends Friday's window"
        );
        assert!(!night.contains(datetime!(2026-12-05 23:30 UTC)));
        let daily: ChangeWindow = "02:00-04:00 UTC".parse().unwrap();
        assert_eq!(daily.to_string(), "02:00-04:00 +00:00");
        assert!(daily.contains(datetime!(2026-12-02 03:00 UTC)));
        for bad in [
            "",
            "Sat",
            "Sat 2:00-4:00",
            "Sat 02:00-02:00",
            "Sat 02:00-25:00",
            "Sat 02:00-04:00 CET",
            "Sat 02:00-04:00 +1",
        ] {
            assert!(bad.parse::<ChangeWindow>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn renewals_wait_for_the_window_and_the_canaries_unless_expiring() {
        let w: ChangeWindow = "Sat 02:00-04:00".parse().unwrap();
        let inside = datetime!(2026-12-05 03:00 UTC);
        let outside = datetime!(2026-12-02 12:00 UTC);
        let rollout = |window, canary, replaced_not_after, canaries_serving| Rollout {
            window,
            canary,
            replaced_not_after,
            margin: time::Duration::days(7),
            canaries_serving,
        };
        let later = Some(datetime!(2027-01-31 0:00 UTC));
        assert_eq!(
            hold(&rollout(Some(&w), false, None, false), outside),
            None,
            "first install"
        );
        assert_eq!(
            hold(&rollout(Some(&w), false, later, true), outside),
            Some(Hold::OutsideWindow(w))
        );
        assert_eq!(hold(&rollout(Some(&w), false, later, true), inside), None);
        let soon = Some(outside + time::Duration::days(6));
        assert_eq!(
            hold(&rollout(Some(&w), false, soon, false), outside),
            None,
            "expiring"
        );
        assert_eq!(
            hold(&rollout(None, false, later, false), outside),
            Some(Hold::WaitingForCanaries)
        );
        assert_eq!(
            hold(&rollout(None, true, later, false), outside),
            None,
            "a canary goes first"
        );
        assert_eq!(
            hold(&rollout(None, false, later, true), outside),
            None,
            "canaries serve it"
        );
    }
}
