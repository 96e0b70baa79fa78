//! The stores' tests, each run on SQLite and on PostgreSQL (`both!`).

use serde_json::value::RawValue;

use cts_testpg::{both, Place};

use crate::*;

const P: &str = "0123456789abcdef0123456789abcdef";
const OTHER: &str = "ffffffffffffffffffffffffffffffff";

/// The stores on `place`, opened again on each call (a restart, or
/// another node); on PostgreSQL the signing secrets sealed, as ctsd has
/// them there.
fn stores(place: &Place) -> (TopicStore, Outbox) {
    match place {
        Place::Sqlite(dir) => {
            let db = open_embedded(&dir.path().join("notifications")).unwrap();
            (TopicStore::on(db.clone()), Outbox::on(db))
        }
        Place::Postgres(pg) => {
            let db = pg_db(pg);
            let topics = TopicStore::sealed(db.clone(), key(7)).unwrap();
            (topics, Outbox::on(db))
        }
    }
}

fn pg_db(pg: &cts_testpg::TestPg) -> cts_db::Db {
    let pool = cts_db::PgSettings::new(pg.url().parse().unwrap())
        .connect()
        .unwrap();
    open_postgres(pool, true).unwrap()
}

fn key(byte: u8) -> cts_db::SecretKey {
    cts_db::SecretKey::derive(&[byte; 32], SECRET_PURPOSE)
}

