//! Retention removes whole days, never rows; and the sizes for metrics.
//!
//! A day goes in three steps, none of which locks a parent table against
//! its readers or writers (an exclusive lock on the parents waited for
//! every read in flight while every read and write of every node queued
//! behind it, and could deadlock with a journal read):
//! 1. **Fence**, in one short transaction: a trigger on the day's
//!    positions partition refuses new rows (every batch that stores a
//!    trace writes one there in its transaction, so it stores nothing),
//!    then the hold is checked; a day some consumer still needs is rolled
//!    back, fence and all.
//! 2. **Detach** the positions partition, then the traces one,
//!    `CONCURRENTLY`: PostgreSQL waits for the transactions that may see
//!    the partition while new ones go on without it. Positions first, so a
//!    journal reader never finds a position without its trace.
//! 3. **Drop** the detached tables.
//!
//! A pass stopped anywhere (a crash, a cancelled statement) is finished by
//! the next: a pending detach is finalized, a fenced day goes on to step
//! 2, a detached table of an expired day is dropped.

use std::collections::BTreeSet;

use cts_store::{RetentionReport, StoreStats};
use postgres::error::SqlState;
use postgres::Client;

use crate::store::{day_of, PgStore};
use crate::{journal, partitions, PgError};

/// The fence's trigger; its function is migration 3's.
const FENCE: &str = "cts_day_retired";

/// How long the fence waits for a batch writing into the day (it holds
/// the positions counter's lock meanwhile); longer, it tries next pass.
const FENCE_WAIT: &str = "1s";

enum Fence {
    Set,
    /// A consumer still holds a position of the day.
    Held,
    /// A batch is writing into the day.
    Busy,
}

impl PgStore {
    /// Removes every day that ends at or before `cutoff_ms`, except one
    /// holding a position above the lowest hold of this node's consumers
    /// (kept, and counted as held). One node at a time: two passes on one
    /// day would trip over each other's detach (ctsd runs them under a
    /// lease row, without advisory locks, like its consumers).
    pub(crate) fn drop_partitions_before(
        &self,
        cutoff_ms: i64,
    ) -> Result<RetentionReport, PgError> {
        // Today's and tomorrow's tables are made here, ahead of their first
        // batch: that batch would otherwise attach them at midnight, when a
        // day also expires, and wait behind this pass's detach (which waits
        // for the longest read in flight).
        let today = day_of(cts_clock::now_ms());
        partitions::ensure(self, &BTreeSet::from([today, today + 1]))?;
        let mut client = self.pool.get()?;
        let client = &mut *client;
        let first_kept = day_of(cutoff_ms);
        let mut report = RetentionReport::default();
        let mut tables = Tables::read(client)?;
        // A parent takes one pending detach at a time.
        for p in tables.partitions.iter().filter(|p| p.pending) {
            client.batch_execute(&format!(
                "ALTER TABLE {} DETACH PARTITION {} FINALIZE",
                p.parent, p.name
            ))?;
        }
        // A day a stopped pass left fenced or detached that is no longer
        // expired (store.retention raised since) is put back: its batches,
        // within the window, would be refused.
        let unfinished: BTreeSet<i32> = tables
            .fenced
            .iter()
            .filter_map(|order| partitions::day_of_name(order))
            .chain(tables.loose.iter().copied())
            .filter(|day| *day >= first_kept)
            .collect();
        if !unfinished.is_empty() {
            tables = Tables::read(client)?;
            for day in unfinished {
                if restore(client, day, &tables)? {
                    tracing::info!(day, "retention put back a day no longer expired");
                }
            }
            tables = Tables::read(client)?;
        }
        let hold = self.lowest_hold();
        let expired: BTreeSet<i32> = tables
            .partitions
            .iter()
            .filter(|p| !p.pending && p.day < first_kept)
            .map(|p| p.day)
            .collect();
        for day in expired {
            let (part, order) = (partitions::name(day), partitions::order_name(day));
            if tables.attached(&order) {
                if !tables.fenced.contains(&order) {
                    match fence(client, day, hold)? {
                        Fence::Set => {}
                        Fence::Held => {
                            report.journal_segments_held += 1;
                            continue;
                        }
                        Fence::Busy => {
                            tracing::info!(partition = %order,
                                "a batch is writing into an expired day: retention tries it next pass");
                            continue;
                        }
                    }
                }
                detach(client, "cts_trace_order", &order)?;
            }
            if tables.attached(&part) {
                detach(client, "cts_traces", &part)?;
            }
        }
        for day in Tables::read(client)?.detached_days() {
            if day >= first_kept {
                continue;
            }
            let part = partitions::name(day);
            if !drop_detached(client, day)? {
                continue;
            }
            self.partitions.lock().remove(&day);
            report.index_partitions_dropped += 1;
            report.journal_segments_dropped += 1;
            tracing::info!(partition = %part, "retention dropped a day");
        }
        Ok(report)
    }

