//! The store against an in-memory model: random interleavings of reports
//! (with retries of the same batch), queries with random filters, windows
//! and page sizes, flushes (small memtables), segment merges (in the
//! background after flushes, and on demand), restarts and retention. Every
//! answer must equal the model's.

use proptest::prelude::*;

use super::*;

const SERVICES: [&str; 3] = ["ECS", "EVS", "OBS"];
const USERS: [&str; 2] = ["alice", "bob"];
const PROJECTS: [&str; 2] = ["p", "q"];
const MINUTE: i64 = 60_000;

/// A trace to report: minutes before the test's start, service, user, and
/// a supplied trace id (an index into a fixed set) or none.
type Item = (i64, usize, usize, Option<u8>);

#[derive(Debug, Clone)]
enum Op {
    Report {
        project: usize,
        items: Vec<Item>,
        /// Sent twice, as a reporter retrying after a lost answer.
        retry: bool,
    },
    Query {
        project: usize,
        filter: Option<(bool, usize)>,
        /// Window (from, to) in minutes before the start.
        window: (i64, i64),
        limit: usize,
    },
    Restart,
    /// Merge every partition down to the bound now (the background merger
    /// does the same after flushes, at times the test does not choose).
    Merge,
    /// Close and reopen (so that every trace is in a segment), then drop
    /// the partitions older than this many hours.
    Retention(i64),
}

fn op() -> impl Strategy<Value = Op> {
    // A supplied id always comes with the same time, as a retry does (the
    // store looks for an earlier copy in the partition of the trace's time).
    let item = (
        0..600i64,
        0..3usize,
        0..2usize,
        prop::option::weighted(0.3, 0..12u8),
    )
        .prop_map(|(minutes, s, u, id)| (id.map_or(minutes, |n| n as i64 * 47), s, u, id));
    prop_oneof![
        5 => (0..2usize, prop::collection::vec(item, 1..15), any::<bool>())
            .prop_map(|(project, items, retry)| Op::Report { project, items, retry }),
        4 => (
            0..2usize,
            prop::option::of((any::<bool>(), 0..3usize)),
            (0..700i64, 0..700i64),
            1..25usize,
        )
            .prop_map(|(project, filter, window, limit)| Op::Query { project, filter, window, limit }),
        1 => Just(Op::Restart),
        1 => Just(Op::Merge),
        1 => (2..10i64).prop_map(Op::Retention),
    ]
}

/// A stored trace as the model knows it.
#[derive(Debug, Clone)]
struct Known {
    project: usize,
    time: i64,
    id: String,
    service: usize,
    user: usize,
}

fn supplied_id(n: u8) -> String {
    format!("00000000-0000-4000-8000-0000000000{n:02x}")
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.memtable_max_traces = 23;
    cfg.journal_segment_bytes = 16 << 10;
    cfg.fsync = false;
    cfg.max_segments_per_partition = 2;
    // Room for the summaries of a few segments: the others answer from
    // their term tables on disk, and both must answer as the model does.
    cfg.index_cache_bytes = 2 << 10;
    let start = now();
    let mut store = Some(EmbeddedStore::open(cfg.clone()).unwrap());
    let mut model: Vec<Known> = Vec::new();
    for op in ops {
        let s = store.as_ref().unwrap();
        match op {
            Op::Report {
                project,
                items,
                retry,
            } => {
                let ids: Vec<Option<String>> = items.iter().map(|i| i.3.map(supplied_id)).collect();
                let rows: Vec<(i64, &str, &str, Option<&str>)> = items
                    .iter()
                    .zip(&ids)
                    .map(|(i, id)| {
                        (
                            start - i.0 * MINUTE,
                            SERVICES[i.1],
                            USERS[i.2],
                            id.as_deref(),
                        )
                    })
                    .collect();
                for _ in 0..1 + retry as usize {
                    let batch = traces(PROJECTS[project], &rows);
                    for (t, i) in batch.iter().zip(&items) {
                        let known = model
                            .iter()
                            .any(|k| k.project == project && k.id == t.trace_id);
                        if !(t.trace_id_supplied && known) {
                            model.push(Known {
                                project,
                                time: t.time,
                                id: t.trace_id.clone(),
                                service: i.1,
                                user: i.2,
                            });
                        }
                    }
                    s.append(batch).unwrap();
                }
            }
            Op::Query {
                project,
                filter,
                window,
                limit,
            } => {
                let (lo, hi) = (window.0.min(window.1), window.0.max(window.1));
                let (from, to) = (start - hi * MINUTE - 1, start - lo * MINUTE + 1);
                let mut params = vec![("from", from.to_string()), ("to", to.to_string())];
                match filter {
                    Some((true, n)) => params.push(("service_type", SERVICES[n].to_string())),
                    Some((false, n)) => params.push(("user", USERS[n % 2].to_string())),
                    None => {}
                }
                let got = all_pages(s, PROJECTS[project], &params, limit);
                let mut want: Vec<(i64, String)> = model
                    .iter()
                    .filter(|k| k.project == project && k.time > from && k.time < to)
                    .filter(|k| match filter {
                        Some((true, n)) => k.service == n,
                        Some((false, n)) => k.user == n % 2,
                        None => true,
                    })
                    .map(|k| (k.time, k.id.clone()))
                    .collect();
                want.sort_by(|a, b| b.cmp(a));
                assert_eq!(
                    got, want,
                    "query {project} {filter:?} {from}..{to} limit {limit}"
                );
            }
            Op::Merge => {
                s.merge_segments().unwrap();
            }
            Op::Restart => {
                drop(store.take());
                store = Some(EmbeddedStore::open(cfg.clone()).unwrap());
            }
            Op::Retention(hours) => {
                store.take().unwrap().close().unwrap();
                let s = EmbeddedStore::open(cfg.clone()).unwrap();
                let cutoff = start - hours * HOUR;
                s.enforce_retention(cutoff).unwrap();
                model.retain(|k| k.time.div_euclid(HOUR) * HOUR + HOUR > cutoff);
                store = Some(s);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_store_answers_as_the_model(ops in prop::collection::vec(op(), 1..30)) {
        run(ops);
    }
}
