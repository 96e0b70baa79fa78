//! The journal: the durable, ordered source of truth.
//!
//! Files `journal/{file_id:010}.wal`, each a run of records:
//!
//! ```text
//! record  = magic u32 | body_len u32 | crc32(body) u32 | body
//! body    = first_seq u64 | count u32 | max_time i64 | frames...
//! frame   = clen u32 | ndocs u8 | dict u32 | zstd(doc...)   doc = len u32 | JSON
//! ```
//!
//! The record CRC covers a record's body; it is checked whenever a record
//! is read whole (recovery, journal consumers). A query reads single frames:
//! each zstd frame carries zstd's content checksum (a hash of its documents),
//! which zstd checks on every decompression, so a damaged frame is an error,
//! never altered documents. Frames written before the checksum existed have
//! none and are read as before.
//!
//! Traces are compressed in small frames, with a trained dictionary (see
//! `dict`), so that the index can point at a single trace and a query
//! decompresses only a few kilobytes to return it.
//! A torn tail (see [`Tail`]) is cut off on open; it was never acknowledged,
//! because acknowledgement waits for the fsync of the record. Anything else
//! that does not check out is corruption: it is never cut nor overwritten.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use zstd::zstd_safe::{CCtx, CParameter, DCtx};

use crate::dict::Dictionaries;
use crate::StoreError;

const RECORD_MAGIC: u32 = 0x4354_5352; // "CTSR"
const RECORD_HEADER: usize = 12;
const BODY_HEADER: usize = 20;
const FRAME_HEADER: usize = 9;
/// Traces per frame: with a dictionary, eight traces compress about as well
/// as hundreds without one, and a fetch decompresses only ~10 KB per trace.
/// Fewer per frame cost more CPU at ingest (zstd's per-frame tables).
pub const FRAME_DOCS: usize = 8;
pub const ZSTD_LEVEL: i32 = 1;
/// Largest `journal_segment_bytes`: a file is rotated before a group would
/// take it past this, and a group is far below 3 GiB, so every offset in a
/// file fits the 32 bits of a [`FrameRef`].
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// Upper bound of a decompressed frame (a few traces of a 5 MiB request).
const MAX_FRAME_RAW: u64 = 64 << 20;

thread_local! {
    // zstd contexts are expensive to create (hundreds of KiB to set up);
    // each thread keeps one of each.
    static CCTX: RefCell<CCtx<'static>> = RefCell::new(CCtx::create());
    static DCTX: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Where a trace lives in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameRef {
    pub file: u32,
    pub offset: u32,
    pub len: u32,
}

/// Compressed frames of one batch, ready to be placed in a record.
pub struct EncodedBatch {
    pub frames: Vec<Vec<u8>>,
    pub count: u32,
    pub max_time: i64,
    /// The dictionary the frames were compressed with (0: none).
    pub dict: u32,
}

fn zstd_err(code: usize) -> StoreError {
    StoreError::Io {
        path: PathBuf::from("<zstd>"),
        source: std::io::Error::other(zstd::zstd_safe::get_error_name(code)),
    }
}

/// Compresses documents into frames of [`FRAME_DOCS`] with the current
/// dictionary, and offers them as dictionary training samples.
pub fn encode_frames<'a>(
    dicts: &Arc<Dictionaries>,
    docs: impl Iterator<Item = (&'a [u8], i64)>,
) -> Result<EncodedBatch, StoreError> {
    let dict = dicts.current();
    let dict_id = dict.as_ref().map_or(0, |(id, _)| *id);
    let mut frames = Vec::new();
    let mut raw = Vec::with_capacity(FRAME_DOCS * 1400);
    let mut in_frame = 0usize;
    let mut count = 0u32;
    let mut max_time = i64::MIN;
    let flush = |raw: &mut Vec<u8>, n: usize, frames: &mut Vec<Vec<u8>>| {
        let mut body = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()));
        CCTX.with(|c| {
            let mut c = c.borrow_mut();
            // Parameters stick to the context; setting them is a store.
            c.set_parameter(CParameter::ChecksumFlag(true))?;
            match &dict {
                Some((_, cdict)) => {
                    c.ref_cdict(cdict)?;
                }
                None => {
                    c.disable_dictionary()?;
                    c.set_parameter(CParameter::CompressionLevel(ZSTD_LEVEL))?;
                }
            }
            c.compress2(&mut body, raw)
        })
        .map_err(zstd_err)?;
        let mut frame = Vec::with_capacity(FRAME_HEADER + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.push(n as u8);
        frame.extend_from_slice(&dict_id.to_le_bytes());
        frame.extend_from_slice(&body);
        frames.push(frame);
        raw.clear();
        Ok::<(), StoreError>(())
    };
    for (doc, time) in docs {
        dicts.sample(doc);
        raw.extend_from_slice(&(doc.len() as u32).to_le_bytes());
        raw.extend_from_slice(doc);
        in_frame += 1;
        count += 1;
        max_time = max_time.max(time);
        if in_frame == FRAME_DOCS {
            flush(&mut raw, in_frame, &mut frames)?;
            in_frame = 0;
        }
    }
    if in_frame > 0 {
        flush(&mut raw, in_frame, &mut frames)?;
    }
    Ok(EncodedBatch {
        frames,
        count,
        max_time,
        dict: dict_id,
    })
}

