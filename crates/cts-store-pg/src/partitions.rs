//! Day partitions of `cts_traces`: made on demand for the days a batch
//! touches, named by their UTC date (`cts_traces_20261206`).

use std::collections::BTreeSet;

use postgres::error::SqlState;

use crate::store::PgStore;
use crate::PgError;

/// Creates the partitions of `days` that this node does not know to exist.
/// Nodes may race to create the same one: the loser finds it made.
pub(crate) fn ensure(store: &PgStore, days: &BTreeSet<i32>) -> Result<(), PgError> {
    let missing: Vec<i32> = {
        let known = store.partitions.lock();
        days.iter()
            .filter(|d| !known.contains(d))
            .copied()
            .collect()
    };
    if missing.is_empty() {
        return Ok(());
    }
    let mut client = store.pool.get()?;
    for day in missing {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF cts_traces FOR VALUES FROM ({day}) TO ({})",
            name(day),
            i64::from(day) + 1
        );
        match client.batch_execute(&sql) {
            Err(e)
                if e.code() == Some(&SqlState::DUPLICATE_TABLE)
                    || e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
            other => other?,
        }
        store.partitions.lock().insert(day);
    }
    Ok(())
}

/// The existing partitions, oldest first.
pub(crate) fn list(client: &mut impl postgres::GenericClient) -> Result<Vec<i32>, PgError> {
    let rows = client.query(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'cts_traces'::regclass",
        &[],
    )?;
    let mut days: Vec<i32> = rows.iter().filter_map(|r| day_of_name(r.get(0))).collect();
    days.sort_unstable();
    Ok(days)
}

/// `cts_traces_YYYYMMDD` of a day since 1970-01-01.
pub(crate) fn name(day: i32) -> String {
    let (y, m, d) = civil_from_days(i64::from(day));
    format!("cts_traces_{y:04}{m:02}{d:02}")
}

fn day_of_name(name: &str) -> Option<i32> {
    let date = name.strip_prefix("cts_traces_")?;
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = date[..4].parse().ok()?;
    let m: u32 = date[4..6].parse().ok()?;
    let d: u32 = date[6..].parse().ok()?;
    i32::try_from(days_from_civil(y, m, d)).ok()
}

// Howard Hinnant's date algorithms (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_are_utc_dates_and_read_back() {
        assert_eq!(name(0), "cts_traces_19700101");
        // 2026-12-06T10:00:00Z
        let day = crate::store::day_of(1_796_551_200_000);
        assert_eq!(name(day), "cts_traces_20261206");
        for day in [-1, 0, 59, 60, 11_016, 20_428, 2_932_896] {
            assert_eq!(day_of_name(&name(day)), Some(day), "{day}");
        }
        assert_eq!(day_of_name("cts_traces_2026120"), None);
        assert_eq!(day_of_name("other_20261206"), None);
    }
}
