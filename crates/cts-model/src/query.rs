//! The parameters of `ListTraces` (v3, and the legacy v1.0/v2.0 forms),
//! checked once here so that every storage engine gets a valid query.

use std::collections::HashMap;

use crate::report::{canonical_uuid, is_valid_service_type, is_valid_tracker_name};
use crate::trace::{TraceKind, RATINGS, SYSTEM_TRACKER};

/// The indexed fields a query can filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Field {
    ServiceType = 1,
    User = 2,
    ResourceId = 3,
    ResourceName = 4,
    ResourceType = 5,
    TraceName = 6,
    TraceRating = 7,
    AccessKeyId = 8,
    EnterpriseProjectId = 9,
    TrackerName = 10,
    /// `system` or `data` (derived from `trace_type`).
    Kind = 11,
}

impl Field {
    pub const ALL: [Field; 11] = [
        Field::ServiceType,
        Field::User,
        Field::ResourceId,
        Field::ResourceName,
        Field::ResourceType,
        Field::TraceName,
        Field::TraceRating,
        Field::AccessKeyId,
        Field::EnterpriseProjectId,
        Field::TrackerName,
        Field::Kind,
    ];

    /// The query parameter naming this filter.
    pub fn param(self) -> &'static str {
        match self {
            Field::ServiceType => "service_type",
            Field::User => "user",
            Field::ResourceId => "resource_id",
            Field::ResourceName => "resource_name",
            Field::ResourceType => "resource_type",
            Field::TraceName => "trace_name",
            Field::TraceRating => "trace_rating",
            Field::AccessKeyId => "access_key_id",
            Field::EnterpriseProjectId => "enterprise_project_id",
            Field::TrackerName => "tracker_name",
            Field::Kind => "trace_type",
        }
    }
}

/// A checked ListTraces query.
#[derive(Debug, Clone)]
pub struct TraceQuery {
    pub project_id: String,
    /// Exclusive lower bound of `time`.
    pub from: i64,
    /// Exclusive upper bound of `time`.
    pub to: i64,
    pub limit: usize,
    /// The `marker` of the previous page (a trace id).
    pub next: Option<String>,
    /// When set, the other criteria do not apply.
    pub trace_id: Option<String>,
    /// Equality filters, all of which must hold: first the implied ones (kind,
    /// then tracker), then the query's own. Engines may rely on that order.
    pub filters: Vec<(Field, String)>,
}

/// A query parameter that breaks its rule.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("query parameter {param}: {rule}")]
pub struct QueryError {
    pub param: String,
    pub rule: String,
}

fn qerr(param: &str, rule: impl Into<String>) -> QueryError {
    QueryError {
        param: param.to_string(),
        rule: rule.into(),
    }
}

/// Which API version's parameters are being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V2,
    V3,
}

pub const MAX_LIMIT: usize = 200;
pub const DEFAULT_LIMIT: usize = 10;
const HOUR_MS: i64 = 3_600_000;

fn parse_ms(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, QueryError> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .map(Some)
            .ok_or_else(|| qerr(name, "must be a UTC timestamp in milliseconds (13 digits)")),
    }
}

/// The query parameters of the v1.0 ListTraces (api-ref, querying_traces_v1.0).
const V1_PARAMS: &[&str] = &[
    "service_type",
    "user",
    "from",
    "limit",
    "next",
    "resource_id",
    "resource_name",
    "resource_type",
    "to",
    "trace_id",
    "trace_name",
    "trace_rating",
];

impl ApiVersion {
    /// Whether `name` is a query parameter of this version's ListTraces: v2.0
    /// adds `trace_status` (its name for the rating), v3 the trace type, the
    /// data tracker and the access key and enterprise project filters.
    fn has_param(self, name: &str) -> bool {
        V1_PARAMS.contains(&name)
            || match self {
                ApiVersion::V1 => false,
                ApiVersion::V2 => name == "trace_status",
                ApiVersion::V3 => matches!(
                    name,
                    "trace_type" | "tracker_name" | "access_key_id" | "enterprise_project_id"
                ),
            }
    }
}

