//! Writing a segment file, shared by a memtable flush and a merge: the
//! sections are streamed in order through one CRC into a staged file that
//! is synced and renamed into place, so a crash leaves the whole segment or
//! none (a staged file is unlisted, and the next start removes it).

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{bloom_positions, partition_dir_name, Meta, BLOOM_BITS_PER_TERM, MAGIC, TERM_SAMPLE};
use super::{DOC_SAMPLE, TERM_ENTRY};
use crate::journal::{sync_dir, FrameRef};
use crate::StoreError;

/// Written bytes are handed to the kernel's writeback at this step, so a
/// large segment's final fsync does not flush one burst that stalls other
/// readers of the disk.
const WRITEBACK_STEP: u64 = 4 << 20;
/// Term entries kept in memory before they go to the spill file: a flush
/// of the default memtable (65,536 traces) never spills; a large merge
/// holds at most this much of its term table. The unit tests spill after
/// a few hundred terms, so that they cover the spill file.
const TERM_BUFFER: usize = if cfg!(test) { 4096 } else { 8 << 20 };

/// The file name of segment `id`.
pub fn file_name(id: u64) -> String {
    format!("{id:010}.seg")
}

/// A segment file being written.
pub(crate) struct SegmentFile {
    path: PathBuf,
    staged: PathBuf,
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
    len: u64,
    handed_back: u64,
    fsync: bool,
    done: bool,
}

impl SegmentFile {
    pub fn create(dir: &Path, partition: i64, id: u64, fsync: bool) -> Result<Self, StoreError> {
        let pdir = dir.join(partition_dir_name(partition));
        cts_fs::create_dir_all(&pdir).map_err(StoreError::io(&pdir))?;
        let path = pdir.join(file_name(id));
        let staged = path.with_extension("seg-new");
        let file = cts_fs::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&staged)
            .map_err(StoreError::io(&staged))?;
        Ok(SegmentFile {
            path,
            staged,
            out: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            len: 0,
            handed_back: 0,
            fsync,
            done: false,
        })
    }

    /// Bytes written so far: the offset of the next section.
    pub fn at(&self) -> u64 {
        self.len
    }

    /// Where this segment's term table waits while its postings are
    /// written, when it is too large for memory.
    fn spill_path(&self) -> PathBuf {
        self.path.with_extension("seg-terms")
    }

    pub fn put(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.raw(bytes)?;
        self.crc.update(bytes);
        Ok(())
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.out
            .write_all(bytes)
            .map_err(StoreError::io(&self.staged))?;
        self.len += bytes.len() as u64;
        if self.fsync && self.len - self.handed_back >= WRITEBACK_STEP {
            self.out.flush().map_err(StoreError::io(&self.staged))?;
            start_writeback(self.out.get_ref(), self.handed_back, self.len);
            self.handed_back = self.len;
        }
        Ok(())
    }

    /// Writes the footer, syncs and moves the file into place.
    fn finish(mut self, meta: &Meta) -> Result<PathBuf, StoreError> {
        let meta_json = serde_json::to_vec(meta).expect("meta serializes");
        self.put(&meta_json)?;
        self.put(&(meta_json.len() as u32).to_le_bytes())?;
        let crc = self.crc.clone().finalize();
        self.raw(&crc.to_le_bytes())?;
        self.raw(&MAGIC.to_le_bytes())?;
        self.out.flush().map_err(StoreError::io(&self.staged))?;
        if self.fsync {
            self.out
                .get_ref()
                .sync_all()
                .map_err(StoreError::io(&self.staged))?;
        }
        std::fs::rename(&self.staged, &self.path).map_err(StoreError::io(&self.path))?;
        self.done = true;
        if self.fsync {
            // The partition directory may be new: its own entry too.
            let pdir = cts_fs::parent_dir(&self.path);
            sync_dir(pdir)?;
            sync_dir(cts_fs::parent_dir(pdir))?;
        }
        Ok(self.path.clone())
    }
}

