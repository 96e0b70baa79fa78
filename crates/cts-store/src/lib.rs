//! Durable trace storage: the journal (source of truth, group commit) and the
//! trace index (day-partitioned segments answering ListTraces).
//!
//! `TraceStore` is the seam between the API and an engine: the embedded
//! engine is [`EmbeddedStore`], the PostgreSQL one is `cts_store_pg::PgStore`;
//! [`conformance`] (feature `conformance`) is the one suite both pass.

#[cfg(feature = "conformance")]
pub mod conformance;
mod dict;
mod embedded;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod journal;
mod memtable;
mod sealed;
pub mod segment;

use cts_model::{Trace, TraceQuery};

pub use embedded::{
    CheckReport, Damage, EmbeddedStore, OnDamage, Quarantined, RepairReport, StoreConfig,
};
pub use error::StoreError;
use memtable::IndexValues;

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
    /// Bytes the index's segments hold in memory: the cached summaries
    /// (within `index_cache_bytes`) and each segment's thinned samples.
    pub index_summary_bytes: u64,
    /// Merges of index segments since the start.
    pub segment_merges: u64,
    /// Bytes of decompressed journal frames cached for queries (within
    /// `frame_cache_bytes`).
    pub frame_cache_bytes: u64,
    /// Frames queries found in that cache, and those they decompressed,
    /// since the start.
    pub frame_cache_hits: u64,
    pub frame_cache_misses: u64,
    /// Traces currently queryable (memtable + segments).
    pub indexed_traces: u64,
    /// Sequence number of the last journaled trace.
    pub journal_seq: u64,
    /// Sequence number up to which the index is durable on disk.
    pub index_durable_seq: u64,
    /// Reads that found stored data failing its check (checksum, or not the
    /// trace the index named) since the start; each is logged with its
    /// file and offset.
    pub corrupt_reads: u64,
    /// Journal ranges `ctsd repair` moved into quarantine that no operator
    /// has acknowledged yet.
    pub quarantined: Vec<Quarantined>,
    /// Why the store is read-only (it opened on a damaged journal with
    /// [`OnDamage::ReadOnly`]); `None` when it takes writes.
    pub read_only: Option<String>,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub index_partitions_dropped: usize,
    pub journal_segments_dropped: usize,
    /// Journal files that would have been dropped but are kept because a
    /// journal consumer has not read them yet (see [`TraceStore::hold_journal`]).
    pub journal_segments_held: usize,
}

/// A trace made ready for [`TraceStore::append_prepared`]: its stored JSON
/// and its index values. Made from a trace of any text type, so that a
/// reported trace is stored without first copying its text out of the
/// request body.
pub struct PreparedTrace {
    pub(crate) json: Vec<u8>,
    pub(crate) values: IndexValues,
    pub(crate) supplied: bool,
}

impl PreparedTrace {
    pub fn of<S: AsRef<str>>(t: &Trace<S>) -> PreparedTrace {
        PreparedTrace {
            json: t.to_json(),
            values: IndexValues::of(&cts_model::IndexedFields::of(t)),
            supplied: t.trace_id_supplied,
        }
    }

    /// A trace as another store holds it (its stored JSON, kept byte for
    /// byte), to be stored once: marked as having a supplied id, so that
    /// copying it again (a resumed move between stores) stores nothing.
    pub fn stored(doc: Vec<u8>) -> Result<PreparedTrace, cts_model::IndexedError> {
        let values = IndexValues::of(&cts_model::IndexedFields::from_json(&doc)?);
        Ok(PreparedTrace {
            json: doc,
            values,
            supplied: true,
        })
    }

    /// The stored JSON: the bytes a query returns.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    pub fn project_id(&self) -> &str {
        self.values.project()
    }

    pub fn time(&self) -> i64 {
        self.values.time
    }

    /// The 16 bytes of the trace id (a UUID).
    pub fn trace_id(&self) -> [u8; 16] {
        self.values.id
    }

    /// The value a filter on the field in slot `i` of
    /// [`cts_model::Field::ALL`] matches; `None` when the trace has none.
    pub fn value(&self, i: usize) -> Option<&str> {
        self.values.value(i)
    }
}

