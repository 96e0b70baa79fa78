//! The consumer seam over the real journal: state committed together or
//! not at all, holds from the lowest cursor, marks, the start search, and
//! a journal gap passed over with its size said. Every test of the state
//! runs on both backends (`both!`).

#[macro_use]
mod backends;

use backends::{a_journal_with_old_traces, traces, Place, HOUR};
use cts_consumer::{read_batch, start_cursor, ConsumerError, Entry, Skips};
use cts_store::{EmbeddedStore, StoreConfig, TraceStore};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Body {
    note: String,
}

fn body(note: &str) -> Entry<Body> {
    Entry {
        cursor: 0,
        body: Body { note: note.into() },
    }
}

use cts_clock::now_ms;

fn state_commits_together_or_not_at_all_and_survives_reopening(place: &Place) {
    let store = place.open();
    for key in ["t1", "t2"] {
        assert!(store.claim("lts", key).unwrap());
    }
    store
        .put(
            "lts",
            "t1",
            &Entry {
                cursor: 7,
                ..body("a")
            },
        )
        .unwrap();
    // A failing transaction leaves nothing of what it wrote.
    let failed: Result<(), ConsumerError> = store.transaction(|tx| {
        tx.put(
            "lts",
            "t1",
            &Entry {
                cursor: 9,
                ..body("b")
            },
        )?;
        tx.put("lts", "t2", &body("c"))?;
        Err(ConsumerError::LeaseLost {
            consumer: "lts".into(),
            key: "t2".into(),
        })
    });
    assert!(failed.is_err());
    assert_eq!(
        store.get::<Body>("lts", "t1").unwrap(),
        Some(Entry {
            cursor: 7,
            ..body("a")
        })
    );
    assert_eq!(store.get::<Body>("lts", "t2").unwrap(), None);
    store
        .transaction(|tx| {
            tx.put(
                "lts",
                "t1",
                &Entry {
                    cursor: 9,
                    ..body("b")
                },
            )?;
            tx.put(
                "lts",
                "t2",
                &Entry {
                    cursor: 3,
                    ..body("c")
                },
            )?;
            // An import never overwrites newer state.
            assert!(!tx.put_new("lts", "t2", &body("old"))?);
            Ok(())
        })
        .unwrap();
    // Consumers do not see each other's keys.
    assert!(store.claim("notify", "t1").unwrap());
    store.put("notify", "t1", &body("n")).unwrap();
    store.release().unwrap();
    drop(store);
    let store = place.open();
    let all = store.all::<Body>("lts").unwrap();
    let keys: Vec<(&str, u64)> = all.iter().map(|(k, e)| (k.as_str(), e.cursor)).collect();
    assert_eq!(keys, vec![("t1", 9), ("t2", 3)]);
    assert_eq!(store.min_cursor("lts").unwrap(), Some(3));
    store.forget("lts", "t2").unwrap();
    assert_eq!(store.min_cursor("lts").unwrap(), Some(9));
    assert_eq!(store.min_cursor("none").unwrap(), None);
}
both!(state_commits_together_or_not_at_all_and_survives_reopening);

fn a_body_that_does_not_read_names_consumer_and_key(place: &Place) {
    let store = place.open();
    assert!(store.claim("lts", "t1").unwrap());
    store
        .put("lts", "t1", &Entry { cursor: 1, body: 5 })
        .unwrap();
    let err = store.get::<Body>("lts", "t1").unwrap_err();
    assert!(err.to_string().contains("lts/t1"), "{err}");
}
both!(a_body_that_does_not_read_names_consumer_and_key);

fn marks_start_search_and_holds_over_the_real_journal(place: &Place) {
    let dir = tempfile::tempdir().unwrap();
    let journal = EmbeddedStore::open(StoreConfig::new(dir.path().join("store"))).unwrap();
    let consumers = place.open();
    let t0 = 1_800_000_000; // Unix seconds, a multiple of the period
    let p = 60;
    journal
        .append(traces(5, t0 * 1000, t0 * 1000 - 2000))
        .unwrap();
    // A mark for the next period start: the 5 traces lie at or below it.
    consumers.mark(&journal, t0 - 10, p, 3600).unwrap();
    // At most one mark per tenth of a period.
    journal
        .append(traces(2, t0 * 1000, t0 * 1000 - 1000))
        .unwrap();
    consumers.mark(&journal, t0 - 9, p, 3600).unwrap();
    assert_eq!(consumers.journal_mark(t0).unwrap(), Some(5));
    assert_eq!(consumers.journal_mark(t0 - 1).unwrap(), None);
    journal
        .append(traces(3, t0 * 1000, t0 * 1000 + 500))
        .unwrap();
    // A consumer beginning at t0 begins before the first trace recorded
    // from then on, found from the mark or from the beginning alike.
    let from_mark = start_cursor(&journal, 5, t0 * 1000, 2).unwrap();
    assert_eq!(from_mark.cursor, 7);
    assert_eq!(start_cursor(&journal, 0, t0 * 1000, 4).unwrap(), from_mark);
    // Nothing recorded after: the end of the journal.
    let later = start_cursor(&journal, 5, (t0 + 1) * 1000, 2).unwrap();
    assert_eq!((later.cursor, later.gone), (10, 0));

    for key in ["t1", "t2"] {
        assert!(consumers.claim("lts", key).unwrap());
    }
    consumers
        .put(
            "lts",
            "t1",
            &Entry {
                cursor: 4,
                body: (),
            },
        )
        .unwrap();
    consumers
        .put(
            "lts",
            "t2",
            &Entry {
                cursor: 8,
                body: (),
            },
        )
        .unwrap();
    consumers.hold(&journal, "lts").unwrap();
    let read = read_batch(&journal, 8, 100).unwrap();
    assert_eq!((read.gone, read.entries.len(), read.cursor), (0, 2, 10));
    let none = read_batch(&journal, 10, 100).unwrap();
    assert_eq!((none.gone, none.entries.len(), none.cursor), (0, 0, 10));
}
both!(marks_start_search_and_holds_over_the_real_journal);

#[test]
fn a_gap_retention_made_is_passed_over_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let journal = a_journal_with_old_traces(dir.path(), now);
    journal.hold_journal("lts", 250);
    journal.enforce_retention(now - 2 * HOUR).unwrap();
    let read = read_batch(&journal, 0, 10).unwrap();
    assert_eq!(read.gone, 250);
    assert_eq!(read.entries.first().map(|e| e.seq), Some(251));
    assert_eq!(read.cursor, 260);
    let skips = Skips::new("lts");
    skips.record("p/system", read.gone, "gone before delivery");
    assert_eq!(skips.take(), 250);
    assert_eq!(skips.take(), 0);
}
