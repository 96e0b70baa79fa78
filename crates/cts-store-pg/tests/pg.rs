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

/// Makes every batch wait a random few ms after inserting its traces
/// (concurrent batches overlap there) and again between taking its
/// positions and committing, as a commit waiting for its WAL flush or a
/// synchronous standby does: transactions that take positions
/// concurrently then commit out of order unless positions are ordered
/// with commits.
fn slow_commits(url: &str) {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    client
        .batch_execute(
            "CREATE FUNCTION cts_test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM pg_sleep(random() * 0.02); RETURN NULL; END $$; \
             CREATE TRIGGER cts_test_slow_insert AFTER INSERT ON cts_traces \
             FOR EACH STATEMENT EXECUTE FUNCTION cts_test_slow_commit(); \
             CREATE TRIGGER cts_test_slow_commit AFTER INSERT ON cts_trace_order \
             FOR EACH STATEMENT EXECUTE FUNCTION cts_test_slow_commit();",
        )
        .expect("the slow-commit triggers");
}

/// Every trace the journal holds, in order, by trace id; panics on a gap
/// or a trace read twice.
fn read_all(store: &PgStore) -> Vec<String> {
    let (mut cursor, mut ids) = (0u64, Vec::new());
    loop {
        let batch = store.read_journal(cursor, 1000).expect("read_journal");
        for e in &batch.entries {
            assert_eq!(e.seq, cursor + 1, "positions go up by one");
            cursor = e.seq;
            let v: serde_json::Value = serde_json::from_slice(&e.doc).unwrap();
            ids.push(v["trace_id"].as_str().unwrap().to_string());
        }
        if cursor == batch.durable_seq {
            let unique: HashSet<&String> = ids.iter().collect();
            assert_eq!(unique.len(), ids.len(), "a trace read twice: {ids:?}");
            return ids;
        }
    }
}

/// Retries sent through two nodes at the same moment: the traces are
/// inserted outside the positions lock, so a batch meets the other's
/// uncommitted rows, waits for that commit and leaves them out. Each trace
/// is stored and delivered once; batches holding the same ids in opposite
/// orders do not deadlock.
#[test]
fn a_duplicate_reported_through_two_nodes_at_once_is_stored_and_delivered_once() {
    senders_race(8, 20, |k, mut items| {
        if k >= 2 {
            items.reverse();
        }
        items
    });
}

/// Batches sharing ids over two days, each missing other ids, sent
/// through two nodes at once: a `COPY` inserts a partition at a time, in
/// the order the partitions first came in its rows, so rows ordered by id
/// alone were inserted one day first by one batch and the other day first
/// by another, and the two waited for each other (a deadlock, answered
/// as a failed batch). Ordered by day first, each trace is stored once.
#[test]
fn batches_sharing_ids_over_two_days_do_not_deadlock() {
    // Sender k leaves out every id i with i % 4 == k: its first id is of
    // one day or of the other.
    senders_race(12, 40, |k, items| {
        items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % 4 != k)
            .map(|(_, item)| item)
            .collect()
    });
}

/// `rounds` rounds of four senders through two nodes, released at once,
/// each sending `batch(k, items)` of the round's `ids` traces (over two
/// days); every trace of a round is stored by exactly one of them, and
/// the journal delivers each once.
fn senders_race(
    rounds: usize,
    ids: usize,
    batch: impl Fn(usize, Vec<serde_json::Value>) -> Vec<serde_json::Value>,
) {
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let nodes: Vec<Arc<PgStore>> = (0..2).map(|_| Arc::new(open(&url))).collect();
    slow_commits(&url);
    let mut expected = HashSet::new();
    for round in 0..rounds {
        let items: Vec<_> = (0..ids)
            .map(|i| {
                let id = format!("00000000-0000-4000-8000-{:012x}", round * ids + i);
                expected.insert(id.clone());
                json!({"trace_id": id, "time": now() - HOUR - (i % 2) as i64 * DAY})
            })
            .collect();
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let senders: Vec<_> = (0..4)
            .map(|k| {
                let (store, barrier) = (Arc::clone(&nodes[k % 2]), Arc::clone(&barrier));
                let items = batch(k, items.clone());
                std::thread::spawn(move || {
                    let batch = conformance::traces("p", &items);
                    barrier.wait();
                    (items.len(), store.append(batch).expect("append"))
                })
            })
            .collect();
        let outcomes: Vec<_> = senders.into_iter().map(|s| s.join().unwrap()).collect();
        let stored: usize = outcomes.iter().map(|(_, o)| o.stored).sum();
        assert_eq!(stored, ids, "round {round}: {outcomes:?}");
        assert!(outcomes.iter().all(|(n, o)| o.stored + o.duplicates == *n));
    }
    let read: HashSet<String> = read_all(&nodes[1]).into_iter().collect();
    assert!(read == expected, "every trace delivered once");
}

