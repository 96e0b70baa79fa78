//! Trace transfer through the real server into the local object directory
//! (`DATA_DIR/obs`): trace files per period, digests, a missing bucket and
//! its recovery, age encryption decrypted with the `age` tool, checkbucket,
//! and kill -9 in the middle of transfers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cts_archive::open_trace_file;
use serde_json::{json, Value};

use crate::support::*;

/// Periods of 10 s and digest windows of 20 s.
pub(crate) const FAST: [(&str, &str); 4] = [
    ("CTS_TRANSFER_PERIOD", "10s"),
    ("CTS_TRANSFER_GRACE", "1s"),
    ("CTS_TRANSFER_DIGEST_PERIOD", "20s"),
    ("CTS_TRANSFER_MAX_BACKOFF", "2s"),
];

/// A server with [`FAST`] transfer periods.
fn fast() -> Builder {
    FAST.iter()
        .fold(TestServer::builder(), |b, (k, v)| b.env(k, v))
}

/// Sets the obs_info of the main project's management tracker.
pub(crate) fn set_transfer(server: &TestServer, obs_info: Value) {
    let pid = &server.admin.project_id;
    let a = put(
        server,
        &format!("/v3/{pid}/tracker"),
        &json!({"tracker_type": "system", "tracker_name": "system", "obs_info": obs_info}),
    );
    assert_eq!(a.status, 200, "{}", a.text);
}

