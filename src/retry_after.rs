//! `Retry-After`, read from every upstream (Graph, DingTalk, hook and echo targets) by one
//! parser, and written to our own clients in whole seconds.

use std::time::Duration;

/// Absurd waits are capped at one hour.
const CAP: Duration = Duration::from_secs(3600);

/// Parses a `Retry-After` value: delta-seconds (Graph sends fractions such as `2.128`) or
/// an HTTP date (a past date means now). `None` when it is neither or negative.
pub fn parse(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        return Some(Duration::from_secs_f64(secs.min(CAP.as_secs_f64())));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO).min(CAP))
}

/// The `Retry-After` header of an answer, parsed.
pub fn of(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse)
}

/// Whole seconds for a `Retry-After` answered to our own clients (rounded up, at least 1).
pub fn whole_seconds(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_seconds_are_read_whole_or_fractional() {
        assert_eq!(parse("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse(" 2.128 "), Some(Duration::from_millis(2128)));
        assert_eq!(parse("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("99999999"), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn negative_or_unreadable_values_are_ignored() {
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("soon"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("NaN"), None);
        assert_eq!(parse("inf"), None);
    }

    #[test]
    fn http_dates_are_read_relative_to_now() {
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let future = (chrono::Utc::now() + chrono::Duration::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let d = parse(&future).expect("http date");
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        let far = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc2822();
        assert_eq!(parse(&far), Some(CAP));
    }

    #[test]
    fn the_header_is_found_by_name() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(of(&h), None);
        h.insert("retry-after", "3".parse().expect("value"));
        assert_eq!(of(&h), Some(Duration::from_secs(3)));
    }

    #[test]
    fn whole_seconds_round_up() {
        assert_eq!(whole_seconds(Duration::from_millis(2128)), 3);
        assert_eq!(whole_seconds(Duration::from_secs(4)), 4);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }
}
