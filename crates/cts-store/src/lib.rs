//! Durable trace storage: the journal (source of truth, group commit) and the
//! trace index (day-partitioned segments answering ListTraces).
//!
//! `TraceStore` is the seam a PostgreSQL backend will implement later; the
//! embedded engine is [`EmbeddedStore`].

mod dict;
mod embedded;
mod error;
pub mod journal;
mod memtable;
pub mod segment;

use cts_model::{Trace, TraceQuery};

pub use embedded::{EmbeddedStore, StoreConfig};
pub use error::StoreError;

/// What an append did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Traces newly recorded.
    pub stored: usize,
    /// Traces whose (project, trace_id) was already recorded: stored once.
    pub duplicates: usize,
}

/// One page of a trace query.
#[derive(Debug, Clone, Default)]
pub struct QueryPage {
    /// The traces, newest first, each as its stored JSON object.
    pub traces: Vec<Vec<u8>>,
    /// The trace id to pass as `next` for the following page; `None` when
    /// this page is the last.
    pub marker: Option<String>,
}

/// Sizes and positions, for metrics.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub journal_bytes: u64,
    pub index_bytes: u64,
    pub segments: usize,
    /// Traces currently queryable (memtable + segments).
    pub indexed_traces: u64,
    /// Sequence number of the last journaled trace.
    pub journal_seq: u64,
    /// Sequence number up to which the index is durable on disk.
    pub index_durable_seq: u64,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub index_partitions_dropped: usize,
    pub journal_segments_dropped: usize,
}

/// The storage seam between the API and an engine.
pub trait TraceStore: Send + Sync + 'static {
    /// Records a batch; returns once it is durable (fsync'd). Traces whose
    /// reporter-supplied trace_id is already recorded in the project are not
    /// stored again. Blocking.
    fn append(&self, traces: Vec<Trace>) -> Result<AppendOutcome, StoreError>;

    /// Answers a ListTraces query. Blocking.
    fn query(&self, query: &TraceQuery) -> Result<QueryPage, StoreError>;

    /// Drops everything whose time is before `cutoff_ms`, whole partitions at
    /// a time.
    fn enforce_retention(&self, cutoff_ms: i64) -> Result<RetentionReport, StoreError>;

    fn stats(&self) -> StoreStats;
}
