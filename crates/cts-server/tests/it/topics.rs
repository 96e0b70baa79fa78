//! Topics and subscriptions through the API (SMN shapes, audit traces,
//! CTS errors), and the delivery of the outbox by a real `ctsd` to a
//! local HTTP receiver that fails, times out and recovers, across a kill -9.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use cts_smn::webhook::{signature, MESSAGE_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use cts_smn::{Outbox, OutboxMessage};
use serde_json::{json, Value};

use crate::pg_move::{migrate, text};
use crate::postgres::Cluster;
use crate::support::*;

/// An HTTP receiver on loopback. It answers each request by its script
/// (`Fail`: 503, `Hang`: past the delivery timeout, `Ok`: 204; the last
/// entry repeats) and keeps what it accepted, after checking the signature
/// with the subscription's secret.
struct Receiver {
    url: String,
    inner: Arc<Inner>,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Default)]
struct Inner {
    script: Mutex<Vec<&'static str>>,
    requests: Mutex<usize>,
    secret: Mutex<String>,
    accepted: Mutex<Vec<Value>>,
    bad_signatures: Mutex<usize>,
}

async fn receive(State(r): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = {
        let mut n = r.requests.lock().unwrap();
        *n += 1;
        *n - 1
    };
    let act = {
        let script = r.script.lock().unwrap();
        script[n.min(script.len() - 1)]
    };
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let secret = r.secret.lock().unwrap().clone();
    if header(SIGNATURE_HEADER) != signature(&secret, &header(TIMESTAMP_HEADER), &body) {
        *r.bad_signatures.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["message_id"], header(MESSAGE_ID_HEADER).as_str());
    match act {
        "Fail" => StatusCode::SERVICE_UNAVAILABLE,
        "Hang" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK
        }
        _ => {
            r.accepted.lock().unwrap().push(json);
            StatusCode::NO_CONTENT
        }
    }
}

impl Receiver {
    /// The `resource_id`s of the traces delivered, in order, a message
    /// delivered again right after itself counted once.
    fn resource_ids(&self) -> Vec<String> {
        let accepted = self.inner.accepted.lock().unwrap();
        let mut ids: Vec<String> = accepted
            .iter()
            .map(|m| m["trace"]["resource_id"].as_str().unwrap().to_owned())
            .collect();
        ids.dedup();
        ids
    }

    fn start(script: Vec<&'static str>) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let inner = Arc::new(Inner::default());
        *inner.script.lock().unwrap() = script;
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(inner.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url,
            inner,
            _runtime: runtime,
        }
    }

