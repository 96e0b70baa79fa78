//! CPU priorities of ctsd's threads: report batches are parsed and stored
//! on ingest threads at `store.ingest_nice`, the flusher runs there too,
//! the background merger and the LTS sink below it, while queries and the
//! journal writer keep the process's priority.

use std::collections::BTreeMap;

use crate::support::*;

/// Each thread name of process `pid` with the niceness of each thread of
/// that name.
fn niceness_by_thread(pid: u32) -> BTreeMap<String, Vec<i32>> {
    let mut by_name: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // `pid (comm) state ...`: the niceness is the 19th field, the 17th
        // after the name (which may hold spaces).
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_string();
        let nice: i32 = rest.split_whitespace().nth(16).unwrap().parse().unwrap();
        by_name.entry(name).or_default().push(nice);
    }
    by_name
}

#[test]
fn ingest_runs_below_queries_at_the_configured_niceness() {
    // A sink (nobody listens: it retries) so that the LTS threads, which
    // start on demand, have work.
    let server = TestServer::builder()
        .env("CTS_STORE_INGEST_NICE", "3")
        .env("CTS_LTS_KIND", "otlp")
        .env("CTS_LTS_ENDPOINT", "http://127.0.0.1:9")
        .env("CTS_LTS_INTERVAL", "100ms")
        .env("CTS_LTS_MAX_BACKOFF", "1s")
        .start();
    crate::lts::set_lts(&server, "system", "system", true);
    let now = now_ms();
    let traces: Vec<_> = (0..20).map(|i| trace(now - i)).collect();
    assert_eq!(server.report("main", &traces)["recorded"], 20);
    assert_eq!(server.query_all("main", &[ecs()]).len(), 20);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let threads = loop {
        let threads = niceness_by_thread(server.process_id());
        if threads.contains_key("cts-lts") || std::time::Instant::now() > deadline {
            break threads;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // The process's own (tests may run under `nice`): never raised.
    let base = threads["ctsd"][0];
    let at = |name: &str| {
        threads
            .get(name)
            .unwrap_or_else(|| panic!("no thread {name} in {threads:?}"))
    };
    // The report's batch started an ingest thread (they start on demand).
    assert!(
        at("cts-ingest").iter().all(|&n| n == base.max(3)),
        "{threads:?}"
    );
    assert_eq!(at("cts-flusher"), &[base.max(3)], "{threads:?}");
    assert_eq!(at("cts-merger-urge"), &[base.max(3)], "{threads:?}");
    assert_eq!(at("cts-merger"), &[base.max(8)], "{threads:?}");
    assert!(
        at("cts-lts").iter().all(|&n| n == base.max(8)),
        "{threads:?}"
    );
    // Queries (Tokio's workers and blocking threads) and the writer that
    // acknowledges after fsync keep the process's priority.
    assert_eq!(at("cts-journal"), &[base], "{threads:?}");
    assert!(
        at("tokio-rt-worker").iter().all(|&n| n == base),
        "{threads:?}"
    );
}
