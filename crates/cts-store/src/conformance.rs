//! One conformance suite for every [`TraceStore`]: what the API and the
//! journal consumers rely on, whatever the engine. Each backend's tests run
//! [`run_all`] with a function that opens a fresh, empty store (retention 7
//! days, the default). A store that writes appends out in the background
//! should do so early (the embedded one with a small memtable), or the
//! retention case waits for it.
//!
//! Where the embedded store's behaviour is the contract, the suite asserts
//! it: retries of a reporter-supplied `trace_id` stored once, pages newest
//! first with the trace id breaking ties, exclusive time bounds, journal
//! positions consecutive from 1 in acknowledgement order.

use std::collections::HashMap;

use cts_model::{Field, IndexedFields, ReportContext, Trace, TraceQuery};
use serde_json::{json, Value};

use crate::{StoreError, TraceStore};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// The retention every store under test is opened with.
pub const RETENTION_MS: i64 = 7 * DAY;

/// A case of the suite: its name and its check.
pub type Case<S> = (&'static str, fn(&S));

/// Every case, in order.
pub fn cases<S: TraceStore + ?Sized>() -> Vec<Case<S>> {
    vec![
        ("ingest_and_retries", ingest_and_retries::<S>),
        (
            "every_filter_and_combinations",
            every_filter_and_combinations::<S>,
        ),
        ("paging_by_marker", paging_by_marker::<S>),
        ("a_page_of_a_rare_value", a_page_of_a_rare_value::<S>),
        ("time_window", time_window::<S>),
        ("retention", retention::<S>),
        (
            "journal_in_order_without_gaps",
            journal_in_order_without_gaps::<S>,
        ),
        (
            "retention_keeps_what_consumers_hold",
            retention_keeps_what_consumers_hold::<S>,
        ),
    ]
}

/// Runs every case, each on a store `open` makes fresh; a failure names its
/// case.
pub fn run_all<G, S>(mut open: impl FnMut() -> G)
where
    G: std::ops::Deref<Target = S>,
    S: TraceStore + ?Sized,
{
    for (name, case) in cases::<S>() {
        let store = open();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&store)));
        if let Err(panic) = run {
            eprintln!("conformance case {name} failed");
            std::panic::resume_unwind(panic);
        }
    }
}

fn now() -> i64 {
    cts_clock::now_ms()
}

/// Parses report items (JSON objects merged over a valid management trace)
/// as the API does, for project `project`.
pub fn traces(project: &str, items: &[Value]) -> Vec<Trace> {
    let body = json!({"traces": items.iter().map(|extra| {
        let mut t = json!({
            "time": now() - HOUR, "service_type": "ECS", "resource_type": "vm",
            "trace_name": "createServer", "trace_type": "ApiCall", "code": "200",
            "user": {"id": "u", "name": "alice", "domain": {"id": "d", "name": "dn"}},
        });
        let t_obj = t.as_object_mut().expect("an object");
        for (k, v) in extra.as_object().expect("report items are objects") {
            t_obj.insert(k.clone(), v.clone());
        }
        t
    }).collect::<Vec<_>>()});
    let ctx = ReportContext {
        project_id: project,
        now_ms: now(),
        oldest_time_ms: now() - 30 * DAY,
        newest_time_ms: now() + HOUR,
        max_traces: 100_000,
    };
    cts_model::parse_report(&serde_json::to_vec(&body).expect("JSON"), &ctx)
        .expect("a valid report")
        .into_iter()
        .map(Trace::into_owned)
        .collect()
}

fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// A query of `project` over the whole retention window with `filters`.
fn window(project: &str, filters: &[(Field, &str)]) -> TraceQuery {
    TraceQuery {
        project_id: project.to_string(),
        from: now() - RETENTION_MS - DAY,
        to: now() + HOUR,
        limit: 200,
        next: None,
        trace_id: None,
        filters: filters.iter().map(|(f, v)| (*f, v.to_string())).collect(),
    }
}

/// Every page of `q`, following markers; the trace ids in order.
fn all_ids<S: TraceStore + ?Sized>(store: &S, q: &TraceQuery) -> Vec<String> {
    let mut q = q.clone();
    let mut ids = Vec::new();
    for _ in 0..10_000 {
        let page = store.query(&q).expect("query");
        assert!(
            page.traces.len() <= q.limit,
            "a page holds at most limit traces"
        );
        ids.extend(page.traces.iter().map(|d| id_of(d)));
        match page.marker {
            Some(m) => {
                assert_eq!(page.traces.len(), q.limit, "only a full page has a marker");
                q.next = Some(m);
            }
            None => return ids,
        }
    }
    panic!("paging did not end");
}

