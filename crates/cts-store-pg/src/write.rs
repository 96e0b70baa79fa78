//! Appends. A batch is one transaction that writes its traces (every
//! index) before it takes the positions counter's row lock, and under the
//! lock only numbers the rows it wrote, in batch order, by a few rows of
//! the narrow `cts_trace_order` (one per stretch of the batch in one day,
//! usually one: a run, its first position, its count and its row keys'
//! range), and commits. The lock, held to the commit, orders positions
//! with commits (a consumer that has read up to N never later finds a
//! committed trace below N), while the index maintenance of concurrent
//! batches runs in parallel.
//!
//! The traces go in one of two ways. Usually none is stored yet: they are
//! `COPY`ed (binary) straight into `cts_traces`, whose unique index
//! refuses the whole batch if one is (PostgreSQL's cheapest way in: a
//! `COPY` inserts its rows in groups). A batch so refused, a reporter's
//! retry, goes again as one statement: its columns as binary arrays into
//! an `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` that numbers
//! only the rows it inserted.

use std::collections::{BTreeMap, BTreeSet};

use cts_store::{AppendOutcome, PreparedTrace};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};

use crate::columns::filter_columns;
use crate::store::{day_of, PgStore};
use crate::{partitions, PgError};

/// Bits of a row key (`seq`) taken by the trace's index in its batch; the
/// batch's number from `cts_trace_batches` is above them.
const ORD_BITS: u32 = 24;

/// Inserts the rows `unnest($1 …)` not yet recorded for their project and
/// day (or being recorded by a concurrent batch: the insert waits for its
/// commit), keyed by the batch's number and each trace's index in it
/// (`ord`); then, only when some were inserted, locks the counter's row
/// and numbers them consecutively in key (batch) order, one run per
/// stretch of one day (islands: a row's rank overall minus its rank in its
/// day is constant along a stretch). Answers how many were inserted. The
/// initplans gate the counter's update on the insert having run to
/// completion, so the lock is taken after the heavy part.
fn append_statement() -> String {
    let filters = filter_columns();
    let arrays = (0..cts_model::Field::ALL.len())
        .map(|i| format!("${}::text[]", 6 + i))
        .collect::<Vec<_>>()
        .join(", ");
    let doc = 6 + cts_model::Field::ALL.len();
    format!(
        "WITH b AS (SELECT nextval('cts_trace_batches') AS n), \
         ins AS (INSERT INTO cts_traces (seq, day, time_ms, trace_id, project_id, {filters}, doc) \
             SELECT (b.n << {ORD_BITS}) + r.ord, r.day, r.time_ms, r.trace_id, r.project_id, \
                    {filters}, r.doc \
             FROM b, unnest($1::integer[], $2::integer[], $3::bigint[], $4::uuid[], $5::text[], \
                            {arrays}, ${doc}::bytea[]) \
                  AS r(ord, day, time_ms, trace_id, project_id, {filters}, doc) \
             ON CONFLICT (project_id, trace_id, day) DO NOTHING RETURNING seq, day), \
         s AS (SELECT day, seq, row_number() OVER (ORDER BY seq) \
                    - row_number() OVER (PARTITION BY day ORDER BY seq) AS stretch FROM ins), \
         r AS (SELECT day, min(seq) AS seq, max(seq) AS last_seq, count(*) AS n \
               FROM s GROUP BY day, stretch), \
         c AS (SELECT count(*) AS n FROM ins), \
         p AS (UPDATE cts_trace_positions SET next_pos = next_pos + (SELECT n FROM c) \
               WHERE (SELECT n FROM c) > 0 RETURNING next_pos - (SELECT n FROM c) AS first), \
         o AS ({NUMBER_RUNS} RETURNING n) \
         SELECT coalesce(sum(n), 0)::bigint FROM o"
    )
}

/// Writes the runs `r` (`day`, `seq`: the first key, `last_seq`, `n`) of a
/// batch with consecutive positions from `p.first`, in key order: the
/// numbering's one rule, for both ways in.
const NUMBER_RUNS: &str = "INSERT INTO cts_trace_order (pos, n, day, first_seq, last_seq) \
     SELECT p.first + sum(r.n) OVER (ORDER BY r.seq) - r.n, r.n, r.day, r.seq, r.last_seq \
     FROM p, r";

