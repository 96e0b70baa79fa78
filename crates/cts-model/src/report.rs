//! Reporting traces: parsing a `POST /v3/{project_id}/traces` body, checking
//! every value rule and filling the fields the server owns.
//!
//! A batch is all-or-nothing, so validation collects every problem of every
//! trace instead of stopping at the first.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::text::{NAME_MAX, USER_AGENT_MAX};
use crate::trace::{
    rating_for_code, BaseUser, Text, Trace, TraceKind, UserInfo, RATINGS, SYSTEM_ACTION,
    SYSTEM_TRACKER,
};

/// One broken rule: which trace of the batch, which field, which rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Index of the trace in the `traces` array (`None` for the body itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub rule: String,
}

impl FieldError {
    fn new(index: Option<usize>, field: impl Into<String>, rule: impl Into<String>) -> Self {
        FieldError {
            index,
            field: field.into(),
            rule: rule.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "traces[{i}].{}: {}", self.field, self.rule),
            None => write!(f, "{}: {}", self.field, self.rule),
        }
    }
}

/// Why a batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the request body is not a JSON object of the form {{\"traces\": [...]}}: {0}")]
    Malformed(String),
    #[error("traces: a request carries at most {max} traces, this one has {got}")]
    TooMany { max: usize, got: usize },
    #[error("traces: the request carries no trace")]
    Empty,
    #[error("{} invalid field(s): {}", .0.len(), join(.0))]
    Invalid(Vec<FieldError>),
}

fn join(errors: &[FieldError]) -> String {
    let shown: Vec<String> = errors.iter().take(20).map(|e| e.to_string()).collect();
    let mut s = shown.join("; ");
    if errors.len() > 20 {
        s.push_str(&format!("; and {} more", errors.len() - 20));
    }
    s
}

/// What the server knows when it checks a batch.
#[derive(Debug, Clone)]
pub struct ReportContext<'a> {
    /// The project of the request path.
    pub project_id: &'a str,
    /// The server clock, ms since the epoch; becomes `record_time`.
    pub now_ms: i64,
    /// Traces older than this (the retention window) are refused.
    pub oldest_time_ms: i64,
    /// Traces newer than this (clock skew allowance) are refused.
    pub newest_time_ms: i64,
    pub max_traces: usize,
}

/// A reported trace as it arrives: everything optional, so that the rules
/// below (not serde) say what is missing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(bound(deserialize = "'de: 'a"))]
struct TraceInput<'a> {
    trace_id: Option<Text<'a>>,
    time: Option<i64>,
    record_time: Option<i64>,
    user: Option<UserInfo<Text<'a>>>,
    request: Option<Box<RawValue>>,
    response: Option<Box<RawValue>>,
    code: Option<Box<RawValue>>,
    service_type: Option<Text<'a>>,
    event_type: Option<Text<'a>>,
    project_id: Option<Text<'a>>,
    resource_type: Option<Text<'a>>,
    resource_account_id: Option<Text<'a>>,
    read_only: Option<bool>,
    tracker_name: Option<Text<'a>>,
    operation_id: Option<Text<'a>>,
    resource_name: Option<Text<'a>>,
    resource_id: Option<Text<'a>>,
    source_ip: Option<Text<'a>>,
    domain_id: Option<Text<'a>>,
    trace_name: Option<Text<'a>>,
    trace_rating: Option<Text<'a>>,
    trace_type: Option<Text<'a>>,
    api_version: Option<Text<'a>>,
    message: Option<Box<RawValue>>,
    request_id: Option<Text<'a>>,
    location_info: Option<Text<'a>>,
    endpoint: Option<Text<'a>>,
    resource_url: Option<Text<'a>>,
    enterprise_project_id: Option<Text<'a>>,
    user_agent: Option<Text<'a>>,
    content_length: Option<i64>,
    total_time: Option<i64>,
}

#[derive(Deserialize)]
struct ReportBody<'a> {
    #[serde(borrow)]
    traces: Vec<&'a RawValue>,
}

/// The JSON kind each field must have; used to explain a trace that serde
/// refused, listing every wrong field at once.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Object,
    StrOrInt,
    Any,
}

