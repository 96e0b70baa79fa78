//! Reporting traces (`POST /v3/{project_id}/traces`) and querying them (v3
//! and the legacy v1.0/v2.0 paths).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use cts_model::{parse_report, ApiVersion, QueryError, ReportContext, ReportError, TraceQuery};
use cts_store::{AppendOutcome, QueryPage};

use crate::auth::Principal;
use crate::body::read_body;
use crate::error::ApiError;
use crate::metrics::ApiLabel;
use crate::recording::{self, NotRecorded};
use crate::state::{now_ms, AppState};

/// Project ids: 1 to 64 letters, digits, `_` or `-`. They become part of
/// index keys, so nothing else gets in.
fn is_valid_project_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn not_any(n: &NotRecorded) -> bool {
    n.count == 0
}

const PROJECT_ID_RULE: &str = "must be 1 to 64 letters, digits, underscores or hyphens";

#[derive(Debug, Serialize)]
struct ReportResponse {
    /// Traces newly recorded.
    recorded: usize,
    /// Traces already recorded under the same trace_id (a retried batch).
    duplicates: usize,
    /// The id of each reported trace, in the order of the request.
    /// `null` for a trace the project's trackers do not record.
    trace_ids: Vec<Option<String>>,
    /// Traces the project's trackers do not record, and why.
    #[serde(skip_serializing_if = "not_any")]
    not_recorded: NotRecorded,
}

pub async fn report(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    // Authorized for the project, the caller is of its domain.
    let result = record(&state, &caller.domain_id, path, &headers, body).await;
    let m = &state.metrics;
    m.ingest_duration.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(r) => {
            m.traces_accepted.inc_by(r.recorded as u64);
            m.traces_duplicate.inc_by(r.duplicates as u64);
            (StatusCode::CREATED, Json(r)).into_response()
        }
        Err(e) => {
            m.traces_rejected.inc_by(rejected_traces(&e));
            e.into_response()
        }
    }
}

/// How many traces a refused batch had that broke a rule.
fn rejected_traces(e: &ApiError) -> u64 {
    match e {
        ApiError::Report(ReportError::Invalid(errors)) => errors
            .iter()
            .filter_map(|e| e.index)
            .collect::<BTreeSet<_>>()
            .len() as u64,
        ApiError::Report(ReportError::TooMany { got, .. }) => *got as u64,
        _ => 0,
    }
}