/// The parameter types of [`append_statement`], in order.
fn append_types() -> Vec<Type> {
    let mut types = vec![
        Type::INT4_ARRAY,
        Type::INT4_ARRAY,
        Type::INT8_ARRAY,
        Type::UUID_ARRAY,
        Type::TEXT_ARRAY,
    ];
    types.extend(cts_model::Field::ALL.map(|_| Type::TEXT_ARRAY));
    types.push(Type::BYTEA_ARRAY);
    types
}

impl PgStore {
    pub(crate) fn append_batch(&self, traces: &[PreparedTrace]) -> Result<AppendOutcome, PgError> {
        if traces.is_empty() {
            return Ok(AppendOutcome::default());
        }
        // One transaction, all or nothing, committed with
        // `synchronous_commit = on` (set on every connection) before its
        // answer comes back.
        let stored = self.in_partitions(traces, |client| append_new(client, traces))?;
        Ok(AppendOutcome {
            stored,
            duplicates: traces.len() - stored,
        })
    }

    /// Runs `write` on a connection once the day partitions of `traces`
    /// exist. Another node's retention may have dropped a partition this
    /// node thought was there: it is created again, and `write` retried
    /// once. Retention may also be removing a day of the batch: its fence
    /// refuses the rows (`PgError::DayRetired`, not a CHECK_VIOLATION, so
    /// no retry), or, once the day is detached, the retry's `ensure` says
    /// so. Written, the rows count towards their days' next analyze.
    pub(crate) fn in_partitions<T>(
        &self,
        traces: &[PreparedTrace],
        mut write: impl FnMut(&mut postgres::Client) -> Result<T, PgError>,
    ) -> Result<T, PgError> {
        let mut days: BTreeMap<i32, u64> = BTreeMap::new();
        for t in traces {
            *days.entry(day_of(t.time())).or_default() += 1;
        }
        let day_set: BTreeSet<i32> = days.keys().copied().collect();
        partitions::ensure(self, &day_set)?;
        let mut client = self.pool.get()?;
        let written = match write(&mut client) {
            Err(PgError::Db(cts_db::DbError::Postgres(e)))
                if e.code() == Some(&SqlState::CHECK_VIOLATION) =>
            {
                self.partitions.lock().clear();
                partitions::ensure(self, &day_set)?;
                write(&mut client)
            }
            other => other,
        }?;
        for (day, rows) in days {
            self.analyzer.written(day, rows);
        }
        Ok(written)
    }
}

/// Stores the traces of `traces` not yet recorded and numbers them: by a
/// `COPY` when none is (the usual case), else as [`append`] does. Returns
/// how many were stored.
fn append_new(client: &mut postgres::Client, traces: &[PreparedTrace]) -> Result<usize, PgError> {
    let order = key_order(traces)?;
    match copy_new(client, traces, &order) {
        Err(PgError::Db(cts_db::DbError::Postgres(e)))
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            insert_new(client, traces, &order)
        }
        other => other,
    }
}

/// One transaction: `COPY`s the traces (each once, in key `order`), then
/// locks the counter's row, numbers them ([`runs`]) and commits, the
/// numbering and the `COMMIT` sent together so that the lock is held for
/// no round trip of its own. A trace already stored fails it with
/// `UNIQUE_VIOLATION`, storing nothing.
fn copy_new(
    client: &mut postgres::Client,
    traces: &[PreparedTrace],
    order: &[usize],
) -> Result<usize, PgError> {
    let written = copy_and_commit(client, traces, order);
    if written.is_err() {
        // Whatever failed after the `BEGIN`, the pooled connection must not
        // go back inside its transaction (after a failed `COMMIT`, or a
        // failed `BEGIN`, this only warns).
        client.batch_execute("ROLLBACK")?;
    }
    written
}

