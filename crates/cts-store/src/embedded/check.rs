//! `ctsd check`: an offline pass over every file of the store (the server
//! stopped: the directory lock is taken) that verifies every journal record
//! and frame, every summary, the manifest, every segment and dictionary, and
//! says which trace sequence numbers a damage affects. It changes nothing.

use std::fs;
use std::path::{Path, PathBuf};

use cts_model::Trace;

use super::files::{load_manifest, sidecar_path};
use super::recovery::lock_dir;
use super::{EmbeddedStore, JournalFile, StoreConfig};
use crate::dict::Dictionaries;
use crate::journal::{self, Tail};
use crate::segment::Segment;
use crate::{sealed, StoreError};

/// One damaged thing found by [`EmbeddedStore::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    /// What the file is and what is wrong, with what to do.
    pub detail: String,
    /// A damaged range of a journal file: (offset, length). Such ranges are
    /// what `ctsd repair` quarantines.
    pub range: Option<(u64, u64)>,
    /// The trace sequence numbers it affects (first, last), when known;
    /// `last` is `u64::MAX` for a damage at the end of the journal.
    pub seqs: Option<(u64, u64)>,
}

/// What [`EmbeddedStore::check`] found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub journal_files: usize,
    pub records: u64,
    pub traces: u64,
    pub segments: usize,
    /// Torn tails (never acknowledged; cut at the next start), not damage.
    pub torn_tails: Vec<PathBuf>,
    pub damage: Vec<Damage>,
}

impl EmbeddedStore {
    /// Verifies every file of the store in `config.dir`; refuses while a
    /// server (or anything else) has the store open.
    pub fn check(config: &StoreConfig) -> Result<CheckReport, StoreError> {
        let _lock = lock_dir(&config.dir)?;
        check_unlocked(config)
    }
}

pub(super) fn check_unlocked(config: &StoreConfig) -> Result<CheckReport, StoreError> {
    let journal_dir = config.dir.join("journal");
    let index_dir = config.dir.join("index");
    let mut report = CheckReport::default();
    if !journal_dir.exists() {
        // No journal: nothing was ever stored here.
        return Ok(report);
    }
    let dicts = Dictionaries::open(&journal_dir, false)?;
    check_dictionaries(&journal_dir, &dicts, &mut report)?;
    let mut last_seq = 0;
    for (id, path) in &journal::list_files(&journal_dir)? {
        report.journal_files += 1;
        last_seq = check_journal_file(*id, path, &dicts, last_seq, &mut report, &mut Vec::new())?;
    }
    match load_manifest(&index_dir) {
        Err(e) => report.damage.push(Damage {
            path: index_dir.join(super::MANIFEST),
            detail: e.to_string(),
            range: None,
            seqs: None,
        }),
        Ok(m) => {
            if m.durable_seq > last_seq {
                report.damage.push(Damage {
                    path: index_dir.join(super::MANIFEST),
                    detail: format!(
                        "the index holds traces up to sequence number {} but the journal ends at {last_seq}; `ctsd reindex` rebuilds the index from the journal",
                        m.durable_seq
                    ),
                    range: None,
                    seqs: Some((last_seq + 1, m.durable_seq)),
                });
            }
            for s in &m.segments {
                report.segments += 1;
                if let Err(e) = Segment::open(&index_dir.join(s)) {
                    report.damage.push(Damage {
                        path: index_dir.join(s),
                        detail: e.to_string(),
                        range: None,
                        seqs: None,
                    });
                }
            }
        }
    }
    Ok(report)
}

fn check_dictionaries(
    dir: &Path,
    dicts: &Dictionaries,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    for id in crate::dict::list(dir)? {
        if let Err(e) = dicts.decoder(id) {
            report.damage.push(Damage {
                path: dir.join(crate::dict::file_name(id)),
                detail: e.to_string(),
                range: None,
                seqs: None,
            });
        }
    }
    Ok(())
}

