//! The HTTP load: C keep-alive clients posting batches of B traces.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use crate::auth::{with_query, Auth};
use crate::gen::{self, Generator, Timeline};
use crate::stats::ms;

/// Every 20th pair of batches goes to another tenant (of the generated
/// data; [`Auth::project`] knows its id on the server).
pub fn project_for_batch(b: u64) -> &'static str {
    match b % 20 {
        18 => gen::OTHER_PROJECTS[0],
        19 => gen::OTHER_PROJECTS[1],
        _ => gen::MAIN_PROJECT,
    }
}

#[derive(Deserialize)]
struct Ack<'a> {
    recorded: u64,
    #[serde(borrow)]
    trace_ids: Vec<&'a str>,
}

pub fn http_client(clients: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()?)
}

#[derive(Default)]
pub struct Ingest {
    pub traces: u64,
    pub elapsed: Duration,
    pub latencies_ms: Vec<f64>,
    pub retries: u64,
    /// One server-assigned id per main-project batch, for trace_id queries.
    pub sample_ids: Vec<String>,
    pub body_bytes: u64,
}

pub struct Plan {
    pub gen: Arc<Generator>,
    pub timeline: Timeline,
    pub batch: u64,
    /// The nodes: batch b goes to node b mod their number.
    pub urls: Vec<String>,
    pub auth: Arc<Auth>,
    /// Traces per second; `None`: as fast as the server takes them.
    pub rate: Option<f64>,
}

impl Plan {
    pub fn body(&self, b: u64) -> Vec<u8> {
        let first = b * self.batch;
        let last = (first + self.batch).min(self.timeline.n);
        let mut body = Vec::with_capacity(((last - first) * 1100) as usize + 16);
        body.extend_from_slice(b"{\"traces\":[");
        for k in first..last {
            if k > first {
                body.push(b',');
            }
            self.gen
                .write_trace(&mut body, k, self.timeline.time(k), None);
        }
        body.extend_from_slice(b"]}");
        body
    }
}

/// Reports `body` to `project`, signed: the status, the answer and how long
/// the server took (the clock starts after signing).
pub async fn post(
    http: &reqwest::Client,
    auth: &Auth,
    base: &str,
    project: &str,
    body: bytes::Bytes,
) -> Result<(u16, bytes::Bytes, Duration)> {
    let url = format!("{base}/v3/{project}/traces");
    let request = auth.request(http, reqwest::Method::POST, &url, Some(project), body)?;
    let sent = Instant::now();
    let resp = request.send().await?;
    let status = resp.status().as_u16();
    let answer = resp.bytes().await?;
    Ok((status, answer, sent.elapsed()))
}

/// Loads every trace of the plan; fails if a batch is refused for good.
pub async fn ingest(plan: Arc<Plan>, clients: usize) -> Result<Ingest> {
    let http = http_client(clients)?;
    let next = Arc::new(AtomicU64::new(0));
    let batches = plan.timeline.n.div_ceil(plan.batch);
    let start = Instant::now();
    // Long loads say how far they are every 10 s.
    let ticker = {
        let next = next.clone();
        let batch = plan.batch;
        let n = plan.timeline.n;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let sent = (next.load(Ordering::Relaxed) * batch).min(n);
                let rate = sent as f64 / start.elapsed().as_secs_f64();
                eprintln!("  ingest: {sent} of {n} traces sent, {rate:.0}/s");
            }
        })
    };
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (plan, http, next) = (plan.clone(), http.clone(), next.clone());
            tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(c as u64);
                let mut out = Ingest::default();
                loop {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    if b >= batches {
                        return Ok::<_, anyhow::Error>(out);
                    }
                    if let Some(rate) = plan.rate {
                        let due = (b * plan.batch) as f64 / rate;
                        tokio::time::sleep_until((start + Duration::from_secs_f64(due)).into())
                            .await;
                    }
                    let url = &plan.urls[b as usize % plan.urls.len()];
                    let tenant = project_for_batch(b);
                    let project = plan.auth.project(tenant);
                    let body = bytes::Bytes::from(plan.body(b));
                    out.body_bytes += body.len() as u64;
                    let mut attempt = 0;
                    let (status, answer) = loop {
                        let result = post(&http, &plan.auth, url, project, body.clone()).await;
                        match result {
                            Ok((201, answer, took)) => {
                                out.latencies_ms.push(ms(took));
                                break (201, answer);
                            }
                            // Overload or a transport hiccup: back off, retry.
                            Ok((429 | 500..=599, _, _)) | Err(_) if attempt < 5 => {
                                attempt += 1;
                                out.retries += 1;
                                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                            }
                            Ok((status, answer, _)) => break (status, answer),
                            Err(e) => return Err(e.context(format!("batch {b}"))),
                        }
                    };
                    if status != 201 {
                        bail!(
                            "batch {b} refused with HTTP {status}: {}",
                            String::from_utf8_lossy(&answer[..answer.len().min(2000)])
                        );
                    }
                    let ack: Ack = serde_json::from_slice(&answer).context("the 201 answer")?;
                    out.traces += ack.recorded;
                    if tenant == gen::MAIN_PROJECT && !ack.trace_ids.is_empty() {
                        let i = rng.random_range(0..ack.trace_ids.len());
                        out.sample_ids.push(ack.trace_ids[i].to_string());
                    }
                }
            })
        })
        .collect();
    let mut total = Ingest::default();
    for t in tasks {
        let part = t.await??;
        total.traces += part.traces;
        total.latencies_ms.extend(part.latencies_ms);
        total.retries += part.retries;
        total.sample_ids.extend(part.sample_ids);
        total.body_bytes += part.body_bytes;
    }
    total.elapsed = start.elapsed();
    ticker.abort();
    Ok(total)
}