/// A parameter the query does not know would otherwise be ignored silently,
/// answering unfiltered traces to a misspelt filter.
fn check_names(version: ApiVersion, params: &HashMap<String, String>) -> Result<(), QueryError> {
    let mut unknown: Vec<&str> = params
        .keys()
        .map(String::as_str)
        .filter(|k| !version.has_param(k))
        .collect();
    unknown.sort_unstable();
    match unknown.first() {
        None => Ok(()),
        Some(name) => Err(qerr(
            name,
            "is not a parameter of this trace query (check its spelling)",
        )),
    }
}

/// The rating filter: one of [`RATINGS`] in any case (otcextensions sends
/// `--level INCIDENT` as it is typed).
fn rating(param: &str, value: &str) -> Result<String, QueryError> {
    let lower = value.to_ascii_lowercase();
    if RATINGS.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(qerr(param, "must be normal, warning or incident"))
    }
}

impl TraceQuery {
    /// Checks the query parameters of a ListTraces call. `path_tracker` is the
    /// `{tracker_name}` of the legacy paths.
    pub fn parse(
        version: ApiVersion,
        project_id: &str,
        path_tracker: Option<&str>,
        params: &HashMap<String, String>,
        now_ms: i64,
    ) -> Result<TraceQuery, QueryError> {
        check_names(version, params)?;
        let limit = match params.get("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| {
                    qerr("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
                })?,
        };
        let from = parse_ms(params, "from")?;
        let to = parse_ms(params, "to")?;
        let to = to.unwrap_or(now_ms);
        let from = from.unwrap_or(to - HOUR_MS);
        if from >= to {
            return Err(qerr("from", "must be earlier than to"));
        }

        let trace_id = match params.get("trace_id") {
            None => None,
            Some(id) => Some(
                canonical_uuid(id).ok_or_else(|| qerr("trace_id", "must be a trace ID (UUID)"))?,
            ),
        };
        let next = match params.get("next").filter(|v| !v.is_empty()) {
            None => None,
            Some(id) => Some(canonical_uuid(id).ok_or_else(|| {
                qerr(
                    "next",
                    "must be the marker (a trace ID) of the previous page",
                )
            })?),
        };

        let mut filters = Vec::new();
        let kind = match (version, params.get("trace_type").map(String::as_str)) {
            (ApiVersion::V3, None | Some("system")) => TraceKind::Management,
            (ApiVersion::V3, Some("data")) => TraceKind::Data,
            (ApiVersion::V3, Some(_)) => return Err(qerr("trace_type", "must be system or data")),
            _ => TraceKind::Management,
        };
        filters.push((Field::Kind, kind.as_query_value().to_string()));

        let tracker = path_tracker
            .map(str::to_string)
            .or_else(|| params.get("tracker_name").cloned());
        match (kind, tracker) {
            (TraceKind::Management, Some(t)) if t != SYSTEM_TRACKER => {
                return Err(qerr("tracker_name", "must be system for management traces"));
            }
            (TraceKind::Management, _) => {
                filters.push((Field::TrackerName, SYSTEM_TRACKER.to_string()))
            }
            (TraceKind::Data, Some(t)) => {
                if !is_valid_tracker_name(&t) {
                    return Err(qerr("tracker_name", "is not a valid tracker name"));
                }
                filters.push((Field::TrackerName, t));
            }
            (TraceKind::Data, None) => {}
        }

        // v2.0 calls the rating trace_status.
        let rating_param = ["trace_status", "trace_rating"]
            .into_iter()
            .find(|name| params.contains_key(*name));
        if let Some(name) = rating_param {
            filters.push((Field::TraceRating, rating(name, &params[name])?));
        }

        let mut string_filters = vec![
            Field::ServiceType,
            Field::User,
            Field::ResourceId,
            Field::ResourceName,
            Field::ResourceType,
            Field::TraceName,
        ];
        if version == ApiVersion::V3 {
            string_filters.extend([Field::AccessKeyId, Field::EnterpriseProjectId]);
        }
        for field in string_filters {
            if let Some(v) = params.get(field.param()) {
                if v.is_empty() || v.len() > 256 {
                    return Err(qerr(field.param(), "must be 1 to 256 characters"));
                }
                if field == Field::ServiceType && !is_valid_service_type(v) {
                    return Err(qerr(
                        "service_type",
                        "must be an upper-case service acronym (letters and digits)",
                    ));
                }
                filters.push((field, v.clone()));
            }
        }

