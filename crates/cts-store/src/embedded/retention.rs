//! Retention: whole index partitions and closed journal files past the
//! cutoff go, unless a journal consumer still holds them.

use std::collections::HashSet;
use std::fs;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::files::{rel, sidecar_path, store_manifest};
use super::EmbeddedStore;
use crate::journal;
use crate::segment::{self, Segment};
use crate::{RetentionReport, StoreError};

impl EmbeddedStore {
    pub(super) fn enforce_retention_before(
        &self,
        cutoff_ms: i64,
    ) -> Result<RetentionReport, StoreError> {
        if self.inner.read_only.is_some() {
            // Read-only after damage: nothing is deleted until a repair.
            return Ok(RetentionReport::default());
        }
        let pm = self.inner.config.partition_ms;
        let mut report = RetentionReport::default();
        // A merge in progress keeps its inputs until it has switched.
        let _merging = self.inner.merging.lock();
        // Index: whole partitions that end before the cutoff.
        let dropped: Vec<Arc<Segment>> = {
            let mut idx = self.inner.index.write();
            let (gone, keep): (Vec<_>, Vec<_>) = idx
                .segments
                .drain(..)
                .partition(|s| s.partition() + pm <= cutoff_ms);
            idx.segments = keep;
            gone
        };
        if !dropped.is_empty() {
            let mut m = self.inner.manifest.lock();
            let gone: HashSet<String> = dropped
                .iter()
                .map(|s| rel(&self.inner.index_dir, &s.path))
                .collect();
            m.segments.retain(|s| !gone.contains(s));
            store_manifest(&self.inner.index_dir, &m, self.inner.config.fsync)?;
            let partitions: HashSet<i64> = dropped.iter().map(|s| s.partition()).collect();
            for p in &partitions {
                let dir = self.inner.index_dir.join(segment::partition_dir_name(*p));
                fs::remove_dir_all(&dir).map_err(StoreError::io(&dir))?;
            }
            report.index_partitions_dropped = partitions.len();
        }
        // Journal: closed files whose every trace is in a dropped partition,
        // already in a durable segment and read by every journal consumer.
        let durable = self.inner.durable_seq.load(Ordering::Acquire);
        let mut files = self.inner.journal_files.lock();
        let consumed_by_all = self.feed.consumed_by_all();
        let newest = files.keys().next_back().copied();
        let mut expired = Vec::new();
        for (id, f) in files.iter() {
            if Some(*id) == newest
                || f.last_seq > durable
                || (f.max_time != i64::MIN && f.max_time.div_euclid(pm) * pm + pm > cutoff_ms)
            {
                continue;
            }
            if f.last_seq > consumed_by_all {
                report.journal_segments_held += 1;
            } else {
                expired.push(*id);
            }
        }
        for id in expired {
            let path = self.inner.journal_dir.join(journal::file_name(id));
            fs::remove_file(&path).map_err(StoreError::io(&path))?;
            match fs::remove_file(sidecar_path(&path)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StoreError::io(sidecar_path(&path))(e))
                }
                _ => {}
            }
            files.remove(&id);
            self.inner.readers.remove(id);
            self.inner.frames.forget_file(id);
            report.journal_segments_dropped += 1;
        }
        let min_dict = files.values().map(|f| f.min_dict).min().unwrap_or(u32::MAX);
        drop(files);
        self.inner.dicts.retain(min_dict)?;
        Ok(report)
    }
}
