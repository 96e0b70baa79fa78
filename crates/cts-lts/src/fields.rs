//! The fields of a stored trace that route it and that a log record
//! carries besides the whole trace.

use std::borrow::Cow;

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct User<'a> {
    pub id: Option<Cow<'a, str>>,
    pub name: Option<Cow<'a, str>>,
}

/// A stored trace, borrowed from its JSON (read by [`crate::scan`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fields<'a> {
    pub trace_id: Cow<'a, str>,
    pub time: i64,
    pub record_time: i64,
    pub project_id: Cow<'a, str>,
    pub trace_type: Cow<'a, str>,
    pub tracker_name: Cow<'a, str>,
    pub service_type: Cow<'a, str>,
    pub resource_type: Cow<'a, str>,
    pub resource_name: Option<Cow<'a, str>>,
    pub resource_id: Option<Cow<'a, str>>,
    pub trace_name: Cow<'a, str>,
    pub trace_rating: Cow<'a, str>,
    pub source_ip: Cow<'a, str>,
    pub request_id: Option<Cow<'a, str>>,
    /// As written (a string with its quotes).
    pub code: Option<&'a str>,
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
        let fields = crate::scan::fields(text)?;
        Some(Record { fields, text })
    }
}

impl Fields<'_> {
    /// `code` as text (a string without its quotes, a number as written).
    pub fn code(&self) -> Option<Cow<'_, str>> {
        let raw = self.code?;
        match serde_json::from_str::<Cow<'_, str>>(raw) {
            Ok(s) => Some(s),
            Err(_) => Some(Cow::Borrowed(raw)),
        }
    }
}
