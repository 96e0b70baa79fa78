//! The trace structure as stored and returned by the query APIs.
//!
//! Field names and JSON types follow `trace_structure.rst` plus the Huawei
//! extras; optional fields are left out of the JSON when absent.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The tracker that records every management trace of a project.
pub const SYSTEM_TRACKER: &str = "system";

/// A recorded trace: every field of the trace structure.
///
/// `S` is the type of its text: `String` for a trace read from storage or
/// built by the server; [`Text`] for a reported trace on its way in, whose
/// strings stay in the request body (no allocation per field).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trace<S = String> {
    pub trace_id: S,
    /// The reporter chose the trace_id: a retry must be stored once. Server
    /// generated ids are fresh UUIDs and need no duplicate check.
    #[serde(skip)]
    pub trace_id_supplied: bool,
    pub time: i64,
    pub record_time: i64,
    pub user: UserInfo<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Box<RawValue>>,
    pub service_type: S,
    pub event_type: S,
    pub project_id: S,
    pub resource_type: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_account_id: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    pub tracker_name: S,
    pub operation_id: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<S>,
    pub source_ip: S,
    pub domain_id: S,
    pub trace_name: S,
    pub trace_rating: S,
    pub trace_type: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_info: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_url: Option<S>,
    pub enterprise_project_id: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_length: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_time: Option<i64>,
}

/// `UserInfo`: who performed the operation.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UserInfo<S = String> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<BaseUser<S>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_urn: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_is_root_user: Option<S>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoked_by: Option<Vec<S>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_context: Option<SessionContext<S>>,
    #[serde(
        default,
        rename = "OriginUser",
        skip_serializing_if = "Option::is_none"
    )]
    pub origin_user: Option<S>,
}

/// `BaseUser`: the account (domain) of the user.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BaseUser<S = String> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<S>,
}

/// `SessionContext`: attributes of temporary security credentials.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SessionContext<S = String> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes<S>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Attributes<S = String> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_authenticated: Option<S>,
}

/// Management traces are recorded by the `system` tracker; data traces (OBS
/// object operations) by data trackers.
/// The `trace_type` of an operation the system performs by itself: such a
/// trace may have no `user` and no `source_ip`.
pub const SYSTEM_ACTION: &str = "SystemAction";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TraceKind {
    Management,
    Data,
}

impl TraceKind {
    /// The `trace_type` query value (`system` or `data`).
    pub fn as_query_value(self) -> &'static str {
        match self {
            TraceKind::Management => "system",
            TraceKind::Data => "data",
        }
    }

    pub fn of_trace_type(trace_type: &str) -> Option<TraceKind> {
        match trace_type {
            "ApiCall" | "ConsoleAction" | SYSTEM_ACTION => Some(TraceKind::Management),
            "ObsSDK" | "ObsAPI" => Some(TraceKind::Data),
            _ => None,
        }
    }

    /// The kind of a stored trace: any other `trace_type` counts as
    /// management.
    pub fn of_stored(trace_type: &str) -> TraceKind {
        TraceKind::of_trace_type(trace_type).unwrap_or(TraceKind::Management)
    }
}

impl<S: AsRef<str>> Trace<S> {
    pub fn kind(&self) -> TraceKind {
        TraceKind::of_stored(self.trace_type.as_ref())
    }
}

impl Trace<Text<'_>> {
    /// A copy that owns its text. Through the JSON form: this is for the
    /// rare caller that keeps a reported trace beyond its request body.
    pub fn into_owned(self) -> Trace {
        let mut t: Trace =
            serde_json::from_slice(&self.to_json()).expect("a trace reads back its own JSON");
        t.trace_id_supplied = self.trace_id_supplied;
        t
    }
}

/// Text of a reported trace: borrowed from the request body, or owned when
/// the JSON string had escapes or the server made the value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Text(Cow::Borrowed(s))
    }
}

impl From<String> for Text<'_> {
    fn from(s: String) -> Self {
        Text(Cow::Owned(s))
    }
}

impl PartialEq<str> for Text<'_> {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Text<'_> {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl Serialize for Text<'_> {
    fn serialize<Z: serde::Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// `trace_rating` derived from an HTTP status code: 2xx/3xx normal, 4xx
/// warning, 5xx incident. Other values give no rating.
pub fn rating_for_code(code: u16) -> Option<&'static str> {
    match code {
        200..=399 => Some("normal"),
        400..=499 => Some("warning"),
        500..=599 => Some("incident"),
        _ => None,
    }
}

pub const RATINGS: [&str; 3] = ["normal", "warning", "incident"];
