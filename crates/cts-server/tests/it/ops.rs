//! Operational endpoints, routing errors, start-up and shutdown.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

#[test]
fn health_metrics_and_api_description() {
    let server = TestServer::start();
    let a = server.get("/healthz");
    assert_eq!(
        (a.status, a.body.clone()),
        (200, serde_json::json!({"status": "ok"}))
    );
    let a = server.get("/readyz");
    assert_eq!(a.status, 200, "{}", a.text);

    let now = now_ms();
    // The bootstrap project: creating one would add audit traces.
    server.report("main", &[trace(now), trace(now)]);
    let mut bad = trace(now);
    bad["trace_name"] = "1x".into();
    server
        .post_traces("main", &batch(&[bad]))
        .assert_error(400, "CTS.0003");
    server.query("main", &[]);
    server.get(&format!("/v2.0/{}/system/trace", server.admin.project_id));

    let a = server.get("/metrics");
    assert_eq!(a.status, 200);
    let ct = a.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    for needle in [
        "cts_traces_accepted_total 2",
        "cts_traces_rejected_total 1",
        "cts_traces_duplicate_total 0",
        "cts_report_requests_total{code=\"201\"} 1",
        "cts_report_requests_total{code=\"400\"} 1",
        "cts_ingest_duration_seconds_count 2",
        "cts_query_duration_seconds_count{api=\"v3\"} 1",
        "cts_query_duration_seconds_count{api=\"v2\"} 1",
        "cts_journal_bytes ",
        "cts_index_bytes ",
        "cts_index_segments ",
        "cts_index_summary_bytes ",
        "cts_indexed_traces 2",
        "cts_journal_seq ",
        "cts_index_durable_seq ",
        "cts_index_consumer_lag ",
        "cts_store_corrupt_reads 0",
    ] {
        assert!(a.text.contains(needle), "{needle} missing in\n{}", a.text);
    }

    let a = server.get("/openapi.json");
    assert_eq!(a.status, 200);
    assert!(a.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = a.body["paths"].as_object().unwrap();
    assert!(paths.contains_key("/v3/{project_id}/traces"));
    assert!(paths["/v3/{project_id}/traces"].get("post").is_some());
}

#[test]
fn routing_errors_and_request_ids() {
    let server = TestServer::start();
    for path in ["/v3/p/nothing", "/v3/p/traces/extra", "/v4/p/traces"] {
        server.get(path).assert_error(404, "CTS.9002");
    }
    server
        .request(
            reqwest::Method::DELETE,
            &format!("/v3/{}/traces", server.admin.project_id),
        )
        .assert_error(405, "CTS.9003");
    server
        .request(reqwest::Method::POST, "/healthz")
        .assert_error(405, "CTS.9003");

    let res = server
        .client()
        .get(format!("{}/healthz", server.base))
        .header("x-request-id", "req-42")
        .send()
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-42");
    let a = server.get("/nowhere");
    let generated = a.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    // The log ties the request to its id.
    std::thread::sleep(Duration::from_millis(100));
    assert!(server.log().contains(generated), "{}", server.log());
}

#[test]
fn serves_any_address_and_tls() {
    // With authentication in place, a wildcard address is allowed.
    let server = TestServer::builder().listen("0.0.0.0:0").start();
    assert!(
        server.base.starts_with("http://0.0.0.0:"),
        "{}",
        server.base
    );
    assert_eq!(server.get("/healthz").status, 200);
    let pid = server.admin.project_id.clone();
    assert_eq!(server.get(&format!("/v3/{pid}/traces")).status, 200);
    // bootstrap.json names an endpoint a local client can reach.
    assert!(server.admin.endpoint.starts_with("http://127.0.0.1:"));
    // Plain HTTP beyond loopback is allowed, but said to be unencrypted.
    assert!(
        server.log().contains("plain HTTP on a network address"),
        "{}",
        server.log()
    );

    let (_certs, tls) = TestServer::tls_builder();
    let tls = tls.start();
    assert!(tls.base.starts_with("https://127.0.0.1:"), "{}", tls.base);
    assert!(tls.admin.endpoint.starts_with("https://"));
    let pid = tls.admin.project_id.clone();
    tls.report("main", &[trace(now_ms())]);
    assert_eq!(tls.query("main", &[])["meta_data"]["count"], 1);
    // Plain HTTP on the TLS port gets nothing.
    let plain = format!("http://{}/healthz", tls.base.trim_start_matches("https://"));
    let res = reqwest::blocking::get(&plain);
    assert!(res.map(|r| !r.status().is_success()).unwrap_or(true));
    let _ = pid;
}

#[test]
fn configuration_file_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ctsd.toml");
    std::fs::write(
        &file,
        "log_format = \"json\"\n[limits]\nmax_traces_per_request = 2\n",
    )
    .unwrap();
    let server = TestServer::builder()
        .arg("--config")
        .arg(file.to_str().unwrap())
        // The environment wins over the file.
        .env("CTS_LIMITS_MAX_TRACES_PER_REQUEST", "3")
        .start();
    let now = now_ms();
    server.report("cfg", &[trace(now), trace(now), trace(now)]);
    server
        .post_traces(
            "cfg",
            &batch(&[trace(now), trace(now), trace(now), trace(now)]),
        )
        .assert_error(400, "CTS.0003");
    // JSON logs.
    let first = server.log().lines().next().unwrap().to_string();
    assert!(serde_json::from_str::<Value>(&first).is_ok(), "{first}");

    let out = Command::new(env!("CARGO_BIN_EXE_ctsd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("CTS_STORE_RETENTION", "a while")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("store.retention"), "{stderr}");
    assert!(stderr.contains("CTS_STORE_RETENTION"), "{stderr}");
}

#[test]
fn sigterm_stops_gracefully_and_reindex_rebuilds() {
    let mut server = TestServer::start();
    let now = now_ms();
    let traces: Vec<Value> = (0..30).map(|i| trace(now - i * 10)).collect();
    let answer = server.report("main", &traces);
    let ids_before = answer["trace_ids"].as_array().unwrap().len();
    let data_dir = server.data_dir.clone();
    let reindex = || {
        Command::new(env!("CARGO_BIN_EXE_ctsd"))
            .args(["reindex", "--data-dir"])
            .arg(&data_dir)
            .output()
            .unwrap()
    };

    // Beside a running server, reindex refuses and deletes nothing.
    let busy = reindex();
    assert!(!busy.status.success());
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert_eq!(
        server.query_all("main", &[("limit", "7".into())]).len(),
        ids_before
    );

    server.terminate();

    let out = reindex();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), format!("indexed {ids_before} traces"));

    let again = TestServer::builder().root(&server.root).start();
    let all = again.query_all("main", &[("limit", "7".into())]);
    assert_eq!(all.len(), ids_before);
}

