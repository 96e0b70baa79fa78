//! Reporting traces: validation, all-or-nothing batches, server-filled
//! fields, round trips and idempotent retries.

use serde_json::{json, Value};

use crate::support::*;

/// One invalid trace: how to break a good one, and the field it names.
struct Case {
    name: &'static str,
    breaks: fn(&mut Value, i64),
    field: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "missing mandatory field",
        breaks: |t, _| {
            t.as_object_mut().unwrap().remove("service_type");
        },
        field: "service_type",
    },
    Case {
        name: "missing user name",
        breaks: |t, _| {
            t["user"].as_object_mut().unwrap().remove("name");
        },
        field: "user.name",
    },
    Case {
        name: "bad trace_name",
        breaks: |t, _| t["trace_name"] = json!("1create server"),
        field: "trace_name",
    },
    Case {
        name: "lowercase service_type",
        breaks: |t, _| t["service_type"] = json!("ecs"),
        field: "service_type",
    },
    Case {
        name: "bad trace_type",
        breaks: |t, _| t["trace_type"] = json!("Telepathy"),
        field: "trace_type",
    },
    Case {
        name: "bad rating",
        breaks: |t, _| t["trace_rating"] = json!("fine"),
        field: "trace_rating",
    },
    Case {
        name: "project mismatch",
        breaks: |t, _| t["project_id"] = json!("someone-else"),
        field: "project_id",
    },
    Case {
        name: "unknown field",
        breaks: |t, _| t["colour"] = json!("red"),
        field: "colour",
    },
    Case {
        name: "wrong JSON type",
        breaks: |t, _| t["time"] = json!("yesterday"),
        field: "time",
    },
    Case {
        name: "future time",
        breaks: |t, now| t["time"] = json!(now + HOUR),
        field: "time",
    },
    Case {
        name: "too-old time",
        breaks: |t, now| t["time"] = json!(now - 8 * 24 * HOUR),
        field: "time",
    },
    Case {
        name: "data trace without tracker_name",
        breaks: |t, _| t["trace_type"] = json!("ObsSDK"),
        field: "tracker_name",
    },
    Case {
        name: "bad source_ip",
        breaks: |t, _| t["source_ip"] = json!("not-an-ip"),
        field: "source_ip",
    },
    Case {
        name: "missing time",
        breaks: |t, _| {
            t.as_object_mut().unwrap().remove("time");
        },
        field: "time",
    },
    Case {
        name: "missing user",
        breaks: |t, _| {
            t.as_object_mut().unwrap().remove("user");
        },
        field: "user",
    },
    Case {
        name: "missing user id",
        breaks: |t, _| {
            t["user"].as_object_mut().unwrap().remove("id");
        },
        field: "user.id",
    },
    Case {
        name: "missing user domain",
        breaks: |t, _| {
            t["user"].as_object_mut().unwrap().remove("domain");
        },
        field: "user.domain",
    },
    Case {
        name: "missing resource_type",
        breaks: |t, _| {
            t.as_object_mut().unwrap().remove("resource_type");
        },
        field: "resource_type",
    },
    Case {
        name: "missing trace_type",
        breaks: |t, _| {
            t.as_object_mut().unwrap().remove("trace_type");
        },
        field: "trace_type",
    },
    Case {
        name: "trace_name of 65 characters",
        breaks: |t, _| t["trace_name"] = json!(format!("a{}", "b".repeat(64))),
        field: "trace_name",
    },
    Case {
        name: "supplied trace_id not a UUID",
        breaks: |t, _| t["trace_id"] = json!("trace-1"),
        field: "trace_id",
    },
    Case {
        name: "management trace of another tracker",
        breaks: |t, _| t["tracker_name"] = json!("audit"),
        field: "tracker_name",
    },
    Case {
        name: "data trace of the system tracker",
        breaks: |t, _| {
            t["trace_type"] = json!("ObsAPI");
            t["tracker_name"] = json!("system");
        },
        field: "tracker_name",
    },
    Case {
        name: "principal_is_root_user not true or false",
        breaks: |t, _| t["user"]["principal_is_root_user"] = json!("yes"),
        field: "user.principal_is_root_user",
    },
    Case {
        name: "invoked_by not an array of strings",
        breaks: |t, _| t["user"]["invoked_by"] = json!([1, 2]),
        field: "user.invoked_by",
    },
    Case {
        name: "unknown field of the user",
        breaks: |t, _| t["user"]["colour"] = json!("red"),
        field: "user.colour",
    },
    Case {
        name: "control character",
        breaks: |t, _| t["resource_name"] = json!("vm\u{7}1"),
        field: "resource_name",
    },
    Case {
        name: "resource_id over 256 characters",
        breaks: |t, _| t["resource_id"] = json!("r".repeat(257)),
        field: "resource_id",
    },
    Case {
        name: "code over 64 characters",
        breaks: |t, _| t["code"] = json!("5".repeat(65)),
        field: "code",
    },
    Case {
        name: "negative content_length",
        breaks: |t, _| t["content_length"] = json!(-1),
        field: "content_length",
    },
    Case {
        name: "negative total_time",
        breaks: |t, _| t["total_time"] = json!(-5),
        field: "total_time",
    },
];

