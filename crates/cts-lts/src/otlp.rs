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

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::encoding::{encode_varint, encoded_len_varint, WireType};
use prost::Message;

use crate::fields::{Record, Severity};
use crate::protocol::{Protocol, Sending, Stream};
use crate::sink::{Failure, SinkError, SinkSpec};

/// The gzip'd protobuf `ExportLogsServiceRequest` of `records`: one
/// resource (the stream), one scope, a LogRecord per trace. The records
/// are written straight in the wire format from the borrowed fields (no
/// owned message per trace), one after the other into the compressor
/// through one small buffer: their lengths are counted first, so the
/// envelope's length prefixes go before them and the batch is never laid
/// out whole uncompressed. The few envelope messages through prost.
/// CPU work: call it off the async workers.
pub(crate) fn encode(stream: &Stream, records: &[Record<'_>]) -> Vec<u8> {
    let lens: Vec<usize> = records
        .iter()
        .map(|r| {
            let mut n = Len(0);
            log_record(&mut n, r);
            n.0
        })
        .collect();
    // ScopeLogs.log_records: each a key, a length and the record.
    let logs_len: usize = lens
        .iter()
        .map(|&n| 1 + encoded_len_varint(n as u64) + n)
        .sum();
    let resource = Resource {
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
    }
    .encode_to_vec();
    let scope = InstrumentationScope {
        name: "cts".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
    .encode_to_vec();
    // ScopeLogs { scope = 1, log_records = 2 }: its head, then the records.
    let mut scope_logs = Vec::new();
    message(&mut scope_logs, 1, &scope);
    let scope_logs_len = scope_logs.len() + logs_len;
    // ResourceLogs { resource = 1, scope_logs = 2 }
    let mut resource_logs = Vec::new();
    message(&mut resource_logs, 1, &resource);
    length_delimited(&mut resource_logs, 2, scope_logs_len);
    // ExportLogsServiceRequest { resource_logs = 1 }
    let mut head = Vec::new();
    length_delimited(&mut head, 1, resource_logs.len() + scope_logs_len);
    head.extend_from_slice(&resource_logs);
    head.extend_from_slice(&scope_logs);
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity((head.len() + logs_len) / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    gz.write_all(&head).expect("gzip into memory");
    let mut one = Vec::with_capacity(4096);
    for (r, &len) in records.iter().zip(&lens) {
        one.clear();
        length_delimited(&mut one, 2, len);
        log_record(&mut one, r);
        gz.write_all(&one).expect("gzip into memory");
    }
    gz.finish().expect("gzip into memory")
}

/// Where a record's wire format goes: its bytes, or only their count.
trait Out {
    fn put(&mut self, bytes: &[u8]);
}

impl Out for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Counts the bytes of a record, for the length before it.
struct Len(usize);

impl Out for Len {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// One LogRecord's fields (without its own key and length).
fn log_record(buf: &mut impl Out, r: &Record<'_>) {
    let f = &r.fields;
    let (number, severity) = match Severity::of(&f.trace_rating) {
        Severity::Info => (9, "INFO"),
        Severity::Warn => (13, "WARN"),
        Severity::Error => (17, "ERROR"),
    };
    fixed64(buf, 1, nanos(f.time));
    key(buf, 2, WireType::Varint);
    varint(buf, number);
    string(buf, 3, severity);
    any_string(buf, 5, r.text);
    let code = f.code();
    let attributes = [
        ("cts.trace_id", Some(f.trace_id.as_ref())),
        ("cts.service_type", Some(&f.service_type)),
        ("cts.resource_type", Some(&f.resource_type)),
        ("cts.trace_name", Some(&f.trace_name)),
        ("cts.trace_type", Some(&f.trace_type)),
        ("cts.trace_rating", Some(&f.trace_rating)),
        ("cts.source_ip", Some(&f.source_ip)),
        ("cts.resource_name", f.resource_name.as_deref()),
        ("cts.resource_id", f.resource_id.as_deref()),
        ("cts.user", f.user.name.as_deref()),
        ("cts.user_id", f.user.id.as_deref()),
        ("cts.request_id", f.request_id.as_deref()),
        (
            "cts.tracker_name",
            Some(f.tracker_name.as_ref()).filter(|s| !s.is_empty()),
        ),
        ("cts.code", code.as_deref()),
    ];
    for (name, value) in attributes {
        if let Some(value) = value {
            // LogRecord.attributes: KeyValue { key = 1, value = 2 }
            let any = string_len(value);
            let len = string_len(name) + 1 + encoded_len_varint(any as u64) + any;
            length_delimited(buf, 6, len);
            string(buf, 1, name);
            any_string(buf, 2, value);
        }
    }
    fixed64(buf, 11, nanos(f.record_time));
}

fn varint(buf: &mut impl Out, v: u64) {
    let mut b = [0u8; 10];
    let mut s = &mut b[..];
    encode_varint(v, &mut s);
    let n = 10 - s.len();
    buf.put(&b[..n]);
}

fn key(buf: &mut impl Out, tag: u32, wire_type: WireType) {
    varint(buf, u64::from(tag << 3 | wire_type as u32));
}

fn length_delimited(buf: &mut impl Out, tag: u32, len: usize) {
    key(buf, tag, WireType::LengthDelimited);
    varint(buf, len as u64);
}

fn message(buf: &mut impl Out, tag: u32, body: &[u8]) {
    length_delimited(buf, tag, body.len());
    buf.put(body);
}

fn string(buf: &mut impl Out, tag: u32, s: &str) {
    message(buf, tag, s.as_bytes());
}

/// The encoded length of a one-byte-key string field.
fn string_len(s: &str) -> usize {
    1 + encoded_len_varint(s.len() as u64) + s.len()
}

/// `AnyValue { string_value = 1 }` holding `s`.
fn any_string(buf: &mut impl Out, tag: u32, s: &str) {
    length_delimited(buf, tag, string_len(s));
    string(buf, 1, s);
}

fn fixed64(buf: &mut impl Out, tag: u32, v: u64) {
    key(buf, tag, WireType::SixtyFourBit);
    buf.put(&v.to_le_bytes());
}

fn nanos(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000)
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// An HTTP client for one `otlp` sink.
#[derive(Debug, Clone)]
pub(crate) struct Client {
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
    fn encode(&self, stream: &Stream, records: &[Record<'_>]) -> Vec<u8> {
        encode(stream, records)
    }

    fn concurrent(&self) -> bool {
        true
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
