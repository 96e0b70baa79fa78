//! Journal consumers: acknowledged traces read by sequence number, and the
//! holds that keep retention away from journal files a consumer has not read.
//!
//! A read works on a snapshot of the journal files' acknowledged lengths
//! (`JournalFile::len` only ever covers fsync'd records, and is published
//! together with the last sequence number), so it never sees a record that
//! is being written, nor a torn tail. Where each batch ended is remembered
//! per cursor, so a polling consumer reads only the bytes appended since.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{EmbeddedStore, JournalFile};
use crate::journal::{self, RECORD_PREFIX};
use crate::{JournalBatch, JournalEntry, StoreError};

/// Cursors whose position is remembered: a few consumers, each polling.
const POSITIONS: usize = 32;
/// Reads of a file go in pieces of up to `MAX_AHEAD`. A batch reads about
/// what its `max` traces take (from the bytes per trace seen so far, and at
/// most `FIRST_AHEAD` before it has seen any), so a batch cut at `max`
/// leaves little read for nothing; the header walk that finds an unknown
/// cursor doubles its pieces from `FIRST_AHEAD`.
const FIRST_AHEAD: usize = 64 << 10;
const MAX_AHEAD: usize = 8 << 20;
const MIN_AHEAD: usize = 4 << 10;
/// Bytes per trace assumed before any was read (compressed traces of ~1 KB).
const BYTES_PER_TRACE: u64 = 256;
/// A read that finds one of its files removed by retention starts over on
/// a new snapshot; retention passes are rare, so this is never reached.
const ATTEMPTS: usize = 8;

/// A place in the journal: the record at `offset` of `file` holds the trace
/// after the cursor, or `offset` is the end of the file's acknowledged
/// bytes and that trace will be the next one written after it (there, or at
/// the start of the next file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    file: u32,
    offset: u64,
}

#[derive(Default)]
pub(super) struct Feed {
    /// (cursor, where the trace after it is), most recent last.
    positions: Mutex<VecDeque<(u64, Pos)>>,
    /// consumer → the last sequence number it has consumed.
    holds: Mutex<HashMap<String, u64>>,
    /// Journal bytes read so far, to check that polling reads only new ones.
    read_bytes: AtomicU64,
    /// Journal bytes per trace of the last batch (0: none read yet).
    bytes_per_trace: AtomicU64,
}

impl Feed {
    pub(super) fn hold(&self, consumer: &str, seq: u64) {
        self.holds.lock().insert(consumer.to_string(), seq);
    }

    pub(super) fn release(&self, consumer: &str) {
        self.holds.lock().remove(consumer);
    }

    /// The sequence number up to which every consumer has consumed the
    /// journal (`u64::MAX` when there is no consumer).
    pub(super) fn consumed_by_all(&self) -> u64 {
        self.holds
            .lock()
            .values()
            .copied()
            .min()
            .unwrap_or(u64::MAX)
    }

    fn position(&self, after_seq: u64) -> Option<Pos> {
        self.positions
            .lock()
            .iter()
            .rev()
            .find(|(seq, _)| *seq == after_seq)
            .map(|(_, pos)| *pos)
    }

    fn remember(&self, after_seq: u64, pos: Pos) {
        let mut positions = self.positions.lock();
        positions.retain(|(seq, _)| *seq != after_seq);
        positions.push_back((after_seq, pos));
        if positions.len() > POSITIONS {
            positions.pop_front();
        }
    }
}

/// The acknowledged part of the journal at one moment.
struct Snapshot {
    /// Journal files, oldest first, with their acknowledged length.
    files: Vec<(u32, JournalFile)>,
    durable_seq: u64,
}

/// A file vanished under a read (retention removed it): start over.
struct Vanished;

enum Failure {
    Store(StoreError),
    Vanished,
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<Vanished> for Failure {
    fn from(_: Vanished) -> Self {
        Failure::Vanished
    }
}

/// Reads of one file's acknowledged bytes, front to back, in growing pieces.
struct Window<'a> {
    file: &'a File,
    path: &'a Path,
    read_bytes: &'a AtomicU64,
    /// Acknowledged length: nothing past it is read.
    end: u64,
    start: u64,
    buf: Vec<u8>,
    ahead: usize,
}

