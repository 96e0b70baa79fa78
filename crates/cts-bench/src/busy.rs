//! ListTraces while the store flushes and merges: a loader keeps ingesting
//! (memtables fill, segments are written, partitions are merged) while one
//! client times single-filter pages of 200, and the server's segments, open
//! files and RSS are sampled as it goes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde::Serialize;

use crate::load::{self, Plan};
use crate::queries::{Query, Target};
use crate::server;
use crate::stats::{ms, percentile};

/// What the server holds: index segments (from `/metrics`), open files
/// (`/proc/PID/fd`) and resident memory.
#[derive(Clone, Copy, Default, Serialize)]
pub struct Resources {
    pub segments: u64,
    pub open_files: u64,
    pub rss_bytes: u64,
}

impl Resources {
    pub fn of(url: &str, pid: u32) -> Result<Resources> {
        Ok(Resources {
            segments: server::metric(url, "cts_index_segments")?,
            open_files: server::open_files(pid)? as u64,
            rss_bytes: server::memory(pid)?.0,
        })
    }

    fn max(self, o: Resources) -> Resources {
        Resources {
            segments: self.segments.max(o.segments),
            open_files: self.open_files.max(o.open_files),
            rss_bytes: self.rss_bytes.max(o.rss_bytes),
        }
    }
}

#[derive(Serialize)]
pub struct Busy {
    pub traces: u64,
    pub seconds: f64,
    pub pages: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Merges the server finished while the queries ran.
    pub merges: u64,
    /// Traces the index made durable meanwhile (flushed memtables).
    pub flushed_traces: u64,
    /// Of the journal frames the pages read, the share the server's frame
    /// cache held (`None`: a server without one).
    pub frame_cache_hit_share: Option<f64>,
    /// The largest of each resource sampled while loading.
    pub max: Resources,
    /// Once the merges the load started are done.
    pub end: Resources,
    /// How long those merges took after the load.
    pub settle_seconds: f64,
}

/// The server's resources once merging has stopped: segments and merges
/// unchanged for 3 s (at most 5 minutes).
fn settled(url: &str, pid: u32) -> Result<Resources> {
    let state = || -> Result<(u64, u64)> {
        Ok((
            server::metric(url, "cts_index_segments")?,
            server::metric(url, "cts_index_segment_merges")?,
        ))
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut last, mut since) = (state()?, Instant::now());
    while since.elapsed() < Duration::from_secs(3) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = state()?;
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    Resources::of(url, pid)
}

/// The server's frame cache hits and misses so far, if it has one.
fn frame_cache(url: &str) -> Option<(u64, u64)> {
    let hits = server::metric(url, "cts_query_frame_cache_hits").ok()?;
    Some((
        hits,
        server::metric(url, "cts_query_frame_cache_misses").ok()?,
    ))
}

/// Loads `plan` with `clients` on a thread of its own while `target` runs
/// `queries` one after another, until the load is done.
pub fn run(
    plan: Arc<Plan>,
    clients: usize,
    target: &mut dyn Target,
    queries: &[Query],
    pid: u32,
) -> Result<Busy> {
    anyhow::ensure!(!queries.is_empty(), "no queries to run while loading");
    let url = plan.urls[0].clone();
    let merges_before = server::metric(&url, "cts_index_segment_merges")?;
    let durable_before = server::metric(&url, "cts_index_durable_seq")?;
    let cache_before = frame_cache(&url);
    let loader = std::thread::spawn(move || -> Result<load::Ingest> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(load::ingest(plan, clients))
    });
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut max = Resources::of(&url, pid)?;
    let mut sampled = Instant::now();
    for q in queries.iter().cycle() {
        if loader.is_finished() {
            break;
        }
        let (took, _) = target.page(q, None)?;
        latencies.push(ms(took));
        if sampled.elapsed() >= Duration::from_millis(500) {
            max = max.max(Resources::of(&url, pid)?);
            sampled = Instant::now();
        }
    }
    let ingest = loader
        .join()
        .map_err(|_| anyhow!("the loader thread panicked"))??;
    let seconds = start.elapsed().as_secs_f64();
    let settle = Instant::now();
    let cache = frame_cache(&url).zip(cache_before);
    let end = settled(&url, pid)?;
    Ok(Busy {
        traces: ingest.traces,
        seconds,
        settle_seconds: settle.elapsed().as_secs_f64(),
        pages: latencies.len(),
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        merges: server::metric(&url, "cts_index_segment_merges")? - merges_before,
        flushed_traces: server::metric(&url, "cts_index_durable_seq")? - durable_before,
        frame_cache_hit_share: cache.map(|((hits, misses), (hits0, misses0))| {
            (hits - hits0) as f64 / ((hits - hits0) + (misses - misses0)).max(1) as f64
        }),
        max: max.max(end),
        end,
    })
}
