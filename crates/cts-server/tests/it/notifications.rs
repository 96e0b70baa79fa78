//! Key event notifications against the real server: the v3 API with its
//! rules and codes, user lists resolved against the identity store, the
//! quota, every change on record, and the dry run.

use serde_json::{json, Value};

use crate::support::*;

fn create(server: &TestServer, pid: &str, body: &Value) -> Answer {
    server.post_json(&format!("/v3/{pid}/notifications"), body)
}

fn list(server: &TestServer, pid: &str, query: &str) -> Vec<Value> {
    let a = server.get(&format!("/v3/{pid}/notifications/smn{query}"));
    assert_eq!(a.status, 200, "{}", a.text);
    a.body["notifications"].as_array().unwrap().clone()
}

fn delete(server: &TestServer, pid: &str, ids: &str) -> Answer {
    server.request(
        reqwest::Method::DELETE,
        &format!("/v3/{pid}/notifications?notification_id={ids}"),
    )
}

/// CTS's own traces of notification changes, newest first.
fn changes(server: &TestServer, pid: &str) -> Vec<String> {
    let body = server.query(
        "main",
        &[
            ("service_type", "CTS".into()),
            ("resource_type", "notification".into()),
        ],
    );
    let _ = pid;
    body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{} {}",
                t["trace_name"].as_str().unwrap(),
                t["resource_name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn create_query_modify_delete_as_the_reference_says() {
    let server = TestServer::start();
    let pid = server.pid("main");
    let body = json!({
        "notification_name": "deletes",
        "operation_type": "customized",
        "operations": [{"service_type": "ECS", "resource_type": "ecs", "trace_names": ["deleteServer"]}],
        "filter": {"is_support_filter": true, "condition": "AND", "rule": ["code != 200"]}
    });
    let a = create(&server, &pid, &body);
    assert_eq!(a.status, 201, "{}", a.text);
    let n = a.body.clone();
    let id = n["notification_id"].as_str().unwrap().to_string();
    assert_eq!(n["notification_type"], "smn");
    assert_eq!(n["status"], "disabled", "no topic: nothing to send to");
    assert_eq!(n["project_id"], pid.as_str());
    assert_eq!(n["filter"]["rule"], json!(["code != 200"]));
    assert!(n["create_time"].as_i64().unwrap() > 0);

    assert_eq!(list(&server, &pid, ""), [n]);
    assert_eq!(list(&server, &pid, "?notification_name=deletes").len(), 1);
    assert!(list(&server, &pid, "?notification_name=other").is_empty());
    let a = server.get(&format!("/v3/{pid}/notifications/fun"));
    assert_eq!(a.body["notifications"], json!([]));
    server
        .get(&format!("/v3/{pid}/notifications/sms"))
        .assert_error(400, "CTS.0300");

    // A topic must be one of the project's.
    let mut unknown_topic = body.clone();
    unknown_topic["notification_name"] = "other".into();
    unknown_topic["topic_id"] = format!("urn:smn:eu-de:{pid}:nope").into();
    let a = create(&server, &pid, &unknown_topic);
    a.assert_error(400, "CTS.0003");
    assert!(a.text.contains("topic_id"), "{}", a.text);

    // The name is the project's once.
    create(&server, &pid, &body).assert_error(400, "CTS.0400");
    // Each broken rule is refused with its field.
    let mut bad = body.clone();
    bad["filter"]["rule"] = json!(["code != 200", "colour = red"]);
    let a = create(&server, &pid, &bad);
    a.assert_error(400, "CTS.0003");
    assert!(a.text.contains("filter.rule[1]"), "{}", a.text);

    let path = format!("/v3/{pid}/notifications");
    let mut update = body.clone();
    update["notification_id"] = id.clone().into();
    update["notification_name"] = "deletes2".into();
    update["status"] = "enabled".into();
    let a = server.put_json(&path, &update);
    a.assert_error(400, "CTS.0003");
    assert!(a.text.contains("topic_id"), "{}", a.text);
    update["status"] = "disabled".into();
    let a = server.put_json(&path, &update);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["notification_name"], "deletes2");
    update["notification_id"] = "nope".into();
    server
        .put_json(&path, &update)
        .assert_error(404, "CTS.9006");

    // Several at once; one missing id deletes none.
    let second = create(
        &server,
        &pid,
        &json!({"notification_name": "all", "operation_type": "complete"}),
    );
    let second = second.body["notification_id"].as_str().unwrap().to_string();
    delete(&server, &pid, &format!("{id},missing")).assert_error(404, "CTS.9006");
    assert_eq!(list(&server, &pid, "").len(), 2);
    delete(&server, &pid, "").assert_error(400, "CTS.0300");
    assert_eq!(delete(&server, &pid, &format!("{id},{second}")).status, 204);
    assert!(list(&server, &pid, "").is_empty());

    assert_eq!(
        changes(&server, &pid),
        [
            "deleteNotification all",
            "deleteNotification deletes2",
            "createNotification all",
            "updateNotification deletes",
            "createNotification deletes",
        ]
    );
}

#[test]
fn the_quota_counts_notifications() {
    let server = TestServer::builder()
        .env("CTS_QUOTAS_NOTIFICATIONS", "2")
        .start();
    let pid = server.pid("main");
    let used = |server: &TestServer| {
        let a = server.get(&format!("/v3/{pid}/quotas"));
        let all = a.body["resources"].as_array().unwrap().clone();
        let n = all
            .iter()
            .find(|r| r["type"] == "notification")
            .unwrap()
            .clone();
        (n["used"].as_u64().unwrap(), n["quota"].as_u64().unwrap())
    };
    assert_eq!(used(&server), (0, 2));
    for name in ["a", "b"] {
        let a = create(
            &server,
            &pid,
            &json!({"notification_name": name, "operation_type": "complete"}),
        );
        assert_eq!(a.status, 201, "{}", a.text);
    }
    assert_eq!(used(&server), (2, 2));
    create(
        &server,
        &pid,
        &json!({"notification_name": "c", "operation_type": "complete"}),
    )
    .assert_error(409, "CTS.9007");
}

