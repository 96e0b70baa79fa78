//! Trace analysis (issue 16) through the real server into a real OTLP/HTTP
//! receiver (`scripts/otlp-test-receiver.py`, decoding with the official
//! `opentelemetry-proto` package): what a tracker with `lts` on streams,
//! what others do not, a receiver down and back, kill -9 of ctsd, and a
//! TLS receiver the configured CA does not sign.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;
use crate::transfer::{put, wait_for};

/// The OTLP receiver, killed when dropped.
struct Receiver {
    child: Option<Child>,
    port: u16,
    out: PathBuf,
    tls: Option<(PathBuf, PathBuf)>,
    _dir: tempfile::TempDir,
}

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Receiver {
    fn start(tls: Option<(PathBuf, PathBuf)>) -> Receiver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let mut r = Receiver {
            child: None,
            port,
            out: dir.path().join("received.jsonl"),
            tls,
            _dir: dir,
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let python = std::env::var("CTS_TEST_OTLP_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo().join("target/s3-venv/bin/python"));
        let mut cmd = Command::new(&python);
        cmd.arg(repo().join("scripts/otlp-test-receiver.py"))
            .arg(self.port.to_string())
            .arg(&self.out);
        if let Some((cert, key)) = &self.tls {
            cmd.env("OTLP_TLS_CERT", cert).env("OTLP_TLS_KEY", key);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/test-deps.sh installs it)",
                python.display()
            )
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the OTLP receiver does not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Every record received so far.
    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// trace_id → how many times it arrived.
    fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.records() {
            let id = r["attributes"]["cts.trace_id"]
                .as_str()
                .unwrap()
                .to_string();
            *counts.entry(id).or_default() += 1;
        }
        counts
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn server_for(receiver: &Receiver, root: Option<&Path>) -> TestServer {
    let mut b = sink_builder(receiver);
    if let Some(root) = root {
        b = b.root(root);
    }
    b.start()
}

/// A server whose `default` sink is `receiver`.
fn sink_builder(receiver: &Receiver) -> Builder {
    TestServer::builder()
        .env("CTS_LTS_KIND", "otlp")
        .env("CTS_LTS_ENDPOINT", &receiver.endpoint())
        .env("CTS_LTS_INTERVAL", "200ms")
        .env("CTS_LTS_MAX_BACKOFF", "1s")
        .env("CTS_TRANSFER_PERIOD", "10s")
}

pub(crate) fn set_lts(server: &TestServer, kind: &str, name: &str, on: bool) {
    let pid = &server.admin.project_id;
    let body = json!({"tracker_type": kind, "tracker_name": name, "is_lts_enabled": on});
    let a = put(server, &format!("/v3/{pid}/tracker"), &body);
    assert_eq!(a.status, 200, "{}", a.text);
}

/// A self-signed certificate and key of 127.0.0.1 for a receiver, and a
/// CA that does not sign it, written into `dir`.
pub(crate) fn test_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let write = |name: &str, pem: String| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let receiver = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let cert = write("cert.pem", receiver.cert.pem());
    let key = write("key.pem", receiver.key_pair.serialize_pem());
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    (cert, key, write("wrong-ca.pem", other.cert.pem()))
}

/// Waits until the system tracker shows `lts` status `error` with `detail`.
pub(crate) fn wait_for_lts_error(server: &TestServer, detail: &str) {
    wait_for(
        &format!("the tracker to show lts error {detail}"),
        Duration::from_secs(20),
        || {
            let lts = &system_tracker(server)["lts"];
            lts["status"] == "error" && lts["detail"] == detail
        },
    );
}

pub(crate) fn system_tracker(server: &TestServer) -> Value {
    let pid = &server.admin.project_id;
    let a = server.get(&format!("/v3/{pid}/trackers?tracker_type=system"));
    a.body["trackers"][0].clone()
}

/// `n` ECS traces with ids of their own, every third a warning, every
/// fifth an incident.
pub(crate) fn traces(n: usize) -> (Vec<String>, Vec<Value>) {
    let now = now_ms();
    (0..n)
        .map(|i| {
            let (id, mut t) = trace_with_id(now - 10);
            t["trace_rating"] = json!(match i % 15 {
                0 => "incident",
                3 | 6 | 9 | 12 => "warning",
                _ => "normal",
            });
            t["resource_name"] = json!(format!("vm-{i}"));
            (id, t)
        })
        .unzip()
}

fn data_trace(tracker: &str) -> (String, Value) {
    let (id, mut t) = trace_with_id(now_ms() - 10);
    t["trace_type"] = json!("ObsAPI");
    t["service_type"] = json!("OBS");
    t["tracker_name"] = json!(tracker);
    t["resource_name"] = json!(format!("{tracker}/cat.jpg"));
    t["read_only"] = json!(true);
    (id, t)
}

/// Issue 16: every trace of a tracker with `lts` on arrives once, with the
/// right fields; another project's tracker (off) sends nothing; a data
/// tracker sends only its bucket's traces, a data tracker with `lts` off
/// nothing.
#[test]
fn every_trace_of_an_enabled_tracker_arrives_once_with_its_fields() {
    let receiver = Receiver::start(None);
    let server = server_for(&receiver, None);
    let pid = server.admin.project_id.clone();
    server.data_tracker("main", "photos");
    server.data_tracker("main", "videos");
    set_lts(&server, "system", "system", true);
    set_lts(&server, "data", "photos", true);
    let (ids, batch) = traces(60);
    server.report("main", &batch);
    let (other_ids, other) = traces(10);
    server.report("other", &other);
    let (photo, photo_trace) = data_trace("photos");
    let (video, video_trace) = data_trace("videos");
    server.report("main", &[photo_trace, video_trace]);

    wait_for(
        "every trace at the receiver",
        Duration::from_secs(30),
        || {
            let got = receiver.counts();
            ids.iter().all(|id| got.contains_key(id)) && got.contains_key(&photo)
        },
    );
    // What might still come in error would come within a few passes.
    std::thread::sleep(Duration::from_secs(1));
    let got = receiver.counts();
    for id in ids.iter().chain([&photo]) {
        assert_eq!(got.get(id), Some(&1), "{id}");
    }
    for id in other_ids.iter().chain([&video]) {
        assert!(!got.contains_key(id), "{id} of a tracker with lts off");
    }

    let records = receiver.records();
    let tracker = system_tracker(&server);
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["attributes"]["cts.trace_id"] == id)
            .unwrap()
            .clone()
    };
    let r = by_id(&ids[3]);
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["trace_id"], ids[3].as_str());
    assert_eq!(
        r["time_unix_nano"].as_u64().unwrap(),
        body["time"].as_u64().unwrap() * 1_000_000
    );
    assert_eq!(
        (r["severity_text"].as_str(), r["severity_number"].as_u64()),
        (Some("WARN"), Some(13))
    );
    assert_eq!(by_id(&ids[0])["severity_text"], "ERROR");
    assert_eq!(by_id(&ids[1])["severity_text"], "INFO");
    let a = &r["attributes"];
    assert_eq!(a["cts.service_type"], "ECS");
    assert_eq!(a["cts.resource_type"], "ecs");
    assert_eq!(a["cts.resource_name"], "vm-3");
    assert_eq!(a["cts.trace_name"], "createServer");
    assert_eq!(a["cts.user"], "alice");
    assert_eq!(a["cts.source_ip"], "10.0.0.1");
    assert_eq!(a["cts.code"], "200");
    let res = &r["resource"];
    assert_eq!(res["cts.project_id"], pid.as_str());
    assert_eq!(res["cts.log_group"], "CTS");
    assert_eq!(res["cts.log_topic"], "system-trace");
    assert!(res["cts.region"].is_string());
    // The ids in the tracker answer name this stream, and stay.
    assert_eq!(res["cts.log_group_id"], tracker["group_id"]);
    assert_eq!(res["cts.log_stream_id"], tracker["stream_id"]);
    assert_eq!(system_tracker(&server)["stream_id"], tracker["stream_id"]);
    assert_eq!(tracker["lts"]["status"], "enabled", "{tracker}");
    assert_eq!(tracker["lts"]["is_lts_enabled"], true);
    let photo_record = by_id(&photo);
    assert_eq!(photo_record["resource"]["cts.log_topic"], "photos");
    assert_ne!(
        photo_record["resource"]["cts.log_stream_id"],
        tracker["stream_id"]
    );

    let metrics = server.get("/metrics").text;
    assert!(
        metrics.contains("cts_lts_delivered_traces_total{sink=\"default\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cts_lts_skipped_traces_total 0"),
        "{metrics}"
    );
}

