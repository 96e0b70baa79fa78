//! End to end: the real `ctsd` server, traces reported over HTTP, the `cts`
//! binary run as a user would, with the credentials the server wrote to its
//! `bootstrap.json`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Server {
    child: Child,
    url: String,
    /// `DATA_DIR/bootstrap.json` of this server.
    bootstrap: PathBuf,
    /// The bootstrap project, where the admin holds cts_admin.
    project: String,
    access_key: String,
    secret_key: String,
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
    let mut cmd = Command::new(ctsd_path());
    // The server's defaults, whatever the developer's shell sets.
    for (k, _) in std::env::vars() {
        if k.starts_with("CTS_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
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
    // Written before the server says where it listens.
    let bootstrap = data.path().join("bootstrap.json");
    let boot: Value = serde_json::from_slice(&std::fs::read(&bootstrap).unwrap()).unwrap();
    let field = |k: &str| boot[k].as_str().unwrap().to_string();
    assert_eq!(field("endpoint"), url);
    Server {
        child,
        url,
        project: field("project_id"),
        access_key: field("access_key"),
        secret_key: field("secret_key"),
        bootstrap,
        _data: data,
    }
}

use cts_clock::now_ms;

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

/// `POST /v3/{project}/traces` signed with `(ak, sk)`: (status, body).
fn post_traces(server: &Server, (ak, sk): (&str, &str), traces: Vec<Value>) -> (u16, Value) {
    let url = format!("{}/v3/{}/traces", server.url, server.project);
    let body = serde_json::to_vec(&json!({ "traces": traces })).unwrap();
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    cts_sign::sign_request(
        "POST",
        &url,
        &mut headers,
        &body,
        ak,
        sk,
        cts_sign::unix_now(),
    )
    .unwrap();
    let mut req = reqwest::blocking::Client::new().post(&url).body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.json().unwrap())
}

