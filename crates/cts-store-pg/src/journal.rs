//! Journal consumers: traces in position order. A `cts_trace_order` row is
//! a run: its `n` positions from `pos` go to the traces of its day whose
//! row keys lie in `first_seq ..= last_seq`, in key order (see `write`).
//! Positions are consecutive and committed in order, so everything up to
//! the committed counter is readable, and a hole can only be a day
//! retention dropped (its traces and runs go together).

use cts_store::{JournalBatch, JournalEntry, StoreError};
use postgres::GenericClient;

use crate::store::PgStore;
use crate::PgError;

/// A row of `cts_trace_order`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OrderRun {
    pub pos: i64,
    pub n: i64,
    pub day: i32,
    pub first_seq: i64,
    pub last_seq: i64,
}

impl OrderRun {
    /// Its columns, in the order [`OrderRun::of`] reads them.
    pub const COLUMNS: &'static str = "pos, n, day, first_seq, last_seq";

    pub fn of(row: &postgres::Row) -> OrderRun {
        OrderRun::of_at(row, 0)
    }

    /// The run whose columns start at column `at` of `row`.
    pub fn of_at(row: &postgres::Row, at: usize) -> OrderRun {
        OrderRun {
            pos: row.get(at),
            n: i64::from(row.get::<_, i32>(at + 1)),
            day: row.get(at + 2),
            first_seq: row.get(at + 3),
            last_seq: row.get(at + 4),
        }
    }

    fn last_pos(&self) -> i64 {
        self.pos + self.n - 1
    }
}

/// The traces of one run between two of its positions.
pub(crate) struct Slice {
    pub run: OrderRun,
    /// The first position wanted and how many from it.
    pub from: i64,
    pub count: i64,
}

/// A trace of a [`Slice`]: its position, row key and (if asked) doc.
pub(crate) struct Numbered {
    pub pos: i64,
    pub seq: i64,
    pub doc: Option<Vec<u8>>,
}

/// The traces `slices` ask for (the doc only `with_docs`), in the slices'
/// order. A slice whose day is gone
/// (retention dropped it since its run was read) gives none; one giving
/// some but not all is an error (the run does not match its rows).
pub(crate) fn traces_of(
    client: &mut impl GenericClient,
    slices: &[Slice],
    with_docs: bool,
) -> Result<Vec<Numbered>, PgError> {
    let days: Vec<i32> = slices.iter().map(|s| s.run.day).collect();
    let firsts: Vec<i64> = slices.iter().map(|s| s.run.first_seq).collect();
    let lasts: Vec<i64> = slices.iter().map(|s| s.run.last_seq).collect();
    let skips: Vec<i64> = slices.iter().map(|s| s.from - s.run.pos).collect();
    let counts: Vec<i64> = slices.iter().map(|s| s.count).collect();
    // One index scan of `(seq)` in the day's partition per slice (LATERAL:
    // a nested loop, whatever the estimate of the arrays).
    let rows = client.query(
        format!(
            "SELECT s.i, t.seq, {} FROM unnest($1::integer[], $2::bigint[], $3::bigint[], \
                 $4::bigint[], $5::bigint[]) WITH ORDINALITY AS s(day, lo, hi, skip, count, i) \
             CROSS JOIN LATERAL (SELECT seq, doc FROM cts_traces \
                 WHERE day = s.day AND seq BETWEEN s.lo AND s.hi \
                 ORDER BY seq OFFSET s.skip LIMIT s.count) t \
             ORDER BY s.i, t.seq",
            if with_docs { "t.doc" } else { "NULL::bytea" }
        )
        .as_str(),
        &[&days, &firsts, &lasts, &skips, &counts],
    )?;
    let mut got = vec![0i64; slices.len()];
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let i = row.get::<_, i64>(0) as usize - 1;
        out.push(Numbered {
            pos: slices[i].from + got[i],
            seq: row.get(1),
            doc: row.get(2),
        });
        got[i] += 1;
    }
    for (s, got) in slices.iter().zip(got) {
        if got != 0 && got != s.count {
            return Err(PgError::Positions(format!(
                "the run of positions {}..={} (day {}, row keys {}..={}) holds {} traces \
                 where {} were wanted from position {}",
                s.run.pos,
                s.run.last_pos(),
                s.run.day,
                s.run.first_seq,
                s.run.last_seq,
                got,
                s.count,
                s.from
            )));
        }
    }
    Ok(out)
}

impl PgStore {
    pub(crate) fn read_positions(
        &self,
        after_seq: u64,
        max: usize,
    ) -> Result<JournalBatch, StoreError> {
        let mut client = self.pool.get().map_err(PgError::from)?;
        // Read first: every position up to it is committed, so the rows
        // read after it are all there (unless retention dropped them).
        let durable_seq = durable(&mut *client)?;
        if after_seq > durable_seq {
            return Err(StoreError::CursorAhead {
                after_seq,
                durable_seq,
            });
        }
        let mut batch = JournalBatch {
            entries: Vec::new(),
            durable_seq,
        };
        if max == 0 || after_seq == durable_seq {
            return Ok(batch);
        }
        let (after, end) = (
            after_seq as i64,
            durable_seq.min(after_seq.saturating_add(max as u64)) as i64,
        );
        // The run holding the first position wanted (the last starting at
        // or before it), then those starting within the wanted stretch.
        let runs: Vec<OrderRun> = client
            .query(
                format!(
                    "(SELECT {c} FROM cts_trace_order WHERE pos <= $1::bigint + 1 \
                      ORDER BY pos DESC LIMIT 1) \
                     UNION ALL \
                     (SELECT {c} FROM cts_trace_order \
                      WHERE pos > $1::bigint + 1 AND pos <= $2::bigint) \
                     ORDER BY pos",
                    c = OrderRun::COLUMNS
                )
                .as_str(),
                &[&after, &end],
            )
            .map_err(PgError::from)?
            .iter()
            .map(OrderRun::of)
            .filter(|r| r.last_pos() > after)
            .collect();
        let slices: Vec<Slice> = runs
            .into_iter()
            .map(|run| {
                let from = run.pos.max(after + 1);
                let count = run.last_pos().min(end) - from + 1;
                Slice { run, from, count }
            })
            .collect();
        let traces = traces_of(&mut *client, &slices, true)?;
        for Numbered { pos, doc, .. } in traces {
            let seq = pos as u64;
            if seq != after_seq + 1 + batch.entries.len() as u64 {
                if batch.entries.is_empty() {
                    return Err(StoreError::JournalGone {
                        after_seq,
                        oldest_seq: seq,
                    });
                }
                // A stretch retention removed: the next read says so.
                break;
            }
            batch.entries.push(JournalEntry {
                seq,
                doc: doc.unwrap_or_default(),
            });
        }
        if batch.entries.is_empty() {
            // Nothing within `max` of the cursor: the journal goes on
            // where the next run starts.
            let next: Option<i64> = client
                .query_one(
                    "SELECT min(pos) FROM cts_trace_order \
                     WHERE pos > $1::bigint AND pos <= $2::bigint",
                    &[&after, &(durable_seq as i64)],
                )
                .map_err(PgError::from)?
                .get(0);
            return Err(StoreError::JournalGone {
                after_seq,
                oldest_seq: next.map_or(durable_seq + 1, |p| p as u64),
            });
        }
        Ok(batch)
    }
}

/// The last position committed.
pub(crate) fn durable(client: &mut impl postgres::GenericClient) -> Result<u64, PgError> {
    let next: i64 = client
        .query_one("SELECT next_pos FROM cts_trace_positions", &[])?
        .get(0);
    Ok(next as u64 - 1)
}
