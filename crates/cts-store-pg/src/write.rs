//! Appends: a batch is copied (binary `COPY`) into a per-connection staging
//! table, then, holding the positions counter's row lock for as short as
//! possible, inserted with consecutive positions and committed.

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
        "CREATE TEMP TABLE IF NOT EXISTS cts_staging (ord integer NOT NULL, supplied boolean \
         NOT NULL, day integer NOT NULL, time_ms bigint NOT NULL, trace_id uuid NOT NULL, \
         project_id text NOT NULL, {filters}, doc bytea NOT NULL) ON COMMIT DELETE ROWS"
    )
}

/// Column types of the staging table, in order.
fn staging_types() -> Vec<Type> {
    let mut types = vec![
        Type::INT4,
        Type::BOOL,
        Type::INT4,
        Type::INT8,
        Type::UUID,
        Type::TEXT,
    ];
    types.extend(cts_model::Field::ALL.map(|_| Type::TEXT));
    types.push(Type::BYTEA);
    types
}

/// Moves the staged batch into `cts_traces` with positions from `$1` in
/// batch order. A trace with a reporter-supplied id already recorded for
/// its project and day is left out, as is a repeat within the batch: the
/// positions stay consecutive because only inserted rows are numbered.
fn insert_staged() -> String {
    let filters = filter_columns();
    format!(
        "INSERT INTO cts_traces (pos, day, time_ms, trace_id, project_id, {filters}, doc) \
         SELECT $1 + row_number() OVER (ORDER BY ord) - 1, day, time_ms, trace_id, project_id, \
         {filters}, doc \
         FROM (SELECT DISTINCT ON (project_id, trace_id, day) * FROM cts_staging \
               ORDER BY project_id, trace_id, day, ord) s \
         WHERE NOT (s.supplied AND EXISTS (SELECT 1 FROM cts_traces t \
               WHERE t.project_id = s.project_id AND t.trace_id = s.trace_id AND t.day = s.day))"
    )
}

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
    let next = lock_positions(&mut tx)?;
    let stored = insert(&mut tx, next)?;
    tx.commit()?;
    Ok(stored as usize)
}

/// Copies `traces` into the connection's staging table (`ord`: their index).
pub(crate) fn stage(
    tx: &mut postgres::Transaction<'_>,
    traces: &[PreparedTrace],
) -> Result<(), PgError> {
    tx.batch_execute(&create_staging())?;
    let sink = tx.copy_in(
        format!(
            "COPY cts_staging (ord, supplied, day, time_ms, trace_id, project_id, {}, doc) \
             FROM STDIN (FORMAT binary)",
            filter_columns()
        )
        .as_str(),
    )?;
    let types = staging_types();
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    for (ord, t) in traces.iter().enumerate() {
        let ord = ord as i32;
        let supplied = t.supplied();
        let day = day_of(t.time());
        let time = t.time();
        let id = uuid::Uuid::from_bytes(t.trace_id());
        let project = t.project_id();
        let values: Vec<Option<&str>> = (0..cts_model::Field::ALL.len())
            .map(|i| t.value(i))
            .collect();
        let doc = t.json();
        let mut row: Vec<&(dyn ToSql + Sync)> = vec![&ord, &supplied, &day, &time, &id, &project];
        row.extend(values.iter().map(|v| v as &(dyn ToSql + Sync)));
        row.push(&doc);
        writer.write(&row)?;
    }
    writer.finish()?;
    Ok(())
}

/// Locks the positions counter and answers the next position. From here
/// to the commit, writers of every node go one at a time: the row lock
/// orders position assignment with commit order, so a consumer that has
/// read up to N never later finds a committed trace below N.
pub(crate) fn lock_positions(tx: &mut postgres::Transaction<'_>) -> Result<i64, PgError> {
    Ok(tx
        .query_one("SELECT next_pos FROM cts_trace_positions FOR UPDATE", &[])?
        .get(0))
}

/// Inserts the staged traces not yet recorded from position `next` on and
/// moves the counter past them; answers how many it inserted.
pub(crate) fn insert(tx: &mut postgres::Transaction<'_>, next: i64) -> Result<i64, PgError> {
    let stored = tx.execute(insert_staged().as_str(), &[&next])? as i64;
    tx.execute(
        "UPDATE cts_trace_positions SET next_pos = next_pos + $1",
        &[&stored],
    )?;
    Ok(stored)
}
