//! `cts-bench --soak DURATION`: a long run at a steady ingest rate (half
//! the measured maximum unless `--rate`), with ListTraces queries all the
//! while and the management tracker transferring to a local bucket. Every
//! `--sample-every` it samples what must stay flat (memory, open files,
//! segments, query tails) and what shows the load kept up (ingest rate,
//! transfer backlog); see [`report`] for the table and plot.

mod report;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::auth::Auth;
use crate::gen::{self, Generator};
use crate::queries::{self, Query, Target, SINGLE_FILTERS};
use crate::server::{self, Server};
use crate::stats::{ms, percentile};
use crate::{load, now_ms, progress, Setup};
use report::Sample;

pub struct Config {
    pub duration: Duration,
    pub sample_every: Duration,
    /// Traces per second; `None`: half the rate measured first.
    pub rate: Option<f64>,
    pub transfer_period: Duration,
    pub run: Setup,
}

/// The bucket the management tracker transfers to (`DATA_DIR/obs/…`).
const BUCKET: &str = "cts-soak";
const MIB: f64 = 1024.0 * 1024.0;
/// Queries look at the last ten minutes: the soak's traces are all recent.
const QUERY_WINDOW_MS: i64 = 600_000;

/// Query latencies (ms) since the last sample.
#[derive(Default)]
struct Latencies(Mutex<Vec<f64>>);

impl Latencies {
    fn push(&self, ms: f64) {
        self.0.lock().expect("latencies lock").push(ms);
    }
    fn take(&self) -> Vec<f64> {
        std::mem::take(&mut *self.0.lock().expect("latencies lock"))
    }
}