const FIELD_KINDS: &[(&str, Kind)] = &[
    ("trace_id", Kind::Str),
    ("time", Kind::Int),
    ("record_time", Kind::Int),
    ("user", Kind::Object),
    ("request", Kind::Any),
    ("response", Kind::Any),
    ("code", Kind::StrOrInt),
    ("service_type", Kind::Str),
    ("event_type", Kind::Str),
    ("project_id", Kind::Str),
    ("resource_type", Kind::Str),
    ("resource_account_id", Kind::Str),
    ("read_only", Kind::Bool),
    ("tracker_name", Kind::Str),
    ("operation_id", Kind::Str),
    ("resource_name", Kind::Str),
    ("resource_id", Kind::Str),
    ("source_ip", Kind::Str),
    ("domain_id", Kind::Str),
    ("trace_name", Kind::Str),
    ("trace_rating", Kind::Str),
    ("trace_type", Kind::Str),
    ("api_version", Kind::Str),
    ("message", Kind::Any),
    ("request_id", Kind::Str),
    ("location_info", Kind::Str),
    ("endpoint", Kind::Str),
    ("resource_url", Kind::Str),
    ("enterprise_project_id", Kind::Str),
    ("user_agent", Kind::Str),
    ("content_length", Kind::Int),
    ("total_time", Kind::Int),
];

const USER_KINDS: &[(&str, Kind)] = &[
    ("id", Kind::Str),
    ("name", Kind::Str),
    ("domain", Kind::Object),
    ("user_name", Kind::Str),
    ("account_id", Kind::Str),
    ("access_key_id", Kind::Str),
    ("principal_urn", Kind::Str),
    ("principal_id", Kind::Str),
    ("principal_is_root_user", Kind::Str),
    ("type", Kind::Str),
    ("invoked_by", Kind::Any),
    ("session_context", Kind::Object),
    ("OriginUser", Kind::Str),
];

fn kind_ok(kind: Kind, v: &Value) -> bool {
    match kind {
        Kind::Str => v.is_string() || v.is_null(),
        Kind::Int => v.is_i64() || v.is_null(),
        Kind::Bool => v.is_boolean() || v.is_null(),
        Kind::Object => v.is_object() || v.is_null(),
        Kind::StrOrInt => v.is_string() || v.is_i64() || v.is_null(),
        Kind::Any => true,
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "must be a string",
        Kind::Int => "must be an integer",
        Kind::Bool => "must be a boolean",
        Kind::Object => "must be an object",
        Kind::StrOrInt => "must be a string or an integer",
        Kind::Any => "",
    }
}

fn check_kinds(
    index: usize,
    prefix: &str,
    obj: &serde_json::Map<String, Value>,
    table: &[(&str, Kind)],
    out: &mut Vec<FieldError>,
) {
    for (key, value) in obj {
        let field = format!("{prefix}{key}");
        match table.iter().find(|(name, _)| name == key) {
            None => out.push(FieldError::new(
                Some(index),
                field,
                "is not a field of the trace structure",
            )),
            Some((_, kind)) if !kind_ok(*kind, value) => {
                out.push(FieldError::new(Some(index), field, kind_name(*kind)))
            }
            Some(_) => {}
        }
    }
}

/// Explains why serde refused a trace, field by field.
fn explain_type_errors(index: usize, raw: &RawValue, serde_msg: String) -> Vec<FieldError> {
    let mut out = Vec::new();
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Object(obj)) => {
            check_kinds(index, "", &obj, FIELD_KINDS, &mut out);
            if let Some(Value::Object(user)) = obj.get("user") {
                check_kinds(index, "user.", user, USER_KINDS, &mut out);
                if let Some(Value::Object(domain)) = user.get("domain") {
                    let t = [("id", Kind::Str), ("name", Kind::Str)];
                    check_kinds(index, "user.domain.", domain, &t, &mut out);
                }
                if let Some(v) = user.get("invoked_by") {
                    let ok = v.is_null()
                        || v.as_array()
                            .is_some_and(|a| a.iter().all(|x| x.is_string()));
                    if !ok {
                        out.push(FieldError::new(
                            Some(index),
                            "user.invoked_by",
                            "must be an array of strings",
                        ));
                    }
                }
                if let Some(Value::Object(sc)) = user.get("session_context") {
                    let t = [("attributes", Kind::Object)];
                    check_kinds(index, "user.session_context.", sc, &t, &mut out);
                    if let Some(Value::Object(attrs)) = sc.get("attributes") {
                        let t = [("created_at", Kind::Str), ("mfa_authenticated", Kind::Str)];
                        check_kinds(
                            index,
                            "user.session_context.attributes.",
                            attrs,
                            &t,
                            &mut out,
                        );
                    }
                }
            }
        }
        Ok(_) => out.push(FieldError::new(
            Some(index),
            "",
            "a trace must be a JSON object",
        )),
        Err(_) => surrogate_errors(index, "", raw.get(), &mut out),
    }
    if out.is_empty() {
        out.push(FieldError::new(Some(index), "", serde_msg));
    }
    out
}

const LONE_SURROGATE: &str =
    "must not contain a lone surrogate escape (\\uD800-\\uDFFF not forming a pair): \
     no client could read the text back";

