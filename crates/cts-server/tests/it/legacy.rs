//! The out-of-date query APIs, v1.0 and v2.0.

use serde_json::{json, Value};

use crate::support::*;

fn setup() -> TestServer {
    let server = TestServer::start();
    let now = now_ms();
    let mut traces = Vec::new();
    for (i, code) in ["200", "404", "503", "404"].iter().enumerate() {
        let (_, mut t) = trace_with_id(now - 1000 * (i as i64 + 1));
        t["code"] = json!(code);
        traces.push(t);
    }
    let mut data = trace(now - 500);
    data["trace_type"] = json!("ObsAPI");
    data["tracker_name"] = json!("bucket-a");
    traces.push(data);
    server.report("legacy", &traces);
    server
}

fn ids_of(page: &Value) -> Vec<String> {
    ids(page["traces"].as_array().unwrap())
}

#[test]
fn v1_and_v2_answer_like_v3() {
    let server = setup();
    let pid = server.pid("legacy");
    // Without the project's own createTracker trace (service CTS).
    let v3 = server.query("legacy", &[ecs()]);
    assert_eq!(v3["meta_data"]["count"], 4, "management traces only");
    for version in ["v1.0", "v2.0"] {
        let a = server.get(&format!("/{version}/{pid}/system/trace?service_type=ECS"));
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(ids_of(&a.body), ids_of(&v3), "{version}");
        assert_eq!(a.body["meta_data"], v3["meta_data"]);

        let a = server.get(&format!(
            "/{version}/{pid}/system/trace?trace_rating=warning&limit=1"
        ));
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["meta_data"]["count"], 1);
        assert!(a.body["meta_data"]["marker"].is_string());
        assert_eq!(a.body["traces"][0]["trace_rating"], "warning");

        let a = server.get(&format!("/{version}/{pid}/bucket-a/trace"));
        a.assert_error(400, "CTS.0300");
        assert!(a.text.contains("tracker_name"), "{}", a.text);

        let a = server.get(&format!("/{version}/{pid}/system/trace?limit=0"));
        a.assert_error(400, "CTS.0300");
        assert!(a.text.contains("limit"), "{}", a.text);
    }
}

#[test]
fn v2_speaks_trace_status() {
    let server = setup();
    let pid = server.pid("legacy");
    let a = server.get(&format!("/v2.0/{pid}/system/trace?trace_status=warning"));
    assert_eq!(a.status, 200, "{}", a.text);
    let got = a.body["traces"].as_array().unwrap();
    assert_eq!(got.len(), 2);
    for t in got {
        assert_eq!(t["trace_status"], "warning");
        assert_eq!(t["trace_rating"], "warning");
        assert!(t["user"].is_object());
        assert_eq!(t["user"]["name"], "alice");
    }
    let all = server.get(&format!("/v2.0/{pid}/system/trace"));
    for t in all.body["traces"].as_array().unwrap() {
        assert_eq!(t["trace_status"], t["trace_rating"]);
    }
    // v1.0 and v3 do not add it.
    let v1 = server.get(&format!("/v1.0/{pid}/system/trace"));
    assert!(v1.body["traces"][0].get("trace_status").is_none());

    let a = server.get(&format!("/v2.0/{pid}/system/trace?trace_status=fine"));
    a.assert_error(400, "CTS.0300");
    assert!(a.text.contains("trace_status"), "{}", a.text);
    // trace_id works there too.
    let id = server.query("legacy", &[])["traces"][0]["trace_id"]
        .as_str()
        .unwrap()
        .to_string();
    let a = server.get(&format!(
        "/v2.0/{pid}/system/trace?trace_id={id}&trace_status=incident"
    ));
    assert_eq!(ids_of(&a.body), vec![id]);
}
