use serde_json::json;

use cts_testpg::{both, Place};

use super::*;
use crate::request::{parse_create, parse_update};

/// A directory with one topic and the group `ops` of alice and bob.
struct Dir;

impl Directory for Dir {
    fn topic_exists(&self, project_id: &str, topic_urn: &str) -> Result<bool, String> {
        Ok(project_id == "p1" && topic_urn == TOPIC)
    }
    fn group_members(&self, _: &str, group: &str) -> Result<Option<Vec<ResolvedUser>>, String> {
        Ok((group == "ops").then(|| {
            ["alice", "bob"]
                .iter()
                .map(|n| ResolvedUser {
                    id: format!("id-{n}"),
                    name: n.to_string(),
                })
                .collect()
        }))
    }
}

const TOPIC: &str = "urn:smn:r1:p1:alerts";

fn spec(v: serde_json::Value) -> NotificationSpec {
    parse_create(v.to_string().as_bytes()).unwrap()
}

/// A store on `place`, opened again on each call (a restart, or another
/// node).
fn open(place: &Place, quota: u64) -> NotificationStore {
    match place {
        Place::Sqlite(dir) => {
            NotificationStore::open(&dir.path().join("notifications"), quota).unwrap()
        }
        Place::Postgres(pg) => {
            let pool = cts_db::PgSettings::new(pg.url().parse().unwrap())
                .connect()
                .unwrap();
            NotificationStore::open_postgres(pool, true, quota).unwrap()
        }
    }
}

