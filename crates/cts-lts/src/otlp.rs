//! The `otlp` sink: a batch of one tracker's traces as an OTLP
//! `ExportLogsServiceRequest` (the `opentelemetry-proto` types, encoded by
//! prost), compressed as the sink says (gzip unless told otherwise),
//! `POST`ed to `{endpoint}/v1/logs`.
//!
//! One LogRecord per trace: the stored trace JSON as the body, `time` as
//! the timestamp, `record_time` as the observed time, severity from
//! `trace_rating`, the filterable fields as `cts.*` attributes; the
//! resource says whose stream it is (`cts.project_id`, `cts.region`,
//! `cts.log_group`, `cts.log_topic` and their ids).

use std::cell::RefCell;
use std::io::Write;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::encoding::{encode_varint, encoded_len_varint, WireType};
use prost::Message;

use crate::fields::{Record, Severity};
use crate::protocol::{Protocol, Sending, Stream};
use crate::sink::{Compression, Failure, SinkError, SinkSpec};

thread_local! {
    /// A batch's records in the wire format, kept by each encoder thread
    /// from batch to batch: not a new request-sized buffer faulted in for
    /// every batch.
    static RECORDS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A batch larger than this gives its buffer back once encoded (a batch
/// of typical ~1 KB traces takes a few MB).
const KEPT_BYTES: usize = 32 << 20;

/// The protobuf `ExportLogsServiceRequest` of `records`, compressed by
/// `compression`: one
/// resource (the stream), one scope, a LogRecord per trace. The records
/// are written straight in the wire format from the borrowed fields (no
/// owned message per trace), each once into a small buffer and from there
/// behind its key and length into the thread's batch buffer, which goes
/// through the compressor in one piece after the envelope (whose length
/// prefixes need the records' total). The few envelope messages through
/// prost. CPU work: call it off the async workers.
pub(crate) fn encode(stream: &Stream, records: &[Record<'_>], compression: Compression) -> Vec<u8> {
    RECORDS.with_borrow_mut(|logs| {
        logs.clear();
        let mut one = Vec::with_capacity(4096);
        for r in records {
            one.clear();
            log_record(&mut one, r);
            // ScopeLogs.log_records: each a key, a length and the record.
            message(logs, 2, &one);
        }
        let body = compress(&envelope(stream, logs.len()), logs, compression);
        if logs.capacity() > KEPT_BYTES {
            *logs = Vec::new();
        }
        body
    })
}

/// The request's bytes before its log records (`logs_len` bytes).
fn envelope(stream: &Stream, logs_len: usize) -> Vec<u8> {
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
    head
}

/// `head` then `logs`, compressed in one piece: gzip at level 1
/// (zlib-rs's `deflate_quick`), zstd at level 1 (its frame says the
/// content size, so a receiver can size its buffer), or as they are.
fn compress(head: &[u8], logs: &[u8], compression: Compression) -> Vec<u8> {
    let len = head.len() + logs.len();
    // Writing into a Vec cannot fail.
    match compression {
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(len / 4),
                flate2::Compression::fast(),
            );
            gz.write_all(head).expect("gzip into memory");
            gz.write_all(logs).expect("gzip into memory");
            gz.finish().expect("gzip into memory")
        }
        Compression::Zstd => {
            let mut z = zstd::stream::Encoder::new(Vec::with_capacity(len / 4), 1)
                .expect("zstd at level 1");
            z.include_contentsize(true).expect("zstd parameter");
            z.set_pledged_src_size(Some(len as u64))
                .expect("zstd parameter");
            z.write_all(head).expect("zstd into memory");
            z.write_all(logs).expect("zstd into memory");
            z.finish().expect("zstd into memory")
        }
        Compression::None => [head, logs].concat(),
    }
}

/// One LogRecord's fields (without its own key and length).
fn log_record(buf: &mut Vec<u8>, r: &Record<'_>) {
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

fn varint(buf: &mut Vec<u8>, v: u64) {
    encode_varint(v, buf);
}

fn key(buf: &mut Vec<u8>, tag: u32, wire_type: WireType) {
    varint(buf, u64::from(tag << 3 | wire_type as u32));
}

fn length_delimited(buf: &mut Vec<u8>, tag: u32, len: usize) {
    key(buf, tag, WireType::LengthDelimited);
    varint(buf, len as u64);
}

fn message(buf: &mut Vec<u8>, tag: u32, body: &[u8]) {
    length_delimited(buf, tag, body.len());
    buf.extend_from_slice(body);
}

fn string(buf: &mut Vec<u8>, tag: u32, s: &str) {
    message(buf, tag, s.as_bytes());
}

/// The encoded length of a one-byte-key string field.
fn string_len(s: &str) -> usize {
    1 + encoded_len_varint(s.len() as u64) + s.len()
}

/// `AnyValue { string_value = 1 }` holding `s`.
fn any_string(buf: &mut Vec<u8>, tag: u32, s: &str) {
    length_delimited(buf, tag, string_len(s));
    string(buf, 1, s);
}

fn fixed64(buf: &mut Vec<u8>, tag: u32, v: u64) {
    key(buf, tag, WireType::SixtyFourBit);
    buf.extend_from_slice(&v.to_le_bytes());
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
    compression: Compression,
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
            compression: spec.compression.unwrap_or_default(),
        })
    }

    /// Sends one encoded request body; `Ok` once the receiver answered 2xx.
    async fn post(&self, body: Vec<u8>) -> Result<(), SinkError> {
        let mut request = self
            .http
            .post(self.url.clone())
            .header("content-type", "application/x-protobuf");
        if let Some(encoding) = self.compression.content_encoding() {
            request = request.header("content-encoding", encoding);
        }
        let answer = request.body(body).send().await.map_err(|e| SinkError {
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
        encode(stream, records, self.compression)
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
