//! Appends: a batch is copied (binary `COPY`) into a per-connection staging
//! table and inserted into `cts_traces` (every index) concurrently with
//! other batches; only then, holding the positions counter's row lock to
//! the commit, are the inserted rows numbered in the narrow
//! `cts_trace_order`. The lock orders positions with commits (a consumer
//! that has read up to N never later finds a committed trace below N)
//! while the index maintenance of concurrent batches runs in parallel.

use std::collections::BTreeSet;

use cts_store::{AppendOutcome, PreparedTrace};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};

use crate::columns::filter_columns;
use crate::store::{day_of, PgStore};
use crate::{partitions, PgError};

/// The staging table of a connection: emptied at every commit, so a batch
/// never sees another's rows.
fn create_staging() -> String {
    let filters = cts_model::Field::ALL
        .map(|f| format!("{} text", crate::columns::column(f)))
        .join(", ");
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS cts_staging (ord integer NOT NULL, \
         day integer NOT NULL, time_ms bigint NOT NULL, trace_id uuid NOT NULL, \
         project_id text NOT NULL, {filters}, doc bytea NOT NULL) ON COMMIT DELETE ROWS"
    )
}

/// Column types of the staging table, in order.
fn staging_types() -> Vec<Type> {
    let mut types = vec![Type::INT4, Type::INT4, Type::INT8, Type::UUID, Type::TEXT];
    types.extend(cts_model::Field::ALL.map(|_| Type::TEXT));
    types.push(Type::BYTEA);
    types
}

/// Bits of a row key (`seq`) taken by the trace's index in its batch; the
/// batch's number from `cts_trace_batches` is above them.
const ORD_BITS: u32 = 24;

/// Moves the staged batch into `cts_traces`, keyed by the batch's number
/// and each trace's index in it, and answers the keys and days of the rows
/// inserted. A trace already recorded for its project and day (or being
/// recorded by a concurrent batch: the insert waits for its commit) is
/// left out, as is a repeat within the batch. Rows go in key order, so
/// two batches sharing reporter-supplied ids wait for each other in one
/// direction only and cannot deadlock.
fn insert_staged() -> String {
    let filters = filter_columns();
    format!(
        "WITH b AS (SELECT nextval('cts_trace_batches') AS n) \
         INSERT INTO cts_traces (seq, day, time_ms, trace_id, project_id, {filters}, doc) \
         SELECT (b.n << {ORD_BITS}) + s.ord, day, time_ms, trace_id, project_id, {filters}, doc \
         FROM b, (SELECT DISTINCT ON (project_id, trace_id, day) * FROM cts_staging \
               ORDER BY project_id, trace_id, day, ord) s \
         ON CONFLICT (project_id, trace_id, day) DO NOTHING RETURNING seq, day"
    )
}

/// Numbers the inserted rows `$1` (keys, ascending) of days `$2` from the
/// counter on, in one statement that locks the counter's row till the
/// commit.
const NUMBER: &str = "WITH p AS (UPDATE cts_trace_positions SET next_pos = next_pos + $3 \
     RETURNING next_pos - $3 AS first), \
     o AS (INSERT INTO cts_trace_order (pos, day, seq) \
           SELECT p.first + r.i - 1, r.day, r.seq \
           FROM p, unnest($1::bigint[], $2::integer[]) WITH ORDINALITY AS r(seq, day, i)) \
     SELECT 1 FROM p";

impl PgStore {
    pub(crate) fn append_batch(&self, traces: &[PreparedTrace]) -> Result<AppendOutcome, PgError> {
        if traces.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let stored = self.in_partitions(traces, |client| write(client, traces))?;
        Ok(AppendOutcome {
            stored,
            duplicates: traces.len() - stored,
        })
    }

