//! Sign-in with the identity store's user name and password (behind the
//! same login throttle as `POST /v3/auth/tokens`), the project choice,
//! and sign-out. Every sign-in, failed or not, is a trace.

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::Extension;

use cts_identity::{DomainRef, Filter, User, UserRef};

use super::session::{random_token, ProjectChoice};
use super::view::{html, Chrome};
use super::{cookie, origin, set_cookie, PageError, Signed, LOGIN_COOKIE, SESSION_COOKIE};
use crate::audit::{self, AuditEvent};
use crate::auth::{peer_of, Origin, Principal, Via};
use crate::error::ApiError;
use crate::lockout;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    csrf_token: String,
    username: String,
    domain: String,
    error: Option<String>,
}

/// `GET /console/login`: the form, with a fresh CSRF token in a cookie.
pub async fn form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed_in =
        cookie(&headers, SESSION_COOKIE).is_some_and(|id| state.console.get(id).is_some());
    if signed_in {
        return Redirect::to("/console").into_response();
    }
    login_page(&state, StatusCode::OK, String::new(), String::new(), None)
}

fn login_page(
    state: &AppState,
    status: StatusCode,
    username: String,
    domain: String,
    error: Option<String>,
) -> Response {
    let token = random_token();
    let page = LoginPage {
        csrf_token: token.clone(),
        username,
        domain,
        error,
    };
    let cookie = set_cookie(state, LOGIN_COOKIE, &token, None);
    (status, [(header::SET_COOKIE, cookie)], html(&page)).into_response()
}

/// `POST /console/login`.
pub async fn submit(State(state): State<AppState>, req: Request) -> Response {
    let origin = origin(req.headers(), peer_of(&req));
    let peer = peer_of(&req);
    let form = req
        .extensions()
        .get::<Vec<(String, String)>>()
        .cloned()
        .unwrap_or_default();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let (username, password, domain) = (field("username"), field("password"), field("domain"));
    let again = |status, error: String| {
        login_page(
            &state,
            status,
            username.clone(),
            domain.clone(),
            Some(error),
        )
    };
    for (name, value) in [
        ("username", &username),
        ("password", &password),
        ("domain", &domain),
    ] {
        if value.is_empty() {
            return again(StatusCode::BAD_REQUEST, format!("{name}: is required"));
        }
    }
    let user_ref = UserRef::Name {
        name: username.clone(),
        domain: DomainRef::Name(domain.clone()),
    };
    let checked = lockout::sign_in(&state, user_ref, password, username.clone(), peer).await;
    let user = match checked {
        Ok(Ok(user)) => user,
        Ok(Err(e)) => {
            let why = e.to_string();
            record_failure(&state, &username, &domain, &origin, why).await;
            let msg = "the user name, domain or password is wrong";
            return again(StatusCode::UNAUTHORIZED, msg.into());
        }
        Err(e) => return again(e.status(), format!("{}: {e}", e.code())),
    };
    match start_session(&state, &user, &origin).await {
        Ok((id, chosen)) => {
            let to = if chosen {
                "/console"
            } else {
                "/console/project"
            };
            // Appended: two cookies, one header name.
            let headers = AppendHeaders([
                (
                    header::SET_COOKIE,
                    set_cookie(&state, SESSION_COOKIE, &id, None),
                ),
                (
                    header::SET_COOKIE,
                    set_cookie(&state, LOGIN_COOKIE, "", Some(0)),
                ),
            ]);
            (headers, Redirect::to(to)).into_response()
        }
        Err(e) => again(e.status(), format!("{}: {e}", e.code())),
    }
}

/// The projects of `user`'s domain it holds a role on (directly or
/// through a group), as the API's authorization reads roles.
fn projects_of(state: &AppState, user: &User) -> Result<Vec<ProjectChoice>, ApiError> {
    let filter = Filter {
        domain_id: Some(user.domain_id.clone()),
        ..Filter::default()
    };
    let mut out = Vec::new();
    for p in state.identity.list_projects(&filter)? {
        if !state.identity.effective_roles(&user.id, &p.id)?.is_empty() {
            out.push((p.id, p.name));
        }
    }
    Ok(out)
}