#[test]
fn user_lists_name_members_of_groups_of_the_account() {
    let server = TestServer::start();
    let pid = server.pid("main");
    let g = server.post_json("/v3/groups", &json!({"group": {"name": "ops"}}));
    assert_eq!(g.status, 201, "{}", g.text);
    let gid = g.body["group"]["id"].as_str().unwrap().to_string();
    for name in ["carol", "dave"] {
        let u = server.post_json(
            "/v3/users",
            &json!({"user": {"name": name, "password": "Secret-pass-1"}}),
        );
        assert_eq!(u.status, 201, "{}", u.text);
        if name == "carol" {
            let uid = u.body["user"]["id"].as_str().unwrap();
            let a = server.request(
                reqwest::Method::PUT,
                &format!("/v3/groups/{gid}/users/{uid}"),
            );
            assert_eq!(a.status, 204, "{}", a.text);
        }
    }
    let with_users = |group: &str, user: &str| {
        create(
            &server,
            &pid,
            &json!({"notification_name": format!("n_{group}_{user}"), "operation_type": "complete",
                    "notify_user_list": [{"user_group": group, "user_list": [user]}]}),
        )
    };
    let a = with_users("devs", "carol");
    a.assert_error(400, "CTS.0003");
    assert!(
        a.text.contains("notify_user_list[0].user_group"),
        "{}",
        a.text
    );
    let a = with_users("ops", "dave");
    a.assert_error(400, "CTS.0003");
    assert!(
        a.text.contains("notify_user_list[0].user_list[0]"),
        "{}",
        a.text
    );
    let a = with_users("ops", "carol");
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(
        a.body["notify_user_list"],
        json!([{"user_group": "ops", "user_list": ["carol"]}])
    );
}

#[test]
fn a_dry_run_says_what_would_have_fired() {
    let server = TestServer::start();
    let pid = server.pid("main");
    let now = now_ms();
    let mut traces = Vec::new();
    for (i, (name, code)) in [
        ("deleteServer", "200"),
        ("deleteServer", "500"),
        ("createServer", "500"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = trace(now - 1000 + i as i64);
        t["trace_name"] = name.into();
        t["code"] = code.into();
        traces.push(t);
    }
    server.report("main", &traces);
    let a = create(
        &server,
        &pid,
        &json!({"notification_name": "failed_deletes", "operation_type": "customized",
                "operations": [{"service_type": "ECS", "resource_type": "ecs", "trace_names": ["deleteServer"]}],
                "filter": {"is_support_filter": true, "condition": "AND", "rule": ["code != 200"]}}),
    );
    let id = a.body["notification_id"].as_str().unwrap().to_string();
    let run = |query: &str| {
        server.post_json(
            &format!("/v3/{pid}/notifications/{id}/dry-run{query}"),
            &json!({}),
        )
    };
    let a = run(&format!("?from={}&to={}", now - 60_000, now + 1000));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        (a.body["matched"].as_u64(), a.body["truncated"].as_bool()),
        (Some(1), Some(false))
    );
    assert!(a.body["scanned"].as_u64().unwrap() >= 3, "{}", a.text);
    let t = &a.body["traces"][0];
    assert_eq!(
        (t["trace_name"].as_str(), t["code"].as_str()),
        (Some("deleteServer"), Some("500"))
    );
    // A window before the traces: nothing would have fired.
    let a = run(&format!("?from={}&to={}", now - 60_000, now - 30_000));
    assert_eq!(a.body["matched"], 0, "{}", a.text);
    run("?from=5&to=4").assert_error(400, "CTS.0300");
    run("?limit=0").assert_error(400, "CTS.0300");
    server
        .post_json(&format!("/v3/{pid}/notifications/nope/dry-run"), &json!({}))
        .assert_error(404, "CTS.9006");
}

/// Through the binary: a rule on a topic makes one delivery per matching
/// trace reported after it, for the topic's subscription.
#[test]
fn reported_traces_become_deliveries_of_the_rules_topic() {
    let server = TestServer::start();
    let pid = server.pid("main");
    let topics = format!("/v2/{pid}/notifications/topics");
    let a = server.post_json(&topics, &json!({"name": "alerts"}));
    assert_eq!(a.status, 201, "{}", a.text);
    let urn = a.body["topic_urn"].as_str().unwrap().to_owned();
    let a = server.post_json(
        &format!("{topics}/{urn}/subscriptions"),
        &json!({"protocol": "http", "endpoint": "http://127.0.0.1:9/hook"}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let a = create(
        &server,
        &pid,
        &json!({"notification_name": "creates", "operation_type": "customized", "topic_id": urn,
                "operations": [{"service_type": "ECS", "resource_type": "ecs", "trace_names": ["createServer"]}]}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["status"], "enabled");
    let now = now_ms();
    let mut other = trace(now);
    other["trace_name"] = "deleteServer".into();
    server.report("main", &[trace(now), other, trace(now)]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let a = server.get(&format!("/v2/{pid}/notifications/deliveries?limit=100"));
        let all = a.body["deliveries"].as_array().cloned().unwrap_or_default();
        if all.len() >= 2 {
            assert_eq!(all.len(), 2, "{}", a.text);
            assert!(
                all.iter().all(|d| d["notification_name"] == "creates"),
                "{}",
                a.text
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no deliveries: {}",
            a.text
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
