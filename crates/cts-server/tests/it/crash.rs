//! kill -9 during ingest (and during segment merges), and a torn journal
//! tail: nothing acknowledged is lost or duplicated.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

const PROJECT: &str = "crash";

/// Reports batches of 100 traces with client-made ids until `stop` or an
/// error; returns the ids of every batch answered 201.
fn writer(signer: Signer, path: String, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    while !stop.load(Ordering::Relaxed) {
        let now = now_ms();
        let (ids, traces): (Vec<String>, Vec<Value>) = (0..100).map(|_| trace_with_id(now)).unzip();
        let body = serde_json::to_vec(&json!({ "traces": traces })).unwrap();
        let res = signer.try_send(&client, "POST", &path, Some(("application/json", body)));
        match res {
            Ok(r) if r.status == 201 => acked.lock().unwrap().extend(ids),
            Ok(r) => panic!("unexpected answer {}", r.text),
            // The server was killed under us.
            Err(_) => return,
        }
    }
}

/// Every acknowledged id is found exactly once in a full listing (which also
/// shows no duplicates), and each of `by_id` by its trace_id.
fn check_all_present(server: &TestServer, acked: &[String], by_id: &[String], since: i64) {
    let listing = server.query_all(
        PROJECT,
        &[
            ("from", (since - HOUR).to_string()),
            ("to", (now_ms() + MINUTE).to_string()),
            ("limit", "200".into()),
        ],
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    for id in ids(&listing) {
        *seen.entry(id).or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "a trace is listed twice");
    let missing: Vec<&String> = acked.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged traces lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    std::thread::scope(|s| {
        for part in by_id.chunks(by_id.len().div_ceil(4).max(1)) {
            s.spawn(move || {
                for id in part {
                    let page = server.query(
                        PROJECT,
                        &[
                            ("trace_id", id.clone()),
                            ("from", (since - HOUR).to_string()),
                            ("to", (now_ms() + MINUTE).to_string()),
                        ],
                    );
                    assert_eq!(page["meta_data"]["count"], 1, "{id}");
                }
            });
        }
    });
}

#[test]
fn acknowledged_traces_survive_kill_9_and_a_torn_tail() {
    let since = now_ms();
    let mut server = TestServer::start();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (signer, stop, acked) = (server.signer(), stop.clone(), acked.clone());
            let path = format!("/v3/{}/traces", server.pid(PROJECT));
            std::thread::spawn(move || writer(signer, path, stop, acked))
        })
        .collect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // While the writers are still sending.
    server.kill();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= 100, "the writers got nothing acknowledged");

    let root = server.root.clone();
    let restarted = TestServer::builder().root(&root).start();
    check_all_present(&restarted, &acked, &acked, since);
    drop(restarted);

    // A torn write at the end of the active (newest) journal file.
    let journal = wal_files(&server.data_dir).pop().expect("a journal file");
    let valid_len = std::fs::metadata(&journal).unwrap().len() as usize;
    // The start of a record (magic, a length past the end) and then what
    // the interrupted write left.
    let mut garbage = vec![0x52, 0x53, 0x54, 0x43];
    garbage.extend_from_slice(&4096u32.to_le_bytes());
    garbage.extend((8..1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap()
        .write_all(&garbage)
        .unwrap();
    let again = TestServer::builder().root(&root).start();
    // The tail was cut: whatever follows the valid records now is new records.
    let repaired = std::fs::read(&journal).unwrap();
    assert!(
        repaired.len() < valid_len + garbage.len()
            || repaired[valid_len..valid_len + garbage.len()] != garbage[..],
        "the torn tail is still in {}",
        journal.display()
    );
    // By id only the newest (those near the torn tail): the listing above
    // already covers the rest, and 2 × tens of thousands of lookups in a
    // debug build cost more than they tell.
    let newest = &acked[acked.len().saturating_sub(2000)..];
    check_all_present(&again, &acked, newest, since);
    // And it goes on recording.
    let (id, t) = trace_with_id(now_ms());
    again.report(PROJECT, &[t]);
    assert_eq!(again.by_id(PROJECT, &id).len(), 1);
}

/// Small memtables and a bound of 2 segments per partition: every other
/// flush starts a merge, so kills land in merges, at different points.
#[test]
fn kill_9_while_segments_merge_loses_and_duplicates_nothing() {
    let since = now_ms();
    let root = tempfile::tempdir().unwrap();
    let mut acked = Vec::new();
    let mut merges = 0;
    for (round, run_ms) in [900u64, 1300, 1700].into_iter().enumerate() {
        let mut server = TestServer::builder()
            .root(root.path())
            .env("CTS_STORE_MEMTABLE_MAX_TRACES", "200")
            .env("CTS_STORE_MAX_SEGMENTS_PER_PARTITION", "2")
            .start();
        if round > 0 {
            // Every trace acknowledged before the previous kill, once.
            let sample: Vec<String> = acked.iter().step_by(50).cloned().collect();
            check_all_present(&server, &acked, &sample, since);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let new_acks = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..3)
            .map(|_| {
                let (signer, stop, acks) = (server.signer(), stop.clone(), new_acks.clone());
                let path = format!("/v3/{}/traces", server.pid(PROJECT));
                std::thread::spawn(move || writer(signer, path, stop, acks))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(run_ms));
        merges += gauge(&server.get("/metrics").text, "cts_index_segment_merges");
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        acked.extend(std::mem::take(&mut *new_acks.lock().unwrap()));
    }
    let server = TestServer::builder().root(root.path()).start();
    let sample: Vec<String> = acked.iter().step_by(50).cloned().collect();
    check_all_present(&server, &acked, &sample, since);
    assert!(acked.len() >= 600, "{} acknowledged", acked.len());
    assert!(merges > 0, "no merge ran before the kills");
}

fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}
