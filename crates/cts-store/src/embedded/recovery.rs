//! Opening the store: the directory lock, the journal scan and tail repair,
//! and the replay of what the index has not made durable yet.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc;
use std::sync::Arc;

use cts_model::IndexedFields;
use parking_lot::{Mutex, RwLock};

use super::files::{load_manifest, open_segments, read_sidecar, write_sidecar};
use super::flusher::flusher_loop;
use super::merger::{merger_loop, Merger};
use super::query::MarkerCache;
use super::writer::{freeze_active_then, writer_loop, WriteRequest};
use super::{feed, salvage, EmbeddedStore, IndexState, Inner, JournalFile, OnDamage, StoreConfig};
use crate::dict::Dictionaries;
use crate::journal::{self, ActiveFile};
use crate::memtable::{IndexValues, Memtable};
use crate::segment::SummaryCache;
use crate::{StoreError, TraceStore};

/// Name of the lock file in the store's directory.
const LOCK_FILE: &str = "store.lock";

/// Creates the directory and takes its exclusive lock: a second writer (a
/// second server, or `reindex` beside a running one) would interleave
/// journal records and delete index files under the first. The lock is the
/// kernel's (`flock`), so it goes with the process, even after `kill -9`.
pub(super) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    cts_fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    let path = dir.join(LOCK_FILE);
    let file = cts_fs::options()
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

/// Starts one of the store's threads.
fn spawn(
    name: &str,
    run: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(run)
        .map_err(StoreError::io("<thread>"))
}

