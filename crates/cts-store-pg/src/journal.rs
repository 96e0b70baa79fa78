//! Journal consumers: traces in position order (`cts_trace_order`'s runs
//! joined with the traces: a run's `n` positions go to the traces of its
//! day and key range, in key order). Positions are consecutive and
//! committed in order (see `write`), so everything up to the committed
//! counter is readable, and a hole can only be a day retention dropped
//! (its traces and positions go together).

use cts_store::{JournalBatch, JournalEntry, StoreError};

use crate::store::PgStore;
use crate::PgError;

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
        // The runs holding positions after `after_seq`, up to `max` of
        // them: the last run starting at or before the first wanted (it
        // may hold it), then those starting within the wanted stretch.
        let rows = client
            .query(
                "WITH o AS ( \
                     (SELECT pos, day, seq, last_seq FROM cts_trace_order \
                      WHERE pos <= $1::bigint + 1 ORDER BY pos DESC LIMIT 1) \
                     UNION ALL \
                     (SELECT pos, day, seq, last_seq FROM cts_trace_order \
                      WHERE pos > $1::bigint + 1 AND pos <= least($2::bigint, $1 + $3::bigint))) \
                 SELECT o.pos + t.r - 1 AS p, t.doc FROM o CROSS JOIN LATERAL \
                     (SELECT doc, row_number() OVER (ORDER BY seq) AS r FROM cts_traces \
                      WHERE day = o.day AND seq BETWEEN o.seq AND o.last_seq) t \
                 WHERE o.pos + t.r - 1 > $1::bigint AND o.pos + t.r - 1 <= $2::bigint \
                 ORDER BY p LIMIT $3::bigint",
                &[&(after_seq as i64), &(durable_seq as i64), &(max as i64)],
            )
            .map_err(PgError::from)?;
        for row in rows {
            let seq = row.get::<_, i64>(0) as u64;
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
                doc: row.get(1),
            });
        }
        if batch.entries.is_empty() {
            return Err(StoreError::JournalGone {
                after_seq,
                oldest_seq: durable_seq + 1,
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
