//! Statistics of the day partitions as they fill. The planner picks the
//! index of a ListTraces query from a partition's statistics; a fresh
//! partition has none until autovacuum's analyze comes round (at most once
//! a minute, after 10 % growth, and late under a bulk load, when it then
//! competes with the first queries), and until then plans rest on
//! guesses. So a node writing into a day analyzes its partitions (every
//! column a page's statement bounds or filters on, `day` too: without its
//! statistics the planner takes `day BETWEEN` to keep 0.5 % of the rows
//! and reads whole days unordered; not the stored JSON, whose statistics
//! are of no use and the dearest to gather) once they have grown, through any node, to three
//! times the rows they held at their last analyze, at least
//! [`FIRST_ANALYZE_ROWS`]: a handful of analyzes per day, on a thread of
//! its own so that no write waits for one, and one node at a time per day.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};

use postgres::error::SqlState;

use crate::columns::filter_columns;
use crate::{partitions, PgError, Pool};

/// Rows a node writes into a day before its first analyze of it.
pub const FIRST_ANALYZE_ROWS: u64 = 1_000;

/// A day is analyzed again once the rows written into it reach this many
/// times the rows it held at its last analyze: an analyze of a large
/// partition reads and sorts a sample of rows per column, and
/// statistics of a third of the rows choose the same indexes. (The count
/// is PostgreSQL's `n_mod_since_analyze`, which only a full analyze
/// resets, autovacuum's; ours, of some columns, leave it. Between
/// autovacuum's, an analyze comes each time the day has tripled.)
const GROWTH: i64 = 3;

/// The statistics target of a node's analyze: a sample of 300 times it
/// (9,000 rows, where PostgreSQL's default of 100 reads 30,000 random rows
/// of a full partition) and lists of the 30 commonest values, which
/// choose the index of a page as well. These statistics bridge the time
/// until autovacuum's full analyze; each node analyze is a third of the
/// database's work it was, which ingest shares the cores with.
const STATISTICS_TARGET: u32 = 30;

/// The node's analyzer: told of every write, it analyzes a partition when
/// it is due. Stops when dropped (with the store).
pub(crate) struct Analyzer {
    written: Sender<(i32, u64)>,
}

impl Analyzer {
    pub(crate) fn start(pool: Pool) -> Analyzer {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("cts-pg-analyze".into())
            .spawn(move || run(&pool, &rx))
            .expect("spawning the analyzer thread");
        Analyzer { written: tx }
    }

    /// `rows` more rows written into the partitions of `day`.
    pub(crate) fn written(&self, day: i32, rows: u64) {
        // The thread only ends with the store: nothing to do if it did.
        let _ = self.written.send((day, rows));
    }
}

fn run(pool: &Pool, written: &Receiver<(i32, u64)>) {
    // Day → rows this node writes into it before it looks again.
    let mut due: HashMap<i32, i64> = HashMap::new();
    while let Ok((day, rows)) = written.recv() {
        let left = due.entry(day).or_insert(FIRST_ANALYZE_ROWS as i64);
        *left -= rows as i64;
        if *left > 0 {
            continue;
        }
        match look(pool, day) {
            Ok(next) => *left = next,
            Err(e) => {
                // Retention may have dropped the day; anything else is
                // tried again after as many rows.
                tracing::warn!(error = %e, day, "analyzing a day partition failed");
                due.remove(&day);
            }
        }
    }
}

/// Analyzes the partitions of `day` when they have grown (through any
/// node) by [`GROWTH`] times the rows they held at their last analyze
/// (anyone's, autovacuum's too), at least [`FIRST_ANALYZE_ROWS`]: a
/// handful of analyzes per day however many nodes write. Answers how many rows this
/// node is to write before it looks again: a quarter of what is missing,
/// as other nodes write too.
fn look(pool: &Pool, day: i32) -> Result<i64, PgError> {
    let (part, order) = (partitions::name(day), partitions::order_name(day));
    let mut client = pool.get()?;
    let (changed, needed) = growth(&mut *client, &part)?;
    let later = |changed: i64, needed: i64| ((needed - changed) / 4).max(FIRST_ANALYZE_ROWS as i64);
    if changed < needed {
        return Ok(later(changed, needed));
    }
    // Nodes filling a day see it due at the same moment: one analyzes, the
    // others find its lock taken (an ANALYZE takes the same one) and go
    // on. Checked again under the lock: an analyze that just ended has
    // raised `reltuples`, and so the rows needed.
    let mut tx = client.transaction()?;
    match tx.batch_execute(&format!(
        "LOCK TABLE {part} IN SHARE UPDATE EXCLUSIVE MODE NOWAIT"
    )) {
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            return Ok(FIRST_ANALYZE_ROWS as i64)
        }
        other => other?,
    }
    let (changed, needed) = growth(&mut tx, &part)?;
    if changed < needed {
        return Ok(later(changed, needed));
    }
    tx.batch_execute(&format!(
        "SET LOCAL default_statistics_target = {STATISTICS_TARGET}; \
         ANALYZE {part} (project_id, day, time_ms, trace_id, {}), {order}",
        filter_columns()
    ))?;
    let (_, needed) = growth(&mut tx, &part)?;
    tx.commit()?;
    Ok((needed / 4).max(FIRST_ANALYZE_ROWS as i64))
}

/// The rows `part` has changed by since its last analyze, and how many
/// make it due.
fn growth(client: &mut impl postgres::GenericClient, part: &str) -> Result<(i64, i64), PgError> {
    let row = client.query_one(
        "SELECT s.n_mod_since_analyze, c.reltuples FROM pg_class c \
         JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = $1::text::regclass",
        &[&part],
    )?;
    let rows: f32 = row.get(1);
    let needed = (GROWTH * rows.max(0.0) as i64).max(FIRST_ANALYZE_ROWS as i64);
    Ok((row.get(0), needed))
}
