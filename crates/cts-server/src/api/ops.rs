//! Operational endpoints: liveness, readiness, metrics, the API description.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use cts_identity::Filter;
use serde_json::json;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::metrics::CONTENT_TYPE;
use crate::state::AppState;

/// The OpenAPI 3.1 description of every route.
pub const OPENAPI_JSON: &str = include_str!("../../../../docs/openapi.json");

/// How long readiness and metrics wait for the store's statistics.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    // Quarantined journal ranges do not stop the service; they are reported
    // until an operator acknowledges them (`ctsd repair --acknowledge`).
    // A read-only store (opened on a damaged journal) answers queries: it
    // is ready for them, and says why it takes no changes.
    let s = stats(&state).await.map_err(ApiError::Unavailable)?;
    let mut body = match &s.read_only {
        None => json!({"status": "ready"}),
        Some(reason) => json!({"status": "read-only", "read_only": reason}),
    };
    if !s.quarantined.is_empty() {
        body["quarantined"] = s
            .quarantined
            .iter()
            .map(|q| {
                json!({
                    "file": q.file, "offset": q.offset, "len": q.len, "saved_as": q.saved_as,
                    "first_seq": q.first_seq, "last_seq": q.last_seq,
                })
            })
            .collect();
    }
    Ok(Json(body))
}

/// `GET /metrics`. Label-free for anonymous scrapers (`metrics.public`):
/// series naming projects and trackers go only to an authenticated
/// scraper, for the projects of its own domain.
pub async fn metrics(
    State(state): State<AppState>,
    caller: Option<Extension<Principal>>,
) -> Response {
    // A store that does not answer leaves the gauges at their last values;
    // the counters are still worth scraping.
    let stats = stats(&state)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "store statistics unavailable"))
        .ok();
    let mut progress = Vec::new();
    if let Some(s) = &stats {
        match state
            .transfer
            .progress(crate::state::now_ms() / 1000, s.journal_seq)
            .await
        {
            Ok(p) => progress = p,
            Err(e) => tracing::warn!(error = %e, "transfer progress unavailable"),
        }
        state.metrics.set_transfer(&progress);
    }
    let outbox = state.outbox.clone();
    match tokio::task::spawn_blocking(move || outbox.backlog()).await {
        Ok(Ok(backlog)) => state
            .metrics
            .set_notifications(&backlog, crate::state::now_ms()),
        Ok(Err(e)) => tracing::warn!(error = %e, "notification backlog unavailable"),
        Err(e) => tracing::warn!(error = %e, "notification backlog unavailable"),
    }
    let trackers = match caller {
        Some(Extension(caller)) => Some(own_domain(&state, &caller, progress).await),
        None => None,
    };
    let text = state.metrics.render(stats.as_ref(), trackers.as_deref());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

/// The entries of `progress` whose project is in `caller`'s domain.
async fn own_domain(
    state: &AppState,
    caller: &Principal,
    mut progress: Vec<cts_transfer::Progress>,
) -> Vec<cts_transfer::Progress> {
    let identity = state.identity.clone();
    let filter = Filter {
        domain_id: Some(caller.domain_id.clone()),
        ..Filter::default()
    };
    let projects = tokio::task::spawn_blocking(move || identity.list_projects(&filter))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    progress.retain(|p| projects.iter().any(|own| own.id == p.project_id));
    progress
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn stats(state: &AppState) -> Result<cts_store::StoreStats, String> {
    tokio::time::timeout(STATS_TIMEOUT, state.with_store(|s| s.stats()))
        .await
        .map_err(|_| format!("the store did not answer within {STATS_TIMEOUT:?}"))?
}