/// A batch of new traces goes in by `COPY`; one that repeats a stored
/// trace is refused by the unique index as a whole and goes again by the
/// `ON CONFLICT` statement, storing only its new traces. On one pooled
/// connection (the refused `COPY` leaves it usable), every trace is
/// numbered once, in batch order, without a gap (also across days: a run
/// for each stretch of one day).
#[test]
fn a_batch_repeating_a_stored_trace_after_copies_is_numbered_without_a_gap() {
    let pg = TestPg::start();
    let mut settings = PgSettings::new(pg.fresh_database().parse().unwrap());
    settings.pool_size = 1;
    let store = PgStore::open(settings.connect().unwrap(), true, RETENTION_MS).unwrap();
    let id = |n: usize| format!("00000000-0000-4000-8000-{n:012x}");
    let batch = |ids: &[usize]| {
        let items: Vec<_> = ids
            .iter()
            .map(|&n| json!({"trace_id": id(n), "time": now() - HOUR - (n % 2) as i64 * DAY}))
            .collect();
        conformance::traces("p", &items)
    };
    let out = store.append(batch(&[1, 2, 3])).unwrap();
    assert_eq!((out.stored, out.duplicates), (3, 0));
    let out = store.append(batch(&[4, 2, 5, 3])).unwrap();
    assert_eq!((out.stored, out.duplicates), (2, 2));
    let out = store.append(batch(&[6, 7])).unwrap();
    assert_eq!((out.stored, out.duplicates), (2, 0));
    let out = store.append(batch(&[7, 7])).unwrap();
    assert_eq!((out.stored, out.duplicates), (0, 2));
    let read = read_all(&store);
    // Odd ids are a day older: runs [1][2][3], [5] after [4], [7] after [6].
    assert_eq!(read, [1, 2, 3, 4, 5, 6, 7].map(id).to_vec());
}

/// A batch failing after its transaction began (here its batch number:
/// the sequence is renamed away) is rolled back before the connection
/// goes back to the pool: the next batch on the same (only) connection is
/// stored, not refused as part of an aborted transaction.
#[test]
fn a_batch_failing_inside_its_transaction_leaves_the_connection_usable() {
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let mut settings = PgSettings::new(url.parse().unwrap());
    settings.pool_size = 1;
    let store = PgStore::open(settings.connect().unwrap(), true, RETENTION_MS).unwrap();
    let batch = || conformance::traces("p", &[json!({}), json!({})]);
    assert_eq!(store.append(batch()).unwrap().stored, 2);
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute("ALTER SEQUENCE cts_trace_batches RENAME TO cts_trace_batches_away")
        .unwrap();
    let refused = store.append(batch());
    assert!(refused.is_err(), "{refused:?}");
    admin
        .batch_execute("ALTER SEQUENCE cts_trace_batches_away RENAME TO cts_trace_batches")
        .unwrap();
    assert_eq!(store.append(batch()).unwrap().stored, 2);
    assert_eq!(read_all(&store).len(), 4);
}