impl<'a> Window<'a> {
    fn new(file: &'a File, path: &'a Path, end: u64, read_bytes: &'a AtomicU64) -> Self {
        Window {
            file,
            path,
            read_bytes,
            end,
            start: 0,
            buf: Vec::new(),
            ahead: FIRST_AHEAD,
        }
    }

    /// The size of the following reads (each doubles it, up to `MAX_AHEAD`).
    fn set_ahead(&mut self, ahead: usize) {
        self.ahead = ahead.clamp(MIN_AHEAD, MAX_AHEAD);
    }

    /// The bytes `offset..offset + len`.
    fn bytes(&mut self, offset: u64, len: u64) -> Result<&[u8], StoreError> {
        if offset + len > self.end {
            return Err(corrupt(
                self.path,
                offset,
                "a record runs past the acknowledged end of the file",
            ));
        }
        let held = self.start + self.buf.len() as u64;
        if offset < self.start || offset + len > held {
            let want = (len as usize)
                .max(self.ahead)
                .min((self.end - offset) as usize);
            self.buf.resize(want, 0);
            self.file
                .read_exact_at(&mut self.buf, offset)
                .map_err(StoreError::io(self.path))?;
            self.read_bytes.fetch_add(want as u64, Ordering::Relaxed);
            self.start = offset;
            self.ahead = (self.ahead * 2).min(MAX_AHEAD);
        }
        let at = (offset - self.start) as usize;
        Ok(&self.buf[at..at + len as usize])
    }
}

fn corrupt(path: &Path, offset: u64, detail: &str) -> StoreError {
    StoreError::Corrupt {
        what: "journal record",
        path: path.to_path_buf(),
        detail: format!("at byte {offset}: {detail}"),
    }
}

impl EmbeddedStore {
    pub(super) fn read_journal_batch(
        &self,
        after_seq: u64,
        max: usize,
    ) -> Result<JournalBatch, StoreError> {
        for _ in 0..ATTEMPTS {
            match self.try_read_journal(after_seq, max) {
                Ok(batch) => return Ok(batch),
                Err(Failure::Store(e)) => return Err(e),
                Err(Failure::Vanished) => continue,
            }
        }
        Err(StoreError::Unavailable(
            "journal files kept vanishing under a journal read".into(),
        ))
    }

    fn journal_snapshot(&self) -> Snapshot {
        let files = self.inner.journal_files.lock();
        Snapshot {
            files: files.iter().map(|(id, f)| (*id, *f)).collect(),
            // The writer publishes it under the same lock as the lengths.
            durable_seq: self.inner.last_seq.load(Ordering::Acquire),
        }
    }

    fn journal_file(&self, id: u32) -> Result<(Arc<File>, PathBuf), Vanished> {
        let file = self.reader(id).ok_or(Vanished)?;
        Ok((file, self.inner.journal_dir.join(journal::file_name(id))))
    }

    fn try_read_journal(&self, after_seq: u64, max: usize) -> Result<JournalBatch, Failure> {
        let snap = self.journal_snapshot();
        if after_seq > snap.durable_seq {
            return Err(StoreError::CursorAhead {
                after_seq,
                durable_seq: snap.durable_seq,
            }
            .into());
        }
        let mut batch = JournalBatch {
            entries: Vec::new(),
            durable_seq: snap.durable_seq,
        };
        if max == 0 || after_seq == snap.durable_seq {
            return Ok(batch);
        }
        let cached = self
            .feed
            .position(after_seq)
            .filter(|p| snap.files.iter().any(|(id, _)| *id == p.file));
        let start = match cached {
            Some(pos) => pos,
            None => self.locate(&snap, after_seq)?,
        };
        let end = self.read_from(&snap, start, after_seq, max, &mut batch.entries)?;
        let last = batch.entries.last().map_or(after_seq, |e| e.seq);
        self.feed.remember(last, end);
        Ok(batch)
    }

