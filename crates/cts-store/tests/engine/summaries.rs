//! The index's memory stays within `index_cache_bytes` however many segments
//! it has: the summaries (Bloom filters, samples) of the segments used most
//! are cached, the others answer from their term tables on disk, and every
//! answer is exact either way.

use super::*;

const BOUND: u64 = 4 << 10;

/// (time, trace id, service, user) of each stored trace.
type Stored = Vec<(i64, String, &'static str, String)>;

/// 3,000 traces in 30 flushes over 100 minutes (two or three partitions of
/// an hour), each with a user of its own; every flush stays a segment.
fn fill(dir: &std::path::Path) -> Stored {
    let store = EmbeddedStore::open(settings(dir, u64::MAX)).unwrap();
    let base = now() - 3 * HOUR;
    let mut stored = Vec::new();
    for batch in 0..30 {
        let users: Vec<String> = (0..100).map(|i| format!("u{}", batch * 100 + i)).collect();
        let items: Vec<(i64, &str, &str, Option<&str>)> = users
            .iter()
            .enumerate()
            .map(|(i, user)| {
                let n = batch * 100 + i;
                let service = ["ECS", "EVS", "OBS"][n % 3];
                (base + n as i64 * 2_000, service, user.as_str(), None)
            })
            .collect();
        let ts = traces("p", &items);
        for (t, item) in ts.iter().zip(&items) {
            stored.push((t.time, t.trace_id.clone(), item.1, item.2.to_string()));
        }
        store.append(ts).unwrap();
    }
    stored
}

fn settings(dir: &std::path::Path, cache: u64) -> StoreConfig {
    let mut cfg = config(dir);
    cfg.fsync = false;
    cfg.max_segments_per_partition = 1000;
    cfg.index_cache_bytes = cache;
    cfg
}

fn newest_first(
    stored: &Stored,
    keep: impl Fn(&(i64, String, &str, String)) -> bool,
) -> Vec<(i64, String)> {
    let mut want: Vec<(i64, String)> = stored
        .iter()
        .filter(|s| keep(s))
        .map(|s| (s.0, s.1.clone()))
        .collect();
    want.sort_by(|a, b| b.cmp(a));
    want
}

#[test]
fn many_segments_and_a_small_cache_answer_exactly_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let stored = fill(dir.path());
    // Every summary held: far more than the bound.
    let whole = EmbeddedStore::open(settings(dir.path(), u64::MAX)).unwrap();
    let all_held = whole.stats();
    drop(whole);
    assert!(all_held.segments >= 30, "{} segments", all_held.segments);
    assert!(all_held.index_summary_bytes > 2 * BOUND, "{all_held:?}");

    let store = EmbeddedStore::open(settings(dir.path(), BOUND)).unwrap();
    // Within the bound: the cache, and each segment's thinned samples (one
    // term sample and one doc sample at this size).
    let within = |store: &EmbeddedStore| {
        let s = store.stats();
        assert!(s.index_summary_bytes > 0);
        assert!(
            s.index_summary_bytes <= BOUND + s.segments as u64 * 32,
            "{} bytes in memory for {} segments",
            s.index_summary_bytes,
            s.segments
        );
    };
    within(&store);

    assert_eq!(
        all_pages(&store, "p", &[], 200),
        newest_first(&stored, |_| true)
    );
    for service in ["ECS", "EVS", "OBS"] {
        assert_eq!(
            all_pages(&store, "p", &[("service_type", service.into())], 70),
            newest_first(&stored, |s| s.2 == service),
            "{service}"
        );
    }
    for s in stored.iter().step_by(7) {
        let (by_id, _) = query(&store, "p", &[("trace_id", s.1.clone())]);
        assert_eq!(by_id.len(), 1, "{}", s.1);
        assert_eq!(by_id[0]["trace_id"], s.1.as_str());
        let by_user = all_pages(&store, "p", &[("user", s.3.clone())], 10);
        assert_eq!(by_user, vec![(s.0, s.1.clone())], "{}", s.3);
    }
    // Absent values: a user, a trace id, a project no trace has.
    assert!(all_pages(&store, "p", &[("user", "nobody".into())], 10).is_empty());
    let absent = "00000000-0000-4000-8000-00000000abcd".to_string();
    assert!(query(&store, "p", &[("trace_id", absent)]).0.is_empty());
    assert!(query(&store, "q", &[("trace_id", stored[5].1.clone())])
        .0
        .is_empty());
    within(&store);
}
