//! Trackers against the real server: both API versions on one tracker,
//! what a tracker's status means for ingest, data trackers, tags, quotas,
//! the catalog calls, and every tracker change on record.

use serde_json::{json, Value};

use crate::support::*;

fn delete_json(server: &TestServer, path: &str, body: &Value) -> Answer {
    server.signer().send(
        server.client(),
        "DELETE",
        path,
        Some(("application/json", serde_json::to_vec(body).unwrap())),
    )
}

/// A project without a tracker: CTS not enabled yet.
fn bare_project(server: &TestServer, name: &str) -> String {
    let a = server.post_json(
        "/v3/projects",
        &json!({"project": {"name": name, "region": server.admin.region}}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a.body["project"]["id"].as_str().unwrap().to_string();
    let user = server.admin_user_id();
    let a = server.request(
        reqwest::Method::PUT,
        &format!("/v3/projects/{id}/users/{user}/roles/cts_admin"),
    );
    assert_eq!(a.status, 204, "{}", a.text);
    id
}

fn report_to(server: &TestServer, pid: &str, traces: &[Value]) -> Value {
    let a = server.post_json(&format!("/v3/{pid}/traces"), &batch(traces));
    assert_eq!(a.status, 201, "{}", a.text);
    a.body
}

fn list_ecs(server: &TestServer, pid: &str) -> Vec<Value> {
    let a = server.get(&format!("/v3/{pid}/traces?service_type=ECS&limit=200"));
    assert_eq!(a.status, 200, "{}", a.text);
    a.body["traces"].as_array().unwrap().clone()
}

fn trackers(server: &TestServer, pid: &str, query: &str) -> Vec<Value> {
    let a = server.get(&format!("/v3/{pid}/trackers{query}"));
    assert_eq!(a.status, 200, "{}", a.text);
    a.body["trackers"].as_array().unwrap().clone()
}

#[test]
fn management_tracker_decides_what_is_recorded() {
    let server = TestServer::start();
    let pid = bare_project(&server, "eu-de_status");
    let now = now_ms();

    // CTS not enabled: nothing recorded, and the answer says why.
    let answer = report_to(&server, &pid, &[trace(now - 3000)]);
    assert_eq!(answer["recorded"], 0, "{answer}");
    assert_eq!(answer["not_recorded"]["count"], 1);
    let why = answer["not_recorded"]["reasons"][0].as_str().unwrap();
    assert!(why.contains("management tracker"), "{why}");
    assert!(list_ecs(&server, &pid).is_empty());

    // Enabled with the v1.0 API: a transfer bucket that does not exist
    // (and is not to be created) is refused at once...
    let v1_create = || {
        server.post_json(
            &format!("/v1.0/{pid}/tracker"),
            &json!({"bucket_name": "cts-archive", "file_prefix_name": "audit",
                    "lts": {"is_lts_enabled": false, "log_group_name": "CTS", "log_topic_name": "system-trace"},
                    "log_file_validate": {"is_support_validate": false}}),
        )
    };
    let a = v1_create();
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.body["error_code"], "CTS.0211", "{}", a.text);
    assert!(a.text.contains("cts-archive"), "{}", a.text);
    let a = server.put_json(
        &format!("/v3/{pid}/tracker"),
        &json!({"tracker_type": "system", "tracker_name": "system",
                "obs_info": {"bucket_name": "cts-archive", "is_obs_created": false}}),
    );
    assert_eq!(a.body["error_code"], "CTS.0211", "{}", a.text);
    // ...and accepted once it exists.
    std::fs::create_dir_all(server.data_dir.join("obs/cts-archive")).unwrap();
    let a = v1_create();
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["tracker_name"], "system");
    let answer = report_to(&server, &pid, &[trace(now - 2000)]);
    assert_eq!(answer["recorded"], 1, "{answer}");
    assert!(answer.get("not_recorded").is_none(), "{answer}");

    // ...seen and disabled through v3: the same tracker.
    let v3 = trackers(&server, &pid, "?tracker_type=system");
    assert_eq!(v3.len(), 1);
    assert_eq!(v3[0]["obs_info"]["bucket_name"], "cts-archive");
    assert_eq!(v3[0]["obs_info"]["file_prefix_name"], "audit");
    let a = server.put_json(
        &format!("/v3/{pid}/tracker"),
        &json!({"tracker_type": "system", "tracker_name": "system", "status": "disabled"}),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    let v1 = server.get(&format!("/v1.0/{pid}/tracker?tracker_name=system"));
    assert_eq!(v1.status, 200, "{}", v1.text);
    assert_eq!(v1.body["status"], "disabled");
    assert_eq!(v1.body["bucket_name"], "cts-archive");
    let answer = report_to(&server, &pid, &[trace(now - 1000)]);
    assert_eq!(answer["recorded"], 0, "{answer}");

    // Enabled again with v1.0: recorded from then on.
    let a = server.put_json(&format!("/v1.0/{pid}/tracker/system"),
        &json!({"bucket_name": "cts-archive", "status": "enabled",
                "lts": {"is_lts_enabled": false, "log_group_name": "CTS", "log_topic_name": "system-trace"},
                "log_file_validate": {"is_support_validate": false}}),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    report_to(&server, &pid, &[trace(now - 500)]);
    let times: Vec<i64> = list_ecs(&server, &pid)
        .iter()
        .map(|t| t["time"].as_i64().unwrap())
        .collect();
    assert_eq!(times, vec![now - 500, now - 2000]);

    // Every change is on record in the project, disabling included.
    let a = server.get(&format!("/v3/{pid}/traces?service_type=CTS&limit=50"));
    let names: Vec<&str> = a.body["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["updateTracker", "updateTracker", "createTracker"]
    );
    let t = &a.body["traces"][1];
    assert_eq!(t["resource_type"], "tracker");
    assert_eq!(t["resource_name"], "system");
    assert_eq!(t["user"]["name"], server.admin.user_name);
    assert!(t["request"].as_str().unwrap().contains("disabled"));

    // Deleting it (v1.0) stops recording, and is recorded.
    let a = server.request(
        reqwest::Method::DELETE,
        &format!("/v1.0/{pid}/tracker?tracker_name=system"),
    );
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(report_to(&server, &pid, &[trace(now)])["recorded"], 0);
    let a = server.get(&format!(
        "/v3/{pid}/traces?service_type=CTS&trace_name=deleteTracker"
    ));
    assert_eq!(a.body["meta_data"]["count"], 1, "{}", a.text);
}

#[test]
fn data_trackers_record_their_bucket_and_operations() {
    let server = TestServer::start();
    let pid = server.pid("data");
    let create = |name: &str, bucket: &str, events: &[&str]| {
        server.post_json(
            &format!("/v3/{pid}/tracker"),
            &json!({"tracker_type": "data", "tracker_name": name,
                    "data_bucket": {"data_bucket_name": bucket, "data_event": events}}),
        )
    };
    let a = create("reads", "photos", &["READ"]);
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["tracker_type"], "data");
    assert_eq!(a.body["data_bucket"]["data_bucket_name"], "photos");
    assert_eq!(create("9writes", "photos", &["WRITE"]).status, 201);
    // One tracker per bucket and operation type.
    create("again", "photos", &["READ"]).assert_error(400, "CTS.0209");
    create("reads", "other", &["READ"]).assert_error(400, "CTS.0208");
    create("bad name!", "other", &["READ"]).assert_error(400, "CTS.0203");

    let now = now_ms();
    let data = |tracker: &str, object: &str, read: bool| {
        let (id, mut t) = trace_with_id(now - 1000);
        t["trace_type"] = json!("ObsAPI");
        t["service_type"] = json!("OBS");
        t["tracker_name"] = json!(tracker);
        t["resource_name"] = json!(object);
        t["read_only"] = json!(read);
        (id, t)
    };
    let read = data("reads", "photos/cat.jpg", true);
    let write = data("9writes", "photos/dog.jpg", false);
    let wrong_op = data("reads", "photos/cat.jpg", false);
    let wrong_bucket = data("reads", "videos/x.mp4", true);
    let unknown = data("nobody", "photos/cat.jpg", true);
    let all = [&read, &write, &wrong_op, &wrong_bucket, &unknown];
    let answer = report_to(&server, &pid, &all.map(|(_, t)| t.clone()));
    assert_eq!(answer["recorded"], 2, "{answer}");
    assert_eq!(answer["not_recorded"]["count"], 3, "{answer}");
    // In request order, null where a trace was not recorded.
    let recorded: Vec<bool> = answer["trace_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| !id.is_null())
        .collect();
    assert_eq!(recorded, vec![true, true, false, false, false]);
    assert_eq!(
        answer["not_recorded"]["reasons"].as_array().unwrap().len(),
        2
    );

    let by_tracker = |name: &str| {
        let a = server.get(&format!(
            "/v3/{pid}/traces?trace_type=data&tracker_name={name}"
        ));
        assert_eq!(a.status, 200, "{}", a.text);
        ids(a.body["traces"].as_array().unwrap())
    };
    assert_eq!(by_tracker("reads"), vec![read.0.clone()]);
    assert_eq!(by_tracker("9writes"), vec![write.0.clone()]);

    // The tracked bucket is fixed; a disabled data tracker records nothing.
    let update = |body: Value| server.put_json(&format!("/v3/{pid}/tracker"), &body);
    update(json!({"tracker_type": "data", "tracker_name": "reads",
                  "data_bucket": {"data_bucket_name": "videos"}}))
    .assert_error(400, "CTS.0212");
    let a = update(json!({"tracker_type": "data", "tracker_name": "reads", "status": "disabled"}));
    assert_eq!(a.status, 200, "{}", a.text);
    let again = data("reads", "photos/cat.jpg", true);
    assert_eq!(report_to(&server, &pid, &[again.1])["recorded"], 0);

    // Deleting without a name removes every data tracker, not the system one.
    let a = server.request(
        reqwest::Method::DELETE,
        &format!("/v3/{pid}/trackers?tracker_type=data"),
    );
    assert_eq!(a.status, 204, "{}", a.text);
    let left = trackers(&server, &pid, "");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["tracker_name"], "system");
    server
        .request(
            reqwest::Method::DELETE,
            &format!("/v3/{pid}/trackers?tracker_name=reads&tracker_type=data"),
        )
        .assert_error(404, "CTS.0214");
}

#[test]
fn tracker_rules_answer_their_codes() {
    let server = TestServer::start();
    let pid = server.admin.project_id.clone();
    let path = format!("/v3/{pid}/tracker");
    let cases = [
        (
            json!({"tracker_type": "system", "tracker_name": "system"}),
            "CTS.0201",
        ),
        (
            json!({"tracker_type": "system", "tracker_name": "other"}),
            "CTS.0204",
        ),
        (
            json!({"tracker_type": "data", "tracker_name": "d1",
                   "data_bucket": {"data_bucket_name": "bkt-one", "data_event": ["DELETE"]}}),
            "CTS.0225",
        ),
        (
            json!({"tracker_type": "data", "tracker_name": "d1",
                   "data_bucket": {"data_bucket_name": "bkt-one"}}),
            "CTS.0219",
        ),
        (
            json!({"tracker_type": "data", "tracker_name": "d1"}),
            "CTS.0210",
        ),
        (
            json!({"tracker_type": "data", "tracker_name": "d1",
                   "obs_info": {"bucket_name": "Bad_Bucket"},
                   "data_bucket": {"data_bucket_name": "bkt-one", "data_event": ["READ"]}}),
            "CTS.0231",
        ),
        (
            json!({"tracker_type": "data", "tracker_name": "d1",
                   "obs_info": {"bucket_name": "archive", "file_prefix_name": "a/b"},
                   "data_bucket": {"data_bucket_name": "bkt-one", "data_event": ["READ"]}}),
            "CTS.0218",
        ),
        (
            json!({"tracker_type": "nope", "tracker_name": "x"}),
            "CTS.0202",
        ),
        (
            json!({"tracker_type": "system",
                   "data_bucket": {"data_bucket_name": "bkt-one", "data_event": ["READ"]}}),
            "CTS.0206",
        ),
        (
            json!({"tracker_type": "data", "tracker_name": "system",
                   "data_bucket": {"data_bucket_name": "bkt-one", "data_event": ["READ"]}}),
            "CTS.0207",
        ),
        (json!([1, 2]), "CTS.0003"),
    ];
    for (body, code) in cases {
        let a = server.post_json(&path, &body);
        a.assert_error(400, code);
        assert!(!a.body["error_msg"].as_str().unwrap().is_empty());
    }
    // Encryption needs a key, and the key must be known to the server.
    let update = json!({"tracker_type": "system", "tracker_name": "system",
                        "is_support_trace_files_encryption": true});
    server
        .put_json(&path, &update)
        .assert_error(400, "CTS.0221");
    let mut with_key = update.clone();
    with_key["kms_id"] = json!("no-such-key");
    server
        .put_json(&path, &with_key)
        .assert_error(400, "CTS.0222");
    let bad_status =
        json!({"tracker_type": "system", "tracker_name": "system", "status": "paused"});
    server
        .put_json(&path, &bad_status)
        .assert_error(400, "CTS.0205");
    server
        .get(&format!("/v3/{pid}/trackers?tracker_type=sideways"))
        .assert_error(400, "CTS.0300");
    // Nothing of it changed the tracker.
    let t = &trackers(&server, &pid, "")[0];
    assert_eq!(t["status"], "enabled");
    assert_eq!(t["is_support_trace_files_encryption"], false);
}

#[test]
fn quotas_tags_and_the_catalog() {
    let root = tempfile::tempdir().unwrap();
    let mut server = TestServer::builder()
        .root(root.path())
        .env("CTS_QUOTAS_DATA_TRACKERS", "2")
        .start();
    let pid = server.admin.project_id.clone();
    let quota = |kind: &str| {
        let a = server.get(&format!("/v3/{pid}/quotas"));
        assert_eq!(a.status, 200, "{}", a.text);
        a.body["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["type"] == kind)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        quota("tracker"),
        json!({"type": "tracker", "used": 1, "quota": 3})
    );
    assert_eq!(quota("notification")["used"], 0);
    for (i, bucket) in ["b-one", "b-two", "b-three"].iter().enumerate() {
        let a = server.post_json(
            &format!("/v3/{pid}/tracker"),
            &json!({"tracker_type": "data", "tracker_name": format!("d{i}"),
                    "data_bucket": {"data_bucket_name": bucket, "data_event": ["WRITE"]}}),
        );
        if i < 2 {
            assert_eq!(a.status, 201, "{}", a.text);
        } else {
            a.assert_error(400, "CTS.0200");
        }
    }
    assert_eq!(quota("tracker")["used"], 3);

    // Tags on a tracker.
    let id = trackers(&server, &pid, "?tracker_name=d0&tracker_type=data")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tags = format!("/v3/{pid}/cts-tracker/{id}/tags");
    let a = server.post_json(
        &format!("{tags}/create"),
        &json!({"tags": [{"key": "team", "value": "audit"}, {"key": "env", "value": "prod"}]}),
    );
    assert_eq!(a.status, 204, "{}", a.text);
    let shown = &trackers(&server, &pid, "?tracker_name=d0&tracker_type=data")[0]["tags"];
    assert_eq!(shown.as_array().unwrap().len(), 2, "{shown}");
    let a = delete_json(
        &server,
        &format!("{tags}/delete"),
        &json!({"tags": [{"key": "env"}]}),
    );
    assert_eq!(a.status, 204, "{}", a.text);
    let shown = &trackers(&server, &pid, "?tracker_name=d0&tracker_type=data")[0]["tags"];
    assert_eq!(shown, &json!([{"key": "team", "value": "audit"}]));
    server
        .post_json(
            &format!("{tags}/create"),
            &json!({"tags": [{"key": "a=b", "value": "x"}]}),
        )
        .assert_error(400, "CTS.0003");
    server
        .post_json(
            &format!("/v3/{pid}/cts-vault/{id}/tags/create"),
            &json!({"tags": [{"key": "k", "value": "v"}]}),
        )
        .assert_error(400, "CTS.0003");

    // The catalog: seeded services, and what recorded traces taught it.
    let mut t = trace(now_ms() - 1000);
    t["service_type"] = json!("KAFKA");
    t["resource_type"] = json!("instance");
    t["trace_name"] = json!("createInstance");
    t["user"]["name"] = json!("carol");
    report_to(&server, &pid, &[t]);
    let a = server.get(&format!("/v3/{pid}/operations?service_type=KAFKA"));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.body["operations"],
        json!([{"service_type": "KAFKA", "resource_type": "instance", "operation_list": ["createInstance"]}])
    );
    let a = server.get(&format!(
        "/v3/{pid}/operations?service_type=CTS&resource_type=tracker"
    ));
    let ops = a.body["operations"][0]["operation_list"]
        .as_array()
        .unwrap();
    assert!(ops.contains(&json!("createTracker")), "{}", a.text);
    server
        .get(&format!("/v3/{pid}/operations?resource_type=tracker"))
        .assert_error(400, "CTS.0300");
    let domain = server.admin.domain_id.clone();
    let a = server.get(&format!("/v3/{domain}/resources"));
    assert_eq!(a.status, 200, "{}", a.text);
    let kafka = a.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service_type"] == "KAFKA")
        .cloned();
    assert_eq!(
        kafka,
        Some(json!({"service_type": "KAFKA", "resource": ["instance"]}))
    );
    // Another domain's id is refused.
    server
        .get(&format!("/v3/{pid}/resources"))
        .assert_error(403, "CTS.0002");
    let a = server.get(&format!("/v3/{pid}/user-resources"));
    let users: Vec<&str> = a.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert!(users.contains(&"carol"), "{users:?}");

    // Learned entries survive a restart.
    server.terminate();
    let again = TestServer::builder().root(root.path()).start();
    let a = again.get(&format!("/v3/{pid}/operations?service_type=KAFKA"));
    assert_eq!(
        a.body["operations"][0]["operation_list"],
        json!(["createInstance"])
    );
}

#[test]
fn viewers_read_trackers_but_cannot_change_them() {
    let server = TestServer::start();
    let pid = server.admin.project_id.clone();
    let a = server.post_json(
        "/v3/users",
        &json!({"user": {"name": "watcher", "password": "Watcher-pass-1"}}),
    );
    let uid = a.body["user"]["id"].as_str().unwrap().to_string();
    let a = server.request(
        reqwest::Method::PUT,
        &format!("/v3/projects/{pid}/users/{uid}/roles/cts_viewer"),
    );
    assert_eq!(a.status, 204);
    let a = server.post_json(
        "/v3.0/OS-CREDENTIAL/credentials",
        &json!({"credential": {"user_id": uid}}),
    );
    let viewer = server.with(Cred::Key {
        ak: a.body["credential"]["access"].as_str().unwrap().into(),
        sk: a.body["credential"]["secret"].as_str().unwrap().into(),
    });
    let c = server.client();
    assert_eq!(viewer.get(c, &format!("/v3/{pid}/trackers")).status, 200);
    assert_eq!(viewer.get(c, &format!("/v3/{pid}/quotas")).status, 200);
    let body = json!({"tracker_type": "system", "tracker_name": "system", "status": "disabled"});
    viewer
        .send(
            c,
            "PUT",
            &format!("/v3/{pid}/tracker"),
            Some(("application/json", serde_json::to_vec(&body).unwrap())),
        )
        .assert_error(403, "CTS.0013");
    viewer
        .send(c, "DELETE", &format!("/v1.0/{pid}/tracker"), None)
        .assert_error(403, "CTS.0013");
}
