//! UTC instants as the archive writes them. Hand-written civil-calendar
//! conversions (Howard Hinnant's algorithms, proleptic Gregorian, no leap
//! seconds), as elsewhere in the workspace, so no date crate is needed.

use cts_calendar::{civil_from_days, days_from_civil, days_in_month};
const SECS_PER_DAY: i64 = 86_400;

/// The civil date and time of Unix seconds, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
}

pub(crate) fn civil(unix_secs: i64) -> Civil {
    let days = unix_secs.div_euclid(SECS_PER_DAY);
    let secs = unix_secs.rem_euclid(SECS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: secs / 3600,
        minute: secs % 3600 / 60,
        second: secs % 60,
    }
}

/// `2016-05-30T16-20-56Z`: the time in trace and digest file names and in
/// `digest_start_time` / `digest_end_time` (dashes instead of colons, so it
/// can stand in an object name).
pub fn format_file_time(unix_secs: i64) -> String {
    let c = civil(unix_secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Parses [`format_file_time`]'s format back into Unix seconds.
pub fn parse_file_time(s: &str) -> Option<i64> {
    parse_fixed(s, b'-')
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (RFC 3339 in UTC) into Unix
/// seconds; the fraction is dropped.
pub(crate) fn parse_rfc3339_utc(s: &str) -> Option<i64> {
    let (main, rest) = s.split_at_checked(19)?;
    let ok_tail = rest == "Z"
        || rest
            .strip_prefix('.')
            .and_then(|f| f.strip_suffix('Z'))
            .is_some_and(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    if !ok_tail {
        return None;
    }
    parse_fixed(&format!("{main}Z"), b':')
}

/// `YYYY-MM-DDTHH?MM?SSZ` with `sep` as the time separator.
fn parse_fixed(s: &str, sep: u8) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != sep
        || b[16] != sep
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * SECS_PER_DAY + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_time_round_trip() {
        // 2016-05-30T16:20:56Z, the reference's example.
        let t = 1_464_625_256;
        assert_eq!(format_file_time(t), "2016-05-30T16-20-56Z");
        assert_eq!(parse_file_time("2016-05-30T16-20-56Z"), Some(t));
        assert_eq!(parse_file_time("2016-02-30T16-20-56Z"), None);
        assert_eq!(parse_file_time("2016-05-30T16:20:56Z"), None);
        assert_eq!(civil(0).year, 1970);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(
            parse_rfc3339_utc("2016-05-30T16:20:56Z"),
            Some(1_464_625_256)
        );
        assert_eq!(
            parse_rfc3339_utc("2016-05-30T16:20:56.123Z"),
            Some(1_464_625_256)
        );
        assert_eq!(parse_rfc3339_utc("2016-05-30T16:20:56+01:00"), None);
        assert_eq!(parse_rfc3339_utc("2016-05-30T16:20:56.Z"), None);
    }
}
