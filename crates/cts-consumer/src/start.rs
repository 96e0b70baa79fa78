//! Where a journal consumer begins when it begins at a period: the cursor
//! before the first trace recorded at or after the period's start, so that
//! every trace of the period from its start on is the consumer's, even the
//! ones journaled before the consumer was set up.
//!
//! The search runs forward from a journal mark
//! ([`crate::ConsumerStore::journal_mark`]), which lies at or before every
//! such trace; it reads at most the traces since the mark. Without a mark
//! it reads the journal from its beginning.
//! The rule is the one that ends a transfer period (the first trace
//! recorded at or after its end): a trace a little out of time order near
//! the start falls on the same side as it would at a period end, once.

use cts_store::{StoreError, TraceStore};
use serde::Deserialize;

use crate::read_batch;

#[derive(Deserialize)]
struct RecordTime {
    record_time: i64,
}

/// Where a consumer begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The last sequence number before the first trace recorded at or
    /// after the start.
    pub cursor: u64,
    /// Journal entries after `from` that retention had removed. After a
    /// mark they may be the consumer's (there should be none: retention
    /// keeps days, a period is minutes): count them in its `Skips`.
    pub gone: u64,
}

/// Where a consumer beginning at `start_ms` (Unix ms) begins, searched
/// from `from` (a journal mark, or 0), reading `batch` traces at a time.
/// Blocking.
pub fn start_cursor(
    journal: &dyn TraceStore,
    from: u64,
    start_ms: i64,
    batch: usize,
) -> Result<Start, StoreError> {
    let (mut cursor, mut gone) = (from, 0);
    loop {
        let read = read_batch(journal, cursor, batch)?;
        gone += read.gone;
        if read.entries.is_empty() {
            return Ok(Start {
                cursor: read.cursor,
                gone,
            });
        }
        for entry in read.entries {
            let recorded = serde_json::from_slice::<RecordTime>(&entry.doc).map(|t| t.record_time);
            if recorded.is_ok_and(|t| t >= start_ms) {
                let cursor = entry.seq - 1;
                return Ok(Start { cursor, gone });
            }
            cursor = entry.seq;
        }
    }
}
