//! Immutable index segments: one file per partition and memtable flush.
//!
//! Format 3 (magic `CTS3`):
//!
//! ```text
//! docs     n × (time i64, id [16], file u32, offset u32, len u32, idx u8)
//!          sorted (project, time desc, id desc); the journal frame of each doc
//! postings varint-delta ordinals of terms seen more than once
//! terms    n × (hash u64, ord_or_offset u32, count u32, bytes u32), sorted by hash
//! tsample  every TERM_SAMPLE-th term hash                  (summary)
//! dsample  every DOC_SAMPLE-th doc key                     (summary)
//! bloom    Bloom filter of the term hashes                 (summary)
//! meta     JSON footer | len u32 | crc32 u32 | magic u32
//! ```
//!
//! Formats 1 and 2 are still read (a merge rewrites them as format 3): they
//! start with a frame table (`n × (file u32, offset u32, len u32)`) and a doc
//! entry names its frame by ordinal (`frame u32` instead of the frame); the
//! frame table is read from the file when a doc is, never held in memory.
//!
//! The CRC (formats 2 and 3) covers every byte before it and is checked when
//! a segment is opened; every offset and count of the footer is checked
//! against the file before anything is read with it, and every read checks
//! its bounds, so a damaged segment is an error naming it, never a panic or
//! a wrong answer. Format 1 (magic `MAGIC_V1`) has no CRC.
//!
//! In memory a segment keeps its footer and a thinned copy of its samples;
//! its summary (samples and Bloom filter) is held in the store's bounded
//! [`SummaryCache`] while it is among the most recently used (see
//! `summary.rs`).
//!
//! A term is (field, project, value) hashed to 64 bits; a trace id is a term
//! too. Ordinals grow with age inside a project, so a query reads the first
//! few entries of a posting list and stops.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cts_model::Field;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::journal::FrameRef;
use crate::memtable::{Candidate, Key, Memtable, Probe, TopK, NF};
use crate::StoreError;

mod build;
mod merge;
mod postings;
mod summary;

pub use build::file_name;
use build::{DocTable, SegmentFile, TermTable};
pub use merge::merge;
pub use postings::decode_postings;
use postings::Cursor;
pub use summary::SummaryCache;
use summary::{Samples, Summary, RESIDENT_STRIDE};

/// Format 1: footer without a checksum.
const MAGIC_V1: u32 = 0x4354_5347; // "CTSG"
/// Format 2: footer with the CRC of the file.
const MAGIC_V2: u32 = 0x4354_5332; // "CTS2"
/// Format 3: as 2, with each doc's frame in its entry (no frame table).
const MAGIC: u32 = 0x4354_5333; // "CTS3"
/// A segment's CRC is computed over pieces of this size when it is opened.
const CHECK_CHUNK: usize = 1 << 20;
/// A doc entry of format 3, and of formats 1 and 2 (a frame ordinal).
const DOC_ENTRY: usize = 37;
const DOC_ENTRY_V2: usize = 29;
/// A frame-table entry of formats 1 and 2.
const FRAME_ENTRY: usize = 12;
const TERM_ENTRY: usize = 20;
const TERM_SAMPLE: usize = 128;
const DOC_SAMPLE: usize = 64;
/// Bloom filter: 10 bits and 7 probes per term (~1% false positives), so a
/// lookup of an absent value (a rare resource id, a trace id in another
/// segment) costs no read.
const BLOOM_BITS_PER_TERM: usize = 10;
const BLOOM_PROBES: u64 = 7;

fn bloom_positions(hash: u64, bits: u64) -> impl Iterator<Item = u64> {
    let h2 = hash.rotate_left(32) | 1;
    (0..BLOOM_PROBES).map(move |i| hash.wrapping_add(i.wrapping_mul(h2)) % bits)
}
/// Field tag of trace-id terms (fields use their `Field` number).
const TRACE_ID_TAG: u8 = 0;

/// A term's hash: its value hashed with a seed made of field and project, so
/// that building a segment hashes each value in one pass with a seed computed
/// once per project.
fn term_hash(tag: u8, project: &str, value: &[u8]) -> u64 {
    xxh3_64_with_seed(value, term_seed(tag, project))
}

fn term_seed(tag: u8, project: &str) -> u64 {
    xxh3_64_with_seed(project.as_bytes(), tag as u64)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    partition: i64,
    flush_id: u64,
    docs: u32,
    frames: u32,
    terms: u32,
    min_time: i64,
    max_time: i64,
    frames_at: u64,
    docs_at: u64,
    postings_at: u64,
    terms_at: u64,
    tsample_at: u64,
    dsample_at: u64,
    #[serde(default)]
    bloom_at: u64,
    #[serde(default)]
    bloom_words: u64,
    projects: Vec<(String, u32, u32)>,
}

