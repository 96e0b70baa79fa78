//! The transfer over the real journal, tracker store and a local object
//! directory: files per period, digests that verify, a missing bucket and
//! its recovery, and exactly once across a redone period.

use std::sync::Arc;

use cts_archive::{
    open_trace_file, verify_tracker, ObjectStorage, PublicKeySet, SplitLimits, StorageConfig,
    TrackerPath, VerifyOptions,
};
use cts_consumer::ConsumerStore;
use cts_model::{parse_report, ReportContext};
use cts_store::{EmbeddedStore, PreparedTrace, StoreConfig, TraceStore};
use cts_tracker::{parse_v3_create, Limits, TrackerStatus, TrackerStore};
use cts_transfer::{Settings, Transfer};
use serde_json::{json, Value};

const P: i64 = 10;

struct World {
    _dir: tempfile::TempDir,
    obs: std::path::PathBuf,
    journal: Arc<EmbeddedStore>,
    trackers: Arc<TrackerStore>,
    transfer: Transfer,
}

fn world(t0: i64) -> World {
    world_with(t0, settings())
}

fn world_with(t0: i64, settings: Settings) -> World {
    let dir = tempfile::tempdir().unwrap();
    let journal =
        Arc::new(EmbeddedStore::open(StoreConfig::new(dir.path().join("store"))).unwrap());
    let trackers =
        Arc::new(TrackerStore::open(&dir.path().join("trackers"), Limits::default()).unwrap());
    let obs = dir.path().join("obs");
    std::fs::create_dir_all(&obs).unwrap();
    let transfer = open_transfer(dir.path(), journal.clone(), trackers.clone(), t0, settings);
    World {
        _dir: dir,
        obs,
        journal,
        trackers,
        transfer,
    }
}

fn settings() -> Settings {
    Settings {
        period_secs: P,
        digest_period_secs: 3 * P,
        grace_secs: 2,
        ..Settings::default()
    }
}

/// The transfer of the data directory `dir` (its local bucket in `obs`).
fn open_transfer(
    dir: &std::path::Path,
    journal: Arc<EmbeddedStore>,
    trackers: Arc<TrackerStore>,
    t0: i64,
    settings: Settings,
) -> Transfer {
    let consumers = Arc::new(ConsumerStore::open(&dir.join("consumers")).unwrap());
    transfer_of(dir, "transfer", consumers, journal, trackers, t0, settings)
}

/// The transfer of a node with its signing keys in `dir/node` and its
/// consumer state in `consumers`, writing to the local bucket in `dir/obs`.
fn transfer_of(
    dir: &std::path::Path,
    node: &str,
    consumers: Arc<ConsumerStore>,
    journal: Arc<EmbeddedStore>,
    trackers: Arc<TrackerStore>,
    t0: i64,
    settings: Settings,
) -> Transfer {
    let storage = ObjectStorage::new(StorageConfig::Local(dir.join("obs"))).unwrap();
    Transfer::open(
        cts_transfer::Keys::open(&dir.join(node), None).unwrap(),
        consumers,
        journal,
        trackers,
        storage,
        settings,
        Arc::new(|_| Some("eu-de".to_string())),
        t0,
    )
    .unwrap()
}

/// Records `n` traces of `project` at `at_secs` (their record_time).
fn record(w: &World, project: &str, service: &str, n: usize, at_secs: i64) {
    let traces: Vec<Value> = (0..n)
        .map(|i| {
            json!({"time": at_secs * 1000 - i as i64, "service_type": service, "resource_type": "vm",
                   "trace_name": "createServer", "trace_type": "ApiCall", "code": "200",
                   "source_ip": "10.0.0.1",
                   "user": {"id": "u", "name": "alice", "domain": {"id": "d", "name": "acme"}}})
        })
        .collect();
    journal(w, project, &traces, at_secs);
}