pub fn run(cfg: &Config) -> Result<()> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&cfg.run.out_dir)?;
    let data_dir = cfg.run.work.join("ctsd");
    std::fs::create_dir_all(&data_dir)?;
    let log = cfg.run.out_dir.join("ctsd-soak.log");
    let period = humantime::format_duration(cfg.transfer_period).to_string();
    let (srv, _) = Server::start(
        &cfg.run.server_bin,
        &data_dir,
        &log,
        &[("CTS_TRANSFER_PERIOD", period)],
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let auth = Arc::new(rt.block_on(Auth::setup(&load::http_client(1)?, &srv.url, &data_dir))?);
    rt.block_on(transfer_to_local_bucket(&auth, &srv.url))?;
    let gen = Arc::new(Generator::new(&gen::Config {
        seed: cfg.run.seed,
        ..gen::Config::default()
    }));
    let loader = Loader {
        gen: gen.clone(),
        auth: auth.clone(),
        url: srv.url.clone(),
        batch: cfg.run.batch,
        clients: cfg.run.clients,
        next: Arc::new(AtomicU64::new(0)),
        acked: Arc::new(AtomicU64::new(0)),
        failed: Arc::new(AtomicU64::new(0)),
        stop: Arc::new(AtomicBool::new(false)),
    };

    let rate = match cfg.rate {
        Some(r) => r,
        None => {
            let probe = (cfg.duration / 6).clamp(Duration::from_secs(3), Duration::from_secs(30));
            progress(
                t0,
                &format!("measuring the maximum ingest rate for {probe:?}"),
            );
            let max = rt.block_on(loader.probe(probe))?;
            progress(t0, &format!("maximum {max:.0} traces/s; soaking at half"));
            max / 2.0
        }
    };
    check_disk(
        &data_dir,
        rate,
        cfg.duration,
        loader.acked.load(Ordering::Relaxed),
    )?;
    progress(
        t0,
        &format!(
            "soak: {:?} at {rate:.0} traces/s, ListTraces all the while, transfer every {}, sample every {:?}",
            cfg.duration,
            humantime::format_duration(cfg.transfer_period),
            cfg.sample_every
        ),
    );

    let latencies = Arc::new(Latencies::default());
    let ingest = rt.spawn(loader.clone().paced(rate));
    let querier = {
        let (auth, gen, url, stop) = (
            auth.clone(),
            gen.clone(),
            srv.url.clone(),
            loader.stop.clone(),
        );
        let (latencies, sent) = (latencies.clone(), loader.next.clone());
        let (batch, seed) = (cfg.run.batch, cfg.run.seed);
        std::thread::spawn(move || {
            query_loop(&auth, &gen, &url, &stop, &latencies, &sent, batch, seed)
        })
    };

    let metrics = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let start = Instant::now();
    let (mut last, mut last_acked) = (start, loader.acked.load(Ordering::Relaxed));
    let mut samples = Vec::new();
    report::print_header();
    while start.elapsed() < cfg.duration {
        let due = start + cfg.sample_every * (samples.len() as u32 + 1);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if querier.is_finished() || ingest.is_finished() {
            break;
        }
        let now = Instant::now();
        let acked = loader.acked.load(Ordering::Relaxed);
        let text = metrics
            .get(format!("{}/metrics", srv.url))
            .send()
            .and_then(|r| r.text())
            .context("GET /metrics")?;
        let lat = latencies.take();
        let (rss, _) = server::memory(srv.pid())?;
        let sample = Sample {
            at_s: now.duration_since(start).as_secs_f64(),
            rss_mib: rss as f64 / MIB,
            index_memory_mib: server::gauge(&text, "cts_index_summary_bytes")? / MIB,
            frame_cache_mib: server::gauge(&text, "cts_query_frame_cache_bytes")? / MIB,
            open_files: server::open_files(srv.pid())?,
            segments: server::gauge(&text, "cts_index_segments")?,
            query_p50_ms: percentile(&lat, 50.0),
            query_p99_ms: percentile(&lat, 99.0),
            queries: lat.len(),
            ingest_rate: (acked - last_acked) as f64 / now.duration_since(last).as_secs_f64(),
            transfer_backlog: server::gauge(&text, "cts_transfer_backlog_all_traces")?,
        };
        report::print_row(&sample);
        samples.push(sample);
        (last, last_acked) = (now, acked);
    }
    loader.stop.store(true, Ordering::Relaxed);
    let loaded = rt.block_on(ingest)?;
    let queried = querier
        .join()
        .map_err(|_| anyhow::anyhow!("the query thread panicked"))?;
    loaded.context("soak ingest")?;
    queried.context("soak queries")?;
    if samples.is_empty() {
        bail!("the soak ended before its first sample");
    }
    let summary = report::Summary {
        duration: cfg.duration,
        rate,
        acked: loader.acked.load(Ordering::Relaxed),
        failed: loader.failed.load(Ordering::Relaxed),
        transfer_period: cfg.transfer_period,
    };
    let written = report::write(&cfg.run.out_dir, &summary, &samples)?;
    progress(
        t0,
        &format!(
            "soak done: {} traces acknowledged, {} batches refused; wrote {}",
            summary.acked,
            summary.failed,
            written
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    Ok(())
}

/// Gives the first project's management tracker a bucket in the server's
/// local object store, so that the transfer writes trace files throughout.
async fn transfer_to_local_bucket(auth: &Auth, url: &str) -> Result<()> {
    let obs = json!({"obs_info": {"bucket_name": BUCKET, "is_obs_created": true}});
    auth.update_system_tracker(url, obs).await
}

/// Refuses a soak that would fill the disk: what the probe wrote per trace
/// (or 512 bytes, the benchmark's journal and index per ~1 KB trace with
/// room to spare, when there was no probe), half again for the trace files
/// and the index still in memory, against 80% of the free space.
fn check_disk(data_dir: &Path, rate: f64, duration: Duration, probed: u64) -> Result<()> {
    let per_trace = if probed > 0 {
        server::disk_usage(data_dir)? as f64 / probed as f64
    } else {
        512.0
    };
    let need = 1.5 * per_trace * rate * duration.as_secs_f64();
    let free = server::free_space(data_dir)? as f64;
    if need > free * 0.8 {
        bail!(
            "the soak would write about {:.1} GB at {rate:.0} traces/s but {:.1} GB are free under {}: \
             lower --rate, shorten --soak or pass --work-dir",
            need / 1e9,
            free / 1e9,
            data_dir.display()
        );
    }
    Ok(())
}

/// One client, one query after the other: a page of 200 of the main
/// project's last ten minutes with one filter, its value drawn from a
/// trace already sent.
#[allow(clippy::too_many_arguments)]
fn query_loop(
    auth: &Auth,
    gen: &Generator,
    url: &str,
    stop: &AtomicBool,
    latencies: &Latencies,
    sent_batches: &AtomicU64,
    batch: u64,
    seed: u64,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut target = queries::Http {
        rt: &rt,
        http: load::http_client(1)?,
        url: url.to_string(),
        auth,
        pid: None,
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let sent = sent_batches.load(Ordering::Relaxed) * batch;
        if sent == 0 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let (param, pick) = SINGLE_FILTERS[rng.random_range(0..SINGLE_FILTERS.len())];
        let value = pick(&gen.values(rng.random_range(0..sent)));
        let now = now_ms();
        let q = Query {
            filters: vec![(param, value)],
            from: now - QUERY_WINDOW_MS,
            to: now + 1_000,
            pages: 1,
        };
        let (took, _) = target.page(&q, None)?;
        latencies.push(ms(took));
    }
    Ok(())
}

/// The soak's reporters: `clients` connections posting batches of the
/// main project's traces stamped "now".
#[derive(Clone)]
struct Loader {
    gen: Arc<Generator>,
    auth: Arc<Auth>,
    url: String,
    batch: u64,
    clients: usize,
    /// Batches started so far (the next batch's number).
    next: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    /// Batches answered with overload or a server error, or not answered.
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Loader {
    /// Loads as fast as the server takes it for `span`; the rate reached.
    async fn probe(&self, span: Duration) -> Result<f64> {
        let before = self.acked.load(Ordering::Relaxed);
        let start = Instant::now();
        let probe = Loader {
            stop: Arc::new(AtomicBool::new(false)),
            ..self.clone()
        };
        let run = tokio::spawn(probe.clone().load(None));
        tokio::time::sleep(span).await;
        probe.stop.store(true, Ordering::Relaxed);
        run.await??;
        let acked = self.acked.load(Ordering::Relaxed) - before;
        Ok(acked as f64 / start.elapsed().as_secs_f64())
    }

    /// Loads at `rate` traces per second until stopped.
    async fn paced(self, rate: f64) -> Result<()> {
        self.load(Some(rate)).await
    }

    async fn load(self, rate: Option<f64>) -> Result<()> {
        let http = load::http_client(self.clients)?;
        let start = tokio::time::Instant::now();
        let first = self.next.load(Ordering::Relaxed);
        let tasks: Vec<_> = (0..self.clients)
            .map(|_| {
                let (me, http) = (self.clone(), http.clone());
                tokio::spawn(async move {
                    let project = me.auth.project(gen::MAIN_PROJECT);
                    while !me.stop.load(Ordering::Relaxed) {
                        let b = me.next.fetch_add(1, Ordering::Relaxed);
                        if let Some(rate) = rate {
                            let due = (b - first) as f64 * me.batch as f64 / rate;
                            tokio::time::sleep_until(start + Duration::from_secs_f64(due)).await;
                        }
                        let mut body = Vec::with_capacity(me.batch as usize * 1200);
                        body.extend_from_slice(b"{\"traces\":[");
                        let now = now_ms();
                        for k in b * me.batch..(b + 1) * me.batch {
                            if k > b * me.batch {
                                body.push(b',');
                            }
                            me.gen.write_trace(&mut body, k, now, None);
                        }
                        body.extend_from_slice(b"]}");
                        match load::post(&http, &me.auth, &me.url, project, body.into()).await {
                            Ok((201, _, _)) => {
                                me.acked.fetch_add(me.batch, Ordering::Relaxed);
                            }
                            Ok((429 | 500..=599, _, _)) | Err(_) => {
                                me.failed.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Ok((status, answer, _)) => bail!(
                                "batch {b} refused with HTTP {status}: {}",
                                String::from_utf8_lossy(&answer[..answer.len().min(2000)])
                            ),
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        Ok(())
    }
}