    pub(crate) fn read_stats(&self) -> Result<StoreStats, PgError> {
        let mut client = self.pool.get()?;
        let seq = journal::durable(&mut *client)?;
        let row = client.query_one(
            "SELECT count(*), coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint, \
             coalesce(sum(pg_table_size(c.oid)), 0)::bigint, \
             coalesce(sum(pg_indexes_size(c.oid)), 0)::bigint \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'cts_traces'::regclass",
            &[],
        )?;
        Ok(StoreStats {
            journal_bytes: row.get::<_, i64>(2) as u64,
            index_bytes: row.get::<_, i64>(3) as u64,
            segments: row.get::<_, i64>(0) as usize,
            // PostgreSQL's estimate (as of the last ANALYZE): counting
            // would read every row at each scrape.
            indexed_traces: row.get::<_, i64>(1) as u64,
            journal_seq: seq,
            index_durable_seq: seq,
            ..StoreStats::default()
        })
    }
}

/// Step 1: fences `day` unless a consumer holds one of its positions or a
/// batch writing into it does not end within [`FENCE_WAIT`]. `CREATE
/// TRIGGER` locks the day's positions partition only, against writers
/// (readers go on), so the check sees every row the day will ever have.
fn fence(client: &mut Client, day: i32, hold: Option<u64>) -> Result<Fence, PgError> {
    let order = partitions::order_name(day);
    let mut tx = client.transaction()?;
    let fenced = within_fence_wait(
        &mut tx,
        &format!(
            "CREATE OR REPLACE TRIGGER {FENCE} BEFORE INSERT ON {order} \
             FOR EACH ROW EXECUTE FUNCTION cts_day_retired('{}')",
            partitions::retired(day)
        ),
    )?;
    if !fenced {
        return Ok(Fence::Busy);
    }
    if let Some(hold) = hold {
        let max: Option<i64> = tx
            .query_one(
                format!("SELECT max(pos + n - 1) FROM {order}").as_str(),
                &[],
            )?
            .get(0);
        if max.is_some_and(|m| m as u64 > hold) {
            // Rolled back as `tx` drops: no fence.
            return Ok(Fence::Held);
        }
    }
    tx.commit()?;
    Ok(Fence::Set)
}

/// Step 2, on a connection without a transaction (`CONCURRENTLY` runs two
/// of its own). It locks `parent` only against other schema changes.
fn detach(client: &mut Client, parent: &str, part: &str) -> Result<(), PgError> {
    client.batch_execute(&format!(
        "ALTER TABLE {parent} DETACH PARTITION {part} CONCURRENTLY"
    ))?;
    Ok(())
}

/// Puts a day that a stopped pass left fenced or detached back as a
/// whole day: its detached tables attached again (traces first, so that a
/// journal reader never finds a position without its trace), its fence
/// lifted. One transaction, waiting at most [`FENCE_WAIT`] for its locks
/// (`DROP TRIGGER` locks the positions partition against readers too), or
/// the next pass tries again. A day missing one of its tables is left.
/// Whether it was put back.
fn restore(client: &mut Client, day: i32, tables: &Tables) -> Result<bool, PgError> {
    let (part, order) = (partitions::name(day), partitions::order_name(day));
    let mut tx = client.transaction()?;
    let exist: i64 = tx
        .query_one(
            "SELECT count(to_regclass(t)) FROM unnest($1::text[]) AS t",
            &[&[part.as_str(), order.as_str()].as_slice()],
        )?
        .get(0);
    if exist < 2 {
        return Ok(false);
    }
    let bounds = partitions::bounds(day);
    let mut sql = String::new();
    if !tables.attached(&part) {
        sql += &format!("ALTER TABLE cts_traces ATTACH PARTITION {part} {bounds}; ");
    }
    if !tables.attached(&order) {
        sql += &format!("ALTER TABLE cts_trace_order ATTACH PARTITION {order} {bounds}; ");
    }
    sql += &format!("DROP TRIGGER IF EXISTS {FENCE} ON {order}");
    if !within_fence_wait(&mut tx, &sql)? {
        return Ok(false);
    }
    tx.commit()?;
    Ok(true)
}

/// Runs `sql` in `tx` waiting at most [`FENCE_WAIT`] for each lock it
/// takes; whether it had them (a retention step that did not is left to
/// the next pass, never queued behind a long reader with every reader
/// and writer of the table queued behind it).
fn within_fence_wait(tx: &mut postgres::Transaction<'_>, sql: &str) -> Result<bool, PgError> {
    match tx.batch_execute(&format!("SET LOCAL lock_timeout = '{FENCE_WAIT}'; {sql}")) {
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Ok(false),
        other => Ok(other.map(|()| true)?),
    }
}