/// A connection to `url`'s database, migrated up to `version` only.
fn at_schema(url: &str, version: usize) -> postgres::Client {
    let schema = cts_db::PgSchema {
        ledger: SCHEMA.ledger,
        migrations: &SCHEMA.migrations[..version],
    };
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let applied = cts_db::migrate(&mut client, &schema).unwrap();
    assert_eq!(applied, (1..=version as i32).collect::<Vec<_>>());
    client
}

/// A database at schema 1 (positions in `cts_traces`) moves to the
/// narrow positions table: every trace keeps its position, consumers go on
/// where they were, new traces are numbered after the old ones, and
/// retention drops a migrated day whole.
#[test]
fn the_migration_from_schema_1_keeps_positions() {
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let mut client = at_schema(&url, 1);
    // Three traces as schema 1 stored them: two four days ago, one now.
    let old = now() - 4 * DAY;
    for (pos, time) in [(1i64, old), (2, old), (3, now() - HOUR)] {
        let day = time.div_euclid(DAY) as i32;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS cts_traces_{} PARTITION OF cts_traces \
                 FOR VALUES FROM ({day}) TO ({})",
                jiff::Timestamp::from_millisecond(time)
                    .unwrap()
                    .strftime("%Y%m%d"),
                day + 1
            ))
            .unwrap();
        let doc = format!(r#"{{"trace_id":"00000000-0000-4000-8000-00000000000{pos}"}}"#);
        client
            .execute(
                "INSERT INTO cts_traces (day, time_ms, trace_id, pos, project_id, doc) \
                 VALUES ($1, $2, gen_random_uuid(), $3, 'p', $4)",
                &[&day, &time, &pos, &doc.as_bytes()],
            )
            .unwrap();
    }
    client
        .execute("UPDATE cts_trace_positions SET next_pos = 4", &[])
        .unwrap();

    let store = open(&url);
    let tail = store.read_journal(1, 10).unwrap();
    assert_eq!(
        tail.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [2, 3]
    );
    assert!(String::from_utf8_lossy(&tail.entries[0].doc).ends_with("0002\"}"));
    store
        .append(conformance::traces("p", &[json!({})]))
        .unwrap();
    let ids = read_all(&store);
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[2], "00000000-0000-4000-8000-000000000003");

    retention_drops_one_day_up_to_position_2(&store);
    let left: i64 = client
        .query_one("SELECT count(*) FROM cts_trace_order", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 2, "the dropped day's positions went with it");
}

