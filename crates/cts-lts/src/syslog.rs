//! The `syslog` sink: one RFC 5424 message per trace, octet-counted
//! (RFC 6587 §3.4.1: `LEN SP MSG`), written over one kept-open TCP
//! connection (`tcp://host:port`) or TLS (`tls://host:port`, RFC 5425).
//!
//! A message: `<PRI>1 TIMESTAMP HOSTNAME cts PROCID MSGID [cts@32473 …] JSON`
//! with PRI from the sink's facility and the trace's `trace_rating`
//! (normal → informational 6, warning → warning 4, incident → error 3),
//! TIMESTAMP the trace's `time`, MSGID its `trace_name`, the main fields
//! as SD-PARAMs and the stored trace JSON as MSG.
//!
//! Syslog has no application acknowledgement: a batch counts as delivered
//! once it is written into the connection. Before each batch the
//! connection is checked (a receiver never sends, so anything readable is
//! its end or an error) and reopened; a write error drops it and the batch
//! is retried. What stays is the window of a receiver that dies after the
//! kernel took a batch and before the receiver read it (docs/lts.md).

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::fields::{Record, Severity};
use crate::protocol::{read_ca, Protocol, Sending, Stream};
use crate::sink::{Facility, Failure, SinkError, SinkSpec};

/// The SD-ID of the trace fields: a private one (`name@PEN`, RFC 5424
/// §7.2.2) under the enterprise number RFC 5612 sets aside for examples
/// and private use.
pub const SD_ID: &str = "cts@32473";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The octet-counted messages of `records`.
pub(crate) fn encode(
    facility: Facility,
    hostname: &str,
    stream: &Stream,
    records: &[Record<'_>],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.text.len() + 600).sum());
    let mut message = String::new();
    for r in records {
        message.clear();
        write_message(&mut message, facility, hostname, stream, r);
        out.extend_from_slice(format!("{} ", message.len()).as_bytes());
        out.extend_from_slice(message.as_bytes());
    }
    out
}

fn write_message(
    m: &mut String,
    facility: Facility,
    hostname: &str,
    stream: &Stream,
    r: &Record<'_>,
) {
    let f = &r.fields;
    let severity = match Severity::of(&f.trace_rating) {
        Severity::Info => 6,
        Severity::Warn => 4,
        Severity::Error => 3,
    };
    let pri = u16::from(facility.number()) * 8 + severity;
    let time = u64::try_from(f.time).map_or_else(
        |_| "-".to_string(),
        |ms| humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string(),
    );
    // Writing into a String cannot fail.
    let _ = write!(
        m,
        "<{pri}>1 {time} {hostname} cts {} {} [{SD_ID}",
        std::process::id(),
        token(&f.trace_name, 32),
    );
    let code = f.code();
    let params = [
        ("trace_id", Some(f.trace_id.as_ref())),
        ("trace_name", Some(&f.trace_name)),
        ("trace_type", Some(&f.trace_type)),
        ("trace_rating", Some(&f.trace_rating)),
        ("service_type", Some(&f.service_type)),
        ("resource_type", Some(&f.resource_type)),
        ("resource_name", f.resource_name.as_deref()),
        ("resource_id", f.resource_id.as_deref()),
        ("user", f.user.name.as_deref()),
        ("user_id", f.user.id.as_deref()),
        ("source_ip", Some(&f.source_ip)),
        ("code", code.as_deref()),
        ("request_id", f.request_id.as_deref()),
        ("tracker_name", Some(&f.tracker_name)),
        ("project_id", Some(&stream.project_id)),
        ("region", Some(&stream.region)),
        ("log_group", Some(&stream.log_group)),
        ("log_topic", Some(&stream.log_topic)),
        ("log_group_id", Some(&stream.group_id)),
        ("log_stream_id", Some(&stream.stream_id)),
    ];
    for (name, value) in params {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        let _ = write!(m, " {name}=\"");
        push_param_value(m, value);
        m.push('"');
    }
    m.push_str("] ");
    m.push_str(r.text);
}

/// An SD-PARAM value with `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
fn push_param_value(m: &mut String, value: &str) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            m.push('\\');
        }
        m.push(c);
    }
}