/// Anonymous scrapers of the public `/metrics` learn no project id or
/// tracker name; an authenticated one sees its own projects' series.
#[test]
fn public_metrics_name_no_project_or_tracker() {
    let server = TestServer::start();
    let pid = server.admin.project_id.clone();
    let body = serde_json::json!({"tracker_type": "system", "tracker_name": "system",
        "obs_info": {"bucket_name": "metrics-archive", "is_obs_created": true}});
    let a = server.signer().send(
        server.client(),
        "PUT",
        &format!("/v3/{pid}/tracker"),
        Some(("application/json", serde_json::to_vec(&body).unwrap())),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    server.report("main", &[trace(now_ms() - 1000)]);
    // The transfer's first pass (each second) sees the tracker.
    let series = format!("cts_transfer_backlog_traces{{project_id=\"{pid}\",tracker=\"system\"}}");
    let mut scraper = server.get("/metrics");
    for _ in 0..100 {
        if scraper.text.contains(&series) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        scraper = server.get("/metrics");
    }
    assert!(scraper.text.contains(&series), "{}", scraper.text);
    assert_eq!(scraper.text.matches("# EOF").count(), 1);

    let public = server
        .with(Cred::Anonymous)
        .get(server.client(), "/metrics");
    assert_eq!(public.status, 200);
    assert!(!public.text.contains(&pid), "{}", public.text);
    assert!(!public.text.contains("tracker="), "{}", public.text);
    assert!(
        public.text.contains("cts_transfer_backlog_all_traces"),
        "{}",
        public.text
    );
}
