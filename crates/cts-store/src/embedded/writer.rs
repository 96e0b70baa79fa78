//! The journal writer thread: group commit of appends, rotation of journal
//! files, and the memtable fed with what was acknowledged.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use super::files::write_sidecar;
use super::{Inner, JournalFile};
use crate::dict::Dictionaries;
use crate::journal::{self, ActiveFile, EncodedBatch, FRAME_DOCS};
use crate::memtable::Memtable;
use crate::{AppendOutcome, PreparedTrace, StoreError};

pub(super) struct WriteRequest {
    pub(super) docs: Vec<PreparedTrace>,
    pub(super) batch: EncodedBatch,
    pub(super) duplicates: usize,
    pub(super) reply: SyncSender<Result<(AppendOutcome, Spent), StoreError>>,
}

/// The buffers of a written request, handed back so that the caller's
/// thread, not the single writer thread, pays for freeing them.
pub(super) struct Spent {
    _docs: Vec<PreparedTrace>,
    _batch: EncodedBatch,
}

pub(super) fn encode(
    dicts: &Arc<Dictionaries>,
    docs: &[PreparedTrace],
) -> Result<EncodedBatch, StoreError> {
    journal::encode_frames(
        dicts,
        docs.iter().map(|d| (d.json.as_slice(), d.values.time)),
    )
}

pub(super) fn writer_loop(inner: Arc<Inner>, mut file: ActiveFile, rx: Receiver<WriteRequest>) {
    let mut buf = Vec::with_capacity(8 << 20);
    // A journal file is closed once it is a partition old, so that retention
    // can drop it on a quiet server too; an idle writer wakes up to do so.
    let max_age = Duration::from_millis(inner.config.partition_ms.max(1) as u64);
    let tick = max_age.clamp(Duration::from_millis(100), Duration::from_secs(60));
    // A write or fsync failed and the file could not be left yet (see
    // `abandon`): the next group first tries again.
    let mut stuck: Option<u64> = None;
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
        if let Some(valid_len) = stuck {
            match abandon(&inner, &mut file, valid_len) {
                Ok(()) => stuck = None,
                Err(e) => {
                    fail_all(group, &e);
                    continue;
                }
            }
        }
        let bytes: u64 = group
            .iter()
            .flat_map(|r| &r.batch.frames)
            .map(|f| f.len() as u64)
            .sum();
        let full = file.len > 0 && file.len + bytes > inner.config.journal_segment_bytes;
        let old = file.len > 0 && file.age() >= max_age;
        if full || old {
            if let Err(e) = rotate(&inner, &mut file, old) {
                tracing::error!(error = %e, "could not start a new journal file");
                fail_all(group, &e);
                continue;
            }
        }
        if !group.is_empty() {
            if let Err(valid_len) = write_group(&inner, &mut file, &mut buf, group) {
                if let Err(e) = abandon(&inner, &mut file, valid_len) {
                    tracing::error!(error = %e, "could not leave a journal file after a failed write; writes fail until it can");
                    stuck = Some(valid_len);
                }
            }
        }
    }
}

/// Closes the active journal file (with its summary) and starts the next.
/// A file closed for its age also sends the memtable to be flushed: its
/// traces become durable in the index, so that the file can expire.
pub(super) fn rotate(inner: &Inner, file: &mut ActiveFile, flush: bool) -> Result<(), StoreError> {
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
        freeze_active(inner);
    }
    Ok(())
}

/// Leaves a file whose write or fsync failed. After a failed fsync the
/// kernel may have dropped the written pages and forgotten the error
/// (PostgreSQL's "fsyncgate"), so the file is never written again: what
/// the failed write left after the acknowledged `valid_len` bytes is cut
/// off (it was never acknowledged), and the writer goes on in a new file.
fn abandon(inner: &Inner, file: &mut ActiveFile, valid_len: u64) -> Result<(), StoreError> {
    journal::cut(&file.path, valid_len)?;
    rotate(inner, file, false)
}

/// Hands the memtable, if it holds anything, to the flusher.
pub(super) fn freeze_active(inner: &Inner) {
    freeze_active_then(inner, |full| {
        if let Some(tx) = inner.flush_tx.lock().as_ref() {
            let _ = tx.send(full);
        }
    });
}

/// Freezes the memtable, if it holds anything: queryable among the frozen
/// ones, then handed to `flush`.
pub(super) fn freeze_active_then(inner: &Inner, flush: impl FnOnce(Arc<Memtable>)) {
    inner.active.freeze(|full| {
        let full = Arc::new(full);
        inner.index.write().frozen.push(full.clone());
        flush(full);
    });
}

pub(super) fn fail_all(group: Vec<WriteRequest>, e: &StoreError) {
    for r in group {
        let _ = r.reply.send(Err(StoreError::Unavailable(e.to_string())));
    }
}

/// Writes a group of requests as one durable write and answers them. On a
/// failed write or fsync, answers them with the error and returns the
/// file's acknowledged length: the caller must leave the file.
pub(super) fn write_group(
    inner: &Inner,
    file: &mut ActiveFile,
    buf: &mut Vec<u8>,
    mut group: Vec<WriteRequest>,
) -> Result<(), u64> {
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
    if let Err(e) = file.write_durable(buf, inner.config.fsync) {
        tracing::error!(error = %e, "journal write failed; the batch is refused and the writer moves to a new file");
        fail_all(group, &e);
        return Err(file.len);
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
    let held = inner.active.insert(|active| {
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
    });
    if held >= inner.config.memtable_max_traces {
        freeze_active(inner);
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
    Ok(())
}
