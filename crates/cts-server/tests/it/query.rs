//! ListTraces filters, the time window and parameter checks.

use serde_json::{json, Value};

use crate::support::*;

fn rating(code: &str) -> &'static str {
    match code.as_bytes()[0] {
        b'2' | b'3' => "normal",
        b'4' => "warning",
        _ => "incident",
    }
}

/// A mixed population of management traces plus some data traces, each with
/// its own id and time.
fn population(base: i64) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..90usize {
        let mut t = trace(base - i as i64 * 10);
        t["trace_id"] = json!(uuid());
        t["service_type"] = json!(["ECS", "VPC", "EVS"][i % 3]);
        t["user"]["name"] = json!(["alice", "bob"][(i / 3) % 2]);
        t["resource_id"] = json!(format!("r{}", i % 5));
        t["resource_name"] = json!(format!("name{}", i % 4));
        t["resource_type"] = json!(["server", "eip"][(i / 2) % 2]);
        t["trace_name"] = json!(["createServer", "deleteServer", "updateServer"][(i / 2) % 3]);
        t["code"] = json!(["200", "404", "503"][(i / 4) % 3]);
        if i % 7 != 0 {
            t["user"]["access_key_id"] = json!(format!("AK{}", i % 3));
        }
        t["enterprise_project_id"] = json!(["0", "ep-a"][(i / 5) % 2]);
        out.push(t);
    }
    for i in 0..12usize {
        let mut t = trace(base - 5 - i as i64 * 10);
        t["trace_id"] = json!(uuid());
        t["trace_type"] = json!(["ObsAPI", "ObsSDK"][i % 2]);
        t["service_type"] = json!("OBS");
        t["tracker_name"] = json!(["bucket-a", "bucket-b"][(i / 2) % 2]);
        // Each data tracker records the bucket of its name.
        t["resource_name"] = t["tracker_name"].clone();
        t["code"] = json!(["200", "404"][i % 2]);
        out.push(t);
    }
    out
}

/// The value a query parameter matches in a reported trace.
fn value_of<'a>(t: &'a Value, param: &str) -> Option<&'a str> {
    match param {
        "user" => t["user"]["name"].as_str(),
        "access_key_id" => t["user"]["access_key_id"].as_str(),
        "trace_rating" => Some(rating(t["code"].as_str().unwrap())),
        "tracker_name" => Some(t["tracker_name"].as_str().unwrap_or("system")),
        "trace_type" => Some(if t["trace_type"].as_str().unwrap().starts_with("Obs") {
            "data"
        } else {
            "system"
        }),
        p => t[p].as_str(),
    }
}

