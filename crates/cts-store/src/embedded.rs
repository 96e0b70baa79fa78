//! The embedded engine: one writer thread appends to the journal with group
//! commit and feeds the memtable; one flusher thread turns full memtables
//! into index segments and advances the index's durable position.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cts_model::{Trace, TraceQuery};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::dict::Dictionaries;
use crate::journal::{self, ActiveFile, EncodedBatch, FrameRef, FRAME_DOCS};
use crate::memtable::{Candidate, IndexValues, Key, Memtable, Probe, TopK};
use crate::segment::{self, Segment};
use crate::PreparedTrace;
use crate::{
    AppendOutcome, JournalBatch, QueryPage, RetentionReport, StoreError, StoreStats, TraceStore,
};

mod feed;

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

/// Which segments make up the index and how far into the journal it is
/// durable. Rewritten atomically (write, fsync, rename).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Manifest {
    durable_seq: u64,
    next_flush_id: u64,
    segments: Vec<String>,
}

const MANIFEST: &str = "MANIFEST.json";

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

struct WriteRequest {
    docs: Vec<PreparedTrace>,
    batch: EncodedBatch,
    duplicates: usize,
    reply: SyncSender<Result<(AppendOutcome, Spent), StoreError>>,
}

/// The buffers of a written request, handed back so that the caller's
/// thread, not the single writer thread, pays for freeing them.
struct Spent {
    _docs: Vec<PreparedTrace>,
    _batch: EncodedBatch,
}

struct IndexState {
    frozen: Vec<Arc<Memtable>>,
    segments: Vec<Arc<Segment>>,
}

struct Inner {
    config: StoreConfig,
    journal_dir: PathBuf,
    index_dir: PathBuf,
    dicts: Arc<Dictionaries>,
    active: RwLock<Memtable>,
    index: RwLock<IndexState>,
    manifest: Mutex<Manifest>,
    journal_files: Mutex<BTreeMap<u32, JournalFile>>,
    readers: RwLock<HashMap<u32, Arc<File>>>,
    last_seq: AtomicU64,
    durable_seq: AtomicU64,
    flush_tx: Mutex<Option<Sender<Arc<Memtable>>>>,
}

impl Inner {
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

/// Name of the lock file in the store's directory.
const LOCK_FILE: &str = "store.lock";

/// Creates the directory and takes its exclusive lock: a second writer (a
/// second server, or `reindex` beside a running one) would interleave
/// journal records and delete index files under the first. The lock is the
/// kernel's (`flock`), so it goes with the process, even after `kill -9`.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
        Err(fs::TryLockError::Error(e)) => Err(StoreError::Io { path, source: e }),
    }
}

const MARKER_CACHE: usize = 4096;

#[derive(Default)]
struct MarkerCache {
    keys: HashMap<(String, [u8; 16]), i64>,
    order: std::collections::VecDeque<(String, [u8; 16])>,
}

impl MarkerCache {
    fn get(&self, project: &str, id: &[u8; 16]) -> Option<Key> {
        self.keys
            .get(&(project.to_string(), *id))
            .map(|time| (*time, *id))
    }

