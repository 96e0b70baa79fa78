//! The embedded engine: one writer thread appends to the journal with group
//! commit and feeds the memtable; one flusher thread turns full memtables
//! into index segments and advances the index's durable position.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use cts_model::TraceQuery;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::dict::Dictionaries;
use crate::memtable::{Candidate, Memtable};
use crate::segment::{Segment, SummaryCache};
use crate::PreparedTrace;
use crate::{
    AppendOutcome, JournalBatch, QueryPage, RetentionReport, StoreError, StoreStats, TraceStore,
};

mod active;
mod check;
mod feed;
mod fetch_helper;
mod files;
mod flusher;
mod frame_cache;
mod merger;
mod query;
mod readers;
mod recovery;
mod repair;
mod retention;
#[cfg(test)]
mod write_faults;
mod writer;

use query::MarkerCache;
use writer::{encode, freeze_active, WriteRequest};

pub use check::{CheckReport, Damage};
pub use repair::{Quarantined, RepairReport};
mod salvage;

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
    /// A partition's segments are merged in the background down to at
    /// most this many (at least 2).
    pub max_segments_per_partition: usize,
    /// What a start does on a damaged journal record.
    pub on_damage: OnDamage,
    /// Bytes of segment summaries (Bloom filters and samples) held in
    /// memory, for the most recently used segments; the others answer from
    /// their term tables on disk.
    pub index_cache_bytes: u64,
    /// Bytes of decompressed journal frames held in memory for queries,
    /// the most recently read ones (0: none).
    pub frame_cache_bytes: u64,
}

/// What the store does when its start finds a damaged journal record (not
/// a torn tail).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDamage {
    /// Refuse to open, naming the file, the offset and what to run.
    #[default]
    Refuse,
    /// Open read-only: the damaged ranges are copied into quarantine (the
    /// journal is left as it is), the traces outside them are queryable,
    /// and nothing is written, deleted or flushed until a restart after
    /// `ctsd repair`.
    ReadOnly,
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
            max_segments_per_partition: 8,
            on_damage: OnDamage::Refuse,
            index_cache_bytes: 64 << 20,
            frame_cache_bytes: 32 << 20,
        }
    }
}

/// Which segments make up the index and how far into the journal it is
/// durable. Rewritten atomically (write, fsync, rename).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Manifest {
    durable_seq: u64,
    next_flush_id: u64,
    segments: Vec<String>,
}

const MANIFEST: &str = "MANIFEST.json";

/// Decodes a manifest file's bytes (for fuzzing).
pub(crate) fn decode_manifest(bytes: &[u8]) -> Result<(), String> {
    crate::sealed::unseal::<Manifest>(bytes).map(drop)
}

/// What the store knows of each journal file, for retention and stats.
/// Kept beside a closed file as `{file}.meta` so that a restart need not read
/// every closed file again.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct JournalFile {
    len: u64,
    last_seq: u64,
    max_time: i64,
    /// Oldest compression dictionary its frames use.
    min_dict: u32,
}

impl JournalFile {
    /// A file of `len` bytes that holds no record yet.
    fn empty(len: u64) -> Self {
        JournalFile {
            len,
            last_seq: 0,
            max_time: i64::MIN,
            min_dict: u32::MAX,
        }
    }
}

struct IndexState {
    frozen: Vec<Arc<Memtable>>,
    segments: Vec<Arc<Segment>>,
    /// The newest generation of the active memtable flushed to segments.
    flushed_generation: u64,
}