/// Step 3: drops the tables of `day` unless one of them is a partition
/// again. Between this pass reading the catalog and its drop, another
/// node's pass (this one's lease lapsed meanwhile) may have dropped them
/// and a late batch made and filled the day anew: by name alone, the drop
/// would take those acknowledged traces. Locked first, so that nothing
/// attaches them between the check and the drop; a lock not had within
/// [`FENCE_WAIT`] leaves them to the next pass. Whether they were dropped.
fn drop_detached(client: &mut Client, day: i32) -> Result<bool, PgError> {
    let names = [partitions::name(day), partitions::order_name(day)];
    let mut tx = client.transaction()?;
    for name in &names {
        let exists: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[name])?
            .get(0);
        let lock = format!("LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE");
        if exists && !within_fence_wait(&mut tx, &lock)? {
            return Ok(false);
        }
    }
    let attached: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE c.relname = ANY($1) AND pg_table_is_visible(c.oid))",
            &[&names.as_slice()],
        )?
        .get(0);
    if attached {
        return Ok(false);
    }
    tx.batch_execute(&format!("DROP TABLE IF EXISTS {}, {}", names[0], names[1]))?;
    tx.commit()?;
    Ok(true)
}

/// The day tables as the catalog has them.
struct Tables {
    /// The partitions of both parents, attached or pending detach.
    partitions: Vec<Partition>,
    /// Positions partitions (attached or not) carrying the fence.
    fenced: BTreeSet<String>,
    /// Days with a table that is no partition (detached).
    loose: BTreeSet<i32>,
}

struct Partition {
    parent: String,
    name: String,
    day: i32,
    pending: bool,
}

impl Tables {
    fn read(client: &mut Client) -> Result<Tables, PgError> {
        let partitions = client
            .query(
                "SELECT p.relname, c.relname, i.inhdetachpending FROM pg_inherits i \
                 JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
                 WHERE i.inhparent IN ('cts_traces'::regclass, 'cts_trace_order'::regclass)",
                &[],
            )?
            .iter()
            .filter_map(|r| {
                Some(Partition {
                    parent: r.get(0),
                    day: partitions::day_of_name(r.get(1))?,
                    name: r.get(1),
                    pending: r.get(2),
                })
            })
            .collect();
        let fenced = client
            .query(
                "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
                 WHERE t.tgname = $1 AND pg_table_is_visible(c.oid)",
                &[&FENCE],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let loose = client
            .query(
                "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' \
                 AND pg_table_is_visible(c.oid) \
                 AND (starts_with(c.relname, 'cts_traces_') \
                      OR starts_with(c.relname, 'cts_trace_order_')) \
                 AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)",
                &[],
            )?
            .iter()
            .filter_map(|r| partitions::day_of_name(r.get(0)))
            .collect();
        Ok(Tables {
            partitions,
            fenced,
            loose,
        })
    }

    fn attached(&self, name: &str) -> bool {
        self.partitions.iter().any(|p| !p.pending && p.name == name)
    }

    /// Days with a detached table and none still a partition.
    fn detached_days(&self) -> impl Iterator<Item = i32> + '_ {
        self.loose
            .iter()
            .copied()
            .filter(|day| self.partitions.iter().all(|p| p.day != *day))
    }
}

#[cfg(test)]
mod tests {
    use cts_store::conformance::{self, RETENTION_MS};
    use cts_store::TraceStore;
    use serde_json::json;

    use super::*;
    use crate::PgSettings;

    /// The drop takes a day's tables only while neither is a partition:
    /// tables of the day attached again (another node's pass dropped the
    /// old ones and a late batch made the day anew) are left whole, with
    /// their traces.
    #[test]
    fn the_drop_leaves_a_day_that_is_a_partition_again() {
        let pg = cts_testpg::TestPg::start();
        let url = pg.fresh_database();
        let pool = PgSettings::new(url.parse().unwrap()).connect().unwrap();
        let store = PgStore::open(pool, true, RETENTION_MS).unwrap();
        let old = cts_clock::now_ms() - 4 * 86_400_000;
        let items = [json!({ "time": old }), json!({ "time": old })];
        store.append(conformance::traces("p", &items)).unwrap();
        let day = day_of(old);
        let (part, order) = (partitions::name(day), partitions::order_name(day));
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let rows = |client: &mut Client| -> i64 {
            client
                .query_one(format!("SELECT count(*) FROM {part}").as_str(), &[])
                .unwrap()
                .get(0)
        };

        // Attached: left, whole.
        assert!(!drop_detached(&mut client, day).unwrap());
        assert_eq!(rows(&mut client), 2);
        // Detached by a pass, attached again by the time of the drop.
        detach(&mut client, "cts_trace_order", &order).unwrap();
        detach(&mut client, "cts_traces", &part).unwrap();
        client
            .batch_execute(&format!(
                "ALTER TABLE cts_traces ATTACH PARTITION {part} {}",
                partitions::bounds(day)
            ))
            .unwrap();
        assert!(!drop_detached(&mut client, day).unwrap());
        assert_eq!(rows(&mut client), 2);
        // Both detached: dropped.
        detach(&mut client, "cts_traces", &part).unwrap();
        assert!(drop_detached(&mut client, day).unwrap());
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relname IN ($1, $2)",
                &[&part, &order],
            )
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
    }
}