    fn put(&mut self, project: &str, key: Key) {
        let entry = (project.to_string(), key.1);
        if self.keys.insert(entry.clone(), key.0).is_none() {
            self.order.push_back(entry);
            if self.order.len() > MARKER_CACHE {
                if let Some(old) = self.order.pop_front() {
                    self.keys.remove(&old);
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl EmbeddedStore {
    /// Opens (or creates) the store: repairs the journal tail, loads the index
    /// and replays the journal past the index's durable position.
    pub fn open(config: StoreConfig) -> Result<EmbeddedStore, StoreError> {
        let lock = lock_dir(&config.dir)?;
        EmbeddedStore::open_locked(config, lock)
    }

    fn open_locked(config: StoreConfig, lock: File) -> Result<EmbeddedStore, StoreError> {
        let journal_dir = config.dir.join("journal");
        let index_dir = config.dir.join("index");
        for d in [&journal_dir, &index_dir] {
            fs::create_dir_all(d).map_err(StoreError::io(d))?;
        }
        let manifest = load_manifest(&index_dir)?;
        let segments = open_segments(&index_dir, &manifest)?;

        let files = journal::list_files(&journal_dir)?;
        let mut journal_files = BTreeMap::new();
        let mut last_seq = manifest.durable_seq;
        let mut replay = Vec::new();
        let mut tail = None;
        for (n, (id, path)) in files.iter().enumerate() {
            let is_last = n + 1 == files.len();
            if !is_last {
                if let Some(info) = read_sidecar(path) {
                    if info.last_seq <= manifest.durable_seq {
                        last_seq = last_seq.max(info.last_seq);
                        journal_files.insert(*id, info);
                        continue;
                    }
                }
            }
            let scan = journal::scan_file(*id, path)?;
            if scan.valid_len < scan.file_len {
                if !is_last {
                    return Err(StoreError::Corrupt {
                        what: "journal file",
                        path: path.clone(),
                        detail: format!(
                            "invalid record at byte {} of a closed file; refusing to start",
                            scan.valid_len
                        ),
                    });
                }
                tracing::warn!(
                    file = %path.display(),
                    cut_bytes = scan.file_len - scan.valid_len,
                    "journal tail was torn by a crash; cutting it off (it was never acknowledged)"
                );
            }
            let mut info = JournalFile::empty(scan.valid_len);
            for r in &scan.records {
                info.min_dict = info.min_dict.min(r.dict);
                let end = r.first_seq + r.count as u64 - 1;
                info.last_seq = info.last_seq.max(end);
                info.max_time = info.max_time.max(r.max_time);
                last_seq = last_seq.max(end);
            }
            if scan
                .records
                .iter()
                .any(|r| r.first_seq + r.count as u64 - 1 > manifest.durable_seq)
            {
                replay.push((*id, path.clone(), scan.records));
            }
            journal_files.insert(*id, info);
            if is_last {
                tail = Some((*id, path.clone(), scan.valid_len));
            } else {
                write_sidecar(path, &info);
            }
        }

        let dicts = Dictionaries::open(&journal_dir, config.fsync)?;
        let inner = Arc::new(Inner {
            journal_dir: journal_dir.clone(),
            dicts,
            index_dir,
            active: RwLock::new(Memtable::default()),
            index: RwLock::new(IndexState {
                frozen: Vec::new(),
                segments,
            }),
            manifest: Mutex::new(manifest.clone()),
            journal_files: Mutex::new(journal_files),
            readers: RwLock::new(HashMap::new()),
            last_seq: AtomicU64::new(last_seq),
            durable_seq: AtomicU64::new(manifest.durable_seq),
            flush_tx: Mutex::new(None),
            config: config.clone(),
        });

        // Replay what the index has not made durable yet.
        let mut pending_flush = Vec::new();
        for (id, path, records) in replay {
            let file = File::open(&path).map_err(StoreError::io(&path))?;
            for r in records {
                if r.first_seq + r.count as u64 - 1 <= manifest.durable_seq {
                    continue;
                }
                for (i, (frame, idx, json)) in
                    journal::read_record_docs(&inner.dicts, &file, &path, &r)?
                        .into_iter()
                        .enumerate()
                {
                    let seq = r.first_seq + i as u64;
                    if seq <= manifest.durable_seq {
                        continue;
                    }
                    let trace: Trace =
                        serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
                            what: "journaled trace",
                            path: path.clone(),
                            detail: e.to_string(),
                        })?;
                    let mut active = inner.active.write();
                    active.insert(&IndexValues::of(&trace), frame, idx, seq);
                    if active.len() >= config.memtable_max_traces {
                        let full = Arc::new(std::mem::take(&mut *active));
                        inner.index.write().frozen.push(full.clone());
                        pending_flush.push(full);
                    }
                }
            }
            tracing::info!(file = id, "replayed journal file into the index");
        }

        // A full tail file is closed (with its summary) by the writer before
        // it writes again: the same rotation as while serving.
        let active_file = match tail {
            Some((id, path, len)) => ActiveFile::reopen(id, path, len)?,
            None => ActiveFile::create(&journal_dir, 1, config.fsync)?,
        };
        inner
            .journal_files
            .lock()
            .entry(active_file.id)
            .or_insert(JournalFile::empty(active_file.len));

        let (flush_tx, flush_rx) = mpsc::channel::<Arc<Memtable>>();
        let (writer_tx, writer_rx) = mpsc::sync_channel::<WriteRequest>(256);
        *inner.flush_tx.lock() = Some(flush_tx.clone());
        for m in pending_flush {
            let _ = flush_tx.send(m);
        }
        let flusher = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("cts-flusher".into())
                .spawn(move || flusher_loop(inner, flush_rx))
                .map_err(StoreError::io("<thread>"))?
        };
        let writer = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("cts-journal".into())
                .spawn(move || writer_loop(inner, active_file, writer_rx))
                .map_err(StoreError::io("<thread>"))?
        };
        Ok(EmbeddedStore {
            inner,
            writer_tx: Mutex::new(Some(writer_tx)),
            threads: Mutex::new(vec![writer, flusher]),
            markers: Mutex::new(MarkerCache::default()),
            feed: feed::Feed::default(),
            _lock: lock,
        })
    }

    /// Rebuilds the index from the journal; returns the number of traces indexed.
    pub fn reindex(config: StoreConfig) -> Result<u64, StoreError> {
        // Locked before anything is deleted: a running server keeps its index.
        let lock = lock_dir(&config.dir)?;
        let index_dir = config.dir.join("index");
        if index_dir.exists() {
            fs::remove_dir_all(&index_dir).map_err(StoreError::io(&index_dir))?;
        }
        let store = EmbeddedStore::open_locked(config, lock)?;
        store.close()?;
        let indexed = store.stats().indexed_traces;
        Ok(indexed)
    }

    /// Stops accepting writes and writes the whole memtable out as segments,
    /// so that the next start replays nothing.
    pub fn close(&self) -> Result<(), StoreError> {
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
        freeze_active(&self.inner, &mut self.inner.active.write());
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

    fn reader(&self, file: u32) -> Option<Arc<File>> {
        if let Some(f) = self.inner.readers.read().get(&file) {
            return Some(f.clone());
        }
        let path = self.inner.journal_dir.join(journal::file_name(file));
        let f = Arc::new(File::open(path).ok()?);
        self.inner.readers.write().insert(file, f.clone());
        Some(f)
    }

    /// Reads the bodies of the candidates, in their order. A body whose
    /// journal file retention removed meanwhile is left out.
    fn fetch(&self, cands: &[Candidate]) -> Result<Vec<Vec<u8>>, StoreError> {
        // Each frame is read and decompressed once, however many of the
        // page's traces it holds.
        let mut by_frame: HashMap<FrameRef, Vec<(usize, u8)>> = HashMap::new();
        for (pos, c) in cands.iter().enumerate() {
            by_frame.entry(c.frame).or_default().push((pos, c.idx));
        }
        // Start every frame's read before waiting for the first, as a few
        // large reads where frames lie close together (a page of traces is
        // usually a stretch of the journal).
        let mut ranges: Vec<FrameRef> = by_frame.keys().copied().collect();
        ranges.sort_by_key(|f| (f.file, f.offset));
        for span in coalesce(&ranges, READ_GAP) {
            if let Some(file) = self.reader(span.file) {
                segment::advise_willneed(&file, span.offset as u64, span.len as u64);
            }
        }
        let mut out: Vec<Option<Vec<u8>>> = vec![None; cands.len()];
        for (frame, wanted) in by_frame {
            let Some(file) = self.reader(frame.file) else {
                continue;
            };
            let path = self.inner.journal_dir.join(journal::file_name(frame.file));
            journal::with_frame(&self.inner.dicts, &file, &path, frame, |raw| {
                let docs = journal::split_frame(raw);
                for (pos, idx) in wanted {
                    out[pos] = docs.get(idx as usize).map(|d| d.to_vec());
                }
            })?;
        }
        Ok(out.into_iter().flatten().collect())
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.writer_tx.lock().take();
        self.inner.flush_tx.lock().take();
    }
}

/// Frames closer than this are read as one range.
const READ_GAP: u32 = 32 << 10;

/// Merges sorted frame ranges of the same file whose gaps are below `gap`.
fn coalesce(sorted: &[FrameRef], gap: u32) -> Vec<FrameRef> {
    let mut out: Vec<FrameRef> = Vec::new();
    for f in sorted {
        match out.last_mut() {
            Some(last) if last.file == f.file && f.offset <= last.offset + last.len + gap => {
                last.len = last.len.max(f.offset + f.len - last.offset);
            }
            _ => out.push(*f),
        }
    }
    out
}

fn encode(dicts: &Arc<Dictionaries>, docs: &[PreparedTrace]) -> Result<EncodedBatch, StoreError> {
    journal::encode_frames(
        dicts,
        docs.iter().map(|d| (d.json.as_slice(), d.values.time)),
    )
}

impl TraceStore for EmbeddedStore {
    fn append_prepared(&self, mut docs: Vec<PreparedTrace>) -> Result<AppendOutcome, StoreError> {
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
        let cutoff = now_ms() - self.inner.config.retention_ms;
        if let Some(id) = &q.trace_id {
            let bytes = cts_model::query::trace_id_bytes(id);
            let found = self.find(&q.project_id, &bytes, None)?;
            let cands: Vec<Candidate> = found.into_iter().filter(|c| c.key.0 >= cutoff).collect();
            return Ok(QueryPage {
                traces: self.fetch(&cands)?,
                marker: None,
            });
        }
        let mut upper: Key = (q.to, [0u8; 16]);
        if let Some(next) = &q.next {
            let id = cts_model::query::trace_id_bytes(next);
            let cached = self.markers.lock().get(&q.project_id, &id);
            let key = match cached {
                Some(key) => Some(key),
                None => self.find(&q.project_id, &id, None)?.map(|c| c.key),
            };
            match key {
                Some(key) => upper = upper.min(key),
                // The marker's trace expired, and everything older with it.
                None => return Ok(QueryPage::default()),
            }
        }
        let probe = Probe {
            project: &q.project_id,
            from: q.from.max(cutoff - 1),
            upper,
            filters: &q.filters,
        };
        let k = q.limit + 1;
        let mut top = TopK::new(k);
        self.inner.active.read().probe(&probe, &mut top);
        let (frozen, mut segments) = {
            let idx = self.inner.index.read();
            (idx.frozen.clone(), idx.segments.clone())
        };
        for m in &frozen {
            m.probe(&probe, &mut top);
        }
        // Only segments that overlap the window; newest first.
        segments.retain(|s| s.max_time() > probe.from && s.min_time() <= probe.upper.0);
        segments.sort_by_key(|s| std::cmp::Reverse(s.max_time()));
        // Most queries are answered by the newest one or two segments. Past
        // those, segments go in growing windows (4, 8, 16) whose reads are
        // all started before any is waited for: term blocks, then doc
        // entries. When the index is not in the page cache this turns a
        // chain of random reads into a few rounds of parallel ones, without
        // reading ahead for segments a dense query never needs.
        const SEQUENTIAL: usize = 2;
        const MAX_WINDOW: usize = 16;
        let passed = |s: &Segment, top: &TopK| {
            top.floor()
                .is_some_and(|floor| (s.max_time(), [0xff; 16]) < floor)
        };
        let mut i = 0;
        let mut width = 4;
        while i < segments.len() && !passed(&segments[i], &top) {
            if i < SEQUENTIAL {
                segments[i].probe(&probe, &mut top, k)?;
                i += 1;
                continue;
            }
            let window = &segments[i..(i + width).min(segments.len())];
            for s in window {
                s.prefetch(&probe);
            }
            let hits = window
                .iter()
                .map(|s| s.hits(&probe, k))
                .collect::<Result<Vec<_>, _>>()?;
            for (s, h) in window.iter().zip(&hits) {
                if !passed(s, &top) {
                    s.offer(h, &mut top)?;
                }
            }
            i += window.len();
            width = (width * 2).min(MAX_WINDOW);
        }
        let mut cands = top.into_sorted();
        let more = cands.len() > q.limit;
        cands.truncate(q.limit);
        let last = cands.last().filter(|_| more);
        if let Some(c) = last {
            self.markers.lock().put(&q.project_id, c.key);
        }
        let marker = last.map(|c| uuid::Uuid::from_bytes(c.key.1).hyphenated().to_string());
        Ok(QueryPage {
            traces: self.fetch(&cands)?,
            marker,
        })
    }

    fn enforce_retention(&self, cutoff_ms: i64) -> Result<RetentionReport, StoreError> {
        let pm = self.inner.config.partition_ms;
        let mut report = RetentionReport::default();
        // Index: whole partitions that end before the cutoff.
        let dropped: Vec<Arc<Segment>> = {
            let mut idx = self.inner.index.write();
            let (gone, keep): (Vec<_>, Vec<_>) = idx
                .segments
                .drain(..)
                .partition(|s| s.partition() + pm <= cutoff_ms);
            idx.segments = keep;
            gone
        };
        if !dropped.is_empty() {
            let mut m = self.inner.manifest.lock();
            let gone: HashSet<String> = dropped
                .iter()
                .map(|s| rel(&self.inner.index_dir, &s.path))
                .collect();
            m.segments.retain(|s| !gone.contains(s));
            store_manifest(&self.inner.index_dir, &m, self.inner.config.fsync)?;
            let partitions: HashSet<i64> = dropped.iter().map(|s| s.partition()).collect();
            for p in &partitions {
                let dir = self.inner.index_dir.join(segment::partition_dir_name(*p));
                fs::remove_dir_all(&dir).map_err(StoreError::io(&dir))?;
            }
            report.index_partitions_dropped = partitions.len();
        }
        // Journal: closed files whose every trace is in a dropped partition,
        // already in a durable segment and read by every journal consumer.
        let durable = self.inner.durable_seq.load(Ordering::Acquire);
        let mut files = self.inner.journal_files.lock();
        let consumed_by_all = self.feed.consumed_by_all();
        let newest = files.keys().next_back().copied();
        let mut expired = Vec::new();
        for (id, f) in files.iter() {
            if Some(*id) == newest
                || f.last_seq > durable
                || (f.max_time != i64::MIN && f.max_time.div_euclid(pm) * pm + pm > cutoff_ms)
            {
                continue;
            }
            if f.last_seq > consumed_by_all {
                report.journal_segments_held += 1;
            } else {
                expired.push(*id);
            }
        }
        for id in expired {
            let path = self.inner.journal_dir.join(journal::file_name(id));
            fs::remove_file(&path).map_err(StoreError::io(&path))?;
            match fs::remove_file(sidecar_path(&path)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StoreError::io(sidecar_path(&path))(e))
                }
                _ => {}
            }
            files.remove(&id);
            self.inner.readers.write().remove(&id);
            report.journal_segments_dropped += 1;
        }
        let min_dict = files.values().map(|f| f.min_dict).min().unwrap_or(u32::MAX);
        drop(files);
        self.inner.dicts.retain(min_dict)?;
        Ok(report)
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
            indexed_traces: active
                + idx.frozen.iter().map(|m| m.len() as u64).sum::<u64>()
                + idx.segments.iter().map(|s| s.docs() as u64).sum::<u64>(),
            journal_seq: self.inner.last_seq.load(Ordering::Acquire),
            index_durable_seq: self.inner.durable_seq.load(Ordering::Acquire),
        }
    }
}