/// Splits a decompressed frame into its documents.
pub fn split_frame(raw: &[u8]) -> Vec<&[u8]> {
    let mut docs = Vec::with_capacity(FRAME_DOCS);
    let mut pos = 0;
    while pos + 4 <= raw.len() {
        let len = u32::from_le_bytes(raw[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 4;
        if pos + len > raw.len() {
            break;
        }
        docs.push(&raw[pos..pos + len]);
        pos += len;
    }
    docs
}

/// Reads and decompresses one frame and hands its raw bytes to `f`. The
/// buffers are reused per thread: a page of results touches many frames.
pub fn with_frame<T>(
    dicts: &Dictionaries,
    file: &File,
    path: &Path,
    frame: FrameRef,
    f: impl FnOnce(&[u8]) -> T,
) -> Result<T, StoreError> {
    SCRATCH.with(|scratch| {
        let (input, output) = &mut *scratch.borrow_mut();
        if frame.len as u64 > MAX_FRAME_RAW {
            return Err(StoreError::Corrupt {
                what: "journal frame",
                path: path.to_path_buf(),
                detail: format!(
                    "a frame of {} bytes at byte {} is impossibly long",
                    frame.len, frame.offset
                ),
            });
        }
        input.resize(frame.len as usize, 0);
        file.read_exact_at(input, frame.offset as u64)
            .map_err(StoreError::io(path))?;
        decompress_frame(dicts, path, input, output)?;
        Ok(f(output))
    })
}

/// Like [`with_frame`], for a frame already in memory (`frame` starts with
/// its header, as [`body_frames`] yields it).
pub fn with_frame_bytes<T>(
    dicts: &Dictionaries,
    path: &Path,
    frame: &[u8],
    f: impl FnOnce(&[u8]) -> T,
) -> Result<T, StoreError> {
    SCRATCH.with(|scratch| {
        let (_, output) = &mut *scratch.borrow_mut();
        decompress_frame(dicts, path, frame, output)?;
        Ok(f(output))
    })
}

/// Decompresses a frame (header included) of the journal file `path`. A
/// frame that does not check out is a corrupt journal frame; a dictionary
/// that does not is named itself.
fn decompress_frame(
    dicts: &Dictionaries,
    path: &Path,
    frame: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let corrupt = |detail: &str| StoreError::Corrupt {
        what: "journal frame",
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let header = frame
        .get(..FRAME_HEADER)
        .ok_or_else(|| corrupt("short frame"))?;
    let clen = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
    let dict = u32::from_le_bytes(header[5..9].try_into().unwrap());
    let data = frame
        .get(FRAME_HEADER..FRAME_HEADER + clen)
        .ok_or_else(|| corrupt("frame shorter than its header says"))?;
    let size = match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(n)) if n <= MAX_FRAME_RAW => n as usize,
        _ => return Err(corrupt("frame without a valid content size")),
    };
    out.clear();
    out.reserve(size);
    let ddict = match dict {
        0 => None,
        id => Some(dicts.decoder(id)?),
    };
    DCTX.with(|d| {
        let mut d = d.borrow_mut();
        match &ddict {
            Some(dd) => d.decompress_using_ddict(out, data, dd),
            None => d.decompress(out, data),
        }
    })
    .map_err(|code| corrupt(zstd::zstd_safe::get_error_name(code)))?;
    if out.len() != size {
        return Err(corrupt("frame shorter than its content size"));
    }
    Ok(())
}

pub fn file_name(file_id: u32) -> String {
    format!("{file_id:010}.wal")
}

/// Journal files in the directory, oldest first.
pub fn list_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let entry = entry.map_err(StoreError::io(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_suffix(".wal")
            .and_then(|s| s.parse::<u32>().ok())
        {
            out.push((id, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A record found while scanning a file.
pub struct ScannedRecord {
    pub first_seq: u64,
    pub count: u32,
    pub max_time: i64,
    /// The dictionary of the record's frames (0: none).
    pub dict: u32,
    /// Frames with their position in the file.
    pub frames: Vec<FrameRef>,
}

/// What a scan of one file found.
pub struct FileScan {
    pub records: Vec<ScannedRecord>,
    /// Length of the valid prefix.
    pub valid_len: u64,
    /// Length of the file on disk.
    pub file_len: u64,
    /// What follows the valid prefix.
    pub tail: Tail,
}

/// What follows the valid records of a journal file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Nothing: the file ends with its last valid record.
    Clean,
    /// An incomplete final record that runs to the end of the file (its
    /// header cut short, or its length past the end), or bytes that were
    /// never written (zeros): a write the crash interrupted, never
    /// acknowledged.
    Torn,
    /// A record that does not check out and is not a torn tail: damage.
    /// `resumes` is where the next valid record starts, if one does.
    Corrupt { resumes: Option<u64> },
}

/// Classifies the bytes after the valid prefix (`rest`, the file from the
/// first record that does not check out).
pub fn classify_tail(rest: &[u8]) -> Tail {
    if rest.is_empty() {
        return Tail::Clean;
    }
    if let Some(at) = next_record(rest) {
        return Tail::Corrupt {
            resumes: Some(at as u64),
        };
    }
    let magic = RECORD_MAGIC.to_le_bytes();
    let starts_a_record = rest[..rest.len().min(4)] == magic[..rest.len().min(4)];
    let torn = rest.iter().all(|b| *b == 0)
        || (starts_a_record
            && (rest.len() < RECORD_HEADER
                || RECORD_HEADER as u64
                    + u32::from_le_bytes(rest[4..8].try_into().unwrap()) as u64
                    > rest.len() as u64));
    if torn {
        Tail::Torn
    } else {
        Tail::Corrupt { resumes: None }
    }
}

/// The offset in `data` (after its first byte) of the next record that
/// checks out, if any.
pub fn next_record(data: &[u8]) -> Option<usize> {
    let magic = RECORD_MAGIC.to_le_bytes();
    (1..data.len().saturating_sub(RECORD_PREFIX - 1))
        .find(|&at| data[at..at + 4] == magic && parse_record(&data[at..]).is_some())
}

/// Bytes of a record before its first frame: record header and body header.
pub const RECORD_PREFIX: usize = RECORD_HEADER + BODY_HEADER;

/// The fixed part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    pub first_seq: u64,
    pub count: u32,
    pub max_time: i64,
    /// Bytes of the whole record, header included.
    pub len: u64,
}

/// Reads the fixed part of the record at the start of `data` (at least
/// [`RECORD_PREFIX`] bytes), without checking its body; `None` if it does
/// not start with a record header.
pub fn parse_head(data: &[u8]) -> Option<RecordHead> {
    let data = data.get(..RECORD_PREFIX)?;
    let magic = u32::from_le_bytes(data[..4].try_into().unwrap());
    let body_len = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
    if magic != RECORD_MAGIC || body_len < BODY_HEADER {
        return None;
    }
    let body = &data[RECORD_HEADER..];
    Some(RecordHead {
        first_seq: u64::from_le_bytes(body[..8].try_into().unwrap()),
        count: u32::from_le_bytes(body[8..12].try_into().unwrap()),
        max_time: i64::from_le_bytes(body[12..20].try_into().unwrap()),
        len: (RECORD_HEADER + body_len) as u64,
    })
}

/// Checks the record at the start of `data`: its header, that it is whole
/// and its checksum. Returns its fixed part and its frames (the body after
/// the body header); `None` for a torn or corrupt record.
pub fn parse_record(data: &[u8]) -> Option<(RecordHead, &[u8])> {
    if data.len() < RECORD_HEADER {
        return None;
    }
    let body_len = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(data[8..12].try_into().unwrap());
    let body = data.get(RECORD_HEADER..RECORD_HEADER + body_len)?;
    let head = parse_head(data)?;
    (crc32fast::hash(body) == crc).then_some((head, &body[BODY_HEADER..]))
}

/// The frames of a record (`frames` as [`parse_record`] returns it): each
/// frame's offset within `frames`, its bytes (header included) and how many
/// documents it holds.
pub fn body_frames(frames: &[u8]) -> impl Iterator<Item = (usize, &[u8], u8)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let header = frames.get(pos..pos + FRAME_HEADER)?;
        let clen = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        let ndocs = header[4];
        let at = pos;
        let frame = frames.get(pos..pos + FRAME_HEADER + clen)?;
        pos += frame.len();
        Some((at, frame, ndocs))
    })
}

/// Reads every valid record of a file, stopping at the first torn or corrupt
/// one.
pub fn scan_file(file_id: u32, path: &Path) -> Result<FileScan, StoreError> {
    let data = fs::read(path).map_err(StoreError::io(path))?;
    Ok(scan_bytes(file_id, &data))
}

/// [`scan_file`] of a file's bytes.
pub fn scan_bytes(file_id: u32, data: &[u8]) -> FileScan {
    let mut pos = 0usize;
    let mut records = Vec::new();
    while let Some((head, frames)) = parse_record(&data[pos..]) {
        let frames_at = pos + RECORD_PREFIX;
        let mut refs = Vec::new();
        let mut dict = 0;
        for (at, frame, _) in body_frames(frames) {
            dict = u32::from_le_bytes(frame[5..9].try_into().unwrap());
            refs.push(FrameRef {
                file: file_id,
                offset: (frames_at + at) as u32,
                len: frame.len() as u32,
            });
        }
        records.push(ScannedRecord {
            first_seq: head.first_seq,
            count: head.count,
            max_time: head.max_time,
            dict,
            frames: refs,
        });
        pos += head.len as usize;
    }
    FileScan {
        records,
        valid_len: pos as u64,
        file_len: data.len() as u64,
        tail: classify_tail(&data[pos..]),
    }
}

/// The error for a record that does not check out at `at` of `path` and is
/// not a torn tail.
pub fn damage(path: &Path, at: u64, resumes: Option<u64>) -> StoreError {
    let follows = match resumes {
        Some(n) => format!("valid records follow at byte {}", at + n),
        None => "bytes that are not a torn write follow it".to_string(),
    };
    StoreError::Corrupt {
        what: "journal record",
        path: path.to_path_buf(),
        detail: format!(
            "the record at byte {at} does not check out and {follows}: this is damage, not a torn write, so nothing was cut"
        ),
    }
}

/// Cuts a file to its valid prefix (a torn tail) and makes the cut durable.
pub fn cut(path: &Path, valid_len: u64) -> Result<(), StoreError> {
    #[cfg(test)]
    if let Some(e) = faults::on_cut(path) {
        return Err(StoreError::io(path)(e));
    }
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(StoreError::io(path))?;
    file.set_len(valid_len).map_err(StoreError::io(path))?;
    file.sync_all().map_err(StoreError::io(path))
}

/// Decompresses the frames of a scanned record into (frame, doc index, JSON).
pub fn read_record_docs(
    dicts: &Dictionaries,
    data_file: &File,
    path: &Path,
    record: &ScannedRecord,
) -> Result<Vec<(FrameRef, u8, Vec<u8>)>, StoreError> {
    let mut out = Vec::with_capacity(record.count as usize);
    for frame in &record.frames {
        with_frame(dicts, data_file, path, *frame, |raw| {
            for (i, doc) in split_frame(raw).into_iter().enumerate() {
                out.push((*frame, i as u8, doc.to_vec()));
            }
        })?;
    }
    Ok(out)
}

/// The file the writer appends to.
pub struct ActiveFile {
    pub id: u32,
    pub path: PathBuf,
    file: File,
    pub len: u64,
    /// When the file was started (for a reopened file: its creation time).
    created: SystemTime,
}

impl ActiveFile {
    pub fn create(dir: &Path, id: u32, fsync: bool) -> Result<ActiveFile, StoreError> {
        let path = dir.join(file_name(id));
        let file = cts_fs::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        if fsync {
            sync_dir(dir)?;
        }
        Ok(ActiveFile {
            id,
            path,
            file,
            len: 0,
            created: SystemTime::now(),
        })
    }

    /// Reopens an existing file for appending after cutting it to `valid_len`.
    pub fn reopen(id: u32, path: PathBuf, valid_len: u64) -> Result<ActiveFile, StoreError> {
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        file.set_len(valid_len).map_err(StoreError::io(&path))?;
        file.sync_all().map_err(StoreError::io(&path))?;
        let created = file
            .metadata()
            .and_then(|m| m.created())
            .unwrap_or_else(|_| SystemTime::now());
        Ok(ActiveFile {
            id,
            path,
            file,
            len: valid_len,
            created,
        })
    }

    /// How long ago the file was started.
    pub fn age(&self) -> Duration {
        self.created.elapsed().unwrap_or_default()
    }

    /// Lays out one record in `buf`; returns where each frame will be.
    pub fn encode_record(
        &self,
        buf: &mut Vec<u8>,
        first_seq: u64,
        batch: &EncodedBatch,
    ) -> Vec<FrameRef> {
        let start = self.len as usize + buf.len();
        let body_len: usize = BODY_HEADER + batch.frames.iter().map(Vec::len).sum::<usize>();
        let header_at = buf.len();
        buf.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
        buf.extend_from_slice(&(body_len as u32).to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        let body_at = buf.len();
        buf.extend_from_slice(&first_seq.to_le_bytes());
        buf.extend_from_slice(&batch.count.to_le_bytes());
        buf.extend_from_slice(&batch.max_time.to_le_bytes());
        let mut refs = Vec::with_capacity(batch.frames.len());
        let mut offset = start + RECORD_HEADER + BODY_HEADER;
        for frame in &batch.frames {
            refs.push(FrameRef {
                file: self.id,
                offset: offset as u32,
                len: frame.len() as u32,
            });
            offset += frame.len();
            buf.extend_from_slice(frame);
        }
        let crc = crc32fast::hash(&buf[body_at..]);
        buf[header_at + 8..header_at + 12].copy_from_slice(&crc.to_le_bytes());
        refs
    }

    /// Appends encoded records and makes them durable.
    pub fn write_durable(&mut self, buf: &[u8], fsync: bool) -> Result<(), StoreError> {
        if self.len + buf.len() as u64 > u32::MAX as u64 {
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: std::io::Error::other("record past the 4 GiB a frame offset can address"),
            });
        }
        #[cfg(test)]
        if let Some(e) = faults::on_write(&self.path, &mut self.file, buf) {
            return Err(StoreError::io(&self.path)(e));
        }
        self.file
            .write_all(buf)
            .map_err(StoreError::io(&self.path))?;
        if fsync {
            self.file.sync_data().map_err(StoreError::io(&self.path))?;
        }
        self.len += buf.len() as u64;
        Ok(())
    }
}