struct Inner {
    config: StoreConfig,
    journal_dir: PathBuf,
    index_dir: PathBuf,
    dicts: Arc<Dictionaries>,
    active: active::Active,
    index: RwLock<IndexState>,
    manifest: Mutex<Manifest>,
    journal_files: Mutex<BTreeMap<u32, JournalFile>>,
    /// Open journal files for reads, a bounded number of them.
    readers: readers::Readers,
    /// Summaries (samples, Bloom filters) of the most recently used
    /// segments, within `config.index_cache_bytes`.
    summaries: Arc<SummaryCache>,
    /// Decompressed frames queries read most recently, within
    /// `config.frame_cache_bytes`.
    frames: frame_cache::FrameCache,
    /// Reads a large page's frames on another core, beside the query.
    fetch_helper: fetch_helper::FetchHelper,
    last_seq: AtomicU64,
    /// Reads that found stored data failing its check, since the start.
    corrupt_reads: AtomicU64,
    /// Quarantined journal ranges no operator has acknowledged yet.
    quarantined: Vec<Quarantined>,
    /// Why the store opened read-only ([`OnDamage::ReadOnly`]); `None`
    /// when it takes writes.
    read_only: Option<String>,
    durable_seq: AtomicU64,
    flush_tx: Mutex<Option<Sender<Arc<Memtable>>>>,
    /// Wake the mergers after a flush.
    merge_tx: Mutex<Vec<Sender<()>>>,
    /// Held by a merge and by retention, which both remove segments.
    merging: Mutex<()>,
    /// Merges completed since the start.
    merges: AtomicU64,
    /// Set when the store closes: a merge in progress stops.
    stopping: AtomicBool,
}

impl Inner {
    /// A segment id no other segment has or will have.
    fn reserve_segment_id(&self) -> u64 {
        let mut m = self.manifest.lock();
        m.next_flush_id += 1;
        m.next_flush_id - 1
    }

    /// The trace of the project with this id: memtable, frozen memtables,
    /// then segments (only the partition of `time_hint` when given).
    fn find(
        &self,
        project: &str,
        id: &[u8; 16],
        time_hint: Option<i64>,
    ) -> Result<Option<Candidate>, StoreError> {
        if let Some(c) = self.active.read().find(project, id) {
            return Ok(Some(c));
        }
        let (frozen, segments) = {
            let idx = self.index.read();
            (idx.frozen.clone(), idx.segments.clone())
        };
        for m in frozen.iter().rev() {
            if let Some(c) = m.find(project, id) {
                return Ok(Some(c));
            }
        }
        let pm = self.config.partition_ms;
        for s in segments.iter().rev() {
            if time_hint.is_some_and(|t| t.div_euclid(pm) * pm != s.partition()) {
                continue;
            }
            if let Some(c) = s.find(project, id)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

/// The embedded engine: journal + day-partitioned index segments.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    writer_tx: Mutex<Option<SyncSender<WriteRequest>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Keys of recently handed-out markers: the next page starts without
    /// looking its marker up in every segment.
    markers: Mutex<MarkerCache>,
    /// Journal consumers: where their batches ended, and their holds.
    feed: feed::Feed,
    /// The directory's lock, held while the store is open.
    _lock: File,
}

use cts_clock::now_ms;

impl EmbeddedStore {
    /// Stops accepting writes and writes the whole memtable out as segments,
    /// so that the next start replays nothing.
    pub fn close(&self) -> Result<(), StoreError> {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.merge_tx.lock().clear();
        self.writer_tx.lock().take();
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        let mut rest = Vec::new();
        for t in threads {
            if t.thread().name() == Some("cts-journal") {
                let _ = t.join();
            } else {
                rest.push(t);
            }
        }
        freeze_active(&self.inner);
        self.inner.flush_tx.lock().take();
        for t in rest {
            let _ = t.join();
        }
        Ok(())
    }

    fn find(
        &self,
        project: &str,
        id: &[u8; 16],
        time_hint: Option<i64>,
    ) -> Result<Option<Candidate>, StoreError> {
        self.inner.find(project, id, time_hint)
    }

    /// Merges, on the caller's thread, until every partition is within
    /// `max_segments_per_partition` (what the background merger does after
    /// each flush); returns the number of merges.
    pub fn merge_segments(&self) -> Result<usize, StoreError> {
        let mut merges = 0;
        while merger::merge_next(&self.inner, &mut |_| {})? {
            merges += 1;
        }
        Ok(merges)
    }
}

impl Drop for EmbeddedStore {
    /// Stops the threads before the directory lock goes with `self`: a
    /// flusher still writing a segment and the manifest after the lock is
    /// released would race the next opener (which deletes segments its
    /// manifest does not list) and lose index entries.
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the store failed; the next start replays the journal");
        }
    }
}

