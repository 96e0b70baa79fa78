//! The Trace List: management and data traces of the retention window,
//! filtered as the v3 ListTraces API filters them (the same parser and
//! store query), newest first, paged with the API's marker; a trace's
//! detail; the query exported as CSV or JSON. The filters are the page's
//! URL, so a view can be shared.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::Value;

use cts_model::ApiVersion;
use cts_store::QueryPage;

use super::view::{html, local_value, parse_local, time_utc, Chrome};
use super::{allowed, PageError, Signed};
use crate::api::traces::query_page;
use crate::auth::Permission;
use crate::error::ApiError;
use crate::state::{now_ms, AppState};

const HOUR_MS: i64 = 3_600_000;
/// Traces one export holds at most (pages of 200 are read until then).
pub const EXPORT_MAX: usize = 10_000;
const PAGE_MAX: &str = "200";

/// The filters of the API's v3 ListTraces the page offers, in its order.
const API_FILTERS: &[&str] = &[
    "trace_type",
    "tracker_name",
    "service_type",
    "resource_type",
    "resource_name",
    "resource_id",
    "trace_name",
    "user",
    "trace_rating",
    "limit",
];

/// The page's query: the time range and the API filters, as in its URL.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// `hour`, `day`, `week` or `custom`.
    pub range: String,
    /// `datetime-local` values (UTC) of a custom range.
    pub from: String,
    pub to: String,
    pub api: Vec<(String, String)>,
}

impl Filters {
    /// Reads the URL's parameters; unknown and empty ones are dropped.
    pub fn of(params: &[(String, String)]) -> Filters {
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let range = match get("range").as_str() {
            r @ ("hour" | "week" | "custom") => r.to_string(),
            _ => "day".to_string(),
        };
        let api = API_FILTERS
            .iter()
            .map(|k| (k.to_string(), get(k)))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        Filters {
            range,
            from: get("from"),
            to: get("to"),
            api,
        }
    }

    pub fn get(&self, name: &str) -> &str {
        self.api
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The window `(from, to)` in ms; a bad custom bound names its field.
    pub fn window(&self, now: i64) -> Result<(i64, i64), ApiError> {
        let back = match self.range.as_str() {
            "hour" => HOUR_MS,
            "week" => 7 * 24 * HOUR_MS,
            "custom" => {
                let bound = |name: &'static str, v: &str| {
                    parse_local(v).ok_or(ApiError::BadRequest {
                        field: name,
                        rule: "must be a date and time (UTC), e.g. 2026-12-06T07:30".into(),
                    })
                };
                return Ok((bound("from", &self.from)?, bound("to", &self.to)?));
            }
            _ => 24 * HOUR_MS,
        };
        Ok((now - back, now))
    }

    /// The API parameters of this query (`limit` as given, or `limit`).
    pub fn api_params(
        &self,
        now: i64,
        next: Option<&str>,
        limit: Option<&str>,
    ) -> Result<HashMap<String, String>, ApiError> {
        let (from, to) = self.window(now)?;
        let mut p: HashMap<String, String> = self.api.iter().cloned().collect();
        p.insert("from".into(), from.to_string());
        p.insert("to".into(), to.to_string());
        if let Some(l) = limit {
            p.insert("limit".into(), l.into());
        }
        if let Some(n) = next.filter(|n| !n.is_empty()) {
            p.insert("next".into(), n.into());
        }
        Ok(p)
    }