/// A sink set to zstd (which the Collector decodes since v0.81) or to no
/// compression (a receiver on the same host) delivers every trace once,
/// the same records as gzip, each request marked as what it is.
#[test]
fn zstd_and_uncompressed_sinks_deliver_every_trace_once() {
    for (compression, encoding) in [("zstd", json!("zstd")), ("none", Value::Null)] {
        let receiver = Receiver::start(None);
        let server = sink_builder(&receiver)
            .env("CTS_LTS_COMPRESSION", compression)
            .start();
        set_lts(&server, "system", "system", true);
        let (ids, batch) = traces(40);
        server.report("main", &batch);
        wait_for(
            &format!("every trace at the receiver ({compression})"),
            Duration::from_secs(30),
            || {
                let got = receiver.counts();
                ids.iter().all(|id| got.contains_key(id))
            },
        );
        std::thread::sleep(Duration::from_secs(1));
        let got = receiver.counts();
        for id in &ids {
            assert_eq!(got.get(id), Some(&1), "{compression}: {id}");
        }
        for r in receiver.records() {
            assert_eq!(r["headers"]["content-encoding"], encoding, "{compression}");
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["trace_id"], r["attributes"]["cts.trace_id"]);
        }
        assert_eq!(system_tracker(&server)["lts"]["status"], "enabled");
    }
}

