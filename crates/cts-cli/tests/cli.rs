//! End to end: the real `ctsd` server, traces reported over HTTP, the `cts`
//! binary run as a user would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

struct Server {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctsd_path() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_cts")).with_file_name("ctsd");
    assert!(
        path.exists(),
        "build the server first: cargo build -p cts-server"
    );
    path
}

fn start_server() -> Server {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(ctsd_path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("ctsd listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("ctsd did not print its address");
    Server {
        child,
        url,
        _data: data,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn trace(service: &str, name: &str, user: &str, code: &str, time: i64) -> Value {
    json!({
        "time": time,
        "user": {"id": format!("id-{user}"), "name": user, "domain": {"id": "d1", "name": "acme"},
                 "access_key_id": format!("AK{}", user.to_uppercase())},
        "service_type": service,
        "resource_type": service.to_lowercase(),
        "resource_name": format!("{name}-res"),
        "resource_id": uuid::Uuid::new_v4().to_string(),
        "trace_name": name,
        "trace_type": "ApiCall",
        "code": code,
        "source_ip": "192.0.2.10",
    })
}

fn report(server: &Server, traces: Vec<Value>) -> Vec<String> {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v3/{PROJECT}/traces", server.url))
        .json(&json!({ "traces": traces }))
        .send()
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().unwrap();
    assert_eq!(status.as_u16(), 201, "{body}");
    body["trace_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn cts(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cts"))
        .args(["--endpoint", &server.url, "--project-id", PROJECT])
        .args(args)
        .output()
        .unwrap()
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "cts failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json_traces(out: &Output) -> Vec<Value> {
    match serde_json::from_str(&stdout_ok(out)).unwrap() {
        Value::Array(a) => a,
        other => panic!("not an array: {other}"),
    }
}

fn names(traces: &[Value]) -> Vec<&str> {
    traces
        .iter()
        .map(|t| t["trace_name"].as_str().unwrap())
        .collect()
}

#[test]
fn list_filters_in_table_and_json() {
    let server = start_server();
    let now = now_ms();
    report(
        &server,
        vec![
            trace("ECS", "createServer", "alice", "202", now - 60_000),
            trace("EVS", "createVolume", "bob", "200", now - 50_000),
            trace("ECS", "deleteServer", "bob", "500", now - 40_000),
            trace("ECS", "stopServer", "alice", "200", now - 30 * 60_000),
        ],
    );

    let table = stdout_ok(&cts(
        &server,
        &["traces", "list", "--service-type", "ECS", "--from", "10m"],
    ));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TIME "), "{table}");
    assert!(lines[0].contains("TRACE_NAME") && lines[0].contains("TRACE_ID"));
    // Newest first; the EVS trace and the one older than 10 minutes are out.
    assert!(
        lines[1].contains("deleteServer") && lines[1].contains("incident"),
        "{table}"
    );
    assert!(
        lines[2].contains("createServer") && lines[2].contains("alice"),
        "{table}"
    );
    assert!(
        !table.contains("createVolume") && !table.contains("stopServer"),
        "{table}"
    );
    assert!(table.contains("2 traces"), "{table}");

    let all_ecs = json_traces(&cts(
        &server,
        &[
            "--output",
            "json",
            "traces",
            "list",
            "--service-type",
            "ECS",
            "--from",
            "1h",
        ],
    ));
    assert_eq!(
        names(&all_ecs),
        ["deleteServer", "createServer", "stopServer"]
    );

    let incidents = json_traces(&cts(
        &server,
        &[
            "--output",
            "json",
            "traces",
            "list",
            "--trace-rating",
            "incident",
            "--user",
            "bob",
        ],
    ));
    assert_eq!(names(&incidents), ["deleteServer"]);
    let id = incidents[0]["trace_id"].as_str().unwrap();

    let by_key = json_traces(&cts(
        &server,
        &[
            "--output",
            "json",
            "traces",
            "list",
            "--access-key-id",
            "AKALICE",
            "--from",
            "2h",
        ],
    ));
    assert_eq!(names(&by_key), ["createServer", "stopServer"]);

    let by_id = json_traces(&cts(
        &server,
        &["--output", "json", "traces", "list", "--trace-id", id],
    ));
    assert_eq!(names(&by_id), ["deleteServer"]);

    let to = (now - 45_000).to_string();
    let window = json_traces(&cts(
        &server,
        &[
            "--output", "json", "traces", "list", "--from", "2h", "--to", &to,
        ],
    ));
    assert_eq!(
        names(&window),
        ["createVolume", "createServer", "stopServer"]
    );
}

#[test]
fn all_follows_markers() {
    let server = start_server();
    let now = now_ms();
    let reported = report(
        &server,
        (0..25)
            .map(|i| {
                trace(
                    "VPC",
                    &format!("createVpc{i}"),
                    "carol",
                    "200",
                    now - 1_000 * (i + 1),
                )
            })
            .collect(),
    );

    let first = cts(&server, &["traces", "list", "--limit", "10"]);
    let table = stdout_ok(&first);
    assert_eq!(
        table.lines().filter(|l| l.contains("createVpc")).count(),
        10
    );
    let marker = table
        .lines()
        .find_map(|l| l.split("--next ").nth(1))
        .expect("a marker to continue")
        .trim()
        .to_string();
    let second = json_traces(&cts(
        &server,
        &[
            "--output", "json", "traces", "list", "--limit", "10", "--next", &marker,
        ],
    ));
    assert_eq!(names(&second)[0], "createVpc10");

    let all = json_traces(&cts(
        &server,
        &[
            "--output", "json", "traces", "list", "--limit", "10", "--all",
        ],
    ));
    let expected: Vec<String> = (0..25).map(|i| format!("createVpc{i}")).collect();
    assert_eq!(names(&all), expected);
    let mut ids: Vec<&str> = all
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want: Vec<&str> = reported.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(ids, want);

    let table_all = stdout_ok(&cts(&server, &["traces", "list", "--limit", "7", "--all"]));
    assert_eq!(
        table_all
            .lines()
            .filter(|l| l.contains("createVpc"))
            .count(),
        25
    );
    assert!(table_all.contains("25 traces") && !table_all.contains("--next"));
}

#[test]
fn server_errors_are_shown() {
    let server = start_server();
    let out = cts(&server, &["traces", "list", "--limit", "500"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error CTS."), "{stderr}");
    assert!(stderr.contains("limit"), "{stderr}");

    let out = cts(&server, &["traces", "list", "--from", "yesterday"]);
    assert!(!out.status.success());
}

#[test]
fn tail_prints_new_and_late_traces_once() {
    let server = start_server();
    let now = now_ms();
    report(
        &server,
        vec![trace("IAM", "oldLogin", "dave", "200", now - 5_000)],
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_cts"))
        .args([
            "--endpoint",
            &server.url,
            "--project-id",
            PROJECT,
            "--output",
            "json",
        ])
        .args([
            "traces",
            "tail",
            "--interval",
            "200ms",
            "--service-type",
            "IAM",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let _guard = Kill(child);

    let mut err_lines = BufReader::new(stderr).lines();
    let ready = err_lines.next().unwrap().unwrap();
    assert!(ready.starts_with("following"), "{ready}");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next_trace = |timeout: Duration| -> Option<Value> {
        rx.recv_timeout(timeout)
            .ok()
            .map(|l| serde_json::from_str(&l).unwrap())
    };

    let now = now_ms();
    report(
        &server,
        vec![
            trace("IAM", "createUser", "dave", "201", now),
            trace("ECS", "createServer", "dave", "202", now),
        ],
    );
    let t = next_trace(Duration::from_secs(10)).expect("the new trace");
    assert_eq!(t["trace_name"], "createUser");

    // Reported later but stamped earlier than what was already shown.
    report(
        &server,
        vec![trace("IAM", "lateLogin", "dave", "200", now - 20_000)],
    );
    let t = next_trace(Duration::from_secs(10)).expect("the late trace");
    assert_eq!(t["trace_name"], "lateLogin");

    report(
        &server,
        vec![trace("IAM", "deleteUser", "dave", "204", now_ms())],
    );
    let t = next_trace(Duration::from_secs(10)).expect("the last trace");
    assert_eq!(t["trace_name"], "deleteUser");

    // Several more polls: nothing is printed twice, history is never printed.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1_000) {
        if let Some(t) = next_trace(Duration::from_millis(100)) {
            panic!("printed again: {t}");
        }
    }
}