#[test]
fn every_rule_refuses_the_whole_batch() {
    let server = TestServer::start();
    let now = now_ms();
    for (n, case) in CASES.iter().enumerate() {
        let project = format!("rules-{n}");
        let (id0, good0) = trace_with_id(now - 1000);
        let (id2, good2) = trace_with_id(now - 1000);
        let (id1, mut bad) = trace_with_id(now - 1000);
        (case.breaks)(&mut bad, now);
        let a = server.post_traces(&project, &batch(&[good0, bad, good2]));
        a.assert_error(400, "CTS.0003");
        let errors = a.field_errors();
        assert!(
            errors.contains(&(Some(1), case.field.to_string())),
            "{}: {errors:?}",
            case.name
        );
        assert!(
            errors.iter().all(|(i, _)| *i == Some(1)),
            "{}: only trace 1 is wrong: {errors:?}",
            case.name
        );
        let msg = a.body["error_msg"].as_str().unwrap();
        assert!(
            msg.contains(&format!("traces[1].{}", case.field)),
            "{}: {msg}",
            case.name
        );
        // All or nothing: the good traces of the batch were not stored.
        for id in [id0, id1, id2] {
            assert!(server.by_id(&project, &id).is_empty(), "{}", case.name);
        }
    }
}

#[test]
fn every_error_of_a_batch_is_listed() {
    let server = TestServer::start();
    let now = now_ms();
    let mut a = trace(now);
    a["trace_name"] = json!("");
    a["service_type"] = json!("ecs");
    let mut b = trace(now);
    b["trace_type"] = json!("Nope");
    let ans = server.post_traces("p", &batch(&[trace(now), a, trace(now), b]));
    ans.assert_error(400, "CTS.0003");
    let errors = ans.field_errors();
    for want in [
        (Some(1), "trace_name"),
        (Some(1), "service_type"),
        (Some(3), "trace_type"),
    ] {
        assert!(
            errors.contains(&(want.0, want.1.to_string())),
            "{want:?} in {errors:?}"
        );
    }
    assert_eq!(errors.len(), 3, "{errors:?}");
}

#[test]
fn refused_bodies() {
    let server = TestServer::builder()
        .env("CTS_LIMITS_MAX_TRACES_PER_REQUEST", "5")
        .start();
    let now = now_ms();
    let path = &format!("/v3/{}/traces", server.admin.project_id);

    let six: Vec<Value> = (0..6).map(|_| trace(now)).collect();
    let a = server.post_traces("p", &batch(&six));
    a.assert_error(400, "CTS.0003");
    assert_eq!(a.field_errors(), vec![(None, "traces".to_string())]);
    let five: Vec<Value> = (0..5).map(|_| trace(now)).collect();
    server.report("p", &five);

    for (body, what) in [
        (&b"{\"traces\": [{\"time\": 1"[..], "malformed JSON"),
        (b"", "empty body"),
        (b"[]", "not an object"),
        (b"{\"traces\": []}", "no trace"),
        (b"{\"traces\": 5}", "traces not an array"),
    ] {
        let a = server.post_raw(path, "application/json", body.to_vec());
        a.assert_error(400, "CTS.0003");
        assert!(!a.field_errors().is_empty(), "{what}");
    }

    let a = server.post_raw(path, "text/plain", b"{\"traces\": []}".to_vec());
    a.assert_error(400, "CTS.0003");
    assert_eq!(a.field_errors(), vec![(None, "Content-Type".to_string())]);

    // One byte over 5 MiB, but otherwise a body we would take.
    let mut big = serde_json::to_vec(&batch(&[trace(now)])).unwrap();
    let pad = 5 * 1024 * 1024 + 1 - big.len();
    big.splice(1..1, std::iter::repeat_n(b' ', pad));
    assert_eq!(big.len(), 5 * 1024 * 1024 + 1);
    let a = server.post_raw(path, "application/json", big.clone());
    a.assert_error(413, "CTS.9001");
    // Exactly the limit is fine.
    big.remove(1);
    let a = server.post_raw(path, "application/json", big);
    assert_eq!(a.status, 201, "{}", a.text);

    // Ids no project can have are refused before anything is read.
    for bad in ["bad.project".to_string(), "p".repeat(65)] {
        let a = server.post_json(&format!("/v3/{bad}/traces"), &batch(&[trace(now)]));
        a.assert_error(403, "CTS.0002");
    }
}

