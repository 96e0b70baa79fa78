//! The embedded engine against its contract: durable appends, exact query
//! results across memtable and segments, paging, restart, retention.

use std::collections::HashMap;

use cts_model::{ApiVersion, ReportContext, Trace, TraceQuery};
use cts_store::{EmbeddedStore, StoreConfig, TraceStore};
use serde_json::json;

const HOUR: i64 = 3_600_000;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn config(dir: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.memtable_max_traces = 100;
    c.partition_ms = HOUR;
    c.journal_segment_bytes = 64 << 10;
    c
}

fn traces(project: &str, items: &[(i64, &str, &str, Option<&str>)]) -> Vec<Trace> {
    let body = json!({"traces": items.iter().map(|(time, service, user, id)| {
        let mut t = json!({
            "time": time, "service_type": service, "resource_type": "res",
            "trace_name": "doThing", "trace_type": "ApiCall", "code": "200",
            "user": {"id": "u", "name": user, "domain": {"id": "d", "name": "dn"}},
        });
        if let Some(id) = id { t["trace_id"] = json!(id); }
        t
    }).collect::<Vec<_>>()});
    let ctx = ReportContext {
        project_id: project,
        now_ms: now(),
        oldest_time_ms: now() - 7 * 24 * HOUR,
        newest_time_ms: now() + HOUR,
        max_traces: 100_000,
    };
    cts_model::parse_report(&serde_json::to_vec(&body).unwrap(), &ctx).unwrap()
}

fn query(
    store: &EmbeddedStore,
    project: &str,
    params: &[(&str, String)],
) -> (Vec<serde_json::Value>, Option<String>) {
    let mut p: HashMap<String, String> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    p.entry("from".into())
        .or_insert((now() - 7 * 24 * HOUR + 1000).to_string());
    let q = TraceQuery::parse(ApiVersion::V3, project, None, &p, now()).unwrap();
    let page = store.query(&q).unwrap();
    (
        page.traces
            .iter()
            .map(|d| serde_json::from_slice(d).unwrap())
            .collect(),
        page.marker,
    )
}

fn all_pages(
    store: &EmbeddedStore,
    project: &str,
    params: &[(&str, String)],
    limit: usize,
) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut p = params.to_vec();
        p.push(("limit", limit.to_string()));
        if let Some(n) = &next {
            p.push(("next", n.clone()));
        }
        let (page, marker) = query(store, project, &p);
        assert!(page.len() <= limit);
        out.extend(page.iter().map(|t| {
            (
                t["time"].as_i64().unwrap(),
                t["trace_id"].as_str().unwrap().to_string(),
            )
        }));
        match marker {
            Some(m) => next = Some(m),
            None => break,
        }
    }
    out
}

#[test]
fn paging_filters_restart_and_reindex() {
    let dir = tempfile::tempdir().unwrap();
    let base = now() - 3 * HOUR;
    let mut expected: Vec<(i64, String, String)> = Vec::new();
    {
        let store = EmbeddedStore::open(config(dir.path())).unwrap();
        // 1,000 traces sharing one millisecond, 500 spread over three hours,
        // in batches so that some land in segments and some in the memtable.
        for batch in 0..15 {
            let items: Vec<(i64, &str, &str, Option<&str>)> = (0..100)
                .map(|i| {
                    let n = batch * 100 + i;
                    let time = if n < 1000 {
                        base + HOUR
                    } else {
                        base + (n as i64) * 7_000
                    };
                    (
                        time,
                        if n % 3 == 0 { "ECS" } else { "EVS" },
                        if n % 7 == 0 { "alice" } else { "bob" },
                        None,
                    )
                })
                .collect();
            let ts = traces("p1", &items);
            for t in &ts {
                expected.push((t.time, t.trace_id.clone(), t.service_type.clone()));
            }
            assert_eq!(store.append(ts).unwrap().stored, 100);
        }
        store
            .append(traces("p2", &[(base, "ECS", "mallory", None)]))
            .unwrap();
        assert!(store.stats().segments > 0, "memtable flushes made segments");
        // Everything is queryable at once, memtable and segments alike.
        for limit in [200, 7] {
            let got = all_pages(&store, "p1", &[], limit);
            let mut want: Vec<(i64, String)> =
                expected.iter().map(|(t, i, _)| (*t, i.clone())).collect();
            want.sort_by(|a, b| b.cmp(a));
            assert_eq!(got, want, "limit {limit}");
        }
    }
    // Closed journal files carry a summary, so a restart does not re-read them.
    let metas = std::fs::read_dir(dir.path().join("journal"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "meta")
        })
        .count();
    assert!(metas > 0);
    let check = |store: &EmbeddedStore| {
        let got = all_pages(store, "p1", &[("service_type", "ECS".into())], 50);
        let mut want: Vec<(i64, String)> = expected
            .iter()
            .filter(|e| e.2 == "ECS")
            .map(|(t, i, _)| (*t, i.clone()))
            .collect();
        want.sort_by(|a, b| b.cmp(a));
        assert_eq!(got, want);
        let (one, marker) = query(
            store,
            "p1",
            &[
                ("trace_id", expected[1234].1.clone()),
                ("service_type", "NOPE".into()),
            ],
        );
        assert_eq!(one.len(), 1);
        assert!(marker.is_none());
        let (other, _) = query(store, "p2", &[("trace_id", expected[0].1.clone())]);
        assert!(other.is_empty(), "a trace id of p1 is invisible in p2");
        let alice = all_pages(
            store,
            "p1",
            &[("user", "alice".into()), ("service_type", "ECS".into())],
            10,
        );
        assert_eq!(
            alice.len(),
            expected
                .iter()
                .enumerate()
                .filter(|(n, e)| n % 7 == 0 && e.2 == "ECS")
                .count()
        );
    };
    {
        let store = EmbeddedStore::open(config(dir.path())).unwrap();
        check(&store);
    }
    assert_eq!(EmbeddedStore::reindex(config(dir.path())).unwrap(), 1501);
    let store = EmbeddedStore::open(config(dir.path())).unwrap();
    check(&store);
}

