//! The fields of a stored trace that route it and that a log record
//! carries besides the whole trace.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
pub(crate) struct User<'a> {
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
}

/// A stored trace, borrowed from its JSON.
#[derive(Deserialize)]
pub(crate) struct Fields<'a> {
    #[serde(borrow)]
    pub trace_id: Cow<'a, str>,
    pub time: i64,
    pub record_time: i64,
    #[serde(borrow)]
    pub project_id: Cow<'a, str>,
    #[serde(borrow)]
    pub trace_type: Cow<'a, str>,
    #[serde(borrow, default)]
    pub tracker_name: Cow<'a, str>,
    #[serde(borrow)]
    pub service_type: Cow<'a, str>,
    #[serde(borrow)]
    pub resource_type: Cow<'a, str>,
    #[serde(borrow, default)]
    pub resource_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub resource_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub trace_name: Cow<'a, str>,
    #[serde(borrow)]
    pub trace_rating: Cow<'a, str>,
    #[serde(borrow, default)]
    pub source_ip: Cow<'a, str>,
    #[serde(borrow, default)]
    pub request_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub code: Option<&'a RawValue>,
    #[serde(borrow)]
    pub user: User<'a>,
}

/// OpenTelemetry severity of a `trace_rating`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    Info,
    Warn,
    Error,
}

impl Severity {
    pub fn of(trace_rating: &str) -> Severity {
        match trace_rating {
            "warning" => Severity::Warn,
            "incident" => Severity::Error,
            _ => Severity::Info,
        }
    }
}

/// A stored trace read for delivery: the fields it is routed and labelled
/// by, and its whole JSON, both borrowed from the journal entry (parsed
/// once, whatever the sink kind).
pub(crate) struct Record<'a> {
    pub fields: Fields<'a>,
    pub text: &'a str,
}

impl<'a> Record<'a> {
    /// None when `doc` does not read as a stored trace.
    pub fn parse(doc: &'a [u8]) -> Option<Record<'a>> {
        let text = std::str::from_utf8(doc).ok()?;
        let fields = serde_json::from_str(text).ok()?;
        Some(Record { fields, text })
    }
}

impl Fields<'_> {
    /// `code` as text (a string without its quotes, a number as written).
    pub fn code(&self) -> Option<Cow<'_, str>> {
        let raw = self.code?.get();
        match serde_json::from_str::<Cow<'_, str>>(raw) {
            Ok(s) => Some(s),
            Err(_) => Some(Cow::Borrowed(raw)),
        }
    }
}