impl Meta {
    fn dsample_end(&self, meta_at: u64) -> u64 {
        if self.bloom_words > 0 {
            self.bloom_at
        } else {
            meta_at
        }
    }

    /// Checks that the sections lie in order inside the `meta_at` bytes
    /// before the footer and have the sizes the counts imply.
    fn check(&self, meta_at: u64, doc_entry: usize) -> Result<(), &'static str> {
        let (docs, terms) = (self.docs as u64, self.terms as u64);
        let sizes = [
            (
                self.frames_at,
                self.docs_at,
                self.frames as u64 * FRAME_ENTRY as u64,
            ),
            (self.docs_at, self.postings_at, docs * doc_entry as u64),
            (self.terms_at, self.tsample_at, terms * TERM_ENTRY as u64),
            (
                self.tsample_at,
                self.dsample_at,
                terms.div_ceil(TERM_SAMPLE as u64) * 8,
            ),
            (
                self.dsample_at,
                self.dsample_end(meta_at),
                docs.div_ceil(DOC_SAMPLE as u64) * 24,
            ),
        ];
        if sizes
            .iter()
            .any(|&(from, to, len)| from.checked_add(len) != Some(to))
        {
            return Err("section sizes do not match the counts");
        }
        let bloom_end = self
            .bloom_words
            .checked_mul(8)
            .and_then(|n| n.checked_add(self.bloom_at));
        let ordered = self.postings_at <= self.terms_at
            && self.dsample_end(meta_at) <= meta_at
            && (self.bloom_words == 0 || bloom_end == Some(meta_at));
        if !ordered {
            return Err("sections out of order or past the footer");
        }
        let mut prev: Option<&str> = None;
        for (name, start, end) in &self.projects {
            if start >= end || *end > self.docs || prev.is_some_and(|p| p >= name.as_str()) {
                return Err("project ranges out of order or past the doc table");
            }
            prev = Some(name);
        }
        Ok(())
    }
}

/// CRC-32 of the first `len` bytes of a file, read in pieces.
fn crc_of(file: &File, len: u64) -> std::io::Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHECK_CHUNK.min(len as usize)];
    let mut at = 0u64;
    while at < len {
        let n = buf.len().min((len - at) as usize);
        file.read_exact_at(&mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher.finalize())
}

/// An open segment; its footer and thinned samples live in memory, its
/// summary in the cache while it is used, the rest is read with `pread` so
/// that the page cache, not the process, holds it.
pub struct Segment {
    pub path: PathBuf,
    file: File,
    meta: Meta,
    /// Bytes of a doc entry: [`DOC_ENTRY`], or [`DOC_ENTRY_V2`] when the
    /// entries name frames of a frame table.
    doc_entry: usize,
    /// Every [`RESIDENT_STRIDE`]-th sample, for when the summary is not cached.
    resident: Samples,
    cache: Arc<SummaryCache>,
    /// This segment's key in `cache`.
    key: u64,
    pub size: u64,
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.cache.remove(self.key);
    }
}

/// Where a doc entry's frame is: in the entry (format 3) or at an ordinal
/// of the frame table (formats 1 and 2).
#[derive(Clone, Copy)]
enum DocFrame {
    Ref(FrameRef),
    Ordinal(u32),
}

