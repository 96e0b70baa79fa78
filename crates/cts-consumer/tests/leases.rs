//! Leases on a real PostgreSQL: one holder per key, takeover after expiry,
//! fencing of a stale holder's commit, and a consumer that moves to another
//! node and goes on from the committed cursor. The embedded store holds
//! every lease itself.

#[macro_use]
#[allow(unused_macros)]
mod backends;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use backends::{a_journal_with_old_traces, traces, Place, HOUR, LEASES};
use cts_consumer::{read_batch, ConsumerError, ConsumerStore, Entry, LeaseSettings};
use cts_store::{EmbeddedStore, StoreConfig, TraceStore};

fn two_nodes() -> (Place, ConsumerStore, ConsumerStore) {
    let place = Place::postgres();
    let (a, b) = (place.open(), place.open());
    (place, a, b)
}

/// Waits until `b` takes the lease over (bounded: twice the lease time).
fn take_over(b: &ConsumerStore, consumer: &str, key: &str) -> Duration {
    let started = Instant::now();
    while !b.claim(consumer, key).unwrap() {
        assert!(
            started.elapsed() < LEASES.ttl * 2,
            "the lease was not taken over"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

fn at(cursor: u64) -> Entry<()> {
    Entry { cursor, body: () }
}

#[test]
fn one_holder_per_key_and_renewal_keeps_it() {
    let (_pg, a, b) = two_nodes();
    assert_ne!(a.node(), b.node());
    assert!(a.claim("transfer", "t1").unwrap());
    assert!(a.claim("transfer", "t1").unwrap(), "a holder claims again");
    assert!(!b.claim("transfer", "t1").unwrap());
    assert!(b.claim("transfer", "t2").unwrap(), "another key is free");
    // Renewed for longer than the lease time: still a's.
    let until = Instant::now() + LEASES.ttl * 2;
    while Instant::now() < until {
        a.renew().unwrap();
        assert!(!b.claim("transfer", "t1").unwrap());
        std::thread::sleep(LEASES.renew_every);
    }
    a.put("transfer", "t1", &at(5)).unwrap();
    // Released at stop: taken over at once.
    a.release().unwrap();
    assert!(b.claim("transfer", "t1").unwrap());
    assert!(matches!(
        a.put("transfer", "t1", &at(6)),
        Err(ConsumerError::LeaseLost { .. })
    ));
}

#[test]
fn an_expired_lease_is_taken_over_and_the_stale_holder_is_fenced() {
    let (_pg, a, b) = two_nodes();
    assert!(a.claim("lts", "t1").unwrap());
    a.put("lts", "t1", &at(10)).unwrap();
    assert!(a.claim("lts", "t2").unwrap());
    // a stops renewing (killed, hung): b takes over once the lease expires.
    let waited = take_over(&b, "lts", "t1");
    assert!(waited >= LEASES.ttl / 2, "taken over after {waited:?}");
    b.put("lts", "t1", &at(20)).unwrap();
    // a does not know yet: its commit is refused, whole, and moves nothing
    // back.
    let stale = a.transaction(|tx| {
        tx.put("lts", "t2", &at(1))?;
        tx.put("lts", "t1", &at(11))
    });
    assert!(
        matches!(&stale, Err(ConsumerError::LeaseLost { key, .. }) if key == "t1"),
        "{stale:?}"
    );
    assert_eq!(a.get::<()>("lts", "t1").unwrap().unwrap().cursor, 20);
    assert_eq!(a.get::<()>("lts", "t2").unwrap(), None);
    // Renewing does not win it back, and a no longer works the key.
    a.renew().unwrap();
    assert!(!a.claim("lts", "t1").unwrap());
    // Writes of a key never claimed are refused too.
    assert!(matches!(
        b.put("lts", "t3", &at(1)),
        Err(ConsumerError::LeaseLost { .. })
    ));
}

#[test]
fn a_forgotten_key_fences_its_holder() {
    let (_pg, a, b) = two_nodes();
    assert!(a.claim("transfer", "t1").unwrap());
    a.put("transfer", "t1", &at(3)).unwrap();
    // The tracker is gone: any node drops its state, and the lease with it.
    b.forget("transfer", "t1").unwrap();
    assert!(matches!(
        a.put("transfer", "t1", &at(4)),
        Err(ConsumerError::LeaseLost { .. })
    ));
    assert_eq!(a.get::<()>("transfer", "t1").unwrap(), None);
}

/// One poll step of a consumer on `node`: claim, read after the committed
/// cursor, deliver, commit. Answers what it delivered, or None when it does
/// not hold the key.
fn step(node: &ConsumerStore, journal: &dyn TraceStore, delivered: &mut Vec<u64>) -> Option<usize> {
    if !node.claim("lts", "t1").unwrap() {
        return None;
    }
    let cursor = node.get::<()>("lts", "t1").unwrap().map_or(0, |e| e.cursor);
    let batch = read_batch(journal, cursor, 10).unwrap();
    let seqs: Vec<u64> = batch.entries.iter().map(|e| e.seq).collect();
    match node.put("lts", "t1", &at(batch.cursor)) {
        Ok(()) => {
            delivered.extend(&seqs);
            Some(seqs.len())
        }
        Err(ConsumerError::LeaseLost { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_node_that_stops_renewing_is_replaced_and_the_other_goes_on_from_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let journal = EmbeddedStore::open(StoreConfig::new(dir.path())).unwrap();
    let now = cts_clock::now_ms();
    journal.append(traces(45, now, now)).unwrap();
    let (_pg, a, b) = two_nodes();
    let mut delivered = Vec::new();
    assert_eq!(step(&a, &journal, &mut delivered), Some(10));
    a.renew().unwrap();
    assert_eq!(step(&b, &journal, &mut delivered), None, "a holds the key");
    assert_eq!(step(&a, &journal, &mut delivered), Some(10));
    // a stops renewing here; b takes over within the lease time and goes
    // on from a's last commit.
    take_over(&b, "lts", "t1");
    while step(&b, &journal, &mut delivered) != Some(0) {}
    // a wakes up and tries another step: fenced, it delivers nothing.
    assert_eq!(step(&a, &journal, &mut delivered), None);
    let seen: BTreeSet<u64> = delivered.iter().copied().collect();
    assert_eq!(delivered.len(), 45, "no trace twice: {delivered:?}");
    assert_eq!(seen, (1..=45).collect());
}

#[test]
fn the_embedded_store_holds_every_lease() {
    let place = Place::sqlite();
    let (a, b) = (place.open(), place.open());
    assert!(a.claim("transfer", "t1").unwrap());
    assert!(b.claim("transfer", "t1").unwrap());
    a.renew().unwrap();
    assert_eq!((a.renew_every(), a.node()), (None, None));
    a.put("transfer", "t1", &at(1)).unwrap();
    a.release().unwrap();
}

#[test]
fn a_renewal_must_come_before_the_lease_expires() {
    let pg = cts_testpg::TestPg::start();
    let bad = LeaseSettings {
        ttl: Duration::from_secs(5),
        renew_every: Duration::from_secs(5),
    };
    let err = ConsumerStore::connect(&pg.url(), cts_consumer::node_id(), bad)
        .err()
        .unwrap();
    assert!(err.to_string().contains("renewal interval"), "{err}");
}

#[test]
fn migrations_run_once_and_a_newer_schema_is_refused() {
    let pg = cts_testpg::TestPg::start();
    let url = pg.url();
    let a = ConsumerStore::connect(&url, cts_consumer::node_id(), LEASES).unwrap();
    assert!(a.claim("lts", "t1").unwrap());
    a.put("lts", "t1", &at(7)).unwrap();
    // A second node (or a restart) finds the tables and keeps the state.
    let b = ConsumerStore::connect(&url, cts_consumer::node_id(), LEASES).unwrap();
    assert_eq!(b.get::<()>("lts", "t1").unwrap(), Some(at(7)));
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let versions: i64 = client
        .query_one("SELECT COUNT(*) FROM cts_consumer_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(versions, 1);
    client
        .execute(
            "INSERT INTO cts_consumer_migrations (version, name) VALUES (99, 'future')",
            &[],
        )
        .unwrap();
    let err = ConsumerStore::connect(&url, cts_consumer::node_id(), LEASES)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ConsumerError::Db(cts_db::DbError::SchemaAhead { applied: 99, .. })
        ),
        "{err}"
    );
}

/// A node's hold of a consumer whose lease another node holds stays where
/// that node last set it (its start, say): the consumer moves its hold
/// only where it commits. `hold_all`, which retention runs before each
/// pass, brings every hold to the shared cursors, so a retention pass on
/// that node removes what the consumer has passed.
#[test]
fn hold_all_sees_the_cursor_another_node_moved() {
    let (_place, a, b) = two_nodes();
    let dir = tempfile::tempdir().unwrap();
    let now = cts_clock::now_ms();
    // Node b's view of the journal.
    let journal = a_journal_with_old_traces(dir.path(), now);
    assert!(a.claim("notifications", "matcher").unwrap());
    a.put("notifications", "matcher", &at(0)).unwrap();
    // Node b starts: it holds the journal from where the matcher stands.
    b.hold(&journal, "notifications").unwrap();
    // Node a's matcher moves on past the old traces.
    a.put("notifications", "matcher", &at(400)).unwrap();
    journal.enforce_retention(now - 2 * HOUR).unwrap();
    assert_eq!(read_batch(&journal, 0, 10).unwrap().gone, 0, "held at 0");

    b.hold_all(&journal).unwrap();
    journal.enforce_retention(now - 2 * HOUR).unwrap();
    assert_eq!(read_batch(&journal, 0, 10).unwrap().gone, 250);
}