/// The body of [`copy_new`], from its `BEGIN` (with the batch's number) to
/// its `COMMIT`.
fn copy_and_commit(
    client: &mut postgres::Client,
    traces: &[PreparedTrace],
    order: &[usize],
) -> Result<usize, PgError> {
    let begun = client.simple_query("BEGIN; SELECT nextval('cts_trace_batches')")?;
    let batch: i64 = begun
        .iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok(),
            _ => None,
        })
        .ok_or_else(|| {
            PgError::Db(cts_db::DbError::Setting(
                "nextval('cts_trace_batches') answered no number".into(),
            ))
        })?;
    let seq = |i: usize| (batch << ORD_BITS) + i as i64;
    copy_traces(client, order.iter().map(|&i| (seq(i), &traces[i])))?;
    let mut numbered = order.to_vec();
    numbered.sort_unstable();
    let runs = runs(numbered.iter().map(|&i| (day_of(traces[i].time()), seq(i))));
    client.batch_execute(&format!(
        "WITH p AS (UPDATE cts_trace_positions SET next_pos = next_pos + {total} \
             RETURNING next_pos - {total} AS first), \
         r AS (SELECT * FROM unnest('{n}'::integer[], '{days}'::integer[], \
                                    '{seqs}'::bigint[], '{last}'::bigint[]) \
               AS r(n, day, seq, last_seq)) \
         {NUMBER_RUNS}; \
         COMMIT",
        total = order.len(),
        n = sql_array(runs.iter().map(|r| r.n)),
        days = sql_array(runs.iter().map(|r| r.day)),
        seqs = sql_array(runs.iter().map(|r| r.first_seq)),
        last = sql_array(runs.iter().map(|r| r.last_seq)),
    ))?;
    Ok(order.len())
}

/// Positions for a stretch of a batch's rows in one day: `n` rows whose
/// keys lie in `first_seq ..= last_seq` (no other row has a key there:
/// keys are the batch's, and the stretch holds every key of the batch
/// between its ends).
#[derive(Debug, PartialEq)]
struct Run {
    day: i32,
    first_seq: i64,
    last_seq: i64,
    n: i64,
}

/// The runs of a batch's rows, given as `(day, seq)` in key (batch) order:
/// one for each stretch of rows of one day, so that the batch is numbered
/// in its own order, as the statement does.
fn runs(rows: impl Iterator<Item = (i32, i64)>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (day, seq) in rows {
        match runs.last_mut() {
            Some(r) if r.day == day => {
                r.last_seq = seq;
                r.n += 1;
            }
            _ => runs.push(Run {
                day,
                first_seq: seq,
                last_seq: seq,
                n: 1,
            }),
        }
    }
    runs
}

/// Numbers as an SQL array literal, `{1,2,3}` (numbers only: nothing to
/// quote).
fn sql_array<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let items: Vec<String> = items.map(|n| n.to_string()).collect();
    format!("{{{}}}", items.join(","))
}

/// Writes `rows` (each with its row key `seq`) into `cts_traces` with one
/// binary `COPY`: the columns ctsd stores, on `client` (in a transaction).
/// Public for cts-bench's plain-COPY baseline, which writes the same rows.
pub fn copy_traces<'a>(
    client: &mut impl postgres::GenericClient,
    rows: impl IntoIterator<Item = (i64, &'a PreparedTrace)>,
) -> Result<(), postgres::Error> {
    let sink = client.copy_in(
        format!(
            "COPY cts_traces (seq, day, time_ms, trace_id, project_id, {}, doc) \
             FROM STDIN (FORMAT binary)",
            filter_columns()
        )
        .as_str(),
    )?;
    let mut types = vec![Type::INT8, Type::INT4, Type::INT8, Type::UUID, Type::TEXT];
    types.extend(cts_model::Field::ALL.map(|_| Type::TEXT));
    types.push(Type::BYTEA);
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    // A row's columns on the stack: this runs for every trace ingested.
    const FIELDS: usize = cts_model::Field::ALL.len();
    for (seq, t) in rows {
        let day = day_of(t.time());
        let time = t.time();
        let id = uuid::Uuid::from_bytes(t.trace_id());
        let project = t.project_id();
        let values: [Option<&str>; FIELDS] = std::array::from_fn(|f| t.value(f));
        let doc = t.json();
        let row: [&(dyn ToSql + Sync); FIELDS + 6] = std::array::from_fn(|c| match c {
            0 => &seq as &(dyn ToSql + Sync),
            1 => &day,
            2 => &time,
            3 => &id,
            4 => &project,
            c if c < 5 + FIELDS => &values[c - 5],
            _ => &doc,
        });
        writer.write(&row)?;
    }
    writer.finish()?;
    Ok(())
}