both!(create_list_update_delete_survive_a_reopen);
fn create_list_update_delete_survive_a_reopen(place: &Place) {
    let s = open(place, 100);
    let n = s
        .create(
            "p1",
            "d1",
            &spec(
                json!({"notification_name": "a", "operation_type": "complete", "topic_id": TOPIC}),
            ),
            10,
            &Dir,
        )
        .unwrap();
    assert_eq!((n.status, n.since), (Status::Enabled, Some(10)));
    let off = s
        .create(
            "p1",
            "d1",
            &spec(json!({"notification_name": "b", "operation_type": "complete"})),
            11,
            &Dir,
        )
        .unwrap();
    assert_eq!((off.status, off.since), (Status::Disabled, None));
    assert_eq!(s.matcher().len(), 1);
    drop(s);
    let s = open(place, 100);
    assert_eq!(s.list("p1", None, None).unwrap().len(), 2);
    assert_eq!(
        s.list("p1", Some(NotificationType::Fun), None)
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        s.list("p1", None, Some("b")).unwrap(),
        std::slice::from_ref(&off)
    );
    assert_eq!(s.matcher().len(), 1, "the matcher is rebuilt on open");
    let update = parse_update(
        json!({"notification_id": off.notification_id, "notification_name": "b2", "operation_type": "complete",
               "status": "enabled", "topic_id": TOPIC})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let (before, after) = s.update("p1", &update, 20, &Dir).unwrap();
    assert_eq!(before, off);
    assert_eq!(
        (after.notification_name.as_str(), after.since),
        ("b2", Some(20))
    );
    assert_eq!(after.create_time, 11);
    assert_eq!(s.matcher().len(), 2);
    assert_eq!(s.matcher().sinces(10), (Some(20), Some(20)));
    s.delete("p1", &n.notification_id).unwrap();
    assert_eq!(s.count("p1").unwrap(), 1);
    assert_eq!(s.delete("p1", &n.notification_id).unwrap_err().status, 404);
    assert_eq!(
        s.get("p2", &after.notification_id).unwrap_err().status,
        404,
        "another project's"
    );
}

both!(names_are_unique_per_project_and_the_quota_holds);
fn names_are_unique_per_project_and_the_quota_holds(place: &Place) {
    let s = open(place, 2);
    let a = spec(json!({"notification_name": "a", "operation_type": "complete"}));
    s.create("p1", "d1", &a, 1, &Dir).unwrap();
    assert_eq!(
        s.create("p1", "d1", &a, 2, &Dir).unwrap_err().code,
        "CTS.0400"
    );
    s.create("p2", "d1", &a, 2, &Dir).unwrap();
    s.create(
        "p1",
        "d1",
        &spec(json!({"notification_name": "b", "operation_type": "complete"})),
        3,
        &Dir,
    )
    .unwrap();
    let e = s
        .create(
            "p1",
            "d1",
            &spec(json!({"notification_name": "c", "operation_type": "complete"})),
            4,
            &Dir,
        )
        .unwrap_err();
    assert_eq!((e.code, e.status), ("CTS.9007", 409));
}

both!(topics_groups_and_users_are_resolved);
fn topics_groups_and_users_are_resolved(place: &Place) {
    let s = open(place, 100);
    let field = |v: serde_json::Value| {
        s.create("p1", "d1", &spec(v), 1, &Dir)
            .unwrap_err()
            .field
            .unwrap()
    };
    assert_eq!(
        field(
            json!({"notification_name": "a", "operation_type": "complete", "topic_id": "urn:smn:r1:p1:nope"})
        ),
        "topic_id"
    );
    assert_eq!(
        field(
            json!({"notification_name": "a", "operation_type": "complete",
                     "notify_user_list": [{"user_group": "devs", "user_list": ["alice"]}]})
        ),
        "notify_user_list[0].user_group"
    );
    assert_eq!(
        field(
            json!({"notification_name": "a", "operation_type": "complete",
                     "notify_user_list": [{"user_group": "ops", "user_list": ["alice", "eve"]}]})
        ),
        "notify_user_list[0].user_list[1]"
    );
    let n = s
        .create(
            "p1",
            "d1",
            &spec(
                json!({"notification_name": "a", "operation_type": "complete",
                     "notify_user_list": [{"user_group": "ops", "user_list": ["bob"]}]}),
            ),
            1,
            &Dir,
        )
        .unwrap();
    assert_eq!(
        n.users,
        [ResolvedUser {
            id: "id-bob".into(),
            name: "bob".into()
        }]
    );
}

both!(a_rule_written_through_one_node_applies_on_another_within_the_recheck);
fn a_rule_written_through_one_node_applies_on_another_within_the_recheck(place: &Place) {
    let (a, b) = (open(place, 100), open(place, 100));
    assert!(b.matcher().is_empty());
    // Polls b's matcher until it has `n` rules; answers how long it took.
    let until = |n: usize| {
        let started = std::time::Instant::now();
        while b.matcher().len() != n {
            assert!(started.elapsed() < RECHECK * 3, "b never saw {n} rules");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        started.elapsed()
    };
    let rule = json!({"notification_name": "a", "operation_type": "complete", "topic_id": TOPIC});
    let n = a.create("p1", "d1", &spec(rule), 10, &Dir).unwrap();
    assert_eq!(a.matcher().len(), 1, "the writer's own at once");
    let took = until(1);
    assert!(
        took <= RECHECK + std::time::Duration::from_millis(300),
        "{took:?}"
    );
    a.delete("p1", &n.notification_id).unwrap();
    until(0);
}

both!(the_quota_holds_across_nodes_creating_at_once);
fn the_quota_holds_across_nodes_creating_at_once(place: &Place) {
    let nodes = [open(place, 1), open(place, 1)];
    let created = std::thread::scope(|s| {
        let tries: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                s.spawn(move || {
                    let rule =
                        json!({"notification_name": format!("n{i}"), "operation_type": "complete"});
                    node.create("p1", "d1", &spec(rule), 1, &Dir)
                })
            })
            .collect();
        tries
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        created.iter().filter(|c| c.is_ok()).count(),
        1,
        "{created:?}"
    );
    assert_eq!(nodes[0].count("p1").unwrap(), 1);
}
