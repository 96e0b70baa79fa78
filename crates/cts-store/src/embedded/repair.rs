//! `ctsd repair`: the damaged ranges `ctsd check` finds in journal files are
//! moved into `DATA_DIR/quarantine/` (saved there first, never deleted),
//! damaged summaries are dropped (the next start rewrites them), and the
//! index is rebuilt from what is left, so every trace that could be
//! recovered stays queryable. The quarantined ranges are listed in
//! `quarantine/QUARANTINE.json` and reported (readiness detail, a metric)
//! until an operator acknowledges them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::check::{check_unlocked, Damage};
use super::recovery::lock_dir;
use super::{EmbeddedStore, StoreConfig};
use crate::{sealed, StoreError, TraceStore};

const LIST: &str = "QUARANTINE.json";

/// A journal range moved into quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The journal file it was cut from.
    pub file: String,
    pub offset: u64,
    pub len: u64,
    /// Its bytes, in `quarantine/`.
    pub saved_as: String,
    /// The trace sequence numbers it held (`last` is `u64::MAX` when the
    /// damage ran to the end of the journal).
    pub first_seq: u64,
    pub last_seq: u64,
    pub acknowledged: bool,
}

/// What [`EmbeddedStore::repair`] did.
#[derive(Debug, Clone, Default)]
pub struct RepairReport {
    pub quarantined: Vec<Quarantined>,
    pub summaries_dropped: usize,
    /// Traces in the rebuilt index.
    pub indexed: u64,
    /// Damage repair cannot mend (a damaged dictionary: the frames that use
    /// it stay unreadable, and are listed by `ctsd check`).
    pub unrepaired: Vec<Damage>,
}

pub(super) fn quarantine_dir(dir: &Path) -> PathBuf {
    dir.join("quarantine")
}

/// The quarantine list (empty without one).
pub(super) fn load_list(dir: &Path) -> Result<Vec<Quarantined>, StoreError> {
    let path = quarantine_dir(dir).join(LIST);
    match fs::read(&path) {
        Ok(b) => sealed::unseal(&b).map_err(|detail| StoreError::Corrupt {
            what: "quarantine list",
            path,
            detail,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::Io { path, source: e }),
    }
}

fn store_list(dir: &Path, list: &[Quarantined]) -> Result<(), StoreError> {
    let qdir = quarantine_dir(dir);
    fs::create_dir_all(&qdir).map_err(StoreError::io(&qdir))?;
    let path = qdir.join(LIST);
    cts_fs::write_atomic(&path, &sealed::seal(&list), true).map_err(StoreError::io(&path))
}

impl EmbeddedStore {
    /// Quarantines damaged journal ranges and rebuilds the index (the
    /// server stopped).
    pub fn repair(config: StoreConfig) -> Result<RepairReport, StoreError> {
        let lock = lock_dir(&config.dir)?;
        let check = check_unlocked(&config)?;
        let mut list = load_list(&config.dir)?;
        let mut report = RepairReport::default();
        let mut ranges: BTreeMap<PathBuf, Vec<&Damage>> = BTreeMap::new();
        for d in &check.damage {
            if d.range.is_some() {
                ranges.entry(d.path.clone()).or_default().push(d);
            } else if d.path.extension().is_some_and(|e| e == "meta") {
                fs::remove_file(&d.path).map_err(StoreError::io(&d.path))?;
                report.summaries_dropped += 1;
            } else if d
                .path
                .extension()
                .is_some_and(|e| e == "zdict" || e == "wal")
            {
                report.unrepaired.push(d.clone());
            }
        }
        for (path, damage) in ranges {
            let moved = quarantine_ranges(&config.dir, &path, &damage, &mut list)?;
            report.quarantined.extend(moved);
        }
        // The index may point into what moved: it is rebuilt in any case.
        let index_dir = config.dir.join("index");
        if index_dir.exists() {
            fs::remove_dir_all(&index_dir).map_err(StoreError::io(&index_dir))?;
        }
        let store = EmbeddedStore::open_locked(config, lock)?;
        store.close()?;
        report.indexed = store.stats().indexed_traces;
        Ok(report)
    }

    /// Marks every quarantined range as seen by an operator: it is no longer
    /// reported. Returns how many were newly acknowledged.
    pub fn acknowledge_quarantine(config: &StoreConfig) -> Result<usize, StoreError> {
        let _lock = lock_dir(&config.dir)?;
        let mut list = load_list(&config.dir)?;
        let newly = list.iter().filter(|q| !q.acknowledged).count();
        for q in &mut list {
            q.acknowledged = true;
        }
        store_list(&config.dir, &list)?;
        Ok(newly)
    }
}

/// Saves the damaged ranges (in file order) of one journal file, whose
/// bytes are `data`, into quarantine and lists them (a range listed before,
/// by a read-only start, is listed once). The journal file is not touched.
pub(super) fn save_ranges(
    dir: &Path,
    path: &Path,
    data: &[u8],
    damage: &[&Damage],
    list: &mut Vec<Quarantined>,
) -> Result<Vec<Quarantined>, StoreError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let qdir = quarantine_dir(dir);
    fs::create_dir_all(&qdir).map_err(StoreError::io(&qdir))?;
    let mut saved = Vec::new();
    for d in damage {
        let (offset, len) = d.range.expect("only ranges are passed");
        let saved_as = format!("{name}.{offset}.damaged");
        let to = qdir.join(&saved_as);
        let bytes = &data[offset as usize..(offset + len) as usize];
        cts_fs::write_atomic(&to, bytes, true).map_err(StoreError::io(&to))?;
        let (first_seq, last_seq) = d.seqs.unwrap_or((0, 0));
        saved.push(Quarantined {
            file: name.clone(),
            offset,
            len,
            saved_as,
            first_seq,
            last_seq,
            acknowledged: false,
        });
    }
    for q in &saved {
        if !list
            .iter()
            .any(|l| (&l.file, l.offset, l.len) == (&q.file, q.offset, q.len))
        {
            list.push(q.clone());
        }
    }
    store_list(dir, list)?;
    Ok(saved)
}

/// Saves the damaged ranges of one journal file into quarantine, lists
/// them, and only then rewrites the file without them.
fn quarantine_ranges(
    dir: &Path,
    path: &Path,
    damage: &[&Damage],
    list: &mut Vec<Quarantined>,
) -> Result<Vec<Quarantined>, StoreError> {
    let data = fs::read(path).map_err(StoreError::io(path))?;
    let moved = save_ranges(dir, path, &data, damage, list)?;
    let mut kept = Vec::with_capacity(data.len());
    let mut at = 0usize;
    for q in &moved {
        kept.extend_from_slice(&data[at..q.offset as usize]);
        at = (q.offset + q.len) as usize;
    }
    kept.extend_from_slice(&data[at..]);
    cts_fs::write_atomic(path, &kept, true).map_err(StoreError::io(path))?;
    let summary = super::files::sidecar_path(path);
    match fs::remove_file(&summary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(StoreError::io(&summary)(e))
        }
        _ => {}
    }
    tracing::warn!(file = %path.display(), ranges = moved.len(), "moved damaged journal ranges into quarantine");
    Ok(moved)
}