/// Whether JSON text `raw` holds a `\\u` escape of a surrogate that is not
/// half of a high-low pair. serde_json keeps such escapes in raw values,
/// and every client decoding the stored text would then fail.
pub fn has_lone_surrogate(raw: &str) -> bool {
    let b = raw.as_bytes();
    let hex = |at: usize| -> Option<u32> {
        let digits = std::str::from_utf8(b.get(at..at + 4)?).ok()?;
        u32::from_str_radix(digits, 16).ok()
    };
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == b'\\') {
        i += off;
        if b.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        match hex(i + 2) {
            Some(0xD800..=0xDBFF) => {
                let low = (b.get(i + 6..i + 8) == Some(b"\\u".as_slice()))
                    .then(|| hex(i + 8))
                    .flatten();
                if !matches!(low, Some(0xDC00..=0xDFFF)) {
                    return true;
                }
                i += 12;
            }
            Some(0xDC00..=0xDFFF) => return true,
            _ => i += 6,
        }
    }
    false
}

/// Names the members of JSON object `raw` (at any depth) whose strings hold
/// a lone surrogate escape, which serde_json refuses without naming them.
fn surrogate_errors(index: usize, prefix: &str, raw: &str, out: &mut Vec<FieldError>) {
    let Ok(members) =
        serde_json::from_str::<std::collections::BTreeMap<String, Box<RawValue>>>(raw)
    else {
        return;
    };
    for (key, value) in members {
        let field = format!("{prefix}{key}");
        if value.get().starts_with('{') {
            surrogate_errors(index, &format!("{field}."), value.get(), out);
        } else if has_lone_surrogate(value.get()) {
            out.push(FieldError::new(Some(index), field, LONE_SURROGATE));
        }
    }
}

/// Traces checked and completed one by one as the parser reaches them, so
/// that no array of parsed inputs is built, grown and moved.
struct Completed<'a> {
    traces: Vec<Trace<Text<'a>>>,
    errors: Vec<FieldError>,
    count: usize,
}

/// A body in the shape a correct reporter sends (`{"traces": [...]}`, other
/// members ignored), parsed and checked in one pass.
struct TypedBody<'c, 'p> {
    ctx: &'c ReportContext<'p>,
    capacity: usize,
}

/// The `traces` array of a [`TypedBody`].
struct TypedTraces<'c, 'p>(TypedBody<'c, 'p>);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum BodyKey {
    Traces,
    #[serde(other)]
    Other,
}

impl<'de, 'p: 'de> serde::de::Visitor<'de> for TypedBody<'_, 'p> {
    type Value = Completed<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object with a traces array")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<Completed<'de>, A::Error> {
        let mut traces = None;
        while let Some(key) = map.next_key::<BodyKey>()? {
            match key {
                BodyKey::Traces if traces.is_some() => {
                    return Err(serde::de::Error::duplicate_field("traces"))
                }
                BodyKey::Traces => {
                    traces = Some(map.next_value_seed(TypedTraces(TypedBody { ..self }))?)
                }
                BodyKey::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        traces.ok_or_else(|| serde::de::Error::missing_field("traces"))
    }
}

impl<'de, 'p: 'de> serde::de::DeserializeSeed<'de> for TypedTraces<'_, 'p> {
    type Value = Completed<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Completed<'de>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, 'p: 'de> serde::de::Visitor<'de> for TypedTraces<'_, 'p> {
    type Value = Completed<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of traces")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<Completed<'de>, A::Error> {
        let ctx = self.0.ctx;
        let mut out = Completed {
            traces: Vec::with_capacity(self.0.capacity),
            errors: Vec::new(),
            count: 0,
        };
        while let Some(input) = seq.next_element::<TraceInput>()? {
            let index = out.count;
            out.count += 1;
            // An oversized batch is refused as a whole; its traces are only
            // parsed, to tell a well-formed body from a broken one.
            if out.count > ctx.max_traces {
                continue;
            }
            match complete(index, input, ctx) {
                Ok(t) => out.traces.push(t),
                Err(mut e) => out.errors.append(&mut e),
            }
        }
        Ok(out)
    }
}

fn check_count(n: usize, ctx: &ReportContext<'_>) -> Result<(), ReportError> {
    if n == 0 {
        return Err(ReportError::Empty);
    }
    if n > ctx.max_traces {
        return Err(ReportError::TooMany {
            max: ctx.max_traces,
            got: n,
        });
    }
    Ok(())
}

fn collect<'a>(
    results: impl Iterator<Item = Result<Trace<Text<'a>>, Vec<FieldError>>>,
) -> Result<Vec<Trace<Text<'a>>>, ReportError> {
    let mut errors = Vec::new();
    let mut traces = Vec::new();
    for r in results {
        match r {
            Ok(t) => traces.push(t),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(traces)
    } else {
        Err(ReportError::Invalid(errors))
    }
}