pub struct CrashLoad {
    /// Trace ids (reporter-supplied) whose batch was answered 201.
    pub acked: Vec<String>,
    pub attempted_batches: u64,
}

/// Posts batches with reporter-supplied trace ids, stamped "now", until
/// `stop` is set; the server is expected to die underneath. `acked_so_far`
/// counts acknowledged traces as they come.
pub async fn crash_load(
    gen: Arc<Generator>,
    auth: Arc<Auth>,
    url: String,
    clients: usize,
    batch: u64,
    stop: Arc<AtomicBool>,
    acked_so_far: Arc<AtomicU64>,
) -> Result<CrashLoad> {
    let http = http_client(clients)?;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (gen, http, stop, url) = (gen.clone(), http.clone(), stop.clone(), url.clone());
            let auth = auth.clone();
            let acked_so_far = acked_so_far.clone();
            tokio::spawn(async move {
                let mut rng = SmallRng::seed_from_u64(1_000 + c as u64);
                let mut out = CrashLoad {
                    acked: Vec::new(),
                    attempted_batches: 0,
                };
                let project = auth.project(gen::MAIN_PROJECT);
                while !stop.load(Ordering::Relaxed) {
                    let now = crate::now_ms() - 1_000;
                    let ids: Vec<String> = (0..batch).map(|_| gen::uuid(&mut rng)).collect();
                    let mut body = Vec::with_capacity(batch as usize * 1200);
                    body.extend_from_slice(b"{\"traces\":[");
                    for (i, id) in ids.iter().enumerate() {
                        if i > 0 {
                            body.push(b',');
                        }
                        gen.write_trace(&mut body, rng.random(), now, Some(id));
                    }
                    body.extend_from_slice(b"]}");
                    out.attempted_batches += 1;
                    match post(&http, &auth, &url, project, body.into()).await {
                        Ok((201, _, _)) => {
                            acked_so_far.fetch_add(ids.len() as u64, Ordering::Relaxed);
                            out.acked.extend(ids);
                        }
                        // Refused or cut off by the kill: not acknowledged, so
                        // nothing is promised about these ids.
                        _ => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                out
            })
        })
        .collect();
    let mut total = CrashLoad {
        acked: Vec::new(),
        attempted_batches: 0,
    };
    for t in tasks {
        let part = t.await?;
        total.acked.extend(part.acked);
        total.attempted_batches += part.attempted_batches;
    }
    Ok(total)
}

#[derive(Default, serde::Serialize)]
pub struct Verify {
    pub checked: u64,
    pub missing: u64,
    pub duplicated: u64,
}

#[derive(Deserialize)]
struct CountOnly {
    meta_data: Meta,
}

#[derive(Deserialize)]
struct Meta {
    count: u64,
}

/// Looks every id up by `trace_id=`; each must be there exactly once.
pub async fn verify(
    auth: Arc<Auth>,
    url: &str,
    ids: Vec<String>,
    clients: usize,
    from: i64,
    to: i64,
) -> Result<Verify> {
    let http = http_client(clients)?;
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, ids, next, auth) = (http.clone(), ids.clone(), next.clone(), auth.clone());
            let url = format!("{url}/v3/{}/traces", auth.project(gen::MAIN_PROJECT));
            tokio::spawn(async move {
                let mut v = Verify::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(id) = ids.get(i) else {
                        return Ok::<_, anyhow::Error>(v);
                    };
                    let query = with_query(
                        &url,
                        &[
                            ("trace_id", id.clone()),
                            ("from", from.to_string()),
                            ("to", to.to_string()),
                        ],
                    );
                    let project = Some(auth.project(gen::MAIN_PROJECT));
                    let resp = auth
                        .request(
                            &http,
                            reqwest::Method::GET,
                            &query,
                            project,
                            Default::default(),
                        )?
                        .send()
                        .await?;
                    let status = resp.status();
                    let body = resp.bytes().await?;
                    if !status.is_success() {
                        bail!(
                            "trace_id query: HTTP {status}: {}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                    let count = serde_json::from_slice::<CountOnly>(&body)?.meta_data.count;
                    v.checked += 1;
                    match count {
                        0 => v.missing += 1,
                        1 => {}
                        _ => v.duplicated += 1,
                    }
                }
            })
        })
        .collect();
    let mut total = Verify::default();
    for t in tasks {
        let v = t.await??;
        total.checked += v.checked;
        total.missing += v.missing;
        total.duplicated += v.duplicated;
    }
    Ok(total)
}
