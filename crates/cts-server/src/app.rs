//! The router, its middleware, and the server loop with its background
//! retention task.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::handler::Handler;
use axum::http::Method;
use axum::http::Request;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::api::{
    credentials, domain_roles, dry_run, identity, notifications, ops, tokens, topics, traces,
    trackers, transfer, versions,
};
use crate::auth::{authorize, Access, Permission};
use crate::error::ApiError;
use crate::state::{now_ms, AppState};

/// One route: its method, path, the access it declares and its handler.
pub(crate) struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub handler: MethodRouter<AppState>,
}

fn route<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    Route {
        method,
        path,
        access,
        handler: on(filter, handler),
    }
}

/// Every route of the API with the access it needs; `docs/openapi.json`
/// describes exactly these.
pub(crate) fn routes() -> Vec<Route> {
    use Access::{Authenticated, Domain, Metrics, OwnDomain, Project, ProjectRoles, Public};
    use Method as M;
    use Permission::{CtsRead, CtsWrite, IdentityManage, TraceReport};
    const IDM: Access = Domain(IdentityManage);
    vec![
        route(M::GET, "/healthz", Public, ops::healthz),
        route(M::GET, "/readyz", Public, ops::readyz),
        route(M::GET, "/metrics", Metrics, ops::metrics),
        route(M::GET, "/openapi.json", Public, ops::openapi),
        route(M::GET, "/", Public, versions::list),
        route(M::GET, "/{version}", Public, versions::show),
        // The version documents link to `/{version}/`.
        route(M::GET, "/{version}/", Public, versions::show),
        route(
            M::GET,
            "/v3/{project_id}/traces",
            Project(CtsRead),
            traces::list_v3,
        ),
        route(
            M::POST,
            "/v3/{project_id}/traces",
            Project(TraceReport),
            traces::report,
        ),
        route(
            M::GET,
            "/v1.0/{project_id}/{tracker_name}/trace",
            Project(CtsRead),
            traces::list_v1,
        ),
        route(
            M::GET,
            "/v2.0/{project_id}/{tracker_name}/trace",
            Project(CtsRead),
            traces::list_v2,
        ),
        // Trackers: v3 and v1.0 views of the same trackers.
        route(
            M::POST,
            "/v3/{project_id}/tracker",
            Project(CtsWrite),
            trackers::create_v3,
        ),
        route(
            M::PUT,
            "/v3/{project_id}/tracker",
            Project(CtsWrite),
            trackers::update_v3,
        ),
        route(
            M::GET,
            "/v3/{project_id}/trackers",
            Project(CtsRead),
            trackers::list_v3,
        ),
        route(
            M::DELETE,
            "/v3/{project_id}/trackers",
            Project(CtsWrite),
            trackers::delete_v3,
        ),
        route(
            M::POST,
            "/v1.0/{project_id}/tracker",
            Project(CtsWrite),
            trackers::create_v1,
        ),
        route(
            M::PUT,
            "/v1.0/{project_id}/tracker/{tracker_name}",
            Project(CtsWrite),
            trackers::update_v1,
        ),
        route(
            M::GET,
            "/v1.0/{project_id}/tracker",
            Project(CtsRead),
            trackers::list_v1,
        ),
        route(
            M::DELETE,
            "/v1.0/{project_id}/tracker",
            Project(CtsWrite),
            trackers::delete_v1,
        ),
        route(
            M::POST,
            "/v3/{project_id}/{resource_type}/{resource_id}/tags/create",
            Project(CtsWrite),
            trackers::create_tags,
        ),
        route(
            M::DELETE,
            "/v3/{project_id}/{resource_type}/{resource_id}/tags/delete",
            Project(CtsWrite),
            trackers::delete_tags,
        ),
        route(
            M::GET,
            "/v3/{project_id}/quotas",
            Project(CtsRead),
            trackers::quotas,
        ),
        // Key event notifications.
        route(
            M::POST,
            "/v3/{project_id}/notifications",
            Project(CtsWrite),
            notifications::create,
        ),
        route(
            M::PUT,
            "/v3/{project_id}/notifications",
            Project(CtsWrite),
            notifications::update,
        ),
        route(
            M::DELETE,
            "/v3/{project_id}/notifications",
            Project(CtsWrite),
            notifications::delete,
        ),
        route(
            M::GET,
            "/v3/{project_id}/notifications/{notification_type}",
            Project(CtsRead),
            notifications::list,
        ),
        // Reads only: evaluates a rule over stored traces, sends nothing.
        route(
            M::POST,
            "/v3/{project_id}/notifications/{notification_id}/dry-run",
            Project(CtsRead),
            dry_run::dry_run,
        ),
        route(
            M::GET,
            "/v3/{project_id}/operations",
            Project(CtsRead),
            trackers::operations,
        ),
        route(
            M::GET,
            "/v3/{project_id}/user-resources",
            Project(CtsRead),
            trackers::user_resources,
        ),
        // Trace transfer: encryption keys, digest keys, bucket checks.
        route(
            M::POST,
            "/v3/{project_id}/encryption-keys",
            Project(CtsWrite),
            transfer::create_key,
        ),
        route(
            M::GET,
            "/v3/{project_id}/encryption-keys",
            Project(CtsRead),
            transfer::list_keys,
        ),
        route(
            M::DELETE,
            "/v3/{project_id}/encryption-keys/{key_id}",
            Project(CtsWrite),
            transfer::delete_key,
        ),
        route(
            M::GET,
            "/v3/{project_id}/digest-public-keys",
            Project(CtsRead),
            transfer::public_keys,
        ),
        route(
            M::POST,
            "/v3/{project_id}/checkbucket",
            OwnDomain(CtsWrite),
            transfer::check_buckets,
        ),
        // The segment is a domain id (named so to share the router's node).
        route(
            M::GET,
            "/v3/{project_id}/resources",
            OwnDomain(CtsRead),
            trackers::resources,
        ),
        // Keystone v3: tokens.
        route(M::POST, "/v3/auth/tokens", Public, tokens::issue),
        route(M::GET, "/v3/auth/tokens", Authenticated, tokens::check),
        route(M::HEAD, "/v3/auth/tokens", Authenticated, tokens::check),
        route(M::DELETE, "/v3/auth/tokens", Authenticated, tokens::revoke),
        route(
            M::GET,
            "/v3/auth/projects",
            Authenticated,
            tokens::my_projects,
        ),
        // Keystone v3: identities of the caller's domain.
        route(M::GET, "/v3/projects", IDM, identity::list_projects),
        route(M::POST, "/v3/projects", IDM, identity::create_project),
        route(M::GET, "/v3/projects/{id}", IDM, identity::get_project),
        route(M::PATCH, "/v3/projects/{id}", IDM, identity::update_project),
        route(
            M::DELETE,
            "/v3/projects/{id}",
            IDM,
            identity::delete_project,
        ),
        route(M::GET, "/v3/users", IDM, identity::list_users),
        route(M::POST, "/v3/users", IDM, identity::create_user),
        route(M::GET, "/v3/users/{id}", IDM, identity::get_user),
        route(
            M::PATCH,
            "/v3/users/{id}",
            Access::UserChange,
            identity::update_user,
        ),
        route(M::DELETE, "/v3/users/{id}", IDM, identity::delete_user),
        route(M::POST, "/v3/users/{id}/unlock", IDM, identity::unlock_user),
        route(
            M::GET,
            "/v3/users/{id}/groups",
            IDM,
            identity::groups_of_user,
        ),
        route(M::GET, "/v3/groups", IDM, identity::list_groups),
        route(M::POST, "/v3/groups", IDM, identity::create_group),
        route(M::GET, "/v3/groups/{id}", IDM, identity::get_group),
        route(M::PATCH, "/v3/groups/{id}", IDM, identity::update_group),
        route(M::DELETE, "/v3/groups/{id}", IDM, identity::delete_group),
        route(
            M::GET,
            "/v3/groups/{id}/users",
            IDM,
            identity::users_of_group,
        ),
        route(
            M::PUT,
            "/v3/groups/{id}/users/{user_id}",
            IDM,
            identity::add_member,
        ),
        route(
            M::HEAD,
            "/v3/groups/{id}/users/{user_id}",
            IDM,
            identity::check_member,
        ),
        route(
            M::DELETE,
            "/v3/groups/{id}/users/{user_id}",
            IDM,
            identity::remove_member,
        ),
        route(M::GET, "/v3/roles", Authenticated, identity::list_roles),
        route(M::GET, "/v3/roles/{id}", Authenticated, identity::get_role),
        route(
            M::GET,
            "/v3/role_assignments",
            IDM,
            identity::list_assignments,
        ),
        route(
            M::GET,
            "/v3/projects/{id}/{actor}/{actor_id}/roles",
            ProjectRoles,
            identity::roles_of_actor,
        ),
        route(
            M::PUT,
            "/v3/projects/{id}/{actor}/{actor_id}/roles/{role_id}",
            ProjectRoles,
            identity::assign,
        ),
        route(
            M::HEAD,
            "/v3/projects/{id}/{actor}/{actor_id}/roles/{role_id}",
            ProjectRoles,
            identity::check_assignment,
        ),
        route(
            M::DELETE,
            "/v3/projects/{id}/{actor}/{actor_id}/roles/{role_id}",
            ProjectRoles,
            identity::unassign,
        ),
        // Keystone v3: domain admins.
        route(
            M::GET,
            "/v3/domains/{domain_id}/users/{user_id}/roles",
            IDM,
            domain_roles::roles_of_user,
        ),
        route(
            M::PUT,
            "/v3/domains/{domain_id}/users/{user_id}/roles/{role_id}",
            IDM,
            domain_roles::assign,
        ),
        route(
            M::HEAD,
            "/v3/domains/{domain_id}/users/{user_id}/roles/{role_id}",
            IDM,
            domain_roles::check,
        ),
        route(
            M::DELETE,
            "/v3/domains/{domain_id}/users/{user_id}/roles/{role_id}",
            IDM,
            domain_roles::unassign,
        ),
        // Huawei Cloud IAM: access keys.
        route(
            M::POST,
            "/v3.0/OS-CREDENTIAL/credentials",
            Authenticated,
            credentials::create,
        ),
        route(
            M::GET,
            "/v3.0/OS-CREDENTIAL/credentials",
            Authenticated,
            credentials::list,
        ),
        route(
            M::GET,
            "/v3.0/OS-CREDENTIAL/credentials/{access_key}",
            Authenticated,
            credentials::show,
        ),
        route(
            M::PUT,
            "/v3.0/OS-CREDENTIAL/credentials/{access_key}",
            Authenticated,
            credentials::update,
        ),
        route(
            M::DELETE,
            "/v3.0/OS-CREDENTIAL/credentials/{access_key}",
            Authenticated,
            credentials::delete,
        ),
        // SMN-shaped topics and subscriptions, and their deliveries.
        route(
            M::POST,
            "/v2/{project_id}/notifications/topics",
            Project(CtsWrite),
            topics::create_topic,
        ),
        route(
            M::GET,
            "/v2/{project_id}/notifications/topics",
            Project(CtsRead),
            topics::list_topics,
        ),
        route(
            M::DELETE,
            "/v2/{project_id}/notifications/topics/{topic_urn}",
            Project(CtsWrite),
            topics::delete_topic,
        ),
        route(
            M::POST,
            "/v2/{project_id}/notifications/topics/{topic_urn}/subscriptions",
            Project(CtsWrite),
            topics::subscribe,
        ),
        route(
            M::GET,
            "/v2/{project_id}/notifications/topics/{topic_urn}/subscriptions",
            Project(CtsRead),
            topics::list_subscriptions,
        ),
        route(
            M::DELETE,
            "/v2/{project_id}/notifications/subscriptions/{subscription_urn}",
            Project(CtsWrite),
            topics::unsubscribe,
        ),
        route(
            M::GET,
            "/v2/{project_id}/notifications/deliveries",
            Project(CtsRead),
            topics::deliveries,
        ),
    ]
}

