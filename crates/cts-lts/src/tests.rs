//! The sink rules and the OTLP encoding, decoded back with the same
//! generated types a receiver uses.

use std::io::Read;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::json;

use crate::fields::Record;
use crate::otlp::encode;
use crate::protocol::Stream;
use crate::{Compression, SinkKind, SinkSpec};

fn spec(endpoint: &str) -> SinkSpec {
    SinkSpec {
        name: "collector".into(),
        kind: SinkKind::Otlp,
        endpoint: endpoint.into(),
        ca_file: None,
        headers: Default::default(),
        facility: None,
        compression: None,
    }
}

/// A request body as the receiver reads it, by its `Content-Encoding`.
fn decompress(body: &[u8], compression: Compression) -> Vec<u8> {
    match compression.content_encoding() {
        Some("gzip") => {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut raw)
                .unwrap();
            raw
        }
        Some("zstd") => zstd::stream::decode_all(body).unwrap(),
        Some(other) => panic!("{other}"),
        None => body.to_vec(),
    }
}

/// A stored trace: a resource name with characters to escape, a trace
/// name with a space.
fn doc(id: &str, rating: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "trace_id": id, "time": 1_700_000_000_123i64, "record_time": 1_700_000_000_456i64,
        "project_id": "p1", "trace_type": "ApiCall", "tracker_name": "system",
        "service_type": "ECS", "resource_type": "ecs", "resource_name": "vm \"1\" [a\\b]",
        "trace_name": "create Server", "trace_rating": rating, "source_ip": "10.0.0.1",
        "code": 200, "user": {"id": "u1", "name": "alice"}
    }))
    .unwrap()
}

/// The documents that read as traces, and how many did not.
fn records(docs: &[Vec<u8>]) -> (Vec<Record<'_>>, usize) {
    let records: Vec<_> = docs.iter().filter_map(|d| Record::parse(d)).collect();
    let unreadable = docs.len() - records.len();
    (records, unreadable)
}

fn stream() -> Stream {
    Stream {
        project_id: "p1".into(),
        region: "eu-de".into(),
        log_group: "CTS".into(),
        log_topic: "system-trace".into(),
        group_id: "g".into(),
        stream_id: "s".into(),
    }
}

#[test]
fn sink_rules_name_the_field() {
    assert!(spec("http://127.0.0.1:4318").check().is_ok());
    assert!(spec("https://collector.example:4318/prefix")
        .check()
        .is_ok());
    let e = spec("tcp://127.0.0.1:514").check().unwrap_err();
    assert_eq!((e.field, e.sink.as_str()), ("endpoint", "collector"));
    assert!(spec("not a url").check().is_err());
    let mut s = spec("http://x:1");
    s.ca_file = Some("/ca.pem".into());
    assert_eq!(s.check().unwrap_err().field, "ca_file");
    let mut s = spec("http://x:1");
    s.name = "bad name".into();
    assert_eq!(s.check().unwrap_err().field, "name");
    let mut s = spec("http://x:1");
    s.headers.insert("x-api-key".into(), "line\nbreak".into());
    assert_eq!(s.check().unwrap_err().field, "headers");
}

#[test]
fn a_batch_decodes_to_one_record_per_trace() {
    let stream = stream();
    let docs = vec![
        doc("a", "normal"),
        b"{not json".to_vec(),
        doc("b", "incident"),
    ];
    let (records, unreadable) = records(&docs);
    assert_eq!(unreadable, 1);
    let gz = encode(&stream, &records, Compression::default());
    let req = ExportLogsServiceRequest::decode(&decompress(&gz, Compression::Gzip)[..]).unwrap();
    let rl = &req.resource_logs[0];
    let attr = |kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue], k: &str| {
        kvs.iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.clone()?.value)
    };
    let res = &rl.resource.as_ref().unwrap().attributes;
    assert_eq!(
        attr(res, "cts.log_topic"),
        Some(Any::StringValue("system-trace".into()))
    );
    assert_eq!(
        attr(res, "cts.region"),
        Some(Any::StringValue("eu-de".into()))
    );
    let records = &rl.scope_logs[0].log_records;
    assert_eq!(records.len(), 2);
    let r = &records[1];
    assert_eq!(r.time_unix_nano, 1_700_000_000_123_000_000);
    assert_eq!(r.observed_time_unix_nano, 1_700_000_000_456_000_000);
    assert_eq!((r.severity_number, r.severity_text.as_str()), (17, "ERROR"));
    assert_eq!(records[0].severity_number, 9);
    assert_eq!(
        attr(&r.attributes, "cts.resource_name"),
        Some(Any::StringValue("vm \"1\" [a\\b]".into()))
    );
    assert_eq!(
        attr(&r.attributes, "cts.code"),
        Some(Any::StringValue("200".into()))
    );
    assert_eq!(
        attr(&r.attributes, "cts.user"),
        Some(Any::StringValue("alice".into()))
    );
    let Some(Any::StringValue(body)) = r.body.clone().and_then(|b| b.value) else {
        panic!("a string body")
    };
    assert_eq!(body.as_bytes(), &docs[2][..]);
}