/// Stores the traces of `traces` not yet recorded and numbers them, in one
/// round trip; returns how many were stored. On a plain connection the
/// statement is its own transaction; in one (the import's) it commits
/// with it.
pub(crate) fn append(
    client: &mut impl postgres::GenericClient,
    traces: &[PreparedTrace],
) -> Result<usize, PgError> {
    insert_new(client, traces, &key_order(traces)?)
}

/// [`append`] of the traces `order` ([`key_order`]) picks.
fn insert_new(
    client: &mut impl postgres::GenericClient,
    traces: &[PreparedTrace],
    order: &[usize],
) -> Result<usize, PgError> {
    let columns = Columns::of(traces, order);
    let types = append_types();
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
        (&columns.ords, types[0].clone()),
        (&columns.days, types[1].clone()),
        (&columns.times, types[2].clone()),
        (&columns.ids, types[3].clone()),
        (&columns.projects, types[4].clone()),
    ];
    for (values, ty) in columns.values.iter().zip(&types[5..]) {
        params.push((values, ty.clone()));
    }
    params.push((&columns.docs, Type::BYTEA_ARRAY));
    let stored: i64 = client
        .query_typed_one(append_statement().as_str(), &params)?
        .get(0);
    Ok(stored as usize)
}

/// The indexes of `traces`, each trace once (the first of a repeat in the
/// batch), in the order `(day, project_id, trace_id)`. Every writer inserts
/// in that one order, so two batches sharing reporter-supplied ids wait
/// for each other in one direction only and cannot deadlock. The day
/// comes first because a `COPY` into the partitioned table buffers rows
/// per partition and inserts them a partition at a time, in the order the
/// partitions first came: by day, so, only if the rows come by day.
fn key_order(traces: &[PreparedTrace]) -> Result<Vec<usize>, PgError> {
    if traces.len() >= 1 << ORD_BITS {
        return Err(PgError::Db(cts_db::DbError::Setting(format!(
            "a batch of {} traces is more than one transaction takes ({})",
            traces.len(),
            (1 << ORD_BITS) - 1
        ))));
    }
    let key = |i: usize| {
        let t = &traces[i];
        (day_of(t.time()), t.project_id(), t.trace_id())
    };
    let mut order: Vec<usize> = (0..traces.len()).collect();
    // Stable: of a repeat, the first in the batch comes first and stays.
    order.sort_by_key(|&i| key(i));
    order.dedup_by_key(|i| key(*i));
    Ok(order)
}

/// A batch as column arrays, in [`key_order`].
struct Columns<'a> {
    ords: Vec<i32>,
    days: Vec<i32>,
    times: Vec<i64>,
    ids: Vec<uuid::Uuid>,
    projects: Vec<&'a str>,
    /// Per filter field (in [`cts_model::Field::ALL`] order), its values.
    values: Vec<Vec<Option<&'a str>>>,
    docs: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    fn of(traces: &'a [PreparedTrace], order: &[usize]) -> Columns<'a> {
        let fields = cts_model::Field::ALL.len();
        let mut c = Columns {
            ords: Vec::with_capacity(order.len()),
            days: Vec::with_capacity(order.len()),
            times: Vec::with_capacity(order.len()),
            ids: Vec::with_capacity(order.len()),
            projects: Vec::with_capacity(order.len()),
            values: vec![Vec::with_capacity(order.len()); fields],
            docs: Vec::with_capacity(order.len()),
        };
        for &i in order {
            let t = &traces[i];
            c.ords.push(i as i32);
            c.days.push(day_of(t.time()));
            c.times.push(t.time());
            c.ids.push(uuid::Uuid::from_bytes(t.trace_id()));
            c.projects.push(t.project_id());
            for (f, values) in c.values.iter_mut().enumerate() {
                values.push(t.value(f));
            }
            c.docs.push(t.json());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_numbered_in_one_run_per_stretch_of_one_day() {
        let got = runs([(5, 0), (5, 1), (7, 2), (5, 4), (5, 6)].into_iter());
        let run = |day, first_seq, last_seq, n| Run {
            day,
            first_seq,
            last_seq,
            n,
        };
        assert_eq!(got, [run(5, 0, 1, 2), run(7, 2, 2, 1), run(5, 4, 6, 2)]);
    }
}
