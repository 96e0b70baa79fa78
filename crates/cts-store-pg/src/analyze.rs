//! Statistics of the day partitions as they fill. The planner picks the
//! index of a ListTraces query from a partition's statistics; a fresh
//! partition has none until autovacuum's analyze comes round (up to a
//! minute, and later under a bulk load), and until then plans rest on
//! guesses: a rare user's page read through the time index, a filter that
//! matches nothing scanned to the end. So each node analyzes a day's
//! partitions (the filter columns only: the stored JSON's statistics are
//! of no use and the dearest to gather) once it has written as many rows
//! into them as they held at their last analyze, at least
//! [`FIRST_ANALYZE_ROWS`]: a few analyzes per day, cheap next to the
//! writes, on a thread of its own so that no write waits for one.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};

use crate::columns::filter_columns;
use crate::{partitions, PgError, Pool};

/// Rows a node writes into a day before its first analyze of it.
pub const FIRST_ANALYZE_ROWS: u64 = 1_000;

/// The node's analyzer: told of every write, it analyzes a partition when
/// it is due. Stops when dropped (with the store).
pub(crate) struct Analyzer {
    written: parking_lot::Mutex<Sender<(i32, u64)>>,
}

impl Analyzer {
    pub(crate) fn start(pool: Pool) -> Analyzer {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("cts-pg-analyze".into())
            .spawn(move || run(&pool, &rx))
            .expect("spawning the analyzer thread");
        Analyzer {
            written: parking_lot::Mutex::new(tx),
        }
    }

    /// `rows` more rows written into the partitions of `day`.
    pub(crate) fn written(&self, day: i32, rows: u64) {
        // The thread only ends with the store: nothing to do if it did.
        let _ = self.written.lock().send((day, rows));
    }
}

/// What the analyzer knows of a day.
struct Day {
    since: u64,
    due: u64,
}

fn run(pool: &Pool, written: &Receiver<(i32, u64)>) {
    let mut days: HashMap<i32, Day> = HashMap::new();
    while let Ok((day, rows)) = written.recv() {
        let d = days.entry(day).or_insert(Day {
            since: 0,
            due: FIRST_ANALYZE_ROWS,
        });
        d.since += rows;
        if d.since < d.due {
            continue;
        }
        d.since = 0;
        match analyze(pool, day) {
            Ok(rows) => d.due = rows.max(FIRST_ANALYZE_ROWS),
            Err(e) => {
                // Retention may have dropped the day; anything else is
                // tried again when as much more has been written.
                tracing::warn!(error = %e, day, "analyzing a day partition failed");
                days.remove(&day);
            }
        }
    }
}

/// Analyzes the partitions of `day`; answers the rows they now hold
/// (PostgreSQL's estimate).
fn analyze(pool: &Pool, day: i32) -> Result<u64, PgError> {
    let (part, order) = (partitions::name(day), partitions::order_name(day));
    let mut client = pool.get()?;
    client.batch_execute(&format!(
        "ANALYZE {part} (project_id, time_ms, trace_id, {}), {order}",
        filter_columns()
    ))?;
    let rows: f32 = client
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = $1::text::regclass",
            &[&part],
        )?
        .get(0);
    Ok(rows.max(0.0) as u64)
}
