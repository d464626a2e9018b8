//! Time spans written as a count and a unit (`30d`, `12h`, `90m`, `45s`): the API's
//! `expiring_within` filter and the CLI's `--expires-in` share this one parser.

/// Longest span accepted: 100 years.
const MAX_SECONDS: i64 = 100 * 365 * 24 * 3600;

/// Why a span was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    #[error("expected a span such as 30d, 12h, 90m or 45s")]
    Malformed,
    #[error("a span may be at most 100 years")]
    TooLong,
}

/// Parses a non-negative count of days (`d`), hours (`h`), minutes (`m`) or seconds (`s`).
/// Operates on characters, so any text (multibyte included) gives an answer, never a panic.
pub fn parse_span(text: &str) -> Result<time::Duration, SpanError> {
    let mut chars = text.chars();
    let unit_seconds: i64 = match chars.next_back() {
        Some('d') => 24 * 3600,
        Some('h') => 3600,
        Some('m') => 60,
        Some('s') => 1,
        _ => return Err(SpanError::Malformed),
    };
    let count = chars.as_str();
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpanError::Malformed);
    }
    let seconds = count
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_seconds))
        .filter(|s| *s <= MAX_SECONDS)
        .ok_or(SpanError::TooLong)?;
    Ok(time::Duration::seconds(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_span("30d"), Ok(time::Duration::days(30)));
        assert_eq!(parse_span("12h"), Ok(time::Duration::hours(12)));
        assert_eq!(parse_span("90m"), Ok(time::Duration::minutes(90)));
        assert_eq!(parse_span("45s"), Ok(time::Duration::seconds(45)));
        assert_eq!(parse_span("0d"), Ok(time::Duration::ZERO));
        assert_eq!(parse_span("36500d"), Ok(time::Duration::days(36_500)));
    }

    #[test]
    fn refuses_without_panicking() {
        for bad in [
            "",
            "d",
            "1",
            "1é",
            "é",
            "éd",
            "1éd",
            "-1d",
            "+1d",
            " 1d",
            "1 d",
            "1.5h",
            "1w",
            "1D",
            "١d",
            "1d\u{301}",
        ] {
            assert_eq!(parse_span(bad), Err(SpanError::Malformed), "{bad:?}");
        }
        for long in ["36501d", "99999999999999999999d", "9223372036854775807s"] {
            assert_eq!(parse_span(long), Err(SpanError::TooLong), "{long:?}");
        }
        assert_eq!(
            parse_span(&format!("{}s", MAX_SECONDS)),
            Ok(time::Duration::seconds(MAX_SECONDS))
        );
    }
}
