//! What CTS records about itself: every trace the server makes is valid
//! whatever the caller sent, and a change whose trace cannot be written is
//! refused.

use serde_json::{json, Value};

use crate::support::*;

/// A request signed with the admin's key, carrying `user_agent`.
pub fn send_with_agent(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
    user_agent: &str,
) -> Answer {
    let url = format!("{}{path}", server.base);
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    cts_sign::sign_request(
        method,
        &url,
        &mut headers,
        &bytes,
        &server.admin.access_key,
        &server.admin.secret_key,
        cts_sign::unix_now(),
    )
    .unwrap();
    headers.push(("User-Agent".into(), user_agent.into()));
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = server.client().request(method, &url).body(bytes);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    answer(req.send().unwrap())
}

/// The traces of `project` named `trace_name`, newest first.
pub fn named(server: &TestServer, project: &str, trace_name: &str) -> Vec<Value> {
    let a = server.get(&format!(
        "/v3/{project}/traces?trace_name={trace_name}&limit=200"
    ));
    assert_eq!(a.status, 200, "{}", a.text);
    a.body["traces"].as_array().unwrap().clone()
}

#[test]
fn hostile_user_agents_are_recorded_not_dropped() {
    let server = TestServer::start();
    let pid = server.admin.project_id.clone();
    let long = "a".repeat(1025);
    let tab = "evil\tagent";
    for (i, agent) in [long.as_str(), tab].into_iter().enumerate() {
        let a = send_with_agent(
            &server,
            "POST",
            "/v3/users",
            Some(&json!({"user": {"name": format!("ua{i}"), "password": "Secret-pass-1"}})),
            agent,
        );
        assert_eq!(a.status, 201, "{}", a.text);
    }
    // Disabling the management tracker is on record, with the same agent.
    let a = send_with_agent(
        &server,
        "PUT",
        &format!("/v3/{pid}/tracker"),
        Some(&json!({"tracker_type": "system", "tracker_name": "system", "status": "disabled"})),
        tab,
    );
    assert_eq!(a.status, 200, "{}", a.text);
    // A refused signature too.
    let a = server
        .with(Cred::Key {
            ak: server.admin.access_key.clone(),
            sk: "not-the-secret-key-0000".into(),
        })
        .get(server.client(), &format!("/v3/{pid}/traces"));
    assert_eq!(a.status, 401);
    let a = send_with_agent(&server, "GET", "/v3/no-such/traces", None, &long);
    assert_eq!(a.status, 403, "{}", a.text);

    let created = named(&server, &pid, "createUser");
    assert_eq!(created.len(), 2, "{created:?}");
    let agents: Vec<&str> = created
        .iter()
        .map(|t| t["user_agent"].as_str().unwrap())
        .collect();
    assert!(
        agents.iter().all(|a| a.chars().count() <= 1024),
        "{agents:?}"
    );
    assert!(
        agents.iter().all(|a| !a.chars().any(char::is_control)),
        "{agents:?}"
    );
    assert!(agents.iter().any(|a| a.starts_with("evil")), "{agents:?}");
    let updated = named(&server, &pid, "updateTracker");
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert!(updated[0]["request"].as_str().unwrap().contains("disabled"));
    assert!(
        !server.log().contains("could not record an audit trace"),
        "{}",
        server.log()
    );
}