/// Records the sign-in and opens the session; answers its id and whether
/// its project is chosen (the user has only one).
async fn start_session(
    state: &AppState,
    user: &User,
    origin: &Origin,
) -> Result<(String, bool), ApiError> {
    let (st, u) = (state.clone(), user.clone());
    let (projects, domain, home) = tokio::task::spawn_blocking(move || {
        let projects = projects_of(&st, &u)?;
        let domain = st.identity.get_domain(&u.domain_id)?;
        let home = audit::home_project(&st, &u.id, &u.domain_id, None);
        Ok::<_, ApiError>((projects, domain, home))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let chosen = match projects.as_slice() {
        [(only, _)] => Some(only.clone()),
        _ => None,
    };
    let principal = Principal {
        user_id: user.id.clone(),
        user_name: user.name.clone(),
        domain_id: domain.id,
        domain_name: domain.name,
        access_key_id: None,
        project_scope: chosen.clone(),
        via: Via::Console,
    };
    let no_role = "the user holds no role on any project: ask an administrator for one";
    let project = chosen.clone().or(home);
    let project = match (project, projects.is_empty()) {
        (Some(p), false) => p,
        (p, _) => {
            if let Some(p) = p {
                let mut event = sign_in_event(&p, origin, &principal, 403);
                event.message = Some(no_role.into());
                audit::refused(state, event);
            }
            return Err(ApiError::Forbidden(no_role.into()));
        }
    };
    // Fail closed: no session whose sign-in is not on record.
    audit::record(state, sign_in_event(&project, origin, &principal, 200)).await?;
    let id = state.console.create(principal, projects);
    Ok((id, chosen.is_some()))
}

fn sign_in_event(project: &str, origin: &Origin, p: &Principal, code: u16) -> AuditEvent {
    AuditEvent::new(project, "IAM", "user", "login", origin)
        .by(p)
        .resource(Some(&p.user_id), Some(&p.user_name))
        .outcome(code, None)
}

/// Records a failed sign-in in the user's home project (or the domain's
/// first one, for an unknown user), rate-limited like every refusal.
async fn record_failure(
    state: &AppState,
    username: &str,
    domain: &str,
    origin: &Origin,
    why: String,
) {
    let (st, name, dom) = (state.clone(), username.to_string(), domain.to_string());
    let found = tokio::task::spawn_blocking(move || {
        let domain = st.identity.find_domain(&DomainRef::Name(dom)).ok()?;
        let user = st
            .identity
            .find_user(&UserRef::Name {
                name,
                domain: DomainRef::Id(domain.id.clone()),
            })
            .ok();
        let user_id = user.as_ref().map(|u| u.id.clone()).unwrap_or_default();
        let project = audit::home_project(&st, &user_id, &domain.id, None)?;
        Some((project, user, domain))
    })
    .await
    .ok()
    .flatten();
    let Some((project, user, domain)) = found else {
        return;
    };
    let mut event = AuditEvent::failed_authentication(
        &project,
        origin,
        None,
        user.as_ref().map(|u| (u, &domain)),
        &why,
    )
    .resource(user.as_ref().map(|u| u.id.as_str()), Some(username));
    event.resource_type = "user";
    event.trace_name = "login";
    audit::refused(state, event);
}

/// `POST /console/logout`.
pub async fn logout(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    req: Request,
) -> Response {
    if let Some(ended) = state.console.end(&s.id) {
        let origin = origin(req.headers(), peer_of(&req));
        let p = &ended.principal;
        let project = p
            .project_scope
            .clone()
            .or_else(|| ended.projects.first().map(|(id, _)| id.clone()));
        if let Some(project) = project {
            let event = AuditEvent::new(&project, "IAM", "user", "logout", &origin)
                .by(p)
                .resource(Some(&p.user_id), Some(&p.user_name));
            audit::spawn(&state, event);
        }
    }
    let gone = set_cookie(&state, SESSION_COOKIE, "", Some(0));
    ([(header::SET_COOKIE, gone)], Redirect::to("/console/login")).into_response()
}

#[derive(Template)]
#[template(path = "console/projects.html")]
struct ProjectsPage {
    chrome: Chrome,
    projects: Vec<ProjectChoice>,
    current: String,
}

/// `GET /console/project`: the projects the user may work in.
pub async fn projects(Extension(s): Extension<Signed>) -> Response {
    let page = ProjectsPage {
        chrome: Chrome::of(&s, "Choose a project", "project", false),
        projects: s.session.projects.clone(),
        current: s.project().to_string(),
    };
    html(&page).into_response()
}

/// `POST /console/project`.
pub async fn choose(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
) -> Result<Response, PageError> {
    let project = s.field("project");
    if !state.console.choose_project(&s.id, project) {
        return Err(PageError(ApiError::BadRequest {
            field: "project",
            rule: "must be a project you hold a role on".into(),
        }));
    }
    Ok(Redirect::to("/console").into_response())
}
