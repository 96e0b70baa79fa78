//! Segment merging keeps resources flat as data grows: many flushes into one
//! partition leave at most `max_segments_per_partition` segments and as many
//! open index files, and every query (filters, paging) answers as before.

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

const MAX: usize = 4;

/// Descriptors this process holds open on files under `dir/index`.
fn index_fds(dir: &Path) -> usize {
    let index = dir.join("index");
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(&index))
        .count()
}

/// Waits until the index is durable up to `seq` and the merger is done:
/// at most `MAX` segments, and at most as many index files open under
/// `dir` (a merge publishes its segment, then closes the files it
/// replaced, and under load the count can lag the publication briefly).
fn settle(store: &EmbeddedStore, dir: &Path, seq: u64) {
    wait_index_durable(store, seq);
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.stats().segments > MAX || index_fds(dir) > MAX {
        assert!(
            Instant::now() < deadline,
            "the merger stays behind: {} segments, {} index files open",
            store.stats().segments,
            index_fds(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The answers to a set of queries (filters, small and large pages).
fn answers(store: &EmbeddedStore) -> Vec<Vec<(i64, String)>> {
    [
        (None, 200),
        (Some(("service_type", "EVS")), 200),
        (Some(("user", "alice")), 31),
    ]
    .iter()
    .map(|(filter, limit)| {
        let params: Vec<(&str, String)> = filter.iter().map(|(k, v)| (*k, v.to_string())).collect();
        all_pages(store, "p", &params, *limit)
    })
    .collect()
}

fn ingest(store: &EmbeddedStore, base: i64, batches: std::ops::Range<i64>) {
    for b in batches {
        let items: Vec<(i64, &str, &str, Option<&str>)> = (0..100)
            .map(|i| {
                let n = b * 100 + i;
                (
                    // Out of order across batches, all in one partition.
                    base + (n * 7919) % 3_000_000,
                    if n % 3 == 0 { "ECS" } else { "EVS" },
                    if n % 7 == 0 { "alice" } else { "bob" },
                    None,
                )
            })
            .collect();
        store.append(traces("p", &items)).unwrap();
    }
}

#[test]
fn many_flushes_into_one_partition_stay_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.fsync = false;
    let base = (now() - 2 * HOUR).div_euclid(HOUR) * HOUR;
    // Without merging: one segment per flush.
    cfg.max_segments_per_partition = 1000;
    let store = EmbeddedStore::open(cfg.clone()).unwrap();
    ingest(&store, base, 0..20);
    wait_index_durable(&store, 2000);
    assert_eq!(store.stats().segments, 20);
    assert_eq!(index_fds(dir.path()), 20);
    let before = answers(&store);
    assert_eq!(before[0].len(), 2000);
    store.close().unwrap();
    drop(store);

    // With the bound, the start merges them down; answers are unchanged.
    cfg.max_segments_per_partition = MAX;
    let store = EmbeddedStore::open(cfg.clone()).unwrap();
    settle(&store, dir.path(), 2000);
    assert!(store.stats().segment_merges > 0);
    assert_eq!(answers(&store), before);

    // Sustained ingest: segments and open index files stay bounded.
    for round in 1..=3 {
        ingest(&store, base, 14 + round * 6..20 + round * 6);
        let seq = 2000 + round as u64 * 600;
        // Segments and open index files come back within the bound.
        settle(&store, dir.path(), seq);
    }
    let after = answers(&store);
    let mut ids: Vec<&String> = after[0].iter().map(|t| &t.1).collect();
    assert_eq!(ids.len(), 3800);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3800, "every trace exactly once");
    for (got, old) in after.iter().zip(&before) {
        assert!(old.iter().all(|t| got.contains(t)));
    }
    store.close().unwrap();
    drop(store);
    let store = EmbeddedStore::open(cfg).unwrap();
    assert_eq!(answers(&store), after, "after a restart");
}