fn id_of(doc: &[u8]) -> String {
    let v: Value = serde_json::from_slice(doc).expect("stored traces are JSON");
    v["trace_id"].as_str().expect("a trace_id").to_string()
}

fn by_id<S: TraceStore + ?Sized>(store: &S, project: &str, id: &str) -> Vec<Vec<u8>> {
    let mut q = window(project, &[]);
    q.trace_id = Some(id.to_string());
    store.query(&q).expect("query by id").traces
}

/// Retries of a reporter-supplied trace_id are stored once (per project),
/// also within one batch; the stored bytes are the trace's JSON.
pub fn ingest_and_retries<S: TraceStore + ?Sized>(store: &S) {
    let batch = || {
        traces(
            "p1",
            &[
                json!({"trace_id": uuid(1)}),
                json!({"trace_id": uuid(2), "service_type": "OBS"}),
                json!({}),
            ],
        )
    };
    let first = batch();
    let out = store.append(first.clone()).expect("append");
    assert_eq!((out.stored, out.duplicates), (3, 0));
    // The retry: a generated id is new, the supplied ones are not.
    let out = store.append(batch()).expect("retry");
    assert_eq!((out.stored, out.duplicates), (1, 2));
    let twice = traces(
        "p1",
        &[json!({"trace_id": uuid(3)}), json!({"trace_id": uuid(3)})],
    );
    let out = store.append(twice).expect("a repeat within a batch");
    assert_eq!((out.stored, out.duplicates), (1, 1));
    // Another project may use the same id.
    let out = store
        .append(traces("p2", &[json!({"trace_id": uuid(1)})]))
        .expect("another project");
    assert_eq!((out.stored, out.duplicates), (1, 0));
    assert_eq!(store.append(Vec::new()).expect("nothing").stored, 0);

    assert_eq!(by_id(store, "p1", &uuid(1)), vec![first[0].to_json()]);
    assert_eq!(by_id(store, "p1", &uuid(2)), vec![first[1].to_json()]);
    assert_eq!(by_id(store, "p1", &uuid(9)), Vec::<Vec<u8>>::new());
    assert_eq!(by_id(store, "p3", &uuid(1)), Vec::<Vec<u8>>::new());
    assert_eq!(all_ids(store, &window("p1", &[])).len(), 5);
    assert_eq!(all_ids(store, &window("p2", &[])), vec![uuid(1)]);
    assert_eq!(store.read_only(), None);
}