fn varint(buf: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Writes the segment of one partition from a frozen memtable's docs
/// (`members` are indices into `mem.docs`). The file is fsync'd.
pub fn write(
    dir: &Path,
    partition: i64,
    flush_id: u64,
    mem: &Memtable,
    members: &[u32],
    fsync: bool,
) -> Result<PathBuf, StoreError> {
    let mut order: Vec<u32> = members.to_vec();
    let proj = |i: u32| mem.string(mem.docs[i as usize].project).unwrap_or("");
    order.sort_by(|&a, &b| {
        let (da, db) = (&mem.docs[a as usize], &mem.docs[b as usize]);
        proj(a)
            .cmp(proj(b))
            .then((db.time, db.id).cmp(&(da.time, da.id)))
    });

    let mut out = SegmentFile::create(dir, partition, flush_id, fsync)?;
    let mut docs = DocTable::new(&out);
    // (term hash, ordinal) pairs; sorted, they group into posting lists.
    let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(order.len() * 8);
    // (project, trace-id seed, field seeds) of the project being written.
    let mut seeds: Option<(&str, u64, [u64; NF])> = None;
    for &i in &order {
        let d = &mem.docs[i as usize];
        let project = proj(i);
        let ord = docs.push(&mut out, project, (d.time, d.id), d.frame, d.idx)?;
        if seeds.is_none_or(|(p, ..)| p != project) {
            seeds = Some((
                project,
                term_seed(TRACE_ID_TAG, project),
                Field::ALL.map(|f| term_seed(f as u8, project)),
            ));
        }
        let (_, id_seed, field_seeds) = seeds.expect("set for this project above");
        pairs.push((xxh3_64_with_seed(&d.id, id_seed), ord));
        for (slot, seed) in field_seeds.iter().enumerate() {
            if d.terms[slot] == u32::MAX {
                continue;
            }
            if let Some(value) = mem.string(d.terms[slot]) {
                pairs.push((xxh3_64_with_seed(value.as_bytes(), *seed), ord));
            }
        }
    }

    pairs.sort_unstable();
    let mut terms = TermTable::new(&out);
    let mut ords = Vec::new();
    for group in pairs.chunk_by(|a, b| a.0 == b.0) {
        ords.clear();
        ords.extend(group.iter().map(|p| p.1));
        terms.push(&mut out, group[0].0, &ords)?;
    }
    build::finish(out, partition, flush_id, docs, terms)
}

/// Asks the kernel to read a range ahead (`POSIX_FADV_WILLNEED`); only a
/// hint, so failures are ignored.
pub fn advise_willneed(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise reads no memory of ours; the descriptor is open
    // for as long as `file` is borrowed.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        );
    }
}

/// Whether reading the whole span of doc entries costs no more than reading
/// one page per hit.
fn close_together(lo: u32, hi: u32, n: usize) -> bool {
    (hi - lo + 1) as usize * DOC_ENTRY <= (n * 4096).max(64 << 10)
}

pub fn partition_dir_name(partition: i64) -> String {
    format!("p{partition}")
}

enum Posting {
    Single(u32),
    List { at: u64, count: u32, bytes: u32 },
}

impl Posting {
    fn count(&self) -> u32 {
        match self {
            Posting::Single(_) => 1,
            Posting::List { count, .. } => *count,
        }
    }
}

impl Segment {
    /// Opens a segment with a cache of its own (offline checks, tests).
    pub fn open(path: &Path) -> Result<Segment, StoreError> {
        Segment::open_cached(path, SummaryCache::new(u64::MAX))
    }

