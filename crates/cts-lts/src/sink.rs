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
}

/// One `[[lts.sinks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    pub name: String,
    pub kind: SinkKind,
    /// `http(s)://host:port` (a path prefix is kept).
    pub endpoint: String,
    /// PEM file of the CA(s) that sign the receiver's certificate; with it,
    /// no other CA is trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Sent with every request (e.g. an API key).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
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
        match self.kind {
            SinkKind::Otlp => {
                let url = reqwest::Url::parse(&self.endpoint)
                    .map_err(|e| fail("endpoint", &format!("not a URL: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(fail("endpoint", "must be http(s)://host:port for otlp"));
                }
                if url.scheme() == "http" && self.ca_file.is_some() {
                    return Err(fail("ca_file", "needs an https:// endpoint"));
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
