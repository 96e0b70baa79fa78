//! Retention: expired traces leave queries, then their partitions and
//! journal files leave the disk.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const PARTITION_MS: i64 = 1000;

fn partition_dir(data: &Path, time: i64) -> std::path::PathBuf {
    let start = time - time.rem_euclid(PARTITION_MS);
    data.join("index").join(format!("p{start}"))
}

#[test]
fn expired_traces_disappear_from_queries_and_disk() {
    let server = TestServer::builder()
        .env("CTS_STORE_RETENTION", "4s")
        .env("CTS_STORE_PARTITION", "1s")
        .env("CTS_STORE_RETENTION_CHECK_INTERVAL", "1s")
        .env("CTS_STORE_MEMTABLE_MAX_TRACES", "50")
        .start();
    let now = now_ms();
    // 200 traces over the last second (two partitions), enough to write
    // index segments (the memtable holds 50).
    let traces: Vec<(String, Value)> = (0..200)
        .map(|i| trace_with_id(now - 1000 + i * 5))
        .collect();
    let body: Vec<Value> = traces.iter().map(|(_, t)| t.clone()).collect();
    for chunk in body.chunks(20) {
        server.report("ret", chunk);
    }
    let times: Vec<i64> = body.iter().map(|t| t["time"].as_i64().unwrap()).collect();
    let all = server.query_all("ret", &[("limit", "200".into()), ecs()]);
    assert_eq!(all.len(), 200);
    // The journal files holding them (the bodies of the traces).
    let journal_files = wal_files(&server.data_dir);
    assert!(!journal_files.is_empty());

    let dirs: Vec<_> = times
        .iter()
        .map(|t| partition_dir(&server.data_dir, *t))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    while !dirs.iter().any(|d| d.is_dir()) {
        assert!(
            Instant::now() < deadline,
            "no index partition written; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Past retention they leave queries at once (by window and by id)...
    let newest = *times.iter().max().unwrap();
    while now_ms() < newest + 4000 + 100 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let page = server.query("ret", &[("from", (now - 60_000).to_string()), ecs()]);
    assert_eq!(page["meta_data"]["count"], 0, "{page}");
    assert!(server.by_id("ret", &traces[199].0).is_empty());

    // ...and from disk once their partition has expired and been checked.
    let deadline = Instant::now() + Duration::from_secs(10);
    while dirs.iter().any(|d| d.exists()) {
        assert!(
            Instant::now() < deadline,
            "partitions still on disk: {:?}; log:\n{}",
            dirs.iter().filter(|d| d.exists()).collect::<Vec<_>>(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.log().contains("dropped expired traces"));

    // The journal files go too, though the server is idle and its memtable
    // far from full: a file a partition old is closed and its traces flushed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal_files.iter().any(|f| f.exists()) {
        assert!(
            Instant::now() < deadline,
            "expired journal files still on disk: {:?} (all: {:?}); log:\n{}",
            journal_files
                .iter()
                .filter(|f| f.exists())
                .collect::<Vec<_>>(),
            wal_files(&server.data_dir),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The server goes on recording.
    let (id, t) = trace_with_id(now_ms());
    server.report("ret", &[t]);
    assert_eq!(server.by_id("ret", &id).len(), 1);
}
