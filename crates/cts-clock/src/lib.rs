//! UTC time in the units CTS keeps: milliseconds since the epoch for trace
//! times, seconds for request signatures and file periods. One place so that
//! every crate reads the clock and converts civil times the same way; the
//! calendar arithmetic is `jiff`'s.

use jiff::civil::DateTime;
use jiff::SignedDuration;

const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);

/// Milliseconds since 1970-01-01T00:00:00Z (negative before).
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Seconds since 1970-01-01T00:00:00Z (negative before).
pub fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The UTC civil time of Unix seconds, clamped to the years -9999..=9999.
///
/// Civil arithmetic rather than `jiff::Timestamp`, whose range ends a day
/// short of 9999-12-31 (it leaves room for time zone offsets).
pub fn utc_civil(unix_secs: i64) -> DateTime {
    EPOCH
        .checked_add(SignedDuration::from_secs(unix_secs))
        .unwrap_or(if unix_secs < 0 {
            DateTime::MIN
        } else {
            DateTime::MAX
        })
}

/// Unix seconds of a UTC civil time (the inverse of [`utc_civil`]).
pub fn utc_secs(civil: DateTime) -> i64 {
    civil.duration_since(EPOCH).as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_system_clock() {
        let sys = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let ms = now_ms();
        assert!((ms - sys).abs() < 5_000, "{ms} vs {sys}");
        assert!((now_secs() - ms / 1000).abs() <= 5);
    }

    #[test]
    fn civil_round_trip_at_the_edges() {
        for secs in [0, -1, 1_795_435_200, 253_402_300_799, -62_135_596_800] {
            assert_eq!(utc_secs(utc_civil(secs)), secs);
        }
        assert_eq!(
            utc_civil(253_402_300_799),
            DateTime::constant(9999, 12, 31, 23, 59, 59, 0)
        );
        assert_eq!(utc_civil(i64::MAX), DateTime::MAX);
    }
}