/// An imported batch holding traces of two days, interleaved, keeps its
/// order in the journal, so a consumer's cursor translated by
/// `import_position` goes on with the first trace it had not delivered.
#[test]
fn an_imported_batch_over_two_days_keeps_its_order_for_cursors() {
    let pg = TestPg::start();
    let store = open(&pg.fresh_database());
    store
        .append(conformance::traces("p", &[json!({})]))
        .unwrap();
    store.import_begin("dir").unwrap();
    let items: Vec<_> = [DAY, 0, DAY, 0]
        .iter()
        .map(|back| json!({"time": now() - HOUR - back}))
        .collect();
    let traces = conformance::traces("p", &items);
    let prepared: Vec<_> = traces.iter().map(cts_store::PreparedTrace::of).collect();
    store
        .import_batch("dir", (0, 4), &[1, 2, 3, 4], &prepared, 0)
        .unwrap();
    let read = read_all(&store);
    let imported: Vec<String> = traces
        .iter()
        .map(|t| t.to_json())
        .map(|doc| {
            let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
            v["trace_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(read[1..], imported[..], "the batch in its own order");
    for seq in 1..=4u64 {
        // Position 1 is the trace appended before the import.
        assert_eq!(store.import_position(seq).unwrap(), seq + 1, "cursor {seq}");
    }
}

/// Migration 4 (runs of positions) converts a day's order table that a
/// stopped retention pass left detached as well as the attached ones, so
/// that retention can attach it again.
#[test]
fn migration_4_converts_a_detached_order_table_too() {
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let mut client = at_schema(&url, 3);
    let day = now().div_euclid(DAY) as i32;
    client
        .batch_execute(&format!(
            "CREATE TABLE cts_trace_order_test PARTITION OF cts_trace_order \
             FOR VALUES FROM ({day}) TO ({next}); \
             INSERT INTO cts_trace_order (pos, day, seq) VALUES (1, {day}, 5); \
             ALTER TABLE cts_trace_order DETACH PARTITION cts_trace_order_test",
            next = day + 1
        ))
        .unwrap();
    assert_eq!(cts_db::migrate(&mut client, &SCHEMA).unwrap(), [4]);
    let row = client
        .query_one(
            "SELECT pos, n, first_seq, last_seq FROM cts_trace_order_test",
            &[],
        )
        .unwrap();
    let run: (i64, i32, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(run, (1, 1, 5, 5));
    client
        .batch_execute(&format!(
            "ALTER TABLE cts_trace_order ATTACH PARTITION cts_trace_order_test \
             FOR VALUES FROM ({day}) TO ({})",
            day + 1
        ))
        .expect("the converted table attaches again");
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

/// A batch of a day without partitions makes them while a journal read
/// holds both tables in an open transaction (as a consumer's read does for
/// its statement): it does not wait for the read. Making them with
/// `PARTITION OF` waited for it, and deadlocked with a read that held
/// `cts_trace_order` while it waited for `cts_traces`.
#[test]
fn a_new_days_partitions_are_made_while_a_journal_read_holds_the_tables() {
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let store = open(&url);
    let today = json!({"trace_id": "00000000-0000-4000-8000-0000000000b1", "time": now()});
    assert_eq!(
        store
            .append(conformance::traces("p", &[today]))
            .unwrap()
            .stored,
        1
    );

    let pool = pool(&url);
    let mut reader = pool.get().unwrap();
    let mut read = reader.transaction().unwrap();
    assert_eq!(read_the_journal(&mut read), 1);

    let (done, made) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let old =
            json!({"trace_id": "00000000-0000-4000-8000-0000000000b2", "time": now() - 3 * DAY});
        let _ = done.send(
            store
                .append(conformance::traces("p", &[old]))
                .map(|r| r.stored),
        );
    });
    let stored = made
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the day's partitions made without waiting for the journal read");
    assert_eq!(stored.unwrap(), 1);
    read.commit().unwrap();
}

/// Retention two days back drops one day, the one holding positions 1 and
/// 2: a consumer from the start is told the journal goes on at 3.
fn retention_drops_one_day_up_to_position_2(store: &PgStore) {
    let report = store.enforce_retention(now() - 2 * DAY).unwrap();
    assert_eq!(report.index_partitions_dropped, 1);
    assert_journal_goes_on_at_3(store);
}

/// Also when the consumer asks for fewer traces than the gap holds.
fn assert_journal_goes_on_at_3(store: &PgStore) {
    for max in [10, 1] {
        match store.read_journal(0, max) {
            Err(StoreError::JournalGone {
                after_seq: 0,
                oldest_seq: 3,
            }) => {}
            other => panic!("max {max}: expected JournalGone, got {other:?}"),
        }
    }
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
    // Now, not the default hour ago: in the first hour of a UTC day that
    // is yesterday, a third day.
    store
        .append(conformance::traces("p", &[json!({"time": now()})]))
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
    retention_drops_one_day_up_to_position_2(&store);
    let rest = store.read_journal(2, 10).unwrap();
    assert_eq!(rest.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    let stats = store.stats();
    // Today's day, and tomorrow's made ahead by the pass.
    assert_eq!((stats.journal_seq, stats.segments), (3, 2));
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
    assert_eq!(applied, [1, 2, 3, 4]);
    PgStore::open(pool(&url), false, RETENTION_MS).expect("a current schema");
}

/// Issue 17: ListTraces plans rest on a partition's statistics, which
/// autovacuum gathers late under a bulk load. A node writing into a fresh
/// day analyzes its partitions itself once they hold `FIRST_ANALYZE_ROWS`
/// rows (it reads their growth from PostgreSQL's statistics, which lag a
/// little: the node keeps writing meanwhile, as under a load).
#[test]
fn a_node_analyzes_a_day_partition_it_filled() {
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let store = open(&url);
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    // One day's time for every trace (the default, an hour ago, is
    // yesterday in the first hour of a UTC day).
    let time = now();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut written = 0;
    loop {
        // `last_analyze` is an explicit ANALYZE's (autovacuum's is
        // `last_autoanalyze`).
        let analyzed: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL \
                 AND (relname LIKE 'cts_traces_%' OR relname LIKE 'cts_trace_order_%')",
                &[],
            )
            .unwrap()
            .get(0);
        if analyzed == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the day's partitions were not analyzed ({analyzed} of 2) after {written} rows"
        );
        let items: Vec<_> = (written..written + 250)
            .map(|i| {
                let name = format!("user-{}", i % 7);
                json!({"time": time, "user": {"id": "u", "name": name, "domain": {"id": "d", "name": "dn"}}})
            })
            .collect();
        store.append(conformance::traces("p", &items)).unwrap();
        written += 250;
        if written >= cts_store_pg::FIRST_ANALYZE_ROWS as usize {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    assert!(written >= cts_store_pg::FIRST_ANALYZE_ROWS as usize);
    // Every column a page's statement bounds or filters on: without
    // statistics for `day`, its `BETWEEN` was estimated to keep 0.5 % of a
    // day's rows, and the planner read whole days unordered.
    for column in ["project_id", "day", "time_ms", "trace_id", "user_name"] {
        let stats: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stats WHERE tablename LIKE 'cts_traces_%' \
                 AND attname = $1",
                &[&column],
            )
            .unwrap()
            .get(0);
        assert_eq!(stats, 1, "{column} has statistics");
    }
    let day = time.div_euclid(DAY) as i32;
    let plan = client
        .simple_query(&format!(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM cts_traces \
             WHERE project_id = 'p' AND day BETWEEN {day} AND {day}"
        ))
        .unwrap()
        .into_iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap();
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let estimate = plan[0]["Plan"]["Plan Rows"].as_f64().unwrap();
    assert!(
        estimate >= written as f64 / 2.0,
        "the day's rows are estimated at {estimate} of {written}"
    );
}

/// An ANALYZE another node is running (it holds the day partition's lock)
/// is not queued again behind it: the node finds the lock taken and goes
/// on writing, then analyzes the day itself once the other has ended.
/// Three nodes used to analyze each growth of a day two or three times.
#[test]
fn a_node_does_not_queue_an_analyze_behind_another_nodes() {
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let store = open(&url);
    // One day for every trace (see above).
    let time = now();
    let rows = |n: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| {
                let name = format!("user-{}", i % 7);
                json!({"time": time, "user": {"id": "u", "name": name, "domain": {"id": "d", "name": "dn"}}})
            })
            .collect()
    };
    store.append(conformance::traces("p", &rows(10))).unwrap();
    let (part, _) = day_tables(time);

    let mut other = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut analyzing = other.transaction().unwrap();
    analyzing
        .batch_execute(&format!("LOCK TABLE {part} IN SHARE UPDATE EXCLUSIVE MODE"))
        .unwrap();
    let mut watcher = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let analyzes_waiting = |watcher: &mut postgres::Client| -> i64 {
        watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND starts_with(query, 'ANALYZE')",
                &[],
            )
            .unwrap()
            .get(0)
    };
    // Well past due while the lock is held: 6,000 rows over 3 s (the
    // statistics the node reads lag up to a second).
    for _ in 0..20 {
        store.append(conformance::traces("p", &rows(300))).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
        assert_eq!(
            analyzes_waiting(&mut watcher),
            0,
            "an ANALYZE waits behind the other's"
        );
    }
    analyzing.commit().unwrap();

    let analyzed = |watcher: &mut postgres::Client| -> bool {
        watcher
            .query_one(
                "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = $1",
                &[&part],
            )
            .unwrap()
            .get(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !analyzed(&mut watcher) {
        assert!(
            std::time::Instant::now() < deadline,
            "the day was never analyzed"
        );
        store.append(conformance::traces("p", &rows(300))).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Positions 1 and 2 four days ago, 3 now: retention two days back has
/// one day to drop. Answers the time of the old traces.
fn an_expired_day_and_today(store: &PgStore) -> i64 {
    let old = now() - 4 * DAY;
    let items = [json!({ "time": old }), json!({ "time": old })];
    store.append(conformance::traces("p", &items)).unwrap();
    store
        .append(conformance::traces("p", &[json!({})]))
        .unwrap();
    old
}

/// A fresh database of `pg` with [`an_expired_day_and_today`], the expired
/// day fenced as a retention pass fences it: its URL, a store on it, a
/// plain connection and the expired day's time.
fn an_expired_day_fenced(pg: &TestPg) -> (String, PgStore, postgres::Client, i64) {
    let url = pg.fresh_database();
    let store = open(&url);
    let old = an_expired_day_and_today(&store);
    let date = jiff::Timestamp::from_millisecond(old)
        .unwrap()
        .strftime("%Y-%m-%d");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!(
            "CREATE TRIGGER cts_day_retired BEFORE INSERT ON {} \
             FOR EACH ROW EXECUTE FUNCTION cts_day_retired(\
             'the traces of {date} are not stored: retention is removing that day')",
            day_tables(old).1
        ))
        .unwrap();
    (url, store, client, old)
}

/// The day tables of the day of `time` (ms): `cts_traces_…`, `cts_trace_order_…`.
fn day_tables(time: i64) -> (String, String) {
    let date = jiff::Timestamp::from_millisecond(time)
        .unwrap()
        .strftime("%Y%m%d")
        .to_string();
    (
        format!("cts_traces_{date}"),
        format!("cts_trace_order_{date}"),
    )
}

/// A batch of one trace at `time` is refused as a day retention removes,
/// and stores nothing: the day still holds its two traces.
fn a_late_batch_is_refused(store: &PgStore, client: &mut postgres::Client, time: i64) {
    let e = store
        .append(conformance::traces("p", &[json!({ "time": time })]))
        .expect_err("a batch into a day retention removes");
    let date = jiff::Timestamp::from_millisecond(time)
        .unwrap()
        .strftime("%Y-%m-%d");
    assert!(matches!(e, StoreError::Retired(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("the traces of {date} are not stored: retention is removing that day")
    );
    let traces: i64 = client
        .query_one(
            format!("SELECT count(*) FROM {}", day_tables(time).0).as_str(),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(traces, 2, "the refused batch stored nothing");
}

/// Whether `table` carries retention's fence, is a partition, and is one
/// whose detach is pending.
fn table_state(client: &mut postgres::Client, table: &str) -> (bool, bool, bool) {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) \
                            AND tgname = 'cts_day_retired'), \
                    EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1)), \
                    EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1) \
                            AND inhdetachpending)",
            &[&table],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

fn gone(client: &mut postgres::Client, tables: &(String, String)) -> bool {
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname IN ($1, $2)",
            &[&tables.0, &tables.1],
        )
        .unwrap()
        .get(0);
    left == 0
}