/// Parses and checks a whole report body. On success every trace is complete:
/// ids, record time, rating, tracker and the defaults of mandatory fields are
/// filled.
/// The traces borrow their text from `body`.
pub fn parse_report<'a>(
    body: &'a [u8],
    ctx: &ReportContext<'a>,
) -> Result<Vec<Trace<Text<'a>>>, ReportError> {
    // Fast path: one pass into typed traces. Only a body that fails it is
    // parsed again, trace by trace, to name every wrongly typed field.
    let typed = TypedBody {
        ctx,
        // About one trace per 600 bytes, never more than a batch may carry.
        capacity: (body.len() / 600).clamp(1, ctx.max_traces.max(1)),
    };
    // One UTF-8 check of the whole body is cheaper than serde_json's check
    // of every string in it.
    let body = std::str::from_utf8(body)
        .map_err(|e| ReportError::Malformed(format!("the body is not UTF-8: {e}")))?;
    let mut de = serde_json::Deserializer::from_str(body);
    if let Ok(done) = serde::Deserializer::deserialize_map(&mut de, typed) {
        if de.end().is_ok() {
            check_count(done.count, ctx)?;
            return if done.errors.is_empty() {
                Ok(done.traces)
            } else {
                Err(ReportError::Invalid(done.errors))
            };
        }
    }
    let parsed: ReportBody<'_> =
        serde_json::from_str(body).map_err(|e| ReportError::Malformed(e.to_string()))?;
    check_count(parsed.traces.len(), ctx)?;
    collect(parsed.traces.iter().enumerate().map(|(index, raw)| {
        serde_json::from_str::<TraceInput>(raw.get())
            .map_err(|e| explain_type_errors(index, raw, e.to_string()))
            .and_then(|input| complete(index, input, ctx))
    }))
}

struct Checker {
    index: usize,
    errors: Vec<FieldError>,
}

impl Checker {
    fn err(&mut self, field: &str, rule: impl Into<String>) {
        self.errors
            .push(FieldError::new(Some(self.index), field, rule.into()));
    }

    fn required<'a>(&mut self, field: &str, value: Option<Text<'a>>) -> Text<'a> {
        match value {
            Some(v) if !v.is_empty() => v,
            _ => {
                self.err(field, "is mandatory");
                Text::default()
            }
        }
    }

    /// Length limit and no control characters, for free-text identifiers.
    fn text<S: AsRef<str>>(&mut self, field: &str, value: &Option<S>, max: usize) {
        if let Some(v) = value {
            let v = v.as_ref();
            // Byte checks first: they decide almost every value without
            // decoding characters (bytes >= characters; C1 controls start
            // with 0xC2).
            // One branch-free pass over the bytes (it vectorises): C0
            // controls and DEL, and 0xC2, the lead byte of every C1 control.
            let (c0, c2) = v.bytes().fold((false, false), |(c0, c2), b| {
                (c0 | (b < 0x20) | (b == 0x7f), c2 | (b == 0xc2))
            });
            if v.len() > max && v.chars().count() > max {
                self.err(field, format!("must be at most {max} characters"));
            } else if c0 || (c2 && v.chars().any(char::is_control)) {
                self.err(field, "must not contain control characters");
            }
        }
    }
}

