//! The accept loop: one task per connection, with the limits of
//! `[limits]` — how many connections, how long a request head, a body
//! pause and an idle keep-alive connection may take — and a shutdown that
//! waits for requests in flight at most `limits.shutdown_grace`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use crate::config::Limits;
use crate::error::ApiError;

/// Connections beyond `max_connections` that are still answered (503)
/// rather than closed at once.
const REFUSALS_ANSWERED: usize = 64;

/// How long an over-limit connection may take to send the request its 503
/// answers.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// What every connection task shares.
struct Shared {
    router: Router,
    limits: Limits,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
}

/// Accepts connections on `listener` and serves `router` on them until
/// `shutdown` completes; then stops accepting, lets the requests in flight
/// finish (at most `limits.shutdown_grace`) and returns.
pub async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let grace = limits.shutdown_grace;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_ANSWERED));
    let shared = Arc::new(Shared {
        router,
        limits,
        builder,
        tls,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a sender; all gone = all finished.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather
                    // than spin; the connections already open go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let alive = alive_tx.clone();
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                serve_one(&shared, tcp, peer, stop).await;
                drop((slot, alive));
            });
        } else if let Ok(refusal) = refusals.clone().try_acquire_owned() {
            tokio::spawn(async move {
                let refuse = refuse_one(&shared, tcp);
                let _ = tokio::time::timeout(REFUSAL_TIMEOUT, refuse).await;
                drop((refusal, alive));
            });
        } else {
            tracing::warn!(%peer, "too many connections: closed without an answer");
        }
    }
    drop(listener);
    drop(alive_tx);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(grace, alive_rx.recv()).await.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs_f64(),
            "requests still in flight after the shutdown grace: stopping anyway"
        );
    }
}

/// Serves one connection until it closes, is idle for `idle_timeout`, or
/// the server stops (after the request in flight).
async fn serve_one(
    shared: &Shared,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let limits = &shared.limits;
    let activity = Arc::new(Activity::default());
    let router = shared.router.clone();
    let body_timeout = limits.body_read_timeout;
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let req = req.map(|b| axum::body::Body::new(TimeoutBody::new(body_timeout, b)));
        let guard = seen.begin();
        let router = router.clone();
        async move {
            let response = router.oneshot(req).await;
            drop(guard);
            response
        }
    });
    let io = match handshake(shared, tcp).await {
        Some(io) => io,
        None => return,
    };
    let conn = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut check = tokio::time::interval(check_period(limits.idle_timeout));
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = check.tick(), if !closing => {
                if activity.idle_for() >= limits.idle_timeout {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Answers the first request of an over-limit connection with 503.
async fn refuse_one(shared: &Shared, tcp: tokio::net::TcpStream) {
    let max = shared.limits.max_connections;
    let Some(io) = handshake(shared, tcp).await else {
        return;
    };
    let service = hyper::service::service_fn(move |_req: hyper::Request<Incoming>| async move {
        Ok::<_, Infallible>(ApiError::TooManyConnections { max }.into_response())
    });
    let _ = shared
        .builder
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// A connection's byte stream: TCP, or TLS over it (whose handshake has
/// `header_read_timeout`).
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn handshake(shared: &Shared, tcp: tokio::net::TcpStream) -> Option<Box<dyn Stream>> {
    let Some(acceptor) = &shared.tls else {
        return Some(Box::new(tcp));
    };
    match tokio::time::timeout(shared.limits.header_read_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(Box::new(tls)),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// How often a connection looks at its idle time.
fn check_period(idle_timeout: Duration) -> Duration {
    (idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// Requests in flight on a connection and when the last one ended.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the end of the last request.
    last_end_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Activity>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Zero while a request is being handled.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        let last_end = Duration::from_millis(self.last_end_ms.load(Ordering::SeqCst));
        self.opened.elapsed().saturating_sub(last_end)
    }
}

/// A request being handled; its drop marks the end.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.opened.elapsed().as_millis() as u64;
        self.0.last_end_ms.store(now, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