#[test]
fn syslog_sink_rules_name_the_field() {
    let syslog = |endpoint: &str| SinkSpec {
        kind: SinkKind::Syslog,
        ..spec(endpoint)
    };
    assert!(syslog("tcp://127.0.0.1:514").check().is_ok());
    assert!(syslog("tls://siem.example:6514").check().is_ok());
    for bad in ["http://x:1", "tcp://x:1/path", "udp://x:514", "tcp://"] {
        assert_eq!(syslog(bad).check().unwrap_err().field, "endpoint", "{bad}");
    }
    let mut s = syslog("tcp://x:514");
    s.ca_file = Some("/ca.pem".into());
    assert_eq!(s.check().unwrap_err().field, "ca_file");
    let mut s = syslog("tls://x:6514");
    s.headers.insert("x-api-key".into(), "k".into());
    assert_eq!(s.check().unwrap_err().field, "headers");
    let mut s = spec("http://x:1");
    s.facility = Some(crate::Facility::Auth);
    assert_eq!(s.check().unwrap_err().field, "facility");
    let mut s = syslog("tcp://x:514");
    s.compression = Some(Compression::Zstd);
    assert_eq!(s.check().unwrap_err().field, "compression");
}

/// RFC 5424 messages, octet-counted: PRI from the facility and the
/// rating, MSGID the trace name, SD-PARAM values escaped, the JSON as MSG.
#[test]
fn a_syslog_batch_is_octet_counted_rfc5424() {
    let stream = stream();
    let docs = vec![
        doc("a", "normal"),
        b"{not json".to_vec(),
        doc("b", "incident"),
        doc("c", "warning"),
    ];
    let (records, unreadable) = records(&docs);
    assert_eq!(unreadable, 1);
    let body = crate::syslog::encode(crate::Facility::Local0, "host1", &stream, &records);
    let mut messages = Vec::new();
    let mut rest = &body[..];
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ').unwrap();
        let len: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
        messages.push(std::str::from_utf8(&rest[sp + 1..sp + 1 + len]).unwrap());
        rest = &rest[sp + 1 + len..];
    }
    assert_eq!(messages.len(), 3);
    let pid = std::process::id();
    let m = messages[1];
    let head = format!("<131>1 2023-11-14T22:13:20.123Z host1 cts {pid} create_Server [cts@32473 ");
    assert!(m.starts_with(&head), "{m}");
    assert!(messages[0].starts_with("<134>1 "), "local0.info");
    assert!(messages[2].starts_with("<132>1 "), "local0.warning");
    assert!(
        m.contains(r#" resource_name="vm \"1\" [a\\b\]""#),
        "escaped: {m}"
    );
    for param in [
        r#"trace_id="b""#,
        r#"trace_name="create Server""#,
        r#"user="alice""#,
        r#"code="200""#,
        r#"log_topic="system-trace""#,
        r#"log_stream_id="s""#,
    ] {
        assert!(m.contains(param), "{param} in {m}");
    }
    let json = m.split_once("\"] ").unwrap().1;
    assert_eq!(json.as_bytes(), &docs[2][..]);
}

/// A small deterministic generator (no seed file, same cases every run).
pub(crate) struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as usize % n
    }

    /// Text with what JSON escapes and what UTF-8 spans several bytes.
    pub fn text(&mut self) -> String {
        const PARTS: &[&str] = &[
            "vm", "-", "\"q\"", "\\", "/", "\n", "\t", "\u{1}", "\u{7f}", "ö", "✓", "𝄞", " ", "]",
            "a",
        ];
        (0..self.next(12))
            .map(|_| PARTS[self.next(PARTS.len())])
            .collect()
    }
}