/// trace_name: 1–64 letters, digits, `-`, `_`, `.`, starting with a letter.
pub fn is_valid_trace_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// service_type: an upper-case acronym (letters, then letters or digits), 1–64.
pub fn is_valid_service_type(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Tracker names: 1–64 letters, digits, `-`, `_`, starting with a letter or
/// a digit (data tracker names may start with a digit; they are at most 32
/// characters, which `cts-tracker` checks where trackers are created).
pub fn is_valid_tracker_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// Canonical lower-case hyphenated UUID, or `None` when `s` is not a UUID.
pub fn canonical_uuid(s: &str) -> Option<String> {
    uuid::Uuid::try_parse(s)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

fn code_as_status(code: &RawValue) -> Option<u16> {
    let text = code.get().trim();
    let digits = text.trim_matches('"');
    digits.parse::<u16>().ok()
}

fn complete<'a>(
    index: usize,
    t: TraceInput<'a>,
    ctx: &ReportContext<'a>,
) -> Result<Trace<Text<'a>>, Vec<FieldError>> {
    let mut c = Checker {
        index,
        errors: Vec::new(),
    };

    let trace_id_supplied = t.trace_id.is_some();
    let trace_id = match t.trace_id {
        None => Text::from(uuid::Uuid::new_v4().hyphenated().to_string()),
        Some(id) => match canonical_uuid(&id) {
            Some(canonical) if canonical == *id => id,
            Some(canonical) => Text::from(canonical),
            None => {
                c.err("trace_id", "must be a UUID when the reporter supplies it");
                id
            }
        },
    };

    let time = match t.time {
        None => {
            c.err("time", "is mandatory (ms since the epoch)");
            0
        }
        Some(v) if v < ctx.oldest_time_ms => {
            c.err(
                "time",
                format!(
                    "must be within the retention window (not before {})",
                    ctx.oldest_time_ms
                ),
            );
            v
        }
        Some(v) if v > ctx.newest_time_ms => {
            c.err(
                "time",
                format!("must not be in the future (after {})", ctx.newest_time_ms),
            );
            v
        }
        Some(v) => v,
    };
    // record_time belongs to the server; a reporter's value is replaced.
    let _ = t.record_time;

    let service_type = c.required("service_type", t.service_type);
    if !service_type.is_empty() && !is_valid_service_type(&service_type) {
        c.err(
            "service_type",
            "must be an upper-case service acronym of at most 64 letters and digits, starting with a letter",
        );
    }
    let resource_type = c.required("resource_type", t.resource_type);
    c.text("resource_type", &Some(&*resource_type), 128);

    let trace_name = c.required("trace_name", t.trace_name);
    if !trace_name.is_empty() && !is_valid_trace_name(&trace_name) {
        c.err(
            "trace_name",
            "must be 1 to 64 letters, digits, hyphens, underscores or periods, starting with a letter",
        );
    }

    let trace_type = c.required("trace_type", t.trace_type);
    let kind = TraceKind::of_trace_type(&trace_type);
    if !trace_type.is_empty() && kind.is_none() {
        c.err(
            "trace_type",
            "must be ApiCall, ConsoleAction or SystemAction (management traces) or ObsSDK or ObsAPI (data traces)",
        );
    }

    let user = match t.user {
        // Operations the system performs by itself have no user (user guide,
        // FAQs); every other trace names who did it.
        None if &*trace_type == SYSTEM_ACTION => UserInfo::default(),
        None => {
            c.err("user", "is mandatory (except for SystemAction traces)");
            UserInfo::default()
        }
        Some(u) => {
            check_user(&mut c, &u);
            u
        }
    };

    for (field, value) in [
        ("request", &t.request),
        ("response", &t.response),
        ("message", &t.message),
        ("code", &t.code),
    ] {
        if value.as_ref().is_some_and(|v| has_lone_surrogate(v.get())) {
            c.err(field, LONE_SURROGATE);
        }
    }

    let status = t.code.as_deref().and_then(code_as_status);
    if let Some(code) = &t.code {
        let text = code.get();
        if text.len() > 66 {
            c.err("code", "must be at most 64 characters");
        }
    }
    let trace_rating = match t.trace_rating {
        Some(r) => {
            if !RATINGS.contains(&&*r) {
                c.err("trace_rating", "must be normal, warning or incident");
            }
            r
        }
        None => match status.and_then(rating_for_code) {
            Some(r) => Text::from(r),
            None => {
                c.err(
                    "trace_rating",
                    "is mandatory when code is not an HTTP status code (100-599)",
                );
                Text::default()
            }
        },
    };

    let project_id = match t.project_id {
        Some(p) if p != ctx.project_id => {
            c.err(
                "project_id",
                "must match the project_id of the request path",
            );
            p
        }
        _ => Text::from(ctx.project_id),
    };

    let tracker_name = match (kind, t.tracker_name) {
        (Some(TraceKind::Management), Some(name)) if name != SYSTEM_TRACKER => {
            c.err("tracker_name", "must be system for management traces");
            name
        }
        (Some(TraceKind::Data), None) => {
            c.err(
                "tracker_name",
                "is mandatory for data traces (the data tracker)",
            );
            Text::default()
        }
        (Some(TraceKind::Data), Some(name)) => {
            if !is_valid_tracker_name(&name) || name == SYSTEM_TRACKER {
                c.err(
                    "tracker_name",
                    "must be 1 to 64 letters, digits, hyphens or underscores, starting with a letter, and not system",
                );
            }
            name
        }
        (_, name) => name.unwrap_or(Text::from(SYSTEM_TRACKER)),
    };

    let source_ip = t.source_ip.unwrap_or_default();
    if !source_ip.is_empty() && source_ip.parse::<IpAddr>().is_err() {
        c.err(
            "source_ip",
            "must be an IPv4 or IPv6 address, or empty for system operations",
        );
    }

    let domain_id = match t.domain_id {
        Some(d) => d,
        None => user
            .domain
            .as_ref()
            .and_then(|d| d.id.clone())
            .unwrap_or_default(),
    };
    for (field, value, max) in [
        ("event_type", &t.event_type, 64),
        ("operation_id", &t.operation_id, 256),
        ("domain_id", &Some(domain_id.clone()), 128),
        ("enterprise_project_id", &t.enterprise_project_id, 128),
        ("resource_account_id", &t.resource_account_id, 128),
        ("resource_name", &t.resource_name, NAME_MAX),
        ("resource_id", &t.resource_id, NAME_MAX),
        ("api_version", &t.api_version, 64),
        ("request_id", &t.request_id, 256),
        ("location_info", &t.location_info, 2048),
        ("endpoint", &t.endpoint, 1024),
        ("resource_url", &t.resource_url, 2048),
        ("user_agent", &t.user_agent, USER_AGENT_MAX),
    ] {
        c.text(field, value, max);
    }
    for (field, value) in [
        ("content_length", t.content_length),
        ("total_time", t.total_time),
    ] {
        if value.is_some_and(|v| v < 0) {
            c.err(field, "must not be negative");
        }
    }

    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    let kind = kind.unwrap_or(TraceKind::Management);
    Ok(Trace {
        trace_id,
        trace_id_supplied,
        time,
        record_time: ctx.now_ms,
        user,
        request: t.request.and_then(as_text),
        response: t.response.and_then(as_text),
        code: t.code.and_then(as_text),
        event_type: t.event_type.unwrap_or(Text::from(kind.as_query_value())),
        operation_id: t.operation_id.unwrap_or_else(|| trace_name.clone()),
        service_type,
        project_id,
        resource_type,
        resource_account_id: t.resource_account_id,
        read_only: t.read_only,
        tracker_name,
        resource_name: t.resource_name,
        resource_id: t.resource_id,
        source_ip,
        domain_id,
        trace_name,
        trace_rating,
        trace_type,
        api_version: t.api_version,
        message: t.message.and_then(as_text),
        request_id: t.request_id,
        location_info: t.location_info,
        endpoint: t.endpoint,
        resource_url: t.resource_url,
        enterprise_project_id: t.enterprise_project_id.unwrap_or(Text::from("0")),
        user_agent: t.user_agent,
        content_length: t.content_length,
        total_time: t.total_time,
    })
}

