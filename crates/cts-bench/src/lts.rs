//! `cts-bench --lts N`: sustained LTS delivery to a local OTLP receiver.
//!
//! The receiver runs in this process: an axum server taking
//! `POST /v1/logs`, decompressing (by `Content-Encoding`) and decoding
//! every request (the `opentelemetry-proto` field numbers, down to each
//! record's body) and counting the records it decoded. Per run:
//! 1. a ctsd without a sink ingests N traces (ingest alone);
//! 2. for each compression asked for, in turn: a ctsd with an `otlp` sink
//!    to the receiver and `lts` on for the system tracker ingests N traces
//!    while it delivers them (ingest with the sink; the lag after the last
//!    ack until all arrived), then the receiver refuses (503) while N more
//!    are ingested, then accepts: the backlog's drain rate is the sink's
//!    delivery throughput.
//!
//! Figures are medians over runs, with the CPU time ctsd and this process
//! (the receiver) spent on the drain per million delivered traces: unlike
//! the rate, that does not depend on what else runs on the machine.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use parking_lot::Mutex;
use prost::Message;
use serde_json::json;

use crate::auth::Auth;
use crate::gen::{self, Generator, Timeline};
use crate::server::{own_cpu, process_cpu, Server};
use crate::stats::median;
use crate::{load, now_ms, progress, Setup, DAY_MS};

/// The issue's target: delivered traces per second to a local receiver.
const TARGET_PER_SEC: f64 = 100_000.0;

pub struct Config {
    pub traces: u64,
    pub runs: usize,
    /// The sink's `compression` settings to measure, each in every run.
    pub compressions: Vec<String>,
    pub run: Setup,
}

/// The values of a sink's `compression` (docs/lts.md).
pub const COMPRESSIONS: [&str; 3] = ["gzip", "zstd", "none"];

/// What the receiver decoded.
#[derive(Default)]
struct Receiver {
    /// Answer 503 while false.
    open: AtomicBool,
    records: AtomicU64,
    /// When the first and the last accepted request arrived, and the
    /// records of the first.
    span: Mutex<Option<(Instant, Instant, u64)>>,
}

impl Receiver {
    fn reset(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        self.records.store(0, Ordering::SeqCst);
        *self.span.lock() = None;
    }

    /// Records per second between the first and the last request (those
    /// of the first were sent before the clock starts).
    fn rate(&self) -> Option<f64> {
        let (first, last, before) = (*self.span.lock())?;
        let secs = (last - first).as_secs_f64();
        let after = self.records.load(Ordering::SeqCst) - before;
        (secs > 0.0).then(|| after as f64 / secs)
    }
}