    /// Opens a segment whose summary goes into `cache` (a store's).
    pub fn open_cached(path: &Path, cache: Arc<SummaryCache>) -> Result<Segment, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            what: "index segment",
            path: path.to_path_buf(),
            detail,
        };
        let file = File::open(path).map_err(StoreError::io(path))?;
        let size = file.metadata().map_err(StoreError::io(path))?.len();
        let read = |at: u64, len: u64| -> Result<Vec<u8>, StoreError> {
            let mut b = vec![0u8; len as usize];
            file.read_exact_at(&mut b, at)
                .map_err(StoreError::io(path))?;
            Ok(b)
        };
        if size < 8 {
            return Err(corrupt("too short".into()));
        }
        let magic = u32::from_le_bytes(read(size - 4, 4)?.try_into().unwrap());
        let (trailer, doc_entry) = match magic {
            MAGIC if size >= 12 => (12, DOC_ENTRY),
            MAGIC_V2 if size >= 12 => (12, DOC_ENTRY_V2),
            MAGIC_V1 => (8, DOC_ENTRY_V2),
            _ => return Err(corrupt("bad magic".into())),
        };
        let meta_len = u32::from_le_bytes(read(size - trailer, 4)?.try_into().unwrap()) as u64;
        if meta_len + trailer > size {
            return Err(corrupt("bad footer length".into()));
        }
        if trailer == 12 {
            let stored = u32::from_le_bytes(read(size - 8, 4)?.try_into().unwrap());
            let actual = crc_of(&file, size - 8).map_err(StoreError::io(path))?;
            if stored != actual {
                return Err(corrupt(format!(
                    "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
                )));
            }
        }
        let meta_at = size - trailer - meta_len;
        let meta: Meta = serde_json::from_slice(&read(meta_at, meta_len)?)
            .map_err(|e| corrupt(e.to_string()))?;
        meta.check(meta_at, doc_entry)
            .map_err(|d| corrupt(d.into()))?;
        if doc_entry == DOC_ENTRY && meta.frames != 0 {
            return Err(corrupt("a frame table in format 3".into()));
        }

        let term_samples = read(meta.tsample_at, meta.dsample_at - meta.tsample_at)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let doc_samples = read(meta.dsample_at, meta.dsample_end(meta_at) - meta.dsample_at)?
            .chunks_exact(24)
            .map(|c| {
                (
                    i64::from_le_bytes(c[..8].try_into().unwrap()),
                    c[8..24].try_into().unwrap(),
                )
            })
            .collect();
        let bloom = read(meta.bloom_at, meta.bloom_words * 8)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let summary = Summary {
            samples: Samples {
                terms: term_samples,
                docs: doc_samples,
                term_span: TERM_SAMPLE,
                doc_span: DOC_SAMPLE,
            },
            bloom,
        };
        let key = cache.key();
        let resident = summary.samples.thinned(RESIDENT_STRIDE);
        cache.insert(key, summary);
        Ok(Segment {
            path: path.to_path_buf(),
            file,
            meta,
            doc_entry,
            resident,
            cache,
            key,
            size,
        })
    }

    /// Bytes this segment holds in memory outside the cache.
    pub fn resident_bytes(&self) -> u64 {
        self.resident.bytes()
    }

    /// Runs `f` with the samples and Bloom filter to use: the summary when
    /// it is cached, else the thinned samples and no filter.
    fn with_summary<R>(&self, f: impl FnOnce(&Samples, &[u64]) -> R) -> R {
        match self.cache.get(self.key) {
            Some(s) => f(&s.samples, &s.bloom),
            None => f(&self.resident, &[]),
        }
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            what: "index segment",
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    pub fn partition(&self) -> i64 {
        self.meta.partition
    }
    pub fn flush_id(&self) -> u64 {
        self.meta.flush_id
    }
    pub fn docs(&self) -> u32 {
        self.meta.docs
    }
    pub fn max_time(&self) -> i64 {
        self.meta.max_time
    }
    pub fn min_time(&self) -> i64 {
        self.meta.min_time
    }
    fn io<T>(&self, r: std::io::Result<T>) -> Result<T, StoreError> {
        r.map_err(StoreError::io(&self.path))
    }

    /// Doc entries `first..first + n` as candidates (key, frame, index in
    /// the frame).
    fn read_docs(&self, first: u32, n: u32) -> Result<Vec<Candidate>, StoreError> {
        self.resolve(self.read_doc_entries(first, n)?)
    }

    /// Candidates of doc entries, their frames read from the frame table
    /// where the entries name them by ordinal (formats 1 and 2).
    fn resolve(&self, entries: Vec<(Key, DocFrame, u8)>) -> Result<Vec<Candidate>, StoreError> {
        let mut ordinals: Vec<u32> = entries
            .iter()
            .filter_map(|(_, f, _)| match f {
                DocFrame::Ordinal(o) => Some(*o),
                DocFrame::Ref(_) => None,
            })
            .collect();
        let table = self.frames_of(&mut ordinals)?;
        Ok(entries
            .into_iter()
            .map(|(key, frame, idx)| {
                let frame = match frame {
                    DocFrame::Ref(f) => f,
                    DocFrame::Ordinal(o) => table[&o],
                };
                Candidate { key, frame, idx }
            })
            .collect())
    }

    /// The frames at `ordinals` of a format 1 or 2 frame table: one read of
    /// their span when it is short (the docs of a flush name frames in
    /// order), else one read each (a merge concatenated frame tables).
    fn frames_of(&self, ordinals: &mut Vec<u32>) -> Result<HashMap<u32, FrameRef>, StoreError> {
        ordinals.sort_unstable();
        ordinals.dedup();
        let (Some(&lo), Some(&hi)) = (ordinals.first(), ordinals.last()) else {
            return Ok(HashMap::new());
        };
        if (hi - lo + 1) as usize * FRAME_ENTRY <= 64 << 10 {
            let span = self.read_frames(lo, hi - lo + 1)?;
            return Ok(ordinals
                .iter()
                .map(|&o| (o, span[(o - lo) as usize]))
                .collect());
        }
        ordinals
            .iter()
            .map(|&o| Ok((o, self.read_frames(o, 1)?[0])))
            .collect()
    }

    /// The bytes of entries `first..first + n` of the table at `at` that
    /// holds `count` entries of `size` bytes; `past` names the damage when
    /// they lie past its end.
    fn read_table(
        &self,
        (at, count, size): (u64, u32, usize),
        first: u32,
        n: u32,
        past: &'static str,
    ) -> Result<Vec<u8>, StoreError> {
        if first as u64 + n as u64 > count as u64 {
            return Err(self.corrupt(past));
        }
        let mut b = vec![0u8; n as usize * size];
        self.io(self
            .file
            .read_exact_at(&mut b, at + first as u64 * size as u64))?;
        Ok(b)
    }

    fn read_doc_entries(&self, first: u32, n: u32) -> Result<Vec<(Key, DocFrame, u8)>, StoreError> {
        Ok(self
            .read_doc_span(first, n)?
            .chunks_exact(self.doc_entry)
            .map(|c| self.parse_doc_entry(c))
            .collect())
    }

    /// The bytes of doc entries `first..first + n`.
    fn read_doc_span(&self, first: u32, n: u32) -> Result<Vec<u8>, StoreError> {
        let table = (self.meta.docs_at, self.meta.docs, self.doc_entry);
        self.read_table(table, first, n, "doc ordinal past the doc table")
    }

    /// A doc entry of this segment's format.
    fn parse_doc_entry(&self, c: &[u8]) -> (Key, DocFrame, u8) {
        let u32_at = |at: usize| u32::from_le_bytes(c[at..at + 4].try_into().unwrap());
        let time = i64::from_le_bytes(c[..8].try_into().unwrap());
        let id: [u8; 16] = c[8..24].try_into().unwrap();
        let frame = if self.doc_entry == DOC_ENTRY {
            DocFrame::Ref(FrameRef {
                file: u32_at(24),
                offset: u32_at(28),
                len: u32_at(32),
            })
        } else {
            DocFrame::Ordinal(u32_at(24))
        };
        ((time, id), frame, c[self.doc_entry - 1])
    }

    /// Entries `first..first + n` of a format 1 or 2 frame table.
    fn read_frames(&self, first: u32, n: u32) -> Result<Vec<FrameRef>, StoreError> {
        let table = (self.meta.frames_at, self.meta.frames, FRAME_ENTRY);
        let b = self.read_table(table, first, n, "frame index out of range")?;
        Ok(b.chunks_exact(FRAME_ENTRY)
            .map(|c| FrameRef {
                file: u32::from_le_bytes(c[0..4].try_into().unwrap()),
                offset: u32::from_le_bytes(c[4..8].try_into().unwrap()),
                len: u32::from_le_bytes(c[8..12].try_into().unwrap()),
            })
            .collect())
    }

    /// First ordinal in `[lo, hi)` whose key satisfies `pred`, where `pred`
    /// turns from false to true once along the ordinals (keys descend).
    fn partition_point(
        &self,
        lo: u32,
        hi: u32,
        pred: impl Fn(&Key) -> bool,
    ) -> Result<u32, StoreError> {
        if lo >= hi {
            return Ok(hi);
        }
        // Narrow with the in-memory samples, then scan one chunk from disk.
        let (start, end) = self.with_summary(|samples, _| {
            let span = samples.doc_span;
            let first_sample = (lo as usize).div_ceil(span);
            let last_sample = (hi as usize - 1) / span;
            let mut start = lo;
            let mut end = hi;
            if first_sample <= last_sample {
                let s = &samples.docs[first_sample..=last_sample];
                let k = s.partition_point(|key| !pred(key));
                if k > 0 {
                    start = start.max(((first_sample + k - 1) * span) as u32);
                }
                if k < s.len() {
                    end = end.min(((first_sample + k) * span) as u32 + 1);
                }
            }
            (start, end)
        });
        let chunk = self.read_doc_entries(start, end - start)?;
        let k = chunk.partition_point(|(key, _, _)| !pred(key));
        Ok(start + k as u32)
    }

    fn project_range(&self, project: &str) -> Option<(u32, u32)> {
        self.meta
            .projects
            .binary_search_by(|(name, _, _)| name.as_str().cmp(project))
            .ok()
            .map(|i| (self.meta.projects[i].1, self.meta.projects[i].2))
    }

    /// The range of term entries `hash` would be in, unless the Bloom filter
    /// or the samples already rule it out.
    fn term_block(&self, hash: u64) -> Option<(usize, usize)> {
        if self.meta.terms == 0 {
            return None;
        }
        self.with_summary(|samples, bloom| {
            if !bloom.is_empty() {
                let bits = bloom.len() as u64 * 64;
                let absent = bloom_positions(hash, bits)
                    .any(|bit| bloom[(bit / 64) as usize] & (1 << (bit % 64)) == 0);
                if absent {
                    return None;
                }
            }
            let block = samples.terms.partition_point(|h| *h <= hash);
            if block == 0 {
                return None;
            }
            let first = (block - 1) * samples.term_span;
            Some((
                first,
                samples.term_span.min(self.meta.terms as usize - first),
            ))
        })
    }

    /// Starts reading, in the background, the term block of the query's own
    /// (most selective) filter, so that the reads of many segments overlap
    /// when the index is not in the page cache.
    pub fn prefetch(&self, probe: &Probe<'_>) {
        let Some((field, value)) = probe.filters.last() else {
            return;
        };
        if let Some((first, n)) =
            self.term_block(term_hash(*field as u8, probe.project, value.as_bytes()))
        {
            advise_willneed(
                &self.file,
                self.meta.terms_at + (first * TERM_ENTRY) as u64,
                (n * TERM_ENTRY) as u64,
            );
        }
    }

    fn lookup(&self, hash: u64) -> Result<Option<Posting>, StoreError> {
        let Some((first, n)) = self.term_block(hash) else {
            return Ok(None);
        };
        let mut b = vec![0u8; n * TERM_ENTRY];
        self.io(self
            .file
            .read_exact_at(&mut b, self.meta.terms_at + (first * TERM_ENTRY) as u64))?;
        let entries: Vec<&[u8]> = b.chunks_exact(TERM_ENTRY).collect();
        let Ok(i) =
            entries.binary_search_by(|e| u64::from_le_bytes(e[..8].try_into().unwrap()).cmp(&hash))
        else {
            return Ok(None);
        };
        Ok(Some(self.posting(entries[i]).1))
    }

    /// A term entry: its hash and where its ordinals are.
    fn posting(&self, e: &[u8]) -> (u64, Posting) {
        let field = |at: usize| u32::from_le_bytes(e[at..at + 4].try_into().unwrap());
        let hash = u64::from_le_bytes(e[..8].try_into().unwrap());
        let (a, count, bytes) = (field(8), field(12), field(16));
        let posting = if count == 1 {
            Posting::Single(a)
        } else {
            Posting::List {
                at: self.meta.postings_at + a as u64,
                count,
                bytes,
            }
        };
        (hash, posting)
    }

    /// Term entries `first..first + n`, in hash order.
    fn read_terms(&self, first: u32, n: u32) -> Result<Vec<(u64, Posting)>, StoreError> {
        let table = (self.meta.terms_at, self.meta.terms, TERM_ENTRY);
        let b = self.read_table(table, first, n, "term ordinal past the term table")?;
        Ok(b.chunks_exact(TERM_ENTRY)
            .map(|e| self.posting(e))
            .collect())
    }

    fn decode(&self, p: &Posting) -> Result<Vec<u32>, StoreError> {
        match *p {
            Posting::Single(o) => Ok(vec![self.single(o)?]),
            Posting::List { at, count, bytes } => {
                self.check_list(at, bytes)?;
                let mut b = vec![0u8; bytes as usize];
                self.io(self.file.read_exact_at(&mut b, at))?;
                decode_postings(&b, count, self.meta.docs).map_err(|d| self.corrupt(d))
            }
        }
    }

    /// The ordinal of a one-trace posting, if it is in the doc table.
    fn single(&self, ordinal: u32) -> Result<u32, StoreError> {
        if ordinal >= self.meta.docs {
            return Err(self.corrupt("posting ordinal past the doc table"));
        }
        Ok(ordinal)
    }

    /// Whether a posting list of `bytes` at `at` lies within its section.
    fn check_list(&self, at: u64, bytes: u32) -> Result<(), StoreError> {
        if at + bytes as u64 > self.meta.terms_at {
            return Err(self.corrupt("posting list past its section"));
        }
        Ok(())
    }

    fn cursor(&self, p: &Posting) -> Result<Cursor<'_>, StoreError> {
        match *p {
            Posting::Single(o) => Cursor::single(self, o),
            Posting::List { at, count, bytes } => Cursor::list(self, at, bytes, count),
        }
    }

    /// The trace of the project with this id, if the segment holds it.
    pub fn find(&self, project: &str, id: &[u8; 16]) -> Result<Option<Candidate>, StoreError> {
        let Some((ps, pe)) = self.project_range(project) else {
            return Ok(None);
        };
        let Some(posting) = self.lookup(term_hash(TRACE_ID_TAG, project, id))? else {
            return Ok(None);
        };
        for ord in self.decode(&posting)? {
            if ord < ps || ord >= pe {
                continue;
            }
            let c = self.read_docs(ord, 1)?[0];
            if &c.key.1 == id {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Offers the newest matching traces of this segment to `top`.
    pub fn probe(&self, probe: &Probe<'_>, top: &mut TopK, k: usize) -> Result<(), StoreError> {
        let hits = self.hits(probe, k)?;
        self.offer(&hits, top)
    }

    /// The ordinals of the (at most `k`) newest matching traces. Starts
    /// reading their doc-table entries in the background, so that a caller
    /// can collect the hits of several segments before reading any entry.
    pub fn hits(&self, probe: &Probe<'_>, k: usize) -> Result<Vec<u32>, StoreError> {
        let Some((ps, pe)) = self.project_range(probe.project) else {
            return Ok(Vec::new());
        };
        if self.meta.max_time <= probe.from || self.meta.min_time >= probe.upper.0.saturating_add(1)
        {
            return Ok(Vec::new());
        }
        // Terms first: a value the segment lacks is usually answered by the
        // Bloom filter without a read. The query's own filters come last in
        // `filters` after the implied kind and tracker, which nearly every
        // trace has, so they are looked up first.
        let mut lists = Vec::new();
        for (field, value) in probe.filters.iter().rev() {
            match self.lookup(term_hash(*field as u8, probe.project, value.as_bytes()))? {
                None => return Ok(Vec::new()),
                // A term every trace of the project has filters nothing.
                Some(p) if p.count() == pe - ps => {}
                Some(p) => lists.push(p),
            }
        }
        // A segment inside the window needs no search of its doc table: on a
        // machine whose page cache cannot hold the index, every read counts.
        let upper = probe.upper;
        let from = probe.from;
        let (start, end) = if from < self.meta.min_time && (self.meta.max_time, [0xff; 16]) < upper
        {
            (ps, pe)
        } else {
            let start = self.partition_point(ps, pe, |key| *key < upper)?;
            (start, self.partition_point(start, pe, |key| key.0 <= from)?)
        };
        if start >= end {
            return Ok(Vec::new());
        }
        let hits: Vec<u32> = if lists.is_empty() {
            (start..end.min(start + k as u32)).collect()
        } else {
            // The lists are read only as far as the page needs them.
            lists.sort_by_key(Posting::count);
            let mut cursors = lists
                .iter()
                .map(|p| self.cursor(p))
                .collect::<Result<Vec<_>, _>>()?;
            let (driver, others) = cursors.split_first_mut().expect("non-empty");
            let mut hits = Vec::new();
            let mut next = driver.seek(start)?;
            'outer: while let Some(o) = next {
                if o >= end || hits.len() >= k {
                    break;
                }
                next = driver.seek(o + 1)?;
                for c in others.iter_mut() {
                    if c.seek(o)? != Some(o) {
                        continue 'outer;
                    }
                }
                hits.push(o);
            }
            hits
        };
        if let (Some(&lo), Some(&hi)) = (hits.first(), hits.last()) {
            if close_together(lo, hi, hits.len()) {
                self.advise_docs(lo, hi - lo + 1);
            } else {
                for &o in &hits {
                    self.advise_docs(o, 1);
                }
            }
        }
        Ok(hits)
    }

    fn advise_docs(&self, first: u32, n: u32) {
        advise_willneed(
            &self.file,
            self.meta.docs_at + first as u64 * self.doc_entry as u64,
            n as u64 * self.doc_entry as u64,
        );
    }

    /// Offers the traces at `hits` (from [`Segment::hits`]) to `top`.
    pub fn offer(&self, hits: &[u32], top: &mut TopK) -> Result<(), StoreError> {
        let (Some(&lo), Some(&hi)) = (hits.first(), hits.last()) else {
            return Ok(());
        };
        // One read when the hits are close together, else one per hit; only
        // the hits' entries are decoded (a span may hold a hundred times
        // more).
        let entries = if close_together(lo, hi, hits.len()) {
            let size = self.doc_entry;
            let span = self.read_doc_span(lo, hi - lo + 1)?;
            hits.iter()
                .map(|&o| self.parse_doc_entry(&span[(o - lo) as usize * size..][..size]))
                .collect()
        } else {
            let mut entries = Vec::with_capacity(hits.len());
            for &o in hits {
                entries.extend(self.read_doc_entries(o, 1)?);
            }
            entries
        };
        for c in self.resolve(entries)? {
            top.offer(c);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memtable::IndexValues;
    use std::fs;

    /// Inserts trace `i` of a test segment: its id, time, frame and
    /// sequence number follow from `i`.
    fn insert_nth(mem: &mut Memtable, project: &str, i: u32, values: [Option<&str>; NF]) {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_le_bytes());
        let frame = FrameRef {
            file: 1,
            offset: i / 8 * 100,
            len: 100,
        };
        let v = IndexValues::new(project, 1000 + i as i64, id, values);
        mem.insert(&v, frame, (i % 8) as u8, i as u64 + 1);
    }

    fn sample_segment(dir: &Path) -> PathBuf {
        let mut mem = Memtable::default();
        for i in 0..120u32 {
            let mut values = [None; NF];
            let service = format!("S{}", i % 3);
            values[0] = Some(service.as_str());
            insert_nth(&mut mem, if i % 2 == 0 { "a" } else { "b" }, i, values);
        }
        let members: Vec<u32> = (0..120).collect();
        write(dir, 0, 1, &mem, &members, false).unwrap()
    }

    /// Posting lists far longer than a read (a value of every third
    /// trace of 30,000), read only in part by a probe: the segment finds
    /// what the memtable it was written from finds, for any window, page
    /// size and pair of filters.
    #[test]
    fn a_probe_reading_long_lists_in_part_finds_what_the_memtable_finds() {
        let dir = tempfile::tempdir().unwrap();
        let mut mem = Memtable::default();
        let n = 30_000u32;
        for i in 0..n {
            let mut values = [None; NF];
            let (service, user) = (format!("S{}", i % 3), format!("U{}", i % 7));
            values[0] = Some(service.as_str());
            values[1] = Some(user.as_str());
            insert_nth(&mut mem, "a", i, values);
        }
        let members: Vec<u32> = (0..n).collect();
        let seg = Segment::open(&write(dir.path(), 0, 1, &mem, &members, false).unwrap()).unwrap();
        let filters = |pairs: &[(Field, &str)]| -> Vec<(Field, String)> {
            pairs.iter().map(|(f, v)| (*f, v.to_string())).collect()
        };
        let cases = [
            filters(&[(Field::ServiceType, "S1")]),
            filters(&[(Field::ServiceType, "S2"), (Field::User, "U3")]),
            filters(&[(Field::User, "U6"), (Field::ServiceType, "S0")]),
        ];
        for filters in &cases {
            for (from, to) in [(0, i64::MAX), (5_000, 20_000), (29_000, 40_000), (0, 1_500)] {
                for k in [1, 201, 5_000] {
                    let probe = Probe {
                        project: "a",
                        from,
                        upper: (to, [0; 16]),
                        filters,
                    };
                    let (mut want, mut got) = (TopK::new(k), TopK::new(k));
                    mem.probe(&probe, &mut want);
                    seg.probe(&probe, &mut got, k).unwrap();
                    assert_eq!(
                        got.into_sorted(),
                        want.into_sorted(),
                        "{filters:?} {from}..{to} k {k}"
                    );
                }
            }
        }
    }

    /// A segment of the current format and one of format 2 (its frame
    /// table read from the file as docs are), as written.
    fn good_segments(dir: &Path) -> [Vec<u8>; 2] {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/segment");
        [
            fs::read(sample_segment(dir)).unwrap(),
            fs::read(corpus.join("valid-forty-traces-format2")).unwrap(),
        ]
    }

    /// Opens the bytes as a segment and runs every kind of read on it.
    fn exercise(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        fs::write(path, bytes).unwrap();
        crate::fuzzing::segment_file(path)
    }

    #[test]
    fn a_damaged_segment_is_refused_by_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("probe.seg");
        for good in good_segments(dir.path()) {
            exercise(&probe, &good).unwrap();
            refused_when_flipped(&probe, &good);
        }
    }

    fn refused_when_flipped(probe: &Path, good: &[u8]) {
        for at in (0..good.len()).step_by(7) {
            let mut bad = good.to_vec();
            bad[at] ^= 0x10;
            let err = exercise(probe, &bad).expect_err("a flipped byte is noticed");
            assert!(
                matches!(
                    err,
                    StoreError::Corrupt {
                        what: "index segment",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn damage_behind_a_valid_checksum_is_an_error_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("probe.seg");
        for good in good_segments(dir.path()) {
            damaged_behind_its_checksum(&probe, &good);
        }
    }

    fn damaged_behind_its_checksum(probe: &Path, good: &[u8]) {
        let body = good.len() - 8;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for at in (0..body).step_by(3) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut bad = good.to_vec();
            bad[at] = rng as u8;
            // As if written that way: the checksum matches the damage.
            let crc = crc32fast::hash(&bad[..body]);
            bad[body..body + 4].copy_from_slice(&crc.to_le_bytes());
            let _ = exercise(probe, &bad);
        }
    }

    #[test]
    fn posting_lists_decode_or_fail_cleanly() {
        let mut buf = Vec::new();
        for o in [3u32, 200, 70_000, 1 << 30] {
            varint(&mut buf, o);
        }
        assert_eq!(
            decode_postings(&buf, 4, u32::MAX),
            Ok(vec![3, 203, 70_203, (1 << 30) + 70_203])
        );
        assert!(decode_postings(&buf, 4, 100).is_err());
        assert!(decode_postings(&buf, 5, u32::MAX).is_err());
        assert!(decode_postings(&[0xff; 6], 1, u32::MAX).is_err());
        assert!(decode_postings(&[0xff, 0xff, 0xff, 0xff, 0x1f], 1, u32::MAX).is_err());
        assert!(decode_postings(&[0x80], 1, u32::MAX).is_err());
        let wrap = [0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(decode_postings(&wrap, 2, u32::MAX).is_err());
    }
}