fn expected(pop: &[Value], filters: &[(&str, &str)]) -> Vec<String> {
    let mut with_kind = filters.to_vec();
    if !filters.iter().any(|(p, _)| *p == "trace_type") {
        with_kind.push(("trace_type", "system"));
    }
    let mut hits: Vec<&Value> = pop
        .iter()
        .filter(|t| with_kind.iter().all(|(p, v)| value_of(t, p) == Some(*v)))
        .collect();
    hits.sort_by_key(|t| std::cmp::Reverse((t["time"].as_i64(), t["trace_id"].as_str())));
    hits.iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn filters_alone_and_combined() {
    let server = TestServer::start();
    let base = now_ms() - 10 * MINUTE;
    let pop = population(base);
    for project in ["filters", "filters-other"] {
        for bucket in ["bucket-a", "bucket-b"] {
            server.data_tracker(project, bucket);
        }
    }
    server.report("filters", &pop);
    // Another project's identical traces must never show.
    let mut other = pop.clone();
    for t in &mut other {
        t["trace_id"] = json!(uuid());
    }
    server.report("filters-other", &other);

    let window = [
        ("from", (base - HOUR).to_string()),
        ("to", (base + 1).to_string()),
        ("limit", "200".to_string()),
    ];
    let cases: &[&[(&str, &str)]] = &[
        &[],
        &[("service_type", "VPC")],
        &[("user", "bob")],
        &[("resource_id", "r3")],
        &[("resource_name", "name2")],
        &[("resource_type", "eip")],
        &[("trace_name", "deleteServer")],
        &[("trace_rating", "warning")],
        &[("trace_rating", "incident")],
        &[("access_key_id", "AK1")],
        &[("enterprise_project_id", "ep-a")],
        &[("trace_type", "system")],
        &[("trace_type", "system"), ("tracker_name", "system")],
        &[("trace_type", "data")],
        &[("trace_type", "data"), ("tracker_name", "bucket-a")],
        &[
            ("trace_type", "data"),
            ("tracker_name", "bucket-b"),
            ("trace_rating", "warning"),
        ],
        &[("service_type", "ECS"), ("trace_rating", "normal")],
        &[
            ("user", "alice"),
            ("resource_type", "server"),
            ("trace_name", "createServer"),
        ],
        &[
            ("access_key_id", "AK2"),
            ("enterprise_project_id", "0"),
            ("service_type", "EVS"),
        ],
        &[("resource_id", "r1"), ("resource_name", "name1")],
        // Matches nothing.
        &[("service_type", "VPC"), ("user", "nobody")],
    ];
    for filters in cases {
        let want = expected(&pop, filters);
        if !filters.contains(&("user", "nobody")) {
            assert!(!want.is_empty(), "a case that tests nothing: {filters:?}");
        }
        let mut params = window.to_vec();
        params.extend(filters.iter().map(|(p, v)| (*p, v.to_string())));
        let page = server.query("filters", &params);
        let got = ids(page["traces"].as_array().unwrap());
        assert_eq!(got, want, "{filters:?}");
        assert_eq!(page["meta_data"]["count"], want.len());
        assert_eq!(page["meta_data"]["marker"], Value::Null, "{filters:?}");
    }

    // trace_id overrides every other criterion, the time window included.
    let vpc = pop.iter().find(|t| t["service_type"] == "VPC").unwrap();
    let id = vpc["trace_id"].as_str().unwrap();
    let page = server.query(
        "filters",
        &[
            ("trace_id", id.to_string()),
            ("service_type", "ECS".into()),
            ("user", "nobody".into()),
            ("from", "1".into()),
            ("to", "2".into()),
        ],
    );
    assert_eq!(
        ids(page["traces"].as_array().unwrap()),
        vec![id.to_string()]
    );
    // But never across projects.
    assert!(server.by_id("filters-other", id).is_empty());
    // And an unknown id finds nothing.
    assert!(server.by_id("filters", &uuid()).is_empty());
}

#[test]
fn time_window_edges() {
    let server = TestServer::start();
    let t = now_ms() - 10 * MINUTE;
    let (from, to) = (t - 1000, t);
    let times = [from - 1, from, from + 1, t - 500, to - 1, to, to + 1];
    let traces: Vec<(String, Value)> = times.iter().map(|time| trace_with_id(*time)).collect();
    let body: Vec<Value> = traces.iter().map(|(_, t)| t.clone()).collect();
    server.report("edges", &body);
    let page = server.query(
        "edges",
        &[("from", from.to_string()), ("to", to.to_string())],
    );
    let got: Vec<i64> = page["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["time"].as_i64().unwrap())
        .collect();
    // Both bounds are exclusive; newest first.
    assert_eq!(got, vec![to - 1, t - 500, from + 1]);

    // Without from/to: the last hour up to now.
    let now = now_ms();
    let recent = trace_with_id(now - 30 * MINUTE);
    let old = trace_with_id(now - 90 * MINUTE);
    server.report("default-window", &[recent.1.clone(), old.1.clone()]);
    let page = server.query("default-window", &[ecs()]);
    assert_eq!(ids(page["traces"].as_array().unwrap()), vec![recent.0]);
    // `to` alone: the hour before it.
    let page = server.query(
        "default-window",
        &[("to", (now - 80 * MINUTE).to_string()), ecs()],
    );
    assert_eq!(ids(page["traces"].as_array().unwrap()), vec![old.0.clone()]);
    // The old one is still there for a wider window.
    let page = server.query(
        "default-window",
        &[
            ("from", (now - 2 * HOUR).to_string()),
            ("limit", "1".into()),
            ecs(),
        ],
    );
    assert_eq!(page["meta_data"]["count"], 1);
    let marker = page["meta_data"]["marker"].as_str().unwrap().to_string();
    let page = server.query(
        "default-window",
        &[
            ("from", (now - 2 * HOUR).to_string()),
            ("next", marker),
            ecs(),
        ],
    );
    assert_eq!(ids(page["traces"].as_array().unwrap()), vec![old.0]);
}

#[test]
fn invalid_parameters_are_named() {
    let server = TestServer::start();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("limit", "0")], "limit"),
        (&[("limit", "201")], "limit"),
        (&[("limit", "ten")], "limit"),
        (&[("from", "yesterday")], "from"),
        (&[("to", "-5")], "to"),
        (&[("from", "2000"), ("to", "1000")], "from"),
        (&[("from", "1000"), ("to", "1000")], "from"),
        (&[("trace_type", "all")], "trace_type"),
        (&[("trace_rating", "bad")], "trace_rating"),
        (&[("service_type", "ecs")], "service_type"),
        (&[("next", "zzz")], "next"),
        (&[("trace_id", "1")], "trace_id"),
        (&[("tracker_name", "bucket-a")], "tracker_name"),
        (
            &[("trace_type", "data"), ("tracker_name", "no such!")],
            "tracker_name",
        ),
        (&[("user", "")], "user"),
    ];
    for (params, name) in cases {
        let params: Vec<(&str, String)> = params.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let a = server.query_answer(&format!("/v3/{}/traces", server.admin.project_id), &params);
        a.assert_error(400, "CTS.0300");
        let msg = a.body["error_msg"].as_str().unwrap();
        assert!(msg.contains(name), "{params:?}: {msg}");
    }
    // A project id that cannot exist is refused like any other project
    // the caller holds no role on.
    let a = server.get("/v3/bad.project/traces");
    a.assert_error(403, "CTS.0002");

    // An unknown parameter is refused by name: a misspelt filter must not
    // answer unfiltered traces. Each version has its own set: trace_status
    // is v2.0's name of the rating, trace_type v3's.
    let pid = &server.admin.project_id;
    for (path, param) in [
        (format!("/v3/{pid}/traces?servicetype=ECS"), "servicetype"),
        (
            format!("/v3/{pid}/traces?trace_status=normal"),
            "trace_status",
        ),
        (
            format!("/v1.0/{pid}/system/trace?trace_type=system"),
            "trace_type",
        ),
    ] {
        let a = server.get(&path);
        a.assert_error(400, "CTS.0300");
        assert!(a.text.contains(param), "{path}: {}", a.text);
    }

    // Ratings in any case (otcextensions sends `--level INCIDENT` as typed);
    // the project holds one normal trace, its createTracker.
    let pid = server.pid("empty");
    for (path, found) in [
        (format!("/v3/{pid}/traces?trace_rating=INCIDENT"), 0),
        (format!("/v3/{pid}/traces?trace_rating=Normal"), 1),
        (format!("/v1.0/{pid}/system/trace?trace_rating=NORMAL"), 1),
        (format!("/v2.0/{pid}/system/trace?trace_status=NORMAL"), 1),
        (format!("/v2.0/{pid}/system/trace?trace_status=WARNING"), 0),
    ] {
        let a = server.get(&path);
        assert_eq!(a.status, 200, "{path}: {}", a.text);
        let traces = a.body["traces"].as_array().unwrap();
        assert_eq!(traces.len(), found, "{path}");
        assert!(traces.iter().all(|t| t["trace_rating"] == "normal"));
    }
}
