//! The read side of the poll loop: a batch after a cursor, passing over a
//! gap in the journal with its size said, and the count of what was passed
//! over.

use std::sync::atomic::{AtomicU64, Ordering};

use cts_store::{JournalEntry, StoreError, TraceStore};

/// What [`read_batch`] read.
#[derive(Debug)]
pub struct Batch {
    /// Sequence numbers after the cursor that were gone from the journal
    /// (retention, or a quarantined range) before `entries`.
    pub gone: u64,
    /// The traces after the cursor (and the gap), in sequence order; empty
    /// when the consumer is up to date.
    pub entries: Vec<JournalEntry>,
    /// Where the consumer stands after `entries` (their last sequence
    /// number, or the cursor past the gap when there are none).
    pub cursor: u64,
}

/// Reads at most `max` traces after `after`. A gap before them is passed
/// over and counted in [`Batch::gone`]: the caller decides whether those
/// were its own, counts them in its [`Skips`] and logs them. Blocking.
pub fn read_batch(journal: &dyn TraceStore, after: u64, max: usize) -> Result<Batch, StoreError> {
    let (mut cursor, mut gone) = (after, 0);
    loop {
        match journal.read_journal(cursor, max) {
            Err(StoreError::JournalGone { oldest_seq, .. }) if oldest_seq > cursor + 1 => {
                gone += oldest_seq - 1 - cursor;
                cursor = oldest_seq - 1;
            }
            read => {
                let entries = read?.entries;
                let cursor = entries.last().map_or(cursor, |e| e.seq);
                return Ok(Batch {
                    gone,
                    entries,
                    cursor,
                });
            }
        }
    }
}

/// Traces a consumer should have delivered but passed over (gone from the
/// journal, or unreadable), for a `*_skipped_traces_total` counter: there
/// should be none, and none goes without a log line.
#[derive(Debug)]
pub struct Skips {
    consumer: &'static str,
    count: AtomicU64,
}

impl Skips {
    pub fn new(consumer: &'static str) -> Skips {
        Skips {
            consumer,
            count: AtomicU64::new(0),
        }
    }

    /// Counts and logs `count` traces of `key` (e.g. a tracker) passed over.
    pub fn record(&self, key: &str, count: u64, why: &str) {
        if count == 0 {
            return;
        }
        self.count.fetch_add(count, Ordering::Relaxed);
        tracing::error!(
            consumer = self.consumer,
            key,
            count,
            why,
            "traces passed over: they were not delivered"
        );
    }

    /// How many were passed over since the last call.
    pub fn take(&self) -> u64 {
        self.count.swap(0, Ordering::Relaxed)
    }
}
