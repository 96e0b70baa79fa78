//! The web console at `/console`: server-rendered pages (askama templates,
//! htmx for in-page updates) whose assets are compiled into `ctsd`.
//!
//! It adds no rule of its own: queries go through the API's
//! [`query_page`](crate::api::traces::query_page), changes through the
//! same [`Call`](crate::api::identity::Call) methods as the API
//! (validation, fail-closed audit), and every page asks the API's
//! [`permit`] for the permission its route would declare. Its session
//! cookie is read here only: the API authenticates headers, never cookies.

mod chart;
mod notifications;
mod overview;
mod session;
mod signin;
mod traces;
mod trackers;
mod view;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::api::base_url;
use crate::api::identity::Call;
use crate::auth::{peer_of, permit, Access, Origin, Permission};
use crate::body::read_body;
use crate::error::ApiError;
use crate::state::AppState;

pub use session::Sessions;
use session::{same_secret, Session};

/// The session cookie; its path is `/console`, so no API route gets it.
const SESSION_COOKIE: &str = "cts_console";
/// The CSRF token of the sign-in form (no session exists yet).
const LOGIN_COOKIE: &str = "cts_console_login";
/// The form field every POST carries.
const CSRF_FIELD: &str = "csrf_token";
/// Largest console form body.
const MAX_FORM_BYTES: usize = 64 << 10;

/// The console's routes, to be nested at `/console`.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(overview::show))
        .route("/login", get(signin::form).post(signin::submit))
        .route("/logout", axum::routing::post(signin::logout))
        .route("/project", get(signin::projects).post(signin::choose))
        .route("/traces", get(traces::list))
        .route("/traces/export", get(traces::export))
        .route("/trace", get(traces::detail))
        .route("/trackers", get(trackers::list).post(trackers::create))
        .route("/trackers/edit", get(trackers::edit).post(trackers::update))
        .route(
            "/trackers/confirm",
            get(trackers::confirm).post(trackers::act),
        )
        .route(
            "/notifications",
            get(notifications::index).post(notifications::create),
        )
        .route(
            "/notifications/edit",
            get(notifications::edit).post(notifications::update),
        )
        .route(
            "/notifications/confirm",
            get(notifications::confirm).post(notifications::act),
        )
        .route("/notifications/dry-run", get(notifications::dry_run))
        .route("/assets/{name}", get(asset))
        .layer(from_fn_with_state(state, guard))
}

/// A signed-in request: its session id and session.
#[derive(Clone)]
pub struct Signed {
    pub id: String,
    pub session: Session,
    /// The posted form (its CSRF token checked), for POST requests.
    pub form: Vec<(String, String)>,
}

impl Signed {
    /// The value of form field `name` (empty when absent).
    pub fn field(&self, name: &str) -> &str {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The chosen project (pages need one; [`guard`] sends the user to
    /// choose before).
    pub fn project(&self) -> &str {
        self.session.project().unwrap_or_default()
    }
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for the console: HttpOnly, SameSite=Strict, and
/// Secure when the server speaks TLS.
fn set_cookie(state: &AppState, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if state.config.tls.cert.is_some() {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).expect("cookie values are hex")
}

/// Every console request passes here: assets are public; the sign-in page
/// needs no session; everything else needs a live one (and a chosen
/// project); every POST needs the form's CSRF token.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Nested at `/console`, the router sees the path without it.
    let path = req.uri().path();
    let path = path.strip_prefix("/console").unwrap_or(path).to_string();
    if path.starts_with("/assets/") {
        return next.run(req).await;
    }
    let login = path == "/login";
    let session = cookie(req.headers(), SESSION_COOKIE)
        .and_then(|id| state.console.get(id).map(|s| (id.to_string(), s)));
    let (mut parts, body) = req.into_parts();
    let mut form = Vec::new();
    if parts.method == Method::POST {
        let bytes = match read_body(body, MAX_FORM_BYTES, 0).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
        form = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes).unwrap_or_default();
        let expected = if login {
            cookie(&parts.headers, LOGIN_COOKIE).map(str::to_string)
        } else {
            session.as_ref().map(|(_, s)| s.csrf_token.clone())
        };
        let sent = form.iter().find(|(k, _)| k == CSRF_FIELD).map(|(_, v)| v);
        let valid = matches!((&expected, sent), (Some(e), Some(s)) if same_secret(e, s));
        if !valid {
            return ApiError::Forbidden(format!(
                "{CSRF_FIELD}: must be the token of this console session's form \
                 (reload the page and submit it again)"
            ))
            .into_response();
        }
    }
    if login {
        parts.extensions.insert(form);
        return next.run(Request::from_parts(parts, Body::empty())).await;
    }
    let Some((id, session)) = session else {
        if parts.method == Method::GET {
            return Redirect::to("/console/login").into_response();
        }
        return ApiError::Unauthenticated(crate::auth::AuthFailure {
            reason: "console_session",
            message: "the console session has ended: sign in again".into(),
        })
        .into_response();
    };
    let choosing = path == "/project" || path == "/logout";
    if session.project().is_none() && !choosing {
        return Redirect::to("/console/project").into_response();
    }
    parts.extensions.insert(Signed { id, session, form });
    next.run(Request::from_parts(parts, Body::empty())).await
}

/// Where a console request came from: its traces are console actions.
pub fn origin(headers: &HeaderMap, peer: Option<std::net::SocketAddr>) -> Origin {
    Origin {
        console: true,
        ..Origin::of(headers, peer)
    }
}

/// Where a console request came from, apart from its body (not `Sync`),
/// so that it can be held across awaits.
pub struct Source {
    headers: HeaderMap,
    peer: Option<std::net::SocketAddr>,
}

impl Source {
    pub fn of(req: &Request) -> Source {
        Source {
            headers: req.headers().clone(),
            peer: peer_of(req),
        }
    }

