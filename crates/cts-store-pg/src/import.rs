//! Traces moved in from an embedded node's journal (`ctsd
//! migrate-from-embedded`), resumably.
//!
//! Each batch is one transaction: the traces go through the normal write
//! path (one statement: inserted, numbered under the counter's lock, a
//! trace already recorded for its project, day and id stored once), and in the same
//! transaction the ledger records how far the journal was read and which
//! position each journal sequence number became (runs of consecutive
//! numbers). A crash loses a whole batch or nothing; a rerun goes on after
//! the ledger's sequence number. The runs translate a journal consumer's
//! cursor (a sequence number) into a position ([`PgStore::import_position`]).

use std::collections::HashMap;

use cts_db::{PgMigration, PgSchema};
use cts_store::PreparedTrace;

use crate::journal::{traces_of, OrderRun, Slice};
use crate::store::day_of;
use crate::store::PgStore;
use crate::write::append;
use crate::PgError;

/// The import ledger, migrated by the import only (`cts_import_migrations`).
/// Never edit a released entry: add one.
pub const IMPORT_SCHEMA: PgSchema = PgSchema {
    ledger: "cts_import_migrations",
    migrations: &[PgMigration {
        version: 1,
        name: "import progress, sequence number to position runs",
        sql: "
CREATE TABLE cts_import_progress (
    source text PRIMARY KEY,
    last_seq bigint NOT NULL,
    copied bigint NOT NULL,
    present bigint NOT NULL,
    skipped bigint NOT NULL
);
-- Journal sequence numbers first_seq .. first_seq + count - 1 became the
-- positions first_pos .. first_pos + count - 1.
CREATE TABLE cts_import_runs (
    first_seq bigint PRIMARY KEY,
    first_pos bigint NOT NULL,
    count bigint NOT NULL
);",
    }],
};

/// How far the import of a source stands (sums over every run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportProgress {
    /// Every journal trace up to this sequence number is dealt with.
    pub last_seq: u64,
    /// Traces stored.
    pub copied: u64,
    /// Traces found already recorded (stored once).
    pub present: u64,
    /// Traces left out: older than the retention.
    pub skipped: u64,
}

/// Why an import step failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Db(#[from] PgError),
    #[error(
        "this database already holds the traces of another embedded data directory ({0}); \
         one database takes one node's traces"
    )]
    OtherSource(String),
    #[error(
        "the import ledger moved from sequence number {expected} to {found} meanwhile: \
         another migrate-from-embedded runs against this database"
    )]
    Concurrent { expected: u64, found: u64 },
}

impl From<postgres::Error> for ImportError {
    fn from(e: postgres::Error) -> ImportError {
        ImportError::Db(e.into())
    }
}

impl PgStore {
    /// The progress of importing `source` (created empty on the first
    /// call); refuses when the ledger names another source.
    pub fn import_begin(&self, source: &str) -> Result<ImportProgress, ImportError> {
        cts_db::ensure_schema(&self.pool, &IMPORT_SCHEMA, true).map_err(PgError::Db)?;
        let mut client = self.pool.get().map_err(PgError::from)?;
        client.execute(
            "INSERT INTO cts_import_progress (source, last_seq, copied, present, skipped) \
             SELECT $1, 0, 0, 0, 0 WHERE NOT EXISTS (SELECT 1 FROM cts_import_progress) \
             ON CONFLICT DO NOTHING",
            &[&source],
        )?;
        let row = client.query_one(
            "SELECT source, last_seq, copied, present, skipped FROM cts_import_progress \
             ORDER BY source = $1 DESC LIMIT 1",
            &[&source],
        )?;
        let recorded: String = row.get(0);
        if recorded != source {
            return Err(ImportError::OtherSource(recorded));
        }
        let n = |i: usize| row.get::<_, i64>(i) as u64;
        Ok(ImportProgress {
            last_seq: n(1),
            copied: n(2),
            present: n(3),
            skipped: n(4),
        })
    }

    /// Stores `traces` (`seqs`: their journal sequence numbers, ascending)
    /// and records in the same transaction that the journal of `source` is
    /// dealt with from after `after` up to `to`, `skipped` traces of it
    /// left out. Answers the progress after the batch.
    pub fn import_batch(
        &self,
        source: &str,
        (after, to): (u64, u64),
        seqs: &[u64],
        traces: &[PreparedTrace],
        skipped: u64,
    ) -> Result<ImportProgress, ImportError> {
        let batch = Batch {
            source,
            after,
            to,
            seqs,
            traces,
            skipped,
        };
        self.in_partitions(traces, |client| batch.commit(client))?
    }

    /// The position a journal consumer's cursor `seq` becomes: that of the
    /// last imported trace at or below it, so that the consumer goes on
    /// with the first imported trace after it. Below every imported
    /// trace: just before the first; nothing imported: the current end.
    pub fn import_position(&self, seq: u64) -> Result<u64, PgError> {
        let mut client = self.pool.get()?;
        let at = client.query_opt(
            "SELECT first_seq, first_pos, count FROM cts_import_runs WHERE first_seq <= $1 \
             ORDER BY first_seq DESC LIMIT 1",
            &[&(seq as i64)],
        )?;
        if let Some(row) = at {
            let (first_seq, first_pos, count): (i64, i64, i64) =
                (row.get(0), row.get(1), row.get(2));
            return Ok((first_pos + (seq as i64 - first_seq).min(count - 1)) as u64);
        }
        let first = client.query_opt(
            "SELECT first_pos FROM cts_import_runs ORDER BY first_seq LIMIT 1",
            &[],
        )?;
        Ok(match first {
            Some(row) => (row.get::<_, i64>(0) - 1) as u64,
            None => {
                let next: i64 = client
                    .query_one("SELECT next_pos FROM cts_trace_positions", &[])?
                    .get(0);
                (next - 1).max(0) as u64
            }
        })
    }
}

