//! Open journal files for reads (consumers and query bodies), at most
//! [`OPEN_READERS`] of them: the journal keeps 7 days of 64 MB files, and a
//! consumer reading it through (a transfer catching up) would otherwise
//! leave every one of them open until retention removes it.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::journal;

/// Journal files kept open between reads: the ones being written and read
/// now (the newest few for queries, one or two per consumer). A read
/// holds its file's `Arc`, so one closed here stays open until it ends.
pub(super) const OPEN_READERS: usize = 16;

#[derive(Default)]
pub(super) struct Readers {
    /// file id → (the open file, when it was last used).
    open: Mutex<HashMap<u32, (Arc<File>, u64)>>,
    /// A clock of uses, for the least recently used.
    uses: AtomicU64,
}

impl Readers {
    /// The open journal file `id` in `dir`, opened now if it is not open;
    /// `None` when it is gone (retention removed it).
    pub(super) fn get(&self, dir: &Path, id: u32) -> Option<Arc<File>> {
        let now = self.uses.fetch_add(1, Ordering::Relaxed);
        if let Some((f, used)) = self.open.lock().get_mut(&id) {
            *used = now;
            return Some(Arc::clone(f));
        }
        // Opened outside the lock: other reads go on meanwhile.
        let f = Arc::new(File::open(dir.join(journal::file_name(id))).ok()?);
        let mut open = self.open.lock();
        open.insert(id, (Arc::clone(&f), now));
        if open.len() > OPEN_READERS {
            let oldest = open
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                open.remove(&oldest);
            }
        }
        Some(f)
    }

    /// Forgets file `id` (removed by retention).
    pub(super) fn remove(&self, id: u32) {
        self.open.lock().remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::write_faults::batch;
    use crate::embedded::{EmbeddedStore, StoreConfig};
    use crate::TraceStore;

    /// This process's descriptors open on files under `dir`.
    fn open_under(dir: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.starts_with(dir))
            .count()
    }

    #[test]
    fn reading_the_whole_journal_keeps_few_files_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(dir.path());
        cfg.fsync = false;
        cfg.journal_segment_bytes = 4 << 10;
        let store = EmbeddedStore::open(cfg).unwrap();
        for k in 0..150 {
            store.append(batch(&format!("b{k}"), 20)).unwrap();
        }
        let journal = dir.path().join("journal");
        let files = std::fs::read_dir(&journal)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("wal".as_ref()))
            .count();
        assert!(files > 3 * OPEN_READERS, "{files} journal files");

        // A consumer reading it all through, as a transfer catching up does.
        let mut cursor = 0;
        while let Some(last) = store.read_journal(cursor, 50).unwrap().entries.last() {
            cursor = last.seq;
        }
        assert_eq!(cursor, 3000);
        // The file being written, and the readers kept.
        let open = open_under(&journal);
        assert!(
            open <= OPEN_READERS + 1,
            "{open} descriptors open on {files} journal files"
        );
    }
}