/// Issue 16: a receiver down for a while, then back, gets every trace
/// once, in order; the tracker says `error`/`unreachable` meanwhile. A
/// kill -9 of ctsd during delivery loses nothing (at least once).
#[test]
fn a_receiver_down_then_back_and_kill_9_lose_nothing() {
    let mut receiver = Receiver::start(None);
    let root = tempfile::tempdir().unwrap();
    let mut server = server_for(&receiver, Some(root.path()));
    set_lts(&server, "system", "system", true);
    let (mut ids, batch) = traces(20);
    server.report("main", &batch);
    wait_for("the first traces", Duration::from_secs(30), || {
        let got = receiver.counts();
        ids.iter().all(|id| got.contains_key(id))
    });

    receiver.stop();
    for _ in 0..5 {
        let (more, batch) = traces(40);
        server.report("main", &batch);
        ids.extend(more);
    }
    wait_for_lts_error(&server, "unreachable");
    receiver.restart();
    wait_for(
        "every trace after the receiver is back",
        Duration::from_secs(30),
        || {
            let got = receiver.counts();
            ids.iter().all(|id| got.contains_key(id))
        },
    );
    let got = receiver.counts();
    assert!(ids.iter().all(|id| got[id] == 1), "each once");
    // In order: the records of the journal order are the reported order.
    let order: Vec<String> = receiver
        .records()
        .iter()
        .map(|r| {
            r["attributes"]["cts.trace_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .filter(|id| ids.contains(id))
        .collect();
    assert_eq!(order, ids);
    wait_for("the tracker to recover", Duration::from_secs(10), || {
        system_tracker(&server)["lts"]["status"] == "enabled"
    });

    // kill -9 while traces are being delivered, several times.
    for round in 0..3 {
        let (more, batch) = traces(200);
        server.report("main", &batch);
        ids.extend(more);
        std::thread::sleep(Duration::from_millis(50 + round * 150));
        server.kill();
        server = server_for(&receiver, Some(root.path()));
    }
    wait_for(
        "every trace after the kills",
        Duration::from_secs(30),
        || {
            let got = receiver.counts();
            ids.iter().all(|id| got.contains_key(id))
        },
    );
}

/// Issue 16: a TLS receiver whose certificate the configured CA does not
/// sign is refused and shown as `error`/`tlsError`; with the right CA the
/// traces arrive.
#[test]
fn a_tls_receiver_the_ca_does_not_sign_shows_error() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, wrong_ca) = test_certs(dir.path());
    let receiver = Receiver::start(Some((cert.clone(), key)));
    let root = tempfile::tempdir().unwrap();
    let start = |ca: &Path| {
        TestServer::builder()
            .root(root.path())
            .env("CTS_LTS_KIND", "otlp")
            .env("CTS_LTS_ENDPOINT", &receiver.endpoint())
            .env("CTS_LTS_CA_FILE", ca.to_str().unwrap())
            .env("CTS_LTS_INTERVAL", "200ms")
            .env("CTS_LTS_MAX_BACKOFF", "1s")
            .start()
    };
    let mut server = start(&wrong_ca);
    set_lts(&server, "system", "system", true);
    let (ids, batch) = traces(5);
    server.report("main", &batch);
    wait_for_lts_error(&server, "tlsError");
    assert!(receiver.records().is_empty());
    server.terminate();
    let server = start(&cert);
    wait_for(
        "the traces with the right CA",
        Duration::from_secs(20),
        || {
            let got = receiver.counts();
            ids.iter().all(|id| got.contains_key(id))
        },
    );
    assert_eq!(system_tracker(&server)["lts"]["status"], "enabled");
}
