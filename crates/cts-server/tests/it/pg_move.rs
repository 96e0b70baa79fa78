//! `ctsd migrate-from-embedded`: an embedded node's data directory moved
//! into PostgreSQL, and a PostgreSQL node carrying on from it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use crate::postgres::Cluster;
use crate::support::{now_ms, trace_with_id, Builder, TestServer};
use crate::transfer::{cts_binary, put, wait_for, Moto};

/// Settings of both nodes: short transfer periods into moto's S3.
fn transfer_env(b: Builder, moto: &Moto) -> Builder {
    b.env("CTS_TRANSFER_PERIOD", "10s")
        .env("CTS_TRANSFER_GRACE", "1s")
        .env("CTS_TRANSFER_DIGEST_PERIOD", "20s")
        .env("CTS_TRANSFER_MAX_BACKOFF", "2s")
        .env("CTS_OBS_ENDPOINT", &moto.url)
        .env("CTS_OBS_REGION", "us-east-1")
        .env("CTS_OBS_ACCESS_KEY", "testing")
        .env("CTS_OBS_SECRET_KEY", "testing")
}

/// `ctsd migrate-from-embedded --data-dir DIR ARGS` with the cluster's
/// settings.
pub(crate) fn migrate(cluster: &Cluster, dir: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&OsStr> = vec!["migrate-from-embedded".as_ref(), "--data-dir".as_ref()];
    all.push(dir.as_os_str());
    all.extend(args.iter().map(|a| a.as_ref() as &OsStr));
    cluster.run(&all, &[])
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every trace of the main project, by id.
fn traces_by_id(server: &TestServer) -> HashMap<String, Value> {
    let from = (now_ms() - 3_600_000).to_string();
    let to = (now_ms() + 60_000).to_string();
    let all = server.query_all(
        "main",
        &[("from", from), ("to", to), ("limit", "200".into())],
    );
    let mut by_id = HashMap::new();
    for t in all {
        let id = t["trace_id"].as_str().unwrap().to_string();
        assert!(by_id.insert(id.clone(), t).is_none(), "trace {id} twice");
    }
    by_id
}

/// The ECS test traces in the S3 bucket: trace id → files holding it.
fn in_bucket(moto: &Moto, bucket: &str) -> HashMap<String, usize> {
    let storage = moto.storage();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut count = HashMap::new();
        let Ok(objects) = storage.list(bucket, "CloudTraces/").await else {
            return count;
        };
        for o in objects.iter().filter(|o| o.key.contains("CloudTrace_")) {
            let bytes = storage.get(bucket, &o.key).await.unwrap();
            let json = cts_archive::open_trace_file(&o.key, &bytes, None).unwrap();
            let traces: Vec<Value> = serde_json::from_slice(&json).unwrap();
            for t in traces.iter().filter(|t| t["service_type"] == "ECS") {
                *count
                    .entry(t["trace_id"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
        count
    })
}

#[test]
fn an_embedded_node_moves_over_and_its_transfer_chain_goes_on() {
    let moto = Moto::start();
    let cluster = Cluster::start();
    let mut embedded = transfer_env(TestServer::builder(), &moto).start();
    let pid = embedded.admin.project_id.clone();
    let set = put(
        &embedded,
        &format!("/v3/{pid}/tracker"),
        &json!({"tracker_type": "system", "tracker_name": "system", "is_support_validate": true,
                "obs_info": {"bucket_name": "moved", "file_prefix_name": "audit",
                             "is_obs_created": true}}),
    );
    assert_eq!(set.status, 200, "{}", set.text);
    std::thread::sleep(Duration::from_millis(1500));
    let (mut ids, traces): (Vec<String>, Vec<Value>) =
        (0..30).map(|_| trace_with_id(now_ms() - 10)).unzip();
    embedded.report("main", &traces);
    wait_for(
        "trace files of the embedded node",
        Duration::from_secs(40),
        || in_bucket(&moto, "moved").len() == ids.len(),
    );
    // Traces the embedded node may not have transferred yet.
    let (late, traces): (Vec<String>, Vec<Value>) =
        (0..10).map(|_| trace_with_id(now_ms() - 10)).unzip();
    embedded.report("main", &traces);
    ids.extend(late);
    let before = traces_by_id(&embedded);
    let keys_before = embedded.get(&format!("/v3/{pid}/digest-public-keys")).body;

    // Refused while the embedded node serves its directory.
    let refused = migrate(&cluster, &embedded.data_dir, &[]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("stop it first"),
        "{}",
        text(&refused)
    );
    embedded.terminate();

    let moved = migrate(&cluster, &embedded.data_dir, &[]);
    let said = text(&moved);
    assert!(moved.status.success(), "{said}");
    let copied: usize = said
        .split("traces: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(copied >= before.len(), "{said}");
    assert!(said.contains("users: 1 copied"), "{said}");
    assert!(said.contains("access keys: 1 copied"), "{said}");
    assert!(said.contains("trackers: 1 copied"), "{said}");
    assert!(said.contains("digest signing keys: 1 copied"), "{said}");
    assert!(said.contains("cursors: "), "{said}");

    // A second run copies nothing new.
    let again = migrate(&cluster, &embedded.data_dir, &[]);
    let said = text(&again);
    assert!(again.status.success(), "{said}");
    assert!(said.contains("traces: 0 copied (0 already there"), "{said}");
    assert!(said.contains("users: 0 copied (1 already there)"), "{said}");
    assert!(said.contains("cursors: 0 moved"), "{said}");

    // A PostgreSQL node: the admin's access key signs (every request
    // below), every trace answers with the same JSON, the tracker and its
    // keys are there.
    let root = tempfile::tempdir().unwrap();
    let node = cluster.another_with(&embedded, root.path(), |b| transfer_env(b, &moto));
    let after = traces_by_id(&node);
    for (id, t) in &before {
        assert_eq!(after.get(id), Some(t), "trace {id}");
    }
    let tracker = node.get(&format!("/v3/{pid}/trackers?tracker_type=system"));
    assert_eq!(
        tracker.body["trackers"][0]["obs_info"]["bucket_name"], "moved",
        "{}",
        tracker.text
    );
    let keys_after = node.get(&format!("/v3/{pid}/digest-public-keys")).body;
    assert_eq!(keys_after, keys_before);

    // The transfer goes on: the late traces and new ones land in files,
    // every trace in exactly one, and the chain verifies.
    let (new, traces): (Vec<String>, Vec<Value>) =
        (0..10).map(|_| trace_with_id(now_ms() - 10)).unzip();
    node.report("main", &traces);
    ids.extend(new);
    wait_for(
        "trace files of the PostgreSQL node",
        Duration::from_secs(60),
        || in_bucket(&moto, "moved").len() == ids.len(),
    );
    let files = in_bucket(&moto, "moved");
    for id in &ids {
        assert_eq!(files.get(id), Some(&1), "{id}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (clean, report) = verify(&moto, &node, &pid);
        if clean {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "cts verify: {report}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `cts verify` of the bucket: (clean, report).
fn verify(moto: &Moto, node: &TestServer, pid: &str) -> (bool, String) {
    let keys = node.get(&format!("/v3/{pid}/digest-public-keys"));
    let file = node.root.join("keys.json");
    std::fs::write(&file, &keys.text).unwrap();
    let out = Command::new(cts_binary())
        .args(["verify", "--bucket", "moved", "--s3-endpoint", &moto.url])
        .args(["--s3-access-key", "testing", "--s3-secret-key", "testing"])
        .args(["--digest-period", "20s", "--output", "json"])
        .arg("--public-keys")
        .arg(&file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.success()
            && serde_json::from_str::<Value>(&report).is_ok_and(|r| r["clean"] == true),
        report,
    )
}

#[test]
fn a_move_killed_midway_and_run_again_stores_every_trace_once() {
    let cluster = Cluster::start();
    let mut embedded = TestServer::start();
    let traces: Vec<Value> = (0..60).map(|_| trace_with_id(now_ms() - 10).1).collect();
    embedded.report("main", &traces);
    let before = traces_by_id(&embedded);
    embedded.terminate();

    let killed = migrate(
        &cluster,
        &embedded.data_dir,
        &["--batch-size", "7", "--abort-after-batches", "3"],
    );
    assert!(!killed.status.success(), "{}", text(&killed));
    let resumed = migrate(&cluster, &embedded.data_dir, &["--batch-size", "7"]);
    let said = text(&resumed);
    assert!(resumed.status.success(), "{said}");
    assert!(
        said.contains("traces: 21 copied by an earlier run"),
        "{said}"
    );
    assert!(said.contains(" copied (0 already there"), "{said}");

    let root = tempfile::tempdir().unwrap();
    let node = cluster.another(&embedded, root.path());
    let after = traces_by_id(&node);
    for (id, t) in &before {
        assert_eq!(after.get(id), Some(t), "trace {id}");
    }
}