/// One acknowledged trace, as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The trace's journal sequence number: unique, assigned in the order
    /// traces are acknowledged, without gaps.
    pub seq: u64,
    /// The stored JSON object: the same bytes a query returns for the trace.
    pub doc: Vec<u8>,
}

/// What [`TraceStore::read_journal`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalBatch {
    /// Traces in sequence order, consecutive sequence numbers.
    pub entries: Vec<JournalEntry>,
    /// The highest sequence number acknowledged when the read started: a
    /// consumer whose cursor reached it is caught up (until the next append).
    pub durable_seq: u64,
}

/// The storage seam between the API and an engine.
pub trait TraceStore: Send + Sync + 'static {
    /// Records a batch; returns once it is durable (fsync'd). Traces whose
    /// reporter-supplied trace_id is already recorded in the project are not
    /// stored again. Blocking.
    fn append_prepared(&self, traces: Vec<PreparedTrace>) -> Result<AppendOutcome, StoreError>;

    /// [`TraceStore::append_prepared`] for traces that own their text.
    fn append(&self, traces: Vec<Trace>) -> Result<AppendOutcome, StoreError> {
        self.append_prepared(traces.iter().map(PreparedTrace::of).collect())
    }

    /// Answers a ListTraces query. Blocking.
    fn query(&self, query: &TraceQuery) -> Result<QueryPage, StoreError>;

    /// Drops everything whose time is before `cutoff_ms`, whole partitions at
    /// a time.
    fn enforce_retention(&self, cutoff_ms: i64) -> Result<RetentionReport, StoreError>;

    fn stats(&self) -> StoreStats;

    /// Why the store takes no writes (it opened read-only on a damaged
    /// journal); `None` when it does. Fixed once the store is open.
    fn read_only(&self) -> Option<String> {
        None
    }

    /// Reads the journal for a consumer (transfer to object storage, …):
    /// the acknowledged traces whose sequence number is `> after_seq`, in
    /// sequence order. A trace is acknowledged once its journal record is
    /// fsync'd (the 201 of its request waits for that); nothing written but
    /// not yet fsync'd, and no torn tail, is ever returned.
    ///
    /// Returns `min(max, durable_seq - after_seq)` entries: never more than
    /// `max` (a record is cut at `max`; the next call continues inside it),
    /// and fewer only when the read reaches what was acknowledged when it
    /// started, or a stretch of the journal that retention removed (the
    /// next call then fails with [`StoreError::JournalGone`]). `max == 0`
    /// reads nothing.
    ///
    /// Pass the last `seq` received as the next `after_seq`: the store
    /// remembers where each batch ended, so a consumer that keeps polling
    /// reads only new journal bytes. Any other `after_seq` (a consumer
    /// restarting from its durable cursor) costs one pass over the record
    /// headers of one journal file to find its place.
    ///
    /// Errors: [`StoreError::JournalGone`] when traces after `after_seq`
    /// were removed by retention; [`StoreError::CursorAhead`] when
    /// `after_seq` is past everything acknowledged (the journal is not the
    /// one the cursor was read from). Blocking.
    fn read_journal(&self, after_seq: u64, max: usize) -> Result<JournalBatch, StoreError>;

    /// Registers or moves a retention hold: `consumer` has consumed every
    /// trace up to and including `seq` (0: nothing yet, hold everything).
    /// [`TraceStore::enforce_retention`] keeps every journal file holding a
    /// trace with a sequence number above the lowest hold.
    ///
    /// Holds live in memory only: a consumer calls this with its durable
    /// cursor when it starts, and whoever runs retention must let every
    /// consumer register first (a file retention removed before its
    /// consumer registered is gone: `read_journal` says so). The consumer
    /// calls it again as its durable cursor advances, after storing the
    /// cursor, never before.
    fn hold_journal(&self, consumer: &str, seq: u64);

    /// Removes the hold of `consumer` (it was deleted); unknown names are
    /// ignored.
    fn release_journal(&self, consumer: &str);
}