/// The open store around `inner`: with its journal writer and threads, or
/// (read-only) none.
fn assemble(
    inner: Arc<Inner>,
    writer_tx: Option<mpsc::SyncSender<WriteRequest>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    lock: File,
) -> EmbeddedStore {
    EmbeddedStore {
        inner,
        writer_tx: Mutex::new(writer_tx),
        threads: Mutex::new(threads),
        markers: Mutex::new(MarkerCache::default()),
        feed: feed::Feed::default(),
        _lock: lock,
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store: repairs the journal tail, loads the index
    /// and replays the journal past the index's durable position.
    pub fn open(config: StoreConfig) -> Result<EmbeddedStore, StoreError> {
        let lock = lock_dir(&config.dir)?;
        EmbeddedStore::open_locked(config, lock)
    }

    pub(super) fn open_locked(
        config: StoreConfig,
        lock: File,
    ) -> Result<EmbeddedStore, StoreError> {
        if config.max_segments_per_partition < 2 {
            return Err(StoreError::Setting(format!(
                "max_segments_per_partition {} is below 2",
                config.max_segments_per_partition
            )));
        }
        if config.journal_segment_bytes > journal::MAX_FILE_BYTES {
            return Err(StoreError::Setting(format!(
                "journal_segment_bytes {} is above the largest journal file, {} bytes",
                config.journal_segment_bytes,
                journal::MAX_FILE_BYTES
            )));
        }
        let journal_dir = config.dir.join("journal");
        let index_dir = config.dir.join("index");
        for d in [&journal_dir, &index_dir] {
            cts_fs::create_dir_all(d).map_err(StoreError::io(d))?;
        }
        let manifest = load_manifest(&index_dir)?;
        let summary_cache = SummaryCache::new(config.index_cache_bytes);
        let segments = open_segments(&index_dir, &manifest, &summary_cache)?;

        let dicts = Dictionaries::open(&journal_dir, config.fsync)?;
        let files = journal::list_files(&journal_dir)?;
        let mut journal_files = BTreeMap::new();
        // Summaries are written once the scan is through, and only by a
        // store that takes writes.
        let mut summaries = Vec::new();
        let mut damaged = Vec::new();
        let mut last_seq = 0;
        let mut replay = Vec::new();
        let mut tail = None;
        let mut torn_closed = Vec::new();
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
            let mut records = scan.records;
            let mut len = scan.valid_len;
            match scan.tail {
                journal::Tail::Clean => {}
                journal::Tail::Torn => {
                    tracing::warn!(
                        file = %path.display(),
                        at = scan.valid_len,
                        cut_bytes = scan.file_len - scan.valid_len,
                        "journal tail was torn by a crash; cutting it off (it was never acknowledged)"
                    );
                    if !is_last {
                        torn_closed.push((path.clone(), scan.valid_len));
                    }
                }
                journal::Tail::Corrupt { resumes } => {
                    if config.on_damage == OnDamage::Refuse {
                        return Err(journal::damage(path, scan.valid_len, resumes));
                    }
                    let salvaged = salvage::salvage(&config.dir, &dicts, *id, path, last_seq)?;
                    records = salvaged.records;
                    len = scan.file_len;
                    damaged.push(salvaged.reason);
                }
            }
            let mut info = JournalFile::empty(len);
            for r in &records {
                info.min_dict = info.min_dict.min(r.dict);
                let end = r.first_seq + r.count as u64 - 1;
                info.last_seq = info.last_seq.max(end);
                info.max_time = info.max_time.max(r.max_time);
                last_seq = last_seq.max(end);
            }
            if records
                .iter()
                .any(|r| r.first_seq + r.count as u64 - 1 > manifest.durable_seq)
            {
                replay.push((*id, path.clone(), records));
            }
            journal_files.insert(*id, info);
            if is_last {
                tail = Some((*id, path.clone(), len));
            } else {
                summaries.push((path.clone(), info));
            }
        }
        let read_only = (!damaged.is_empty()).then(|| damaged.join(" | "));

        if last_seq < manifest.durable_seq {
            // What looked like a torn tail was acknowledged: the index has it.
            return Err(StoreError::Corrupt {
                what: "journal",
                path: journal_dir,
                detail: format!(
                    "the index holds traces up to sequence number {} but the journal ends at {last_seq}: acknowledged records are missing or damaged (or the index manifest is)",
                    manifest.durable_seq
                ),
            });
        }
        if read_only.is_none() {
            for (path, info) in &summaries {
                write_sidecar(path, info);
            }
            for (path, valid_len) in torn_closed {
                journal::cut(&path, valid_len)?;
            }
        }
        let quarantined: Vec<_> = super::repair::load_list(&config.dir)?
            .into_iter()
            .filter(|q| !q.acknowledged)
            .collect();
        for q in &quarantined {
            tracing::warn!(file = %q.file, offset = q.offset, len = q.len, first_seq = q.first_seq, last_seq = q.last_seq, saved_as = %q.saved_as, "a damaged journal range is in quarantine; `ctsd repair --acknowledge` once it is dealt with");
        }
        let inner = Arc::new(Inner {
            journal_dir: journal_dir.clone(),
            dicts,
            index_dir,
            active: Default::default(),
            index: RwLock::new(IndexState {
                frozen: Vec::new(),
                segments,
                flushed_generation: 0,
            }),
            manifest: Mutex::new(manifest.clone()),
            journal_files: Mutex::new(journal_files),
            readers: Default::default(),
            summaries: summary_cache,
            frames: super::frame_cache::FrameCache::new(config.frame_cache_bytes),
            fetch_helper: super::fetch_helper::FetchHelper::start()
                .map_err(StoreError::io(&config.dir))?,
            last_seq: AtomicU64::new(last_seq),
            corrupt_reads: AtomicU64::new(0),
            quarantined,
            read_only,
            durable_seq: AtomicU64::new(manifest.durable_seq),
            flush_tx: Mutex::new(None),
            merge_tx: Mutex::new(Vec::new()),
            merging: Mutex::new(()),
            merges: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
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
                    let trace =
                        IndexedFields::from_json(&json).map_err(|e| StoreError::Corrupt {
                            what: "journaled trace",
                            path: path.clone(),
                            detail: e.to_string(),
                        })?;
                    let values = IndexValues::of(&trace);
                    let held = inner.active.insert(|m| m.insert(&values, frame, idx, seq));
                    if held >= config.memtable_max_traces {
                        freeze_active_then(&inner, |full| pending_flush.push(full));
                    }
                }
            }
            tracing::info!(file = id, "replayed journal file into the index");
        }

        if inner.read_only.is_some() {
            // No writer, flusher or merger: what was replayed stays indexed
            // in memory (a flush would move the manifest's durable position
            // past the damaged range).
            return Ok(assemble(inner, None, Vec::new(), lock));
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
            spawn("cts-flusher", move || flusher_loop(inner, flush_rx))?
        };
        // The merger looks at the partitions once at the start too: a lower
        // bound, or segments an older version wrote, are merged down.
        let mut mergers = Vec::new();
        for (name, merger) in [
            ("cts-merger", Merger::Background),
            ("cts-merger-urgent", Merger::Urgent),
        ] {
            let (merge_tx, merge_rx) = mpsc::channel::<()>();
            let _ = merge_tx.send(());
            inner.merge_tx.lock().push(merge_tx);
            let inner = inner.clone();
            mergers.push(spawn(name, move || merger_loop(inner, merge_rx, merger))?);
        }
        let writer = {
            let inner = inner.clone();
            spawn("cts-journal", move || {
                writer_loop(inner, active_file, writer_rx)
            })?
        };
        let mut threads = vec![writer, flusher];
        threads.extend(mergers);
        Ok(assemble(inner, Some(writer_tx), threads, lock))
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
}