/// Every filter alone and in pairs, against a model: the ids of the
/// matching traces, newest first.
pub fn every_filter_and_combinations<S: TraceStore + ?Sized>(store: &S) {
    let mut items = Vec::new();
    for i in 0..48u32 {
        let data = i % 4 == 3;
        let pick = |options: &[&'static str], n: u32| options[n as usize % options.len()];
        let mut t = json!({
            "trace_id": uuid(100 + i),
            // Some share a time: the id breaks the tie.
            "time": now() - HOUR - i64::from(i / 2) * 60_000,
            "service_type": pick(&["ECS", "OBS", "VPC"], i),
            "resource_type": pick(&["vm", "bucket"], i),
            "trace_name": pick(&["createServer", "deleteServer", "rebootServer", "stop"], i),
            "trace_rating": pick(&["normal", "warning", "incident"], i / 3),
            "enterprise_project_id": pick(&["0", "ep-a"], i / 2),
            "user": {"id": "u", "name": pick(&["alice", "bob", "carol"], i / 4),
                     "access_key_id": pick(&["AK1", "AK2"], i / 5),
                     "domain": {"id": "d", "name": "dn"}},
        });
        if i % 5 != 0 {
            t["resource_id"] = json!(format!("r{}", i % 3));
            t["resource_name"] = json!(format!("name{}", i % 2));
        }
        if data {
            t["trace_type"] = json!("ObsAPI");
            t["tracker_name"] = json!(pick(&["dt1", "dt2"], i / 4));
        }
        items.push(t);
    }
    let all = traces("p", &items);
    // Two batches, and one trace of another project that never shows.
    store.append(all[..20].to_vec()).expect("append");
    store.append(all[20..].to_vec()).expect("append");
    store
        .append(traces("q", &[json!({"trace_id": uuid(100)})]))
        .expect("append");

    let docs: Vec<Vec<u8>> = all.iter().map(|t| t.to_json()).collect();
    let model: Vec<IndexedFields<'_>> = docs
        .iter()
        .map(|d| IndexedFields::from_json(d).expect("indexed fields"))
        .collect();
    let expect = |filters: &[(Field, &str)]| -> Vec<String> {
        let mut hits: Vec<&IndexedFields<'_>> = model
            .iter()
            .filter(|t| filters.iter().all(|(f, v)| t.value(*f) == Some(*v)))
            .collect();
        hits.sort_by_key(|t| {
            std::cmp::Reverse((t.time, cts_model::query::trace_id_bytes(&t.trace_id)))
        });
        hits.iter().map(|t| t.trace_id.to_string()).collect()
    };
    // Every value each field takes, and one it never takes.
    let mut values: HashMap<Field, Vec<String>> = HashMap::new();
    for t in &model {
        for f in Field::ALL {
            if let Some(v) = t.value(f) {
                let vs = values.entry(f).or_default();
                if !vs.iter().any(|x| x == v) {
                    vs.push(v.to_string());
                }
            }
        }
    }
    for f in Field::ALL {
        let vs = values.get(&f).cloned().unwrap_or_default();
        assert!(!vs.is_empty(), "the fixture gives {f:?} values");
        for v in vs.iter().map(String::as_str).chain(["absent"]) {
            let got = all_ids(store, &window("p", &[(f, v)]));
            assert_eq!(got, expect(&[(f, v)]), "filter {f:?} = {v:?}");
        }
    }
    // Pairs of filters, with the first value of each.
    for (i, a) in Field::ALL.iter().enumerate() {
        for b in &Field::ALL[i + 1..] {
            let filters = [(*a, values[a][0].as_str()), (*b, values[b][0].as_str())];
            let mut q = window("p", &filters);
            q.limit = 4;
            assert_eq!(all_ids(store, &q), expect(&filters), "filters {filters:?}");
        }
    }
    // As the API sends them: the implied kind and tracker first.
    let api = [
        (Field::Kind, "system"),
        (Field::TrackerName, "system"),
        (Field::User, "bob"),
    ];
    assert_eq!(all_ids(store, &window("p", &api)), expect(&api));
    assert_eq!(all_ids(store, &window("p", &[])), expect(&[]));
}

/// Pages of any size chain by marker through every trace once, in order;
/// an unknown marker answers an empty page.
pub fn paging_by_marker<S: TraceStore + ?Sized>(store: &S) {
    let t0 = now() - 2 * HOUR;
    let items: Vec<Value> = (0..23u32)
        .map(|i| json!({"trace_id": uuid(500 + i), "time": t0 + i64::from(i % 7) * 1000}))
        .collect();
    store.append(traces("p", &items)).expect("append");
    let full = all_ids(store, &window("p", &[]));
    assert_eq!(full.len(), 23);
    for limit in [1, 2, 5, 22, 23, 200] {
        let mut q = window("p", &[]);
        q.limit = limit;
        assert_eq!(all_ids(store, &q), full, "limit {limit}");
    }
    let mut q = window("p", &[]);
    q.next = Some(uuid(999));
    let page = store.query(&q).expect("query");
    assert!(page.traces.is_empty() && page.marker.is_none());
}

/// A value on every eighth trace of a batch: a page of it reads a stored
/// frame (the embedded store's unit of eight traces) for each of its
/// traces, more than a page shares with the fetch helper; every page comes
/// back whole, newest first.
pub fn a_page_of_a_rare_value<S: TraceStore + ?Sized>(store: &S) {
    let t0 = now() - 2 * HOUR;
    let items: Vec<Value> = (0..1600u32)
        .map(|i| {
            let name = if i % 8 == 0 { "rare" } else { "common" };
            json!({"trace_id": uuid(i), "time": t0 + i64::from(i), "resource_name": name})
        })
        .collect();
    store.append(traces("p", &items)).expect("append");
    let rare: Vec<String> = (0..1600u32)
        .rev()
        .filter(|i| i % 8 == 0)
        .map(uuid)
        .collect();
    for limit in [200, 150] {
        let mut q = window("p", &[(Field::ResourceName, "rare")]);
        q.limit = limit;
        assert_eq!(all_ids(store, &q), rare, "limit {limit}");
    }
}

/// `from` and `to` are exclusive; nothing older than the retention is
/// answered, even before retention runs.
pub fn time_window<S: TraceStore + ?Sized>(store: &S) {
    let t = now() - 3 * HOUR;
    let items = [
        json!({"trace_id": uuid(1), "time": t - 1}),
        json!({"trace_id": uuid(2), "time": t}),
        json!({"trace_id": uuid(3), "time": t + 1}),
        json!({"trace_id": uuid(4), "time": t + 2}),
        json!({"trace_id": uuid(5), "time": now() - RETENTION_MS - HOUR}),
    ];
    store.append(traces("p", &items)).expect("append");
    let mut q = window("p", &[]);
    (q.from, q.to) = (t - 1, t + 2);
    assert_eq!(all_ids(store, &q), vec![uuid(3), uuid(2)]);
    (q.from, q.to) = (0, now());
    assert_eq!(all_ids(store, &q), [4, 3, 2, 1].map(uuid).to_vec());
    assert!(by_id(store, "p", &uuid(5)).is_empty());
}

/// Retention removes what is before the cutoff, a whole day or more back,
/// and keeps the rest; a trace of a removed day can be recorded again.
pub fn retention<S: TraceStore + ?Sized>(store: &S) {
    let old = json!({"trace_id": uuid(1), "time": now() - 4 * DAY});
    let items = [
        old.clone(),
        json!({"trace_id": uuid(2), "time": now() - HOUR}),
    ];
    store.append(traces("p", &items)).expect("append");
    // An engine may hold recent appends in memory until it writes them
    // out (the embedded one does, in the background): retention runs
    // again until the old day is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut dropped = 0;
    while !by_id(store, "p", &uuid(1)).is_empty() || dropped == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention removed nothing before the cutoff"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
        let report = store.enforce_retention(now() - 2 * DAY).expect("retention");
        dropped += report.index_partitions_dropped;
    }
    assert_eq!(all_ids(store, &window("p", &[])), vec![uuid(2)]);
    let again = store.append(traces("p", &[old])).expect("append again");
    assert_eq!(again.stored, 1);
    assert_eq!(all_ids(store, &window("p", &[])), vec![uuid(2), uuid(1)]);
}