/// Records the reported `traces` of `project` at `at_secs`.
fn journal(w: &World, project: &str, traces: &[Value], at_secs: i64) {
    let body = serde_json::to_vec(&json!({ "traces": traces })).unwrap();
    let ctx = ReportContext {
        project_id: project,
        now_ms: at_secs * 1000,
        oldest_time_ms: 0,
        newest_time_ms: i64::MAX,
        max_traces: 10_000,
    };
    let traces = parse_report(&body, &ctx).unwrap();
    w.journal
        .append_prepared(traces.iter().map(PreparedTrace::of).collect())
        .unwrap();
}

/// Creates a tracker at `at_secs`.
fn tracker(w: &World, project: &str, at_secs: i64, body: Value) {
    let spec = parse_v3_create(&serde_json::to_vec(&body).unwrap()).unwrap();
    w.trackers
        .create(project, "d1", &spec, at_secs * 1000, &|_| false)
        .unwrap();
}

/// Creates p1's management tracker at `at_secs` with `obs_info` and the
/// other fields of `more`.
fn system_tracker(w: &World, at_secs: i64, obs_info: Value, mut more: Value) {
    more["tracker_type"] = json!("system");
    more["tracker_name"] = json!("system");
    more["obs_info"] = obs_info;
    tracker(w, "p1", at_secs, more);
}

/// Every trace in the bucket's trace files, as (key, trace ids).
fn files(w: &World, bucket: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for entry in walk(&w.obs.join(bucket)) {
        let key = entry
            .strip_prefix(w.obs.join(bucket))
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        if !key.contains("CloudTrace_") || key.ends_with(".metadata.json") {
            continue;
        }
        let bytes = std::fs::read(&entry).unwrap();
        let json = open_trace_file(&key, &bytes, None).unwrap();
        let traces: Vec<Value> = serde_json::from_slice(&json).unwrap();
        let ids = traces
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap().to_string())
            .collect();
        out.push((key, ids));
    }
    out.sort();
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn periods_become_files_and_digests_verify() {
    let t0 = 1_800_000_000; // a multiple of P
    let w = world(t0);
    system_tracker(
        &w,
        t0,
        json!({"bucket_name": "archive", "file_prefix_name": "audit", "is_obs_created": true}),
        json!({"is_support_validate": true}),
    );
    // Another project's traces never land in p1's files.
    w.transfer.run_once(t0).await.unwrap();
    record(&w, "p1", "ECS", 30, t0 + 1);
    record(&w, "p1", "EVS", 5, t0 + 2);
    record(&w, "p2", "ECS", 7, t0 + 3);
    record(&w, "p1", "ECS", 4, t0 + P + 1);
    // Not due before the period's end plus the grace.
    w.transfer.run_once(t0 + P + 1).await.unwrap();
    assert!(files(&w, "archive").is_empty());
    w.transfer.run_once(t0 + P + 2).await.unwrap();
    let f = files(&w, "archive");
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f[0].0.starts_with("CloudTraces/eu-de/2027/1/15/system/ECS/audit_CloudTrace_eu-de-p1_2027-01-15T08-00-10Z_"), "{}", f[0].0);
    assert_eq!(f[0].1.len(), 30);
    assert_eq!(f[1].1.len(), 5);
    // The next period, then the digest window closes.
    w.transfer.run_once(t0 + 3 * P + 2).await.unwrap();
    let f = files(&w, "archive");
    let all: usize = f.iter().map(|(_, ids)| ids.len()).sum();
    assert_eq!(all, 39);
    let keys = PublicKeySet::new(w.transfer.public_keys(None, None).await.unwrap()).unwrap();
    let path = TrackerPath {
        file_prefix: "audit".into(),
        region: "eu-de".into(),
        tracker_name: "system".into(),
    };
    let report = verify_tracker(
        w.transfer.storage(),
        "archive",
        &path,
        &keys,
        &VerifyOptions {
            digest_period_secs: 3 * P,
            ..VerifyOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.digests_checked >= 2, "{report:?}");
    assert_eq!(report.files_checked, 3);

    // Turning the tracker off ends each chain with an ending digest.
    w.trackers
        .set_status("p1", "system", TrackerStatus::Disabled)
        .unwrap();
    // Not before the periods it recorded in are written.
    w.transfer.run_once(t0 + 4 * P).await.unwrap();
    w.transfer.run_once(t0 + 6 * P).await.unwrap();
    let endings = walk(&w.obs.join("archive"))
        .into_iter()
        .filter(|p| {
            p.to_str().unwrap().contains("Digest") && !p.to_str().unwrap().ends_with(".json")
        })
        .filter(|p| {
            let raw = std::fs::read(p).unwrap();
            let d = cts_archive::parse_digest(&raw).unwrap();
            d.digest_end
        })
        .count();
    assert_eq!(endings, 2, "one per chain (ECS, EVS)");
}