/// Test-only failures of the disk under the journal, planned per journal
/// directory: the writer sees the errors a failing disk gives.
#[cfg(test)]
pub(crate) mod faults {
    use std::fs::File;
    use std::io::{Error, ErrorKind, Write};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Fault {
        /// write() fails before writing anything.
        Write,
        /// Half of the batch is written, then the write fails.
        ShortWrite,
        /// A third is written, then the disk is full.
        NoSpace,
        /// Everything is written, then fsync fails.
        Fsync,
        /// Cutting the failed write off the file fails too.
        Cut,
    }

    static PLANNED: Mutex<Vec<(PathBuf, Fault)>> = Mutex::new(Vec::new());

    /// The next write (or cut) of a file in `dir` fails so.
    pub(crate) fn inject(dir: &Path, fault: Fault) {
        PLANNED.lock().unwrap().push((dir.to_path_buf(), fault));
    }

    fn take(file: &Path, wanted: impl Fn(Fault) -> bool) -> Option<Fault> {
        let mut planned = PLANNED.lock().unwrap();
        let at = planned
            .iter()
            .position(|(dir, f)| Some(dir.as_path()) == file.parent() && wanted(*f))?;
        Some(planned.remove(at).1)
    }

    pub(super) fn on_write(path: &Path, file: &mut File, buf: &[u8]) -> Option<Error> {
        let fault = take(path, |f| f != Fault::Cut)?;
        let (written, error) = match fault {
            Fault::Write => (0, Error::other("injected write error")),
            Fault::ShortWrite => (buf.len() / 2, Error::from(ErrorKind::WriteZero)),
            Fault::NoSpace => (buf.len() / 3, Error::from(ErrorKind::StorageFull)),
            Fault::Fsync | Fault::Cut => (buf.len(), Error::other("injected fsync error")),
        };
        file.write_all(&buf[..written]).unwrap();
        Some(error)
    }

