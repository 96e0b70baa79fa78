//! CPU priorities of ctsd's threads: report batches are parsed and stored
//! on ingest threads at `store.ingest_nice`, the flusher runs there too,
//! the background merger and the LTS sink below it, while queries and the
//! journal writer keep the process's priority; those ask for a short time
//! slice, the others for a long one.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;

/// Each thread name of process `pid` with the niceness of each thread of
/// that name, and its time slice (`None` where the kernel shows none).
fn niceness_by_thread(pid: u32) -> BTreeMap<String, Vec<(i32, Option<Duration>)>> {
    let mut by_name: BTreeMap<String, Vec<(i32, Option<Duration>)>> = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let Ok(stat) = std::fs::read_to_string(task.join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // Shown by kernels with CONFIG_SCHED_DEBUG only.
        let sched = std::fs::read_to_string(task.join("sched")).unwrap_or_default();
        let slice = cts_priority::slice_in(&sched);
        // `pid (comm) state ...`: the niceness is the 19th field, the 17th
        // after the name (which may hold spaces).
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_string();
        let nice: i32 = rest.split_whitespace().nth(16).unwrap().parse().unwrap();
        by_name.entry(name).or_default().push((nice, slice));
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
    let base = threads["ctsd"][0].0;
    let slices = cts_priority::slices_shown();
    let (short, long) = (
        cts_priority::INTERACTIVE_SLICE,
        cts_priority::THROUGHPUT_SLICE,
    );
    let at = |name: &str| {
        threads
            .get(name)
            .unwrap_or_else(|| panic!("no thread {name} in {threads:?}"))
    };
    let all = |name: &str, nice: i32, slice: Duration| {
        assert!(
            at(name)
                .iter()
                .all(|&(n, s)| n == nice && (!slices || s == Some(slice))),
            "{name} not at niceness {nice} and slice {slice:?}: {threads:?}"
        );
    };
    // The report's batch started an ingest thread (they start on demand).
    all("cts-ingest", base.max(3), long);
    all("cts-flusher", base.max(3), long);
    all("cts-merger-urge", base.max(3), long);
    all("cts-merger", base.max(8), long);
    all("cts-lts", base.max(8), long);
    // Queries (Tokio's workers and blocking threads) and the writer that
    // acknowledges after fsync keep the process's priority, and a query's
    // thread that wakes takes a core from the others at once.
    all("ctsd", base, short);
    all("cts-journal", base, short);
    all("tokio-rt-worker", base, short);
}