/// The files `f` of the system tracker's bucket `archive` hold `traces`
/// traces, each once, and `cts verify` finds every file and no fault.
async fn assert_every_trace_once_in_verified_files(
    w: &World,
    f: &[(String, Vec<String>)],
    traces: usize,
) {
    let mut ids: Vec<&String> = f.iter().flat_map(|(_, ids)| ids).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), traces, "every trace once");
    let keys = PublicKeySet::new(w.transfer.public_keys(None, None).await.unwrap()).unwrap();
    let path = TrackerPath {
        file_prefix: String::new(),
        region: "eu-de".into(),
        tracker_name: "system".into(),
    };
    let options = VerifyOptions {
        digest_period_secs: 3 * P,
        ..VerifyOptions::default()
    };
    let report = verify_tracker(w.transfer.storage(), "archive", &path, &keys, &options)
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.files_checked, f.len(), "{report:?}");
}

#[tokio::test]
async fn a_period_of_many_files_built_at_once_numbers_them_in_order() {
    let t0 = 1_800_000_000;
    let w = world_with(
        t0,
        Settings {
            file_limits: SplitLimits {
                max_traces: 4,
                ..SplitLimits::default()
            },
            files_building: 2,
            ..settings()
        },
    );
    system_tracker(
        &w,
        t0,
        json!({"bucket_name": "archive", "is_obs_created": true, "is_sort_by_service": true}),
        json!({"is_support_validate": true}),
    );
    // Two chains interleaved, each several files long.
    for k in 0..9 {
        record(&w, "p1", "ECS", 3, t0 + 1);
        record(&w, "p1", if k % 3 == 0 { "EVS" } else { "ECS" }, 2, t0 + 1);
    }
    w.transfer.run_once(t0 + 3 * P + 2).await.unwrap();
    let f = files(&w, "archive");
    let count = |service: &str| {
        f.iter()
            .filter(|(key, _)| key.contains(&format!("/system/{service}/")))
            .map(|(_, ids)| ids.len())
            .collect::<Vec<_>>()
    };
    // 39 ECS traces in files of 4, 6 EVS traces.
    assert_eq!(count("ECS").iter().sum::<usize>(), 39, "{f:?}");
    assert_eq!(count("ECS").len(), 10, "{f:?}");
    assert_eq!(count("EVS"), vec![4, 2], "{f:?}");
    assert_every_trace_once_in_verified_files(&w, &f, 45).await;
}

#[tokio::test]
async fn many_services_filling_at_once_stay_within_the_memory_bound() {
    let t0 = 1_800_000_000;
    let w = world_with(
        t0,
        Settings {
            max_held_bytes: 2_000,
            ..settings()
        },
    );
    system_tracker(
        &w,
        t0,
        json!({"bucket_name": "archive", "is_obs_created": true, "is_sort_by_service": true}),
        json!({"is_support_validate": true}),
    );
    for _ in 0..10 {
        for service in ["ECS", "EVS", "VPC"] {
            record(&w, "p1", service, 1, t0 + 1);
        }
    }
    w.transfer.run_once(t0 + 3 * P + 2).await.unwrap();
    let f = files(&w, "archive");
    // Unbounded, each service would have one file of 10 traces.
    assert!(f.len() > 3, "{f:?}");
    assert!(f.iter().all(|(_, ids)| ids.len() < 10), "{f:?}");
    assert_every_trace_once_in_verified_files(&w, &f, 30).await;
}

