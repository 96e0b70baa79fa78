//! Each rule form matches exactly the traces it should.

use serde_json::{json, Value};

use super::*;
use crate::filter::{Condition, FilterRule};
use crate::model::{NotifyUsers, Operation, ResolvedUser, Status};

fn notification(id: &str, kind: OperationType) -> Notification {
    Notification {
        notification_id: id.into(),
        project_id: "p1".into(),
        domain_id: "d1".into(),
        notification_name: id.into(),
        operation_type: kind,
        operations: Vec::new(),
        notify_user_list: Vec::new(),
        users: Vec::new(),
        topic_id: Some("urn:smn:r:p1:t".into()),
        filter: None,
        status: Status::Enabled,
        create_time: 0,
        since: Some(0),
    }
}

fn op(service: &str, resource: &str, names: &[&str]) -> Operation {
    Operation {
        service_type: service.into(),
        resource_type: resource.into(),
        trace_names: names.iter().map(|s| s.to_string()).collect(),
    }
}

fn filter(condition: Condition, rules: &[&str]) -> Option<Filter> {
    Some(Filter {
        condition,
        is_support_filter: true,
        rules: rules
            .iter()
            .map(|r| FilterRule::parse(r).unwrap())
            .collect(),
    })
}

/// A stored trace: ECS/server/deleteServer by alice (id u-alice), code 200.
fn trace(changes: Value) -> Vec<u8> {
    let mut t = json!({
        "trace_id": "t1", "project_id": "p1", "time": 1000, "record_time": 1000,
        "service_type": "ECS", "resource_type": "server", "trace_name": "deleteServer",
        "trace_rating": "normal", "trace_type": "ApiCall", "api_version": "v2",
        "resource_id": "r-1", "resource_name": "web-1", "code": "200",
        "user": {"id": "u-alice", "name": "alice", "domain": {"id": "d1", "name": "acme"}},
        "source_ip": "10.0.0.1", "domain_id": "d1", "event_type": "system",
        "tracker_name": "system", "operation_id": "x", "enterprise_project_id": "0"
    });
    for (k, v) in changes.as_object().unwrap() {
        t[k] = v.clone();
    }
    serde_json::to_vec(&t).unwrap()
}

fn fired(m: &Matcher, doc: &[u8]) -> Vec<String> {
    let facts = TraceFacts::read(doc).unwrap();
    let mut out = Vec::new();
    m.fire(&facts, &mut out);
    let mut ids: Vec<String> = out.iter().map(|n| n.notification_id.clone()).collect();
    ids.sort();
    ids
}

#[test]
fn complete_fires_for_every_trace_of_its_project() {
    let m = Matcher::compile([notification("all", OperationType::Complete)]);
    assert_eq!(fired(&m, &trace(json!({}))), ["all"]);
    assert_eq!(
        fired(
            &m,
            &trace(json!({"service_type": "OBS", "trace_name": "x"}))
        ),
        ["all"]
    );
    assert!(fired(&m, &trace(json!({"project_id": "p2"}))).is_empty());
}

#[test]
fn customized_fires_only_for_its_operations() {
    let mut n = notification("ops", OperationType::Customized);
    n.operations = vec![
        op("ECS", "server", &["deleteServer", "stopServer"]),
        op("CTS", "tracker", &["deleteTracker"]),
    ];
    let m = Matcher::compile([n]);
    assert_eq!(fired(&m, &trace(json!({}))), ["ops"]);
    assert_eq!(
        fired(&m, &trace(json!({"trace_name": "stopServer"}))),
        ["ops"]
    );
    assert_eq!(
        fired(
            &m,
            &trace(
                json!({"service_type": "CTS", "resource_type": "tracker", "trace_name": "deleteTracker"})
            )
        ),
        ["ops"]
    );
    // The trace name of another service or resource type does not fire.
    assert!(fired(&m, &trace(json!({"trace_name": "createServer"}))).is_empty());
    assert!(fired(&m, &trace(json!({"resource_type": "disk"}))).is_empty());
    assert!(fired(&m, &trace(json!({"service_type": "CTS"}))).is_empty());
}