pub fn router(state: AppState) -> Router {
    // Each method of a path carries its own authorization layer, merged
    // into the path's method router.
    let mut paths: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for r in routes() {
        tracing::debug!(method = %r.method, path = r.path, access = ?r.access, "route");
        let authorized = r
            .handler
            .layer(from_fn_with_state((state.clone(), r.access), authorize));
        let merged = match paths.remove(r.path) {
            Some(existing) => existing.merge(authorized),
            None => authorized,
        };
        paths.insert(r.path, merged);
    }
    let mut router = Router::new();
    for (path, methods) in paths {
        router = router.route(path, methods);
    }
    // The web console: its own session guard, no API route.
    router = router.nest("/console", crate::console::router(state.clone()));
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
        .layer(from_fn_with_state(
            state.clone(),
            refuse_changes_when_read_only,
        ))
        .fallback(not_found)
        // After the routes: it applies to the routes registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware)
        .with_state(state)
}

/// A store opened read-only on a damaged journal records nothing: every
/// request that would record or change something (all but GET, HEAD and
/// OPTIONS: reports, and every audited change, whose trace could not be
/// written) is refused before it starts, with the reason and what to run.
async fn refuse_changes_when_read_only(
    State(state): State<AppState>,
    req: Request<Body>,
    next: Next,
) -> Response {
    match &state.read_only {
        Some(reason) if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) => {
            ApiError::ReadOnly(reason.clone()).into_response()
        }
        _ => next.run(req).await,
    }
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