/// A small tmpfs mounted on a directory, unmounted when dropped (root only:
/// the tests run as root on the developers' machines and in CI).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs(dir.to_path_buf())
    }

    /// Fills the file system with `filler` until it is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..512]).is_ok() {}
        while f.write_all(&chunk[..1]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn changes_whose_trace_cannot_be_written_are_refused() {
    let root = tempfile::tempdir().unwrap();
    // Declared before the server: unmounted after it stops.
    let journal = Tmpfs::mount(&root.path().join("data").join("journal"), "16m");
    let server = TestServer::builder().root(root.path()).start();
    let pid = server.admin.project_id.clone();
    let user = |name: &str| {
        server.post_json(
            "/v3/users",
            &json!({"user": {"name": name, "password": "Secret-pass-1"}}),
        )
    };
    let a = user("before");
    assert_eq!(a.status, 201, "{}", a.text);
    let uid = a.body["user"]["id"].as_str().unwrap().to_string();

    let filler = journal.fill();
    // The journal file's last page may still have room: reports use it up.
    let full = (0..200).any(|_| {
        let a = server.post_traces("main", &batch(&[trace(now_ms())]));
        a.status == 500
    });
    assert!(full, "the journal never filled up");
    // A creation is undone, other changes are not made.
    user("unaudited").assert_error(503, "CTS.9008");
    let found = server.get("/v3/users?name=unaudited");
    assert_eq!(found.body["users"], json!([]), "{}", found.text);
    let grant = format!("/v3/projects/{pid}/users/{uid}/roles/cts_admin");
    server
        .request(reqwest::Method::PUT, &grant)
        .assert_error(503, "CTS.9008");
    assert_eq!(server.request(reqwest::Method::HEAD, &grant).status, 404);
    let disable = json!({"tracker_type": "system", "tracker_name": "system", "status": "disabled"});
    let a = server.signer().send(
        server.client(),
        "PUT",
        &format!("/v3/{pid}/tracker"),
        Some(("application/json", serde_json::to_vec(&disable).unwrap())),
    );
    a.assert_error(503, "CTS.9008");
    let t = server.get(&format!("/v3/{pid}/trackers?tracker_type=system"));
    assert_eq!(t.body["trackers"][0]["status"], "enabled", "{}", t.text);
    let a = server.request(reqwest::Method::DELETE, &format!("/v3/users/{uid}"));
    a.assert_error(503, "CTS.9008");
    assert_eq!(server.get(&format!("/v3/users/{uid}")).status, 200);

    // With room again, the same changes are made and on record.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(user("unaudited").status, 201);
    assert_eq!(server.request(reqwest::Method::PUT, &grant).status, 204);
    assert_eq!(named(&server, &pid, "createUser").len(), 2);
    assert_eq!(named(&server, &pid, "grantRole").len(), 1);
    assert!(named(&server, &pid, "updateTracker").is_empty());
    drop(server);
}

/// How many refusals the `authenticate` traces of `project` stand for: one
/// per trace recorded in full, N per summary ("N more refused …").
fn refusals_on_record(server: &TestServer, project: &str) -> (usize, u64) {
    let traces = named(server, project, "authenticate");
    let total = traces
        .iter()
        .map(|t| {
            let msg = t["message"].as_str().unwrap_or_default();
            match msg.split_once(" more refused credential(s)") {
                Some((n, _)) => n.parse::<u64>().unwrap(),
                None => 1,
            }
        })
        .sum();
    (traces.len(), total)
}

#[test]
fn refused_credentials_are_recorded_once_per_address_and_window() {
    let server = TestServer::builder()
        .env("CTS_AUTH_REFUSAL_AUDIT_WINDOW", "3s")
        .start();
    let pid = server.admin.project_id.clone();
    let path = format!("/v3/{pid}/traces");
    let bad_key = server.with(Cred::Key {
        ak: server.admin.access_key.clone(),
        sk: "not-the-secret-key-0000".into(),
    });
    let anonymous = server.with(Cred::Anonymous);
    for i in 0..300 {
        let who = if i % 2 == 0 { &bad_key } else { &anonymous };
        assert_eq!(who.get(server.client(), &path).status, 401);
    }
    // Every refusal is accounted for once its window has ended ...
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let (traces, total) = loop {
        let (traces, total) = refusals_on_record(&server, &pid);
        if total >= 300 || std::time::Instant::now() > deadline {
            break (traces, total);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(total, 300, "{traces} traces");
    // ... in a handful of traces, not 300.
    assert!(traces <= 4, "{traces} traces for 300 refusals");
    let metrics = server.get("/metrics").text;
    assert!(metrics.contains("cts_audit_traces_total"), "{metrics}");
}

/// A generated key pair's secret identity is answered once and never put
/// into the `createEncryptionKey` trace.
#[test]
fn generated_key_identities_stay_out_of_traces() {
    let server = TestServer::start();
    let pid = server.admin.project_id.clone();
    let a = server.post_json(
        &format!("/v3/{pid}/encryption-keys"),
        &json!({"name": "archive", "generate": true}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let identity = a.body["identity"].as_str().unwrap();
    assert!(identity.starts_with("AGE-SECRET-KEY-"), "{}", a.text);
    let created = named(&server, &pid, "createEncryptionKey");
    assert_eq!(created.len(), 1, "{created:?}");
    let text = created[0].to_string();
    assert!(!text.contains(identity), "{text}");
    assert!(
        text.contains(a.body["key"]["id"].as_str().unwrap()),
        "{text}"
    );
}