async fn record(
    state: &AppState,
    domain_id: &str,
    path: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<ReportResponse, ApiError> {
    let project_id = path
        .map_err(|e| ApiError::BadRequest {
            field: "project_id",
            rule: e.body_text(),
        })?
        .0;
    if !is_valid_project_id(&project_id) {
        return Err(ApiError::BadRequest {
            field: "project_id",
            rule: PROJECT_ID_RULE.into(),
        });
    }
    if !is_json(headers.get(header::CONTENT_TYPE)) {
        return Err(ApiError::BadRequest {
            field: "Content-Type",
            rule: "must be application/json".into(),
        });
    }
    // Sized from Content-Length (within the limit) so that a 5 MiB body is
    // not copied through a series of reallocations.
    let expected = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let body = read_body(body, state.config.limits.max_body_bytes, expected).await?;

    let now = now_ms();
    let max_traces = state.config.limits.max_traces_per_request;
    let oldest_time_ms = now - state.config.retention_ms();
    let newest_time_ms = now.saturating_add(state.config.max_clock_skew_ms());
    // Parsing a body of several MiB is CPU work; it runs beside the blocking
    // append rather than on an async worker, and after queries.
    let state2 = state.clone();
    let domain_id = domain_id.to_string();
    let outcome = state
        .ingest_with_store(move |store| {
            let ctx = ReportContext {
                project_id: &project_id,
                now_ms: now,
                oldest_time_ms,
                newest_time_ms,
                max_traces,
            };
            let traces = parse_report(&body, &ctx)?;
            let mut trace_ids: Vec<Option<String>> = traces
                .iter()
                .map(|t| Some(t.trace_id.to_string()))
                .collect();
            let (kept, not_recorded) =
                recording::admit(&state2, &project_id, traces, &mut trace_ids);
            let AppendOutcome { stored, duplicates } =
                recording::append(&state2, store, kept, &domain_id)
                    .map_err(ApiError::not_written)?;
            Ok::<_, ApiError>(ReportResponse {
                recorded: stored,
                duplicates,
                trace_ids,
                not_recorded,
            })
        })
        .await
        .map_err(ApiError::Write)??;
    Ok(outcome)
}

/// `application/json` or a `+json` type, any parameters.
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(essence) = content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
    else {
        return false;
    };
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

type PathResult<T> = Result<Path<T>, PathRejection>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub async fn list_v3(
    State(state): State<AppState>,
    path: PathResult<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let project_id = path.map_err(|e| path_error("project_id", e))?.0;
    list(&state, ApiVersion::V3, project_id, None, params).await
}

#[derive(Deserialize)]
pub struct LegacyPath {
    project_id: String,
    tracker_name: String,
}

pub async fn list_v1(
    State(state): State<AppState>,
    path: PathResult<LegacyPath>,
    params: Params,
) -> Result<Response, ApiError> {
    list_legacy(&state, ApiVersion::V1, path, params).await
}

pub async fn list_v2(
    State(state): State<AppState>,
    path: PathResult<LegacyPath>,
    params: Params,
) -> Result<Response, ApiError> {
    list_legacy(&state, ApiVersion::V2, path, params).await
}

/// `GET /v1.0|v2.0/{project_id}/{tracker_name}/trace`.
async fn list_legacy(
    state: &AppState,
    version: ApiVersion,
    path: PathResult<LegacyPath>,
    params: Params,
) -> Result<Response, ApiError> {
    let p = path.map_err(|e| path_error("path", e))?.0;
    list(state, version, p.project_id, Some(p.tracker_name), params).await
}

fn path_error(param: &str, e: PathRejection) -> ApiError {
    ApiError::Query(QueryError {
        param: param.into(),
        rule: e.body_text(),
    })
}

fn api_label(version: ApiVersion) -> &'static str {
    match version {
        ApiVersion::V1 => "v1",
        ApiVersion::V2 => "v2",
        ApiVersion::V3 => "v3",
    }
}

