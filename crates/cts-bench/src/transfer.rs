//! `cts-bench --transfer N`: how fast the transfer drains a backlog, in
//! process: N generated traces journaled the way ctsd stores them (26.4 k
//! traces/s of record time, the soak's rate, in periods of a minute), then
//! a management tracker with a local bucket writes every period's trace
//! files in one pass, timed. Beside it, the stages alone over the same
//! journal: reading it (decompression), checking each document, and
//! building the gzip'd files (JSON array, gzip, hash).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use cts_archive::{build_trace_files, LogFile, ObjectStorage, StorageConfig, TraceFileOptions};
use cts_archive::{Period, TrackerPath};
use cts_consumer::ConsumerStore;
use cts_store::{EmbeddedStore, PreparedTrace, StoreConfig, TraceStore};
use cts_tracker::{parse_v3_create, Limits, TrackerStore};
use cts_transfer::{Settings, Transfer};
use serde_json::json;

use crate::gen::{self, Generator};

const PROJECT: &str = "bench";
const PERIOD_SECS: i64 = 60;
/// Traces per second of record time: the rate of the measured soak.
const RATE: u64 = 26_400;
const BATCH: u64 = 500;

/// Journals `n` traces from `start_ms` on at [`RATE`].
fn load(store: &EmbeddedStore, g: &Generator, n: u64, start_ms: i64) -> Result<()> {
    for first in (0..n).step_by(BATCH as usize) {
        let now = start_ms + (first * 1000 / RATE) as i64;
        let traces = g.recorded(first..(first + BATCH).min(n), PROJECT, now)?;
        store.append_prepared(traces.iter().map(PreparedTrace::of).collect())?;
    }
    Ok(())
}

/// Every journaled document, read as a consumer does; returns them and the
/// seconds the reads took.
fn read_all(store: &EmbeddedStore) -> Result<(Vec<Vec<u8>>, f64)> {
    let t = Instant::now();
    let mut docs = Vec::new();
    let mut cursor = 0;
    loop {
        let batch = cts_consumer::read_batch(store, cursor, Settings::default().batch)?;
        if batch.entries.is_empty() {
            break;
        }
        cursor = batch.cursor;
        docs.extend(batch.entries.into_iter().map(|e| e.doc));
    }
    Ok((docs, t.elapsed().as_secs_f64()))
}

/// Seconds to build (and hash) the gzip'd files of `docs`, 50,000 a file.
fn build_files(docs: &[Vec<u8>]) -> Result<(f64, u64)> {
    let path = TrackerPath {
        file_prefix: String::new(),
        region: "eu-de".into(),
        tracker_name: "system".into(),
    };
    let period = Period {
        start: 0,
        end: PERIOD_SECS,
    };
    let t = Instant::now();
    let mut bytes = 0;
    for chunk in docs.chunks(cts_archive::MAX_TRACES_PER_FILE) {
        let options = TraceFileOptions::default();
        for f in build_trace_files(&path, PROJECT, None, period, chunk, &options)? {
            bytes += f.body.len() as u64;
            std::hint::black_box(LogFile::new("b", &f.key, &f.body));
        }
    }
    Ok((t.elapsed().as_secs_f64(), bytes))
}

/// Drain runs of each setting.
const ROUNDS: usize = 3;

/// Traces per second of one pass of a new transfer (its state and bucket
/// in `run`) over the whole journal, `building` files built at once.
fn drain(
    rt: &tokio::runtime::Runtime,
    store: &Arc<EmbeddedStore>,
    trackers: &Arc<TrackerStore>,
    run: &std::path::Path,
    t0: i64,
    now_s: i64,
    building: usize,
) -> Result<f64> {
    let storage = ObjectStorage::new(StorageConfig::Local(run.join("obs")))?;
    let consumers = Arc::new(ConsumerStore::open(&run.join("consumers"))?);
    let settings = Settings {
        period_secs: PERIOD_SECS,
        files_building: building,
        ..Settings::default()
    };
    let transfer = Transfer::open(
        cts_transfer::Keys::open(&run.join("transfer"), None)?,
        consumers,
        store.clone(),
        trackers.clone(),
        storage,
        settings,
        Arc::new(|_| Some("eu-de".to_string())),
        t0,
    )?;
    let t = Instant::now();
    rt.block_on(transfer.run_once(now_s))?;
    let secs = t.elapsed().as_secs_f64();
    let durable = store.stats().journal_seq;
    let left: u64 = rt
        .block_on(transfer.progress(now_s, durable))?
        .iter()
        .map(|p| p.backlog)
        .sum();
    anyhow::ensure!(left == 0, "the transfer left {left} traces behind");
    Ok(per_sec(durable, secs))
}

