//! The matcher consumer over a real journal, consumer state and outbox.

use serde_json::json;

use cts_model::Trace;
use cts_smn::{Protocol, TopicStore};
use cts_store::{EmbeddedStore, StoreConfig};

use super::*;
use crate::model::{Notification, ResolvedUser};
use crate::request::{parse_create, parse_update};
use crate::store::Directory;

struct World {
    _dir: tempfile::TempDir,
    journal: Arc<dyn TraceStore>,
    rules: Arc<NotificationStore>,
    consumers: Arc<ConsumerStore>,
    outbox: Arc<Outbox>,
    topics: Arc<TopicStore>,
    topic: String,
}

impl Directory for World {
    fn topic_exists(&self, project_id: &str, urn: &str) -> Result<bool, String> {
        Ok(self
            .topics
            .resolve(project_id, urn)
            .map_err(|e| e.to_string())?
            .is_some())
    }
    fn group_members(&self, _: &str, _: &str) -> Result<Option<Vec<ResolvedUser>>, String> {
        Ok(None)
    }
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let journal: Arc<dyn TraceStore> =
        Arc::new(EmbeddedStore::open(StoreConfig::new(dir.path().join("store"))).unwrap());
    let n = dir.path().join("notifications");
    let topics = Arc::new(TopicStore::open(&n).unwrap());
    let topic = topics.create_topic("p1", "eu", "alerts", "").unwrap().urn;
    topics
        .subscribe("p1", &topic, Protocol::Http, "http://127.0.0.1:9/hook", "")
        .unwrap();
    World {
        journal,
        rules: Arc::new(NotificationStore::open(&n, 100).unwrap()),
        consumers: Arc::new(ConsumerStore::open(&dir.path().join("consumers")).unwrap()),
        outbox: Arc::new(Outbox::open(&n).unwrap()),
        topics,
        topic,
        _dir: dir,
    }
}

impl World {
    fn notifier(&self) -> Notifier {
        Notifier::open(
            self.journal.clone(),
            self.rules.clone(),
            self.consumers.clone(),
            self.outbox.clone(),
        )
    }