/// One batch of an import.
struct Batch<'a> {
    source: &'a str,
    after: u64,
    to: u64,
    seqs: &'a [u64],
    traces: &'a [PreparedTrace],
    skipped: u64,
}

impl Batch<'_> {
    /// One transaction; the outer error is the database's (retried by
    /// [`PgStore::in_partitions`] when a partition went missing).
    fn commit(
        &self,
        client: &mut postgres::Client,
    ) -> Result<Result<ImportProgress, ImportError>, PgError> {
        let mut tx = client.transaction()?;
        // The ledger's row first: a second import waits here, then finds
        // the row moved.
        let row = tx.query_one(
            "SELECT last_seq FROM cts_import_progress WHERE source = $1 FOR UPDATE",
            &[&self.source],
        )?;
        let found = row.get::<_, i64>(0) as u64;
        if found != self.after {
            return Ok(Err(ImportError::Concurrent {
                expected: self.after,
                found,
            }));
        }
        let copied = append(&mut tx, self.traces)? as i64;
        let positions = self.positions(&mut tx)?;
        for (first_seq, first_pos, count) in runs(self.seqs, &positions) {
            tx.execute(
                "INSERT INTO cts_import_runs (first_seq, first_pos, count) VALUES ($1, $2, $3)",
                &[&(first_seq as i64), &first_pos, &count],
            )?;
        }
        let present = self.traces.len() as i64 - copied;
        let row = tx.query_one(
            "UPDATE cts_import_progress SET last_seq = $2, copied = copied + $3, \
             present = present + $4, skipped = skipped + $5 WHERE source = $1 \
             RETURNING copied, present, skipped",
            &[
                &self.source,
                &(self.to as i64),
                &copied,
                &present,
                &(self.skipped as i64),
            ],
        )?;
        tx.commit()?;
        let n = |i: usize| row.get::<_, i64>(i) as u64;
        Ok(Ok(ImportProgress {
            last_seq: self.to,
            copied: n(0),
            present: n(1),
            skipped: n(2),
        }))
    }

    /// The position of each trace: numbered now, or recorded before (a
    /// repeat, in the batch or of an earlier one, has its first's).
    fn positions(&self, tx: &mut postgres::Transaction<'_>) -> Result<Vec<i64>, PgError> {
        let projects: Vec<&str> = self.traces.iter().map(|t| t.project_id()).collect();
        let ids: Vec<uuid::Uuid> = self
            .traces
            .iter()
            .map(|t| uuid::Uuid::from_bytes(t.trace_id()))
            .collect();
        let days: Vec<i32> = self.traces.iter().map(|t| day_of(t.time())).collect();
        // Each trace's row and the run holding it (the day's last
        // starting at or below its key); then the rows of those runs,
        // numbered.
        let found = tx.query(
            format!(
                "SELECT k.i, t.seq, o.* FROM unnest($1::text[], $2::uuid[], $3::integer[]) \
                 WITH ORDINALITY AS k(project_id, trace_id, day, i) \
                 JOIN cts_traces t ON t.project_id = k.project_id AND t.trace_id = k.trace_id \
                 AND t.day = k.day CROSS JOIN LATERAL (SELECT {} FROM cts_trace_order \
                     WHERE day = t.day AND first_seq <= t.seq \
                     ORDER BY first_seq DESC LIMIT 1) o",
                OrderRun::COLUMNS
            )
            .as_str(),
            &[&projects, &ids, &days],
        )?;
        let mut runs: Vec<OrderRun> = Vec::new();
        let mut seq_of: HashMap<i64, i64> = HashMap::new();
        for row in &found {
            seq_of.insert(row.get(0), row.get(1));
            let run = OrderRun::of_at(row, 2);
            if !runs.contains(&run) {
                runs.push(run);
            }
        }
        let slices: Vec<Slice> = runs
            .into_iter()
            .map(|run| Slice {
                run,
                from: run.pos,
                count: run.n,
            })
            .collect();
        let pos_of: HashMap<i64, i64> = traces_of(&mut *tx, &slices, false)?
            .into_iter()
            .map(|t| (t.seq, t.pos))
            .collect();
        let at: HashMap<i64, i64> = seq_of
            .into_iter()
            .filter_map(|(i, seq)| Some((i, *pos_of.get(&seq)?)))
            .collect();
        (1..=self.traces.len() as i64)
            .map(|i| match at.get(&i) {
                Some(pos) => Ok(*pos),
                None => Err(PgError::Db(cts_db::DbError::BadSchema {
                    ledger: IMPORT_SCHEMA.ledger,
                    detail: format!(
                        "trace {} of the batch has no position after its insert",
                        i - 1
                    ),
                })),
            })
            .collect()
    }
}

/// `(first_seq, first_pos, count)` for each stretch where sequence numbers
/// and positions both go up by one.
fn runs(seqs: &[u64], positions: &[i64]) -> Vec<(u64, i64, i64)> {
    let mut out: Vec<(u64, i64, i64)> = Vec::new();
    for (&seq, &pos) in seqs.iter().zip(positions) {
        match out.last_mut() {
            Some((s, p, n)) if *s + *n as u64 == seq && *p + *n == pos => *n += 1,
            _ => out.push((seq, pos, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_break_where_either_number_jumps() {
        let seqs = [3, 4, 5, 7, 8, 9];
        let pos = [10, 11, 12, 13, 2, 14];
        assert_eq!(
            runs(&seqs, &pos),
            vec![(3, 10, 3), (7, 13, 1), (8, 2, 1), (9, 14, 1)]
        );
    }
}
