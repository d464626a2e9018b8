//! The overview's expiry timeline: certificates per week over the next 13 weeks as an inline
//! SVG bar chart drawn on the server, the part whose renewal has been failing in red.

use maud::{Markup, html};
use time::OffsetDateTime;

use crate::db::overview::ExpiryPoint;

/// Weeks shown (91 days).
pub(super) const WEEKS: usize = 13;

/// Expiries and failing renewals per week from `start`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Week {
    pub(super) total: u32,
    pub(super) failing: u32,
}

/// Buckets `points` into [`WEEKS`] weeks from `start`; points outside are ignored.
pub(super) fn weeks(start: OffsetDateTime, points: &[ExpiryPoint]) -> [Week; WEEKS] {
    let mut weeks = [Week::default(); WEEKS];
    for p in points {
        // Before `start` is not on the chart (and would round into week 0).
        let Ok(days) = usize::try_from((p.not_after - start).whole_days()) else {
            continue;
        };
        let index = days / 7;
        if let Some(w) = weeks.get_mut(index) {
            w.total += 1;
            if p.failing {
                w.failing += 1;
            }
        }
    }
    weeks
}

const WIDTH: u32 = 660;
const HEIGHT: u32 = 200;
const LEFT: u32 = 36;
const TOP: u32 = 14;
const BOTTOM: u32 = 34;
const SLOT: u32 = (WIDTH - LEFT - 8) / WEEKS as u32;

/// The chart.
pub(super) fn svg(start: OffsetDateTime, weeks: &[Week; WEEKS]) -> Markup {
    let max = weeks.iter().map(|w| w.total).max().unwrap_or(0).max(1);
    let plot = HEIGHT - TOP - BOTTOM;
    let height = |n: u32| n * plot / max;
    let base = HEIGHT - BOTTOM;
    let label = |i: usize| {
        let d = start + time::Duration::weeks(i as i64);
        format!("{} {}", &d.month().to_string()[..3], d.day())
    };
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {HEIGHT}"))
            role="img" aria-labelledby="timeline-title" {
            title #timeline-title { "Certificates expiring per week over the next 90 days; failing renewals in red" }
            line x1=(LEFT) y1=(base) x2=(WIDTH - 4) y2=(base) stroke="#8a94a6" stroke-width="1" {}
            text x=(LEFT - 6) y=(TOP + 4) text-anchor="end" font-size="11" fill="#5b6474" { (max) }
            text x=(LEFT - 6) y=(base) text-anchor="end" font-size="11" fill="#5b6474" { "0" }
            @for (i, w) in weeks.iter().enumerate() {
                @let x = LEFT + 4 + i as u32 * SLOT;
                @let ok = w.total - w.failing;
                @let ok_h = height(ok);
                @let fail_h = height(w.failing);
                g {
                    title { (format!("week of {}: {} expiring, {} failing renewal", label(i), w.total, w.failing)) }
                    @if ok > 0 {
                        rect x=(x) y=(base - ok_h) width=(SLOT - 6) height=(ok_h) fill="#3a6ea5" {}
                    }
                    @if w.failing > 0 {
                        rect.failing x=(x) y=(base - ok_h - fail_h) width=(SLOT - 6) height=(fail_h) fill="#c0392b" {}
                    }
                    @if w.total > 0 {
                        text x=(x + (SLOT - 6) / 2) y=(base - ok_h - fail_h - 3) text-anchor="middle" font-size="11" fill="#1d2430" { (w.total) }
                    }
                    @if i % 2 == 0 {
                        text x=(x + (SLOT - 6) / 2) y=(base + 16) text-anchor="middle" font-size="11" fill="#5b6474" { (label(i)) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_fall_into_their_week_and_failures_are_marked() {
        let start = time::macros::datetime!(2026-12-01 00:00 UTC);
        let at = |days: i64, failing: bool| ExpiryPoint {
            not_after: start + time::Duration::days(days),
            failing,
        };
        let weeks = weeks(
            start,
            &[
                at(0, false),
                at(6, true),
                at(7, false),
                at(90, true),
                at(91, false),
                at(-1, false),
            ],
        );
        assert_eq!(
            weeks[0],
            Week {
                total: 2,
                failing: 1
            }
        );
        assert_eq!(
            weeks[1],
            Week {
                total: 1,
                failing: 0
            }
        );
        assert_eq!(
            weeks[12],
            Week {
                total: 1,
                failing: 1
            }
        );
        let svg = svg(start, &weeks).into_string();
        assert_eq!(svg.matches("class=\"failing\"").count(), 2, "{svg}");
        assert!(
            svg.contains("week of Dec 1: 2 expiring, 1 failing renewal"),
            "{svg}"
        );
    }
}
