//! The `otlp` sink: a batch of one tracker's traces as an OTLP
//! `ExportLogsServiceRequest` (the `opentelemetry-proto` types, encoded by
//! prost), gzip'd, `POST`ed to `{endpoint}/v1/logs`.
//!
//! One LogRecord per trace: the stored trace JSON as the body, `time` as
//! the timestamp, `record_time` as the observed time, severity from
//! `trace_rating`, the filterable fields as `cts.*` attributes; the
//! resource says whose stream it is (`cts.project_id`, `cts.region`,
//! `cts.log_group`, `cts.log_topic` and their ids).

use std::io::Write;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::fields::{Fields, Severity};
use crate::protocol::{Protocol, Sending, Stream};
use crate::sink::{Failure, SinkError, SinkSpec};

/// The gzip'd protobuf request body of `docs` (stored trace JSON; a
/// document that does not read is left out and counted in the answer).
/// CPU work: call it off the async workers.
pub fn encode(stream: &Stream, docs: &[Vec<u8>]) -> (Vec<u8>, u64) {
    let mut unreadable = 0;
    let records: Vec<LogRecord> = docs
        .iter()
        .filter_map(|doc| {
            let record = record(doc);
            unreadable += u64::from(record.is_none());
            record
        })
        .collect();
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "cts"),
                    kv("cts.project_id", &stream.project_id),
                    kv("cts.region", &stream.region),
                    kv("cts.log_group", &stream.log_group),
                    kv("cts.log_topic", &stream.log_topic),
                    kv("cts.log_group_id", &stream.group_id),
                    kv("cts.log_stream_id", &stream.stream_id),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "cts".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let raw = request.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    gz.write_all(&raw).expect("gzip into memory");
    (gz.finish().expect("gzip into memory"), unreadable)
}

fn record(doc: &[u8]) -> Option<LogRecord> {
    let f: Fields<'_> = serde_json::from_slice(doc).ok()?;
    let text = std::str::from_utf8(doc).ok()?;
    let (number, severity) = match Severity::of(&f.trace_rating) {
        Severity::Info => (SeverityNumber::Info, "INFO"),
        Severity::Warn => (SeverityNumber::Warn, "WARN"),
        Severity::Error => (SeverityNumber::Error, "ERROR"),
    };
    let mut attributes = vec![
        kv("cts.trace_id", &f.trace_id),
        kv("cts.service_type", &f.service_type),
        kv("cts.resource_type", &f.resource_type),
        kv("cts.trace_name", &f.trace_name),
        kv("cts.trace_type", &f.trace_type),
        kv("cts.trace_rating", &f.trace_rating),
        kv("cts.source_ip", &f.source_ip),
    ];
    let optional = [
        ("cts.resource_name", f.resource_name.as_deref()),
        ("cts.resource_id", f.resource_id.as_deref()),
        ("cts.user", f.user.name.as_deref()),
        ("cts.user_id", f.user.id.as_deref()),
        ("cts.request_id", f.request_id.as_deref()),
        (
            "cts.tracker_name",
            Some(f.tracker_name.as_ref()).filter(|s| !s.is_empty()),
        ),
    ];
    attributes.extend(
        optional
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| kv(k, v))),
    );
    if let Some(code) = f.code() {
        attributes.push(kv("cts.code", &code));
    }
    Some(LogRecord {
        time_unix_nano: nanos(f.time),
        observed_time_unix_nano: nanos(f.record_time),
        severity_number: number as i32,
        severity_text: severity.into(),
        body: Some(string(text)),
        attributes,
        ..Default::default()
    })
}

fn nanos(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000)
}

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(string(value)),
        ..Default::default()
    }
}

/// An HTTP client for one `otlp` sink.
#[derive(Debug, Clone)]
pub struct Client {
    url: reqwest::Url,
    http: reqwest::Client,
}

impl Client {
    /// Builds the client of a checked `spec`; a CA file that does not read
    /// is an error (at start, not at the first delivery).
    pub fn new(spec: &SinkSpec) -> Result<Client, String> {
        let base = spec.endpoint.trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}/v1/logs")).map_err(|e| e.to_string())?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &spec.headers {
            let name =
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
            let value = reqwest::header::HeaderValue::from_str(v).map_err(|e| e.to_string())?;
            headers.insert(name, value);
        }
        let mut http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        if let Some(ca) = &spec.ca_file {
            let pem = crate::protocol::read_ca(ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            http = http.tls_built_in_root_certs(false);
            for c in certs {
                http = http.add_root_certificate(c);
            }
        }
        Ok(Client {
            url,
            http: http.build().map_err(|e| e.to_string())?,
        })
    }

    /// Sends one gzip'd request body; `Ok` once the receiver answered 2xx.
    async fn post(&self, body: Vec<u8>) -> Result<(), SinkError> {
        let answer = self
            .http
            .post(self.url.clone())
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "gzip")
            .body(body)
            .send()
            .await
            .map_err(|e| SinkError {
                failure: if is_tls(&e) {
                    Failure::TlsError
                } else {
                    Failure::Unreachable
                },
                message: chain(&e),
            })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let text = answer.text().await.unwrap_or_default();
        let retryable =
            status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
        Err(SinkError {
            failure: if retryable {
                Failure::Unreachable
            } else {
                Failure::Rejected
            },
            message: format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            ),
        })
    }
}

impl Protocol for Client {
    fn encode(&self, stream: &Stream, docs: &[Vec<u8>]) -> (Vec<u8>, u64) {
        encode(stream, docs)
    }

    fn send(&self, body: Vec<u8>) -> Sending<'_> {
        Box::pin(self.post(body))
    }
}

pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Whether a failed request failed in the TLS handshake.
fn is_tls(e: &reqwest::Error) -> bool {
    let text = chain(e).to_ascii_lowercase();
    text.contains("certificate") || text.contains("tls") || text.contains("handshake")
}
