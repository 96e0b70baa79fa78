//! Keystone v3 tokens: `POST /v3/auth/tokens` (password method), checking
//! and revoking with `X-Subject-Token`, and `GET /v3/auth/projects`.
//!
//! The token body is what keystoneauth and openstacksdk read: `expires_at`,
//! `project`, `roles`, and a catalog whose `cts`, `ctsv2` and `ctsv3`
//! entries point at this server (see docs/sdk-compat-notes.md).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use cts_identity::{
    DomainRef, Filter, IdentityError, Project, ProjectRef, ScopeInfo, TokenInfo, TokenScope,
    UserRef,
};

use crate::api::base_url;
use crate::api::identity::{parse_body, project_json};
use crate::audit::{self, AuditEvent};
use crate::auth::{is_domain_admin, peer_of, validate_token, AuthFailure, Origin, Principal};
use crate::error::ApiError;
use crate::lockout;
use crate::metrics::ReasonLabel;
use crate::state::{now_ms, AppState};

const SUBJECT_TOKEN: &str = "x-subject-token";

#[derive(Deserialize)]
struct TokenRequest {
    auth: AuthBody,
}

#[derive(Deserialize)]
struct AuthBody {
    identity: IdentityBody,
    scope: Option<ScopeBody>,
}

#[derive(Deserialize)]
struct IdentityBody {
    methods: Vec<String>,
    password: Option<PasswordBody>,
}

#[derive(Deserialize)]
struct PasswordBody {
    user: UserBody,
}

#[derive(Deserialize)]
struct UserBody {
    id: Option<String>,
    name: Option<String>,
    password: String,
    domain: Option<NamedRef>,
}

