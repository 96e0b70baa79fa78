//! `X-Sdk-Date` values: `%Y%m%dT%H%M%SZ` in UTC.

use crate::{excerpt, SignError};
use cts_clock::{utc_civil, utc_secs};
use jiff::civil::DateTime;

const SDK_DATE: &str = "%Y%m%dT%H%M%SZ";

/// Formats Unix seconds as an `X-Sdk-Date` value, e.g. `20261123T120000Z`.
///
/// The result is only a valid `X-Sdk-Date` (one [`parse_sdk_date`] accepts)
/// for years 1 to 9999, which is everything a clock can say; outside it the
/// instant is clamped to the years -9999 to 9999.
pub fn format_sdk_date(unix_seconds: i64) -> String {
    utc_civil(unix_seconds).strftime(SDK_DATE).to_string()
}

/// Parses an `X-Sdk-Date` value (exactly `YYYYMMDDTHHMMSSZ`, UTC) into Unix
/// seconds. Strict: exactly 16 characters, a real calendar date (leap years
/// included), hours 00-23, minutes and seconds 00-59, year 0001-9999 (the
/// range of Python's `datetime`).
pub fn parse_sdk_date(s: &str) -> Result<i64, SignError> {
    let bad = || SignError::BadDate(excerpt(s));
    // jiff's `%Y` would also take a sign or fewer digits, `%S` a leap second.
    let shape_ok = s.len() == 16
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 => c == b'T',
            15 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
        && &s[13..15] <= "59";
    if !shape_ok {
        return Err(bad());
    }
    let civil = DateTime::strptime(SDK_DATE, s).map_err(|_| bad())?;
    if civil.year() < 1 {
        return Err(bad());
    }
    Ok(utc_secs(civil))
}

/// Checks that `sdk_date` is a valid `X-Sdk-Date` at most `max_skew_secs`
/// away from `now_unix`, in either direction (the boundary itself is
/// accepted). The SDK has no skew logic of its own: its clock is whatever the
/// client machine says, so the window must allow for ordinary clock drift.
pub fn check_date(sdk_date: &str, now_unix: i64, max_skew_secs: i64) -> Result<(), SignError> {
    let t = parse_sdk_date(sdk_date)?;
    let skew_secs = t.saturating_sub(now_unix);
    if skew_secs.unsigned_abs() > max_skew_secs.max(0).unsigned_abs() {
        return Err(SignError::StaleDate {
            skew_secs,
            max_skew_secs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECS_PER_DAY: i64 = 86_400;

    #[test]
    fn known_dates() {
        assert_eq!(format_sdk_date(0), "19700101T000000Z");
        assert_eq!(format_sdk_date(1_700_000_000), "20231114T221320Z");
        assert_eq!(format_sdk_date(1_795_435_200), "20261123T120000Z");
        assert_eq!(format_sdk_date(951_782_400), "20000229T000000Z");
        assert_eq!(format_sdk_date(-1), "19691231T235959Z");
        assert_eq!(format_sdk_date(253_402_300_799), "99991231T235959Z");
        assert_eq!(format_sdk_date(-62_135_596_800), "00010101T000000Z");
        assert_eq!(parse_sdk_date("20261123T120000Z"), Ok(1_795_435_200));
        assert_eq!(parse_sdk_date("19691231T235959Z"), Ok(-1));
        assert_eq!(parse_sdk_date("00010101T000000Z"), Ok(-62_135_596_800));
        assert_eq!(parse_sdk_date("99991231T235959Z"), Ok(253_402_300_799));
    }

    #[test]
    fn round_trip_over_many_days() {
        // Every day from 1600 to 2500 at a varying time of day; consecutive
        // days are consecutive calendar dates.
        let first = parse_sdk_date("16000101T000000Z").unwrap() / SECS_PER_DAY;
        let last = parse_sdk_date("25001231T000000Z").unwrap() / SECS_PER_DAY;
        let mut prev: Option<jiff::civil::Date> = None;
        for d in first..=last {
            let t = d * SECS_PER_DAY + (d.rem_euclid(86_400) * 7919) % SECS_PER_DAY;
            let s = format_sdk_date(t);
            assert_eq!(parse_sdk_date(&s), Ok(t), "{s}");
            let date = jiff::civil::Date::strptime("%Y%m%d", &s[..8]).unwrap();
            if let Some(p) = prev {
                assert_eq!(p.tomorrow().unwrap(), date, "{s}");
            }
            prev = Some(date);
        }
    }

    #[test]
    fn leap_years() {
        assert!(parse_sdk_date("20240229T000000Z").is_ok());
        assert!(parse_sdk_date("20000229T000000Z").is_ok());
        assert!(parse_sdk_date("21000229T000000Z").is_err());
        assert!(parse_sdk_date("20230229T000000Z").is_err());
        assert!(parse_sdk_date("20230431T000000Z").is_err());
        assert!(parse_sdk_date("20230430T235959Z").is_ok());
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "20261123T120000",
            "20261123T120000z",
            "20261123t120000Z",
            "20261123 120000Z",
            "2026-11-23T12:00:00Z",
            "20261123T120000Z ",
            " 20261123T120000Z",
            "2026112T1200000Z",
            "+0261123T120000Z",
            "20261323T120000Z",
            "20260023T120000Z",
            "20261100T120000Z",
            "20261123T240000Z",
            "20261123T126000Z",
            "20261123T120060Z",
            "00000101T000000Z",
            "２0261123T12000Z",
        ] {
            assert!(
                matches!(parse_sdk_date(s), Err(SignError::BadDate(_))),
                "{s:?}"
            );
        }
    }

    #[test]
    fn skew_boundaries() {
        let now = 1_795_435_200; // 20261123T120000Z
        let d = "20261123T120000Z";
        assert_eq!(check_date(d, now, 0), Ok(()));
        assert_eq!(check_date(d, now + 900, 900), Ok(()));
        assert_eq!(check_date(d, now - 900, 900), Ok(()));
        assert_eq!(
            check_date(d, now + 901, 900),
            Err(SignError::StaleDate {
                skew_secs: -901,
                max_skew_secs: 900
            })
        );
        assert_eq!(
            check_date(d, now - 901, 900),
            Err(SignError::StaleDate {
                skew_secs: 901,
                max_skew_secs: 900
            })
        );
        assert!(check_date(d, i64::MIN, 900).is_err());
        assert!(check_date(d, i64::MAX, i64::MAX).is_ok());
        assert!(check_date(d, now + 1, -5).is_err());
        assert!(matches!(
            check_date("garbage", now, 900),
            Err(SignError::BadDate(_))
        ));
    }
}