#[tokio::test]
async fn a_missing_bucket_waits_and_recovers_without_loss() {
    let t0 = 1_800_000_000;
    let w = world(t0);
    system_tracker(
        &w,
        t0,
        json!({"bucket_name": "later", "is_obs_created": false}),
        json!({}),
    );
    w.transfer.run_once(t0).await.unwrap();
    record(&w, "p1", "ECS", 12, t0 + 1);
    w.transfer.run_once(t0 + P + 2).await.unwrap();
    let t = &w.trackers.list("p1", None, None).unwrap()[0];
    assert_eq!(
        t.status,
        TrackerStatus::Error(cts_tracker::ErrorDetail::NoBucket)
    );
    let durable = w.journal.stats().journal_seq;
    let progress = w.transfer.progress(t0 + P + 2, durable).await.unwrap();
    assert_eq!(progress[0].backlog, 12);
    // Ingest goes on meanwhile.
    record(&w, "p1", "ECS", 3, t0 + P + 3);
    std::fs::create_dir_all(w.obs.join("later")).unwrap();
    // After the backoff it writes everything, once, and is enabled again.
    w.transfer.run_once(t0 + 4 * P).await.unwrap();
    let t = &w.trackers.list("p1", None, None).unwrap()[0];
    assert_eq!(t.status, TrackerStatus::Enabled);
    let ids: Vec<String> = files(&w, "later")
        .into_iter()
        .flat_map(|(_, ids)| ids)
        .collect();
    assert_eq!(ids.len(), 15);
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 15);
    let durable = w.journal.stats().journal_seq;
    assert_eq!(
        w.transfer.progress(t0 + 4 * P, durable).await.unwrap()[0].backlog,
        0
    );
}