#[test]
fn server_fills_its_fields() {
    let server = TestServer::start();
    let before = now_ms();
    let mut traces = Vec::new();
    let codes = codes();
    for (code, _) in &codes {
        let mut t = trace(before - 1000);
        t["code"] = code.clone();
        traces.push(t);
    }
    let answer = server.report("fill", &traces);
    let after = now_ms();
    assert_eq!(answer["recorded"], codes.len());
    assert_eq!(answer["duplicates"], 0);
    let ids = answer["trace_ids"].as_array().unwrap();
    assert_eq!(ids.len(), codes.len());
    for (id, (code, rating)) in ids.iter().zip(&codes) {
        let id = id.as_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        let found = server.by_id("fill", id);
        assert_eq!(found.len(), 1);
        let t = &found[0];
        assert_eq!(t["trace_rating"], *rating, "code {code}");
        // Always a string, as the trace structure declares.
        let text = code
            .as_str()
            .map_or_else(|| code.to_string(), str::to_string);
        assert_eq!(t["code"], text);
        assert_eq!(t["tracker_name"], "system");
        assert_eq!(t["project_id"], server.pid("fill"));
        assert_eq!(t["domain_id"], "d-1");
        assert_eq!(t["event_type"], "system");
        assert_eq!(t["operation_id"], "createServer");
        assert_eq!(t["enterprise_project_id"], "0");
        let record_time = t["record_time"].as_i64().unwrap();
        assert!((before..=after).contains(&record_time), "{record_time}");
    }

    // A rating is needed when code is no HTTP status.
    let mut t = trace(before);
    t["code"] = json!("VPC.0514");
    let a = server.post_traces("fill", &batch(&[t]));
    a.assert_error(400, "CTS.0003");
    assert_eq!(
        a.field_errors(),
        vec![(Some(0), "trace_rating".to_string())]
    );
}

/// `code` values (string or integer) and the rating derived from them.
fn codes() -> Vec<(Value, &'static str)> {
    vec![
        (json!("201"), "normal"),
        (json!("302"), "normal"),
        (json!("404"), "warning"),
        (json!(429), "warning"),
        (json!("503"), "incident"),
        (json!(500), "incident"),
    ]
}