    /// Finds the record holding the trace after `after_seq`: the first file
    /// that holds a later trace, walked record header by record header.
    fn locate(&self, snap: &Snapshot, after_seq: u64) -> Result<Pos, Failure> {
        let Some(&(id, info)) = snap
            .files
            .iter()
            .find(|(_, f)| f.len > 0 && f.last_seq > after_seq)
        else {
            // Acknowledged traces after the cursor, and no file holds any.
            return Err(StoreError::JournalGone {
                after_seq,
                oldest_seq: snap.durable_seq + 1,
            }
            .into());
        };
        let (file, path) = self.journal_file(id)?;
        let mut window = Window::new(&file, &path, info.len, &self.feed.read_bytes);
        let mut offset = 0;
        while offset < info.len {
            let head = journal::parse_head(window.bytes(offset, RECORD_PREFIX as u64)?)
                .ok_or_else(|| corrupt(&path, offset, "not a record header"))?;
            if head.first_seq + head.count as u64 > after_seq {
                break;
            }
            offset += head.len;
        }
        Ok(Pos { file: id, offset })
    }

    /// Appends the traces after `after_seq` from `pos` on to `out`, up to
    /// `max` of them; returns the position of the trace after the last one.
    fn read_from(
        &self,
        snap: &Snapshot,
        mut pos: Pos,
        after_seq: u64,
        max: usize,
        out: &mut Vec<JournalEntry>,
    ) -> Result<Pos, Failure> {
        let dicts = &self.inner.dicts;
        let mut at = snap
            .files
            .iter()
            .position(|(id, _)| *id == pos.file)
            .expect("the position's file is in the snapshot");
        // The sequence number wanted next.
        let mut next = after_seq + 1;
        let (mut seen_bytes, mut seen_traces) = (0u64, 0u64);
        let mut per_trace = match self.feed.bytes_per_trace.load(Ordering::Relaxed) {
            0 => BYTES_PER_TRACE,
            n => n,
        };
        'files: while out.len() < max {
            let (id, info) = snap.files[at];
            if pos.offset >= info.len {
                // Only a file that is no longer written has a successor.
                if at + 1 == snap.files.len() {
                    break;
                }
                at += 1;
                pos = Pos {
                    file: snap.files[at].0,
                    offset: 0,
                };
                continue;
            }
            let (file, path) = self.journal_file(id)?;
            let mut window = Window::new(&file, &path, info.len, &self.feed.read_bytes);
            while pos.offset < info.len && out.len() < max {
                // About what the traces still wanted take: reading short
                // costs another read, reading long reads bytes for nothing.
                let wanted = (max - out.len()) as u64;
                let mut ahead = wanted.saturating_mul(per_trace) as usize + MIN_AHEAD;
                if seen_traces == 0 {
                    ahead = ahead.min(FIRST_AHEAD);
                }
                window.set_ahead(ahead);
                let head = journal::parse_head(window.bytes(pos.offset, RECORD_PREFIX as u64)?)
                    .ok_or_else(|| corrupt(&path, pos.offset, "not a record header"))?;
                if head.first_seq > next {
                    // Sequence numbers have no gaps: retention removed
                    // these. Hand out what came before; the next call says so.
                    if out.is_empty() {
                        return Err(StoreError::JournalGone {
                            after_seq,
                            oldest_seq: head.first_seq,
                        }
                        .into());
                    }
                    break 'files;
                }
                let (head, frames) = journal::parse_record(window.bytes(pos.offset, head.len)?)
                    .ok_or_else(|| corrupt(&path, pos.offset, "checksum mismatch"))?;
                seen_bytes += head.len;
                seen_traces += head.count as u64;
                per_trace = (seen_bytes / seen_traces.max(1)).max(1);
                let mut seq = head.first_seq;
                for (_, frame, ndocs) in journal::body_frames(frames) {
                    if seq + ndocs as u64 <= next {
                        // Read by an earlier batch: not even decompressed.
                        seq += ndocs as u64;
                        continue;
                    }
                    if out.len() == max {
                        break;
                    }
                    journal::with_frame_bytes(dicts, &path, frame, |raw| {
                        for doc in journal::split_frame(raw) {
                            if seq >= next && out.len() < max {
                                out.push(JournalEntry {
                                    seq,
                                    doc: doc.to_vec(),
                                });
                                next = seq + 1;
                            }
                            seq += 1;
                        }
                    })?;
                }
                if next < head.first_seq + head.count as u64 {
                    if out.len() == max {
                        // Cut at `max`: the next batch continues in this record.
                        break 'files;
                    }
                    return Err(corrupt(
                        &path,
                        pos.offset,
                        "the record holds fewer traces than its header says",
                    )
                    .into());
                }
                pos.offset += head.len;
            }
        }
        if seen_traces > 0 {
            self.feed
                .bytes_per_trace
                .store(per_trace, Ordering::Relaxed);
        }
        Ok(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StoreConfig, TraceStore};
    use cts_model::{ReportContext, Trace};

