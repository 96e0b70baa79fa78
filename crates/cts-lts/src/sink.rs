//! A log sink as the operator configures it, checked once here, and what a
//! failed delivery means.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The protocols a sink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// OTLP/HTTP logs: `POST {endpoint}/v1/logs`, protobuf, gzip.
    Otlp,
    /// RFC 5424 messages, octet-counted (RFC 6587), over TCP (`tcp://`) or
    /// TLS (`tls://`, RFC 5425).
    Syslog,
}

/// The syslog facility of a `syslog` sink's messages (RFC 5424 §6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    Kern,
    User,
    Mail,
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    Authpriv,
    Ftp,
    Ntp,
    Audit,
    Alert,
    Clock,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// `local0`: a facility of its own, so a receiver routes the traces
    /// without mixing them into the host's `auth`/`authpriv` logs.
    pub const DEFAULT: Facility = Facility::Local0;

    /// The facility number (the PRI is `number * 8 + severity`).
    pub fn number(self) -> u8 {
        self as u8
    }
}

/// How an `otlp` sink compresses its requests (`Content-Encoding`): the
/// choices of the OpenTelemetry Collector's own `otlphttp` exporter, which
/// its receivers decode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip at level 1: what every OTLP receiver accepts.
    #[default]
    Gzip,
    /// zstd at level 1: about 60 % of gzip's compression CPU here, a third
    /// of its decompression in the receiver; the Collector decodes it
    /// since v0.81.
    Zstd,
    /// None: for a receiver on the same host, where bytes cost nothing.
    None,
}

impl Compression {
    /// The `Content-Encoding` of a request body, if any.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
            Compression::None => None,
        }
    }
}

/// One `[[lts.sinks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    pub name: String,
    pub kind: SinkKind,
    /// `http(s)://host:port` (a path prefix is kept) for `otlp`;
    /// `tcp://host:port` or `tls://host:port` for `syslog`.
    pub endpoint: String,
    /// PEM file of the CA(s) that sign the receiver's certificate; with it,
    /// no other CA is trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Sent with every request (e.g. an API key); `otlp` only.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The facility of the messages (`syslog` only; [`Facility::DEFAULT`]
    /// when unset).
    #[serde(default)]
    pub facility: Option<Facility>,
    /// How requests are compressed (`otlp` only; gzip when unset).
    #[serde(default)]
    pub compression: Option<Compression>,
}

/// Why a sink setting is refused; names the field and the rule.
#[derive(Debug, thiserror::Error)]
#[error("lts.sinks[{sink}].{field}: {rule}")]
pub struct SpecError {
    pub sink: String,
    pub field: &'static str,
    pub rule: String,
}

impl SinkSpec {
    /// Checks every rule of the sink (the only place they are).
    pub fn check(&self) -> Result<(), SpecError> {
        let fail = |field, rule: &str| SpecError {
            sink: self.name.clone(),
            field,
            rule: rule.into(),
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(fail("name", "1 to 64 letters, digits, '-' or '_'"));
        }
        let url = reqwest::Url::parse(&self.endpoint)
            .map_err(|e| fail("endpoint", &format!("not a URL: {e}")))?;
        match self.kind {
            SinkKind::Otlp => {
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(fail("endpoint", "must be http(s)://host:port for otlp"));
                }
                if url.scheme() == "http" && self.ca_file.is_some() {
                    return Err(fail("ca_file", "needs an https:// endpoint"));
                }
                if self.facility.is_some() {
                    return Err(fail("facility", "is for syslog sinks"));
                }
            }
            SinkKind::Syslog => {
                let bare = url.host_str().is_some_and(|h| !h.is_empty())
                    && matches!(url.path(), "" | "/")
                    && url.query().is_none()
                    && url.username().is_empty();
                if !matches!(url.scheme(), "tcp" | "tls") || !bare {
                    return Err(fail(
                        "endpoint",
                        "must be tcp://host:port or tls://host:port for syslog",
                    ));
                }
                if url.scheme() == "tcp" && self.ca_file.is_some() {
                    return Err(fail("ca_file", "needs a tls:// endpoint"));
                }
                if !self.headers.is_empty() {
                    return Err(fail("headers", "are for otlp sinks"));
                }
                if self.compression.is_some() {
                    return Err(fail("compression", "is for otlp sinks"));
                }
            }
        }
        for (k, v) in &self.headers {
            let valid = reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_ok()
                && reqwest::header::HeaderValue::from_str(v).is_ok();
            if !valid {
                return Err(fail(
                    "headers",
                    &format!("{k:?} is not a valid HTTP header"),
                ));
            }
        }
        Ok(())
    }
}

/// Why a tracker's traces are not delivered: the `detail` of its `lts`
/// status `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Failure {
    /// No connection (refused, timed out, DNS) or the receiver failed (5xx,
    /// 429).
    Unreachable,
    /// The receiver refused the data (4xx).
    Rejected,
    /// The TLS handshake failed (e.g. a certificate the CA does not sign).
    TlsError,
    /// The project's trackers have no sink (no `lts.default_sink`).
    NoSink,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::Rejected => "rejected",
            Failure::TlsError => "tlsError",
            Failure::NoSink => "noSink",
        }
    }
}

/// A failed delivery.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", failure.as_str())]
pub struct SinkError {
    pub failure: Failure,
    pub message: String,
}