/// `request`, `response`, `message` and `code` are strings in the trace
/// structure (and in the official SDK's model). A reporter may send JSON
/// objects or a numeric code for convenience; they are stored as their JSON
/// text, so every client reads a string. `null` is the same as absent.
fn as_text(raw: Box<RawValue>) -> Option<Box<RawValue>> {
    let text = raw.get().trim();
    if text == "null" {
        return None;
    }
    if text.starts_with('"') {
        return Some(raw);
    }
    let mut quoted = Vec::with_capacity(text.len() + text.len() / 4 + 2);
    crate::json::write_str(&mut quoted, text);
    let quoted = String::from_utf8(quoted).expect("escaping keeps UTF-8");
    Some(RawValue::from_string(quoted).expect("a JSON string is a JSON value"))
}

fn check_user(c: &mut Checker, u: &UserInfo<Text<'_>>) {
    for (field, value) in [("user.id", &u.id), ("user.name", &u.name)] {
        if value.as_deref().is_none_or(str::is_empty) {
            c.err(field, "is mandatory");
        }
    }
    match &u.domain {
        None => c.err("user.domain", "is mandatory (id and name of the account)"),
        Some(BaseUser { id, name }) => {
            for (field, value) in [("user.domain.id", id), ("user.domain.name", name)] {
                if value.as_deref().is_none_or(str::is_empty) {
                    c.err(field, "is mandatory");
                }
                c.text(field, value, NAME_MAX);
            }
        }
    }
    for (field, value) in [
        ("user.id", &u.id),
        ("user.name", &u.name),
        ("user.user_name", &u.user_name),
        ("user.account_id", &u.account_id),
        ("user.access_key_id", &u.access_key_id),
        ("user.principal_urn", &u.principal_urn),
        ("user.principal_id", &u.principal_id),
        ("user.type", &u.type_),
        ("user.OriginUser", &u.origin_user),
    ] {
        c.text(field, value, NAME_MAX);
    }
    if let Some(v) = &u.principal_is_root_user {
        if v != "true" && v != "false" {
            c.err(
                "user.principal_is_root_user",
                "must be \"true\" or \"false\"",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ReportContext<'static> {
        ReportContext {
            project_id: "p1",
            now_ms: 1_700_000_000_000,
            oldest_time_ms: 1_690_000_000_000,
            newest_time_ms: 1_700_000_600_000,
            max_traces: 3,
        }
    }

    fn good() -> Value {
        serde_json::json!({
            "time": 1_699_999_000_000i64,
            "user": {"id": "u1", "name": "alice", "domain": {"id": "d1", "name": "acme"}},
            "service_type": "ECS",
            "resource_type": "ecs",
            "trace_name": "createServer",
            "trace_type": "ApiCall",
            "code": "201",
            "source_ip": "10.0.0.1"
        })
    }

    fn body(traces: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "traces": traces })).unwrap()
    }

    #[test]
    fn system_actions_may_have_no_user_and_no_source_ip() {
        let mut v = good();
        v["trace_type"] = "SystemAction".into();
        let o = v.as_object_mut().unwrap();
        o.remove("user");
        o.remove("source_ip");
        let bytes = body(vec![v.clone()]);
        let t = parse_report(&bytes, &ctx()).unwrap().remove(0);
        assert!(t.user.id.is_none() && t.user.name.is_none() && t.user.domain.is_none());
        assert_eq!(t.source_ip, "");
        // Any other operation names who did it.
        v["trace_type"] = "ApiCall".into();
        let errors = parse_report(&body(vec![v]), &ctx()).unwrap_err();
        assert!(
            matches!(&errors, ReportError::Invalid(e) if e.iter().any(|e| e.field == "user")),
            "{errors:?}"
        );
    }

    #[test]
    fn text_stays_in_the_body_unless_it_had_escapes() {
        use std::borrow::Cow;
        let mut v = good();
        v["resource_name"] = "vm \"one\" / 2".into();
        let bytes = body(vec![v]);
        let t = parse_report(&bytes, &ctx()).unwrap().remove(0);
        assert!(matches!(t.service_type.0, Cow::Borrowed("ECS")));
        assert!(matches!(
            &t.user.name.as_ref().unwrap().0,
            Cow::Borrowed("alice")
        ));
        let name = t.resource_name.as_ref().unwrap();
        assert!(matches!(name.0, Cow::Owned(_)));
        assert_eq!(*name, "vm \"one\" / 2");
        let owned = t.into_owned();
        assert_eq!(owned.resource_name.as_deref(), Some("vm \"one\" / 2"));
        assert_eq!(owned.service_type, "ECS");
    }

    #[test]
    fn fills_server_fields() {
        let t = parse_report(&body(vec![good()]), &ctx())
            .unwrap()
            .remove(0)
            .into_owned();
        assert_eq!(t.trace_rating, "normal");
        assert_eq!(t.tracker_name, "system");
        assert_eq!(t.project_id, "p1");
        assert_eq!(t.record_time, 1_700_000_000_000);
        assert_eq!(t.domain_id, "d1");
        assert!(uuid::Uuid::parse_str(&t.trace_id).is_ok());
    }

    #[test]
    fn rating_from_code() {
        for (code, rating) in [("302", "normal"), ("404", "warning"), ("503", "incident")] {
            let mut v = good();
            v["code"] = Value::String(code.into());
            let t = parse_report(&body(vec![v]), &ctx())
                .unwrap()
                .remove(0)
                .into_owned();
            assert_eq!(t.trace_rating, rating);
        }
        let mut v = good();
        v["code"] = serde_json::json!(500);
        let t = parse_report(&body(vec![v]), &ctx())
            .unwrap()
            .remove(0)
            .into_owned();
        assert_eq!(t.trace_rating, "incident");
        // Stored as the string the trace structure declares.
        assert_eq!(t.code.unwrap().get(), "\"500\"");
    }

    #[test]
    fn objects_are_stored_as_json_text() {
        let mut v = good();
        v["request"] = serde_json::json!({"server": {"name": "web-1"}});
        v["response"] = serde_json::json!("already text");
        v["message"] = Value::Null;
        let t = parse_report(&body(vec![v]), &ctx())
            .unwrap()
            .remove(0)
            .into_owned();
        let request: String = serde_json::from_str(t.request.unwrap().get()).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&request).unwrap(),
            serde_json::json!({"server": {"name": "web-1"}})
        );
        assert_eq!(t.response.unwrap().get(), "\"already text\"");
        assert!(t.message.is_none());
    }

    #[test]
    fn lists_every_error_with_index() {
        let mut bad1 = good();
        bad1["trace_name"] = "1bad".into();
        bad1["service_type"] = "ecs".into();
        let mut bad2 = good();
        bad2["time"] = "yesterday".into();
        bad2["colour"] = "red".into();
        let err = parse_report(&body(vec![good(), bad1, bad2]), &ctx()).unwrap_err();
        let ReportError::Invalid(errors) = err else {
            panic!("expected Invalid")
        };
        let fields: Vec<(Option<usize>, &str)> =
            errors.iter().map(|e| (e.index, e.field.as_str())).collect();
        assert!(fields.contains(&(Some(1), "trace_name")));
        assert!(fields.contains(&(Some(1), "service_type")));
        assert!(fields.contains(&(Some(2), "time")));
        assert!(fields.contains(&(Some(2), "colour")));
        assert!(!fields.iter().any(|(i, _)| *i == Some(0)));
    }

    #[test]
    fn limits_and_malformed() {
        assert!(matches!(
            parse_report(&body(vec![good(); 4]), &ctx()),
            Err(ReportError::TooMany { max: 3, got: 4 })
        ));
        assert!(matches!(
            parse_report(b"{", &ctx()),
            Err(ReportError::Malformed(_))
        ));
        assert!(matches!(
            parse_report(b"[]", &ctx()),
            Err(ReportError::Malformed(_))
        ));
        assert!(matches!(
            parse_report(&body(vec![]), &ctx()),
            Err(ReportError::Empty)
        ));
    }

    #[test]
    fn data_traces_need_their_tracker() {
        let mut v = good();
        v["trace_type"] = "ObsSDK".into();
        assert!(parse_report(&body(vec![v.clone()]), &ctx()).is_err());
        v["tracker_name"] = "bucket-reads".into();
        let t = parse_report(&body(vec![v]), &ctx())
            .unwrap()
            .remove(0)
            .into_owned();
        assert_eq!(t.kind(), TraceKind::Data);
        assert_eq!(t.event_type, "data");
    }

    #[test]
    fn value_rules() {
        assert!(is_valid_trace_name("a"));
        assert!(is_valid_trace_name(&format!("a{}", "b".repeat(63))));
        assert!(!is_valid_trace_name(&format!("a{}", "b".repeat(64))));
        assert!(!is_valid_trace_name("a b"));
        assert!(is_valid_trace_name("x-y_z.1"));
        assert!(is_valid_service_type("ECS2"));
        assert!(!is_valid_service_type("Ecs"));
        let mut v = good();
        v["project_id"] = "other".into();
        v["trace_rating"] = "fine".into();
        v["source_ip"] = "not-an-ip".into();
        v["user"]["domain"] = serde_json::json!({"id": "d"});
        let Err(ReportError::Invalid(errors)) = parse_report(&body(vec![v]), &ctx()) else {
            panic!()
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "project_id",
            "trace_rating",
            "source_ip",
            "user.domain.name",
        ] {
            assert!(fields.contains(&f), "{f} missing in {fields:?}");
        }
    }

    #[test]
    fn supplied_trace_id_is_canonical_uuid() {
        let mut v = good();
        v["trace_id"] = "6F9619FF-8B86-D011-B42D-00CF4FC964FF".into();
        let t = parse_report(&body(vec![v.clone()]), &ctx())
            .unwrap()
            .remove(0)
            .into_owned();
        assert_eq!(t.trace_id, "6f9619ff-8b86-d011-b42d-00cf4fc964ff");
        v["trace_id"] = "nope".into();
        assert!(parse_report(&body(vec![v]), &ctx()).is_err());
    }

    #[test]
    fn lone_surrogate_escapes_are_refused_with_their_field() {
        assert!(has_lone_surrogate(r#""\udc00""#));
        assert!(has_lone_surrogate(r#""a\uD800b""#));
        assert!(has_lone_surrogate(r#""\ud800\u0041""#));
        assert!(!has_lone_surrogate(r#""\ud834\udd1e \\udc00 \u00e9""#));
        assert!(!has_lone_surrogate(r#"{"a": "\\\\", "b": 1}"#));
        for field in [
            "request",
            "response",
            "message",
            "user_agent",
            "resource_name",
        ] {
            let mut t = good();
            t[field] = serde_json::json!("PLACEHOLDER");
            let text = String::from_utf8(body(vec![good(), t]))
                .unwrap()
                .replace("PLACEHOLDER", "x\\udc00");
            match parse_report(text.as_bytes(), &ctx()) {
                Err(ReportError::Invalid(errors)) => {
                    assert_eq!(errors.len(), 1, "{errors:?}");
                    assert_eq!(errors[0].index, Some(1));
                    assert_eq!(errors[0].field, field);
                    assert!(errors[0].rule.contains("lone surrogate"), "{errors:?}");
                }
                other => panic!("{field}: {:?}", other.map(|v| v.len())),
            }
        }
        let mut t = good();
        t["user"]["domain"]["name"] = serde_json::json!("PLACEHOLDER");
        let text = String::from_utf8(body(vec![t]))
            .unwrap()
            .replace("PLACEHOLDER", "\\ud800");
        match parse_report(text.as_bytes(), &ctx()) {
            Err(ReportError::Invalid(errors)) => {
                assert_eq!(errors[0].field, "user.domain.name", "{errors:?}")
            }
            other => panic!("{:?}", other.map(|v| v.len())),
        }
    }
}