fn rel(base: &Path, path: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn sidecar_path(journal_file: &Path) -> PathBuf {
    journal_file.with_extension("meta")
}

/// The summary of a closed journal file, if present and still matching the
/// file's length (anything else means: scan the file).
fn read_sidecar(journal_file: &Path) -> Option<JournalFile> {
    let info: JournalFile =
        serde_json::from_slice(&fs::read(sidecar_path(journal_file)).ok()?).ok()?;
    let len = fs::metadata(journal_file).ok()?.len();
    (info.len == len).then_some(info)
}

/// Best effort: without it the next start scans the file instead.
fn write_sidecar(journal_file: &Path, info: &JournalFile) {
    let path = sidecar_path(journal_file);
    let tmp = path.with_extension("meta.tmp");
    let body = serde_json::to_vec(info).expect("journal file info serializes");
    if let Err(e) = fs::write(&tmp, body).and_then(|_| fs::rename(&tmp, &path)) {
        tracing::warn!(file = %path.display(), error = %e, "could not write a journal summary; the next start scans the file");
    }
}

fn load_manifest(index_dir: &Path) -> Result<Manifest, StoreError> {
    let path = index_dir.join(MANIFEST);
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt {
            what: "index manifest",
            path,
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest {
            next_flush_id: 1,
            ..Manifest::default()
        }),
        Err(e) => Err(StoreError::Io { path, source: e }),
    }
}

