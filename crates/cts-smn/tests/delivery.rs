//! The delivery against a real HTTP receiver on loopback: bodies and
//! signatures, failures, timeouts, recovery, order per subscription,
//! isolation of a failing endpoint, dead letters; on PostgreSQL, two nodes
//! and the takeover of a subscription's lease.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use cts_consumer::{ConsumerStore, LeaseSettings};
use cts_smn::webhook::{signature, MESSAGE_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use cts_smn::*;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use serde_json::Value;

const P: &str = "0123456789abcdef0123456789abcdef";

/// What the receiver does with the n-th request of a path.
#[derive(Clone, Copy)]
enum Act {
    Ok,
    Fail,
    Hang,
}

#[derive(Default)]
struct Receiver {
    /// Per path: its script (the last entry repeats), requests seen, and the
    /// message ids it accepted (answered 2xx), in order.
    scripts: Mutex<std::collections::HashMap<String, Vec<Act>>>,
    seen: Mutex<std::collections::HashMap<String, usize>>,
    accepted: Mutex<std::collections::HashMap<String, Vec<String>>>,
    secrets: Mutex<std::collections::HashMap<String, String>>,
    bad_signatures: AtomicUsize,
}

async fn hook(
    State(r): State<Arc<Receiver>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let n = {
        let mut seen = r.seen.lock();
        let n = seen.entry(path.clone()).or_default();
        *n += 1;
        *n - 1
    };
    let act = {
        let scripts = r.scripts.lock();
        let script = &scripts[&path];
        script[n.min(script.len() - 1)]
    };
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let secret = r.secrets.lock()[&path].clone();
    let timestamp = header(TIMESTAMP_HEADER);
    if header(SIGNATURE_HEADER) != signature(&secret, &timestamp, &body) {
        r.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let json: Value = serde_json::from_slice(&body).unwrap();
    let id = header(MESSAGE_ID_HEADER);
    assert_eq!(json["message_id"], id.as_str());
    assert_eq!(json["notification_name"], "deletes");
    assert_eq!(json["notification_id"], "n-1");
    assert_eq!(json["trace"]["trace_id"], id.as_str(), "the whole trace");
    assert!(json["topic_urn"].as_str().unwrap().starts_with("urn:smn:"));
    let age = (now_secs() - timestamp.parse::<i64>().unwrap()).abs();
    assert!(age < 60, "timestamp of the attempt");
    match act {
        Act::Ok => {
            r.accepted.lock().entry(path).or_default().push(id);
            StatusCode::NO_CONTENT
        }
        Act::Fail => StatusCode::SERVICE_UNAVAILABLE,
        Act::Hang => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct World {
    _dir: tempfile::TempDir,
    topics: Arc<TopicStore>,
    outbox: Arc<Outbox>,
    receiver: Arc<Receiver>,
    base: String,
    topic: Topic,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    delivery: tokio::task::JoinHandle<()>,
}

/// The receiver on a free loopback port; answers the base URL of its hooks.
async fn receiver() -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/hook/{path}", post(hook))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, base)
}

/// A running delivery over `topics`, `outbox` and `leases`, recording its
/// outcomes in `outcomes`.
fn deliver(
    topics: &Arc<TopicStore>,
    outbox: &Arc<Outbox>,
    leases: Arc<ConsumerStore>,
    retry_for: Duration,
    outcomes: &Arc<Mutex<Vec<Outcome>>>,
) -> tokio::task::JoinHandle<()> {
    let config = DeliveryConfig {
        timeout: Duration::from_millis(300),
        retry_for,
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        smtp: None,
    };
    let seen = outcomes.clone();
    let deliverer = Deliverer::new(
        topics.clone(),
        outbox.clone(),
        leases,
        config,
        Arc::new(move |o| seen.lock().push(o)),
    )
    .unwrap();
    tokio::spawn(Arc::new(deliverer).run())
}

async fn world(retry_for: Duration) -> World {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("notifications");
    let topics = Arc::new(TopicStore::open(&data).unwrap());
    let outbox = Arc::new(Outbox::open(&data).unwrap());
    let leases = Arc::new(ConsumerStore::open(&dir.path().join("consumers")).unwrap());
    let (receiver, base) = receiver().await;
    let topic = topics.create_topic(P, "eu-de", "alerts", "").unwrap();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let delivery = deliver(&topics, &outbox, leases, retry_for, &outcomes);
    World {
        _dir: dir,
        topics,
        outbox,
        receiver,
        base,
        topic,
        outcomes,
        delivery,
    }
}

impl World {
    fn subscribe(&self, path: &str, script: Vec<Act>) -> Subscription {
        let sub = self
            .topics
            .subscribe(
                P,
                &self.topic.urn,
                Protocol::Http,
                &format!("{}/{path}", self.base),
                "",
            )
            .unwrap();
        self.receiver.scripts.lock().insert(path.into(), script);
        self.receiver
            .secrets
            .lock()
            .insert(path.into(), sub.secret.clone());
        sub
    }

    async fn enqueue(&self, ids: impl Iterator<Item = String>) {
        let msgs = ids
            .map(|id| OutboxMessage {
                trace: RawValue::from_string(format!(r#"{{"trace_id":"{id}"}}"#)).unwrap(),
                message_id: id,
                project_id: P.into(),
                topic_urn: self.topic.urn.clone(),
                notification_id: "n-1".into(),
                notification_name: "deletes".into(),
            })
            .collect();
        let outbox = self.outbox.clone();
        tokio::task::spawn_blocking(move || outbox.enqueue(msgs))
            .await
            .unwrap()
            .unwrap();
    }

    fn accepted(&self, path: &str) -> Vec<String> {
        self.receiver
            .accepted
            .lock()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    async fn wait_until(&self, what: &str, done: impl Fn(&World) -> bool) {
        for _ in 0..200 {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i:02}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_hanging_endpoint_recovers_in_order_without_delaying_others() {
    let w = world(Duration::from_secs(3600)).await;
    w.subscribe("good", vec![Act::Ok]);
    // Fails twice, hangs past the timeout, fails, then recovers.
    let flaky = w.subscribe(
        "flaky",
        vec![Act::Fail, Act::Fail, Act::Hang, Act::Fail, Act::Ok],
    );
    // Never answers in time: must not hold back the others.
    w.subscribe("stuck", vec![Act::Hang]);
    // Let the workers start before the first message.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = std::time::Instant::now();
    w.enqueue(ids(0..10).into_iter()).await;
    w.wait_until("good to get 10", |w| w.accepted("good").len() == 10)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a hanging endpoint delayed a healthy one: {:?}",
        started.elapsed()
    );
    w.enqueue(ids(10..20).into_iter()).await;
    // The receiver counts a message before the worker records it: wait for
    // the records too (one outcome per recorded attempt).
    let delivered = |w: &World| {
        w.outcomes
            .lock()
            .iter()
            .filter(|o| **o == Outcome::Delivered)
            .count()
    };
    w.wait_until("flaky to recover", |w| delivered(w) == 40)
        .await;
    assert_eq!(w.accepted("good"), ids(0..20));
    assert_eq!(w.accepted("flaky"), ids(0..20), "in order, none lost");
    assert!(w.accepted("stuck").is_empty());
    assert_eq!(w.receiver.bad_signatures.load(Ordering::SeqCst), 0);

    let flaky_done = w
        .outbox
        .deliveries(P, Some(&flaky.urn), Some(DeliveryState::Delivered), 0, 100)
        .unwrap();
    assert_eq!(flaky_done.len(), 20);
    let first = flaky_done.iter().find(|d| d.message_id == "m00").unwrap();
    assert_eq!(first.attempts, 5, "4 failures, then the delivery");
    assert_eq!(
        first.last_error.as_deref(),
        Some("HTTP 503 Service Unavailable")
    );
    let outcomes = w.outcomes.lock().clone();
    assert!(outcomes.iter().filter(|o| **o == Outcome::Retry).count() >= 4);
    let backlog = w.outbox.backlog().unwrap();
    assert_eq!(
        backlog.pending, 20,
        "the stuck subscription's messages wait"
    );
    w.delivery.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_failing_past_the_retry_window_are_dead_and_the_queue_moves_on() {
    let w = world(Duration::from_millis(300)).await;
    let sub = w.subscribe("down", vec![Act::Fail]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    w.enqueue(ids(0..3).into_iter()).await;
    // The outcome is reported after the state is recorded: wait for both.
    let dead_outcomes = |w: &World| {
        w.outcomes
            .lock()
            .iter()
            .filter(|o| **o == Outcome::Dead)
            .count()
    };
    w.wait_until("three dead letters", |w| {
        w.outbox.backlog().unwrap().dead == 3 && dead_outcomes(w) == 3
    })
    .await;
    let dead = w
        .outbox
        .deliveries(P, Some(&sub.urn), Some(DeliveryState::Dead), 0, 10)
        .unwrap();
    assert_eq!(dead.len(), 3);
    assert!(dead.iter().all(|d| d.attempts >= 1 && d.done_ms.is_some()));
    assert_eq!(w.outbox.backlog().unwrap().pending, 0);
    // A removed subscription's worker stops; its records go with it.
    w.topics.unsubscribe(P, &sub.urn).unwrap();
    assert_eq!(w.outbox.backlog().unwrap().dead, 0);
    w.delivery.abort();
}

/// Short leases: the takeover test waits for expiry.
const LEASES: LeaseSettings = LeaseSettings {
    ttl: Duration::from_millis(600),
    renew_every: Duration::from_millis(200),
};

/// Runs `f` on a blocking thread: the PostgreSQL client blocks (and must
/// not be used, made or dropped on an async worker).
async fn off<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// A node of its own on the database `url`: its stores, its leases renewed
/// every [`LEASES`]`.renew_every` (as ctsd does) and its delivery running.
struct Node {
    topics: Arc<TopicStore>,
    outbox: Arc<Outbox>,
    leases: Arc<ConsumerStore>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Node {
    async fn start(url: &str) -> Node {
        let url = url.to_owned();
        let (topics, outbox, leases) = off(move || {
            let pool = cts_db::PgSettings::new(url.parse().unwrap())
                .connect()
                .unwrap();
            let db = open_postgres(pool, true).unwrap();
            let leases = ConsumerStore::connect(&url, cts_consumer::node_id(), LEASES).unwrap();
            (
                Arc::new(TopicStore::on(db.clone())),
                Arc::new(Outbox::on(db)),
                Arc::new(leases),
            )
        })
        .await;
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let delivery = deliver(
            &topics,
            &outbox,
            leases.clone(),
            Duration::from_secs(3600),
            &outcomes,
        );
        let renewing = leases.clone();
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASES.renew_every).await;
                let leases = renewing.clone();
                let _ = tokio::task::spawn_blocking(move || leases.renew()).await;
            }
        });
        Node {
            topics,
            outbox,
            leases,
            outcomes,
            tasks: [delivery, renewal],
        }
    }

    fn delivered(&self) -> usize {
        let outcomes = self.outcomes.lock();
        outcomes
            .iter()
            .filter(|o| **o == Outcome::Delivered)
            .count()
    }

    /// As `kill -9` leaves it: no more attempts, no renewals, no release.
    fn kill(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }

    async fn enqueue(&self, msgs: Vec<OutboxMessage>) {
        let outbox = self.outbox.clone();
        off(move || outbox.enqueue(msgs).unwrap()).await;
    }
}

fn messages(topic_urn: &str, range: std::ops::Range<usize>) -> Vec<OutboxMessage> {
    ids(range)
        .into_iter()
        .map(|id| OutboxMessage {
            trace: RawValue::from_string(format!(r#"{{"trace_id":"{id}"}}"#)).unwrap(),
            message_id: id,
            project_id: P.into(),
            topic_urn: topic_urn.into(),
            notification_id: "n-1".into(),
            notification_name: "deletes".into(),
        })
        .collect()
}

/// Polls `done` every 50 ms for at most 20 s.
async fn until(what: &str, done: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_one_node_delivers_a_subscription_and_another_takes_it_over_in_order() {
    let pg = cts_testpg::TestPg::start();
    let a = Node::start(&pg.url()).await;
    let (receiver, base) = receiver().await;
    let topics = a.topics.clone();
    let (topic, sub) = off(move || {
        let topic = topics.create_topic(P, "eu-de", "alerts", "").unwrap();
        let sub = topics
            .subscribe(P, &topic.urn, Protocol::Http, &format!("{base}/hook"), "")
            .unwrap();
        (topic, sub)
    })
    .await;
    receiver.scripts.lock().insert("hook".into(), vec![Act::Ok]);
    receiver
        .secrets
        .lock()
        .insert("hook".into(), sub.secret.clone());
    // a's delivery claims the new subscription at once (its own change);
    // b starts after.
    let started = std::time::Instant::now();
    loop {
        let (leases, urn) = (a.leases.clone(), sub.urn.clone());
        if off(move || leases.claim(DELIVERY_CONSUMER, &urn).unwrap()).await {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a never took it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = Node::start(&pg.url()).await;
    // Enqueued through b (the matcher may run on another node than the
    // delivery): a, the holder, delivers them.
    b.enqueue(messages(&topic.urn, 0..10)).await;
    until("a delivers 10", || a.delivered() == 10).await;
    assert_eq!(b.delivered(), 0, "one node per subscription");

    // a dies; messages keep coming; b takes over after the lease time.
    a.kill();
    let killed = std::time::Instant::now();
    b.enqueue(messages(&topic.urn, 10..20)).await;
    let accepted = || {
        let mut got = receiver
            .accepted
            .lock()
            .get("hook")
            .cloned()
            .unwrap_or_default();
        got.dedup();
        got
    };
    until("b delivers the rest", || accepted().len() == 20).await;
    let took_over = killed.elapsed();
    assert!(
        took_over < LEASES.ttl + LEASES.renew_every + Duration::from_secs(3),
        "takeover took {took_over:?}"
    );
    // At least once, in order: a repeat (a killed between its POST and its
    // record) only ever follows itself.
    let got = receiver.accepted.lock()["hook"].clone();
    assert!(
        got.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {got:?}"
    );
    assert_eq!(accepted(), ids(0..20));
    // An abort is not a kill -9: a's worker may finish what it had in hand
    // (its lease still valid) before it stops, so b delivers the rest of
    // the ten, at least one.
    assert!(b.delivered() >= 1, "b took nothing over");
    assert!(
        a.delivered() + b.delivered() >= 20,
        "a {} + b {} < 20",
        a.delivered(),
        b.delivered()
    );
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);

    // a, were it still running, could not record anything any more.
    let (outbox, leases, urn) = (a.outbox.clone(), a.leases.clone(), sub.urn.clone());
    let stale = off(move || {
        let fence = Fence {
            consumer: DELIVERY_CONSUMER,
            holder: leases.node().unwrap(),
        };
        outbox.record(&urn, 1, Attempt::Delivered, Some(&fence))
    })
    .await;
    assert!(matches!(stale, Err(SmnError::LeaseLost(_))), "{stale:?}");
    b.kill();
    // The stores close their connections off the async workers.
    off(move || drop((a, b))).await;
}

#[test]
fn backoff_doubles_up_to_the_cap_with_jitter() {
    let config = DeliveryConfig {
        timeout: Duration::from_secs(1),
        retry_for: Duration::from_secs(86_400),
        first_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(600),
        smtp: None,
    };
    for (failures, full) in [
        (1, 1000),
        (2, 2000),
        (5, 16_000),
        (11, 600_000),
        (60, 600_000),
    ] {
        for _ in 0..50 {
            let wait = backoff(&config, failures);
            assert!((full / 2..=full).contains(&wait), "{failures}: {wait}");
        }
    }
}