/// Where nodes share the subscriptions (PostgreSQL), a signing secret is
/// never stored in the clear: one written before (or copied in by a move)
/// is sealed when a node opens the store; each reads back as it was; a
/// node with another key refuses to start instead of signing wrongly.
#[test]
fn on_postgres_signing_secrets_are_sealed_and_open_only_with_the_same_key() {
    let pg = cts_testpg::TestPg::start();
    let db = pg_db(&pg);
    let clear = TopicStore::on(db.clone());
    let t = clear.create_topic(P, "eu-de", "alerts", "").unwrap();
    let a = clear
        .subscribe(P, &t.urn, Protocol::Https, "https://a.example.com/", "")
        .unwrap();
    let stored = || -> Vec<String> {
        db.read(|sql| sql.query("SELECT secret FROM subscriptions ORDER BY rowid", &[]))
            .unwrap()
            .into_iter()
            .map(|r| r[0].text().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        stored(),
        std::slice::from_ref(&a.secret),
        "written in the clear before"
    );

    let sealed = TopicStore::sealed(db.clone(), key(7)).unwrap();
    let b = sealed
        .subscribe(P, &t.urn, Protocol::Https, "https://b.example.com/", "")
        .unwrap();
    for (s, plain) in stored().iter().zip([&a.secret, &b.secret]) {
        assert!(cts_db::SecretKey::is_sealed(s), "{s}");
        assert!(!s.contains(plain.as_str()));
    }
    let listed: Vec<String> = sealed
        .subscriptions(P, &t.urn)
        .unwrap()
        .into_iter()
        .map(|s| s.secret)
        .collect();
    assert_eq!(listed, [a.secret.clone(), b.secret.clone()]);
    let again = TopicStore::sealed(db.clone(), key(7)).unwrap();
    assert_eq!(again.subscriptions(P, &t.urn).unwrap()[1].secret, b.secret);

    let refused = TopicStore::sealed(db.clone(), key(8)).unwrap_err();
    assert!(
        refused.to_string().contains("another store.secret_key"),
        "{refused}"
    );
    assert!(
        TopicStore::on(db).subscriptions(P, &t.urn).is_err(),
        "no key, no secret"
    );
}

fn message(id: &str, topic_urn: &str) -> OutboxMessage {
    OutboxMessage {
        message_id: id.to_owned(),
        project_id: P.to_owned(),
        topic_urn: topic_urn.to_owned(),
        notification_id: "n-1".to_owned(),
        notification_name: "deletes".to_owned(),
        trace: RawValue::from_string(format!(r#"{{"trace_id":"{id}"}}"#)).unwrap(),
    }
}

/// Topic `alerts` of `P` with two HTTPS subscriptions.
fn topic_of_two(topics: &TopicStore) -> (Topic, Subscription, Subscription) {
    let t = topics.create_topic(P, "eu-de", "alerts", "").unwrap();
    let [a, b] = ["https://a.example.com/", "https://b.example.com/"].map(|url| {
        topics
            .subscribe(P, &t.urn, Protocol::Https, url, "")
            .unwrap()
    });
    (t, a, b)
}

both!(topics_are_per_project_and_unique);
fn topics_are_per_project_and_unique(place: &Place) {
    let (topics, _) = stores(place);
    let t = topics
        .create_topic(P, "eu-de", "alerts", "Ops alerts")
        .unwrap();
    assert_eq!(t.urn, format!("urn:smn:eu-de:{P}:alerts"));
    assert_eq!(t.kind, TopicKind::Smn);
    assert!(matches!(
        topics.create_topic(P, "eu-de", "alerts", ""),
        Err(SmnError::TopicExists(urn)) if urn == t.urn
    ));
    assert!(matches!(
        topics.create_topic(P, "eu-de", "bad name", ""),
        Err(SmnError::Invalid { field: "name", .. })
    ));
    assert_eq!(topics.resolve(P, &t.urn).unwrap(), Some(t.clone()));
    assert_eq!(topics.resolve(OTHER, &t.urn).unwrap(), None);
    assert!(matches!(
        topics.delete_topic(OTHER, &t.urn),
        Err(SmnError::TopicNotFound(_))
    ));
    let f = topics
        .register_function(
            P,
            &format!("urn:fss:eu-de:{P}:function:default:hook:latest"),
        )
        .unwrap();
    assert_eq!((f.kind, f.name.as_str()), (TopicKind::Function, "hook"));
    assert_eq!(topics.topics(P).unwrap(), vec![t.clone(), f.clone()]);
    assert!(topics.topics(OTHER).unwrap().is_empty());
    assert_eq!(topics.delete_topic(P, &t.urn).unwrap(), t);
    assert_eq!(topics.topics(P).unwrap(), vec![f]);
}

both!(topic_quota);
fn topic_quota(place: &Place) {
    let (topics, _) = stores(place);
    for i in 0..MAX_TOPICS {
        topics
            .create_topic(P, "eu-de", &format!("t{i}"), "")
            .unwrap();
    }
    assert!(matches!(
        topics.create_topic(P, "eu-de", "one-more", ""),
        Err(SmnError::Quota {
            limit: MAX_TOPICS,
            ..
        })
    ));
    topics.create_topic(OTHER, "eu-de", "one-more", "").unwrap();
}

both!(subscriptions_have_their_own_secret_and_rules);
fn subscriptions_have_their_own_secret_and_rules(place: &Place) {
    let (topics, _) = stores(place);
    let t = topics.create_topic(P, "eu-de", "alerts", "").unwrap();
    let a = topics
        .subscribe(
            P,
            &t.urn,
            Protocol::Https,
            "https://hooks.example.com/a",
            "ops",
        )
        .unwrap();
    let b = topics
        .subscribe(P, &t.urn, Protocol::Email, "ops@example.com", "")
        .unwrap();
    assert!(a.urn.starts_with(&format!("{}:", t.urn)));
    assert_eq!(a.secret.len(), 64);
    assert!(a.secret.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a.secret, b.secret);
    assert!(
        !format!("{a:?}").contains(&a.secret),
        "Debug shows the secret"
    );
    assert!(matches!(
        topics.subscribe(
            P,
            &t.urn,
            Protocol::Https,
            "https://hooks.example.com/a",
            ""
        ),
        Err(SmnError::SubscriptionExists { .. })
    ));
    assert!(matches!(
        topics.subscribe(P, &t.urn, Protocol::Http, "https://x.example.com/", ""),
        Err(SmnError::Invalid {
            field: "endpoint",
            ..
        })
    ));
    assert!(matches!(
        topics.subscribe(OTHER, &t.urn, Protocol::Https, "https://x.example.com/", ""),
        Err(SmnError::TopicNotFound(_))
    ));
    let f = topics
        .register_function(P, &format!("urn:fss:eu-de:{P}:function:default:hook"))
        .unwrap();
    assert!(matches!(
        topics.subscribe(P, &f.urn, Protocol::Email, "ops@example.com", ""),
        Err(SmnError::Invalid {
            field: "protocol",
            ..
        })
    ));
    topics
        .subscribe(P, &f.urn, Protocol::Http, "http://127.0.0.1:9/run", "")
        .unwrap();

    assert_eq!(
        topics.subscriptions(P, &t.urn).unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(topics.all_subscriptions().unwrap().len(), 3);
    assert_eq!(topics.subscription(OTHER, &a.urn).unwrap(), None);
    assert!(matches!(
        topics.unsubscribe(OTHER, &a.urn),
        Err(SmnError::SubscriptionNotFound(_))
    ));
    assert_eq!(topics.unsubscribe(P, &a.urn).unwrap(), a);
    assert_eq!(topics.subscriptions(P, &t.urn).unwrap(), vec![b]);
    topics.delete_topic(P, &t.urn).unwrap();
    assert_eq!(topics.all_subscriptions().unwrap().len(), 1);
}

both!(enqueue_is_idempotent_and_fans_out_per_subscription);
fn enqueue_is_idempotent_and_fans_out_per_subscription(place: &Place) {
    let (topics, outbox) = stores(place);
    let (t, a, b) = topic_of_two(&topics);
    let first = outbox
        .enqueue(vec![message("m1", &t.urn), message("m2", &t.urn)])
        .unwrap();
    assert_eq!(
        first,
        Enqueued {
            messages: 2,
            deliveries: 4
        }
    );
    // The producer retries after a crash: nothing doubles.
    let again = outbox
        .enqueue(vec![message("m2", &t.urn), message("m3", &t.urn)])
        .unwrap();
    assert_eq!(
        again,
        Enqueued {
            messages: 1,
            deliveries: 2
        }
    );
    // Another project's message naming this topic reaches nobody.
    let mut foreign = message("m4", &t.urn);
    foreign.project_id = OTHER.to_owned();
    assert_eq!(outbox.enqueue(vec![foreign]).unwrap().deliveries, 0);

    // Subscription a fails on m1: b goes on; a keeps m1 first.
    let d = outbox.next_pending(&a.urn).unwrap().unwrap();
    assert_eq!((d.message_id.as_str(), d.attempts), ("m1", 0));
    assert_eq!(d.trace, r#"{"trace_id":"m1"}"#);
    outbox
        .record(
            &a.urn,
            d.seq,
            Attempt::Retry {
                next_ms: 42,
                error: "503".into(),
            },
            None,
        )
        .unwrap();
    for id in ["m1", "m2", "m3"] {
        let d = outbox.next_pending(&b.urn).unwrap().unwrap();
        assert_eq!(d.message_id, id);
        outbox
            .record(&b.urn, d.seq, Attempt::Delivered, None)
            .unwrap();
    }
    assert!(outbox.next_pending(&b.urn).unwrap().is_none());
    let d = outbox.next_pending(&a.urn).unwrap().unwrap();
    assert_eq!(
        (d.message_id.as_str(), d.attempts, d.next_ms),
        ("m1", 1, 42)
    );
    assert_eq!(d.last_error.as_deref(), Some("503"));
    outbox
        .record(
            &a.urn,
            d.seq,
            Attempt::Dead {
                error: "gave up".into(),
            },
            None,
        )
        .unwrap();
    assert_eq!(
        outbox.next_pending(&a.urn).unwrap().unwrap().message_id,
        "m2"
    );

    assert_eq!(
        outbox.backlog().unwrap(),
        Backlog {
            pending: 2,
            dead: 1,
            oldest_pending_ms: Some(d.created_ms)
        }
    );
    let dead = outbox
        .deliveries(P, None, Some(DeliveryState::Dead), 0, 10)
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].attempts, dead[0].message_id.as_str()), (2, "m1"));
    let of_b = outbox.deliveries(P, Some(&b.urn), None, 0, 10).unwrap();
    let ids: Vec<_> = of_b.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids, ["m3", "m2", "m1"]);
    assert!(of_b.iter().all(|d| d.state == DeliveryState::Delivered));
    assert_eq!(outbox.deliveries(P, None, None, 5, 10).unwrap().len(), 1);
    assert!(outbox
        .deliveries(OTHER, None, None, 0, 10)
        .unwrap()
        .is_empty());
}

both!(nodes_enqueueing_one_message_at_once_store_it_once);
fn nodes_enqueueing_one_message_at_once_store_it_once(place: &Place) {
    let (topics, _) = stores(place);
    let (t, a, _) = topic_of_two(&topics);
    // Two matchers (a lease taken over mid-batch) enqueue the same ids.
    let done: Vec<Enqueued> = std::thread::scope(|s| {
        let nodes: Vec<_> = (0..2)
            .map(|_| {
                let (_, outbox) = stores(place);
                let t = &t;
                s.spawn(move || {
                    let msgs = (0..20).map(|i| message(&format!("m{i:02}"), &t.urn));
                    outbox.enqueue(msgs.collect()).unwrap()
                })
            })
            .collect();
        nodes.into_iter().map(|n| n.join().unwrap()).collect()
    });
    assert_eq!(done.iter().map(|d| d.messages).sum::<usize>(), 20);
    assert_eq!(done.iter().map(|d| d.deliveries).sum::<usize>(), 40);
    let (_, outbox) = stores(place);
    let of_a = outbox.deliveries(P, Some(&a.urn), None, 0, 100).unwrap();
    let mut ids: Vec<_> = of_a.into_iter().map(|d| d.message_id).collect();
    ids.reverse();
    let expected: Vec<_> = (0..20).map(|i| format!("m{i:02}")).collect();
    assert_eq!(ids, expected, "each once, in order");
}

both!(pending_deliveries_survive_a_reopen_and_leave_with_their_subscription);
fn pending_deliveries_survive_a_reopen_and_leave_with_their_subscription(place: &Place) {
    let (t, a, b) = {
        let (topics, outbox) = stores(place);
        let t = topics.create_topic(P, "eu-de", "alerts", "").unwrap();
        let a = topics
            .subscribe(P, &t.urn, Protocol::Https, "https://a.example.com/", "")
            .unwrap();
        let b = topics
            .subscribe(P, &t.urn, Protocol::Email, "ops@example.com", "")
            .unwrap();
        outbox.enqueue(vec![message("m1", &t.urn)]).unwrap();
        (t, a, b)
    };
    let (topics, outbox) = stores(place);
    assert_eq!(
        outbox.next_pending(&a.urn).unwrap().unwrap().message_id,
        "m1"
    );
    assert_eq!(
        outbox.enqueue(vec![message("m1", &t.urn)]).unwrap(),
        Enqueued::default()
    );
    topics.unsubscribe(P, &a.urn).unwrap();
    assert!(outbox.next_pending(&a.urn).unwrap().is_none());
    assert_eq!(outbox.backlog().unwrap().pending, 1);
    topics.delete_topic(P, &t.urn).unwrap();
    assert!(outbox.next_pending(&b.urn).unwrap().is_none());
    assert_eq!(outbox.backlog().unwrap(), Backlog::default());
}

both!(prune_removes_finished_deliveries_after_their_retention_never_pending_ones);
fn prune_removes_finished_deliveries_after_their_retention_never_pending_ones(place: &Place) {
    let (topics, outbox) = stores(place);
    let (t, a, b) = topic_of_two(&topics);
    let quiet = topics.create_topic(P, "eu-de", "quiet", "").unwrap();
    let msgs = ["m1", "m2", "m3"].map(|id| message(id, &t.urn));
    outbox.enqueue(msgs.to_vec()).unwrap();
    // A topic without subscriptions: a message with no delivery at all.
    outbox.enqueue(vec![message("m0", &quiet.urn)]).unwrap();
    // a: m1 delivered, m2 dead, m3 pending; b: all three delivered.
    let next = |urn: &str| outbox.next_pending(urn).unwrap().unwrap();
    outbox
        .record(&a.urn, next(&a.urn).seq, Attempt::Delivered, None)
        .unwrap();
    let dead = Attempt::Dead {
        error: "gave up".into(),
    };
    outbox.record(&a.urn, next(&a.urn).seq, dead, None).unwrap();
    for _ in 0..3 {
        outbox
            .record(&b.urn, next(&b.urn).seq, Attempt::Delivered, None)
            .unwrap();
    }
    let now = crate::db::now_ms();
    let keep = Retention {
        delivered_ms: 5_000,
        dead_ms: 60_000,
    };
    assert_eq!(outbox.prune(now + 1_000, keep).unwrap(), Pruned::default());

    // Past the delivered retention: four deliveries, and m1 and m0, which
    // have none left; m2 (dead on a) and m3 (pending on a) stay.
    let pruned = outbox.prune(now + 10_000, keep).unwrap();
    assert_eq!(
        pruned,
        Pruned {
            delivered: 4,
            dead: 0,
            messages: 2
        }
    );
    let left: Vec<_> = outbox
        .deliveries(P, None, None, 0, 10)
        .unwrap()
        .into_iter()
        .map(|d| (d.message_id, d.state))
        .collect();
    assert_eq!(
        left,
        [
            ("m3".to_owned(), DeliveryState::Pending),
            ("m2".to_owned(), DeliveryState::Dead)
        ]
    );

    // Past the dead retention: m2 goes; the pending m3 never does.
    let pruned = outbox.prune(now + 3_600_000, keep).unwrap();
    assert_eq!(
        pruned,
        Pruned {
            delivered: 0,
            dead: 1,
            messages: 1
        }
    );
    assert_eq!(next(&a.urn).message_id, "m3");
    // Sequence numbers are not reused: a new message still comes after m3.
    outbox.enqueue(vec![message("m4", &t.urn)]).unwrap();
    assert_eq!(next(&a.urn).message_id, "m3");
    assert!(next(&b.urn).seq > next(&a.urn).seq);
}