/// A tracker whose settings no store takes (a bucket name from before the
/// API checked it with the store's own rule) is `error` with a detail, not
/// `enabled` with its traces silently held.
#[tokio::test]
async fn a_bucket_name_no_store_takes_is_an_error_with_detail() {
    let t0 = 1_800_000_000;
    let w = world(t0);
    system_tracker(
        &w,
        t0,
        json!({"bucket_name": "archive", "is_obs_created": true}),
        json!({}),
    );
    let db = rusqlite::Connection::open(w._dir.path().join("trackers/trackers.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE trackers SET body = json_set(body, '$.obs_info.bucket_name', 'archive-')",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    record(&w, "p1", "ECS", 3, t0 + 1);
    w.transfer.run_once(t0 + P + 2).await.unwrap();
    let t = &w.trackers.list("p1", None, None).unwrap()[0];
    assert_eq!(
        t.status,
        TrackerStatus::Error(cts_tracker::ErrorDetail::NoBucket)
    );
}

/// Issue 11.1 and 11.2: a tracker that gains a bucket mid-period archives
/// that period from its start, traces journaled before the change included
/// (the reference: a bucket set at 12:02 gets the traces from 12:00), and
/// its backlog counts them before the transfer has written anything.
#[tokio::test]
async fn the_first_period_is_read_from_its_start() {
    let t0 = 1_800_000_000;
    let w = world(t0);
    // The transfer runs before the period (it marks the journal).
    w.transfer.run_once(t0 - 5).await.unwrap();
    record(&w, "p1", "ECS", 2, t0 - 3); // the period before: not this tracker's
    record(&w, "p1", "ECS", 5, t0 + 1); // this period, before the change
    record(&w, "p2", "ECS", 3, t0 + 1);
    system_tracker(
        &w,
        t0 + 2,
        json!({"bucket_name": "archive", "is_obs_created": true}),
        json!({}),
    );
    record(&w, "p1", "ECS", 4, t0 + 2); // right after the change
    w.transfer.run_once(t0 + 3).await.unwrap();
    let durable = w.journal.stats().journal_seq;
    let progress = w.transfer.progress(t0 + 3, durable).await.unwrap();
    assert_eq!(progress[0].backlog, 12, "{progress:?}");
    w.transfer.run_once(t0 + P + 2).await.unwrap();
    let f = files(&w, "archive");
    let ids: Vec<&String> = f.iter().flat_map(|(_, ids)| ids).collect();
    assert_eq!(ids.len(), 9, "{f:?}");
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        9
    );
    let durable = w.journal.stats().journal_seq;
    assert_eq!(
        w.transfer.progress(t0 + P + 2, durable).await.unwrap()[0].backlog,
        0
    );
    assert_eq!(w.transfer.take_skipped(), 0);
}

/// A tracker disabled mid-period still archives what it recorded while
/// enabled, then ends its chains.
#[tokio::test]
async fn a_disabled_tracker_writes_what_it_recorded() {
    let t0 = 1_800_000_000;
    let w = world(t0);
    w.transfer.run_once(t0 - 5).await.unwrap();
    system_tracker(
        &w,
        t0 + 1,
        json!({"bucket_name": "archive", "is_obs_created": true}),
        json!({"is_support_validate": true}),
    );
    record(&w, "p1", "ECS", 6, t0 + 2);
    w.transfer.run_once(t0 + 3).await.unwrap();
    w.trackers
        .set_status("p1", "system", TrackerStatus::Disabled)
        .unwrap();
    w.transfer.run_once(t0 + 4).await.unwrap();
    w.transfer.run_once(t0 + P + 2).await.unwrap();
    let f = files(&w, "archive");
    assert_eq!(
        f.iter().map(|(_, ids)| ids.len()).sum::<usize>(),
        6,
        "{f:?}"
    );
    let durable = w.journal.stats().journal_seq;
    assert!(w
        .transfer
        .progress(t0 + P + 2, durable)
        .await
        .unwrap()
        .is_empty());
}

/// Issue 11.4: `bucket_lifecycle` in a local store: hourly, the files
/// written more than that many days ago go.
#[tokio::test]
async fn bucket_lifecycle_expires_old_files_locally() {
    // Real time: the expiry compares with the files' modification times.
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let t0 = real / P * P;
    let w = world(t0);
    system_tracker(
        &w,
        t0,
        json!({"bucket_name": "archive", "is_obs_created": true, "bucket_lifecycle": 30}),
        json!({}),
    );
    record(&w, "p1", "ECS", 3, t0 + 1);
    w.transfer.run_once(t0 + 1).await.unwrap();
    w.transfer.run_once(t0 + P + 2).await.unwrap();
    let f = files(&w, "archive");
    assert_eq!(f.len(), 1, "{f:?}");
    let file = std::fs::File::options()
        .write(true)
        .open(w.obs.join("archive").join(&f[0].0))
        .unwrap();
    let day = std::time::Duration::from_secs(86_400);
    file.set_modified(std::time::SystemTime::now() - 31 * day)
        .unwrap();
    w.transfer.run_once(t0 + 1800).await.unwrap();
    assert_eq!(files(&w, "archive").len(), 1, "checked hourly");
    w.transfer.run_once(t0 + 3700).await.unwrap();
    assert!(files(&w, "archive").is_empty());
}

/// A tracker whose transfer fails for good (here: its encryption key is
/// gone) does not stop the others'.
#[tokio::test]
async fn a_failing_tracker_does_not_stop_the_others() {
    let t0 = 1_800_000_000;
    let w = world(t0);
    // Created first: it comes first in every pass.
    let broken = json!({"tracker_type": "system", "tracker_name": "system",
        "obs_info": {"bucket_name": "sealed", "is_obs_created": true},
        "is_support_trace_files_encryption": true, "kms_id": "gone"});
    let spec = parse_v3_create(&serde_json::to_vec(&broken).unwrap()).unwrap();
    w.trackers
        .create("p0", "d1", &spec, (t0 - 1) * 1000, &|_| true)
        .unwrap();
    system_tracker(
        &w,
        t0,
        json!({"bucket_name": "archive", "is_obs_created": true}),
        json!({}),
    );
    record(&w, "p0", "ECS", 2, t0 + 1);
    record(&w, "p1", "ECS", 3, t0 + 1);
    w.transfer.run_once(t0 + 1).await.unwrap();
    assert!(w.transfer.run_once(t0 + P + 2).await.is_err());
    let f = files(&w, "archive");
    assert_eq!(
        f.iter().map(|(_, ids)| ids.len()).sum::<usize>(),
        3,
        "{f:?}"
    );
}

/// A disabled tracker whose bucket is gone does not hold the journal for
/// ever: after about an hour of attempts its last periods are given up,
/// counted as skipped.
#[tokio::test]
async fn a_disabled_tracker_gives_up_a_missing_bucket() {
    let t0 = 1_800_000_000;
    let w = world(t0);
    system_tracker(
        &w,
        t0,
        json!({"bucket_name": "gone", "is_obs_created": false}),
        json!({}),
    );
    record(&w, "p1", "ECS", 4, t0 + 1);
    w.transfer.run_once(t0 + 1).await.unwrap();
    w.trackers
        .set_status("p1", "system", TrackerStatus::Disabled)
        .unwrap();
    let mut now = t0 + P + 2;
    for _ in 0..15 {
        w.transfer.run_once(now).await.unwrap();
        now += 400;
    }
    let durable = w.journal.stats().journal_seq;
    assert_eq!(
        w.transfer.progress(now, durable).await.unwrap().len(),
        1,
        "still trying"
    );
    assert_eq!(w.transfer.take_skipped(), 0);
    w.transfer.run_once(now).await.unwrap();
    assert!(w.transfer.progress(now, durable).await.unwrap().is_empty());
    assert_eq!(w.transfer.take_skipped(), 4);
    let t = &w.trackers.list("p1", None, None).unwrap()[0];
    assert_eq!(t.status, TrackerStatus::Disabled, "not turned to error");
}

/// Gzip, hashing and the state's commits run on blocking threads: on a
/// current-thread runtime, a ticker task keeps running while a period of
/// several MB becomes a file (were the file built on the runtime's one
/// thread, the ticker would stop for most of the pass).
#[test]
fn building_files_leaves_the_async_worker_free() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t0 = 1_800_000_000;
    let w = world(t0);
    system_tracker(
        &w,
        t0,
        json!({"bucket_name": "big", "is_obs_created": true}),
        json!({}),
    );
    rt.block_on(w.transfer.run_once(t0)).unwrap();
    // About 6 MB of JSON that does not compress to nothing.
    let traces: Vec<Value> = (0..3000u64)
        .map(|i| {
            let noise: String = (0..150u64)
                .map(|k| {
                    format!(
                        "{:x}",
                        (i * 7919 + k).wrapping_mul(2_654_435_761) % 1_000_003
                    )
                })
                .collect();
            json!({"time": t0 * 1000 + 1000, "service_type": "ECS", "resource_type": "vm",
                   "trace_name": "createServer", "trace_type": "ApiCall", "code": "200",
                   "source_ip": "10.0.0.1", "message": noise,
                   "user": {"id": "u", "name": "alice", "domain": {"id": "d", "name": "acme"}}})
        })
        .collect();
    journal(&w, "p1", &traces, t0 + 1);
    let (max_gap, took) = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let ticking = Arc::clone(&stop);
        let ticker = tokio::spawn(async move {
            let (mut last, mut max_gap) = (Instant::now(), Duration::ZERO);
            while !ticking.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1)).await;
                max_gap = max_gap.max(last.elapsed());
                last = Instant::now();
            }
            max_gap
        });
        tokio::task::yield_now().await;
        let start = Instant::now();
        w.transfer.run_once(t0 + P + 2).await.unwrap();
        let took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        (ticker.await.unwrap(), took)
    });
    let f = files(&w, "big");
    assert_eq!(f.iter().map(|(_, ids)| ids.len()).sum::<usize>(), 3000);
    assert!(
        max_gap * 4 < took,
        "the ticker stopped for {max_gap:?} of a {took:?} pass"
    );
}

