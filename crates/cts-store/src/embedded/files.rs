//! The index's files beside the journal: the manifest (which segments make
//! up the index, how far it is durable) and the summaries of closed journal
//! files.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{JournalFile, Manifest, MANIFEST};
use crate::segment::{Segment, SummaryCache};
use crate::{sealed, StoreError};

pub(super) fn rel(base: &Path, path: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

pub(super) fn sidecar_path(journal_file: &Path) -> PathBuf {
    journal_file.with_extension("meta")
}

/// The summary of a closed journal file, if present, intact and still
/// matching the file's length (anything else means: scan the file).
pub(super) fn read_sidecar(journal_file: &Path) -> Option<JournalFile> {
    let path = sidecar_path(journal_file);
    let info: JournalFile = match sealed::unseal(&fs::read(&path).ok()?) {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "a journal summary does not check out; scanning its journal file instead");
            return None;
        }
    };
    let len = fs::metadata(journal_file).ok()?.len();
    (info.len == len).then_some(info)
}

/// Best effort: without it the next start scans the file instead.
pub(super) fn write_sidecar(journal_file: &Path, info: &JournalFile) {
    let path = sidecar_path(journal_file);
    let body = sealed::seal(info);
    if let Err(e) = cts_fs::write_atomic(&path, &body, false) {
        tracing::warn!(file = %path.display(), error = %e, "could not write a journal summary; the next start scans the file");
    }
}

pub(super) fn load_manifest(index_dir: &Path) -> Result<Manifest, StoreError> {
    let path = index_dir.join(MANIFEST);
    match fs::read(&path) {
        Ok(b) => sealed::unseal(&b).map_err(|detail| StoreError::Corrupt {
            what: "index manifest",
            path,
            detail,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest {
            next_flush_id: 1,
            ..Manifest::default()
        }),
        Err(e) => Err(StoreError::Io { path, source: e }),
    }
}

pub(super) fn store_manifest(
    index_dir: &Path,
    m: &Manifest,
    fsync: bool,
) -> Result<(), StoreError> {
    let path = index_dir.join(MANIFEST);
    let body = sealed::seal(m);
    cts_fs::write_atomic(&path, &body, fsync).map_err(StoreError::io(&path))
}

/// Opens the manifest's segments and removes files a crash left behind.
pub(super) fn open_segments(
    index_dir: &Path,
    m: &Manifest,
    summaries: &Arc<SummaryCache>,
) -> Result<Vec<Arc<Segment>>, StoreError> {
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
        .map(|s| Segment::open_cached(&index_dir.join(s), Arc::clone(summaries)).map(Arc::new))
        .collect()
}
