//! The merger threads: keep each partition at most
//! `max_segments_per_partition` index segments, so that open files and the
//! in-memory samples and Bloom filters are bounded by the partitions, not by
//! the number of flushes. The background merger runs at background priority
//! and gives way to ingest and queries; when the CPU is saturated it falls
//! behind, and a partition past twice the bound is merged down to the bound
//! by the urgent merger at ingest priority (`cts-priority`).
//!
//! Crash safety: the merged segment is written to a staged file, synced and
//! renamed; the switch is one manifest write (write, fsync, rename); the
//! inputs' files are removed only after the manifest no longer names them.
//! A crash at any point leaves the manifest naming either the inputs or the
//! merged segment, all present; the next start removes the unlisted files.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use cts_priority::Tier;

use super::files::{rel, store_manifest};
use super::Inner;
use crate::segment::{self, Segment};
use crate::StoreError;

/// Where a merge is, for tests that stop there as a crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Between two chunks of the merged segment's file.
    Writing,
    /// The merged segment is in place, not yet in the manifest.
    Written,
    /// The manifest names the merged segment; the inputs' files remain.
    Switched,
    /// The inputs' files are gone.
    Removed,
}

/// Which of the two merger threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Merger {
    /// At background priority: merges a partition as soon as it is past
    /// the bound.
    Background,
    /// At ingest priority: merges only a partition past twice the bound
    /// (the background merger is starved), down to the bound.
    Urgent,
}

impl Merger {
    /// The segments of a partition past which this merger begins.
    fn starts_above(self, max: usize) -> usize {
        match self {
            Merger::Background => max,
            Merger::Urgent => 2 * max,
        }
    }
}