#[derive(Deserialize)]
struct NamedRef {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct ScopeBody {
    project: Option<ProjectScope>,
    domain: Option<NamedRef>,
}

#[derive(Deserialize)]
struct ProjectScope {
    id: Option<String>,
    name: Option<String>,
    domain: Option<NamedRef>,
}

#[derive(Deserialize)]
pub struct TokenParams {
    nocatalog: Option<String>,
}

fn bad(field: &'static str, rule: &str) -> ApiError {
    ApiError::BadRequest {
        field,
        rule: rule.to_string(),
    }
}

fn domain_ref(d: Option<NamedRef>, field: &'static str) -> Result<DomainRef, ApiError> {
    match d {
        Some(NamedRef { id: Some(id), .. }) => Ok(DomainRef::Id(id)),
        Some(NamedRef {
            name: Some(name), ..
        }) => Ok(DomainRef::Name(name)),
        _ => Err(bad(field, "must give the domain's id or name")),
    }
}

/// What the request asks to be scoped to.
enum Scope {
    Project(ProjectRef),
    Domain(DomainRef),
    Unscoped,
}

fn scope_of(scope: Option<ScopeBody>) -> Result<Scope, ApiError> {
    let Some(scope) = scope else {
        return Ok(Scope::Unscoped);
    };
    match (scope.project, scope.domain) {
        (Some(p), None) => match (p.id, p.name) {
            (Some(id), _) => Ok(Scope::Project(ProjectRef::Id(id))),
            (None, Some(name)) => Ok(Scope::Project(ProjectRef::Name {
                name,
                domain: domain_ref(p.domain, "auth.scope.project.domain")?,
            })),
            (None, None) => Err(bad(
                "auth.scope.project",
                "must give the project's id, or its name and domain",
            )),
        },
        (None, Some(d)) => Ok(Scope::Domain(domain_ref(Some(d), "auth.scope.domain")?)),
        (None, None) => Ok(Scope::Unscoped),
        (Some(_), Some(_)) => Err(bad(
            "auth.scope",
            "must name a project or a domain, not both",
        )),
    }
}

/// `POST /v3/auth/tokens`.
pub async fn issue(
    State(state): State<AppState>,
    Query(params): Query<TokenParams>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let peer = peer_of(&req);
    let origin = Origin::of(&headers, peer);
    let request: TokenRequest = parse_body(&state, req.into_body()).await?;
    let AuthBody { identity, scope } = request.auth;
    if !identity.methods.iter().any(|m| m == "password") {
        return Err(bad(
            "auth.identity.methods",
            "must include \"password\" (the only method this server supports)",
        ));
    }
    let password = identity.password.ok_or_else(|| {
        bad(
            "auth.identity.password",
            "is mandatory with the password method",
        )
    })?;
    let user = password.user;
    let user_ref = match (user.id, user.name) {
        (Some(id), _) => UserRef::Id(id),
        (None, Some(name)) => {
            let domain = domain_ref(user.domain, "auth.identity.password.user.domain")?;
            UserRef::Name { name, domain }
        }
        (None, None) => {
            return Err(bad(
                "auth.identity.password.user",
                "must give the user's id, or its name and domain",
            ))
        }
    };
    let scope = scope_of(scope)?;

    // For the log of a lockout: what the request named the user by.
    let named = match &user_ref {
        UserRef::Id(id) => id.clone(),
        UserRef::Name { name, .. } => name.clone(),
    };
    let authenticated = lockout::sign_in(&state, user_ref, user.password, named, peer).await?;
    let user = match authenticated {
        Ok(user) => user,
        Err(e) => {
            state
                .metrics
                .auth_failures
                .get_or_create(&ReasonLabel {
                    reason: "invalid_credentials",
                })
                .inc();
            if let Ok(project) = resolve_project(&state, &scope) {
                let event = AuditEvent::new(&project.id, "IAM", "token", "createToken", &origin)
                    .outcome(401, None);
                let mut event = event;
                event.message = Some(e.to_string());
                audit::refused(&state, event);
            }
            return Err(ApiError::Unauthenticated(AuthFailure {
                reason: "invalid_credentials",
                message: "the user name, domain or password is wrong".into(),
            }));
        }
    };

    let token_scope = match &scope {
        Scope::Unscoped => TokenScope::Unscoped,
        Scope::Domain(d) => {
            let domain = state.identity.find_domain(d).map_err(not_authorized)?;
            if domain.id != user.domain_id {
                return Err(not_authorized(()));
            }
            TokenScope::Domain(domain.id)
        }
        Scope::Project(_) => {
            let project = resolve_project(&state, &scope).map_err(not_authorized)?;
            TokenScope::Project(project.id)
        }
    };
    let ttl = state.config.auth.token_ttl;
    // As Keystone: a token is scoped only to a project the user holds a
    // role on.
    let (token, info) = state
        .identity
        .issue_token(&user.id, &token_scope, &["password"], ttl, now_ms())
        .map_err(|e| match e {
            IdentityError::ScopeNotAllowed => not_authorized(e),
            other => ApiError::from(other),
        })?;
    state.metrics.tokens_issued.inc();
    let body = token_body(&state, &headers, &info, params.nocatalog.is_none())?;
    if let Some(project) = audit_project(&state, &info) {
        let principal = Principal::of_token(&info);
        let event = AuditEvent::new(&project, "IAM", "token", "createToken", &origin)
            .by(&principal)
            .resource(Some(&info.user_id), Some(&info.user_name))
            .outcome(201, None);
        // Fail closed: a token whose issue is not on record is withdrawn.
        if let Err(e) = audit::record(&state, event).await {
            if let Err(r) = state.identity.revoke_token(&token) {
                tracing::error!(error = %r, "could not withdraw an unaudited token");
            }
            return Err(e);
        }
    }
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response.headers_mut().insert(
        SUBJECT_TOKEN,
        HeaderValue::from_str(&token).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(response)
}

/// Keystone answers 401 for every scope it will not grant, whatever the
/// reason, so that scopes cannot be probed.
fn not_authorized<E>(_: E) -> ApiError {
    ApiError::Unauthenticated(AuthFailure {
        reason: "scope_denied",
        message: "the user has no role on the requested scope".into(),
    })
}

fn resolve_project(state: &AppState, scope: &Scope) -> Result<Project, ApiError> {
    match scope {
        Scope::Project(p) => Ok(state.identity.find_project(p)?),
        _ => Err(ApiError::ResourceNotFound {
            what: "project",
            id: String::new(),
        }),
    }
}

/// The project a token's audit trace goes to.
fn audit_project(state: &AppState, info: &TokenInfo) -> Option<String> {
    let scope = info.project().map(|p| p.id.as_str());
    audit::home_project(state, &info.user_id, &info.domain_id, scope)
}

/// Keystone's ISO 8601 with microseconds.
pub fn iso_time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

fn token_body(
    state: &AppState,
    headers: &HeaderMap,
    info: &TokenInfo,
    with_catalog: bool,
) -> Result<Value, ApiError> {
    let domain = json!({"id": info.domain_id, "name": info.domain_name});
    let mut token = json!({
        "methods": info.methods,
        "expires_at": iso_time(info.expires_at),
        "issued_at": iso_time(info.issued_at),
        "user": {
            "id": info.user_id,
            "name": info.user_name,
            "domain": domain,
            "password_expires_at": null,
        },
    });
    match info.project() {
        Some(p) => {
            let roles = state.identity.effective_roles(&info.user_id, &p.id)?;
            let stored = state.identity.list_roles()?;
            let roles: Vec<Value> = stored
                .iter()
                .filter(|r| roles.contains(r.role))
                .map(|r| json!({"id": r.id, "name": r.role.name()}))
                .collect();
            token["project"] = json!({
                "id": p.id,
                "name": p.name,
                "domain": {"id": p.domain_id, "name": p.domain_name},
            });
            token["roles"] = json!(roles);
            if with_catalog {
                let project = state.identity.get_project(&p.id)?;
                token["catalog"] = catalog(&base_url(state, headers), &project);
            }
        }
        None => {
            if let ScopeInfo::Domain { id, name } = &info.scope {
                token["domain"] = json!({"id": id, "name": name});
            }
            token["roles"] = json!([]);
            if with_catalog {
                token["catalog"] = json!([]);
            }
        }
    }
    Ok(json!({ "token": token }))
}

/// The service catalog of a project: the identity API and the three CTS
/// API versions, all on this server.
fn catalog(base: &str, project: &Project) -> Value {
    let entry = |kind: &str, name: &str, url: String| {
        json!({
            "id": format!("{kind}-service"),
            "type": kind,
            "name": name,
            "endpoints": [{
                "id": format!("{kind}-public"),
                "interface": "public",
                "region": project.region,
                "region_id": project.region,
                "url": url,
            }],
        })
    };
    let pid = &project.id;
    json!([
        entry("identity", "keystone", format!("{base}/v3")),
        entry("iam", "iam", format!("{base}/v3.0")),
        entry("cts", "cts", format!("{base}/v1.0/{pid}")),
        entry("ctsv2", "ctsv2", format!("{base}/v2.0/{pid}")),
        entry("ctsv3", "ctsv3", format!("{base}/v3/{pid}")),
    ])
}

/// The token named by `X-Subject-Token`.
fn subject(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(SUBJECT_TOKEN)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad("X-Subject-Token", "is mandatory: the token to check"))
}

/// What the subject token stands for, if the caller may see it: its own,
/// or any of its domain for an identity admin.
async fn subject_info(
    state: &AppState,
    caller: &Principal,
    headers: &HeaderMap,
) -> Result<TokenInfo, ApiError> {
    let token = subject(headers)?;
    let missing = || ApiError::ResourceNotFound {
        what: "token",
        id: "(X-Subject-Token)".into(),
    };
    let info = validate_token(state, token).await.map_err(|_| missing())?;
    let own = info.user_id == caller.user_id;
    let admin = info.domain_id == caller.domain_id && is_domain_admin(state, caller)?;
    if own || admin {
        Ok(info)
    } else {
        Err(missing())
    }
}

/// `GET` and `HEAD /v3/auth/tokens`.
pub async fn check(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Query(params): Query<TokenParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let info = subject_info(&state, &caller, &headers).await?;
    let body = token_body(&state, &headers, &info, params.nocatalog.is_none())?;
    let mut response = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(subject(&headers)?) {
        response.headers_mut().insert(SUBJECT_TOKEN, v);
    }
    Ok(response)
}

/// `DELETE /v3/auth/tokens`.
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Extension(origin): Extension<Origin>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let info = subject_info(&state, &caller, &headers).await?;
    // Recorded first: a revocation not on record is not made.
    if let Some(project) = audit_project(&state, &info) {
        let event = AuditEvent::new(&project, "IAM", "token", "revokeToken", &origin)
            .by(&caller)
            .resource(Some(&info.user_id), Some(&info.user_name))
            .outcome(204, None);
        audit::record(&state, event).await?;
    }
    state.identity.revoke_token(subject(&headers)?)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v3/auth/projects`: the projects the caller holds a role on.
pub async fn my_projects(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let base = base_url(&state, &headers);
    let mut projects = Vec::new();
    let filter = Filter {
        domain_id: Some(caller.domain_id.clone()),
        ..Filter::default()
    };
    for p in state.identity.list_projects(&filter)? {
        if !state
            .identity
            .effective_roles(&caller.user_id, &p.id)?
            .is_empty()
        {
            projects.push(project_json(&base, &p));
        }
    }
    Ok(Json(json!({
        "projects": projects,
        "links": {"self": format!("{base}/v3/auth/projects"), "previous": null, "next": null},
    })))
}