/// Serves `state` on `listener` until `shutdown` completes, then finishes the
/// requests in flight (within `limits.shutdown_grace`). Expired traces are
/// dropped in the background.
///
/// With `tls`, every connection is TLS (rustls); there is no plain-HTTP
/// port beside it.
pub async fn serve<F>(
    state: AppState,
    listener: TcpListener,
    tls: Option<RustlsConfig>,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let retention = tokio::spawn(enforce_retention(state.clone()));
    let catalog = tokio::spawn(flush_catalog(state.clone()));
    let transfer = tokio::spawn(run_transfer(state.clone()));
    let notifier = tokio::spawn(run_notifier(state.clone()));
    let lts = tokio::spawn(run_lts(state.clone()));
    let refusals = tokio::spawn(summarize_refusals(state.clone()));
    let delivery = tokio::spawn(deliver_notifications(state.clone())?);
    let pruning = tokio::spawn(prune_outbox(state.clone()));
    let leases = tokio::spawn(renew_leases(state.clone()));
    let catalog_state = state.clone();
    let limits = state.config.limits.clone();
    // The peer address becomes the `source_ip` of audit traces and a key
    // of the login throttle.
    let tls = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.get_inner()));
    crate::connections::accept_loop(listener, router(state), limits, tls, shutdown).await;
    retention.abort();
    catalog.abort();
    transfer.abort();
    notifier.abort();
    lts.abort();
    refusals.abort();
    delivery.abort();
    pruning.abort();
    leases.abort();
    // What the catalog learned since its last flush.
    let consumers = Arc::clone(&catalog_state.consumers);
    flush_catalog_once(catalog_state).await;
    // The other nodes take this one's work over at once, not after the
    // lease time.
    match tokio::task::spawn_blocking(move || consumers.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the consumer leases were not released"),
        Err(e) => tracing::warn!(error = %e, "releasing the consumer leases failed"),
    }
    Ok(())
}

