//! The router, its middleware, and the server loop with its background
//! retention task.

use std::future::Future;
use std::net::SocketAddr;

use axum::body::Body;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::api::{ops, traces};
use crate::error::ApiError;
use crate::state::{now_ms, AppState};

/// Every route of the API; `docs/openapi.json` describes exactly these.
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/healthz", get(ops::healthz)),
        ("/readyz", get(ops::readyz)),
        ("/metrics", get(ops::metrics)),
        ("/openapi.json", get(ops::openapi)),
        (
            "/v3/{project_id}/traces",
            get(traces::list_v3).post(traces::report),
        ),
        (
            "/v1.0/{project_id}/{tracker_name}/trace",
            get(traces::list_v1),
        ),
        (
            "/v2.0/{project_id}/{tracker_name}/trace",
            get(traces::list_v2),
        ),
    ]
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for (path, route) in routes() {
        router = router.route(path, route);
    }
    let middleware = ServiceBuilder::new()
        // Keeps a client's X-Request-Id, or makes one, before the span opens.
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(CatchPanicLayer::custom(panic_response));
    router
        .fallback(not_found)
        // After the routes: it applies to the routes registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware)
        .with_state(state)
}

fn request_span(req: &Request<Body>) -> tracing::Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %req.method(),
        uri = %req.uri(),
        request_id,
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    ApiError::Internal(format!("handler panicked: {msg}")).into_response()
}

/// Until requests are authenticated, the server must not be reachable from
/// other machines.
pub fn check_listen_addr(addr: &SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "refusing to listen on {addr}: ctsd does not authenticate requests yet, so it \
             only serves loopback addresses (127.0.0.0/8, [::1]); use e.g. --listen 127.0.0.1:8080"
        ))
    }
}

/// Serves `state` on `listener` until `shutdown` completes, then finishes the
/// requests in flight. Expired traces are dropped in the background.
pub async fn serve<F>(state: AppState, listener: TcpListener, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let retention = tokio::spawn(enforce_retention(state.clone()));
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    retention.abort();
    result
}

/// Every `store.retention_check_interval`, drops what is older than the
/// retention window.
async fn enforce_retention(state: AppState) {
    let mut ticks = tokio::time::interval(state.config.store.retention_check_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let cutoff = now_ms() - state.config.retention_ms();
        match state.with_store(move |s| s.enforce_retention(cutoff)).await {
            Ok(Ok(r)) if r.index_partitions_dropped + r.journal_segments_dropped > 0 => {
                tracing::info!(
                    cutoff_ms = cutoff,
                    index_partitions = r.index_partitions_dropped,
                    journal_segments = r.journal_segments_dropped,
                    "dropped expired traces"
                );
            }
            Ok(Ok(_)) => tracing::debug!(cutoff_ms = cutoff, "nothing expired"),
            Ok(Err(e)) => tracing::warn!(error = %e, "retention pass failed"),
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    }
}