#[test]
fn user_lists_fire_only_for_their_users_by_id_or_name() {
    let mut n = notification("users", OperationType::Complete);
    n.notify_user_list = vec![NotifyUsers {
        user_group: "admins".into(),
        user_list: vec!["alice".into(), "bob".into()],
    }];
    n.users = vec![
        ResolvedUser {
            id: "u-alice".into(),
            name: "alice".into(),
        },
        ResolvedUser {
            id: "u-bob".into(),
            name: "bob".into(),
        },
    ];
    let m = Matcher::compile([n]);
    assert_eq!(fired(&m, &trace(json!({}))), ["users"]);
    assert_eq!(
        fired(&m, &trace(json!({"user": {"name": "bob"}}))),
        ["users"]
    );
    assert_eq!(
        fired(&m, &trace(json!({"user": {"id": "u-bob"}}))),
        ["users"]
    );
    assert!(fired(&m, &trace(json!({"user": {"id": "u-eve", "name": "eve"}}))).is_empty());
    assert!(fired(&m, &trace(json!({"user": {}}))).is_empty());
}

#[test]
fn and_filters_need_every_rule() {
    let mut n = notification("and", OperationType::Complete);
    n.filter = filter(Condition::And, &["code != 200", "trace_rating = warning"]);
    let m = Matcher::compile([n]);
    assert!(fired(&m, &trace(json!({}))).is_empty());
    assert!(fired(&m, &trace(json!({"code": "403"}))).is_empty());
    assert!(fired(&m, &trace(json!({"trace_rating": "warning"}))).is_empty());
    assert_eq!(
        fired(&m, &trace(json!({"code": 403, "trace_rating": "warning"}))),
        ["and"]
    );
}

#[test]
fn or_filters_need_one_rule() {
    let mut n = notification("or", OperationType::Complete);
    n.filter = filter(
        Condition::Or,
        &[
            "resource_name = db-1",
            "trace_type != ApiCall",
            "api_version = v3",
        ],
    );
    let m = Matcher::compile([n]);
    assert!(fired(&m, &trace(json!({}))).is_empty());
    assert_eq!(fired(&m, &trace(json!({"resource_name": "db-1"}))), ["or"]);
    assert_eq!(
        fired(&m, &trace(json!({"trace_type": "ConsoleAction"}))),
        ["or"]
    );
    assert_eq!(fired(&m, &trace(json!({"api_version": "v3"}))), ["or"]);
}

#[test]
fn a_missing_field_differs_from_every_value() {
    let mut eq = notification("eq", OperationType::Complete);
    eq.filter = filter(Condition::And, &["resource_id = r-1"]);
    let mut ne = notification("ne", OperationType::Complete);
    ne.filter = filter(Condition::And, &["resource_id != r-1"]);
    let m = Matcher::compile([eq, ne]);
    assert_eq!(fired(&m, &trace(json!({}))), ["eq"]);
    assert_eq!(fired(&m, &trace(json!({"resource_id": null}))), ["ne"]);
    assert_eq!(fired(&m, &trace(json!({"resource_id": "r-2"}))), ["ne"]);
}

#[test]
fn a_switched_off_filter_passes_everything() {
    let mut n = notification("off", OperationType::Complete);
    n.filter = filter(Condition::And, &["code = 500"]);
    n.filter.as_mut().unwrap().is_support_filter = false;
    let m = Matcher::compile([n]);
    assert_eq!(fired(&m, &trace(json!({}))), ["off"]);
}

#[test]
fn forms_combine_and_each_rule_fires_once() {
    let mut custom = notification("custom", OperationType::Customized);
    custom.operations = vec![
        op("ECS", "server", &["deleteServer"]),
        op("ECS", "server", &["deleteServer"]),
    ];
    custom.users = vec![ResolvedUser {
        id: "u-alice".into(),
        name: "alice".into(),
    }];
    custom.filter = filter(Condition::And, &["code = 200"]);
    let all = notification("all", OperationType::Complete);
    let m = Matcher::compile([custom, all]);
    assert_eq!(fired(&m, &trace(json!({}))), ["all", "custom"]);
    assert_eq!(fired(&m, &trace(json!({"code": "500"}))), ["all"]);
}

#[test]
fn inactive_rules_and_traces_before_since_do_not_fire() {
    let mut disabled = notification("disabled", OperationType::Complete);
    disabled.status = Status::Disabled;
    let mut no_topic = notification("no_topic", OperationType::Complete);
    no_topic.topic_id = None;
    let mut later = notification("later", OperationType::Complete);
    later.since = Some(1000);
    let m = Matcher::compile([disabled.clone(), no_topic, later]);
    assert_eq!(m.len(), 1);
    assert!(fired(&m, &trace(json!({"record_time": 999}))).is_empty());
    assert_eq!(fired(&m, &trace(json!({"record_time": 1000}))), ["later"]);
    // A dry run evaluates a rule whatever its status and since.
    let m = Matcher::single(disabled);
    assert_eq!(fired(&m, &trace(json!({"record_time": 1}))), ["disabled"]);
}