fn store_manifest(index_dir: &Path, m: &Manifest, fsync: bool) -> Result<(), StoreError> {
    let path = index_dir.join(MANIFEST);
    let tmp = index_dir.join("MANIFEST.tmp");
    let body = serde_json::to_vec(m).expect("manifest serializes");
    {
        use std::io::Write;
        let mut f = File::create(&tmp).map_err(StoreError::io(&tmp))?;
        f.write_all(&body).map_err(StoreError::io(&tmp))?;
        if fsync {
            f.sync_all().map_err(StoreError::io(&tmp))?;
        }
    }
    fs::rename(&tmp, &path).map_err(StoreError::io(&path))?;
    if fsync {
        journal::sync_dir(index_dir)?;
    }
    Ok(())
}

/// Opens the manifest's segments and removes files a crash left behind.
fn open_segments(index_dir: &Path, m: &Manifest) -> Result<Vec<Arc<Segment>>, StoreError> {
    let listed: HashSet<&str> = m.segments.iter().map(String::as_str).collect();
    for entry in fs::read_dir(index_dir).map_err(StoreError::io(index_dir))? {
        let entry = entry.map_err(StoreError::io(index_dir))?;
        if !entry.path().is_dir() {
            continue;
        }
        let mut kept = 0;
        for f in fs::read_dir(entry.path()).map_err(StoreError::io(entry.path()))? {
            let f = f.map_err(StoreError::io(entry.path()))?;
            if listed.contains(rel(index_dir, &f.path()).as_str()) {
                kept += 1;
            } else {
                fs::remove_file(f.path()).map_err(StoreError::io(f.path()))?;
            }
        }
        if kept == 0 {
            fs::remove_dir(entry.path()).map_err(StoreError::io(entry.path()))?;
        }
    }
    m.segments
        .iter()
        .map(|s| Segment::open(&index_dir.join(s)).map(Arc::new))
        .collect()
}