pub(crate) fn put(server: &TestServer, path: &str, body: &Value) -> Answer {
    server.signer().send(
        server.client(),
        "PUT",
        path,
        Some(("application/json", serde_json::to_vec(body).unwrap())),
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// trace_id → how many trace files of `bucket` hold it (ECS test traces only).
fn archived(server: &TestServer, bucket: &str, identity: Option<&str>) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for t in archived_traces(server, bucket, identity) {
        if t["service_type"] == "ECS" {
            *count
                .entry(t["trace_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    count
}

/// Every trace in the trace files of `bucket`.
fn archived_traces(server: &TestServer, bucket: &str, identity: Option<&str>) -> Vec<Value> {
    let root = server.data_dir.join("obs").join(bucket);
    let mut all = Vec::new();
    for f in files_under(&root) {
        let key = f.strip_prefix(&root).unwrap().to_str().unwrap().to_string();
        // Trace files are `…CloudTrace_…`; digests `…CloudTrace-Digest_…`;
        // `…#digits` is a file being written.
        if !key.contains("CloudTrace_") || key.ends_with(".metadata.json") || key.contains('#') {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap();
        let identity = identity.map(|i| i.parse().unwrap());
        let json = open_trace_file(&key, &bytes, identity.as_ref()).unwrap();
        let traces: Vec<Value> = serde_json::from_slice(&json).unwrap();
        all.extend(traces);
    }
    all
}

pub(crate) fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        if std::env::var("CTS_DEBUG_TRANSFER").is_ok() {
            eprintln!("waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn tracker_status(server: &TestServer) -> Value {
    let pid = &server.admin.project_id;
    let a = server.get(&format!("/v3/{pid}/trackers?tracker_type=system"));
    a.body["trackers"][0].clone()
}

#[test]
fn traces_land_in_files_once_with_verifiable_digests() {
    // Small memtables: index segments are written too.
    let server = fast().env("CTS_STORE_MEMTABLE_MAX_TRACES", "16").start();
    let pid = server.admin.project_id.clone();
    let a = put(
        &server,
        &format!("/v3/{pid}/tracker"),
        &json!({"tracker_type": "system", "tracker_name": "system", "is_support_validate": true,
                "obs_info": {"bucket_name": "cts-archive", "file_prefix_name": "audit", "is_obs_created": true}}),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    let now = now_ms();
    let (ids, traces): (Vec<String>, Vec<Value>) = (0..40).map(|_| trace_with_id(now - 10)).unzip();
    server.report("main", &traces);
    wait_for("the trace files", Duration::from_secs(40), || {
        archived(&server, "cts-archive", None).len() == ids.len()
    });
    let got = archived(&server, "cts-archive", None);
    for id in &ids {
        assert_eq!(got.get(id), Some(&1), "{id}");
    }
    let root = server.data_dir.join("obs/cts-archive");
    let names: Vec<String> = files_under(&root)
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap().to_str().unwrap().to_string())
        .collect();
    let region = &server.admin.region;
    let file = names
        .iter()
        .find(|n| n.contains("/system/ECS/"))
        .expect("a file in the ECS folder");
    // The reference's layout: the prefix is in the name only.
    assert!(
        file.starts_with(&format!("CloudTraces/{region}/")),
        "{file}"
    );
    assert!(
        file.contains(&format!("/audit_CloudTrace_{region}-{pid}_")) && file.ends_with(".json.gz"),
        "{file}"
    );
    // A digest with its signature in the metadata sidecar, and the key
    // that verifies it.
    wait_for("a digest", Duration::from_secs(40), || {
        files_under(&root).iter().any(|p| {
            p.to_str().unwrap().contains("/Digest/ECS/")
                && !p.to_str().unwrap().ends_with(".metadata.json")
        })
    });
    let sidecar = files_under(&root)
        .into_iter()
        .find(|p| {
            p.to_str().unwrap().contains("/Digest/ECS/")
                && p.to_str().unwrap().ends_with(".metadata.json")
        })
        .unwrap();
    let meta: Value = serde_json::from_slice(&std::fs::read(sidecar).unwrap()).unwrap();
    assert_eq!(meta["meta-signature-algorithm"], "SHA256withRSA");
    assert!(meta["meta-signature"].as_str().unwrap().len() >= 512);
    let keys = server.get(&format!("/v3/{pid}/digest-public-keys"));
    assert_eq!(keys.status, 200, "{}", keys.text);
    assert!(keys.body["keys"][0]["public_key"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    // The backlog is visible.
    let metrics = server.get("/metrics").text;
    assert!(
        metrics.contains("cts_transfer_backlog_traces{project_id=\""),
        "{metrics}"
    );

    // `cts verify` checks the files offline with the public keys only...
    let keys_file = server.root.join("keys.json");
    std::fs::write(&keys_file, &keys.text).unwrap();
    let verify = || {
        // The bucket's own directory; its only prefix is found.
        Command::new(cts_binary())
            .args(["verify", "--local"])
            .arg(&root)
            .args(["--digest-period", "20s"])
            .arg("--public-keys")
            .arg(&keys_file)
            .args(["--output", "json"])
            .output()
            .unwrap()
    };
    let out = verify();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{report}");
    assert_eq!(report["clean"], true, "{report}");

    // Everything the server wrote (journal, index segments, archive files,
    // keys, databases, transfer state) is private to its user.
    wait_for("an index segment", Duration::from_secs(10), || {
        files_under(&server.data_dir.join("index"))
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "seg"))
    });
    assert_private(&server.data_dir);
    // ...and reports trace files that were altered.
    for f in files_under(&root) {
        let name = f.to_str().unwrap();
        if name.contains("CloudTrace_") && !name.ends_with(".metadata.json") {
            let mut bytes = std::fs::read(&f).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0x55;
            std::fs::write(&f, bytes).unwrap();
        }
    }
    let out = verify();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success(), "{report}");
    assert!(report.to_string().contains("file_altered"), "{report}");
}

/// Every file under `dir` is 0600 and every directory 0700.
fn assert_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut open = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            let want = if meta.is_dir() { 0o700 } else { 0o600 };
            let mode = meta.permissions().mode() & 0o777;
            if mode != want {
                open.push(format!("{:o} {}", mode, e.path().display()));
            }
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(open.is_empty(), "not private:\n{}", open.join("\n"));
}

/// The `cts` binary, built by `cargo build --workspace --bins` (scripts/test.sh).
pub(crate) fn cts_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/cts");
    assert!(
        path.exists(),
        "{} is missing: build it with cargo build -p cts-cli",
        path.display()
    );
    path
}

/// moto's S3 server on a free loopback port (scripts/s3-test-server.sh
/// installs it); killed when dropped.
pub(crate) struct Moto {
    child: std::process::Child,
    pub(crate) url: String,
}

impl Moto {
    pub(crate) fn start() -> Moto {
        let bin =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/s3-venv/bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/s3-test-server.sh (scripts/test.sh does)",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        wait_for("moto", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Moto { child, url }
    }

    /// The settings of a ctsd node that writes its trace files here.
    pub(crate) fn env(&self) -> [(&'static str, String); 4] {
        [
            ("CTS_OBS_ENDPOINT", self.url.clone()),
            ("CTS_OBS_REGION", "us-east-1".into()),
            ("CTS_OBS_ACCESS_KEY", "testing".into()),
            ("CTS_OBS_SECRET_KEY", "testing".into()),
        ]
    }

    pub(crate) fn storage(&self) -> cts_archive::ObjectStorage {
        cts_archive::ObjectStorage::new(cts_archive::StorageConfig::S3(cts_archive::S3Config {
            endpoint: Some(self.url.clone()),
            region: "us-east-1".into(),
            access_key: "testing".into(),
            secret_key: "testing".into(),
            path_style: true,
            allow_http: true,
        }))
        .unwrap()
    }

    /// The trace files of `bucket` (none while it does not exist): key and
    /// traces, opened (neither digests nor their sidecars).
    pub(crate) fn trace_files(
        &self,
        runtime: &tokio::runtime::Runtime,
        bucket: &str,
    ) -> Vec<(String, Vec<Value>)> {
        let storage = self.storage();
        runtime.block_on(async {
            let Ok(objects) = storage.list(bucket, "CloudTraces/").await else {
                return Vec::new();
            };
            let mut files = Vec::new();
            for o in objects.iter().filter(|o| o.key.contains("CloudTrace_")) {
                let bytes = storage.get(bucket, &o.key).await.unwrap();
                let json = open_trace_file(&o.key, &bytes, None).unwrap();
                files.push((o.key.clone(), serde_json::from_slice(&json).unwrap()));
            }
            files
        })
    }

    /// trace_id → how many trace files of `bucket` hold it (the given
    /// services' traces only).
    pub(crate) fn archived(
        &self,
        runtime: &tokio::runtime::Runtime,
        bucket: &str,
        services: &[&str],
    ) -> HashMap<String, usize> {
        let mut count = HashMap::new();
        for (_, traces) in self.trace_files(runtime, bucket) {
            for t in traces {
                if services.iter().any(|s| t["service_type"] == *s) {
                    let id = t["trace_id"].as_str().unwrap().to_string();
                    *count.entry(id).or_default() += 1;
                }
            }
        }
        count
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn traces_land_in_an_s3_bucket() {
    let moto = Moto::start();
    let server = moto
        .env()
        .iter()
        .fold(fast(), |b, (k, v)| b.env(k, v))
        .start();
    set_transfer(
        &server,
        json!({"bucket_name": "s3-archive", "file_prefix_name": "audit", "is_obs_created": true,
                             "bucket_lifecycle": 30}),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let now = now_ms();
    let (ids, traces): (Vec<String>, Vec<Value>) = (0..25).map(|_| trace_with_id(now - 10)).unzip();
    server.report("main", &traces);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // bucket_lifecycle is the bucket's lifecycle rule, set with the tracker.
    let days = runtime.block_on(moto.storage().lifecycle_days("s3-archive"));
    assert_eq!(days.unwrap(), Some(30));
    let in_s3 = || moto.archived(&runtime, "s3-archive", &["ECS"]);
    wait_for("the trace files in S3", Duration::from_secs(40), || {
        in_s3().len() == ids.len()
    });
    let got = in_s3();
    for id in &ids {
        assert_eq!(got.get(id), Some(&1), "{id}");
    }
}

#[test]
fn a_missing_bucket_turns_the_tracker_to_error_and_back() {
    let server = fast().start();
    // The bucket exists when the tracker is set (else it is refused), and
    // is removed after.
    let bucket_dir = server.data_dir.join("obs/not-yet");
    std::fs::create_dir_all(&bucket_dir).unwrap();
    set_transfer(
        &server,
        json!({"bucket_name": "not-yet", "is_obs_created": false}),
    );
    std::fs::remove_dir(&bucket_dir).unwrap();
    let now = now_ms();
    let (ids, traces): (Vec<String>, Vec<Value>) = (0..10).map(|_| trace_with_id(now - 10)).unzip();
    server.report("main", &traces);
    wait_for("status error", Duration::from_secs(40), || {
        tracker_status(&server)["status"] == "error"
    });
    assert_eq!(tracker_status(&server)["detail"], "noBucket");
    let metrics = server.get("/metrics").text;
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cts_transfer_failures_total "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(failures >= 1, "every failed write counts: {metrics}");
    // checkbucket says so too.
    let domain = server.admin.domain_id.clone();
    let a = server.post_json(
        &format!("/v3/{domain}/checkbucket"),
        &json!({"buckets": [{"bucket_name": "not-yet", "bucket_location": "eu-de"}]}),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    let r = &a.body["buckets"][0]["check_bucket_response"];
    assert_eq!(r["success"], false, "{r}");
    assert_eq!(r["error_code"], "noBucket", "{r}");
    // Ingest and queries go on meanwhile.
    let more = trace_with_id(now_ms() - 10);
    server.report("main", std::slice::from_ref(&more.1));
    assert_eq!(server.by_id("main", &more.0).len(), 1);
    // The bucket appears: transfer resumes by itself, nothing lost.
    std::fs::create_dir_all(server.data_dir.join("obs/not-yet")).unwrap();
    wait_for("status enabled", Duration::from_secs(40), || {
        tracker_status(&server)["status"] == "enabled"
    });
    wait_for("every trace in a file", Duration::from_secs(40), || {
        let got = archived(&server, "not-yet", None);
        ids.iter()
            .chain([&more.0])
            .all(|id| got.get(id) == Some(&1))
    });
    let a = server.post_json(
        &format!("/v3/{domain}/checkbucket"),
        &json!({"buckets": [{"bucket_name": "not-yet"}]}),
    );
    assert_eq!(
        a.body["buckets"][0]["check_bucket_response"]["success"],
        true
    );
}

#[test]
fn encrypted_trace_files_open_with_the_age_tool() {
    let server = fast().start();
    let pid = server.admin.project_id.clone();
    let a = server.post_json(
        &format!("/v3/{pid}/encryption-keys"),
        &json!({"name": "archive-key", "generate": true}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let key_id = a.body["key"]["id"].as_str().unwrap().to_string();
    let identity = a.body["identity"].as_str().unwrap().to_string();
    assert!(identity.starts_with("AGE-SECRET-KEY-1"));
    // Only the public half is kept.
    let listed = server.get(&format!("/v3/{pid}/encryption-keys"));
    assert!(!listed.text.contains("AGE-SECRET-KEY"), "{}", listed.text);
    server
        .post_json(
            &format!("/v3/{pid}/encryption-keys"),
            &json!({"name": "bad", "recipient": "age1nope"}),
        )
        .assert_error(400, "CTS.0003");
    let a = put(
        &server,
        &format!("/v3/{pid}/tracker"),
        &json!({"tracker_type": "system", "tracker_name": "system",
                "is_support_trace_files_encryption": true, "kms_id": key_id,
                "obs_info": {"bucket_name": "sealed", "is_obs_created": true}}),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    // A key in use cannot go.
    let a = server.request(
        reqwest::Method::DELETE,
        &format!("/v3/{pid}/encryption-keys/{key_id}"),
    );
    a.assert_error(400, "CTS.0003");
    std::thread::sleep(Duration::from_millis(1500));
    let (id, t) = trace_with_id(now_ms() - 10);
    server.report("main", &[t]);
    wait_for("an encrypted file", Duration::from_secs(40), || {
        archived(&server, "sealed", Some(&identity)).contains_key(&id)
    });
    let file = files_under(&server.data_dir.join("obs/sealed"))
        .into_iter()
        .find(|p| p.to_str().unwrap().ends_with(".json.gz.age"))
        .expect("an .age file");
    let id_file = server.root.join("identity.txt");
    std::fs::write(&id_file, &identity).unwrap();
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&id_file)
        .arg(&file)
        .output()
        .expect("the age tool (Debian package age; scripts/test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut json = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&out.stdout[..]),
        &mut json,
    )
    .unwrap();
    let traces: Vec<Value> = serde_json::from_slice(&json).unwrap();
    assert!(traces.iter().any(|t| t["trace_id"] == id.as_str()));
}

#[test]
fn kill_9_during_transfers_loses_and_duplicates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut server = fast().root(root.path()).start();
    set_transfer(
        &server,
        json!({"bucket_name": "crashy", "is_obs_created": true}),
    );
    let mut ids = Vec::new();
    // Killed right after the change, before the transfer may have seen
    // the tracker: the period still counts from its start.
    let now = now_ms();
    let (batch_ids, traces): (Vec<String>, Vec<Value>) =
        (0..50).map(|_| trace_with_id(now - 10)).unzip();
    server.report("main", &traces);
    ids.extend(batch_ids);
    server.kill();
    server = fast().root(root.path()).start();
    // Several periods of traces, with a kill -9 in each.
    for round in 0..3 {
        let now = now_ms();
        let (batch_ids, traces): (Vec<String>, Vec<Value>) =
            (0..50).map(|_| trace_with_id(now - 10)).unzip();
        server.report("main", &traces);
        ids.extend(batch_ids);
        // Kill at varying moments around the period's end.
        std::thread::sleep(Duration::from_millis(7000 + round * 1700));
        server.kill();
        server = fast().root(root.path()).start();
    }
    wait_for(
        "every acknowledged trace in exactly one file",
        Duration::from_secs(60),
        || {
            let got = archived(&server, "crashy", None);
            ids.iter().all(|id| got.contains_key(id))
        },
    );
    let got = archived(&server, "crashy", None);
    for id in &ids {
        assert_eq!(got.get(id), Some(&1), "{id} is in {:?} files", got.get(id));
    }
    assert_eq!(got.len(), ids.len());
}

/// Issue 11.1: a tracker's first period is the one holding the change,
/// from its start on. Traces reported the moment a change is acknowledged
/// (no pause for the transfer to notice), and the change's own trace, are
/// each in exactly one file, over a loop of changes.
#[test]
fn traces_right_after_tracker_changes_are_archived() {
    let server = fast().start();
    let pid = server.admin.project_id.clone();
    set_transfer(
        &server,
        json!({"bucket_name": "sys-archive", "is_obs_created": true}),
    );
    let (mut ids, traces): (Vec<String>, Vec<Value>) =
        (0..100).map(|_| trace_with_id(now_ms() - 10)).unzip();
    server.report("main", &traces);
    // Data trackers gaining a bucket, one after the other, each reported
    // to at once.
    let mut data_ids: Vec<(String, String)> = Vec::new();
    for i in 0..6 {
        let (name, bucket) = (format!("d{i}"), format!("data-{i}"));
        let a = server.post_json(
            &format!("/v3/{pid}/tracker"),
            &json!({"tracker_type": "data", "tracker_name": name,
                    "data_bucket": {"data_bucket_name": format!("src-{i}"), "data_event": ["READ", "WRITE"]},
                    "obs_info": {"bucket_name": bucket, "is_obs_created": true}}),
        );
        assert_eq!(a.status, 201, "{}", a.text);
        let traces: Vec<Value> = (0..20)
            .map(|n| {
                let (id, mut t) = trace_with_id(now_ms() - 10);
                t["trace_type"] = json!("ObsAPI");
                t["service_type"] = json!("OBS");
                t["tracker_name"] = json!(name);
                t["resource_name"] = json!(format!("src-{i}/object-{n}"));
                t["read_only"] = json!(n % 2 == 0);
                data_ids.push((bucket.clone(), id));
                t
            })
            .collect();
        server.report("main", &traces);
        // The management tracker is disabled and enabled again: enabling is
        // a change too.
        let status = |s: &str| {
            let a = put(
                &server,
                &format!("/v3/{pid}/tracker"),
                &json!({"tracker_type": "system", "tracker_name": "system", "status": s}),
            );
            assert_eq!(a.status, 200, "{}", a.text);
        };
        status("disabled");
        status("enabled");
        let (more, traces): (Vec<String>, Vec<Value>) =
            (0..10).map(|_| trace_with_id(now_ms() - 10)).unzip();
        server.report("main", &traces);
        ids.extend(more);
    }
    let count = |bucket: &str| -> HashMap<String, usize> {
        let mut count = HashMap::new();
        for t in archived_traces(&server, bucket, None) {
            *count
                .entry(t["trace_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        count
    };
    wait_for("every trace in a file", Duration::from_secs(60), || {
        let sys = count("sys-archive");
        ids.iter().all(|id| sys.contains_key(id))
            && data_ids
                .iter()
                .all(|(bucket, id)| count(bucket).contains_key(id))
    });
    let sys = count("sys-archive");
    for id in &ids {
        assert_eq!(sys.get(id), Some(&1), "{id}");
    }
    for (bucket, id) in &data_ids {
        assert_eq!(count(bucket).get(id), Some(&1), "{bucket} {id}");
    }
    // The changes' own traces: the first update, each data tracker's
    // creation; once each.
    let own = archived_traces(&server, "sys-archive", None);
    let named = |name: &str| own.iter().filter(|t| t["trace_name"] == name).count();
    assert_eq!(named("createTracker"), 6, "{own:?}");
    assert!(named("updateTracker") >= 1, "{own:?}");
    let metrics = server.get("/metrics").text;
    assert!(
        metrics.contains("cts_transfer_skipped_traces_total 0"),
        "{metrics}"
    );
}

#[test]
fn digest_keys_rotate_while_the_server_runs() {
    let server = fast().start();
    let pid = server.admin.project_id.clone();
    let keys = || server.get(&format!("/v3/{pid}/digest-public-keys")).body["keys"].clone();
    let before = keys();
    assert_eq!(before.as_array().unwrap().len(), 1, "{before}");
    assert!(before[0]["valid_to"].is_null());
    let out = Command::new(env!("CARGO_BIN_EXE_ctsd"))
        .args(["rotate-digest-key", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = keys();
    assert_eq!(after.as_array().unwrap().len(), 2, "{after}");
    assert_eq!(after[0]["fingerprint"], before[0]["fingerprint"]);
    assert!(after[0]["valid_to"].is_string(), "{after}");
    assert!(after[1]["valid_to"].is_null());
    assert_ne!(after[1]["fingerprint"], before[0]["fingerprint"]);
}

/// Enabling a disabled management tracker with a bucket is itself on
/// record: its `updateTracker` trace is queryable, and in a trace file
/// once, with nothing else reported.
#[test]
fn the_change_that_enables_recording_is_recorded_and_archived() {
    let server = fast().start();
    let pid = server.admin.project_id.clone();
    let path = format!("/v3/{pid}/tracker");
    let a = put(
        &server,
        &path,
        &json!({"tracker_type": "system", "tracker_name": "system", "status": "disabled"}),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    let a = put(
        &server,
        &path,
        &json!({"tracker_type": "system", "tracker_name": "system", "status": "enabled",
                "obs_info": {"bucket_name": "enable-archive", "is_obs_created": true}}),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    let enables = |traces: &[Value]| {
        traces
            .iter()
            .filter(|t| {
                t["trace_name"] == "updateTracker"
                    && t["request"]
                        .as_str()
                        .unwrap_or("")
                        .contains("enable-archive")
            })
            .count()
    };
    let listed = server.get(&format!("/v3/{pid}/traces?trace_name=updateTracker"));
    assert_eq!(listed.status, 200, "{}", listed.text);
    let listed = listed.body["traces"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(enables(&listed), 1, "{listed:?}");
    wait_for(
        "the enable in a trace file",
        Duration::from_secs(40),
        || enables(&archived_traces(&server, "enable-archive", None)) > 0,
    );
    let own = archived_traces(&server, "enable-archive", None);
    assert_eq!(enables(&own), 1, "{own:?}");
}