/// Renews this node's consumer leases (PostgreSQL) so that it keeps its
/// work; with the embedded store there is nothing to renew.
async fn renew_leases(state: AppState) {
    let Some(every) = state.consumers.renew_every() else {
        return;
    };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let consumers = Arc::clone(&state.consumers);
        match tokio::task::spawn_blocking(move || consumers.renew()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "renewing the consumer leases failed; retried")
            }
            Err(e) => tracing::error!(error = %e, "renewing the consumer leases panicked; retried"),
        }
    }
}

/// Writes due trace files and digests, every second (a pass with nothing
/// due reads the trackers and stops).
async fn run_transfer(state: AppState) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(e) = state.transfer.run_once(now_ms() / 1000).await {
            state.metrics.transfer_failures.inc();
            tracing::warn!(error = %e, "transfer pass failed; it is retried");
        }
        let failed_writes = state.transfer.take_failed_writes();
        state.metrics.transfer_failures.inc_by(failed_writes);
        let skipped = state.transfer.take_skipped();
        state.metrics.transfer_skipped.inc_by(skipped);
    }
}

/// Longest wait of an idle matcher: what it still polls for (rule
/// changes come with their own trace, which wakes it).
const NOTIFIER_IDLE_POLL: Duration = Duration::from_millis(200);
/// Shortest time between the starts of two passes: under steady ingest
/// each append would wake the matcher, and every pass commits its cursor
/// (a durable SQLite write), so wakes are coalesced into at most 20
/// passes a second. This is also the longest a new trace waits.
const NOTIFIER_MIN_GAP: Duration = Duration::from_millis(50);