fn writer_loop(inner: Arc<Inner>, mut file: ActiveFile, rx: Receiver<WriteRequest>) {
    let mut buf = Vec::with_capacity(8 << 20);
    // A journal file is closed once it is a partition old, so that retention
    // can drop it on a quiet server too; an idle writer wakes up to do so.
    let max_age = Duration::from_millis(inner.config.partition_ms.max(1) as u64);
    let tick = max_age.clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        let group = match rx.recv_timeout(tick) {
            Ok(first) => {
                let mut group = vec![first];
                let mut bytes: usize = group[0].batch.frames.iter().map(Vec::len).sum();
                while bytes < (16 << 20) {
                    match rx.try_recv() {
                        Ok(r) => {
                            bytes += r.batch.frames.iter().map(Vec::len).sum::<usize>();
                            group.push(r);
                        }
                        Err(_) => break,
                    }
                }
                group
            }
            Err(RecvTimeoutError::Timeout) => Vec::new(),
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let full = file.len >= inner.config.journal_segment_bytes;
        let old = file.len > 0 && file.age() >= max_age;
        if full || old {
            if let Err(e) = rotate(&inner, &mut file, old) {
                tracing::error!(error = %e, "could not start a new journal file");
                fail_all(group, &e);
                continue;
            }
        }
        if !group.is_empty() {
            write_group(&inner, &mut file, &mut buf, group);
        }
    }
}