    fn traces(n: usize) -> Vec<Trace> {
        let now = super::super::now_ms();
        let items: Vec<_> = (0..n)
            .map(|i| {
                serde_json::json!({
                    "time": now - 60_000 + i as i64, "service_type": "ECS",
                    "resource_type": "res", "trace_name": "doThing",
                    "trace_type": "ApiCall", "code": "200",
                    "user": {"id": "u", "name": "bob", "domain": {"id": "d", "name": "dn"}},
                })
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "traces": items })).unwrap();
        let ctx = ReportContext {
            project_id: "p",
            now_ms: now,
            oldest_time_ms: now - 24 * 3_600_000,
            newest_time_ms: now + 3_600_000,
            max_traces: 100_000,
        };
        cts_model::parse_report(&body, &ctx)
            .unwrap()
            .into_iter()
            .map(cts_model::Trace::into_owned)
            .collect()
    }

    #[test]
    fn polling_reads_only_the_new_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(dir.path());
        cfg.fsync = false;
        let store = EmbeddedStore::open(cfg).unwrap();
        for _ in 0..20 {
            store.append(traces(500)).unwrap();
        }
        let read_bytes = || store.feed.read_bytes.load(Ordering::Relaxed);
        let mut cursor = 0;
        loop {
            let batch = store.read_journal(cursor, 1000).unwrap();
            let Some(last) = batch.entries.last() else {
                break;
            };
            cursor = last.seq;
        }
        assert_eq!(cursor, 10_000);
        let journal = store.stats().journal_bytes;
        // Batches of 1,000 traces end inside a read of about 1,000 traces'
        // bytes: what is read past a batch's end is little.
        assert!(
            read_bytes() < journal + journal / 5,
            "{} bytes read for a journal of {journal}",
            read_bytes()
        );

        // Caught up: nothing is read.
        let before = read_bytes();
        assert!(store.read_journal(cursor, 1000).unwrap().entries.is_empty());
        assert_eq!(read_bytes(), before);

        // New traces: exactly their record is read.
        store.append(traces(3)).unwrap();
        let grown = store.stats().journal_bytes - journal;
        let batch = store.read_journal(cursor, 1000).unwrap();
        assert_eq!(batch.entries.len(), 3);
        assert_eq!(read_bytes() - before, grown);

        // A batch cut inside a record rereads only that record.
        let before = read_bytes();
        let a = store.read_journal(cursor, 2).unwrap();
        let b = store.read_journal(a.entries[1].seq, 2).unwrap();
        assert_eq!(b.entries.len(), 1);
        assert_eq!(read_bytes() - before, 2 * grown);

        // An unknown cursor (a restart) walks record headers from the start
        // of its file, once.
        let before = read_bytes();
        let c = store.read_journal(5_250, 10).unwrap();
        assert_eq!(c.entries[0].seq, 5_251);
        let walked = read_bytes() - before;
        assert!(walked <= journal, "{walked} of {journal}");
        let before = read_bytes();
        store.read_journal(5_260, 10).unwrap();
        assert!(read_bytes() - before < walked);
    }
}