// The parts of an `ExportLogsServiceRequest` (the field numbers of
// `opentelemetry-proto`) the receiver checks: prost skips every other
// field, so a record is decoded without owned strings, and the receiver
// (on the same cores as ctsd) costs little beside the sink.
#[derive(Clone, PartialEq, prost::Message)]
struct LogsRequest {
    #[prost(message, repeated, tag = "1")]
    resource_logs: Vec<ResourceLogs>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceLogs {
    #[prost(message, repeated, tag = "2")]
    scope_logs: Vec<ScopeLogs>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeLogs {
    #[prost(message, repeated, tag = "2")]
    log_records: Vec<LogRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LogRecord {
    #[prost(message, optional, tag = "5")]
    body: Option<AnyValue>,
}

/// Its content is checked as a protobuf message and skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct AnyValue {}

thread_local! {
    /// The decompressed request, reused between requests of a thread.
    static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Decodes one OTLP/HTTP request body sent with `encoding` (its
/// `Content-Encoding`); the number of log records.
fn decode(body: &[u8], encoding: Option<&str>) -> Result<usize> {
    RAW.with_borrow_mut(|raw| {
        raw.clear();
        let raw: &[u8] = match encoding {
            Some("gzip") => {
                flate2::read::GzDecoder::new(body).read_to_end(raw)?;
                raw
            }
            Some("zstd") => {
                zstd::stream::read::Decoder::new(body)?.read_to_end(raw)?;
                raw
            }
            None => body,
            Some(other) => bail!("unknown content-encoding {other:?}"),
        };
        let request = LogsRequest::decode(raw)?;
        let mut n = 0;
        for records in request.resource_logs.iter().flat_map(|r| &r.scope_logs) {
            for r in &records.log_records {
                // A record without its trace is not a delivered trace.
                if r.body.is_none() {
                    bail!("a log record without a body");
                }
                n += 1;
            }
        }
        Ok(n)
    })
}

async fn logs(
    State(r): State<Arc<Receiver>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if !r.open.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let encoding = match headers.get("content-encoding").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v.to_owned()),
        Some(Err(_)) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let decoded = tokio::task::spawn_blocking(move || decode(&body, encoding.as_deref())).await;
    let n = match decoded {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let now = Instant::now();
    let mut span = r.span.lock();
    r.records.fetch_add(n as u64, Ordering::SeqCst);
    *span = Some(span.map_or((now, now, n as u64), |(first, _, k)| (first, now, k)));
    (
        [("content-type", "application/x-protobuf")],
        ExportLogsServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

/// Starts the receiver; its base URL.
async fn serve(receiver: Arc<Receiver>) -> Result<String> {
    let app = axum::Router::new()
        .route("/v1/logs", axum::routing::post(logs))
        .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// One compression's figures in one run.
struct Run {
    ingest_with_sink: f64,
    lag_secs: f64,
    drain: f64,
    /// CPU seconds per million traces of the drain: ctsd's, the receiver's.
    ctsd_cpu: f64,
    receiver_cpu: f64,
}

pub fn run(cfg: &Config) -> Result<()> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&cfg.run.out_dir)?;
    let log = cfg.run.out_dir.join("ctsd-lts.log");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let receiver = Arc::new(Receiver::default());
    let url = rt.block_on(serve(receiver.clone()))?;
    progress(t0, &format!("OTLP receiver at {url}; generating traces"));
    let gen = Arc::new(Generator::new(&gen::Config {
        seed: cfg.run.seed,
        ..gen::Config::default()
    }));
    let w0 = now_ms();
    let timeline = || Timeline {
        start: w0 - DAY_MS,
        end: w0 - 60_000,
        n: cfg.traces,
    };
    // The system tracker records the main tenant's traces.
    let expected: u64 = (0..cfg.traces.div_ceil(cfg.run.batch))
        .filter(|&b| load::project_for_batch(b) == gen::MAIN_PROJECT)
        .map(|b| cfg.run.batch.min(cfg.traces - b * cfg.run.batch))
        .sum();
    let setup = |srv: &Server, dir: &Path| -> Result<Arc<Auth>> {
        Ok(Arc::new(rt.block_on(Auth::setup(
            &load::http_client(1)?,
            &srv.url,
            dir,
        ))?))
    };
    let ingest = |srv: &Server, auth: &Arc<Auth>| -> Result<f64> {
        let auth = auth.clone();
        let plan = Arc::new(load::Plan {
            gen: gen.clone(),
            timeline: timeline(),
            batch: cfg.run.batch,
            urls: vec![srv.url.clone()],
            auth,
            rate: None,
        });
        let done = rt.block_on(load::ingest(plan, cfg.run.clients))?;
        Ok(done.traces as f64 / done.elapsed.as_secs_f64())
    };
    // One sink's ctsd: ingest while it delivers, then the drain of a backlog.
    let with_sink = |r: usize, compression: &str| -> Result<Run> {
        let dir = cfg.run.work.join(format!("sink-{r}-{compression}"));
        std::fs::create_dir_all(&dir)?;
        let settings = [
            ("CTS_LTS_KIND", "otlp".to_string()),
            ("CTS_LTS_ENDPOINT", url.clone()),
            ("CTS_LTS_COMPRESSION", compression.to_string()),
            ("CTS_LTS_INTERVAL", "100ms".into()),
            ("CTS_LTS_MAX_BACKOFF", "1s".into()),
        ];
        let (srv, _) = Server::start(&cfg.run.server_bin, &dir, &log, &settings)?;
        receiver.reset(true);
        let auth = setup(&srv, &dir)?;
        rt.block_on(auth.update_system_tracker(&srv.url, json!({"is_lts_enabled": true})))?;
        let ingest_with_sink = ingest(&srv, &auth)?;
        let acked = Instant::now();
        wait_for(&receiver, expected, Duration::from_secs(600))?;
        let lag_secs = receiver.span.lock().map_or(0.0, |(_, last, _)| {
            last.saturating_duration_since(acked).as_secs_f64()
        });

        receiver.reset(false);
        ingest(&srv, &auth)?;
        let cpu = (process_cpu(srv.pid())?, own_cpu());
        receiver.open.store(true, Ordering::SeqCst);
        wait_for(&receiver, expected, Duration::from_secs(600))?;
        let per_million = 1e6 / receiver.records.load(Ordering::SeqCst).max(1) as f64;
        let ctsd_cpu = (process_cpu(srv.pid())? - cpu.0).as_secs_f64() * per_million;
        let receiver_cpu = (own_cpu() - cpu.1).as_secs_f64() * per_million;
        let drain = receiver.rate().context("the backlog came in one request")?;
        drop(srv);
        std::fs::remove_dir_all(&dir)?;
        progress(
            t0,
            &format!(
                "run {} ({compression}): ingest with the sink {ingest_with_sink:.0}/s (lag {lag_secs:.1} s), \
                 backlog drained at {drain:.0}/s (CPU s per 1 M: ctsd {ctsd_cpu:.2}, receiver {receiver_cpu:.2})",
                r + 1
            ),
        );
        Ok(Run {
            ingest_with_sink,
            lag_secs,
            drain,
            ctsd_cpu,
            receiver_cpu,
        })
    };
    // runs[c]: every run of compression c.
    let mut runs: Vec<Vec<Run>> = cfg.compressions.iter().map(|_| Vec::new()).collect();
    let mut alone = Vec::new();
    for r in 0..cfg.runs {
        let dir = cfg.run.work.join(format!("alone-{r}"));
        std::fs::create_dir_all(&dir)?;
        let (srv, _) = Server::start(&cfg.run.server_bin, &dir, &log, &[])?;
        let ingest_alone = ingest(&srv, &setup(&srv, &dir)?)?;
        drop(srv);
        std::fs::remove_dir_all(&dir)?;
        progress(
            t0,
            &format!("run {}: ingest alone {ingest_alone:.0}/s", r + 1),
        );
        alone.push(ingest_alone);
        // Each run in turn starts with another compression, so none always
        // runs first in a run.
        let n = cfg.compressions.len();
        for k in 0..n {
            let c = (k + r) % n;
            runs[c].push(with_sink(r, &cfg.compressions[c])?);
        }
    }
    let alone = median(&alone);
    let mut sinks = serde_json::Map::new();
    for (compression, runs) in cfg.compressions.iter().zip(&runs) {
        let median = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let (with_sink, drain) = (median(|r| r.ingest_with_sink), median(|r| r.drain));
        sinks.insert(
            compression.clone(),
            json!({
                "delivered_traces_per_sec": drain.round(),
                "ingest_traces_per_sec_with_sink": with_sink.round(),
                "ingest_ratio_with_sink": (with_sink / alone * 1000.0).round() / 1000.0,
                "lag_after_ingest_secs": (median(|r| r.lag_secs) * 10.0).round() / 10.0,
                "drain_runs_traces_per_sec": runs.iter().map(|r| r.drain.round()).collect::<Vec<_>>(),
                "drain_ctsd_cpu_secs_per_million": (median(|r| r.ctsd_cpu) * 100.0).round() / 100.0,
                "drain_receiver_cpu_secs_per_million": (median(|r| r.receiver_cpu) * 100.0).round() / 100.0,
                "meets_target": drain >= TARGET_PER_SEC,
            }),
        );
    }
    let result = json!({
        "traces_per_run": cfg.traces,
        "delivered_per_run": expected,
        "runs": cfg.runs,
        "ingest_traces_per_sec_alone": alone.round(),
        "target_delivered_traces_per_sec": TARGET_PER_SEC,
        "by_compression": sinks,
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

/// Waits until the receiver decoded at least `n` records (ctsd's own
/// traces of the tracker update come on top).
fn wait_for(receiver: &Receiver, n: u64, within: Duration) -> Result<()> {
    let start = Instant::now();
    while receiver.records.load(Ordering::SeqCst) < n {
        if start.elapsed() > within {
            bail!(
                "only {} of {n} traces arrived within {within:?}",
                receiver.records.load(Ordering::SeqCst)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;

    fn request(records: Vec<LogRecord>) -> Vec<u8> {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn gzipped(records: Vec<LogRecord>) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&request(records)).unwrap();
        gz.finish().unwrap()
    }

    fn record(body: Option<&str>) -> LogRecord {
        LogRecord {
            time_unix_nano: 1,
            body: body.map(|b| AnyValue {
                value: Some(any_value::Value::StringValue(b.into())),
            }),
            ..Default::default()
        }
    }

    /// The receiver counts what the official types encode, and refuses a
    /// record without its trace or a body that is not protobuf.
    #[test]
    fn the_receiver_counts_records_with_a_body() {
        let gzip = Some("gzip");
        let body = gzipped(vec![record(Some("{}")), record(Some("{\"a\":1}"))]);
        assert_eq!(super::decode(&body, gzip).unwrap(), 2);
        let body = gzipped(vec![record(Some("{}")), record(None)]);
        assert!(super::decode(&body, gzip).is_err());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[0x0a, 0x05, 0x01]).unwrap();
        assert!(super::decode(&gz.finish().unwrap(), gzip).is_err());
        // The same request zstd'd, as it is, and under a name it does not know.
        let raw = request(vec![record(Some("{}"))]);
        let zstd = zstd::bulk::compress(&raw, 1).unwrap();
        assert_eq!(super::decode(&zstd, Some("zstd")).unwrap(), 1);
        assert_eq!(super::decode(&raw, None).unwrap(), 1);
        assert!(super::decode(&raw, Some("br")).is_err());
    }
}
