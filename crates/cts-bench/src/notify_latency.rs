//! `cts-bench --notify-latency DURATION`: report-to-delivery latency of key
//! event notifications through a real `ctsd`. The bench starts the server,
//! a webhook receiver of its own (loopback, checking every message's
//! HMAC-SHA256 signature with the subscription's secret), a topic with that
//! webhook subscribed and a rule matching about a tenth of the generated
//! traces; then it reports traces at a steady rate for DURATION and times
//! each matching trace from the report's 201 to the message's arrival.
//!
//! Every expected message must arrive exactly once (repeats are counted,
//! not timed), correctly signed, before the drain deadline; the figures
//! are p50/p99/max over all of them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::auth::Auth;
use crate::gen::{self, Generator};
use crate::server::Server;
use crate::stats::percentile;
use crate::{load, now_ms};

/// The target, from a report's 201 to delivery, to a healthy endpoint.
const TARGET_P99_MS: f64 = 5000.0;
/// Traces per report.
const PER_REPORT: u64 = 10;
/// A rule operation for every `SHARE`-th fragment of the generator.
const SHARE: usize = 10;
/// How long stragglers may take after the last report.
const DRAIN: Duration = Duration::from_secs(30);

pub struct Config<'a> {
    pub duration: Duration,
    /// Traces per second.
    pub rate: f64,
    pub seed: u64,
    pub server_bin: &'a Path,
    pub work: &'a Path,
    pub log: &'a Path,
}

/// What the receiver saw.
#[derive(Default)]
struct Inbox {
    secret: String,
    /// Trace id → when its report was answered 201.
    acked: HashMap<String, Instant>,
    /// Trace id → report-to-receipt latency (ms), the first receipt.
    latency: HashMap<String, f64>,
    /// Arrived before its report's 201 was seen by the reporter (the
    /// reporter's clock starts late): latency 0 is recorded then.
    early: HashMap<String, Instant>,
    repeats: u64,
    bad_signatures: u64,
    unexpected: u64,
}

type Shared = Arc<Mutex<Inbox>>;