#[test]
fn supplied_ids_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).unwrap();
    let t = now() - HOUR;
    let ids: Vec<String> = (0..150).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let items: Vec<(i64, &str, &str, Option<&str>)> = ids
        .iter()
        .map(|id| (t, "ECS", "bob", Some(id.as_str())))
        .collect();
    assert_eq!(store.append(traces("p", &items)).unwrap().stored, 150);
    // Retries after the first batch went to a segment and to the memtable.
    let again = store.append(traces("p", &items)).unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 150));
    let same_batch = vec![items[0], items[0]];
    assert_eq!(store.append(traces("q", &same_batch)).unwrap().stored, 1);
    drop(store);
    let store = EmbeddedStore::open(config(dir.path())).unwrap();
    assert_eq!(
        store.append(traces("p", &items[..10])).unwrap().duplicates,
        10
    );
    assert_eq!(all_pages(&store, "p", &[], 200).len(), 150);
}

#[test]
fn retention_drops_partitions_and_torn_tail_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(config(dir.path())).unwrap();
    let old = now() - 5 * HOUR;
    let items: Vec<(i64, &str, &str, Option<&str>)> =
        (0..250).map(|i| (old + i, "ECS", "bob", None)).collect();
    store.append(traces("p", &items)).unwrap();
    let recent: Vec<(i64, &str, &str, Option<&str>)> = (0..250)
        .map(|i| (now() - 1000 + i, "ECS", "bob", None))
        .collect();
    store.append(traces("p", &recent)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let report = store.enforce_retention(now() - 2 * HOUR).unwrap();
    assert!(report.index_partitions_dropped >= 1);
    let part = dir
        .path()
        .join("index")
        .join(format!("p{}", old.div_euclid(HOUR) * HOUR));
    assert!(!part.exists());
    drop(store);

    // A torn write at the end of the journal is cut off on open.
    let newest = std::fs::read_dir(dir.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut data = std::fs::read(&newest).unwrap();
    data.extend_from_slice(&[0x52, 0x53, 0x54, 0x43, 9, 9, 9]);
    std::fs::write(&newest, data).unwrap();
    let store = EmbeddedStore::open(config(dir.path())).unwrap();
    let got = all_pages(&store, "p", &[], 200);
    assert!(got.len() >= 250, "recent traces survive: {}", got.len());
    store.append(traces("p", &recent[..1])).unwrap();
}

#[test]
fn dictionary_compressed_traces_read_back_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.memtable_max_traces = 10_000;
    cfg.journal_segment_bytes = 64 << 20;
    let t = now() - HOUR;
    let batch = |n: i64| -> Vec<(i64, &'static str, &'static str, Option<&'static str>)> {
        (0..1000)
            .map(|i| (t + n * 1000 + i, "ECS", "bob", None))
            .collect()
    };
    let store = EmbeddedStore::open(cfg.clone()).unwrap();
    // Enough traces for the sampler to fill and a dictionary to be trained.
    for n in 0..40 {
        store.append(traces("p", &batch(n))).unwrap();
    }
    let dict_exists = || {
        std::fs::read_dir(dir.path().join("journal"))
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".zdict"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !dict_exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no dictionary was trained"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for n in 40..45 {
        store.append(traces("p", &batch(n))).unwrap();
    }
    drop(store);
    let store = EmbeddedStore::open(cfg).unwrap();
    let got = all_pages(&store, "p", &[], 200);
    assert_eq!(got.len(), 45_000);
    let (page, _) = query(&store, "p", &[("limit", "200".into())]);
    assert_eq!(page[0]["time"].as_i64().unwrap(), t + 44 * 1000 + 999);
}