        Ok(TraceQuery {
            project_id: project_id.to_string(),
            from,
            to,
            limit,
            next,
            trace_id,
            filters,
        })
    }
}

/// The 16 bytes of a canonical UUID string (trace ids are UUIDs).
pub fn trace_id_bytes(id: &str) -> [u8; 16] {
    uuid::Uuid::try_parse(id)
        .map(|u| *u.as_bytes())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let q = TraceQuery::parse(ApiVersion::V3, "p", None, &p(&[]), 10_000_000).unwrap();
        assert_eq!(q.limit, 10);
        assert_eq!(q.to, 10_000_000);
        assert_eq!(q.from, 10_000_000 - HOUR_MS);
        assert!(q.filters.contains(&(Field::TrackerName, "system".into())));
        assert!(q.filters.contains(&(Field::Kind, "system".into())));
    }

    #[test]
    fn rejects_bad_values() {
        for (k, v) in [
            ("limit", "0"),
            ("limit", "201"),
            ("limit", "x"),
            ("from", "-1"),
            ("to", "abc"),
            ("trace_type", "all"),
            ("trace_rating", "bad"),
            ("next", "zzz"),
            ("trace_id", "1"),
            ("service_type", "ecs"),
        ] {
            let e = TraceQuery::parse(ApiVersion::V3, "p", None, &p(&[(k, v)]), 10_000_000)
                .unwrap_err();
            assert_eq!(e.param, k, "{k}={v}");
        }
        let e = TraceQuery::parse(
            ApiVersion::V3,
            "p",
            None,
            &p(&[("from", "5"), ("to", "5")]),
            9,
        )
        .unwrap_err();
        assert_eq!(e.param, "from");
    }

    #[test]
    fn ratings_in_any_case() {
        for (version, param) in [
            (ApiVersion::V3, "trace_rating"),
            (ApiVersion::V1, "trace_rating"),
            (ApiVersion::V2, "trace_status"),
            (ApiVersion::V2, "trace_rating"),
        ] {
            let parse = |value: &str| {
                TraceQuery::parse(version, "p", Some("system"), &p(&[(param, value)]), 1)
            };
            let q = parse("INCIDENT").unwrap();
            assert!(q.filters.contains(&(Field::TraceRating, "incident".into())));
            assert_eq!(parse("Fatal").unwrap_err().param, param);
        }
    }

    #[test]
    fn unknown_parameters_are_named() {
        let e = TraceQuery::parse(
            ApiVersion::V3,
            "p",
            None,
            &p(&[("servicetype", "ECS")]),
            10_000_000,
        )
        .unwrap_err();
        assert_eq!(e.param, "servicetype");
        // Each version knows its own set: what the reference documents and
        // the clients (huaweicloudsdkcts, otcextensions) send.
        let v3 = [
            "trace_type",
            "limit",
            "from",
            "next",
            "to",
            "tracker_name",
            "service_type",
            "user",
            "resource_id",
            "resource_name",
            "resource_type",
            "trace_id",
            "trace_name",
            "trace_rating",
            "access_key_id",
            "enterprise_project_id",
        ];
        for version in [ApiVersion::V1, ApiVersion::V2, ApiVersion::V3] {
            for name in v3.iter().chain(&["trace_status"]) {
                let known = V1_PARAMS.contains(name)
                    || (version == ApiVersion::V2 && *name == "trace_status")
                    || (version == ApiVersion::V3 && *name != "trace_status");
                assert_eq!(version.has_param(name), known, "{version:?} {name}");
            }
        }
    }

    #[test]
    fn v2_trace_status() {
        let q = TraceQuery::parse(
            ApiVersion::V2,
            "p",
            Some("system"),
            &p(&[("trace_status", "warning")]),
            10_000_000,
        )
        .unwrap();
        assert!(q.filters.contains(&(Field::TraceRating, "warning".into())));
        assert!(TraceQuery::parse(ApiVersion::V1, "p", Some("other"), &p(&[]), 10).is_err());
    }
}