/// Seconds and bytes to gzip the JSON arrays of `docs` at `level`.
fn gzip_at(docs: &[Vec<u8>], level: u32) -> Result<(f64, u64)> {
    use std::io::Write;
    let t = Instant::now();
    let mut bytes = 0;
    for chunk in docs.chunks(cts_archive::MAX_TRACES_PER_FILE) {
        let mut json = Vec::new();
        json.push(b'[');
        for (i, d) in chunk.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            json.extend_from_slice(d);
        }
        json.push(b']');
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        gz.write_all(&json)?;
        bytes += gz.finish()?.len() as u64;
    }
    Ok((t.elapsed().as_secs_f64(), bytes))
}

fn per_sec(n: u64, secs: f64) -> f64 {
    (n as f64 / secs).round()
}

pub fn run(n: u64, seed: u64, work: &std::path::Path) -> Result<()> {
    let g = Generator::new(&gen::Config {
        seed,
        ..gen::Config::default()
    });
    // Whole periods of the past, the first beginning when the tracker is made.
    let now_s = crate::now_ms() / 1000;
    let span = (n / RATE) as i64 + 1;
    let t0 = (now_s - span - 3 * PERIOD_SECS).div_euclid(PERIOD_SECS) * PERIOD_SECS;
    let mut cfg = StoreConfig::new(work.join("store"));
    // The transfer's reads are measured, not the load's fsyncs.
    cfg.fsync = false;
    let store = Arc::new(EmbeddedStore::open(cfg)?);
    let trackers = Arc::new(TrackerStore::open(
        &work.join("trackers"),
        Limits::default(),
    )?);
    let spec = parse_v3_create(&serde_json::to_vec(&json!({
        "tracker_type": "system", "tracker_name": "system",
        "obs_info": {"bucket_name": "bench", "is_obs_created": true},
    }))?)
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    trackers.create(PROJECT, "d", &spec, t0 * 1000, &|_| false)?;
    let t = Instant::now();
    load(&store, &g, n, t0 * 1000 + 1).context("journaling the traces")?;
    eprintln!("journaled {n} traces in {:.1} s", t.elapsed().as_secs_f64());

    let (docs, read_secs) = read_all(&store)?;
    let t = Instant::now();
    for d in &docs {
        serde_json::from_slice::<serde::de::IgnoredAny>(d)?;
    }
    let parse_secs = t.elapsed().as_secs_f64();
    let (files_secs, file_bytes) = build_files(&docs)?;
    let json_bytes: u64 = docs.iter().map(|d| d.len() as u64 + 1).sum();
    let mut levels = serde_json::Map::new();
    for level in [1, 2, 3, 4, 6] {
        let (secs, bytes) = gzip_at(&docs, level)?;
        levels.insert(
            format!("level_{level}"),
            json!({"traces_per_sec": per_sec(n, secs), "bytes": bytes}),
        );
    }
    drop(docs);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Alternately, so that the machine's load falls on each alike.
    let mut drains: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
    for round in 0..ROUNDS {
        for building in [0, 2] {
            let run = work.join(format!("run-{round}-{building}"));
            let rate = drain(&rt, &store, &trackers, &run, t0, now_s, building)?;
            eprintln!("round {round}, files_building {building}: {rate} traces/s");
            drains.entry(building).or_default().push(rate);
            std::fs::remove_dir_all(&run)?;
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let drains: serde_json::Map<String, serde_json::Value> = drains
        .iter()
        .map(|(b, rates)| {
            (
                format!("files_building_{b}"),
                json!({"median_traces_per_sec": median(rates), "runs": rates}),
            )
        })
        .collect();
    let result = json!({
        "traces": n,
        "drain": drains,
        "stages_traces_per_sec": {
            "read_journal": per_sec(n, read_secs),
            "check_json": per_sec(n, parse_secs),
            "build_files": per_sec(n, files_secs),
        },
        "json_bytes": json_bytes,
        "gzip_bytes": file_bytes,
        "gzip_alone": levels,
        "soak_rate": RATE,
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