#[test]
fn every_field_round_trips() {
    let server = TestServer::start();
    let now = now_ms();
    let id = uuid();
    let sent = json!({
        "trace_id": id,
        "time": now - 5000,
        "user": {
            "id": "u-1",
            "name": "alice",
            "domain": {"id": "d-1", "name": "acme"},
            "user_name": "alice@acme",
            "account_id": "acc-1",
            "access_key_id": "AKIAEXAMPLE",
            "principal_urn": "iam::acc-1:user:alice",
            "principal_id": "pid-1",
            "principal_is_root_user": "false",
            "type": "User",
            "invoked_by": ["service.AS", "service.FG"],
            "session_context": {
                "attributes": {"created_at": "2024-05-01T10:00:00Z", "mfa_authenticated": "true"}
            },
            "OriginUser": "bob"
        },
        "request": {"server": {"name": "web-1", "flavor": "s3.large", "tags": [1, 2.5, null]}},
        "response": "{\"status\": \"accepted\"}",
        "code": "202",
        "service_type": "ECS",
        "event_type": "global",
        "project_id": server.pid("round"),
        "resource_type": "ecs",
        "resource_account_id": "acc-2",
        "read_only": false,
        "tracker_name": "system",
        "operation_id": "ecs:servers:create",
        "resource_name": "web-1",
        "resource_id": "srv-1",
        "source_ip": "2001:db8::7",
        "domain_id": "d-1",
        "trace_name": "createServer",
        "trace_rating": "warning",
        "trace_type": "ConsoleAction",
        "api_version": "v2.1",
        "message": {"note": "ünïcode ✓", "n": 1},
        "request_id": "req-1",
        "location_info": "az1",
        "endpoint": "https://ecs.example.com",
        "resource_url": "/servers/srv-1",
        "enterprise_project_id": "ep-1",
        "user_agent": "curl/8.0",
        "content_length": 123,
        "total_time": 45,
        "record_time": 1
    });
    let before = now_ms();
    let answer = server.report("round", std::slice::from_ref(&sent));
    let after = now_ms();
    assert_eq!(answer["trace_ids"], json!([id]));

    let mut got = server.by_id("round", &id).remove(0);
    // record_time belongs to the server.
    let record_time = got["record_time"].as_i64().unwrap();
    assert!((before..=after).contains(&record_time));
    got.as_object_mut().unwrap().remove("record_time");
    let mut want = sent.clone();
    want.as_object_mut().unwrap().remove("record_time");
    // An object in `message` (or request/response) is kept as its JSON
    // text: the trace structure declares a string.
    want["message"] = json!(sent["message"].to_string());
    want["request"] = json!(sent["request"].to_string());
    assert_eq!(got, want);

    // The same through a listing.
    let page = server.query("round", &[ecs()]);
    let mut listed = page["traces"][0].clone();
    listed.as_object_mut().unwrap().remove("record_time");
    assert_eq!(listed, want);
}

#[test]
fn retried_batches_are_stored_once() {
    let server = TestServer::start();
    let now = now_ms();
    let traces: Vec<(String, Value)> = (0..3).map(|i| trace_with_id(now - 100 * i)).collect();
    let body: Vec<Value> = traces.iter().map(|(_, t)| t.clone()).collect();
    let want_ids: Vec<&str> = traces.iter().map(|(id, _)| id.as_str()).collect();
    for attempt in 0..3 {
        let a = server.report("retry", &body);
        let (recorded, duplicates) = if attempt == 0 { (3, 0) } else { (0, 3) };
        assert_eq!(a["recorded"], recorded, "attempt {attempt}");
        assert_eq!(a["duplicates"], duplicates, "attempt {attempt}");
        assert_eq!(a["trace_ids"], json!(want_ids));
    }
    for (id, _) in &traces {
        assert_eq!(server.by_id("retry", id).len(), 1);
    }
    assert_eq!(server.query("retry", &[ecs()])["meta_data"]["count"], 3);

    // The same trace_id in another project is another trace.
    let a = server.report("retry-other", &body[..1]);
    assert_eq!(a["recorded"], 1);

    // A batch mixing new and known traces stores only the new ones.
    let (new_id, new) = trace_with_id(now);
    let a = server.report("retry", &[body[0].clone(), new]);
    assert_eq!(
        (a["recorded"].as_u64(), a["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(server.by_id("retry", &new_id).len(), 1);
}

#[test]
fn concurrent_retries_are_stored_once() {
    let server = TestServer::start();
    let now = now_ms();
    for round in 0..5 {
        let traces: Vec<(String, Value)> = (0..50).map(|i| trace_with_id(now - i)).collect();
        let body: Vec<Value> = traces.iter().map(|(_, t)| t.clone()).collect();
        // The same batch from four reporters at once: they race in the writer.
        let recorded: u64 = std::thread::scope(|s| {
            let senders: Vec<_> = (0..4)
                .map(|_| s.spawn(|| server.report("race", &body)["recorded"].as_u64().unwrap()))
                .collect();
            senders.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(recorded, 50, "round {round}");
        for (id, _) in &traces {
            assert_eq!(server.by_id("race", id).len(), 1, "round {round}");
        }
    }
}

#[test]
fn system_actions_without_user_or_source_ip_are_recorded() {
    let server = TestServer::start();
    let mut t = trace(now_ms() - 1000);
    t["trace_type"] = json!("SystemAction");
    t["domain_id"] = json!("d-1");
    let o = t.as_object_mut().unwrap();
    o.remove("user");
    o.remove("source_ip");
    let answer = server.report("sys", &[t]);
    assert_eq!(answer["recorded"], 1);
    let id = answer["trace_ids"][0].as_str().unwrap();
    let found = server.by_id("sys", id);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["trace_type"], "SystemAction");
    assert_eq!(found[0]["source_ip"], "");
}