/// Closes the active journal file (with its summary) and starts the next.
/// A file closed for its age also sends the memtable to be flushed: its
/// traces become durable in the index, so that the file can expire.
fn rotate(inner: &Inner, file: &mut ActiveFile, flush: bool) -> Result<(), StoreError> {
    if let Some(info) = inner.journal_files.lock().get(&file.id) {
        write_sidecar(&file.path, info);
    }
    let next = ActiveFile::create(&inner.journal_dir, file.id + 1, inner.config.fsync)?;
    inner
        .journal_files
        .lock()
        .insert(next.id, JournalFile::empty(0));
    *file = next;
    // Let the next file start with a dictionary of recent traces.
    inner.dicts.request_new();
    if flush {
        freeze_active(inner, &mut inner.active.write());
    }
    Ok(())
}

/// Hands the memtable, if it holds anything, to the flusher.
fn freeze_active(inner: &Inner, active: &mut Memtable) {
    if active.len() == 0 {
        return;
    }
    let full = Arc::new(std::mem::take(active));
    inner.index.write().frozen.push(full.clone());
    if let Some(tx) = inner.flush_tx.lock().as_ref() {
        let _ = tx.send(full);
    }
}

fn fail_all(group: Vec<WriteRequest>, e: &StoreError) {
    for r in group {
        let _ = r.reply.send(Err(StoreError::Unavailable(e.to_string())));
    }
}

