//! Who is calling, and may they: authentication (`X-Auth-Token` or an
//! `SDK-HMAC-SHA256` signature) and the permission every route declares.
//!
//! Each route is registered with an [`Access`]; the [`authorize`]
//! middleware runs before its handler, so no handler can forget the check.
//! A denied request learns nothing about the project it asked about: the
//! answer for "no such project" and "not yours" is the same 403.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cts_identity::{Filter, IdentityError, Role, RoleSet, TokenInfo};

use crate::audit::{self, AuditEvent};
use crate::body::read_body;
use crate::error::ApiError;
use crate::metrics::{CodeLabel, ReasonLabel, RouteLabel};
use crate::state::AppState;

/// What a role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Query traces and read CTS settings.
    CtsRead,
    /// Change CTS settings (trackers, notifications, keys).
    CtsWrite,
    /// Report traces.
    TraceReport,
    /// Manage the identities (projects, users, groups, keys) of a domain:
    /// only `admin` assigned on the domain grants it, never `admin` on a
    /// project.
    IdentityManage,
}

impl Permission {
    /// The roles that grant this permission, for the error message.
    fn granted_by(self) -> &'static [Role] {
        match self {
            Permission::CtsRead => &[Role::CtsAdmin, Role::CtsViewer],
            Permission::CtsWrite => &[Role::CtsAdmin],
            Permission::TraceReport => &[Role::CtsAdmin, Role::CtsReporter],
            Permission::IdentityManage => &[Role::Admin],
        }
    }

    pub fn allowed(self, roles: &RoleSet) -> bool {
        self.granted_by().iter().any(|r| roles.contains(*r))
    }
}

/// The access a route declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential needed (health, version documents, token issue).
    Public,
    /// `/metrics`: public or not as `metrics.public` says.
    Metrics,
    /// Any valid credential (checking or revoking a token).
    Authenticated,
    /// The permission on the project named by the path's `project_id`.
    Project(Permission),
    /// The permission in the caller's own domain (identity management).
    Domain(Permission),
    /// The permission in the domain named by the path (its `project_id`
    /// segment), which must be the caller's.
    OwnDomain(Permission),
    /// The role assignments on the project named by the path's `id`: a
    /// domain admin, or `admin` on that project.
    ProjectRoles,
    /// A change of the user named by the path's `id`: a domain admin, or
    /// the `admin` of every project on which that user holds a role (a user
    /// with a domain role, or with no role at all: domain admins only).
    UserChange,
}

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Token,
    Signature,
    /// A signed-in console session (`/console` only).
    Console,
}

/// The authenticated caller, put into the request's extensions for the
/// handlers (audit traces, identity management).
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub user_name: String,
    pub domain_id: String,
    pub domain_name: String,
    pub access_key_id: Option<String>,
    /// The one project this credential may act on: a token's project
    /// scope, or a signed request's `X-Project-Id`.
    pub project_scope: Option<String>,
    pub via: Via,
}

impl Principal {
    pub fn of_token(t: &TokenInfo) -> Principal {
        Principal {
            user_id: t.user_id.clone(),
            user_name: t.user_name.clone(),
            domain_id: t.domain_id.clone(),
            domain_name: t.domain_name.clone(),
            access_key_id: None,
            project_scope: t.project().map(|p| p.id.clone()),
            via: Via::Token,
        }
    }
}

/// Where a request came from and with what, for audit traces.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub source_ip: String,
    pub user_agent: Option<String>,
    /// Made in the web console: its traces are `ConsoleAction`s invoked by
    /// `service.console`.
    pub console: bool,
}

impl Origin {
    pub fn of(req_headers: &HeaderMap, peer: Option<SocketAddr>) -> Origin {
        Origin {
            source_ip: peer.map(|a| a.ip().to_string()).unwrap_or_default(),
            user_agent: req_headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            console: false,
        }
    }
}