    /// The caller of an API call made from the console: the session's
    /// user, from this address, as a console action.
    pub fn call(&self, state: &AppState, s: &Signed) -> Call {
        Call {
            state: state.clone(),
            caller: s.session.principal.clone(),
            origin: origin(&self.headers, self.peer),
            base: base_url(state, &self.headers),
        }
    }
}

/// Whether the session's user has `permission` on its project: the check
/// the API's routes declare, run off the async workers.
pub async fn allowed(state: &AppState, s: &Signed, permission: Permission) -> Result<(), ApiError> {
    let (state, principal, project) = (
        state.clone(),
        s.session.principal.clone(),
        s.project().to_string(),
    );
    tokio::task::spawn_blocking(move || {
        permit(
            &state,
            &principal,
            Access::Project(permission),
            Some(&project),
            None,
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// The action a confirmation form names.
pub fn action(a: Option<&str>) -> Result<&'static str, ApiError> {
    match a {
        Some("enable") => Ok("enable"),
        Some("disable") => Ok("disable"),
        Some("delete") => Ok("delete"),
        _ => Err(ApiError::BadRequest {
            field: "action",
            rule: "must be enable, disable or delete".into(),
        }),
    }
}

/// Back to `page` after a change, which it names (`?done=`).
pub fn done(page: &str, what: &str) -> Response {
    let q = serde_urlencoded::to_string([("done", what)]).unwrap_or_default();
    Redirect::to(&format!("{page}?{q}")).into_response()
}

/// A refused change shown on its form: the API's code and message.
fn refusal(e: &ApiError) -> String {
    format!("{}: {e}", e.code())
}

/// The answer to a change a form made through the API: back to `page`
/// with the notice `made` writes, or, refused, the form again (`again`,
/// given the refusal) with the API's status.
pub async fn answer<T, P, F>(
    result: Result<T, ApiError>,
    page: &str,
    made: impl FnOnce(&T) -> String,
    again: impl FnOnce(String) -> F,
) -> Result<Response, PageError>
where
    P: askama::Template,
    F: std::future::Future<Output = Result<P, PageError>>,
{
    match result {
        Ok(t) => Ok(done(page, &made(&t))),
        Err(e) => {
            let status = e.status();
            let form = again(refusal(&e)).await?;
            Ok((status, view::html(&form)).into_response())
        }
    }
}

/// The compiled-in assets.
async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match name.as_str() {
        "htmx.min.js" => (
            include_bytes!("../../assets/console/htmx.min.js"),
            "text/javascript",
        ),
        "console.css" => (
            include_bytes!("../../assets/console/console.css"),
            "text/css",
        ),
        _ => return ApiError::NotFound.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// An error shown as a page: the CTS code and message, with the status
/// the API would answer.
pub struct PageError(pub ApiError);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(e: E) -> PageError {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = e.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = ?e, "console page failed");
        }
        let page = view::ErrorPage {
            code: e.code(),
            message: e.to_string(),
        };
        (status, view::html(&page)).into_response()
    }
}
