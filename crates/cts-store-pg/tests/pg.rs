//! `PgStore` on a throwaway PostgreSQL: the conformance suite, several
//! stores (standing in for nodes) on one database, migrations.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cts_store::conformance::{self, RETENTION_MS};
use cts_store::{StoreError, TraceStore};
use cts_store_pg::schema::SCHEMA;
use cts_store_pg::{PgSettings, PgStore, Pool};
use cts_testpg::TestPg;
use serde_json::json;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn pool(url: &str) -> Pool {
    let mut s = PgSettings::new(url.parse().expect("a test URL"));
    s.pool_size = 8;
    s.connect().expect("a pool")
}

fn open(url: &str) -> PgStore {
    PgStore::open(pool(url), true, RETENTION_MS).expect("open PgStore")
}

fn now() -> i64 {
    cts_clock::now_ms()
}

#[test]
fn conformance_on_postgres() {
    let pg = TestPg::start();
    conformance::run_all(|| Box::new(open(&pg.fresh_database())));
}

/// Issue 17 point 4: several nodes' stores on one database, many writers
/// each, one consumer polling all the while. Every acknowledged trace is
/// read exactly once, positions go up by one each time, and nothing is
/// read that was not acknowledged.
#[test]
fn concurrent_writers_on_several_nodes_and_a_consumer_miss_nothing() {
    const NODES: usize = 3;
    const WRITERS: usize = 4;
    const BATCHES: usize = 20;
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let nodes: Vec<Arc<PgStore>> = (0..NODES).map(|_| Arc::new(open(&url))).collect();
    slow_commits(&url);
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));

    let consumer = {
        let store = Arc::clone(&nodes[0]);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut cursor = 0u64;
            let mut seen: HashMap<String, u64> = HashMap::new();
            let mut polls = 0u64;
            loop {
                // Read `done` before polling: a poll that starts after
                // every writer returned sees every acknowledged trace.
                let finished = done.load(Ordering::SeqCst);
                let batch = store.read_journal(cursor, 500).expect("read_journal");
                polls += 1;
                for e in &batch.entries {
                    assert_eq!(e.seq, cursor + 1, "positions go up by one");
                    cursor = e.seq;
                    let v: serde_json::Value = serde_json::from_slice(&e.doc).unwrap();
                    let id = v["trace_id"].as_str().unwrap().to_string();
                    if let Some(first) = seen.insert(id.clone(), e.seq) {
                        panic!("trace {id} read twice: at {first} and {}", e.seq);
                    }
                }
                if finished && batch.entries.is_empty() && cursor == batch.durable_seq {
                    return (seen, polls);
                }
            }
        })
    };

    let writers: Vec<_> = (0..NODES * WRITERS)
        .map(|w| {
            let store = Arc::clone(&nodes[w % NODES]);
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                for b in 0..BATCHES {
                    let size = 1 + (w * 37 + b * 53) % 50;
                    let items: Vec<_> = (0..size)
                        .map(|i| {
                            // Spread over three days, so batches touch
                            // several partitions.
                            json!({"time": now() - HOUR - ((w + b + i) % 3) as i64 * DAY})
                        })
                        .collect();
                    let batch = conformance::traces("p", &items);
                    let ids: Vec<String> = batch.iter().map(|t| t.trace_id.clone()).collect();
                    let out = store.append(batch).expect("append");
                    assert_eq!(out.stored, size);
                    acked.lock().unwrap().extend(ids);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("a writer");
    }
    done.store(true, Ordering::SeqCst);
    let (seen, polls) = consumer.join().expect("the consumer");
    let acked = acked.lock().unwrap();
    let seen_ids: HashSet<String> = seen.keys().cloned().collect();
    assert_eq!(seen_ids.len(), acked.len(), "every trace read once");
    assert!(seen_ids == *acked, "the traces read are those acknowledged");
    assert!(
        polls > 2,
        "the consumer polled while writers wrote ({polls} polls)"
    );
    eprintln!(
        "{} traces from {} writers on {NODES} nodes, {polls} polls",
        acked.len(),
        NODES * WRITERS
    );
}

/// Makes every batch wait a random few ms between inserting its rows and
/// committing, as a commit waiting for its WAL flush or a synchronous
/// standby does: transactions that take positions concurrently then commit
/// out of order unless positions are ordered with commits.
fn slow_commits(url: &str) {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    client
        .batch_execute(
            "CREATE FUNCTION cts_test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM pg_sleep(random() * 0.02); RETURN NULL; END $$; \
             CREATE TRIGGER cts_test_slow_commit AFTER INSERT ON cts_traces \
             FOR EACH STATEMENT EXECUTE FUNCTION cts_test_slow_commit();",
        )
        .expect("the slow-commit trigger");
}

/// A retry reaching another node is a duplicate there too; a partition one
/// node's retention dropped is made again when another node (which thought
/// it existed) writes to its day.
#[test]
fn nodes_share_idempotency_and_partitions() {
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let (a, b) = (open(&url), open(&url));
    let id = "00000000-0000-4000-8000-00000000000a";
    let old = json!({"trace_id": id, "time": now() - 4 * DAY});
    assert_eq!(
        a.append(conformance::traces("p", std::slice::from_ref(&old)))
            .unwrap()
            .stored,
        1
    );
    let retry = b
        .append(conformance::traces("p", std::slice::from_ref(&old)))
        .unwrap();
    assert_eq!((retry.stored, retry.duplicates), (0, 1));

    let report = b.enforce_retention(now() - 2 * DAY).unwrap();
    assert_eq!(report.index_partitions_dropped, 1);
    // `a` still thinks the day's partition is there.
    assert_eq!(
        a.append(conformance::traces("p", &[old])).unwrap().stored,
        1
    );
    let mut q = cts_model::TraceQuery {
        project_id: "p".into(),
        from: now() - 5 * DAY,
        to: now(),
        limit: 10,
        next: None,
        trace_id: Some(id.into()),
        filters: Vec::new(),
    };
    assert_eq!(b.query(&q).unwrap().traces.len(), 1);
    q.trace_id = None;
    assert_eq!(b.query(&q).unwrap().traces.len(), 1);
}

/// A consumer whose traces retention dropped (it held nothing) is told so,
/// with where the journal goes on.
#[test]
fn journal_gone_after_retention_without_hold() {
    let pg = TestPg::start();
    let store = open(&pg.fresh_database());
    let items = [
        json!({"time": now() - 4 * DAY}),
        json!({"time": now() - 4 * DAY}),
    ];
    store.append(conformance::traces("p", &items)).unwrap();
    store
        .append(conformance::traces("p", &[json!({})]))
        .unwrap();
    store.hold_journal("transfer", 1);
    let report = store.enforce_retention(now() - 2 * DAY).unwrap();
    assert_eq!(
        (
            report.index_partitions_dropped,
            report.journal_segments_held
        ),
        (0, 1)
    );
    store.hold_journal("transfer", 2);
    let report = store.enforce_retention(now() - 2 * DAY).unwrap();
    assert_eq!(report.index_partitions_dropped, 1);
    match store.read_journal(0, 10) {
        Err(StoreError::JournalGone {
            after_seq: 0,
            oldest_seq: 3,
        }) => {}
        other => panic!("expected JournalGone, got {other:?}"),
    }
    let rest = store.read_journal(2, 10).unwrap();
    assert_eq!(rest.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    let stats = store.stats();
    assert_eq!((stats.journal_seq, stats.segments), (3, 1));
}

#[test]
fn a_start_without_migrations_refuses_until_they_ran() {
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let e = PgStore::open(pool(&url), false, RETENTION_MS)
        .err()
        .expect("an unmigrated schema");
    assert!(e.to_string().contains("ctsd migrate"), "{e}");
    let applied = cts_db::migrate(&mut pool(&url).get().unwrap(), &SCHEMA).unwrap();
    assert_eq!(applied, [1]);
    PgStore::open(pool(&url), false, RETENTION_MS).expect("a current schema");
}
