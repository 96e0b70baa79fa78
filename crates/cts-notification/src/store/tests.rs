use serde_json::json;

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

fn open(quota: u64) -> (tempfile::TempDir, NotificationStore) {
    let tmp = tempfile::tempdir().unwrap();
    let store = NotificationStore::open(&tmp.path().join("notifications"), quota).unwrap();
    (tmp, store)
}

#[test]
fn create_list_update_delete_survive_a_reopen() {
    let (tmp, s) = open(100);
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
    let s = NotificationStore::open(&tmp.path().join("notifications"), 100).unwrap();
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

#[test]
fn names_are_unique_per_project_and_the_quota_holds() {
    let (_tmp, s) = open(2);
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

#[test]
fn topics_groups_and_users_are_resolved() {
    let (_tmp, s) = open(100);
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