/// Checks the records of one journal file and its summary; returns the last
/// sequence number seen. The valid records, also those after a damaged
/// range, go into `records` (frame offsets from the start of the file).
pub(super) fn check_journal_file(
    id: u32,
    path: &Path,
    dicts: &Dictionaries,
    mut last_seq: u64,
    report: &mut CheckReport,
    records: &mut Vec<journal::ScannedRecord>,
) -> Result<u64, StoreError> {
    let data = fs::read(path).map_err(StoreError::io(path))?;
    let mut pos = 0usize;
    loop {
        let scan = journal::scan_bytes(id, &data[pos..]);
        if let Some(first) = scan.records.first() {
            // A damage at the end of the previous file ends before this.
            for d in &mut report.damage {
                if let Some((_, to)) = d.seqs.as_mut().filter(|s| s.1 == u64::MAX) {
                    *to = first.first_seq - 1;
                }
            }
        }
        for r in &scan.records {
            report.records += 1;
            report.traces += r.count as u64;
            for (n, f) in r.frames.iter().enumerate() {
                let at = pos + f.offset as usize;
                let frame = &data[at..at + f.len as usize];
                if let Err(detail) = check_frame(dicts, path, frame) {
                    let first = r.first_seq + (n * journal::FRAME_DOCS) as u64;
                    let last = (first + journal::FRAME_DOCS as u64 - 1)
                        .min(r.first_seq + r.count as u64 - 1);
                    report.damage.push(Damage {
                        path: path.to_path_buf(),
                        detail: format!("the frame at byte {at}: {detail}"),
                        range: None,
                        seqs: Some((first, last)),
                    });
                }
            }
            last_seq = last_seq.max(r.first_seq + r.count as u64 - 1);
        }
        records.extend(scan.records.into_iter().map(|mut r| {
            for f in &mut r.frames {
                f.offset += pos as u32;
            }
            r
        }));
        let bad_at = pos as u64 + scan.valid_len;
        match scan.tail {
            Tail::Clean => break,
            Tail::Torn => {
                report.torn_tails.push(path.to_path_buf());
                break;
            }
            Tail::Corrupt { resumes } => {
                let end = resumes.map_or(data.len() as u64, |n| bad_at + n);
                let next_first = resumes
                    .and_then(|_| journal::parse_head(&data[end as usize..]))
                    .map(|h| h.first_seq);
                report.damage.push(Damage {
                    path: path.to_path_buf(),
                    detail: journal::damage(path, bad_at, resumes).to_string(),
                    range: Some((bad_at, end - bad_at)),
                    seqs: Some((last_seq + 1, next_first.map_or(u64::MAX, |n| n - 1))),
                });
                if resumes.is_none() {
                    break;
                }
                pos = end as usize;
            }
        }
    }
    check_summary(path, data.len() as u64, last_seq, report);
    Ok(last_seq)
}

/// Decompresses a frame (its checksum is checked) and parses its traces.
fn check_frame(dicts: &Dictionaries, path: &Path, frame: &[u8]) -> Result<(), String> {
    journal::with_frame_bytes(dicts, path, frame, |raw| {
        let docs = journal::split_frame(raw);
        if docs.len() != frame[4] as usize {
            return Err(format!(
                "holds {} traces, its header says {}",
                docs.len(),
                frame[4]
            ));
        }
        for doc in docs {
            serde_json::from_slice::<Trace>(doc)
                .map_err(|e| format!("a trace does not parse: {e}"))?;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?
}

fn check_summary(journal_file: &Path, len: u64, last_seq: u64, report: &mut CheckReport) {
    let path = sidecar_path(journal_file);
    let Ok(bytes) = fs::read(&path) else {
        return;
    };
    let problem = match sealed::unseal::<JournalFile>(&bytes) {
        Err(e) => Some(e),
        Ok(info) if info.len == len && info.last_seq != last_seq => Some(format!(
            "says the file ends at sequence number {}, it ends at {last_seq}",
            info.last_seq
        )),
        Ok(_) => None,
    };
    if let Some(p) = problem {
        report.damage.push(Damage {
            path,
            detail: format!("journal summary: {p}; the server ignores it and scans the file, `ctsd repair` rewrites it"),
            range: None,
            seqs: None,
        });
    }
}
