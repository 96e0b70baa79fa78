use std::path::PathBuf;

use cts_model::{Trace, TraceQuery};

use crate::{AppendOutcome, QueryPage, RetentionReport, StoreError, StoreStats, TraceStore};

/// Settings of the embedded engine.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Root directory; the store uses `journal/` and `index/` below it.
    pub dir: PathBuf,
    /// Traces older than this are dropped (ms); default 7 days.
    pub retention_ms: i64,
    /// Width of an index partition (ms); default one day. Retention drops
    /// whole partitions.
    pub partition_ms: i64,
    /// The in-memory part of the index is written out as segments at this size.
    pub memtable_max_traces: usize,
    /// A journal file is closed and a new one started at this size.
    pub journal_segment_bytes: u64,
    /// fsync before acknowledging (turn off only in throwaway tests).
    pub fsync: bool,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            retention_ms: 7 * 24 * 3_600_000,
            partition_ms: 24 * 3_600_000,
            memtable_max_traces: 65_536,
            journal_segment_bytes: 64 << 20,
            fsync: true,
        }
    }
}

/// The embedded engine: journal + day-partitioned index segments.
pub struct EmbeddedStore {}

impl EmbeddedStore {
    /// Opens (or creates) the store: repairs the journal tail, loads the index
    /// and replays the journal past the index's durable position.
    pub fn open(_config: StoreConfig) -> Result<EmbeddedStore, StoreError> {
        todo!()
    }

    /// Rebuilds the index from the journal; returns the number of traces indexed.
    pub fn reindex(_config: StoreConfig) -> Result<u64, StoreError> {
        todo!()
    }
}

impl TraceStore for EmbeddedStore {
    fn append(&self, _traces: Vec<Trace>) -> Result<AppendOutcome, StoreError> {
        todo!()
    }
    fn query(&self, _query: &TraceQuery) -> Result<QueryPage, StoreError> {
        todo!()
    }
    fn enforce_retention(&self, _cutoff_ms: i64) -> Result<RetentionReport, StoreError> {
        todo!()
    }
    fn stats(&self) -> StoreStats {
        todo!()
    }
}