/// Evaluates new traces against the notification rules: at once while
/// behind; else when a trace is appended (passes [`NOTIFIER_MIN_GAP`]
/// apart), or after [`NOTIFIER_IDLE_POLL`]. Report to match stays within
/// tens of milliseconds, far inside the 5 s from report to delivery.
async fn run_notifier(state: AppState) {
    loop {
        let began = tokio::time::Instant::now();
        let notifier = Arc::clone(&state.notifier);
        // Journal reads and SQLite commits: off the async workers.
        let pass = tokio::task::spawn_blocking(move || notifier.pass(16)).await;
        let caught_up = match pass {
            Ok(Ok(p)) => {
                state.metrics.notification_matched.inc_by(p.fired);
                p.caught_up
            }
            Ok(Err(e)) => {
                state.metrics.notification_failures.inc();
                tracing::warn!(error = %e, "notification pass failed; it is retried");
                // Retried at the idle pace, not on every append.
                tokio::time::sleep(NOTIFIER_IDLE_POLL).await;
                false
            }
            Err(e) => {
                state.metrics.notification_failures.inc();
                tracing::error!(error = %e, "notification pass panicked; it is retried");
                tokio::time::sleep(NOTIFIER_IDLE_POLL).await;
                false
            }
        };
        state
            .metrics
            .notification_skipped
            .inc_by(state.notifier.take_skipped());
        if caught_up {
            let _ = tokio::time::timeout(NOTIFIER_IDLE_POLL, state.appended.notified()).await;
            tokio::time::sleep_until(began + NOTIFIER_MIN_GAP).await;
        }
    }
}

