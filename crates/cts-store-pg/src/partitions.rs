//! Day partitions of `cts_traces` and of its positions, `cts_trace_order`:
//! made together on demand for the days a batch touches, named by their
//! UTC date (`cts_traces_20261206`, `cts_trace_order_20261206`).

use std::collections::BTreeSet;

use jiff::civil::Date;
use jiff::Span;
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
        let bounds = bounds(day);
        // One transaction (one simple query): a day has both or neither.
        // Made on their own, then attached: ATTACH PARTITION locks a
        // parent only against other schema changes (SHARE UPDATE
        // EXCLUSIVE), so writers and journal reads of either table go on
        // meanwhile. `PARTITION OF` locks each parent exclusively, one
        // after the other, and deadlocked with a journal read that held
        // one of the two while it waited for the other.
        let (traces, order) = (name(day), order_name(day));
        let sql = format!(
            "CREATE TABLE {traces} (LIKE cts_traces INCLUDING DEFAULTS); \
             ALTER TABLE cts_traces ATTACH PARTITION {traces} {bounds}; \
             CREATE TABLE {order} (LIKE cts_trace_order INCLUDING DEFAULTS); \
             ALTER TABLE cts_trace_order ATTACH PARTITION {order} {bounds}"
        );
        // A node that lost the race waited for the winner's commit, so the
        // day's tables exist: as a table, or as its row type. Or retention
        // is removing the day: it has detached a table it will drop.
        match client.batch_execute(&sql) {
            Err(e)
                if e.code() == Some(&SqlState::DUPLICATE_TABLE)
                    || e.code() == Some(&SqlState::DUPLICATE_OBJECT)
                    || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
            {
                if detached(&mut *client, day)? {
                    return Err(PgError::DayRetired(retired(day)));
                }
            }
            other => other?,
        }
        store.partitions.lock().insert(day);
    }
    Ok(())
}

/// Whether a table of `day` exists that is not (or no longer wholly) a
/// partition: only retention leaves one, between detaching and dropping.
fn detached(client: &mut impl postgres::GenericClient, day: i32) -> Result<bool, PgError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class c WHERE c.relname IN ($1, $2) \
             AND c.relkind = 'r' AND pg_table_is_visible(c.oid) AND NOT EXISTS \
             (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid AND NOT i.inhdetachpending))",
            &[&name(day), &order_name(day)],
        )?
        .get(0))
}

/// What a batch with traces of `day` is told while retention removes it.
pub(crate) fn retired(day: i32) -> String {
    format!(
        "the traces of {} are not stored: retention is removing that day",
        date(day)
    )
}

/// The partition bounds of `day` (both parents are partitioned by day).
pub(crate) fn bounds(day: i32) -> String {
    format!("FOR VALUES FROM ({day}) TO ({})", i64::from(day) + 1)
}

/// `cts_traces_YYYYMMDD` of a day since 1970-01-01.
pub(crate) fn name(day: i32) -> String {
    format!("cts_traces_{}", date(day).strftime("%Y%m%d"))
}

/// The date of a day since 1970-01-01. Trace times are checked at ingest,
/// so every day a partition is made for is a date.
fn date(day: i32) -> Date {
    Span::new()
        .try_days(day)
        .and_then(|days| EPOCH.checked_add(days))
        .expect("a trace's day is within the calendar")
}

/// The partition of `cts_trace_order` for the same day as [`name`]'s.
pub(crate) fn order_name(day: i32) -> String {
    name(day).replacen("cts_traces_", "cts_trace_order_", 1)
}

const EPOCH: Date = Date::constant(1970, 1, 1);

/// The day of a table named by [`name`] or [`order_name`].
pub(crate) fn day_of_name(name: &str) -> Option<i32> {
    let date = name
        .strip_prefix("cts_traces_")
        .or_else(|| name.strip_prefix("cts_trace_order_"))?;
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let date = Date::strptime("%Y%m%d", date).ok()?;
    EPOCH.until(date).ok().map(|span| span.get_days())
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
        assert_eq!(order_name(day), "cts_trace_order_20261206");
        for day in [-1, 0, 59, 60, 11_016, 20_428, 2_932_896] {
            assert_eq!(day_of_name(&name(day)), Some(day), "{day}");
        }
        assert_eq!(day_of_name(&order_name(day)), Some(day));
        assert_eq!(day_of_name("cts_traces_2026120"), None);
        assert_eq!(day_of_name("other_20261206"), None);
    }
}
