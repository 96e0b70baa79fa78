//! The trace structure as stored and returned by the query APIs.
//!
//! Field names and JSON types follow `trace_structure.rst` plus the Huawei
//! extras; optional fields are left out of the JSON when absent.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The tracker that records every management trace of a project.
pub const SYSTEM_TRACKER: &str = "system";

/// A recorded trace: every field of the trace structure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trace {
    pub trace_id: String,
    /// The reporter chose the trace_id: a retry must be stored once. Server
    /// generated ids are fresh UUIDs and need no duplicate check.
    #[serde(skip)]
    pub trace_id_supplied: bool,
    pub time: i64,
    pub record_time: i64,
    pub user: UserInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Box<RawValue>>,
    pub service_type: String,
    pub event_type: String,
    pub project_id: String,
    pub resource_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    pub tracker_name: String,
    pub operation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    pub source_ip: String,
    pub domain_id: String,
    pub trace_name: String,
    pub trace_rating: String,
    pub trace_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_url: Option<String>,
    pub enterprise_project_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_length: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_time: Option<i64>,
}

/// `UserInfo`: who performed the operation.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UserInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<BaseUser>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_urn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_is_root_user: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoked_by: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_context: Option<SessionContext>,
    #[serde(
        default,
        rename = "OriginUser",
        skip_serializing_if = "Option::is_none"
    )]
    pub origin_user: Option<String>,
}

/// `BaseUser`: the account (domain) of the user.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BaseUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `SessionContext`: attributes of temporary security credentials.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SessionContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Attributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_authenticated: Option<String>,
}

/// Management traces are recorded by the `system` tracker; data traces (OBS
/// object operations) by data trackers.
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
            "ApiCall" | "ConsoleAction" | "SystemAction" => Some(TraceKind::Management),
            "ObsSDK" | "ObsAPI" => Some(TraceKind::Data),
            _ => None,
        }
    }
}

impl Trace {
    pub fn kind(&self) -> TraceKind {
        TraceKind::of_trace_type(&self.trace_type).unwrap_or(TraceKind::Management)
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