/// Stored traces of every shape the sink meets: optional fields missing
/// or null, text with escapes and multi-byte characters, `code` a string,
/// a number or absent, bodies from a few bytes to tens of KB (the
/// records' length prefixes take one to three bytes).
pub(crate) fn generated(n: usize) -> Vec<Vec<u8>> {
    let mut g = Lcg(7);
    (0..n)
        .map(|i| {
            let trace_type = ["ApiCall", "ConsoleAction", "SystemAction"][g.next(3)];
            let rating = ["normal", "warning", "incident"][g.next(3)];
            let blob = "x".repeat([0, 10, 200, 20_000][g.next(4)]);
            let mut t = json!({
                "trace_id": format!("id-{i}-{}", g.text()), "time": 1_700_000_000_000i64 + i as i64,
                "record_time": 1_700_000_000_500i64 + i as i64, "project_id": "p1",
                "trace_type": trace_type,
                "tracker_name": "system", "service_type": g.text(), "resource_type": g.text(),
                "trace_name": g.text(), "trace_rating": rating,
                "source_ip": g.text(), "operation_id": "o", "event_type": "system",
                "domain_id": "d", "enterprise_project_id": "0",
                "request": {"blob": blob, "s": g.text()},
                "user": {"domain": {"id": "d", "name": g.text()}},
            });
            for (key, value) in [
                ("resource_name", json!(g.text())),
                ("resource_id", json!(g.text())),
                ("request_id", json!(g.text())),
                (
                    "code",
                    [json!("200"), json!(404), json!(g.text())][g.next(3)].take(),
                ),
            ] {
                match g.next(3) {
                    0 => t[key] = value,
                    1 => t[key] = serde_json::Value::Null,
                    _ => {}
                }
            }
            for key in ["id", "name"] {
                match g.next(3) {
                    0 => t["user"][key] = json!(g.text()),
                    1 => t["user"][key] = serde_json::Value::Null,
                    _ => {}
                }
            }
            serde_json::to_vec(&t).unwrap()
        })
        .collect()
}

/// The attributes a record must carry, read from a full parse of its
/// trace: every string field that is there and not null (`code` a number
/// as written), `tracker_name` when not empty.
fn expected_attributes(doc: &[u8]) -> Vec<(String, String)> {
    let t: serde_json::Value = serde_json::from_slice(doc).unwrap();
    let fields = [
        ("cts.trace_id", &t["trace_id"]),
        ("cts.service_type", &t["service_type"]),
        ("cts.resource_type", &t["resource_type"]),
        ("cts.trace_name", &t["trace_name"]),
        ("cts.trace_type", &t["trace_type"]),
        ("cts.trace_rating", &t["trace_rating"]),
        ("cts.source_ip", &t["source_ip"]),
        ("cts.resource_name", &t["resource_name"]),
        ("cts.resource_id", &t["resource_id"]),
        ("cts.user", &t["user"]["name"]),
        ("cts.user_id", &t["user"]["id"]),
        ("cts.request_id", &t["request_id"]),
        ("cts.tracker_name", &t["tracker_name"]),
        ("cts.code", &t["code"]),
    ];
    fields
        .into_iter()
        .filter_map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return None,
            };
            (k != "cts.tracker_name" || !v.is_empty()).then(|| (k.to_string(), v))
        })
        .collect()
}

/// Generated traces of every shape: each record's attributes, severity,
/// times and body equal what a full parse of its trace says, decoded from
/// the request with the official types. A smaller batch after a larger
/// one on the same thread (whose batch buffer it reuses) holds only its
/// own records. The same for every compression.
#[test]
fn records_carry_what_a_full_parse_of_each_trace_says() {
    let all = generated(400);
    let compressions = [Compression::Gzip, Compression::Zstd, Compression::None];
    for (docs, compression) in [&all[..], &all[250..]]
        .into_iter()
        .flat_map(|d| compressions.map(|c| (d, c)))
    {
        let (records, unreadable) = records(docs);
        assert_eq!(unreadable, 0);
        let body = encode(&stream(), &records, compression);
        let raw = decompress(&body, compression);
        if compression != Compression::None {
            assert!(body.len() < raw.len() / 2, "{compression:?} compresses");
        }
        let req = ExportLogsServiceRequest::decode(&raw[..]).unwrap();
        let got = &req.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(got.len(), docs.len());
        for (r, doc) in got.iter().zip(docs) {
            check_record(r, doc);
        }
    }
}

/// A decoded record carries what a full parse of its trace says.
fn check_record(r: &opentelemetry_proto::tonic::logs::v1::LogRecord, doc: &[u8]) {
    let t: serde_json::Value = serde_json::from_slice(doc).unwrap();
    let attributes: Vec<(String, String)> = r
        .attributes
        .iter()
        .map(|kv| match kv.value.clone().and_then(|v| v.value) {
            Some(Any::StringValue(s)) => (kv.key.clone(), s),
            other => panic!("{}: {other:?}", kv.key),
        })
        .collect();
    assert_eq!(attributes, expected_attributes(doc));
    let severity = match t["trace_rating"].as_str().unwrap() {
        "normal" => 9,
        "warning" => 13,
        _ => 17,
    };
    assert_eq!(r.severity_number, severity);
    let ms = |k: &str| t[k].as_u64().unwrap() * 1_000_000;
    assert_eq!(r.time_unix_nano, ms("time"));
    assert_eq!(r.observed_time_unix_nano, ms("record_time"));
    let Some(Any::StringValue(body)) = r.body.clone().and_then(|b| b.value) else {
        panic!("a string body")
    };
    assert_eq!(body.as_bytes(), doc);
}