/// `sha256=` + hex(HMAC-SHA256(secret, timestamp "." body)), compared in
/// constant time, as docs/notifications.md tells receivers to.
fn signed(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(stamp), Some(sig)) = (header("x-cts-timestamp"), header("x-cts-signature")) else {
        return false;
    };
    let Some(Ok(sig)) = sig.strip_prefix("sha256=").map(hex::decode) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(stamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

async fn receive(inbox: Shared, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let mut inbox = inbox.lock();
    if !signed(&inbox.secret, &headers, &body) {
        inbox.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let trace_id = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["trace"]["trace_id"].as_str().map(str::to_owned));
    let Some(id) = trace_id else {
        inbox.unexpected += 1;
        return StatusCode::NO_CONTENT;
    };
    if inbox.latency.contains_key(&id) || inbox.early.contains_key(&id) {
        inbox.repeats += 1;
    } else if let Some(sent) = inbox.acked.get(&id).copied() {
        inbox.latency.insert(id, (at - sent).as_secs_f64() * 1000.0);
    } else {
        inbox.early.insert(id, at);
    }
    StatusCode::NO_CONTENT
}

/// Serves the receiver on a loopback port until the runtime ends.
async fn start_receiver(inbox: Shared) -> Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: HeaderMap, b: Bytes| receive(inbox.clone(), h, b)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The rule's operations: every `SHARE`-th of the generator's distinct
/// operations (fragments pick them about evenly).
fn operations(g: &Generator) -> (Value, HashSet<(&'static str, &'static str, &'static str)>) {
    let all: BTreeSet<_> = g
        .fragments
        .iter()
        .map(|f| (f.meta.service, f.meta.resource_type, f.meta.trace_name))
        .collect();
    let set: HashSet<_> = all.into_iter().step_by(SHARE).collect();
    let mut by_type: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for &(service, resource_type, trace_name) in &set {
        by_type
            .entry((service, resource_type))
            .or_default()
            .push(trace_name);
    }
    let ops = by_type
        .into_iter()
        .map(|((s, r), names)| json!({"service_type": s, "resource_type": r, "trace_names": names}))
        .collect();
    (Value::Array(ops), set)
}

/// Topic, webhook subscription (its secret into the inbox) and rule.
async fn set_up(
    http: &reqwest::Client,
    auth: &Auth,
    url: &str,
    project: &str,
    hook: SocketAddr,
    operations: Value,
    inbox: &Shared,
) -> Result<()> {
    let topics = format!("{url}/v2/{project}/notifications/topics");
    let topic = auth
        .call(http, "POST", &topics, Some(json!({"name": "bench"})))
        .await?;
    let topic = topic["topic_urn"]
        .as_str()
        .with_context(|| format!("no topic_urn in {topic}"))?;
    let sub = json!({"protocol": "http", "endpoint": format!("http://{hook}/hook")});
    let sub = auth
        .call(
            http,
            "POST",
            &format!("{topics}/{topic}/subscriptions"),
            Some(sub),
        )
        .await?;
    inbox.lock().secret = sub["secret"]
        .as_str()
        .with_context(|| format!("no secret in {sub}"))?
        .to_owned();
    let rule = json!({
        "notification_name": "bench_latency",
        "operation_type": "customized",
        "operations": operations,
        "topic_id": topic,
    });
    auth.call(
        http,
        "POST",
        &format!("{url}/v3/{project}/notifications"),
        Some(rule),
    )
    .await?;
    Ok(())
}

pub fn run(cfg: &Config<'_>) -> Result<()> {
    ensure!(cfg.rate > 0.0, "--rate must be positive");
    let data_dir = cfg.work.join("ctsd");
    std::fs::create_dir_all(&data_dir)?;
    let g = Generator::new(&gen::Config {
        seed: cfg.seed,
        ..gen::Config::default()
    });
    let (ops, matching) = operations(&g);
    let (srv, _) = Server::start(cfg.server_bin, &data_dir, cfg.log, &[])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let inbox: Shared = Arc::default();
    let http = load::http_client(1)?;
    let auth = rt.block_on(Auth::setup(&http, &srv.url, &data_dir))?;
    let project = auth.project(gen::MAIN_PROJECT).to_owned();
    rt.block_on(async {
        let hook = start_receiver(inbox.clone()).await?;
        set_up(&http, &auth, &srv.url, &project, hook, ops, &inbox).await
    })?;

    // Steady reports: report r leaves at r × PER_REPORT / rate seconds.
    let url = format!("{}/v3/{project}/traces", srv.url);
    let period = Duration::from_secs_f64(PER_REPORT as f64 / cfg.rate);
    let started = Instant::now();
    let (mut expected, mut sent, mut late_reports) = (0u64, 0u64, 0u64);
    let mut body = Vec::new();
    for r in 0u32.. {
        let first = u64::from(r) * PER_REPORT;
        let due = started + period * r;
        if due - started >= cfg.duration {
            break;
        }
        match due.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None => late_reports += 1,
        }
        body.clear();
        body.extend_from_slice(b"{\"traces\":[");
        let mut ids = Vec::new();
        for k in first..first + PER_REPORT {
            if k > first {
                body.push(b',');
            }
            let id = format!("00000000-0000-4000-8000-{k:012x}");
            g.write_trace(&mut body, k, now_ms(), Some(&id));
            let m = g.values(k).meta;
            if matching.contains(&(m.service, m.resource_type, m.trace_name)) {
                ids.push(id);
            }
        }
        body.extend_from_slice(b"]}");
        let req = auth.request(
            &http,
            reqwest::Method::POST,
            &url,
            Some(&project),
            body.clone().into(),
        )?;
        let (status, text) = rt.block_on(async {
            let answer = req.send().await?;
            Ok::<_, reqwest::Error>((answer.status(), answer.text().await?))
        })?;
        let acked = Instant::now();
        if status.as_u16() != 201 {
            bail!("a report was answered {status}: {text}");
        }
        sent += PER_REPORT;
        expected += ids.len() as u64;
        let mut inbox = inbox.lock();
        for id in ids {
            match inbox.early.remove(&id) {
                Some(_) => {
                    inbox.latency.insert(id, 0.0);
                }
                None => {
                    inbox.acked.insert(id, acked);
                }
            }
        }
    }
    let reported = started.elapsed();
    let drained = Instant::now();
    while (inbox.lock().latency.len() as u64) < expected && drained.elapsed() < DRAIN {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Repeats or strays that come late are counted too.
    std::thread::sleep(Duration::from_millis(500));
    drop(srv);
    let inbox = inbox.lock();
    let lat: Vec<f64> = inbox.latency.values().copied().collect();
    let delivered = lat.len() as u64;
    let p99 = percentile(&lat, 99.0);
    let result = json!({
        "duration_s": reported.as_secs_f64(),
        "rate_traces_per_s": sent as f64 / reported.as_secs_f64(),
        "traces_reported": sent,
        "late_reports": late_reports,
        "messages_expected": expected,
        "messages_delivered": delivered,
        "repeats": inbox.repeats,
        "bad_signatures": inbox.bad_signatures,
        // Messages of traces this run did not report (e.g. the rule's
        // own creation, a CTS trace) or without a trace id.
        "other_messages": inbox.unexpected + inbox.early.len() as u64,
        "latency_ms": {
            "p50": percentile(&lat, 50.0),
            "p99": p99,
            "max": lat.iter().copied().fold(0.0, f64::max),
        },
        "target_p99_ms": TARGET_P99_MS,
        "all_delivered": delivered == expected,
        "meets_target": delivered == expected && p99 <= TARGET_P99_MS,
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    ensure!(
        delivered == expected && inbox.bad_signatures == 0,
        "{delivered} of {expected} messages delivered, {} badly signed",
        inbox.bad_signatures
    );
    Ok(())
}