    pub(super) fn on_cut(path: &Path) -> Option<Error> {
        take(path, |f| f == Fault::Cut).map(|_| Error::other("injected truncate error"))
    }
}

pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    cts_fs::sync_dir(dir).map_err(StoreError::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_records(dir: &Path) -> (Vec<u8>, Vec<u64>) {
        let dicts = Dictionaries::open(dir, false).unwrap();
        let mut active = ActiveFile::create(dir, 1, false).unwrap();
        let mut ends = Vec::new();
        for r in 0..3u64 {
            let docs: Vec<Vec<u8>> = (0..20)
                .map(|i| format!("{{\"r\":{r},\"n\":{i}}}").into_bytes())
                .collect();
            let batch = encode_frames(&dicts, docs.iter().map(|d| (d.as_slice(), 7))).unwrap();
            let mut buf = Vec::new();
            active.encode_record(&mut buf, 1 + r * 20, &batch);
            active.write_durable(&buf, false).unwrap();
            ends.push(active.len);
        }
        (fs::read(&active.path).unwrap(), ends)
    }

    #[test]
    fn a_tail_cut_at_any_byte_of_the_last_record_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let (data, ends) = three_records(dir.path());
        for len in ends[1] + 1..ends[2] {
            let scan = scan_bytes(1, &data[..len as usize]);
            assert_eq!(scan.records.len(), 2, "cut at {len}");
            assert_eq!(scan.valid_len, ends[1]);
            assert_eq!(scan.tail, Tail::Torn, "cut at {len}");
        }
        let mut zeros = data.clone();
        zeros.extend_from_slice(&[0; 4096]);
        assert_eq!(scan_bytes(1, &zeros).tail, Tail::Torn);
        assert_eq!(scan_bytes(1, &data).tail, Tail::Clean);
    }

    #[test]
    fn a_flipped_byte_before_valid_records_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (data, ends) = three_records(dir.path());
        for at in (0..ends[1] as usize).step_by(5) {
            let mut bad = data.clone();
            bad[at] ^= 0x04;
            let scan = scan_bytes(1, &bad);
            let first_bad = if at < ends[0] as usize { 0 } else { ends[0] };
            assert_eq!(scan.valid_len, first_bad, "flip at {at}");
            assert!(
                matches!(scan.tail, Tail::Corrupt { resumes: Some(_) }),
                "flip at {at}: {:?}",
                scan.tail
            );
        }
        // A damaged last record that is whole is damage too, not a torn write.
        let mut bad = data.clone();
        bad[ends[1] as usize + 40] ^= 0x01;
        assert_eq!(scan_bytes(1, &bad).tail, Tail::Corrupt { resumes: None });
    }

    #[test]
    fn records_round_trip_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let dicts = Dictionaries::open(dir.path(), true).unwrap();
        let mut active = ActiveFile::create(dir.path(), 1, true).unwrap();
        let docs: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("{{\"n\":{i}}}").into_bytes())
            .collect();
        let batch = encode_frames(&dicts, docs.iter().map(|d| (d.as_slice(), 7))).unwrap();
        assert_eq!(batch.frames.len(), 40 / FRAME_DOCS);
        let mut buf = Vec::new();
        let refs = active.encode_record(&mut buf, 100, &batch);
        active.write_durable(&buf, true).unwrap();
        let good_len = active.len;
        // A torn second record.
        let mut buf2 = Vec::new();
        active.encode_record(&mut buf2, 140, &batch);
        active.write_durable(&buf2[..buf2.len() / 2], true).unwrap();

        let scan = scan_file(1, &active.path).unwrap();
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.valid_len, good_len);
        assert_eq!(scan.records[0].first_seq, 100);
        assert_eq!(scan.records[0].frames, refs);
        let file = File::open(&active.path).unwrap();
        let got = read_record_docs(&dicts, &file, &active.path, &scan.records[0]).unwrap();
        assert_eq!(got.len(), 40);
        assert_eq!(got[17].2, docs[17]);
        assert_eq!(got[17].1, 1);

        let reopened = ActiveFile::reopen(1, active.path.clone(), scan.valid_len).unwrap();
        assert_eq!(reopened.len, good_len);
        assert_eq!(fs::metadata(&active.path).unwrap().len(), good_len);
    }
}