    /// Records one ECS trace named `name`, recorded at `record_time`.
    fn record(&self, name: &str, record_time: i64) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let t: Trace = serde_json::from_value(json!({
            "trace_id": id, "time": record_time, "record_time": record_time,
            "user": {"id": "u1", "name": "alice"}, "service_type": "ECS", "event_type": "system",
            "project_id": "p1", "resource_type": "ecs", "tracker_name": "system", "operation_id": "o",
            "source_ip": "10.0.0.1", "domain_id": "d1", "trace_name": name, "trace_rating": "normal",
            "trace_type": "ApiCall", "enterprise_project_id": "0"
        }))
        .unwrap();
        self.journal.append(vec![t]).unwrap();
        id
    }

    fn rule(&self, name: &str, trace_name: &str, at: i64) -> Notification {
        let body = json!({"notification_name": name, "operation_type": "customized", "topic_id": self.topic,
            "operations": [{"service_type": "ECS", "resource_type": "ecs", "trace_names": [trace_name]}]});
        let spec = parse_create(body.to_string().as_bytes()).unwrap();
        self.rules.create("p1", "d1", &spec, at, self).unwrap()
    }

    /// (notification name, trace name) of every message, oldest first.
    fn messages(&self) -> Vec<(String, String)> {
        let mut all = self.outbox.deliveries("p1", None, None, 0, 1000).unwrap();
        all.reverse();
        all.iter()
            .map(|d| {
                let t: serde_json::Value = serde_json::from_str(&d.trace).unwrap();
                (
                    d.notification_name.clone(),
                    t["trace_name"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn fires_each_matching_trace_once_from_the_rule_on() {
    let w = world();
    let n = w.notifier();
    w.record("deleteServer", 1_000);
    w.rule("deletes", "deleteServer", 2_000);
    w.record("deleteServer", 2_000);
    w.record("createServer", 2_001);
    w.record("deleteServer", 2_002);
    let pass = n.pass(10).unwrap();
    assert!(pass.caught_up);
    assert_eq!(pass.fired, 2);
    assert_eq!(
        w.messages(),
        pairs(&[("deletes", "deleteServer"), ("deletes", "deleteServer")])
    );
    // Nothing new: nothing more.
    assert_eq!(n.pass(10).unwrap().fired, 0);
    assert_eq!(w.messages().len(), 2);
}

#[test]
fn a_rule_enabled_after_the_cursor_passed_its_traces_still_gets_them() {
    let w = world();
    let n = w.notifier();
    w.rule("creates", "createServer", 1_000);
    // The consumer evaluates traces recorded after a later change before
    // it sees the change (the trace is written before the rule commits).
    w.record("deleteServer", 5_000);
    w.record("deleteServer", 5_001);
    n.pass(10).unwrap();
    assert!(w.messages().is_empty());
    w.rule("deletes", "deleteServer", 5_000);
    n.pass(10).unwrap();
    assert_eq!(
        w.messages(),
        pairs(&[("deletes", "deleteServer"), ("deletes", "deleteServer")])
    );
    // A restart evaluates nothing twice into the outbox.
    let again = w.notifier();
    again.pass(10).unwrap();
    assert_eq!(w.messages().len(), 2);
}

#[test]
fn a_modified_rule_applies_from_its_change_and_a_disabled_one_stops() {
    let w = world();
    let n = w.notifier();
    let r = w.rule("r", "deleteServer", 1_000);
    w.record("stopServer", 1_500);
    n.pass(10).unwrap();
    assert!(w.messages().is_empty());
    let body = json!({"notification_id": r.notification_id, "notification_name": "r", "operation_type": "customized",
        "status": "enabled", "topic_id": w.topic,
        "operations": [{"service_type": "ECS", "resource_type": "ecs", "trace_names": ["stopServer"]}]});
    let spec = parse_update(body.to_string().as_bytes()).unwrap();
    w.rules.update("p1", &spec, 2_000, &w).unwrap();
    w.record("stopServer", 2_000);
    n.pass(10).unwrap();
    // The stop recorded before the change is not the new rule's.
    assert_eq!(w.messages(), pairs(&[("r", "stopServer")]));
    let mut off = body.clone();
    off["status"] = "disabled".into();
    w.rules
        .update(
            "p1",
            &parse_update(off.to_string().as_bytes()).unwrap(),
            3_000,
            &w,
        )
        .unwrap();
    w.record("stopServer", 3_000);
    n.pass(10).unwrap();
    assert_eq!(w.messages().len(), 1);
}

#[test]
fn the_journal_is_held_from_the_cursor() {
    let w = world();
    let n = w.notifier();
    w.rule("deletes", "deleteServer", 1_000);
    for i in 0..3 {
        w.record("deleteServer", 1_000 + i);
    }
    n.pass(10).unwrap();
    let entry = w.consumers.get::<Applied>(CONSUMER, KEY).unwrap().unwrap();
    assert_eq!(entry.cursor, 3);
    assert_eq!(entry.body.since, 1_000);
}

#[test]
fn on_shared_state_one_node_matches_and_another_takes_over_when_it_stops() {
    use std::time::{Duration, Instant};

    let pg = cts_testpg::TestPg::start();
    let leases = cts_consumer::LeaseSettings {
        ttl: Duration::from_millis(600),
        renew_every: Duration::from_millis(200),
    };
    let node =
        || Arc::new(ConsumerStore::connect(&pg.url(), cts_consumer::node_id(), leases).unwrap());
    let mut w = world();
    w.consumers = node();
    let a = w.notifier();
    let (b_state, a_state) = (node(), w.consumers.clone());
    let b = Notifier::open(
        w.journal.clone(),
        w.rules.clone(),
        b_state.clone(),
        w.outbox.clone(),
    );
    w.rule("deletes", "deleteServer", 1_000);
    w.record("deleteServer", 1_000);
    // a took the lease first: b evaluates nothing.
    assert_eq!(b.pass(10).unwrap().evaluated, 0);
    assert_eq!(a.pass(10).unwrap().fired, 1);
    a_state.renew().unwrap();
    w.record("deleteServer", 1_001);
    assert_eq!(b.pass(10).unwrap().evaluated, 0);
    // a stops renewing: b takes over within the lease time, from a's cursor.
    let started = Instant::now();
    let pass = loop {
        let pass = b.pass(10).unwrap();
        if pass.evaluated > 0 {
            break pass;
        }
        assert!(started.elapsed() < leases.ttl * 2, "b never took over");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!((pass.evaluated, pass.fired), (1, 1));
    // a, back, is fenced: it commits nothing.
    w.record("deleteServer", 1_002);
    assert!(matches!(
        a.pass(10),
        Err(NotifierError::State(
            cts_consumer::ConsumerError::LeaseLost { .. }
        ))
    ));
    b.pass(10).unwrap();
    assert_eq!(w.messages().len(), 3);
    assert_eq!(
        b_state
            .get::<Applied>(CONSUMER, KEY)
            .unwrap()
            .unwrap()
            .cursor,
        3
    );
}
