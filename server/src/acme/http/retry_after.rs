//! `Retry-After` (delay-seconds or HTTP-date), capped at `ca_limits.max_retry_after_secs`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::RETRY_AFTER;

/// A `Retry-After` delay, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    /// The delay from when the response arrived, at most the cap.
    pub delay: Duration,
    /// Whether the CA asked for more than the cap.
    pub capped: bool,
}

/// Parses `Retry-After` (delay-seconds or HTTP-date) into a delay from `now`, capped at `max`
/// (a CA can ask for any number of seconds or a date centuries away).
pub fn parse_retry_after(value: &str, now: SystemTime, max: Duration) -> Option<RetryAfter> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let asked = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(RetryAfter {
        delay: asked.min(max),
        capped: asked > max,
    })
}

/// The capped `Retry-After` of a response, if it has a valid one.
pub(super) fn retry_after_of(headers: &HeaderMap, max: Duration) -> Option<RetryAfter> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now(), max))
}

/// Longest `Retry-After` handed on to instant-acme (30 days), which adds it to the clock
/// unchecked: beyond this the sum could overflow. Callers clamp further.
const MAX_HANDED_ON: Duration = Duration::from_secs(30 * 24 * 3600);

/// Rewrites a response's `Retry-After` as delay-seconds of at most 30 days (dropping one that
/// does not parse), so no answer can overflow instant-acme's time arithmetic (it reads the
/// header itself for renewal information).
pub(super) fn bound_header(headers: &mut HeaderMap) {
    let Some(value) = headers.get(RETRY_AFTER) else {
        return;
    };
    let bounded = value
        .to_str()
        .ok()
        .and_then(|v| parse_retry_after(v, SystemTime::now(), MAX_HANDED_ON));
    match bounded {
        Some(r) => {
            headers.insert(RETRY_AFTER, http::HeaderValue::from(r.delay.as_secs()));
        }
        None => {
            headers.remove(RETRY_AFTER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_handed_on_is_bounded_delay_seconds() {
        let bounded = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, http::HeaderValue::from_str(value).unwrap());
            bound_header(&mut headers);
            headers
                .get(RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(bounded("120").as_deref(), Some("120"));
        assert_eq!(bounded("18446744073709551615").as_deref(), Some("2592000"));
        assert_eq!(
            bounded("Fri, 31 Dec 9999 23:59:59 GMT").as_deref(),
            Some("2592000")
        );
        assert_eq!(bounded("soon"), None);
    }

    #[test]
    fn retry_after_both_forms_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let max = Duration::from_secs(3600);
        let delay = |value: &str| parse_retry_after(value, now, max).map(|r| (r.delay, r.capped));
        assert_eq!(delay(" 120 "), Some((Duration::from_secs(120), false)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(delay(&date), Some((Duration::from_secs(90), false)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(delay(&past), Some((Duration::ZERO, false)));
        assert_eq!(delay("soon"), None);
        assert_eq!(delay(""), None);
        // Absurd values from a broken or hostile CA are capped, never overflow.
        assert_eq!(delay("18446744073709551615"), Some((max, true)));
        assert_eq!(delay("Fri, 31 Dec 9999 23:59:59 GMT"), Some((max, true)));
        assert_eq!(delay("3601"), Some((max, true)));
    }
}