/// The peer address of a request, when the server recorded it.
pub fn peer_of(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// Why a credential was refused: the metric label and the 401 message.
#[derive(Debug)]
pub struct AuthFailure {
    pub reason: &'static str,
    pub message: String,
}

impl AuthFailure {
    fn new(reason: &'static str, message: impl Into<String>) -> AuthFailure {
        AuthFailure {
            reason,
            message: message.into(),
        }
    }
}

/// The middleware every route runs behind.
pub async fn authorize(
    State((state, access)): State<(AppState, Access)>,
    req: Request,
    next: Next,
) -> Response {
    match access {
        Access::Public => return next.run(req).await,
        // Public metrics are label-free; a scraper that sends a credential
        // is authenticated, and sees its own projects' series too.
        Access::Metrics
            if state.config.metrics.public
                && !req.headers().contains_key("x-auth-token")
                && !req.headers().contains_key(header::AUTHORIZATION) =>
        {
            return next.run(req).await
        }
        _ => {}
    }
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let response = check_and_run(&state, access, req, next).await;
    let code = response.status().as_u16();
    state
        .metrics
        .http_requests
        .get_or_create(&RouteLabel {
            method,
            route,
            code,
        })
        .inc();
    // Counted here so that refusals before the handler (credential, role,
    // body size) count too.
    if access == Access::Project(Permission::TraceReport) {
        state
            .metrics
            .report_requests
            .get_or_create(&CodeLabel { code })
            .inc();
    }
    response
}

async fn check_and_run(state: &AppState, access: Access, req: Request, next: Next) -> Response {
    let state = state.clone();
    let peer = peer_of(&req);
    let (mut parts, body) = req.into_parts();
    let origin = Origin::of(&parts.headers, peer);
    let project = path_param(&mut parts, "project_id").await;
    let target = path_param(&mut parts, "id").await;
    let claimed = claimed_access_key(&parts.headers);
    // The body stays unread unless a signature covers it; a refusal drains
    // it, so the connection stays usable for the client's next request.
    let mut body = Some(body);
    let principal = match authenticate(&state, &parts, &mut body).await {
        Ok(v) => v,
        Err(e) => {
            if let ApiError::Unauthenticated(f) = &e {
                state
                    .metrics
                    .auth_failures
                    .get_or_create(&ReasonLabel { reason: f.reason })
                    .inc();
                // The project asked about, else the home project of the
                // key's owner (a known key with a bad signature).
                let (claim, asked) = (claimed.clone(), project.clone());
                let found = identity(&state, move |state| {
                    let owner = claim.as_deref().and_then(|ak| key_owner(state, ak));
                    let concerned = asked.clone().or_else(|| {
                        let (o, _) = owner.as_ref()?;
                        audit::home_project(state, &o.id, &o.domain_id, None)
                    });
                    Ok((owner, concerned))
                })
                .await;
                if let Ok((owner, Some(project))) = found {
                    let event = AuditEvent::failed_authentication(
                        &project,
                        &origin,
                        claimed.as_deref(),
                        owner.as_ref().map(|(u, d)| (u, d)),
                        &f.message,
                    );
                    audit::refused(&state, event);
                }
            }
            drain(body, state.config.limits.max_body_bytes).await;
            return e.into_response();
        }
    };
    let caller = principal.clone();
    let permitted = identity(&state, move |state| {
        permit(
            state,
            &caller,
            access,
            project.as_deref(),
            target.as_deref(),
        )
    })
    .await;
    if let Err(e) = permitted {
        state.metrics.access_denied.inc();
        drain(body, state.config.limits.max_body_bytes).await;
        return e.into_response();
    }
    parts.extensions.insert(principal);
    parts.extensions.insert(origin);
    next.run(Request::from_parts(parts, body.unwrap_or_default()))
        .await
}

/// Runs identity lookups: here when their answers are in memory (nearly
/// always: a hop to a blocking thread and back costs a query two waits for
/// a core on a busy machine), else on a blocking thread (SQLite or
/// PostgreSQL on a cache miss, a key's last use once a minute).
async fn identity<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: Fn(&AppState) -> Result<T, ApiError> + Send + 'static,
{
    // A panic is an internal error, as it is from the blocking thread
    // below: the request is still answered and counted.
    let here = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cts_identity::from_memory(|| f(state))
    }));
    match here {
        Ok(Some(answer)) => return answer,
        Ok(None) => {}
        Err(_) => return Err(ApiError::Internal("an identity lookup panicked".into())),
    }
    let state = state.clone();
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// Reads and drops up to `limit` bytes of an unread body (for at most a
/// few seconds): answering before the client finished sending would make
/// the server close the connection under it.
async fn drain(body: Option<Body>, limit: usize) {
    use http_body_util::BodyExt;
    let Some(mut body) = body else {
        return;
    };
    let read = async {
        let mut seen = 0;
        while seen < limit {
            match body.frame().await {
                Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
}

/// The access key a signed request names, valid or not (for the audit
/// trace of a refusal).
fn claimed_access_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let auth = cts_sign::parse_authorization(value).ok()?;
    Some(auth.access_key.to_string())
}

/// The user owning access key `access` and its domain, if they exist.
fn key_owner(state: &AppState, access: &str) -> Option<(cts_identity::User, cts_identity::Domain)> {
    let key = state.identity.get_access_key(access).ok()?;
    let user = state.identity.get_user(&key.user_id).ok()?;
    let domain = state.identity.get_domain(&user.domain_id).ok()?;
    Some((user, domain))
}

/// The path parameter `name` of the matched route, if it has one.
async fn path_param(parts: &mut Parts, name: &str) -> Option<String> {
    use axum::extract::FromRequestParts;
    let params = RawPathParams::from_request_parts(parts, &()).await.ok();
    params?
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Checks the credential of a request. A signed request's body is read to
/// hash it (only once its key is known), and put back as the same bytes.
async fn authenticate(
    state: &AppState,
    parts: &Parts,
    body: &mut Option<Body>,
) -> Result<Principal, ApiError> {
    let unauth = |reason, msg: String| ApiError::Unauthenticated(AuthFailure::new(reason, msg));
    if let Some(token) = parts.headers.get("x-auth-token") {
        let token = token
            .to_str()
            .map_err(|_| unauth("malformed", "X-Auth-Token is not visible ASCII".into()))?
            .to_string();
        let info = validate_token(state, &token).await?;
        return Ok(Principal::of_token(&info));
    }
    let Some(authorization) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(unauth(
            "missing",
            "no credential: send an X-Auth-Token header (POST /v3/auth/tokens issues one) \
             or sign the request with SDK-HMAC-SHA256"
                .into(),
        ));
    };
    let authorization = authorization
        .to_str()
        .map_err(|_| unauth("malformed", "Authorization is not visible ASCII".into()))?
        .to_string();
    // Everything that needs no body first: a request with a malformed
    // header, a stale date or an unknown key costs no buffered body.
    let auth = cts_sign::parse_authorization(&authorization)
        .map_err(|e| unauth("malformed", format!("Authorization: {e}")))?;
    let key = signature_claim(state, parts, &auth).await?;
    let expected = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let raw = body.take().unwrap_or_default();
    let bytes = read_body(raw, state.config.limits.max_body_bytes, expected).await?;
    let principal = verify_signature(state, parts, &auth, key, &bytes).await?;
    *body = Some(Body::from(bytes));
    Ok(principal)
}

/// The token's owner, or why not.
pub async fn validate_token(state: &AppState, token: &str) -> Result<TokenInfo, ApiError> {
    let token = token.to_string();
    let now = crate::state::now_ms();
    identity(state, move |state| {
        state.identity.validate_token(&token, now).map_err(|e| {
            let reason = match &e {
                IdentityError::TokenExpired => "token_expired",
                IdentityError::TokenRevoked => "token_revoked",
                IdentityError::UnknownToken => "token_unknown",
                _ => return ApiError::from(e),
            };
            ApiError::Unauthenticated(AuthFailure::new(reason, format!("X-Auth-Token: {e}")))
        })
    })
    .await
}

fn unauthenticated(reason: &'static str, message: String) -> ApiError {
    ApiError::Unauthenticated(AuthFailure::new(reason, message))
}

/// Checks of a signed request that need no body: a well-formed
/// `Authorization`, a fresh `X-Sdk-Date` and an active access key, whose
/// secret it returns.
async fn signature_claim(
    state: &AppState,
    parts: &Parts,
    auth: &cts_sign::Authorization<'_>,
) -> Result<cts_identity::SigningKey, ApiError> {
    let fail = unauthenticated;
    let date = parts
        .headers
        .get(cts_sign::DATE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| fail("missing_date", "the X-Sdk-Date header is missing".into()))?;
    let skew = state.config.auth.signature_max_skew.as_secs() as i64;
    cts_sign::check_date(date, unix_now(), skew)
        .map_err(|e| fail("stale_date", format!("X-Sdk-Date: {e}")))?;
    let access = auth.access_key.to_string();
    identity(state, move |state| {
        state
            .identity
            .access_key_secret(&access)
            .map_err(|e| match e {
                IdentityError::UnknownAccessKey | IdentityError::InactiveAccessKey => {
                    fail("unknown_key", format!("access key {access}: {e}"))
                }
                other => ApiError::from(other),
            })
    })
    .await
}

/// Checks the signature of `body` with the key [`signature_claim`] found.
async fn verify_signature(
    state: &AppState,
    parts: &Parts,
    auth: &cts_sign::Authorization<'_>,
    key: cts_identity::SigningKey,
    body: &[u8],
) -> Result<Principal, ApiError> {
    let fail = unauthenticated;
    let headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let request = cts_sign::RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers,
        body,
    };
    // Not throttled: a secret key is not guessable like a password, and
    // access key ids are not secret (traces show them), so counting bad
    // signatures per key would let anyone lock a reporter out.
    cts_sign::verify(&request, auth, &key.secret)
        .and_then(|v| v.require_signed_payload())
        .map_err(|e| fail("bad_signature", format!("signature: {e}")))
        .map(drop)?;
    let (user_id, access) = (key.user_id.clone(), key.access.clone());
    let (user, domain) = identity(state, move |state| {
        let user = state.identity.get_user(&user_id)?;
        let domain = state.identity.get_domain(&user.domain_id)?;
        // Coalesced by the store: at most one write a minute per key.
        match state
            .identity
            .touch_access_key(&access, crate::state::now_ms())
        {
            Err(IdentityError::NotInMemory) => return Err(IdentityError::NotInMemory.into()),
            Err(e) => tracing::warn!(error = %e, "could not record the last use of an access key"),
            Ok(()) => {}
        }
        Ok((user, domain))
    })
    .await?;
    let project_scope = parts
        .headers
        .get(cts_sign::PROJECT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(Principal {
        user_id: user.id,
        user_name: user.name,
        domain_id: domain.id,
        domain_name: domain.name,
        access_key_id: Some(key.access),
        project_scope,
        via: Via::Signature,
    })
}

use cts_sign::unix_now;

/// Whether `principal` may do what `access` declares; `project` and
/// `target` are the path's `project_id` and `id`.
pub(crate) fn permit(
    state: &AppState,
    principal: &Principal,
    access: Access,
    project: Option<&str>,
    target: Option<&str>,
) -> Result<(), ApiError> {
    let missing = |what: &'static str| ApiError::Internal(format!("a route without {{{what}}}"));
    match access {
        Access::Public | Access::Metrics | Access::Authenticated => Ok(()),
        Access::Project(permission) => {
            let project = project.ok_or_else(|| missing("project_id"))?;
            let denied = || {
                ApiError::Forbidden(format!(
                    "the credential is not authorized for project {project}"
                ))
            };
            // Keystone: a token acts on a project only when scoped to it;
            // an unscoped or domain-scoped token must be exchanged first.
            if principal.via == Via::Token && principal.project_scope.is_none() {
                return Err(ApiError::Forbidden(format!(
                    "the token is not scoped to a project: issue one scoped to project \
                     {project} (auth.scope.project) to use it here"
                )));
            }
            let roles = match project_roles(state, principal, project)? {
                Some(roles) if !roles.is_empty() => roles,
                _ => return Err(denied()),
            };
            require(permission, &roles, "on the project")
        }
        Access::Domain(permission) => require_in_domain(state, principal, permission),
        Access::OwnDomain(permission) => {
            if project != Some(principal.domain_id.as_str()) {
                return Err(ApiError::Forbidden(format!(
                    "the credential is not authorized for domain {}",
                    project.unwrap_or_default()
                )));
            }
            require_in_domain(state, principal, permission)
        }
        Access::ProjectRoles => {
            let project = target.ok_or_else(|| missing("id"))?;
            if is_domain_admin(state, principal)? || is_project_admin(state, principal, project)? {
                return Ok(());
            }
            Err(ApiError::MissingRole {
                needed: Role::Admin.name().into(),
                scope: "on the domain or on this project",
            })
        }
        Access::UserChange => {
            let user = target.ok_or_else(|| missing("id"))?;
            if is_domain_admin(state, principal)? || administers_user(state, principal, user)? {
                return Ok(());
            }
            Err(ApiError::MissingRole {
                needed: Role::Admin.name().into(),
                scope: "on the domain, or on every project where the user holds a role",
            })
        }
    }
}

/// The caller's roles on `project`; `None` when the credential is scoped to
/// another project or the project does not exist.
fn project_roles(
    state: &AppState,
    principal: &Principal,
    project: &str,
) -> Result<Option<RoleSet>, ApiError> {
    if principal
        .project_scope
        .as_deref()
        .is_some_and(|scope| scope != project)
    {
        return Ok(None);
    }
    match state.identity.effective_roles(&principal.user_id, project) {
        Ok(roles) => Ok(Some(roles)),
        Err(IdentityError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn is_project_admin(
    state: &AppState,
    principal: &Principal,
    project: &str,
) -> Result<bool, ApiError> {
    Ok(project_roles(state, principal, project)?.is_some_and(|r| r.contains(Role::Admin)))
}

/// Whether the caller holds `admin` on its domain (a domain role
/// assignment).
pub fn is_domain_admin(state: &AppState, principal: &Principal) -> Result<bool, ApiError> {
    let roles = state.identity.domain_roles(&principal.user_id)?;
    Ok(Permission::IdentityManage.allowed(&roles))
}

/// Whether `user` holds roles only on projects the caller administers (at
/// least one, and no domain role).
fn administers_user(state: &AppState, principal: &Principal, user: &str) -> Result<bool, ApiError> {
    match state.identity.domain_roles(user) {
        Ok(roles) if roles.is_empty() => {}
        Ok(_) | Err(IdentityError::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let projects = state.identity.projects_with_roles(user)?;
    if projects.is_empty() {
        return Ok(false);
    }
    for project in &projects {
        if !is_project_admin(state, principal, project)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A permission in the caller's domain: identity management by a domain
/// admin; a CTS permission through the roles on the scoped project, or on
/// any project of the domain.
fn require_in_domain(
    state: &AppState,
    principal: &Principal,
    permission: Permission,
) -> Result<(), ApiError> {
    if permission == Permission::IdentityManage {
        let roles = state.identity.domain_roles(&principal.user_id)?;
        return require(permission, &roles, "on your domain");
    }
    if let Some(project) = &principal.project_scope {
        let roles = state
            .identity
            .effective_roles(&principal.user_id, project)?;
        return require(permission, &roles, "on the project");
    }
    let mut all = RoleSet::default();
    let filter = Filter {
        domain_id: Some(principal.domain_id.clone()),
        ..Filter::default()
    };
    for project in state.identity.list_projects(&filter)? {
        all = all.union(
            state
                .identity
                .effective_roles(&principal.user_id, &project.id)?,
        );
    }
    require(permission, &all, "on a project of your domain")
}

fn require(permission: Permission, roles: &RoleSet, scope: &'static str) -> Result<(), ApiError> {
    if permission.allowed(roles) {
        return Ok(());
    }
    let names: Vec<&str> = permission.granted_by().iter().map(|r| r.name()).collect();
    Err(ApiError::MissingRole {
        needed: names.join(" or "),
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_issue_says() {
        let set = |roles: &[Role]| {
            let mut s = RoleSet::default();
            for r in roles {
                s.insert(*r);
            }
            s
        };
        let admin = set(&[Role::CtsAdmin]);
        let viewer = set(&[Role::CtsViewer]);
        let reporter = set(&[Role::CtsReporter]);
        let identity_admin = set(&[Role::Admin]);
        use Permission::*;
        for p in [CtsRead, CtsWrite, TraceReport] {
            assert!(p.allowed(&admin), "{p:?}");
            assert!(!p.allowed(&identity_admin), "{p:?}");
        }
        assert!(!IdentityManage.allowed(&admin));
        assert!(CtsRead.allowed(&viewer));
        assert!(!CtsWrite.allowed(&viewer));
        assert!(!TraceReport.allowed(&viewer));
        assert!(TraceReport.allowed(&reporter));
        assert!(!CtsRead.allowed(&reporter));
        assert!(IdentityManage.allowed(&identity_admin));
    }
}