/// Reports as the admin, asserting 201; returns the trace ids.
fn report(server: &Server, traces: Vec<Value>) -> Vec<String> {
    let (status, body) = post_traces(server, (&server.access_key, &server.secret_key), traces);
    assert_eq!(status, 201, "{body}");
    body["trace_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The `cts` binary with none of the developer's `CTS_*` settings.
fn cts_bare() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cts"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CTS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `cts` as the admin: everything from the server's bootstrap.json.
fn cts_admin(server: &Server) -> Command {
    let mut cmd = cts_bare();
    cmd.arg("--credentials").arg(&server.bootstrap);
    cmd
}

fn cts(server: &Server, args: &[&str]) -> Output {
    cts_admin(server).args(args).output().unwrap()
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "cts failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The traces of `cts --output json traces list`: `{"traces": [...], "next": …}`.
fn json_traces(out: &Output) -> Vec<Value> {
    let doc: Value = serde_json::from_str(&stdout_ok(out)).unwrap();
    match &doc["traces"] {
        Value::Array(a) => a.clone(),
        _ => panic!("no traces array: {doc}"),
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
    let mut volume = trace("EVS", "createVolume", "bob", "200", now - 50_000);
    volume["enterprise_project_id"] = json!("ep-storage");
    report(
        &server,
        vec![
            trace("ECS", "createServer", "alice", "202", now - 60_000),
            volume,
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

    // The other filters, each alone, over the last two hours.
    let resource_id = incidents[0]["resource_id"].as_str().unwrap();
    for (flag, value, want) in [
        ("--resource-id", resource_id, "deleteServer"),
        ("--resource-name", "createServer-res", "createServer"),
        ("--resource-type", "evs", "createVolume"),
        ("--trace-name", "stopServer", "stopServer"),
        ("--enterprise-project-id", "ep-storage", "createVolume"),
    ] {
        let found = json_traces(&cts(
            &server,
            &[
                "--output", "json", "traces", "list", flag, value, "--from", "2h",
            ],
        ));
        assert_eq!(names(&found), [want], "{flag} {value}");
    }

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

    let out = cts(&server, &["traces", "list", "--from", "tomorrow"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("yesterday"), "names the forms");
}

#[test]
fn times_count_back_from_now_in_every_form() {
    let server = start_server();
    let now = now_ms();
    report(
        &server,
        vec![
            trace("ECS", "before", "eve", "200", now - 65 * 60_000),
            trace("ECS", "within", "eve", "200", now - 30 * 60_000),
        ],
    );
    let listed = |from: &str, to: Option<&str>| {
        let mut args = vec!["--output", "json", "traces", "list", "--user", "eve"];
        args.extend(["--from", from]);
        if let Some(to) = to {
            args.extend(["--to", to]);
        }
        let traces = json_traces(&cts(&server, &args));
        names(&traces)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // A relative --from counts back from now, not from --to.
    assert_eq!(listed("1h", Some("10m")), ["within"]);
    assert_eq!(listed("1h ago", Some("10m ago")), ["within"]);
    assert_eq!(listed("2h ago", None), ["within", "before"]);
    // Epoch seconds and milliseconds, told apart by magnitude.
    let secs = ((now - 60 * 60_000) / 1000).to_string();
    assert_eq!(listed(&secs, None), ["within"]);
    let ms = (now - 60 * 60_000).to_string();
    assert_eq!(listed(&ms, None), ["within"]);
    // Calendar words (midnight UTC); "yesterday" spans at least a day.
    assert_eq!(listed("yesterday", None), ["within", "before"]);
    assert!(cts(&server, &["traces", "list", "--from", "today"])
        .status
        .success());
}

#[test]
fn json_pages_carry_their_marker_and_all_takes_the_largest_pages() {
    let server = start_server();
    let now = now_ms();
    let traces: Vec<Value> = (0..250)
        .map(|i| {
            trace(
                "VPC",
                &format!("createVpc{i}"),
                "carol",
                "200",
                now - 1_000 - i,
            )
        })
        .collect();
    report(&server, traces);
    let page = |args: &[&str]| {
        let out = cts(
            &server,
            &[
                &["--output", "json", "traces", "list", "--user", "carol"],
                args,
            ]
            .concat(),
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str::<Value>(&stdout_ok(&out)).unwrap()
    };
    let first = page(&["--limit", "100"]);
    assert_eq!(first["traces"].as_array().unwrap().len(), 100);
    let next = first["next"].as_str().expect("the marker in the output");
    let second = page(&["--limit", "100", "--next", next]);
    assert_eq!(second["traces"][0]["trace_name"], "createVpc100");

    // --all: 200 a request, so two requests for 250 traces; no marker.
    let queries = || {
        let metrics = reqwest::blocking::get(format!("{}/metrics", server.url))
            .unwrap()
            .text()
            .unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("cts_query_duration_seconds_count{api=\"v3\"} "))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };
    let before = queries();
    let all = page(&["--all"]);
    assert_eq!(queries() - before, 2);
    assert_eq!(all["traces"].as_array().unwrap().len(), 250);
    assert_eq!(all["next"], Value::Null);
}

#[test]
fn tail_prints_new_and_late_traces_once() {
    let server = start_server();
    let now = now_ms();
    report(
        &server,
        vec![trace("IAM", "oldLogin", "dave", "200", now - 5_000)],
    );

    let mut child = cts_admin(&server)
        .args(["--output", "json"])
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

fn stderr_of(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "cts succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_ok(out: &Output) -> Value {
    serde_json::from_str(&stdout_ok(out)).unwrap()
}

/// The `name`s of a JSON list printed by cts.
fn listed_names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect()
}

#[test]
fn login_prints_a_token_that_works() {
    let server = start_server();
    let table = stdout_ok(&cts(&server, &["login"]));
    assert!(table.starts_with("token "), "{table}");
    assert!(
        table.contains("expires_at ") && table.contains("cts_admin"),
        "{table}"
    );

    let login = json_ok(&cts(&server, &["--output", "json", "login"]));
    let token = login["token"].as_str().unwrap();
    assert!(
        login["expires_at"].as_str().unwrap().ends_with('Z'),
        "{login}"
    );
    assert_eq!(login["project_id"].as_str(), Some(server.project.as_str()));

    // The token from the environment beats the file's access key.
    let out = cts_admin(&server)
        .env("CTS_AUTH_TOKEN", token)
        .args(["--output", "json", "traces", "list"])
        .output()
        .unwrap();
    // Logging in is recorded in the project.
    assert!(names(&json_traces(&out)).contains(&"createToken"));
    let out = cts_admin(&server)
        .env("CTS_AUTH_TOKEN", "not-a-token")
        .args(["traces", "list"])
        .output()
        .unwrap();
    assert!(stderr_of(&out).starts_with("error CTS.0002 (HTTP 401)"));

    let out = cts(&server, &["login", "--password", "wrong-password-1"]);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("HTTP 401") && stderr.contains("password"),
        "{stderr}"
    );
}

#[test]
fn identities_keys_roles_and_groups() {
    let server = start_server();
    let admin = |args: &[&str]| stdout_ok(&cts(&server, args));
    let admin_json = |args: &[&str]| {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        json_ok(&cts(&server, &all))
    };

    // A user with read access to the bootstrap project and a key of its own.
    let carol = admin_json(&[
        "users",
        "create",
        "carol",
        "--password",
        "Carol-pw-1234",
        "--email",
        "c@example.com",
    ]);
    assert_eq!(carol["name"], "carol");
    let table = admin(&["users", "list"]);
    assert!(
        table.starts_with("ID ") && table.contains("carol") && table.contains("c@example.com"),
        "{table}"
    );
    assert!(admin(&["roles", "list"]).contains("cts_viewer"));
    let granted = admin(&["roles", "assign", "--user", "carol", "--role", "cts_viewer"]);
    assert!(granted.starts_with("granted role cts_viewer"), "{granted}");
    let key = admin_json(&[
        "access-keys",
        "create",
        "--user",
        "carol",
        "--description",
        "ci",
    ]);
    let (ak, sk) = (
        key["access"].as_str().unwrap(),
        key["secret"].as_str().unwrap(),
    );
    assert_eq!(key["user_id"], carol["id"]);
    let keys = admin_json(&["access-keys", "list", "--user", "carol"]);
    assert_eq!(keys[0]["access"], ak);
    assert!(keys[0].get("secret").is_none(), "{keys}");
    let table = admin(&["roles", "assignments", "--user", "carol"]);
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("cts_viewer") && l.contains("carol")),
        "{table}"
    );

    // Carol's key, given on the command line, reads traces...
    let as_carol = |args: &[&str]| {
        cts_bare()
            .args(["--endpoint", &server.url, "--project-id", &server.project])
            .args(["--access-key", ak, "--secret-key", sk])
            .args(args)
            .output()
            .unwrap()
    };
    let traces = json_traces(&as_carol(&["--output", "json", "traces", "list"]));
    assert!(names(&traces).contains(&"createUser"), "{traces:?}");
    // ...but may neither report nor manage identities.
    let (status, body) = post_traces(
        &server,
        (ak, sk),
        vec![trace("ECS", "x", "carol", "200", now_ms())],
    );
    assert_eq!(
        (status, body["error_code"].as_str()),
        (403, Some("CTS.0013")),
        "{body}"
    );
    let stderr = stderr_of(&as_carol(&["users", "list"]));
    assert!(stderr.starts_with("error CTS.0013 (HTTP 403)"), "{stderr}");

    // Roles granted to a group apply to its members, while they are members.
    admin(&[
        "groups",
        "create",
        "reporters",
        "--description",
        "may report",
    ]);
    admin(&["groups", "add-user", "reporters", "carol"]);
    assert_eq!(
        listed_names(&admin_json(&["groups", "members", "reporters"])),
        ["carol"]
    );
    admin(&[
        "roles",
        "assign",
        "--group",
        "reporters",
        "--role",
        "cts_reporter",
        "--project",
        "eu-de",
    ]);
    let (status, body) = post_traces(
        &server,
        (ak, sk),
        vec![trace("ECS", "byCarol", "carol", "200", now_ms())],
    );
    assert_eq!(status, 201, "{body}");
    admin(&["groups", "remove-user", "reporters", "carol"]);
    assert_eq!(admin_json(&["groups", "members", "reporters"]), json!([]));
    let (status, _) = post_traces(
        &server,
        (ak, sk),
        vec![trace("ECS", "x", "carol", "200", now_ms())],
    );
    assert_eq!(status, 403);

    admin(&[
        "roles",
        "unassign",
        "--group",
        "reporters",
        "--role",
        "cts_reporter",
        "--project",
        "eu-de",
    ]);
    assert_eq!(
        admin_json(&["roles", "assignments", "--group", "reporters"]),
        json!([])
    );

    // A new password works for logging in, a disabled user cannot.
    admin(&[
        "users",
        "set-password",
        "carol",
        "--password",
        "Carol-pw-5678",
    ]);
    let carol_login = [
        "--output",
        "json",
        "login",
        "--user",
        "carol",
        "--password",
        "Carol-pw-5678",
    ];
    let login = json_ok(&cts(&server, &carol_login));
    assert_eq!(login["roles"], "cts_viewer");
    assert!(admin(&["users", "disable", "carol"]).starts_with("disabled user carol"));
    assert!(stderr_of(&cts(&server, &carol_login)).contains("HTTP 401"));
    admin(&["users", "enable", "carol"]);

    // A disabled key is refused; enabled again, it works.
    assert!(admin(&["access-keys", "disable", ak]).contains("inactive"));
    let stderr = stderr_of(&as_carol(&["traces", "list"]));
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    admin(&["access-keys", "enable", ak]);
    stdout_ok(&as_carol(&["traces", "list"]));

    // Projects by name.
    let dev = admin_json(&["projects", "create", "eu-de_dev", "--description", "dev"]);
    assert_eq!(dev["region"], "eu-de");
    assert_eq!(listed_names(&admin_json(&["projects", "list"])).len(), 2);
    assert!(admin(&["projects", "delete", "eu-de_dev"]).starts_with("deleted project eu-de_dev"));

    // Deleting: by name, and gone afterwards.
    admin(&["access-keys", "delete", ak]);
    assert_eq!(
        admin_json(&["access-keys", "list", "--user", "carol"]),
        json!([])
    );
    admin(&["groups", "delete", "reporters"]);
    assert!(
        stdout_ok(&cts(&server, &["users", "delete", "carol"])).starts_with("deleted user carol")
    );
    assert_eq!(listed_names(&admin_json(&["users", "list"])), ["admin"]);
    assert_eq!(admin_json(&["groups", "list"]), json!([]));
    let stderr = stderr_of(&cts(&server, &["users", "delete", "carol"]));
    assert_eq!(stderr.trim(), "error: no user named or with id \"carol\"");
}

#[test]
fn credential_errors_are_explained() {
    let server = start_server();
    let out = cts_bare()
        .args(["--endpoint", &server.url, "--project-id", &server.project])
        .args([
            "--access-key",
            &server.access_key,
            "--secret-key",
            "wrong-secret",
        ])
        .args(["traces", "list"])
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    assert!(
        stderr.starts_with("error CTS.0002 (HTTP 401): ")
            && stderr.contains("signature does not match"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");

    let out = cts_bare()
        .args(["--endpoint", &server.url, "traces", "list"])
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    assert!(
        stderr.starts_with("error: no credentials: give --access-key and --secret-key"),
        "{stderr}"
    );

    let out = cts_bare()
        .env("CTS_ACCESS_KEY", &server.access_key)
        .args(["traces", "list"])
        .output()
        .unwrap();
    assert_eq!(
        stderr_of(&out).trim(),
        "error: CTS_ACCESS_KEY is given without CTS_SECRET_KEY"
    );

    let out = cts_bare()
        .args([
            "--endpoint",
            &server.url,
            "--access-key",
            &server.access_key,
        ])
        .args(["--secret-key", &server.secret_key, "traces", "list"])
        .output()
        .unwrap();
    assert!(stderr_of(&out).contains("no project: give --project-id"));
}

/// A data trace: a read (`read_only`) or write of `object` (`bucket/key`)
/// for data tracker `tracker`.
fn data_trace(tracker: &str, object: &str, read: bool) -> Value {
    let name = if read { "getObject" } else { "putObject" };
    let mut t = trace("OBS", name, "erin", "200", now_ms());
    t["trace_type"] = json!("ObsAPI");
    t["tracker_name"] = json!(tracker);
    t["resource_type"] = json!("object");
    t["resource_name"] = json!(object);
    t["read_only"] = json!(read);
    t
}

/// Reports `t` as the admin: (recorded, not_recorded reasons).
fn report_one(server: &Server, t: Value) -> (u64, Vec<String>) {
    let (status, body) = post_traces(server, (&server.access_key, &server.secret_key), vec![t]);
    assert_eq!(status, 201, "{body}");
    let reasons = body["not_recorded"]["reasons"]
        .as_array()
        .map(|r| r.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    (body["recorded"].as_u64().unwrap(), reasons)
}

#[test]
fn trackers_decide_what_is_recorded() {
    let server = start_server();
    let admin = |args: &[&str]| stdout_ok(&cts(&server, args));
    let admin_json = |args: &[&str]| {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        json_ok(&cts(&server, &all))
    };
    let trackers_used = || {
        let quotas = admin_json(&["quotas"]);
        let tracker = quotas
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["type"] == "tracker")
            .unwrap_or_else(|| panic!("no tracker quota: {quotas}"))
            .clone();
        tracker["used"].as_u64().unwrap()
    };
    let tags_of = |name: &str| admin_json(&["trackers", "list", "--name", name])[0]["tags"].clone();

    // The first project starts with its management tracker.
    let table = admin(&["quotas"]);
    assert!(
        table.starts_with("TYPE") && table.contains("USED") && table.contains("QUOTA"),
        "{table}"
    );
    assert_eq!(trackers_used(), 1);

    let created = admin(&[
        "trackers",
        "create",
        "data",
        "--name",
        "obs-reads",
        "--data-bucket",
        "logs-bucket",
        "--events",
        "READ,WRITE",
        "--bucket",
        "trace-dump",
        "--create-bucket",
        "--compress",
        "json",
    ]);
    assert!(created.starts_with("id "), "{created}");
    for row in [
        "obs-reads",
        "logs-bucket",
        "READ,WRITE",
        "trace-dump",
        "json",
    ] {
        assert!(created.contains(row), "{row}: {created}");
    }
    let table = admin(&["trackers", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME ")
            && lines[0].contains("DATA_BUCKET")
            && lines[0].contains("CREATED"),
        "{table}"
    );
    let row = lines
        .iter()
        .find(|l| l.starts_with("obs-reads "))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..8],
        [
            "obs-reads",
            "data",
            "enabled",
            "-",
            "trace-dump",
            "-",
            "logs-bucket",
            "READ,WRITE"
        ],
        "{table}"
    );
    // LTS off: no delivery status.
    assert_eq!(cells[8..10], ["-", "-"], "{table}");
    assert!(cells[10].ends_with('Z'), "{table}");
    assert!(
        lines.iter().any(|l| l
            .split_whitespace()
            .take(3)
            .eq(["system", "system", "enabled"])),
        "{table}"
    );
    assert_eq!(trackers_used(), 2);

    // Issue 16: `--lts on|off`, and the delivery status in the list (this
    // server has no log sink).
    admin(&["trackers", "update", "system", "--lts", "on"]);
    let table = admin(&["trackers", "list", "--type", "system"]);
    let cells: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(cells[8..10], ["error", "noSink"], "{table}");
    admin(&["trackers", "update", "system", "--lts", "off"]);
    let listed = admin_json(&["trackers", "list", "--type", "system"]);
    assert_eq!(listed[0]["lts"]["is_lts_enabled"], false, "{listed}");
    assert!(listed[0]["lts"].get("status").is_none(), "{listed}");

    // Disabled, the tracker records nothing; enabled, it records again.
    let read = || data_trace("obs-reads", "logs-bucket/2024/report.csv", true);
    assert_eq!(
        admin(&["trackers", "disable", "obs-reads"]).trim(),
        "tracker obs-reads is disabled"
    );
    let listed = admin_json(&["trackers", "list", "--type", "data"]);
    assert_eq!(listed[0]["status"], "disabled", "{listed}");
    let (recorded, reasons) = report_one(&server, read());
    assert_eq!(recorded, 0);
    assert!(
        reasons.len() == 1 && reasons[0].contains("no enabled data tracker"),
        "{reasons:?}"
    );
    admin(&["trackers", "enable", "obs-reads"]);
    assert_eq!(report_one(&server, read()), (1, vec![]));
    let recorded = json_traces(&cts(
        &server,
        &[
            "--output",
            "json",
            "traces",
            "list",
            "--trace-type",
            "data",
            "--tracker-name",
            "obs-reads",
        ],
    ));
    assert_eq!(names(&recorded), ["getObject"]);

    // The same for the management tracker and management traces.
    let ecs = || trace("ECS", "createServer", "erin", "202", now_ms());
    admin(&["trackers", "disable", "system"]);
    let (recorded, reasons) = report_one(&server, ecs());
    assert_eq!(recorded, 0);
    assert!(
        reasons.len() == 1 && reasons[0].contains("no enabled management tracker"),
        "{reasons:?}"
    );
    assert_eq!(
        admin(&["trackers", "enable", "system"]).trim(),
        "tracker system is enabled"
    );
    assert_eq!(report_one(&server, ecs()), (1, vec![]));

    // Tags: a bare key has the empty value; untagging a key with another
    // value leaves it.
    assert!(admin(&["trackers", "tag", "obs-reads", "env=prod", "team"])
        .starts_with("tagged tracker obs-reads"));
    assert_eq!(
        tags_of("obs-reads"),
        json!([{"key": "env", "value": "prod"}, {"key": "team", "value": ""}])
    );
    admin(&["trackers", "untag", "obs-reads", "team", "env=dev"]);
    assert_eq!(
        tags_of("obs-reads"),
        json!([{"key": "env", "value": "prod"}])
    );
    admin(&["trackers", "untag", "obs-reads", "env"]);
    assert_eq!(tags_of("obs-reads"), json!([]));

    // An update changes the settings given and keeps the others.
    assert_eq!(
        admin(&[
            "trackers",
            "update",
            "obs-reads",
            "--events",
            "READ",
            "--prefix",
            "cts"
        ])
        .trim(),
        "updated tracker obs-reads"
    );
    let t = &admin_json(&["trackers", "list", "--name", "obs-reads"])[0];
    assert_eq!(t["data_bucket"]["data_event"], json!(["READ"]), "{t}");
    assert_eq!(t["obs_info"]["file_prefix_name"], "cts", "{t}");
    assert_eq!(t["obs_info"]["bucket_name"], "trace-dump", "{t}");
    assert_eq!(t["obs_info"]["compress_type"], "json", "{t}");
    // Writes are no longer recorded.
    let (recorded, reasons) = report_one(
        &server,
        data_trace("obs-reads", "logs-bucket/upload.bin", false),
    );
    assert_eq!((recorded, reasons.len()), (0, 1), "{reasons:?}");

    // Deleting one by name, then every data tracker.
    admin(&[
        "trackers",
        "create",
        "data",
        "--name",
        "obs-writes",
        "--data-bucket",
        "uploads",
        "--events",
        "WRITE",
    ]);
    assert_eq!(trackers_used(), 3);
    assert_eq!(
        admin(&["trackers", "delete", "obs-reads"]).trim(),
        "deleted tracker obs-reads"
    );
    assert_eq!(trackers_used(), 2);
    assert_eq!(
        admin(&["trackers", "delete", "--all-data"]).trim(),
        "deleted data trackers obs-writes"
    );
    assert_eq!(
        admin_json(&["trackers", "list", "--type", "data"]),
        json!([])
    );
    assert_eq!(trackers_used(), 1);
    let stderr = stderr_of(&cts(&server, &["trackers", "tag", "obs-reads", "a=b"]));
    assert_eq!(stderr.trim(), "error: no data tracker named \"obs-reads\"");
}

#[test]
fn tracker_rule_violations_show_the_server_message() {
    let server = start_server();
    let stderr = stderr_of(&cts(
        &server,
        &[
            "trackers",
            "create",
            "data",
            "--name",
            "d1",
            "--data-bucket",
            "Bad_Bucket",
            "--events",
            "READ",
        ],
    ));
    assert!(
        stderr.starts_with("error CTS.0231 (HTTP 400): invalid bucket name \"Bad_Bucket\""),
        "{stderr}"
    );
    let stderr = stderr_of(&cts(&server, &["trackers", "create", "system"]));
    assert!(stderr.starts_with("error CTS.0201 (HTTP 400)"), "{stderr}");
    let stderr = stderr_of(&cts(&server, &["trackers", "delete", "d1"]));
    assert!(stderr.starts_with("error CTS.0214 (HTTP 404)"), "{stderr}");
    let stderr = stderr_of(&cts(
        &server,
        &["trackers", "update", "system", "--events", "READ"],
    ));
    // data_bucket on the management tracker (Huawei Cloud's code).
    assert!(stderr.starts_with("error CTS.0206 (HTTP 400)"), "{stderr}");
    // A data tracker needs a name before anything is sent.
    let stderr = stderr_of(&cts(&server, &["trackers", "create", "data"]));
    assert!(stderr.contains("--name"), "{stderr}");
}

/// A report whose text no client could decode is refused, naming the
/// field, so `cts traces list` keeps working on every page.
#[test]
fn lone_surrogates_are_refused_at_ingest() {
    let server = start_server();
    let now = now_ms();
    report(
        &server,
        vec![trace("ECS", "createServer", "alice", "200", now - 1000)],
    );
    let url = format!("{}/v3/{}/traces", server.url, server.project);
    let mut bad = trace("ECS", "deleteServer", "alice", "200", now - 500);
    bad["request"] = json!("PLACEHOLDER");
    let body = serde_json::to_string(&json!({ "traces": [bad] }))
        .unwrap()
        .replace("PLACEHOLDER", "\\udc00");
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    let (ak, sk) = (&server.access_key, &server.secret_key);
    let now_s = cts_sign::unix_now();
    cts_sign::sign_request("POST", &url, &mut headers, body.as_bytes(), ak, sk, now_s).unwrap();
    let mut req = reqwest::blocking::Client::new().post(&url).body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let answer: Value = resp.json().unwrap();
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(errors[0]["field"], "request", "{answer}");
    assert_eq!(errors[0]["index"], 0, "{answer}");
    let args = [
        "--output",
        "json",
        "traces",
        "list",
        "--service-type",
        "ECS",
    ];
    let listed = json_traces(&cts(&server, &args));
    assert_eq!(names(&listed), vec!["createServer"]);
}

#[test]
fn notifications_are_created_changed_dry_run_and_deleted() {
    let server = start_server();
    let admin = |args: &[&str]| stdout_ok(&cts(&server, args));
    let admin_json = |args: &[&str]| {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        json_ok(&cts(&server, &all))
    };
    let now = now_ms();
    report(
        &server,
        vec![
            trace("ECS", "deleteServer", "alice", "500", now - 2000),
            trace("ECS", "deleteServer", "alice", "200", now - 1000),
        ],
    );
    let created = admin_json(&[
        "notifications",
        "create",
        "failed_deletes",
        "--operation",
        "ECS:ecs:deleteServer,stopServer",
        "--filter",
        "code != 200",
    ]);
    assert_eq!(created["status"], "disabled", "{created}");
    assert_eq!(created["filter"]["rule"], json!(["code != 200"]));
    assert_eq!(
        created["operations"][0]["trace_names"],
        json!(["deleteServer", "stopServer"])
    );
    let table = admin(&["notifications", "list"]);
    assert!(
        table.starts_with("NAME") && table.contains("failed_deletes"),
        "{table}"
    );

    let run = admin_json(&["notifications", "dry-run", "failed_deletes", "--from", "1h"]);
    assert_eq!(run["matched"], 1, "{run}");
    assert_eq!(run["traces"][0]["code"], "500", "{run}");
    let text = admin(&["notifications", "dry-run", "failed_deletes"]);
    assert!(text.starts_with("1 of "), "{text}");

    // Update replaces what is given and keeps the rest.
    let updated = admin_json(&[
        "notifications",
        "update",
        "failed_deletes",
        "--filter",
        "code = 500",
        "--filter",
        "code = 503",
        "--any",
    ]);
    assert_eq!(updated["filter"]["condition"], "OR", "{updated}");
    assert_eq!(updated["operation_type"], "customized");
    // Enabling needs a topic: the server's error is shown.
    let out = cts(&server, &["notifications", "enable", "failed_deletes"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("topic_id"), "{}", stderr_of(&out));
    admin(&["notifications", "disable", "failed_deletes"]);
    admin(&["notifications", "delete", "failed_deletes"]);
    assert_eq!(admin_json(&["notifications", "list"]), json!([]));
}

#[test]
fn topics_subscriptions_and_deliveries() {
    let server = start_server();
    let admin_json = |args: &[&str]| {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        json_ok(&cts(&server, &all))
    };
    let created = admin_json(&["topics", "create", "alerts", "--display-name", "Ops"]);
    let urn = created["topic_urn"].as_str().unwrap().to_owned();
    assert!(
        urn.starts_with("urn:smn:") && urn.ends_with(":alerts"),
        "{urn}"
    );
    let listed = admin_json(&["topics", "list"]);
    assert_eq!(listed_names(&listed), ["alerts"]);
    assert_eq!(listed[0]["display_name"], "Ops");

    let sub = admin_json(&[
        "topics",
        "subscriptions",
        "add",
        &urn,
        "https",
        "https://hooks.example.com/cts",
    ]);
    assert_eq!(sub["secret"].as_str().unwrap().len(), 64, "{sub}");
    let sub_urn = sub["subscription_urn"].as_str().unwrap().to_owned();
    let subs = admin_json(&["topics", "subscriptions", "list", &urn]);
    assert_eq!(subs[0]["subscription_urn"], sub_urn.as_str());
    assert_eq!(subs[0]["endpoint"], "https://hooks.example.com/cts");
    let none = admin_json(&["topics", "deliveries", "--state", "dead"]);
    assert_eq!(none, serde_json::json!([]));

    // A broken rule is shown with its code and field.
    let err = stderr_of(&cts(
        &server,
        &["topics", "subscriptions", "add", &urn, "http", "ftp://x"],
    ));
    assert!(
        err.contains("CTS.0003") && err.contains("endpoint"),
        "{err}"
    );

    stdout_ok(&cts(
        &server,
        &["topics", "subscriptions", "remove", &sub_urn],
    ));
    assert_eq!(
        admin_json(&["topics", "subscriptions", "list", &urn]),
        serde_json::json!([])
    );
    stdout_ok(&cts(&server, &["topics", "delete", &urn]));
    assert_eq!(admin_json(&["topics", "list"]), serde_json::json!([]));
}