/// Removes finished notification deliveries past their retention
/// (`delivery.retain_delivered`, `delivery.retain_dead`), on a blocking
/// thread, every quarter of the shorter retention (at least every 10
/// minutes, at most every second).
async fn prune_outbox(state: AppState) {
    let retention = state.config.outbox_retention();
    let shorter = Duration::from_millis(retention.delivered_ms.min(retention.dead_ms) as u64);
    let every = (shorter / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outbox = state.outbox.clone();
        let pruned = tokio::task::spawn_blocking(move || outbox.prune(now_ms(), retention)).await;
        match pruned {
            Ok(Ok(p)) => {
                for (result, n) in [("delivered", p.delivered), ("dead", p.dead)] {
                    state
                        .metrics
                        .notification_pruned
                        .get_or_create(&crate::metrics::ResultLabel { result })
                        .inc_by(n);
                }
                if p != cts_smn::Pruned::default() {
                    tracing::info!(
                        delivered = p.delivered,
                        dead = p.dead,
                        messages = p.messages,
                        "notification outbox pruned"
                    );
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "notification outbox not pruned; retried"),
            Err(e) => tracing::error!(error = %e, "notification outbox pruning panicked"),
        }
    }
}

/// Streams to the LTS sinks: a pass every `lts.interval`, at once again
/// while passes send full batches.
async fn run_lts(state: AppState) {
    let mut ticks = tokio::time::interval(state.lts.settings().interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut more = false;
    loop {
        if !more {
            ticks.tick().await;
        }
        let now = now_ms();
        more = match state.lts.run_once(now).await {
            Ok(more) => more,
            Err(e) => {
                tracing::warn!(error = %e, "lts pass failed; it is retried");
                false
            }
        };
        state.metrics.lts_skipped.inc_by(state.lts.take_skipped());
        if more {
            continue;
        }
        match state.lts.metrics(now).await {
            Ok(sinks) => state.metrics.add_lts(&sinks),
            Err(e) => tracing::warn!(error = %e, "lts metrics not read"),
        }
    }
}

/// The delivery of notification messages: runs until aborted. Fails when
/// the SMTP settings do not make a sender.
fn deliver_notifications(state: AppState) -> std::io::Result<impl Future<Output = ()>> {
    let metrics_state = state.clone();
    let on_outcome: cts_smn::OnOutcome = Arc::new(move |o: cts_smn::Outcome| {
        metrics_state
            .metrics
            .notification_deliveries
            .get_or_create(&crate::metrics::ResultLabel { result: o.as_str() })
            .inc();
    });
    let deliverer = cts_smn::Deliverer::new(
        state.topics.clone(),
        state.outbox.clone(),
        state.consumers.clone(),
        state.config.delivery_config(),
        on_outcome,
    )
    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(Arc::new(deliverer).run())
}

/// Records how many refused credentials each address sent in its ended
/// rate-limit window.
async fn summarize_refusals(state: AppState) {
    let mut ticks = tokio::time::interval(state.refusals.sweep_interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let ended = state.refusals.ended(std::time::Instant::now(), now_ms());
        for summary in ended {
            crate::audit::spawn(&state, summary.event());
        }
    }
}

/// Makes what the operation catalog learned durable, every few seconds (a
/// flush with nothing new costs nothing).
async fn flush_catalog(state: AppState) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(5));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        flush_catalog_once(state.clone()).await;
    }
}

async fn flush_catalog_once(state: AppState) {
    let catalog = state.catalog.clone();
    let outcome = tokio::task::spawn_blocking(move || catalog.flush(now_ms()))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    if let Err(e) = outcome {
        // Nothing is lost: the entries stay pending for the next flush.
        tracing::warn!(error = %e, "could not flush the operation catalog");
    }
}

/// Loads the certificate chain and key named by the configuration.
pub async fn load_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<RustlsConfig> {
    // One process-wide provider; a second install (tests) is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    RustlsConfig::from_pem_file(cert, key).await
}

/// The lease (consumer, key) a node holds to run retention passes: on
/// PostgreSQL one node at a time, since two passes on one day would trip
/// over each other's detach; always held on the embedded store.
const RETENTION_LEASE: (&str, &str) = ("retention", "days");

/// Every `store.retention_check_interval`, drops what is older than the
/// retention window, while this node holds the retention lease.
async fn enforce_retention(state: AppState) {
    let mut ticks = tokio::time::interval(state.config.store.retention_check_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let consumers = Arc::clone(&state.consumers);
        let (consumer, key) = RETENTION_LEASE;
        let claimed = tokio::task::spawn_blocking(move || consumers.claim(consumer, key))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match claimed {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!("another node holds the retention lease");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention pass skipped: its lease could not be read");
                continue;
            }
        }
        let cutoff = now_ms() - state.config.retention_ms();
        let consumers = Arc::clone(&state.consumers);
        let pass = state.with_store(move |s| {
            // Where every consumer stands now, whichever node moves it.
            consumers.hold_all(s).map_err(|e| e.to_string())?;
            s.enforce_retention(cutoff).map_err(|e| e.to_string())
        });
        match pass.await {
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