/// A header field (HOSTNAME, MSGID): printable US-ASCII without spaces,
/// at most `max` characters; `-` (NILVALUE) when nothing is left.
fn token(s: &str, max: usize) -> String {
    let t: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if t.is_empty() {
        "-".into()
    } else {
        t
    }
}

trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// A connection to one `syslog` sink, kept open between batches.
pub(crate) struct Client {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    facility: Facility,
    hostname: String,
    conn: tokio::sync::Mutex<Option<Box<dyn Connection>>>,
}

impl Client {
    /// The client of a checked `spec` (no connection yet).
    pub fn new(spec: &SinkSpec) -> Result<Client, String> {
        let url = reqwest::Url::parse(&spec.endpoint).map_err(|e| e.to_string())?;
        let tls = url.scheme() == "tls";
        let host = url
            .host_str()
            .ok_or("no host")?
            .trim_matches(['[', ']'])
            .to_string();
        let tls = if tls {
            let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            let config = tls_config(spec.ca_file.as_deref())?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let hostname = hostname::get().unwrap_or_default();
        Ok(Client {
            host,
            // RFC 5425 §4.1 and the usual TCP syslog port.
            port: url.port().unwrap_or(if tls.is_some() { 6514 } else { 514 }),
            tls,
            facility: spec.facility.unwrap_or(Facility::DEFAULT),
            hostname: token(&hostname.to_string_lossy(), 255),
            conn: tokio::sync::Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Box<dyn Connection>, SinkError> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| unreachable(format!("connecting to {addr}: timed out")))?
        .map_err(|e| unreachable(format!("connecting to {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        match timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp)).await {
            Ok(Ok(tls)) => Ok(Box::new(tls)),
            Ok(Err(e)) => {
                let in_tls = e.get_ref().is_some_and(|i| i.is::<rustls::Error>());
                Err(SinkError {
                    failure: if in_tls {
                        Failure::TlsError
                    } else {
                        Failure::Unreachable
                    },
                    message: format!("TLS handshake with {addr}: {e}"),
                })
            }
            Err(_) => Err(unreachable(format!("TLS handshake with {addr}: timed out"))),
        }
    }

    /// Writes one batch; `Ok` once all of it is written into the
    /// connection.
    async fn write(&self, body: Vec<u8>) -> Result<(), SinkError> {
        let mut held = self.conn.lock().await;
        if held.as_mut().is_some_and(|c| !still_open(c.as_mut())) {
            *held = None;
        }
        let conn = match held.as_mut() {
            Some(c) => c,
            None => held.insert(self.connect().await?),
        };
        let written = timeout(WRITE_TIMEOUT, async {
            conn.write_all(&body).await?;
            conn.flush().await
        })
        .await;
        let failed = match written {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("writing to {}:{}: {e}", self.host, self.port),
            Err(_) => format!("writing to {}:{}: timed out", self.host, self.port),
        };
        *held = None;
        Err(unreachable(failed))
    }
}

impl Protocol for Client {
    fn encode(&self, stream: &Stream, records: &[Record<'_>]) -> Vec<u8> {
        encode(self.facility, &self.hostname, stream, records)
    }

    fn concurrent(&self) -> bool {
        false
    }

    fn send(&self, body: Vec<u8>) -> Sending<'_> {
        Box::pin(self.write(body))
    }
}

/// Whether a kept connection can take a batch: a receiver never sends, so
/// a readable connection has ended (or failed, or speaks out of turn).
fn still_open(conn: &mut dyn Connection) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut byte = [0u8; 256];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(conn).poll_read(&mut cx, &mut buf), Poll::Pending)
}

fn unreachable(message: String) -> SinkError {
    SinkError {
        failure: Failure::Unreachable,
        message,
    }
}

/// Trusts only the CAs of `ca_file` when given, else the public web PKI
/// roots (as the `otlp` sink does).
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = read_ca(path)?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no certificate", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