fn write_group(
    inner: &Inner,
    file: &mut ActiveFile,
    buf: &mut Vec<u8>,
    mut group: Vec<WriteRequest>,
) {
    // A concurrent request may have recorded the same supplied id since the
    // caller checked (and it may already sit in a frozen memtable or a
    // segment); the writer is the one place that sees both.
    let mut seen: HashSet<(String, [u8; 16])> = HashSet::new();
    for r in group.iter_mut() {
        if !r.docs.iter().any(|d| d.supplied) {
            continue;
        }
        let before = r.docs.len();
        r.docs.retain(|d| {
            let v = &d.values;
            // A failed lookup keeps the trace: storing a retry twice is
            // better than losing it.
            !d.supplied
                || (!matches!(inner.find(v.project(), &v.id, Some(v.time)), Ok(Some(_)))
                    && seen.insert((v.project().to_string(), v.id)))
        });
        if r.docs.len() != before {
            r.duplicates += before - r.docs.len();
            match encode(&inner.dicts, &r.docs) {
                Ok(b) => r.batch = b,
                Err(e) => {
                    r.docs.clear();
                    let _ = r.reply.send(Err(e));
                }
            }
        }
    }
    buf.clear();
    let mut seq = inner.last_seq.load(Ordering::Acquire);
    let mut placed = Vec::with_capacity(group.len());
    let mut max_time = i64::MIN;
    let mut min_dict = u32::MAX;
    for r in &group {
        if r.docs.is_empty() {
            placed.push((seq + 1, Vec::new()));
            continue;
        }
        let refs = file.encode_record(buf, seq + 1, &r.batch);
        placed.push((seq + 1, refs));
        seq += r.docs.len() as u64;
        max_time = max_time.max(r.batch.max_time);
        min_dict = min_dict.min(r.batch.dict);
    }
    let old_len = file.len;
    if let Err(e) = file.write_durable(buf, inner.config.fsync) {
        tracing::error!(error = %e, "journal write failed; the batch is refused");
        // Cut the partial record so later records stay readable.
        if let Err(e2) = std::fs::OpenOptions::new()
            .write(true)
            .open(&file.path)
            .and_then(|f| f.set_len(old_len))
        {
            tracing::error!(error = %e2, "could not cut a failed journal write");
        }
        file.len = old_len;
        fail_all(group, &e);
        return;
    }
    {
        // The length and the sequence number are published together: a
        // journal reader's snapshot covers exactly the acknowledged records.
        let mut files = inner.journal_files.lock();
        if let Some(info) = files.get_mut(&file.id) {
            info.len = file.len;
            info.last_seq = info.last_seq.max(seq);
            info.max_time = info.max_time.max(max_time);
            info.min_dict = info.min_dict.min(min_dict);
        }
        inner.last_seq.store(seq, Ordering::Release);
    }
    {
        let mut active = inner.active.write();
        for (r, (first_seq, refs)) in group.iter().zip(&placed) {
            for (i, d) in r.docs.iter().enumerate() {
                active.insert(
                    &d.values,
                    refs[i / FRAME_DOCS],
                    (i % FRAME_DOCS) as u8,
                    first_seq + i as u64,
                );
            }
        }
        if active.len() >= inner.config.memtable_max_traces {
            freeze_active(inner, &mut active);
        }
    }
    for r in group {
        let outcome = AppendOutcome {
            stored: r.docs.len(),
            duplicates: r.duplicates,
        };
        let spent = Spent {
            _docs: r.docs,
            _batch: r.batch,
        };
        let _ = r.reply.send(Ok((outcome, spent)));
    }
}

