//! Retention drops whole day partitions, never rows; and the sizes for
//! metrics.

use cts_store::{RetentionReport, StoreStats};

use crate::store::{day_of, PgStore};
use crate::{journal, partitions, PgError};

impl PgStore {
    /// Drops every partition whose day ends at or before `cutoff_ms`,
    /// except one holding a position above the lowest hold of this node's
    /// consumers (kept, and counted as held).
    pub(crate) fn drop_partitions_before(
        &self,
        cutoff_ms: i64,
    ) -> Result<RetentionReport, PgError> {
        let first_kept = day_of(cutoff_ms);
        let hold = self.lowest_hold();
        let mut client = self.pool.get()?;
        let mut report = RetentionReport::default();
        for day in partitions::list(&mut *client)? {
            if day >= first_kept {
                break;
            }
            let (part, order) = (partitions::name(day), partitions::order_name(day));
            let mut tx = client.transaction()?;
            // The parents first, in the order writers lock them: the hold
            // check and the drop see no batch landing in between.
            tx.batch_execute(&format!(
                "LOCK TABLE cts_traces, cts_trace_order, {part}, {order} IN ACCESS EXCLUSIVE MODE"
            ))?;
            if let Some(hold) = hold {
                let max: Option<i64> = tx
                    .query_one(format!("SELECT max(pos) FROM {order}").as_str(), &[])?
                    .get(0);
                if max.is_some_and(|m| m as u64 > hold) {
                    report.journal_segments_held += 1;
                    continue;
                }
            }
            tx.batch_execute(&format!("DROP TABLE {part}, {order}"))?;
            tx.commit()?;
            self.partitions.lock().remove(&day);
            report.index_partitions_dropped += 1;
            report.journal_segments_dropped += 1;
            tracing::info!(partition = %part, "retention dropped a partition");
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