    /// Runs `write` on a connection once the day partitions of `traces`
    /// exist. Another node's retention may have dropped a partition this
    /// node thought was there: it is created again, and `write` retried
    /// once.
    pub(crate) fn in_partitions<T>(
        &self,
        traces: &[PreparedTrace],
        mut write: impl FnMut(&mut postgres::Client) -> Result<T, PgError>,
    ) -> Result<T, PgError> {
        let days: BTreeSet<i32> = traces.iter().map(|t| day_of(t.time())).collect();
        partitions::ensure(self, &days)?;
        let mut client = self.pool.get()?;
        match write(&mut client) {
            Err(PgError(cts_db::DbError::Postgres(e)))
                if e.code() == Some(&SqlState::CHECK_VIOLATION) =>
            {
                self.partitions.lock().clear();
                partitions::ensure(self, &days)?;
                write(&mut client)
            }
            other => other,
        }
    }
}

/// One all-or-nothing transaction; returns the traces inserted. Returns
/// once committed with `synchronous_commit = on` (set on every connection).
fn write(client: &mut postgres::Client, traces: &[PreparedTrace]) -> Result<usize, PgError> {
    let mut tx = client.transaction()?;
    stage(&mut tx, traces)?;
    let rows = insert(&mut tx)?;
    number(&mut tx, &rows)?;
    tx.commit()?;
    Ok(rows.len())
}

/// Copies `traces` into the connection's staging table (`ord`: their index).
pub(crate) fn stage(
    tx: &mut postgres::Transaction<'_>,
    traces: &[PreparedTrace],
) -> Result<(), PgError> {
    if traces.len() >= 1 << ORD_BITS {
        return Err(PgError(cts_db::DbError::Setting(format!(
            "a batch of {} traces is more than one transaction takes ({})",
            traces.len(),
            (1 << ORD_BITS) - 1
        ))));
    }
    tx.batch_execute(&create_staging())?;
    let sink = tx.copy_in(
        format!(
            "COPY cts_staging (ord, day, time_ms, trace_id, project_id, {}, doc) \
             FROM STDIN (FORMAT binary)",
            filter_columns()
        )
        .as_str(),
    )?;
    let types = staging_types();
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    for (ord, t) in traces.iter().enumerate() {
        let ord = ord as i32;
        let day = day_of(t.time());
        let time = t.time();
        let id = uuid::Uuid::from_bytes(t.trace_id());
        let project = t.project_id();
        let values: Vec<Option<&str>> = (0..cts_model::Field::ALL.len())
            .map(|i| t.value(i))
            .collect();
        let doc = t.json();
        let mut row: Vec<&(dyn ToSql + Sync)> = vec![&ord, &day, &time, &id, &project];
        row.extend(values.iter().map(|v| v as &(dyn ToSql + Sync)));
        row.push(&doc);
        writer.write(&row)?;
    }
    writer.finish()?;
    Ok(())
}

/// The rows a batch inserted: their keys (`seq`, ascending: batch order)
/// and days.
pub(crate) struct Inserted {
    seqs: Vec<i64>,
    days: Vec<i32>,
}

impl Inserted {
    pub(crate) fn len(&self) -> usize {
        self.seqs.len()
    }
}

/// Inserts the staged traces not yet recorded, without positions: this
/// runs concurrently with other batches.
pub(crate) fn insert(tx: &mut postgres::Transaction<'_>) -> Result<Inserted, PgError> {
    let mut rows: Vec<(i64, i32)> = tx
        .query(insert_staged().as_str(), &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    rows.sort_unstable();
    Ok(Inserted {
        seqs: rows.iter().map(|r| r.0).collect(),
        days: rows.iter().map(|r| r.1).collect(),
    })
}

/// Gives the inserted rows consecutive positions in batch order (none
/// taken when nothing was inserted). From here to
/// the commit, writers of every node go one at a time: the counter's row
/// lock orders position assignment with commit order, so a consumer that
/// has read up to N never later finds a committed trace below N.
pub(crate) fn number(tx: &mut postgres::Transaction<'_>, rows: &Inserted) -> Result<(), PgError> {
    if rows.seqs.is_empty() {
        return Ok(());
    }
    let n = rows.len() as i64;
    tx.execute(NUMBER, &[&rows.seqs, &rows.days, &n])?;
    Ok(())
}