    /// The URL query of this view (without the page marker).
    pub fn query_string(&self) -> String {
        let mut pairs = vec![("range".to_string(), self.range.clone())];
        if self.range == "custom" {
            pairs.push(("from".into(), self.from.clone()));
            pairs.push(("to".into(), self.to.clone()));
        }
        pairs.extend(self.api.iter().cloned());
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

/// One trace as a table row.
pub struct Row {
    pub trace_id: String,
    pub time: String,
    pub trace_name: String,
    pub trace_type: String,
    pub service_type: String,
    pub resource_type: String,
    pub resource_name: String,
    pub resource_id: String,
    pub user: String,
    pub rating: String,
    pub code: String,
    pub source_ip: String,
    /// `system` or `data`, for the detail link.
    pub kind: &'static str,
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

impl Row {
    pub fn of(doc: &Value) -> Row {
        let trace_type = text(doc, "trace_type");
        let kind = match trace_type.as_str() {
            "ObsSDK" | "ObsAPI" => "data",
            _ => "system",
        };
        let user = doc.get("user").map(|u| text(u, "name")).unwrap_or_default();
        Row {
            trace_id: text(doc, "trace_id"),
            time: doc
                .get("time")
                .and_then(Value::as_i64)
                .map(time_utc)
                .unwrap_or_default(),
            trace_name: text(doc, "trace_name"),
            trace_type,
            service_type: text(doc, "service_type"),
            resource_type: text(doc, "resource_type"),
            resource_name: text(doc, "resource_name"),
            resource_id: text(doc, "resource_id"),
            user,
            rating: text(doc, "trace_rating"),
            code: text(doc, "code"),
            source_ip: text(doc, "source_ip"),
            kind,
        }
    }
}

/// The stored JSON documents of a page, parsed.
pub fn docs(page: &QueryPage) -> Result<Vec<Value>, ApiError> {
    page.traces
        .iter()
        .map(|d| serde_json::from_slice(d).map_err(|e| ApiError::Read(e.to_string())))
        .collect()
}

#[derive(Template)]
#[template(path = "console/traces.html")]
struct ListPage {
    chrome: Chrome,
    f: Filters,
    from_value: String,
    to_value: String,
    data_trackers: Vec<String>,
    rows: Vec<Row>,
    query: String,
    next: Option<String>,
    paged: bool,
    error: Option<String>,
}

/// `GET /console/traces`.
pub async fn list(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    allowed(&state, &s, Permission::CtsRead).await?;
    let f = Filters::of(&params);
    let next = params
        .iter()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.clone());
    let now = now_ms();
    let (from, to) = f.window(now).unwrap_or((now - 24 * HOUR_MS, now));
    let project = s.project().to_string();
    let data_trackers = super::trackers::data_tracker_names(&state, &project).await?;
    let mut page = ListPage {
        chrome: Chrome::of(&s, "Trace List", "traces", false),
        from_value: if f.from.is_empty() {
            local_value(from)
        } else {
            f.from.clone()
        },
        to_value: if f.to.is_empty() {
            local_value(to)
        } else {
            f.to.clone()
        },
        query: f.query_string(),
        f,
        data_trackers,
        rows: Vec::new(),
        next: None,
        paged: next.is_some(),
        error: None,
    };
    let result = async {
        let p = page.f.api_params(now, next.as_deref(), None)?;
        query_page(&state, ApiVersion::V3, &project, None, &p).await
    }
    .await;
    let status = match result {
        Ok(result) => {
            page.rows = docs(&result)?.iter().map(Row::of).collect();
            page.next = result.marker;
            axum::http::StatusCode::OK
        }
        // A filter the API refuses is shown with the API's message.
        Err(e) => {
            let status = e.status();
            page.error = Some(format!("{}: {e}", e.code()));
            status
        }
    };
    Ok((status, html(&page)).into_response())
}

/// `GET /console/traces/export?format=csv|json&...`: every trace of the
/// query (up to [`EXPORT_MAX`]), newest first.
pub async fn export(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    allowed(&state, &s, Permission::CtsRead).await?;
    let f = Filters::of(&params);
    let csv = match params
        .iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.as_str())
    {
        Some("csv") => true,
        Some("json") => false,
        _ => {
            return Err(PageError(ApiError::BadRequest {
                field: "format",
                rule: "must be csv or json".into(),
            }))
        }
    };
    let project = s.project().to_string();
    let (all, _) = collect(&state, &project, &f, now_ms(), EXPORT_MAX).await?;
    let (body, kind, ext) = if csv {
        (to_csv(&all), "text/csv; charset=utf-8", "csv")
    } else {
        let body = serde_json::json!({ "traces": all });
        (body.to_string(), "application/json", "json")
    };
    let name = format!("attachment; filename=\"traces-{project}.{ext}\"");
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        body,
    )
        .into_response())
}

/// Every trace of the query `f`, newest first, up to `max`; whether more
/// were left out.
pub async fn collect(
    state: &AppState,
    project: &str,
    f: &Filters,
    now: i64,
    max: usize,
) -> Result<(Vec<Value>, bool), ApiError> {
    let mut all: Vec<Value> = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let p = f.api_params(now, marker.as_deref(), Some(PAGE_MAX))?;
        let page = query_page(state, ApiVersion::V3, project, None, &p).await?;
        all.extend(docs(&page)?);
        marker = page.marker;
        if marker.is_none() || all.len() >= max {
            break;
        }
    }
    let more = marker.is_some() && all.len() >= max;
    all.truncate(max);
    Ok((all, more))
}

const CSV_COLUMNS: &[&str] = &[
    "time",
    "trace_id",
    "trace_name",
    "trace_type",
    "service_type",
    "resource_type",
    "resource_name",
    "resource_id",
    "user",
    "trace_rating",
    "code",
    "source_ip",
];

