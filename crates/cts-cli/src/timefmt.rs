//! Time arguments and display: traces carry UTC milliseconds, people type
//! `15m`, `2024-05-01T10:00:00Z` or a raw timestamp.

use std::time::Duration;

use anyhow::{anyhow, Result};
use jiff::{tz::Offset, Timestamp};

const MS_PER_DAY: i64 = 86_400_000;

pub use cts_clock::now_ms;

/// Parses durations such as `30s`, `15m`, `2h`, `7d`, `1h30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || anyhow!("invalid duration {s:?} (use e.g. 30s, 15m, 2h, 7d, 1h30m)");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => MS_PER_DAY as u64,
            "w" => 7 * MS_PER_DAY as u64,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|v| v.checked_add(total_ms))
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Below this a timestamp is in seconds, from it on in milliseconds: 10^11
/// seconds is the year 5138, 10^11 ms is March 1973.
const SECONDS_BELOW: i64 = 100_000_000_000;

/// A `--from`/`--to` value: seconds or ms since the epoch (told apart by
/// magnitude), an RFC 3339 time (or a bare `YYYY-MM-DD`, midnight UTC),
/// `now`, `today` or `yesterday` (midnight UTC), or a duration meaning that
/// long before `now_ms` (`2h`, `2h ago`).
pub fn parse_time_arg(s: &str, now_ms: i64) -> Result<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = s
            .parse()
            .map_err(|_| anyhow!("timestamp {s:?} is out of range"))?;
        return if n < SECONDS_BELOW {
            Ok(n * 1000)
        } else {
            Ok(n)
        };
    }
    let midnight = now_ms.div_euclid(MS_PER_DAY) * MS_PER_DAY;
    match s.to_ascii_lowercase().as_str() {
        "now" => return Ok(now_ms),
        "today" => return Ok(midnight),
        "yesterday" => return Ok(midnight - MS_PER_DAY),
        _ => {}
    }
    let ago = s.strip_suffix(" ago").unwrap_or(s).trim_end();
    if let Ok(d) = parse_duration(ago) {
        return Ok(now_ms - d.as_millis() as i64);
    }
    parse_rfc3339(s).map_err(|e| {
        anyhow!("invalid time {s:?}: {e}; use RFC 3339 (2024-05-01T10:00:00Z), seconds or ms since the epoch, now, today, yesterday or a duration ago (15m, 2h ago, 7d)")
    })
}

fn parse_rfc3339(s: &str) -> Result<i64> {
    // A bare date is midnight UTC; anything else must name its offset.
    if s.len() == 10 {
        let date: jiff::civil::Date = s.parse()?;
        let midnight = Offset::UTC.to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))?;
        return Ok(midnight.as_millisecond());
    }
    Ok(s.parse::<Timestamp>()?.as_millisecond())
}

/// `2024-05-01T10:00:00.123Z`.
pub fn format_rfc3339_ms(ms: i64) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("1w").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        for bad in ["", "m", "15", "15x", "-5m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_args() {
        let now = 1_700_000_000_000;
        assert_eq!(
            parse_time_arg("1699999999999", now).unwrap(),
            1_699_999_999_999
        );
        // Seconds, told by magnitude.
        assert_eq!(parse_time_arg("1700000000", now).unwrap(), now);
        assert_eq!(parse_time_arg("0", now).unwrap(), 0);
        assert_eq!(parse_time_arg("now", now).unwrap(), now);
        // 2023-11-14T22:13:20Z: midnight of that day, and of the day before.
        assert_eq!(parse_time_arg("today", now).unwrap(), 1_699_920_000_000);
        assert_eq!(
            parse_time_arg("Yesterday", now).unwrap(),
            1_699_920_000_000 - MS_PER_DAY
        );
        assert_eq!(parse_time_arg("2h ago", now).unwrap(), now - 7_200_000);
        assert_eq!(parse_time_arg("1h30m ago", now).unwrap(), now - 5_400_000);
        assert_eq!(parse_time_arg("15m", now).unwrap(), now - 900_000);
        assert_eq!(parse_time_arg("7d", now).unwrap(), now - 7 * MS_PER_DAY);
        assert_eq!(parse_time_arg("2023-11-14T22:13:20Z", now).unwrap(), now);
        assert_eq!(
            parse_time_arg("2023-11-14T22:13:20.5Z", now).unwrap(),
            now + 500
        );
        assert_eq!(
            parse_time_arg("2023-11-14T22:13:20.123456Z", now).unwrap(),
            now + 123
        );
        assert_eq!(
            parse_time_arg("2023-11-15T00:13:20+02:00", now).unwrap(),
            now
        );
        assert_eq!(
            parse_time_arg("2023-11-14T20:13:20-02:00", now).unwrap(),
            now
        );
        assert_eq!(parse_time_arg("2023-11-14 22:13:20z", now).unwrap(), now);
        // ISO 8601's offset without a colon is taken too.
        assert_eq!(
            parse_time_arg("2023-11-15T00:13:20+0200", now).unwrap(),
            now
        );
        assert_eq!(parse_time_arg("1970-01-01", now).unwrap(), 0);
        assert_eq!(
            parse_time_arg("2024-03-01", now).unwrap(),
            1_709_251_200_000
        );
        for bad in [
            "tomorrow",
            "ago",
            "2h before",
            "2023-11-14T22:13:20",
            "2023-02-29T00:00:00Z",
            "2023-13-01",
            "2023-11-14T25:00:00Z",
            "2023-11-14T22:13:20.Z",
        ] {
            assert!(parse_time_arg(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            format_rfc3339_ms(1_709_251_199_999),
            "2024-02-29T23:59:59.999Z"
        );
        // Round trip over a span of dates, leap years included.
        for day in (-800..20_000).step_by(37) {
            let ms = day * MS_PER_DAY + 45_296_789;
            assert_eq!(parse_rfc3339(&format_rfc3339_ms(ms)).unwrap(), ms);
        }
    }
}