    fn accepted_ids(&self) -> Vec<String> {
        let accepted = self.inner.accepted.lock().unwrap();
        accepted
            .iter()
            .map(|m| m["message_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn wait_for(what: &str, within: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn topics_path(pid: &str) -> String {
    format!("/v2/{pid}/notifications/topics")
}

#[test]
fn topics_and_subscriptions_are_smn_shaped_audited_and_checked() {
    let server = TestServer::start();
    let pid = server.pid("main");
    let a = server.post_json(
        &topics_path(&pid),
        &json!({"name": "alerts", "display_name": "Ops alerts"}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let urn = a.body["topic_urn"].as_str().unwrap().to_owned();
    assert_eq!(urn, format!("urn:smn:{}:{pid}:alerts", server.admin.region));
    assert!(a.body["request_id"].is_string());

    server
        .post_json(&topics_path(&pid), &json!({"name": "alerts"}))
        .assert_error(409, "CTS.9007");
    let a = server.post_json(&topics_path(&pid), &json!({"name": "-bad"}));
    a.assert_error(400, "CTS.0003");
    assert!(a.text.contains("name"), "{}", a.text);
    let a = server.post_json(&topics_path(&pid), &json!({"nmae": "x"}));
    a.assert_error(400, "CTS.0003");
    let function = format!("urn:fss:eu-de:{pid}:function:default:hook:latest");
    let a = server.post_json(&topics_path(&pid), &json!({"function_urn": function}));
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["topic_urn"], function.as_str());

    let a = server.get(&topics_path(&pid));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["topic_count"], 2);
    assert_eq!(a.body["topics"][0]["name"], "alerts");
    assert_eq!(a.body["topics"][0]["display_name"], "Ops alerts");
    assert_eq!(a.body["topics"][1]["kind"], "function");
    let a = server.get(&format!("{}?limit=1&offset=1", topics_path(&pid)));
    assert_eq!(a.body["topics"].as_array().unwrap().len(), 1);
    assert_eq!(a.body["topics"][0]["kind"], "function");
    server
        .get(&format!("{}?limit=0", topics_path(&pid)))
        .assert_error(400, "CTS.0003");

    let subs = format!("{}/{urn}/subscriptions", topics_path(&pid));
    let a = server.post_json(
        &subs,
        &json!({"protocol": "https", "endpoint": "https://hooks.example.com/cts", "remark": "ops"}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let sub_urn = a.body["subscription_urn"].as_str().unwrap().to_owned();
    let secret = a.body["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    let a = server.post_json(
        &subs,
        &json!({"protocol": "http", "endpoint": "https://hooks.example.com/cts"}),
    );
    a.assert_error(400, "CTS.0003");
    assert!(a.text.contains("endpoint"), "{}", a.text);
    server
        .post_json(&subs, &json!({"protocol": "sms", "endpoint": "+49"}))
        .assert_error(400, "CTS.0003");
    let fn_subs = format!("{}/{function}/subscriptions", topics_path(&pid));
    server
        .post_json(
            &fn_subs,
            &json!({"protocol": "email", "endpoint": "ops@example.com"}),
        )
        .assert_error(400, "CTS.0003");

    let a = server.get(&subs);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["subscription_count"], 1);
    let listed = &a.body["subscriptions"][0];
    assert_eq!(listed["subscription_urn"], sub_urn.as_str());
    assert_eq!(listed["protocol"], "https");
    assert_eq!(listed["status"], 1);
    assert!(!a.text.contains(&secret), "the secret is shown only once");

    // Another project sees none of it.
    let other = server.pid("other");
    server
        .get(&format!("{}/{urn}/subscriptions", topics_path(&other)))
        .assert_error(404, "CTS.9006");
    server
        .request(
            reqwest::Method::DELETE,
            &format!("/v2/{other}/notifications/subscriptions/{sub_urn}"),
        )
        .assert_error(404, "CTS.9006");

    let a = server.request(
        reqwest::Method::DELETE,
        &format!("/v2/{pid}/notifications/subscriptions/{sub_urn}"),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    let a = server.request(
        reqwest::Method::DELETE,
        &format!("{}/{urn}", topics_path(&pid)),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    server.get(&subs).assert_error(404, "CTS.9006");

    // Every change is a trace of the project; the secret is in none.
    let traces = server.query_all("main", &[("limit", "200".into())]);
    let names: Vec<&str> = traces
        .iter()
        .filter(|t| t["resource_type"] == "topic" || t["resource_type"] == "subscription")
        .map(|t| t["trace_name"].as_str().unwrap())
        .collect();
    for name in [
        "createTopic",
        "createSubscription",
        "deleteSubscription",
        "deleteTopic",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    assert!(!serde_json::to_string(&traces).unwrap().contains(&secret));
}

/// A server on `root` that gives up an attempt after 500 ms and retries
/// within 50–200 ms: failures and hangs cost the tests little time.
fn start_impatient(root: &std::path::Path) -> TestServer {
    TestServer::builder()
        .root(root)
        .env("CTS_DELIVERY_TIMEOUT", "500ms")
        .env("CTS_DELIVERY_FIRST_BACKOFF", "50ms")
        .env("CTS_DELIVERY_MAX_BACKOFF", "200ms")
        .start()
}

/// A topic `alerts` of `pid` with `receiver` subscribed (its secret set
/// on the receiver): the topic's and the subscription's URNs.
fn subscribe(server: &TestServer, pid: &str, receiver: &Receiver) -> (String, String) {
    let a = server.post_json(&topics_path(pid), &json!({"name": "alerts"}));
    assert_eq!(a.status, 201, "{}", a.text);
    let urn = a.body["topic_urn"].as_str().unwrap().to_owned();
    let a = server.post_json(
        &format!("{}/{urn}/subscriptions", topics_path(pid)),
        &json!({"protocol": "http", "endpoint": receiver.url}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    *receiver.inner.secret.lock().unwrap() = a.body["secret"].as_str().unwrap().to_owned();
    (urn, a.body["subscription_urn"].as_str().unwrap().to_owned())
}

/// Puts messages `ids` for topic `urn` into the outbox of a stopped
/// `server`, as the notification matcher fills it.
fn enqueue(server: &TestServer, pid: &str, urn: &str, ids: &[String]) {
    let outbox = Outbox::open(&server.data_dir.join("notifications")).unwrap();
    let msgs = ids
        .iter()
        .map(|id| OutboxMessage {
            message_id: id.clone(),
            project_id: pid.to_owned(),
            topic_urn: urn.to_owned(),
            notification_id: "n-1".into(),
            notification_name: "deletes".into(),
            trace: serde_json::value::RawValue::from_string(
                json!({"trace_id": id, "trace_name": "deleteServer"}).to_string(),
            )
            .unwrap(),
        })
        .collect();
    let done = outbox.enqueue(msgs).unwrap();
    assert_eq!((done.messages, done.deliveries), (ids.len(), ids.len()));
}

/// Messages put in the outbox while ctsd is down, delivered by ctsd to an
/// endpoint that fails, hangs and recovers; ctsd is killed (-9) while some
/// are pending; after the restart every message arrives, in order.
/// A rule sending ECS `deleteServer` traces to the topic `urn`.
fn deletes_rule(urn: &str) -> Value {
    json!({"notification_name": "deletes", "operation_type": "customized", "topic_id": urn,
        "operations": [{"service_type": "ECS", "resource_type": "ecs", "trace_names": ["deleteServer"]}]})
}

/// Traces `srv-NN` for each `n` of `numbers`; the odd ones are
/// `deleteServer` (they match [`deletes_rule`]) and their names are added
/// to `matching`, in report order.
fn numbered_traces(numbers: std::ops::Range<usize>, matching: &mut Vec<String>) -> Vec<Value> {
    numbers
        .map(|n| {
            let mut t = trace(now_ms());
            t["resource_id"] = json!(format!("srv-{n:02}"));
            if n % 2 == 1 {
                t["trace_name"] = json!("deleteServer");
                matching.push(format!("srv-{n:02}"));
            }
            t
        })
        .collect()
}

#[test]
fn webhook_gets_every_message_in_order_across_failures_and_kill_9() {
    let receiver = Receiver::start(vec![
        "Fail", "Fail", "Hang", "Ok", "Ok", "Ok", "Fail", "Ok", "Ok", "Fail", "Fail", "Fail",
        "Fail", "Fail", "Fail", "Fail", "Fail", "Fail", "Fail", "Fail", "Ok",
    ]);
    let root = tempfile::tempdir().unwrap();
    let start = || start_impatient(root.path());
    let mut server = start();
    let pid = server.pid("main");
    let (urn, sub_urn) = subscribe(&server, &pid, &receiver);
    server.kill();
    let ids: Vec<String> = (0..30).map(|i| format!("msg-{i:02}")).collect();
    enqueue(&server, &pid, &urn, &ids);

    let mut server = start();
    wait_for("a few deliveries", Duration::from_secs(30), || {
        receiver.accepted_ids().len() >= 5
    });
    server.kill();
    let before_kill = receiver.accepted_ids().len();
    assert!(before_kill < 30, "the kill came too late to matter");

    let server = start();
    wait_for("every message", Duration::from_secs(60), || {
        let mut seen = receiver.accepted_ids();
        seen.dedup();
        seen.len() >= 30
    });
    let accepted = receiver.accepted_ids();
    let mut distinct = accepted.clone();
    // At-least-once: a message in flight at the kill may come again, right
    // after itself; nothing else repeats, nothing is skipped.
    distinct.dedup();
    assert_eq!(distinct, ids, "every message, in order");
    assert!(accepted.len() - distinct.len() <= 1, "{accepted:?}");
    assert_eq!(*receiver.inner.bad_signatures.lock().unwrap(), 0);
    let first = &receiver.inner.accepted.lock().unwrap()[0];
    assert_eq!(first["notification_name"], "deletes");
    assert_eq!(first["notification_id"], "n-1");
    assert_eq!(first["topic_urn"], urn.as_str());
    assert_eq!(first["subscription_urn"], sub_urn.as_str());
    assert_eq!(first["trace"]["trace_name"], "deleteServer");

    // The API shows them delivered, with the failures counted.
    wait_for(
        "the last delivery recorded",
        Duration::from_secs(10),
        || {
            let a = server.get(&format!(
                "/v2/{pid}/notifications/deliveries?state=delivered&limit=100"
            ));
            a.body["deliveries"]
                .as_array()
                .is_some_and(|d| d.len() == 30)
        },
    );
    let a = server.get(&format!("/v2/{pid}/notifications/deliveries?state=pending"));
    assert_eq!(a.body["deliveries"], json!([]), "{}", a.text);
    let a = server.get(&format!(
        "/v2/{pid}/notifications/deliveries?subscription_urn={sub_urn}&limit=100"
    ));
    let by_id: HashMap<&str, &Value> = a.body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["message_id"].as_str().unwrap(), d))
        .collect();
    assert!(
        by_id["msg-00"]["attempts"].as_u64().unwrap() >= 4,
        "{}",
        a.text
    );
    server
        .get(&format!("/v2/{pid}/notifications/deliveries?state=lost"))
        .assert_error(400, "CTS.0003");
    let metrics = server.get("/metrics").text;
    assert!(
        metrics.contains("cts_notification_deliveries_total{result=\"delivered\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("cts_notification_pending 0"), "{metrics}");
    assert!(metrics.contains("cts_notification_dead 0"), "{metrics}");
}

/// A delivered message leaves the outbox once `delivery.retain_delivered`
/// has passed, counted in the metrics; a dead one is kept for its longer
/// retention.
#[test]
fn delivered_messages_are_pruned_after_their_retention_dead_ones_kept() {
    // The first attempt fails, and with retry_for 1ms the message is dead.
    let receiver = Receiver::start(vec!["Fail", "Ok"]);
    let root = tempfile::tempdir().unwrap();
    let start = || {
        TestServer::builder()
            .root(root.path())
            .env("CTS_DELIVERY_RETRY_FOR", "1ms")
            .env("CTS_DELIVERY_RETAIN_DELIVERED", "2s")
            .env("CTS_DELIVERY_RETAIN_DEAD", "1h")
            .start()
    };
    let mut server = start();
    let pid = server.pid("main");
    let (urn, _) = subscribe(&server, &pid, &receiver);
    server.kill();
    let ids = ["dies".to_owned(), "arrives".to_owned()];
    enqueue(&server, &pid, &urn, &ids);
    let server = start();
    let states = || -> Vec<(String, String)> {
        let a = server.get(&format!("/v2/{pid}/notifications/deliveries"));
        assert_eq!(a.status, 200, "{}", a.text);
        a.body["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["message_id"].as_str().unwrap().to_owned(),
                    d["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    wait_for("both attempts", Duration::from_secs(10), || {
        receiver.accepted_ids() == ["arrives"]
    });
    let pair = |id: &str, state: &str| (id.to_owned(), state.to_owned());
    assert_eq!(
        states(),
        [pair("arrives", "delivered"), pair("dies", "dead")]
    );
    wait_for(
        "the delivered message pruned",
        Duration::from_secs(15),
        || states() == [pair("dies", "dead")],
    );
    let metrics = server.get("/metrics").text;
    assert!(
        metrics.contains("cts_notification_pruned_total{result=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cts_notification_pruned_total{result=\"dead\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("cts_notification_dead 1"), "{metrics}");
}

/// The whole path across a kill -9: traces reported to ctsd, matched by a
/// rule, delivered to a receiver that fails, hangs and recovers. ctsd is
/// killed right after a report was acknowledged, with messages pending;
/// after the restart every matching trace has arrived exactly in report
/// order (a message in flight at the kill may come twice, back to back)
/// and no other.
#[test]
fn reported_traces_reach_a_recovering_webhook_in_order_across_kill_9() {
    let receiver = Receiver::start(vec!["Fail", "Hang", "Ok", "Ok", "Fail", "Ok"]);
    let root = tempfile::tempdir().unwrap();
    let start = || start_impatient(root.path());
    let mut server = start();
    let pid = server.pid("main");
    let (urn, _) = subscribe(&server, &pid, &receiver);
    let rule = deletes_rule(&urn);
    let a = server.post_json(&format!("/v3/{pid}/notifications"), &rule);
    assert_eq!(a.status, 201, "{}", a.text);
    // Every other trace matches; each names its place in the report order.
    let mut expected = Vec::new();
    let mut report = |server: &TestServer, batch: usize| {
        server.report(
            "main",
            &numbered_traces(batch * 10..batch * 10 + 10, &mut expected),
        );
    };
    let arrived = || receiver.resource_ids();
    report(&server, 0);
    wait_for("a first delivery", Duration::from_secs(30), || {
        !arrived().is_empty()
    });
    // Acknowledged, maybe not yet matched, surely not all delivered.
    report(&server, 1);
    server.kill();
    assert!(arrived().len() < 10, "the kill came too late to matter");

    let server = start();
    report(&server, 2);
    wait_for("every matching trace", Duration::from_secs(60), || {
        arrived().len() >= expected.len()
    });
    assert_eq!(arrived(), expected, "every message, in report order");
    let all = receiver.inner.accepted.lock().unwrap().len();
    assert!(all - expected.len() <= 1, "{all} deliveries");
    assert_eq!(*receiver.inner.bad_signatures.lock().unwrap(), 0);
}

/// A node of a cluster on the PostgreSQL database `url`: short leases, so
/// that a takeover costs the test seconds; `root/data` its data directory.
fn start_on_postgres(url: &str, root: &std::path::Path) -> TestServer {
    TestServer::builder()
        .root(root)
        .env("CTS_STORE_BACKEND", "postgres")
        .env("CTS_STORE_POSTGRES_URL", url)
        .env(
            "CTS_STORE_SECRET_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .env("CTS_LEASES_TTL", "2s")
        .env("CTS_LEASES_RENEW_EVERY", "500ms")
        .env("CTS_DELIVERY_TIMEOUT", "500ms")
        .env("CTS_DELIVERY_FIRST_BACKOFF", "50ms")
        .env("CTS_DELIVERY_MAX_BACKOFF", "200ms")
        .start()
}

/// Two ctsd nodes on one PostgreSQL database. A topic, a subscription and
/// a rule made through the first node are the second's too: when the
/// first, which matches and delivers, is killed (-9) right after traces
/// were acknowledged, the second takes the matcher and the subscription
/// over and every matching trace reaches the webhook, in report order.
#[test]
fn on_postgres_a_second_node_takes_notifications_over_from_a_killed_one() {
    let pg = cts_testpg::TestPg::start();
    let receiver = Receiver::start(vec!["Ok"]);
    let (root_a, root_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = start_on_postgres(&pg.url(), root_a.path());
    // b finds the identities in the database; the harness reads the
    // bootstrap file the first node wrote.
    std::fs::create_dir_all(root_b.path().join("data")).unwrap();
    std::fs::copy(
        a.data_dir.join("bootstrap.json"),
        root_b.path().join("data/bootstrap.json"),
    )
    .unwrap();
    let b = start_on_postgres(&pg.url(), root_b.path());
    let pid = a.pid("main");
    let (urn, _) = subscribe(&a, &pid, &receiver);
    let rule = deletes_rule(&urn);
    let made = a.post_json(&format!("/v3/{pid}/notifications"), &rule);
    assert_eq!(made.status, 201, "{}", made.text);
    let listed = b.get(&format!("/v3/{pid}/notifications/smn"));
    assert_eq!(
        listed.body["notifications"][0]["notification_name"],
        "deletes"
    );

    let mut expected = Vec::new();
    let traces = numbered_traces(0..20, &mut expected);
    a.report("main", &traces[..10]);
    let arrived = || receiver.resource_ids();
    wait_for("a first delivery", Duration::from_secs(30), || {
        !arrived().is_empty()
    });
    a.report("main", &traces[10..]);
    a.kill();
    let killed = Instant::now();
    wait_for(
        "every matching trace, through b",
        Duration::from_secs(30),
        || arrived().len() >= expected.len(),
    );
    assert_eq!(arrived(), expected, "every message, in report order");
    println!("taken over and delivered in {:?}", killed.elapsed());
    let all = receiver.inner.accepted.lock().unwrap().len();
    assert!(all - expected.len() <= 1, "{all} deliveries");
    assert_eq!(*receiver.inner.bad_signatures.lock().unwrap(), 0);
}

/// An embedded node's rule, topic, subscription and the messages its outbox
/// still holds move into PostgreSQL (`ctsd migrate-from-embedded`): a
/// PostgreSQL node lists them and delivers every waiting message, in order,
/// with the same signing secret (sealed in the database), then the traces
/// reported to it.
#[test]
fn an_embedded_nodes_notifications_and_waiting_messages_move_to_postgres() {
    let receiver = Receiver::start(vec!["Fail"]);
    let cluster = Cluster::start();
    let root = tempfile::tempdir().unwrap();
    let mut embedded = start_impatient(root.path());
    let pid = embedded.pid("main");
    let (urn, _) = subscribe(&embedded, &pid, &receiver);
    let made = embedded.post_json(&format!("/v3/{pid}/notifications"), &deletes_rule(&urn));
    assert_eq!(made.status, 201, "{}", made.text);
    let mut expected = Vec::new();
    embedded.report("main", &numbered_traces(0..10, &mut expected));
    // Every match waits: the receiver refuses each attempt.
    wait_for("five messages waiting", Duration::from_secs(30), || {
        embedded
            .get("/metrics")
            .text
            .lines()
            .any(|l| l.starts_with("cts_notification_pending") && l.ends_with(" 5"))
    });
    embedded.terminate();

    let moved = migrate(&cluster, &embedded.data_dir, &[]);
    let said = text(&moved);
    assert!(moved.status.success(), "{said}");
    for line in [
        "notifications: 1 copied",
        "topics: 1 copied",
        "subscriptions: 1 copied",
        "messages: 5 copied",
        "deliveries: 5 copied",
    ] {
        assert!(said.contains(line), "{line}: {said}");
    }
    // Sealed on the way: PostgreSQL never holds the secret in the clear.
    let secret = receiver.inner.secret.lock().unwrap().clone();
    let stored = cluster.sql("SELECT secret FROM subscriptions");
    assert!(
        stored.contains("aes256gcm:") && !stored.contains(&secret),
        "{stored}"
    );
    let again = text(&migrate(&cluster, &embedded.data_dir, &[]));
    assert!(
        again.contains("messages: 0 copied (5 already there)"),
        "{again}"
    );
    assert!(
        again.contains("deliveries: 0 copied (5 already there)"),
        "{again}"
    );

    *receiver.inner.script.lock().unwrap() = vec!["Ok"];
    let root_b = tempfile::tempdir().unwrap();
    let node = cluster.another_with(&embedded, root_b.path(), |b| {
        b.env("CTS_DELIVERY_TIMEOUT", "500ms")
            .env("CTS_DELIVERY_FIRST_BACKOFF", "50ms")
            .env("CTS_DELIVERY_MAX_BACKOFF", "200ms")
    });
    let listed = node.get(&format!("/v3/{pid}/notifications/smn"));
    assert_eq!(
        listed.body["notifications"][0]["notification_name"], "deletes",
        "{}",
        listed.text
    );
    let topics = node.get(&topics_path(&pid));
    assert_eq!(
        topics.body["topics"][0]["topic_urn"],
        urn.as_str(),
        "{}",
        topics.text
    );
    node.report("main", &numbered_traces(10..20, &mut expected));
    let arrived = || receiver.resource_ids();
    wait_for("every matching trace", Duration::from_secs(30), || {
        arrived().len() >= expected.len()
    });
    assert_eq!(arrived(), expected, "every message, in report order");
    let all = receiver.inner.accepted.lock().unwrap().len();
    assert_eq!(all, expected.len(), "each message once");
    assert_eq!(*receiver.inner.bad_signatures.lock().unwrap(), 0);
}