impl Drop for SegmentFile {
    /// A segment that was not finished leaves nothing behind.
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.staged);
        }
    }
}

/// Starts writeback of `[from, to)` without waiting (`sync_file_range`);
/// only a hint for smoother I/O, the final fsync is what makes it durable.
fn start_writeback(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range reads no memory of ours; the descriptor is
    // open for as long as `file` is borrowed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            (to - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// The doc table, written entry by entry in query order, with what the
/// footer says of it (samples, project ranges, time span).
pub(crate) struct DocTable {
    docs_at: u64,
    n: u32,
    samples: Vec<u8>,
    projects: Vec<(String, u32, u32)>,
    min_time: i64,
    max_time: i64,
}

impl DocTable {
    /// Starts the doc table: the first section.
    pub fn new(out: &SegmentFile) -> Self {
        DocTable {
            docs_at: out.at(),
            n: 0,
            samples: Vec::new(),
            projects: Vec::new(),
            min_time: i64::MAX,
            max_time: i64::MIN,
        }
    }

    /// Appends a doc (in (project, time desc, id desc) order); returns its ordinal.
    pub fn push(
        &mut self,
        out: &mut SegmentFile,
        project: &str,
        key: (i64, [u8; 16]),
        frame: FrameRef,
        idx: u8,
    ) -> Result<u32, StoreError> {
        let ord = self.n;
        self.n = ord.checked_add(1).ok_or_else(|| {
            StoreError::Unavailable("a segment holds at most 2^32 - 1 traces".into())
        })?;
        match self.projects.last_mut() {
            Some((name, _, end)) if name == project => *end = ord + 1,
            _ => self.projects.push((project.to_string(), ord, ord + 1)),
        }
        let mut e = [0u8; super::DOC_ENTRY];
        e[..8].copy_from_slice(&key.0.to_le_bytes());
        e[8..24].copy_from_slice(&key.1);
        e[24..28].copy_from_slice(&frame.file.to_le_bytes());
        e[28..32].copy_from_slice(&frame.offset.to_le_bytes());
        e[32..36].copy_from_slice(&frame.len.to_le_bytes());
        e[36] = idx;
        out.put(&e)?;
        if (ord as usize).is_multiple_of(DOC_SAMPLE) {
            self.samples.extend_from_slice(&e[..24]);
        }
        self.min_time = self.min_time.min(key.0);
        self.max_time = self.max_time.max(key.0);
        Ok(ord)
    }
}

/// The posting lists (streamed into the segment) and the term table (kept
/// aside, in memory or a spill file beside the segment, until the postings
/// are written), with its samples.
pub(crate) struct TermTable {
    postings_at: u64,
    entries: Vec<u8>,
    spill: Option<(PathBuf, File)>,
    samples: Vec<u8>,
    n: u32,
    list: Vec<u8>,
}

impl TermTable {
    /// Starts the postings after the doc table.
    pub fn new(out: &SegmentFile) -> Self {
        TermTable {
            postings_at: out.at(),
            entries: Vec::new(),
            spill: None,
            samples: Vec::new(),
            n: 0,
            list: Vec::new(),
        }
    }

    /// Adds a term (in ascending hash order) with its ordinals (ascending).
    pub fn push(
        &mut self,
        out: &mut SegmentFile,
        hash: u64,
        ords: &[u32],
    ) -> Result<(), StoreError> {
        let (a, len) = match ords {
            [single] => (*single, 0u32),
            _ => {
                self.list.clear();
                let mut prev = 0u32;
                for (k, &o) in ords.iter().enumerate() {
                    super::varint(&mut self.list, if k == 0 { o } else { o - prev });
                    prev = o;
                }
                let at = u32::try_from(out.at() - self.postings_at).map_err(|_| {
                    StoreError::Unavailable("a segment's posting lists exceed 4 GiB".into())
                })?;
                out.put(&self.list)?;
                (at, self.list.len() as u32)
            }
        };
        let mut e = [0u8; TERM_ENTRY];
        e[..8].copy_from_slice(&hash.to_le_bytes());
        e[8..12].copy_from_slice(&a.to_le_bytes());
        e[12..16].copy_from_slice(&(ords.len() as u32).to_le_bytes());
        e[16..20].copy_from_slice(&len.to_le_bytes());
        self.entries.extend_from_slice(&e);
        if (self.n as usize).is_multiple_of(TERM_SAMPLE) {
            self.samples.extend_from_slice(&hash.to_le_bytes());
        }
        self.n += 1;
        if self.entries.len() >= TERM_BUFFER {
            self.spill_entries(out.spill_path())?;
        }
        Ok(())
    }

    fn spill_entries(&mut self, path: PathBuf) -> Result<(), StoreError> {
        if self.spill.is_none() {
            // Unlisted, so a crash leaves nothing the next start keeps.
            let file = cts_fs::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(StoreError::io(&path))?;
            self.spill = Some((path, file));
        }
        let (path, file) = self.spill.as_mut().expect("created above");
        file.write_all(&self.entries)
            .map_err(StoreError::io(&*path))?;
        self.entries.clear();
        Ok(())
    }

    /// Copies the term table into the segment after the postings; answers
    /// the Bloom filter of its hashes. The filter is made here, sized by
    /// the exact count of terms, because a merge knows only an upper bound
    /// before its end (terms its inputs share are counted once per input:
    /// sized by that bound, merged filters held a third more bits than
    /// needed, and they stay in memory for the segment's life).
    fn copy_into(&mut self, out: &mut SegmentFile) -> Result<Vec<u64>, StoreError> {
        let words = (self.n as usize * BLOOM_BITS_PER_TERM).div_ceil(64).max(1);
        let mut bloom = vec![0u64; words];
        let mut add = |entries: &[u8]| {
            for e in entries.chunks_exact(TERM_ENTRY) {
                let hash = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
                for bit in bloom_positions(hash, words as u64 * 64) {
                    bloom[(bit / 64) as usize] |= 1 << (bit % 64);
                }
            }
        };
        if let Some((path, file)) = &mut self.spill {
            file.seek(SeekFrom::Start(0))
                .map_err(StoreError::io(&*path))?;
            // Whole entries per read: the file holds only whole entries.
            let mut buf = vec![0u8; TERM_BUFFER / TERM_ENTRY * TERM_ENTRY];
            loop {
                let n = fill(file, &mut buf).map_err(StoreError::io(&*path))?;
                if n == 0 {
                    break;
                }
                add(&buf[..n]);
                out.put(&buf[..n])?;
            }
        }
        add(&self.entries);
        out.put(&self.entries)?;
        Ok(bloom)
    }
}

/// Reads until `buf` is full or the file ends; answers the bytes read.
fn fill(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl Drop for TermTable {
    fn drop(&mut self) {
        if let Some((path, _)) = &self.spill {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes the sections after the postings and the footer; returns the
/// segment's path once it is in place.
pub(crate) fn finish(
    mut out: SegmentFile,
    partition: i64,
    flush_id: u64,
    docs: DocTable,
    mut terms: TermTable,
) -> Result<PathBuf, StoreError> {
    let terms_at = out.at();
    let bloom = terms.copy_into(&mut out)?;
    let tsample_at = out.at();
    out.put(&terms.samples)?;
    let dsample_at = out.at();
    out.put(&docs.samples)?;
    let bloom_at = out.at();
    let bloom_bytes: Vec<u8> = bloom.iter().flat_map(|w| w.to_le_bytes()).collect();
    out.put(&bloom_bytes)?;
    let meta = Meta {
        partition,
        flush_id,
        docs: docs.n,
        frames: 0,
        terms: terms.n,
        min_time: docs.min_time,
        max_time: docs.max_time,
        frames_at: 0,
        docs_at: docs.docs_at,
        postings_at: terms.postings_at,
        terms_at,
        tsample_at,
        dsample_at,
        bloom_at,
        bloom_words: bloom.len() as u64,
        projects: docs.projects,
    };
    out.finish(&meta)
}
