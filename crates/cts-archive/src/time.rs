//! UTC instants as the archive writes them, with `jiff` doing the calendar.

pub(crate) use cts_clock::utc_civil as civil;
use cts_clock::utc_secs;
use jiff::{civil::DateTime, Timestamp};

const FILE_TIME: &str = "%Y-%m-%dT%H-%M-%SZ";

/// `2016-05-30T16-20-56Z`: the time in trace and digest file names and in
/// `digest_start_time` / `digest_end_time` (dashes instead of colons, so it
/// can stand in an object name).
pub fn format_file_time(unix_secs: i64) -> String {
    civil(unix_secs).strftime(FILE_TIME).to_string()
}

/// Parses [`format_file_time`]'s format back into Unix seconds.
pub fn parse_file_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // Exactly the written shape: jiff's `%Y` would also take a sign or fewer
    // digits, `%S` a leap second.
    let shape_ok = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 | 13 | 16 => *c == b'-',
            10 => *c == b'T',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
        && &s[17..19] <= "59";
    if !shape_ok {
        return None;
    }
    DateTime::strptime(FILE_TIME, s).ok().map(utc_secs)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (RFC 3339 in UTC) into Unix
/// seconds; the fraction is dropped.
pub(crate) fn parse_rfc3339_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[10] != b'T' || b[b.len() - 1] != b'Z' || b[19] == b',' {
        return None;
    }
    s.parse::<Timestamp>().ok().map(|t| t.as_second())
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
        assert_eq!(civil(0).year(), 1970);
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