/// Positions: consecutive from 1 in acknowledgement order, duplicates
/// taking none, every trace's journal bytes those a query returns.
pub fn journal_in_order_without_gaps<S: TraceStore + ?Sized>(store: &S) {
    let empty = store.read_journal(0, 10).expect("an empty journal");
    assert_eq!((empty.entries.len(), empty.durable_seq), (0, 0));
    let mut appended = Vec::new();
    for (n, size) in [3u32, 1, 4].into_iter().enumerate() {
        let items: Vec<Value> = (0..size)
            .map(|i| json!({"trace_id": uuid(10 * n as u32 + i)}))
            .collect();
        let batch = traces("p", &items);
        appended.extend(batch.iter().map(|t| t.to_json()));
        store.append(batch).expect("append");
    }
    let retry = store
        .append(traces("p", &[json!({"trace_id": uuid(0)})]))
        .expect("a retry");
    assert_eq!(retry.duplicates, 1);

    let all = store.read_journal(0, 100).expect("read");
    assert_eq!(all.durable_seq, 8);
    let seqs: Vec<u64> = all.entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<u64>>());
    let docs: Vec<Vec<u8>> = all.entries.iter().map(|e| e.doc.clone()).collect();
    assert_eq!(docs, appended);
    for e in &all.entries {
        assert_eq!(by_id(store, "p", &id_of(&e.doc)), vec![e.doc.clone()]);
    }
    // A consumer polling in small steps sees the same, once each.
    let mut cursor = 0;
    let mut polled = Vec::new();
    while cursor < 8 {
        let b = store.read_journal(cursor, 3).expect("poll");
        assert!(!b.entries.is_empty() && b.entries.len() <= 3);
        for e in b.entries {
            assert_eq!(e.seq, cursor + 1);
            cursor = e.seq;
            polled.push(e.doc);
        }
    }
    assert_eq!(polled, appended);
    assert_eq!(store.read_journal(3, 2).expect("read").entries[0].seq, 4);
    assert!(store
        .read_journal(8, 10)
        .expect("caught up")
        .entries
        .is_empty());
    assert!(store.read_journal(2, 0).expect("max 0").entries.is_empty());
    assert!(matches!(
        store.read_journal(9, 1),
        Err(StoreError::CursorAhead {
            after_seq: 9,
            durable_seq: 8
        })
    ));
    assert_eq!(store.stats().journal_seq, 8);
}

/// A consumer's hold keeps what it has not consumed through retention.
pub fn retention_keeps_what_consumers_hold<S: TraceStore + ?Sized>(store: &S) {
    let items = [
        json!({"trace_id": uuid(1), "time": now() - 4 * DAY}),
        json!({"trace_id": uuid(2), "time": now() - HOUR}),
    ];
    let batch = traces("p", &items);
    let docs: Vec<Vec<u8>> = batch.iter().map(|t| t.to_json()).collect();
    store.append(batch).expect("append");
    store.hold_journal("transfer", 0);
    store.hold_journal("lts", 1);
    store.release_journal("lts");
    store.release_journal("unknown");
    store.enforce_retention(now() - 2 * DAY).expect("retention");
    let read = store.read_journal(0, 10).expect("nothing held is gone");
    let got: Vec<Vec<u8>> = read.entries.into_iter().map(|e| e.doc).collect();
    assert_eq!(got, docs);
}