impl TraceStore for EmbeddedStore {
    fn append_prepared(&self, mut docs: Vec<PreparedTrace>) -> Result<AppendOutcome, StoreError> {
        if let Some(why) = &self.inner.read_only {
            return Err(StoreError::ReadOnly(why.clone()));
        }
        let before = docs.len();
        // Drop retries of traces already recorded (and repeats within the batch).
        if docs.iter().any(|d| d.supplied) {
            let mut seen = HashSet::new();
            let mut keep = Vec::with_capacity(docs.len());
            for d in docs {
                if d.supplied {
                    let key = (d.values.project().to_string(), d.values.id);
                    if !seen.insert(key)
                        || self
                            .find(d.values.project(), &d.values.id, Some(d.values.time))?
                            .is_some()
                    {
                        continue;
                    }
                }
                keep.push(d);
            }
            docs = keep;
        }
        let duplicates = before - docs.len();
        if docs.is_empty() {
            return Ok(AppendOutcome {
                stored: 0,
                duplicates,
            });
        }
        let batch = encode(&self.inner.dicts, &docs)?;
        let (reply, answer) = mpsc::sync_channel(1);
        let tx = self
            .writer_tx
            .lock()
            .clone()
            .ok_or_else(|| StoreError::Unavailable("store closed".into()))?;
        tx.send(WriteRequest {
            docs,
            batch,
            duplicates,
            reply,
        })
        .map_err(|_| StoreError::Unavailable("journal writer stopped".into()))?;
        let (outcome, spent) = answer
            .recv()
            .map_err(|_| StoreError::Unavailable("journal writer stopped".into()))??;
        drop(spent);
        Ok(outcome)
    }

    fn query(&self, q: &TraceQuery) -> Result<QueryPage, StoreError> {
        self.query_page(q)
    }

    fn enforce_retention(&self, cutoff_ms: i64) -> Result<RetentionReport, StoreError> {
        self.enforce_retention_before(cutoff_ms)
    }

    fn read_journal(&self, after_seq: u64, max: usize) -> Result<JournalBatch, StoreError> {
        self.read_journal_batch(after_seq, max)
    }

    fn hold_journal(&self, consumer: &str, seq: u64) {
        self.feed.hold(consumer, seq);
    }

    fn release_journal(&self, consumer: &str) {
        self.feed.release(consumer);
    }

    fn read_only(&self) -> Option<String> {
        self.inner.read_only.clone()
    }

    fn stats(&self) -> StoreStats {
        let journal_bytes = self
            .inner
            .journal_files
            .lock()
            .values()
            .map(|f| f.len)
            .sum();
        let active = self.inner.active.read().len() as u64;
        let idx = self.inner.index.read();
        StoreStats {
            journal_bytes,
            index_bytes: idx.segments.iter().map(|s| s.size).sum(),
            segments: idx.segments.len(),
            index_summary_bytes: self.inner.summaries.bytes()
                + idx.segments.iter().map(|s| s.resident_bytes()).sum::<u64>(),
            indexed_traces: active
                + idx.frozen.iter().map(|m| m.len() as u64).sum::<u64>()
                + idx.segments.iter().map(|s| s.docs() as u64).sum::<u64>(),
            journal_seq: self.inner.last_seq.load(Ordering::Acquire),
            corrupt_reads: self.inner.corrupt_reads.load(Ordering::Relaxed),
            quarantined: self.inner.quarantined.clone(),
            read_only: self.inner.read_only.clone(),
            index_durable_seq: self.inner.durable_seq.load(Ordering::Acquire),
            segment_merges: self.inner.merges.load(Ordering::Relaxed),
            frame_cache_bytes: self.inner.frames.bytes(),
            frame_cache_hits: self.inner.frames.hits_and_misses().0,
            frame_cache_misses: self.inner.frames.hits_and_misses().1,
        }
    }
}
