//! Paging with `next`/`marker` through thousands of traces that share one
//! millisecond.

use serde_json::{json, Value};

use crate::support::*;

#[test]
fn every_trace_exactly_once_in_order() {
    let server = TestServer::start();
    let t = now_ms() - 20 * MINUTE;
    let mut traces: Vec<Value> = Vec::new();
    for _ in 0..3000 {
        traces.push(trace(t));
    }
    for k in 1..=50 {
        traces.push(trace(t - k * 1000));
        traces.push(trace(t + k * 1000));
    }
    let mut reported: Vec<(i64, String)> = Vec::new();
    for chunk in traces.chunks(1000) {
        let answer = server.report("paging", chunk);
        for (t, id) in chunk.iter().zip(answer["trace_ids"].as_array().unwrap()) {
            reported.push((
                t["time"].as_i64().unwrap(),
                id.as_str().unwrap().to_string(),
            ));
        }
    }
    // Newest first; within a millisecond by trace_id, descending.
    reported.sort_by(|a, b| b.cmp(a));
    let want: Vec<String> = reported.into_iter().map(|(_, id)| id).collect();

    let window = [
        ("from", (t - HOUR).to_string()),
        ("to", (t + 10 * MINUTE).to_string()),
    ];
    for limit in [200, 7] {
        let mut params = window.to_vec();
        params.push(("limit", limit.to_string()));
        let mut got = Vec::new();
        let mut next: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut p = params.clone();
            if let Some(n) = &next {
                p.push(("next", n.clone()));
            }
            let page = server.query("paging", &p);
            pages += 1;
            let traces = page["traces"].as_array().unwrap();
            assert!(traces.len() <= limit);
            assert_eq!(page["meta_data"]["count"], traces.len());
            got.extend(ids(traces));
            match &page["meta_data"]["marker"] {
                Value::Null => break,
                Value::String(m) => {
                    assert_eq!(traces.len(), limit, "a page before the last is full");
                    assert_eq!(json!(m), traces.last().unwrap()["trace_id"]);
                    next = Some(m.clone());
                }
                other => panic!("marker {other}"),
            }
            assert!(pages <= want.len() / limit + 2, "paging does not end");
        }
        assert_eq!(got.len(), want.len(), "limit {limit}");
        assert_eq!(got, want, "limit {limit}");
    }
}