fn flusher_loop(inner: Arc<Inner>, rx: Receiver<Arc<Memtable>>) {
    while let Ok(mem) = rx.recv() {
        // A failed flush (disk full, say) is retried: the memtable stays
        // queryable and the journal still holds every trace.
        let mut delay = Duration::from_millis(100);
        while let Err(e) = flush(&inner, &mem) {
            tracing::error!(error = %e, "writing an index segment failed; retrying");
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

fn flush(inner: &Inner, mem: &Arc<Memtable>) -> Result<(), StoreError> {
    let pm = inner.config.partition_ms;
    let mut by_partition: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (i, d) in mem.docs.iter().enumerate() {
        by_partition
            .entry(d.time.div_euclid(pm) * pm)
            .or_default()
            .push(i as u32);
    }
    let flush_id = inner.manifest.lock().next_flush_id;
    let mut opened = Vec::new();
    for (partition, members) in &by_partition {
        let path = segment::write(
            &inner.index_dir,
            *partition,
            flush_id,
            mem,
            members,
            inner.config.fsync,
        )?;
        opened.push(Arc::new(Segment::open(&path)?));
    }
    {
        let mut m = inner.manifest.lock();
        let mut next = m.clone();
        next.next_flush_id = flush_id + 1;
        next.durable_seq = next.durable_seq.max(mem.max_seq);
        next.segments
            .extend(opened.iter().map(|s| rel(&inner.index_dir, &s.path)));
        store_manifest(&inner.index_dir, &next, inner.config.fsync)?;
        *m = next;
    }
    {
        let mut idx = inner.index.write();
        idx.segments.extend(opened);
        idx.frozen.retain(|f| !Arc::ptr_eq(f, mem));
    }
    inner.durable_seq.fetch_max(mem.max_seq, Ordering::AcqRel);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_frames_are_read_as_one_range() {
        let f = |file, offset, len| FrameRef { file, offset, len };
        let spans = coalesce(
            &[
                f(1, 0, 100),
                f(1, 150, 50),
                f(1, 100_000, 10),
                f(2, 120, 10),
            ],
            1000,
        );
        assert_eq!(spans, vec![f(1, 0, 200), f(1, 100_000, 10), f(2, 120, 10)]);
    }
}