const T0: i64 = 1_800_000_000;

/// A world at [`T0`] whose system tracker has written its first period,
/// `traces` of service ECS, into `bucket`.
async fn one_period_written(bucket: &str, traces: usize) -> World {
    let w = world(T0);
    system_tracker(
        &w,
        T0,
        json!({"bucket_name": bucket, "is_obs_created": true}),
        json!({}),
    );
    w.transfer.run_once(T0).await.unwrap();
    record(&w, "p1", "ECS", traces, T0 + 1);
    w.transfer.run_once(T0 + P + 2).await.unwrap();
    w
}

/// The transfer's work runs on threads of its own at ingest's priority,
/// below the queries (Tokio's blocking threads, where queries run, stay
/// at the process's): a pass that writes a file leaves them behind,
/// named `cts-transfer` and as nice as ingest.
#[tokio::test]
async fn the_transfer_works_at_ingest_priority() {
    cts_priority::set_ingest_nice(3);
    let w = one_period_written("nice", 10).await;
    assert_eq!(files(&w, "nice").len(), 1);
    let nice: Vec<i64> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| {
            let dir = task.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            (comm.trim() == "cts-transfer").then(|| {
                // The fields after the name in parentheses; nice is the 19th.
                let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
                let after = &stat[stat.rfind(')').unwrap() + 2..];
                after.split(' ').nth(16).unwrap().parse().unwrap()
            })
        })
        .collect();
    // Transfers of the tests running beside this one that began before
    // the setting have threads at 0.
    assert!(nice.iter().any(|&n| n >= 3), "niceness {nice:?}");
}