async fn list(
    state: &AppState,
    version: ApiVersion,
    project_id: String,
    tracker: Option<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    if !is_valid_project_id(&project_id) {
        return Err(ApiError::Query(QueryError {
            param: "project_id".into(),
            rule: PROJECT_ID_RULE.into(),
        }));
    }
    let Query(params) = params.map_err(|e| {
        ApiError::Query(QueryError {
            param: "query".into(),
            rule: e.body_text(),
        })
    })?;
    let page = query_page(state, version, &project_id, tracker.as_deref(), &params).await?;
    let body = page_body(&page, version == ApiVersion::V2)?;
    state
        .metrics
        .query_duration
        .get_or_create(&ApiLabel {
            api: api_label(version),
        })
        .observe(started.elapsed().as_secs_f64());
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// One page of a ListTraces query (the API's and the console's), never
/// past retention.
pub(crate) async fn query_page(
    state: &AppState,
    version: ApiVersion,
    project_id: &str,
    tracker: Option<&str>,
    params: &HashMap<String, String>,
) -> Result<QueryPage, ApiError> {
    let now = now_ms();
    let mut query = TraceQuery::parse(version, project_id, tracker, params, now)?;
    // Traces past retention may still sit in a partition not yet dropped;
    // they must never be shown. `from` is exclusive.
    let oldest = now - state.config.retention_ms();
    query.from = query.from.max(oldest - 1);

    let by_id = query.trace_id.is_some();
    let mut page = if !by_id && query.from >= query.to {
        QueryPage::default()
    } else {
        state
            .with_store(move |store| store.query(&query))
            .await
            .map_err(ApiError::Read)?
            .map_err(|e| ApiError::Read(e.to_string()))?
    };
    if by_id {
        // A trace_id query ignores the time window, so its answer is
        // checked against retention here.
        page.traces
            .retain(|doc| doc_time(doc).is_none_or(|t| t >= oldest));
    }
    Ok(page)
}

fn doc_time(doc: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct Time {
        time: i64,
    }
    serde_json::from_slice::<Time>(doc).ok().map(|t| t.time)
}

/// `{"traces": [...], "meta_data": {"count": n, "marker": ...}}`, built from
/// the stored JSON documents without parsing them again.
fn page_body(page: &QueryPage, v2: bool) -> Result<Vec<u8>, ApiError> {
    let size: usize = page.traces.iter().map(|d| d.len() + 40).sum();
    let mut out = Vec::with_capacity(size + 100);
    out.extend_from_slice(b"{\"traces\":[");
    for (i, doc) in page.traces.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if v2 {
            push_with_trace_status(&mut out, doc)?;
        } else {
            out.extend_from_slice(doc);
        }
    }
    out.extend_from_slice(b"],\"meta_data\":{\"count\":");
    out.extend_from_slice(page.traces.len().to_string().as_bytes());
    out.extend_from_slice(b",\"marker\":");
    serde_json::to_writer(&mut out, &page.marker).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// v2.0 calls the rating `trace_status`: the document gets that key too.
fn push_with_trace_status(out: &mut Vec<u8>, doc: &[u8]) -> Result<(), ApiError> {
    #[derive(Deserialize)]
    struct Rating {
        trace_rating: String,
    }
    let corrupt =
        || ApiError::Read("a stored trace is not a JSON object with a trace_rating".into());
    let rating = serde_json::from_slice::<Rating>(doc)
        .map_err(|_| corrupt())?
        .trace_rating;
    let start = doc
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or_else(corrupt)?;
    if doc[start] != b'{' {
        return Err(corrupt());
    }
    out.extend_from_slice(b"{\"trace_status\":");
    serde_json::to_writer(&mut *out, &rating).expect("writing to a Vec cannot fail");
    out.push(b',');
    out.extend_from_slice(&doc[start + 1..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn project_ids() {
        assert!(is_valid_project_id("a"));
        assert!(is_valid_project_id("0123abc_-XYZ"));
        assert!(is_valid_project_id(&"p".repeat(64)));
        assert!(!is_valid_project_id(&"p".repeat(65)));
        assert!(!is_valid_project_id(""));
        assert!(!is_valid_project_id("a.b"));
        assert!(!is_valid_project_id("ü"));
    }

    #[test]
    fn json_content_types() {
        let ok = |s: &'static str| is_json(Some(&HeaderValue::from_static(s)));
        assert!(ok("application/json"));
        assert!(ok("Application/JSON; charset=utf-8"));
        assert!(ok("application/vnd.cts+json"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/x-www-form-urlencoded"));
        assert!(!is_json(None));
    }

    #[test]
    fn page_bodies() {
        let page = QueryPage {
            traces: vec![
                br#"{"trace_id":"a","trace_rating":"warning","user":{"name":"u"}}"#.to_vec(),
                br#" {"trace_id":"b","trace_rating":"normal"}"#.to_vec(),
            ],
            marker: Some("b".into()),
        };
        let v3: Value = serde_json::from_slice(&page_body(&page, false).unwrap()).unwrap();
        assert_eq!(v3["meta_data"], json!({"count": 2, "marker": "b"}));
        assert_eq!(v3["traces"][0]["user"]["name"], "u");
        assert!(v3["traces"][0].get("trace_status").is_none());

        let v2: Value = serde_json::from_slice(&page_body(&page, true).unwrap()).unwrap();
        assert_eq!(v2["traces"][0]["trace_status"], "warning");
        assert_eq!(v2["traces"][1]["trace_status"], "normal");
        assert_eq!(v2["traces"][1]["trace_id"], "b");

        let empty: Value =
            serde_json::from_slice(&page_body(&QueryPage::default(), true).unwrap()).unwrap();
        assert_eq!(
            empty,
            json!({"traces": [], "meta_data": {"count": 0, "marker": null}})
        );
    }
}