pub(super) fn merger_loop(inner: Arc<Inner>, rx: Receiver<()>, merger: Merger) {
    match merger {
        // Merges give way to ingest, queries and the journal writer.
        Merger::Background => cts_priority::enter(Tier::Background, "background merger thread"),
        // A starved background merger must catch up with ingest, not with
        // queries.
        Merger::Urgent => cts_priority::enter(Tier::Ingest, "urgent merger thread"),
    }
    let max = inner.config.max_segments_per_partition;
    let mut delay = Duration::from_millis(100);
    while rx.recv().is_ok() {
        // Flushes signal once each: one look at the partitions answers all.
        while rx.try_recv().is_ok() {}
        if !over(&inner, merger.starts_above(max)) {
            continue;
        }
        loop {
            match merge_next(&inner, &mut |_| {}) {
                Ok(true) => delay = Duration::from_millis(100),
                Ok(false) => break,
                Err(_) if inner.stopping.load(Ordering::Acquire) => return,
                Err(e) => {
                    // The inputs stay in place and queryable; try again later.
                    tracing::error!(error = %e, "merging index segments failed; retrying");
                    if let Err(RecvTimeoutError::Disconnected) = rx.recv_timeout(delay) {
                        return;
                    }
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

/// Between chunks of a merge: stop when the store closes, else let other
/// threads run first.
fn pace(inner: &Inner) -> Result<(), StoreError> {
    if inner.stopping.load(Ordering::Acquire) {
        return Err(StoreError::Unavailable(
            "the store is closing; the merge starts again at the next start".into(),
        ));
    }
    std::thread::yield_now();
    Ok(())
}

/// Whether some partition has more than `above` segments.
fn over(inner: &Inner, above: usize) -> bool {
    let idx = inner.index.read();
    most_in_a_partition(idx.segments.iter().map(|s| s.partition())) > above
}

/// The segments of the partition that has the most, given each segment's.
fn most_in_a_partition(partitions: impl Iterator<Item = i64>) -> usize {
    let mut by_partition: BTreeMap<i64, usize> = BTreeMap::new();
    for p in partitions {
        *by_partition.entry(p).or_default() += 1;
    }
    by_partition.into_values().max().unwrap_or(0)
}

/// Merges the segments of the partition most over the bound, if any;
/// returns whether it merged. `at` sees each step.
pub(super) fn merge_next(inner: &Inner, at: &mut dyn FnMut(Step)) -> Result<bool, StoreError> {
    // Retention takes this too: the inputs stay live until the switch.
    let _merging = inner.merging.lock();
    let inputs = {
        let idx = inner.index.read();
        pick(&idx.segments, inner.config.max_segments_per_partition)
    };
    match inputs {
        Some(inputs) => merge(inner, &inputs, at).map(|()| true),
        None => Ok(false),
    }
}

/// The segments to merge: in the partition with the most segments above
/// `max`, its smallest ones, enough to bring it down to `max / 2 + 1`
/// (so merges come every few flushes, and a large segment is rewritten
/// only when it is among the smallest).
fn pick(segments: &[Arc<Segment>], max: usize) -> Option<Vec<Arc<Segment>>> {
    let mut by_partition: BTreeMap<i64, Vec<&Arc<Segment>>> = BTreeMap::new();
    for s in segments {
        by_partition.entry(s.partition()).or_default().push(s);
    }
    let mut group = by_partition
        .into_values()
        .filter(|g| g.len() > max)
        .max_by_key(Vec::len)?;
    group.sort_by_key(|s| s.docs());
    let n = (group.len() - max / 2).max(2);
    Some(group[..n].iter().map(|s| Arc::clone(s)).collect())
}

fn merge(
    inner: &Inner,
    inputs: &[Arc<Segment>],
    at: &mut dyn FnMut(Step),
) -> Result<(), StoreError> {
    let id = inner.reserve_segment_id();
    let fsync = inner.config.fsync;
    let path = segment::merge(&inner.index_dir, id, inputs, fsync, &mut || {
        at(Step::Writing);
        pace(inner)
    })?;
    at(Step::Written);
    let merged = match Segment::open_cached(&path, Arc::clone(&inner.summaries)) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            // Not in the manifest: nothing names it.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let gone: HashSet<String> = inputs
        .iter()
        .map(|s| rel(&inner.index_dir, &s.path))
        .collect();
    {
        let mut m = inner.manifest.lock();
        let mut next = m.clone();
        next.segments.retain(|s| !gone.contains(s));
        next.segments.push(rel(&inner.index_dir, &path));
        // On an error the manifest on disk may name either set: both stay,
        // and the next start removes the one it does not name.
        store_manifest(&inner.index_dir, &next, fsync)?;
        *m = next;
    }
    {
        let mut idx = inner.index.write();
        idx.segments
            .retain(|s| !inputs.iter().any(|i| Arc::ptr_eq(i, s)));
        idx.segments.push(merged);
    }
    at(Step::Switched);
    // A query still reading an input holds it open: its file goes with the
    // last reference, its name now.
    for s in inputs {
        if let Err(e) = std::fs::remove_file(&s.path) {
            tracing::warn!(file = %s.path.display(), error = %e, "could not remove a merged index segment; the next start removes it");
        }
    }
    at(Step::Removed);
    inner.merges.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use cts_model::{ApiVersion, TraceQuery};

    use super::*;
    use crate::embedded::write_faults::batch;
    use crate::embedded::{now_ms, EmbeddedStore, StoreConfig};
    use crate::TraceStore;

    /// Every trace id the store answers for project `p`, page by page.
    fn ids(store: &EmbeddedStore) -> Vec<String> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut params: HashMap<String, String> = [("limit".into(), "7".into())].into();
            if let Some(n) = next.take() {
                params.insert("next".into(), n);
            }
            let q = TraceQuery::parse(ApiVersion::V3, "p", None, &params, now_ms()).unwrap();
            let page = store.query(&q).unwrap();
            out.extend(page.traces.iter().map(|d| {
                let v: serde_json::Value = serde_json::from_slice(d).unwrap();
                v["trace_id"].as_str().unwrap().to_string()
            }));
            match page.marker {
                Some(m) => next = Some(m),
                None => return out,
            }
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    fn files_under(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    files_under(&e.path())
                } else {
                    1
                }
            })
            .sum()
    }

    #[test]
    fn the_urgent_merger_begins_past_twice_the_bound_only() {
        let partitions = |a: usize, b: usize| {
            let mut p = vec![0; a];
            p.extend(vec![86_400_000; b]);
            most_in_a_partition(p.into_iter())
        };
        assert_eq!(partitions(3, 17), 17);
        let (background, urgent) = (
            Merger::Background.starts_above(8),
            Merger::Urgent.starts_above(8),
        );
        assert!(partitions(9, 3) > background && partitions(9, 3) <= urgent);
        assert!(partitions(16, 16) <= urgent);
        assert!(partitions(17, 1) > urgent);
        assert_eq!(most_in_a_partition(std::iter::empty()), 0);
    }

    #[test]
    fn a_crash_at_any_point_of_a_merge_leaves_a_consistent_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(dir.path());
        cfg.memtable_max_traces = 50;
        cfg.max_segments_per_partition = 1000;
        let store = EmbeddedStore::open(cfg.clone()).unwrap();
        for k in 0..6 {
            store.append(batch(&format!("b{k}"), 50)).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while store.stats().index_durable_seq < 300 {
            assert!(std::time::Instant::now() < deadline, "flushes stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
        let before = ids(&store);
        assert_eq!(before.len(), 300);
        let inputs = store.inner.index.read().segments.clone();
        assert!(inputs.len() >= 6);

        // A kill -9 leaves the files as they are at that moment: a copy of
        // the directory taken there is what the next start finds.
        let snaps = tempfile::tempdir().unwrap();
        let mut taken: Vec<(Step, std::path::PathBuf)> = Vec::new();
        merge(&store.inner, &inputs, &mut |step| {
            let to = snaps.path().join(taken.len().to_string());
            copy_dir(dir.path(), &to);
            taken.push((step, to));
        })
        .unwrap();
        assert_eq!(ids(&store), before, "queries during and after the switch");
        let steps: Vec<Step> = taken.iter().map(|t| t.0).collect();
        assert!(
            steps.contains(&Step::Writing)
                && steps.ends_with(&[Step::Written, Step::Switched, Step::Removed])
        );
        for (step, snap) in taken {
            let mut c = cfg.clone();
            c.dir = snap.clone();
            let reopened = EmbeddedStore::open(c).unwrap();
            assert_eq!(ids(&reopened), before, "after a crash at {step:?}");
            let segments = reopened.stats().segments;
            let want = match step {
                Step::Writing | Step::Written => inputs.len(),
                Step::Switched | Step::Removed => 1,
            };
            assert_eq!(segments, want, "after a crash at {step:?}");
            // Only the segments the manifest names are left (and the manifest).
            assert_eq!(files_under(&snap.join("index")), segments + 1, "{step:?}");
        }
    }
}