/// A data directory of a version that kept the transfer state in
/// `transfer/transfer.db` goes on where it stood: its tracker state (with
/// the cursor in the body) and journal marks are moved into the consumer
/// store, nothing is written twice, and a second open moves nothing again.
#[tokio::test]
async fn an_old_transfer_db_is_moved_into_the_consumer_store() {
    let t0 = T0;
    let w = one_period_written("archive", 6).await;
    assert_eq!(files(&w, "archive").len(), 1);

    // Rewrite the state the way the old version kept it.
    let dir = w._dir.path().to_path_buf();
    let consumers = ConsumerStore::open(&dir.join("consumers")).unwrap();
    let state: Vec<(String, cts_consumer::Entry<Value>)> = consumers.all("transfer").unwrap();
    assert_eq!(state.len(), 1);
    let mark = consumers.journal_mark(t0 + P).unwrap().expect("a mark");
    drop(consumers);
    let World {
        _dir,
        obs,
        journal,
        trackers,
        transfer,
    } = w;
    drop(transfer);
    let old = rusqlite::Connection::open(dir.join("transfer/transfer.db")).unwrap();
    old.execute_batch(
        "CREATE TABLE trackers (tracker_id TEXT PRIMARY KEY, body TEXT NOT NULL);
         CREATE TABLE journal_marks (period_start INTEGER PRIMARY KEY, seq INTEGER NOT NULL);",
    )
    .unwrap();
    let (id, entry) = &state[0];
    let mut body = entry.body.clone();
    body["cursor"] = json!(entry.cursor);
    old.execute(
        "INSERT INTO trackers VALUES (?1, ?2)",
        rusqlite::params![id, body.to_string()],
    )
    .unwrap();
    old.execute(
        "INSERT INTO journal_marks VALUES (?1, ?2)",
        rusqlite::params![t0 + P, mark as i64],
    )
    .unwrap();
    for f in ["consumers.db", "consumers.db-wal", "consumers.db-shm"] {
        let _ = std::fs::remove_file(dir.join("consumers").join(f));
    }

    let mut transfer = None;
    for _ in 0..2 {
        drop(transfer.take());
        transfer = Some(open_transfer(
            &dir,
            journal.clone(),
            trackers.clone(),
            t0,
            settings(),
        ));
        let moved = ConsumerStore::open(&dir.join("consumers")).unwrap();
        let now: Vec<(String, cts_consumer::Entry<Value>)> = moved.all("transfer").unwrap();
        assert_eq!(now[0].0, *id);
        assert_eq!(now[0].1.cursor, entry.cursor);
        assert!(now[0].1.body.get("cursor").is_none(), "{:?}", now[0].1.body);
        assert_eq!(moved.journal_mark(t0 + P).unwrap(), Some(mark));
        let left: i64 = old
            .query_row("SELECT COUNT(*) FROM trackers", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }
    let w = World {
        _dir,
        obs,
        journal,
        trackers,
        transfer: transfer.unwrap(),
    };
    // It goes on from its cursor: the first period is not written again.
    record(&w, "p1", "ECS", 3, t0 + P + 3);
    w.transfer.run_once(t0 + 2 * P + 2).await.unwrap();
    let f = files(&w, "archive");
    let counts: Vec<usize> = f.iter().map(|(_, ids)| ids.len()).collect();
    assert_eq!(counts, vec![6, 3], "{f:?}");
    assert_eq!(w.transfer.take_skipped(), 0);
}

#[tokio::test]
async fn on_shared_state_a_tracker_is_one_nodes_and_another_takes_over_from_its_cursor() {
    use cts_consumer::{node_id, LeaseSettings};
    use std::time::{Duration, Instant};

    let t0 = 1_800_000_000;
    let w = world(t0);
    let pg = cts_testpg::TestPg::start();
    let leases = LeaseSettings {
        ttl: Duration::from_millis(600),
        renew_every: Duration::from_millis(200),
    };
    // The PostgreSQL client blocks: off the test's async worker.
    let node = |name: &'static str| {
        let (url, dir) = (pg.url(), w._dir.path().to_path_buf());
        let (journal, trackers) = (w.journal.clone(), w.trackers.clone());
        tokio::task::spawn_blocking(move || {
            let state = Arc::new(ConsumerStore::connect(&url, node_id(), leases).unwrap());
            let transfer =
                transfer_of(&dir, name, state.clone(), journal, trackers, t0, settings());
            (state, transfer)
        })
    };
    let (a_state, a) = node("a").await.unwrap();
    let (_, b) = node("b").await.unwrap();
    system_tracker(
        &w,
        t0,
        json!({"bucket_name": "archive", "file_prefix_name": "audit", "is_obs_created": true}),
        json!({}),
    );
    a.run_once(t0).await.unwrap();
    record(&w, "p1", "ECS", 30, t0 + 1);
    // a took the tracker first: b writes nothing of it.
    b.run_once(t0 + P + 2).await.unwrap();
    assert!(files(&w, "archive").is_empty());
    a.run_once(t0 + P + 2).await.unwrap();
    assert_eq!(files(&w, "archive").len(), 1);
    tokio::task::spawn_blocking(move || a_state.renew().unwrap())
        .await
        .unwrap();
    record(&w, "p1", "ECS", 4, t0 + P + 1);
    // a stops renewing: b takes over within the lease time and writes the
    // next period from a's cursor.
    let started = Instant::now();
    while files(&w, "archive").len() < 2 {
        assert!(started.elapsed() < leases.ttl * 3, "b never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.run_once(t0 + 2 * P + 2).await.unwrap();
    }
    // a, back, finds its work done and writes nothing twice.
    a.run_once(t0 + 2 * P + 2).await.unwrap();
    let f = files(&w, "archive");
    let ids: Vec<&String> = f.iter().flat_map(|(_, ids)| ids).collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!((f.len(), ids.len(), unique.len()), (2, 34, 34), "{f:?}");
}
