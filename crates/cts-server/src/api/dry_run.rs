//! `POST /v3/{project_id}/notifications/{notification_id}/dry-run`: a rule
//! evaluated over the project's stored traces of a time window, whatever its
//! status, so that a rule that would never fire is caught before anyone
//! relies on it. Nothing is sent.

use axum::extract::{Path, Query};
use axum::Json;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use cts_model::TraceQuery;
use cts_notification::{Matcher, NotificationError, TraceFacts};
use cts_store::TraceStore;

use crate::api::identity::Call;
use crate::api::notifications::blocking;
use crate::error::ApiError;
use crate::state::now_ms;

/// Default window: the last hour.
const DEFAULT_WINDOW_MS: i64 = 3_600_000;
/// A dry run reads at most this many traces (newest first), then says it
/// stopped (`truncated`).
pub const MAX_SCANNED: usize = 100_000;
/// Matching traces returned whole (all are counted).
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Traces read per store query.
const PAGE: usize = 200;

#[derive(Deserialize)]
pub struct DryRunParams {
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

fn number(name: &str, v: Option<&str>) -> Result<Option<i64>, NotificationError> {
    v.map(|s| {
        s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            NotificationError::param(
                name,
                format!("{name} is a time in ms since 1970, not {s:?}"),
            )
        })
    })
    .transpose()
}

/// The window `[from, to]` (ms, inclusive) and the limit.
fn window(p: &DryRunParams, now: i64) -> Result<(i64, i64, usize), NotificationError> {
    let to = number("to", p.to.as_deref())?.unwrap_or(now);
    let from = number("from", p.from.as_deref())?.unwrap_or(to - DEFAULT_WINDOW_MS);
    if from > to {
        return Err(NotificationError::param(
            "from",
            "from must not be after to",
        ));
    }
    let limit = match p.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                NotificationError::param(
                    "limit",
                    format!("limit is an integer from 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    Ok((from, to, limit))
}

/// What a dry run found.
struct Outcome {
    scanned: usize,
    matched: usize,
    truncated: bool,
    traces: Vec<Box<RawValue>>,
}

/// Reads the project's traces of the window newest first, page by page,
/// through the store's query (the index narrows it to the project and
/// window), and evaluates `matcher` on each.
fn evaluate(
    store: &dyn TraceStore,
    matcher: &Matcher,
    project_id: &str,
    (from, to, limit): (i64, i64, usize),
) -> Result<Outcome, ApiError> {
    let mut out = Outcome {
        scanned: 0,
        matched: 0,
        truncated: false,
        traces: Vec::new(),
    };
    let mut query = TraceQuery {
        project_id: project_id.to_owned(),
        from: from.saturating_sub(1),
        to: to.saturating_add(1),
        limit: PAGE,
        next: None,
        trace_id: None,
        filters: Vec::new(),
    };
    let mut fired = Vec::new();
    loop {
        let page = store
            .query(&query)
            .map_err(|e| ApiError::Read(e.to_string()))?;
        for doc in &page.traces {
            out.scanned += 1;
            let facts =
                TraceFacts::read(doc).map_err(|e| ApiError::Read(format!("stored trace: {e}")))?;
            fired.clear();
            matcher.fire(&facts, &mut fired);
            if !fired.is_empty() {
                out.matched += 1;
                if out.traces.len() < limit {
                    let text = String::from_utf8_lossy(doc).into_owned();
                    out.traces.push(
                        RawValue::from_string(text).map_err(|e| ApiError::Read(e.to_string()))?,
                    );
                }
            }
        }
        match page.marker {
            Some(m) if out.scanned < MAX_SCANNED => query.next = Some(m),
            Some(_) => {
                out.truncated = true;
                break;
            }
            None => break,
        }
    }
    Ok(out)
}

pub async fn dry_run(
    c: Call,
    Path((project_id, id)): Path<(String, String)>,
    Query(params): Query<DryRunParams>,
) -> Result<Json<Value>, ApiError> {
    let window = window(&params, now_ms())?;
    let (project, i) = (project_id.clone(), id.clone());
    let n = blocking(&c.state, move |s, _| s.get(&project, &i)).await?;
    let matcher = Matcher::single(n);
    let outcome = c
        .state
        .with_store(move |store| evaluate(store, &matcher, &project_id, window))
        .await
        .map_err(ApiError::Internal)??;
    Ok(Json(json!({
        "notification_id": id,
        "from": window.0,
        "to": window.1,
        "scanned": outcome.scanned,
        "matched": outcome.matched,
        "truncated": outcome.truncated,
        "traces": outcome.traces,
    })))
}