/// Waits until some session of the database waits for a lock while it
/// runs a statement starting with `statement`; answers its pid.
fn waiting(client: &mut postgres::Client, statement: &str) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let pid = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND datname = current_database() AND starts_with(query, $1)",
                &[&statement],
            )
            .unwrap();
        if let Some(pid) = pid {
            return pid.get(0);
        }
        if std::time::Instant::now() >= deadline {
            let sessions: Vec<String> = client
                .query(
                    "SELECT concat_ws(' ', wait_event_type, wait_event, state, query) \
                     FROM pg_stat_activity WHERE datname = current_database()",
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            panic!("no session waits in `{statement}`: {sessions:#?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Reads the journal as a consumer's statement does, in `read`'s open
/// transaction, which then holds both tables until it ends; answers the
/// positions read.
fn read_the_journal(read: &mut postgres::Transaction<'_>) -> usize {
    read.query(
        "SELECT o.pos FROM cts_trace_order o JOIN cts_traces t \
         ON t.day = o.day AND t.seq BETWEEN o.first_seq AND o.last_seq ORDER BY o.pos",
        &[],
    )
    .unwrap()
    .len()
}

/// Issue 17: retention of an expired day while a journal read holds both
/// tables (as a consumer's read does for its statement, which can take
/// seconds) waits for the read, and meanwhile a batch of today and a
/// ListTraces go on. An exclusive lock on the parents made both queue
/// behind retention until the read ended. Once the read has committed the
/// day is gone.
#[test]
fn retention_waiting_for_a_journal_read_stops_neither_ingest_nor_queries() {
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let store = Arc::new(open(&url));
    an_expired_day_and_today(&store);

    let pool = pool(&url);
    let mut reader = pool.get().unwrap();
    let mut read = reader.transaction().unwrap();
    assert_eq!(read_the_journal(&mut read), 3);

    let (retired, retention) = std::sync::mpsc::channel();
    std::thread::spawn({
        let store = Arc::clone(&store);
        move || {
            let _ = retired.send(store.enforce_retention(now() - 2 * DAY));
        }
    });
    let mut watcher = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    waiting(&mut watcher, "");

    let (done, went_on) = std::sync::mpsc::channel();
    std::thread::spawn({
        let store = Arc::clone(&store);
        move || {
            let stored = store
                .append(conformance::traces("p", &[json!({})]))
                .map(|r| r.stored);
            let q = cts_model::TraceQuery {
                project_id: "p".into(),
                from: now() - DAY,
                to: now() + HOUR,
                limit: 10,
                next: None,
                trace_id: None,
                filters: Vec::new(),
            };
            let listed = store.query(&q).map(|page| page.traces.len());
            let _ = done.send((stored, listed));
        }
    });
    let (stored, listed) = went_on
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("a batch and a ListTraces complete while retention waits for the read");
    assert_eq!(stored.unwrap(), 1);
    assert_eq!(listed.unwrap(), 2, "today's two traces");
    assert!(
        retention.try_recv().is_err(),
        "retention waits for the journal read"
    );

    read.commit().unwrap();
    let report = retention
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("retention ends after the read")
        .unwrap();
    assert_eq!(report.index_partitions_dropped, 1);
    assert_journal_goes_on_at_3(&store);
}

/// Once retention has fenced an expired day (it then waits here to detach
/// it, behind another schema change of the positions table), a late batch
/// into that day is refused with a message that says so and stores
/// nothing, through this node or another. A pass stopped there (its
/// statement cancelled) leaves the day fenced; the next pass removes it.
#[test]
fn a_fenced_day_refuses_a_late_batch_and_the_next_pass_removes_it() {
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let store = Arc::new(open(&url));
    let old = an_expired_day_and_today(&store);
    let tables = day_tables(old);
    // A pass with nothing expired makes today's and tomorrow's tables, so
    // that the lock below holds off only the detach.
    store.enforce_retention(now() - 30 * DAY).unwrap();

    let mut other = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut schema_change = other.transaction().unwrap();
    schema_change
        .batch_execute("LOCK TABLE ONLY cts_trace_order IN SHARE UPDATE EXCLUSIVE MODE")
        .unwrap();
    let (retired, retention) = std::sync::mpsc::channel();
    std::thread::spawn({
        let store = Arc::clone(&store);
        move || {
            let _ = retired.send(store.enforce_retention(now() - 2 * DAY));
        }
    });
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let pid = waiting(&mut client, "ALTER TABLE cts_trace_order DETACH");
    assert_eq!(table_state(&mut client, &tables.1), (true, true, false));

    a_late_batch_is_refused(&store, &mut client, old);
    a_late_batch_is_refused(&open(&url), &mut client, old);

    client
        .execute("SELECT pg_cancel_backend($1)", &[&pid])
        .unwrap();
    let stopped = retention
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    assert!(stopped.is_err(), "{stopped:?}");
    schema_change.commit().unwrap();
    assert_eq!(table_state(&mut client, &tables.1), (true, true, false));

    retention_drops_one_day_up_to_position_2(&store);
    assert!(gone(&mut client, &tables));
}

/// A pass that stopped after detaching the positions partition, and in
/// the middle of detaching the traces one (pending: its statement was
/// cancelled while it waited for a reader), is finished by the next pass.
/// Meanwhile a late batch into the day is refused, not retried in a loop.
#[test]
fn a_pass_stopped_while_detaching_is_finished_by_the_next() {
    let pg = TestPg::start();
    let (url, store, mut client, old) = an_expired_day_fenced(&pg);
    let (part, order) = day_tables(old);

    // What the stopped pass did next, as retention runs it.
    client
        .batch_execute(&format!(
            "ALTER TABLE cts_trace_order DETACH PARTITION {order} CONCURRENTLY"
        ))
        .unwrap();
    assert_eq!(table_state(&mut client, &order), (true, false, false));
    a_late_batch_is_refused(&store, &mut client, old);

    let mut reader = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut read = reader.transaction().unwrap();
    read.query("SELECT count(*) FROM cts_traces", &[]).unwrap();
    let detaching = std::thread::spawn({
        let url = url.clone();
        let part = part.clone();
        move || {
            postgres::Client::connect(&url, postgres::NoTls)
                .unwrap()
                .batch_execute(&format!(
                    "ALTER TABLE cts_traces DETACH PARTITION {part} CONCURRENTLY"
                ))
        }
    });
    let pid = waiting(&mut client, "ALTER TABLE cts_traces DETACH");
    client
        .execute("SELECT pg_cancel_backend($1)", &[&pid])
        .unwrap();
    assert!(detaching.join().unwrap().is_err());
    read.commit().unwrap();
    assert_eq!(table_state(&mut client, &part), (false, true, true));
    a_late_batch_is_refused(&store, &mut client, old);

    retention_drops_one_day_up_to_position_2(&store);
    assert!(gone(&mut client, &(part, order)));
}

/// A pass stopped after fencing a day, then `store.retention` raised so
/// that the day is kept: the next pass lifts the fence (the day's traces
/// are within the window and must be stored) and leaves the day whole.
#[test]
fn a_fence_of_a_day_no_longer_expired_is_lifted() {
    a_day_no_longer_expired_is_put_back(&[]);
}

/// The same for a pass stopped after it detached the day's tables (and
/// before it dropped them): the day is attached again.
#[test]
fn a_detached_day_no_longer_expired_is_attached_again() {
    a_day_no_longer_expired_is_put_back(&["cts_trace_order", "cts_traces"]);
}

/// An expired day fenced, then its tables of `detached` (parents, in
/// order) detached as a pass does; a pass with a window of 30 days puts
/// the day back whole, with its traces, and takes batches again.
fn a_day_no_longer_expired_is_put_back(detached: &[&str]) {
    let pg = TestPg::start();
    let (_, store, mut client, old) = an_expired_day_fenced(&pg);
    let (part, order) = day_tables(old);
    for parent in detached {
        let table = if *parent == "cts_traces" {
            &part
        } else {
            &order
        };
        client
            .batch_execute(&format!(
                "ALTER TABLE {parent} DETACH PARTITION {table} CONCURRENTLY"
            ))
            .unwrap();
    }
    a_late_batch_is_refused(&store, &mut client, old);

    // A window of 30 days keeps the day.
    let report = store.enforce_retention(now() - 30 * DAY).unwrap();
    assert_eq!(report.index_partitions_dropped, 0);
    assert_eq!(table_state(&mut client, &order), (false, true, false));
    assert_eq!(table_state(&mut client, &part), (false, true, false));
    store
        .append(conformance::traces("p", &[json!({ "time": old })]))
        .unwrap();
    let traces: i64 = client
        .query_one(format!("SELECT count(*) FROM {part}").as_str(), &[])
        .unwrap()
        .get(0);
    assert_eq!(traces, 3);
}