/// RFC 4180 CSV; a cell that a spreadsheet would run as a formula gets a
/// leading `'`.
pub fn to_csv(docs: &[Value]) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    for doc in docs {
        let r = Row::of(doc);
        let cells = [
            &r.time,
            &r.trace_id,
            &r.trace_name,
            &r.trace_type,
            &r.service_type,
            &r.resource_type,
            &r.resource_name,
            &r.resource_id,
            &r.user,
            &r.rating,
            &r.code,
            &r.source_ip,
        ];
        let line: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn csv_cell(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// One field of the detail view.
pub struct Field {
    pub name: String,
    pub value: String,
    /// Pretty-printed JSON (request, response): shown preformatted.
    pub block: bool,
}

/// Every field of `doc`, nested objects as `user.name`; `request`,
/// `response` and other JSON text pretty-printed.
pub fn fields(doc: &Value) -> Vec<Field> {
    let mut out = Vec::new();
    flatten("", doc, &mut out);
    out
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<Field>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, out);
            }
        }
        Value::String(s) => {
            let parsed = serde_json::from_str::<Value>(s)
                .ok()
                .filter(|j| j.is_object() || j.is_array());
            let (value, block) = match parsed {
                Some(j) => (
                    serde_json::to_string_pretty(&j).unwrap_or_else(|_| s.clone()),
                    true,
                ),
                None => (s.clone(), false),
            };
            out.push(Field {
                name: prefix.to_string(),
                value,
                block,
            });
        }
        Value::Array(_) => out.push(Field {
            name: prefix.to_string(),
            value: serde_json::to_string_pretty(v).unwrap_or_default(),
            block: true,
        }),
        other => {
            let value = match (prefix, other.as_i64()) {
                ("time" | "record_time", Some(ms)) => format!("{ms} ({} UTC)", time_utc(ms)),
                _ => other.to_string(),
            };
            out.push(Field {
                name: prefix.to_string(),
                value,
                block: false,
            });
        }
    }
}

#[derive(Template)]
#[template(path = "console/trace.html")]
struct DetailPage {
    chrome: Chrome,
    row: Row,
    fields: Vec<Field>,
    back: String,
}

/// `GET /console/trace?trace_id=...&trace_type=system|data`.
pub async fn detail(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    allowed(&state, &s, Permission::CtsRead).await?;
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let id = get("trace_id");
    let mut p = HashMap::from([("trace_id".to_string(), id.clone())]);
    if get("trace_type") == "data" {
        p.insert("trace_type".into(), "data".into());
    }
    let page = query_page(&state, ApiVersion::V3, s.project(), None, &p).await?;
    let doc = docs(&page)?
        .into_iter()
        .next()
        .ok_or(ApiError::ResourceNotFound { what: "trace", id })?;
    let back = params
        .iter()
        .filter(|(k, _)| k != "trace_id" && k != "trace_type")
        .cloned()
        .collect::<Vec<_>>();
    let page = DetailPage {
        chrome: Chrome::of(&s, "Trace", "traces", false),
        row: Row::of(&doc),
        fields: fields(&doc),
        back: serde_urlencoded::to_string(back).unwrap_or_default(),
    };
    Ok(html(&page).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_become_api_parameters() {
        let f = Filters::of(&pairs(&[
            ("range", "hour"),
            ("resource_id", " r-1 "),
            ("user", ""),
            ("bogus", "x"),
        ]));
        let p = f.api_params(10 * HOUR_MS, Some("m"), None).unwrap();
        assert_eq!(p["from"], (9 * HOUR_MS).to_string());
        assert_eq!(p["resource_id"], "r-1");
        assert_eq!(p["next"], "m");
        assert!(!p.contains_key("user") && !p.contains_key("bogus"));
        assert_eq!(f.query_string(), "range=hour&resource_id=r-1");

        let custom = Filters::of(&pairs(&[
            ("range", "custom"),
            ("from", "2026-12-06T07:00"),
            ("to", "nope"),
        ]));
        let e = custom.window(0).unwrap_err();
        assert!(e.to_string().starts_with("to: "), "{e}");
        assert_eq!(Filters::of(&[]).range, "day");
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let doc = json!({"time": 0, "trace_id": "t", "trace_name": "=HYPERLINK(\"x\")",
            "resource_name": "a,b", "user": {"name": "bob\nsmith"}});
        let csv = to_csv(&[doc]);
        let line = csv.lines().nth(1).unwrap();
        assert!(
            line.starts_with("1970-01-01 00:00:00,t,\"'=HYPERLINK(\"\"x\"\")\","),
            "{line}"
        );
        assert!(csv.contains("\"a,b\""), "{csv}");
        assert!(csv.contains("\"bob\nsmith\""), "{csv}");
    }

    #[test]
    fn detail_fields_pretty_print_request_and_response() {
        let doc = json!({"time": 0, "user": {"name": "u", "domain": {"id": "d"}},
            "request": "{\"a\":1}", "message": "plain"});
        let f = fields(&doc);
        let get = |n: &str| f.iter().find(|x| x.name == n).unwrap();
        assert_eq!(get("user.domain.id").value, "d");
        assert!(get("request").block);
        assert_eq!(get("request").value, "{\n  \"a\": 1\n}");
        assert!(!get("message").block);
        assert!(get("time").value.contains("1970-01-01 00:00:00"));
    }
}
