//! A tracker's transfer across ctsd nodes on PostgreSQL: the node holding
//! its lease is killed (-9) in the middle of a period's upload to an S3
//! server while traces go on arriving through every node; another node
//! takes the transfer over and every acknowledged trace ends up in exactly
//! one trace file, under a digest chain that verifies.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::postgres::Cluster;
use crate::support::{batch, now_ms, trace_with_id, TestServer};
use crate::transfer::{cts_binary, put, wait_for, Moto, FAST};

const BUCKET: &str = "pg-archive";

/// One trace file per service and period: a period's upload is several
/// objects, so a kill can fall between them.
const SERVICES: [&str; 6] = ["ECS", "EVS", "VPC", "OBS", "RDS", "ELB"];

/// Reports batches of traces through `node` until `stop`, or until the
/// node stops answering (killed); returns the ids acknowledged with a 201.
fn writer(node: &TestServer, stop: Arc<AtomicBool>) -> JoinHandle<Vec<String>> {
    let signer = node.signer();
    let path = format!("/v3/{}/traces", node.admin.project_id);
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut acked = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let (ids, traces): (Vec<String>, Vec<Value>) = SERVICES
                .iter()
                .map(|service| {
                    let (id, mut t) = trace_with_id(now_ms());
                    t["service_type"] = json!(service);
                    (id, t)
                })
                .unzip();
            let body = serde_json::to_vec(&batch(&traces)).unwrap();
            match signer.try_send(&client, "POST", &path, Some(("application/json", body))) {
                Ok(answer) if answer.status == 201 => acked.extend(ids),
                _ => break,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        acked
    })
}

/// The node holding the transfer lease of the (one) tracker, as its row
/// names it; empty while nobody holds it.
fn transfer_holder(cluster: &Cluster) -> String {
    cluster.sql("SELECT holder FROM leases WHERE consumer = 'transfer' AND expires_at > now()")
}

#[test]
fn kill_9_of_the_transfer_lease_holder_across_nodes_writes_each_trace_once() {
    let moto = Moto::start();
    let cluster = FAST
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(moto.env().map(|(k, v)| (k.to_string(), v)))
        .fold(Cluster::start(), |c, (k, v)| c.with(&k, &v))
        // Short leases: a takeover costs the test seconds.
        .with("CTS_LEASES_TTL", "2s")
        .with("CTS_LEASES_RENEW_EVERY", "500ms");
    let a = cluster.node().start();
    let roots = tempfile::tempdir().unwrap();
    let b = cluster.another(&a, &roots.path().join("b"));
    let c = cluster.another(&a, &roots.path().join("c"));
    let pid = a.admin.project_id.clone();
    let set = put(
        &b,
        &format!("/v3/{pid}/tracker"),
        &json!({"tracker_type": "system", "tracker_name": "system", "is_support_validate": true,
                "obs_info": {"bucket_name": BUCKET, "file_prefix_name": "audit",
                             "is_obs_created": true}}),
    );
    assert_eq!(set.status, 200, "{}", set.text);
    let mut nodes = [a, b, c];
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = nodes.iter().map(|n| writer(n, stop.clone())).collect();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let storage = moto.storage();
    let trace_files = || -> HashSet<String> {
        let listed = runtime.block_on(storage.list(BUCKET, "CloudTraces/"));
        listed
            .unwrap_or_default()
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.contains("CloudTrace_"))
            .collect()
    };
    wait_for("a first period's files", Duration::from_secs(40), || {
        !trace_files().is_empty()
    });
    let holder = transfer_holder(&cluster);
    let victim = nodes
        .iter()
        .position(|n| !holder.is_empty() && n.log().contains(&holder))
        .unwrap_or_else(|| panic!("no node is the holder {holder:?}"));

    // The kill falls in the holder's next upload: as soon as its first new
    // object is there.
    let before = trace_files();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut during = trace_files();
    while during.len() == before.len() {
        assert!(Instant::now() < deadline, "no second period within 30 s");
        std::thread::sleep(Duration::from_millis(20));
        during = trace_files();
    }
    nodes[victim].kill();
    let killed = Instant::now();
    let written_at_kill = during.len() - before.len();
    wait_for(
        "another node holding the transfer",
        Duration::from_secs(30),
        || {
            let now = transfer_holder(&cluster);
            !now.is_empty() && now != holder
        },
    );
    let takeover = killed.elapsed();
    // Traces keep coming through the live nodes over the takeover.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let per_node: Vec<Vec<String>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for (i, acked) in per_node.iter().enumerate() {
        assert!(!acked.is_empty(), "node {i} acknowledged nothing");
    }
    let acked: Vec<&String> = per_node.iter().flatten().collect();

    let archived = || moto.archived(&runtime, BUCKET, &SERVICES);
    wait_for(
        "every acknowledged trace in a file",
        Duration::from_secs(60),
        || {
            let got = archived();
            acked.iter().all(|id| got.contains_key(*id))
        },
    );
    let got = archived();
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "traces in more than one file: {twice:?}");
    let after = trace_files();
    println!(
        "{} traces acknowledged, {} files; killed after {written_at_kill} of a period's files; \
         taken over in {takeover:?}",
        acked.len(),
        after.len(),
    );

    // The digest chain verifies, offline, with the public keys.
    let keys = nodes[(victim + 1) % 3].get(&format!("/v3/{pid}/digest-public-keys"));
    assert_eq!(keys.status, 200, "{}", keys.text);
    let keys_file = roots.path().join("keys.json");
    std::fs::write(&keys_file, &keys.text).unwrap();
    wait_for("a digest", Duration::from_secs(40), || {
        let listed = runtime.block_on(storage.list(BUCKET, "CloudTraces/"));
        listed
            .unwrap_or_default()
            .iter()
            .any(|o| o.key.contains("CloudTrace-Digest_"))
    });
    verify_clean(&moto, &keys_file);
}

/// `cts verify` of [`BUCKET`] on `moto` reports nothing.
fn verify_clean(moto: &Moto, keys_file: &Path) {
    let mut verify = Command::new(cts_binary());
    verify
        .args(["verify", "--bucket", BUCKET, "--digest-period", "20s"])
        .arg("--public-keys")
        .arg(keys_file)
        .args(["--output", "json"]);
    for (k, v) in moto.env() {
        verify.env(k, v);
    }
    let out = verify.output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{report}");
    assert_eq!(report["clean"], true, "{report}");
}
