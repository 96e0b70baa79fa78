//! Keystone v3 identity management within the caller's domain: projects,
//! users, groups, membership, roles and role assignments.
//!
//! Request and response bodies have Keystone's shapes (`{"user": {...}}`,
//! `{"users": [...], "links": {...}}`), so that the `openstack` CLI and
//! openstacksdk can drive them. A caller sees only its own domain: an id of
//! another domain answers 404, exactly like an id that does not exist.
//! Every change is recorded as an `IAM` trace.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use cts_identity::{
    Actor, Filter, Group, GroupUpdate, IdentityError, NewGroup, NewProject, NewUser, Project,
    ProjectUpdate, Role, RoleRecord, User, UserUpdate,
};

use crate::api::base_url;
use crate::api::domain_roles::domain_assignment_json;
use crate::audit::{self, AuditEvent};
use crate::auth::{Origin, Principal};
use crate::body::read_body;
use crate::error::ApiError;
use crate::state::AppState;

/// Runs a blocking identity call (password hashing takes tens of ms) off
/// the async workers.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, IdentityError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// Reads a JSON body of at most `auth.max_identity_body_bytes`.
pub async fn parse_body<T: DeserializeOwned>(state: &AppState, body: Body) -> Result<T, ApiError> {
    let limit = state.config.auth.max_identity_body_bytes;
    let bytes = read_body(body, limit, 0).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
        field: "body",
        rule: format!("must be the documented JSON object: {e}"),
    })
}

/// The context of an identity call: who, from where, and the server's URL.
pub struct Call {
    pub state: AppState,
    pub caller: Principal,
    pub origin: Origin,
    pub base: String,
}

impl FromRequestParts<AppState> for Call {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Call, ApiError> {
        // Put there by the authorization layer of every non-public route.
        let caller = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("identity route without a caller".into()))?;
        let origin = parts
            .extensions
            .get::<Origin>()
            .cloned()
            .unwrap_or_default();
        Ok(Call {
            base: base_url(state, &parts.headers),
            state: state.clone(),
            caller,
            origin,
        })
    }
}

impl Call {
    /// 404 for anything outside the caller's domain.
    fn own<T>(&self, domain_id: &str, what: &'static str, id: &str, v: T) -> Result<T, ApiError> {
        if domain_id == self.caller.domain_id {
            Ok(v)
        } else {
            Err(ApiError::ResourceNotFound {
                what,
                id: id.to_string(),
            })
        }
    }

    fn project(&self, id: &str) -> Result<Project, ApiError> {
        let p = self.state.identity.get_project(id)?;
        self.own(&p.domain_id.clone(), "project", id, p)
    }

    pub fn user(&self, id: &str) -> Result<User, ApiError> {
        let u = self.state.identity.get_user(id)?;
        self.own(&u.domain_id.clone(), "user", id, u)
    }

    fn group(&self, id: &str) -> Result<Group, ApiError> {
        let g = self.state.identity.get_group(id)?;
        self.own(&g.domain_id.clone(), "group", id, g)
    }

    /// A `domain_id` in a request body must be the caller's own.
    fn check_domain(&self, domain_id: Option<&str>) -> Result<String, ApiError> {
        match domain_id {
            Some(d) if d != self.caller.domain_id => Err(ApiError::Forbidden(
                "identities can only be managed in the caller's own domain".into(),
            )),
            _ => Ok(self.caller.domain_id.clone()),
        }
    }

    /// The project an identity change is recorded in.
    fn audit_project(&self) -> Option<String> {
        audit::home_project(
            &self.state,
            &self.caller.user_id,
            &self.caller.domain_id,
            self.caller.project_scope.as_deref(),
        )
    }

    /// The trace of `change` answered with `status` (and `response`, or
    /// the error `message`), if there is a project to record it in.
    fn event(
        &self,
        change: &Change<'_>,
        status: StatusCode,
        response: Option<&Value>,
        message: Option<String>,
    ) -> Option<AuditEvent> {
        // The audit trail of identity changes lives with the
        // administrators who make them: the caller's project.
        let project = change
            .project
            .map(str::to_string)
            .or_else(|| self.audit_project());
        let Some(project) = project else {
            tracing::warn!(
                trace_name = change.trace_name,
                "no project to record a change in"
            );
            return None;
        };
        let mut event = AuditEvent::new(
            &project,
            change.service_type,
            change.resource_type,
            change.trace_name,
            &self.origin,
        )
        .by(&self.caller)
        .resource(Some(change.resource.0), Some(change.resource.1))
        .request(change.request)
        .outcome(status.as_u16(), response);
        event.always = change.always;
        event.message = message;
        Some(event)
    }

    async fn record(
        &self,
        change: &Change<'_>,
        status: StatusCode,
        response: Option<&Value>,
        message: Option<String>,
    ) -> Result<(), ApiError> {
        match self.event(change, status, response, message) {
            Some(event) => audit::record(&self.state, event).await,
            None => Ok(()),
        }
    }

    /// Makes the change `op` only once its trace (answer `status`) is
    /// durable: a trace that cannot be written refuses the change (fail
    /// closed). A change that then fails is recorded again with its error.
    pub async fn audited<T>(
        &self,
        change: &Change<'_>,
        status: StatusCode,
        op: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        self.record(change, status, None, None).await?;
        match op.await {
            Ok(v) => Ok(v),
            Err(e) => {
                let message = Some(e.to_string());
                // Best effort: the refusal stands whether it is recorded or not.
                drop(self.record(change, e.status(), None, message).await);
                Err(e)
            }
        }
    }

    /// Records a creation already made (its id is known only now) with
    /// `response` (`201`); when the trace cannot be written, `undo` removes
    /// what was created and the request is refused (fail closed).
    pub async fn created<U>(
        &self,
        change: Change<'_>,
        response: &Value,
        undo: U,
    ) -> Result<(), ApiError>
    where
        U: FnOnce() -> Result<(), ApiError> + Send + 'static,
    {
        let status = StatusCode::CREATED;
        if let Err(e) = self.record(&change, status, Some(response), None).await {
            let undone = tokio::task::spawn_blocking(undo)
                .await
                .map_err(|j| ApiError::Internal(j.to_string()))
                .and_then(|r| r);
            if let Err(u) = undone {
                tracing::error!(error = %u, trace_name = change.trace_name, "could not undo an unaudited creation");
            }
            return Err(e);
        }
        Ok(())
    }

    pub(crate) fn links(&self, path: &str) -> Value {
        json!({"self": format!("{}/v3/{path}", self.base), "previous": null, "next": null})
    }
}

/// A successful change, for its audit trace.
pub struct Change<'a> {
    service_type: &'static str,
    resource_type: &'static str,
    trace_name: &'static str,
    /// (id, name) of the resource.
    resource: (&'a str, &'a str),
    request: Option<&'a Value>,
    /// The project to record it in; by default the caller's.
    project: Option<&'a str>,
    /// Recorded even when the project's management tracker does not record.
    always: bool,
}

impl<'a> Change<'a> {
    /// An identity change (`IAM`), recorded in the caller's project.
    pub fn new(
        resource_type: &'static str,
        trace_name: &'static str,
        resource: (&'a str, &'a str),
        request: Option<&'a Value>,
    ) -> Change<'a> {
        Change {
            service_type: "IAM",
            resource_type,
            trace_name,
            resource,
            request,
            project: None,
            always: false,
        }
    }

    /// A change of another CTS setting (`CTS`) of `project`.
    pub fn project_change(
        project: &'a str,
        resource_type: &'static str,
        trace_name: &'static str,
        resource: (&'a str, &'a str),
        request: Option<&'a Value>,
    ) -> Change<'a> {
        Change {
            service_type: "CTS",
            project: Some(project),
            ..Change::new(resource_type, trace_name, resource, request)
        }
    }

    /// A change of a tracker (`CTS`) of `project`. Recorded whatever the
    /// trackers say, so that turning recording off is itself on record.
    pub fn tracker(
        project: &'a str,
        trace_name: &'static str,
        resource: (&'a str, &'a str),
        request: Option<&'a Value>,
    ) -> Change<'a> {
        Change {
            service_type: "CTS",
            resource_type: "tracker",
            project: Some(project),
            always: true,
            ..Change::new("tracker", trace_name, resource, request)
        }
    }
}

/// Keystone's project body.
pub fn project_json(base: &str, p: &Project) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "domain_id": p.domain_id,
        "parent_id": p.domain_id,
        "description": p.description,
        "enabled": p.enabled,
        "is_domain": false,
        "region": p.region,
        "tags": [],
        "links": {"self": format!("{base}/v3/projects/{}", p.id)},
    })
}

fn user_json(base: &str, u: &User) -> Value {
    json!({
        "id": u.id,
        "name": u.name,
        "domain_id": u.domain_id,
        "enabled": u.enabled,
        "description": u.description,
        "email": u.email,
        "default_project_id": u.default_project_id,
        "password_expires_at": null,
        "links": {"self": format!("{base}/v3/users/{}", u.id)},
    })
}

fn group_json(base: &str, g: &Group) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "domain_id": g.domain_id,
        "description": g.description,
        "links": {"self": format!("{base}/v3/groups/{}", g.id)},
    })
}

pub(crate) fn role_json(base: &str, r: &RoleRecord) -> Value {
    json!({
        "id": r.id,
        "name": r.role.name(),
        "description": r.description,
        "domain_id": null,
        "links": {"self": format!("{base}/v3/roles/{}", r.id)},
    })
}

#[derive(Deserialize, Default)]
pub struct ListParams {
    name: Option<String>,
    domain_id: Option<String>,
    enabled: Option<bool>,
}

impl ListParams {
    fn filter(&self, call: &Call) -> Result<Filter, ApiError> {
        Ok(Filter {
            domain_id: Some(call.check_domain(self.domain_id.as_deref())?),
            name: self.name.clone(),
        })
    }
}

// ---- projects ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectBody {
    name: Option<String>,
    domain_id: Option<String>,
    parent_id: Option<String>,
    description: Option<String>,
    enabled: Option<bool>,
    /// Not Keystone's: the project's region. Defaults to the part of the
    /// name before `_`, as in Huawei Cloud project names (`eu-de_dev`).
    region: Option<String>,
    is_domain: Option<bool>,
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ProjectEnvelope {
    project: ProjectBody,
}

pub async fn list_projects(
    c: Call,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let mut projects = c.state.identity.list_projects(&params.filter(&c)?)?;
    if let Some(enabled) = params.enabled {
        projects.retain(|p| p.enabled == enabled);
    }
    let projects: Vec<Value> = projects.iter().map(|p| project_json(&c.base, p)).collect();
    Ok(Json(
        json!({"projects": projects, "links": c.links("projects")}),
    ))
}

pub async fn create_project(c: Call, body: Body) -> Result<Response, ApiError> {
    let raw: Value = parse_body(&c.state, body).await?;
    let ProjectEnvelope { project: b } = from_value(&raw)?;
    let domain_id = c.check_domain(b.domain_id.as_deref())?;
    if b.parent_id.as_deref().is_some_and(|p| p != domain_id) {
        return Err(ApiError::BadRequest {
            field: "project.parent_id",
            rule: "must be the domain: projects are not nested".into(),
        });
    }
    if b.tags.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::BadRequest {
            field: "project.tags",
            rule: "are not supported; leave them out".into(),
        });
    }
    if b.is_domain == Some(true) {
        return Err(ApiError::BadRequest {
            field: "project.is_domain",
            rule: "must be false: domains are not created through this API".into(),
        });
    }
    let name = b.name.ok_or_else(|| mandatory("project.name"))?;
    let region = b
        .region
        .unwrap_or_else(|| name.split('_').next().unwrap_or(&name).to_string());
    let new = NewProject {
        domain_id,
        name,
        description: b.description.unwrap_or_default(),
        region,
    };
    let identity = c.state.identity.clone();
    let mut project = blocking(move || identity.create_project(&new)).await?;
    if b.enabled == Some(false) {
        let update = ProjectUpdate {
            enabled: Some(false),
            ..ProjectUpdate::default()
        };
        project = c.state.identity.update_project(&project.id, &update)?;
    }
    let body = json!({"project": project_json(&c.base, &project)});
    let change = Change::new(
        "project",
        "createProject",
        (&project.id, &project.name),
        Some(&raw),
    );
    let (identity, id) = (c.state.identity.clone(), project.id.clone());
    c.created(change, &body, move || Ok(identity.delete_project(&id)?))
        .await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn get_project(c: Call, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let project = c.project(&id)?;
    Ok(Json(json!({"project": project_json(&c.base, &project)})))
}

pub async fn update_project(
    c: Call,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let old = c.project(&id)?;
    let raw: Value = parse_body(&c.state, body).await?;
    let ProjectEnvelope { project: b } = from_value(&raw)?;
    if b.region.is_some() || b.domain_id.is_some() {
        return Err(ApiError::BadRequest {
            field: "project",
            rule: "region and domain_id are fixed at creation".into(),
        });
    }
    let update = ProjectUpdate {
        name: b.name,
        description: b.description,
        enabled: b.enabled,
    };
    let change = Change::new("project", "updateProject", (&id, &old.name), Some(&raw));
    let update = async { Ok(c.state.identity.update_project(&id, &update)?) };
    let project = c.audited(&change, StatusCode::OK, update).await?;
    Ok(Json(json!({"project": project_json(&c.base, &project)})).into_response())
}

pub async fn delete_project(c: Call, Path(id): Path<String>) -> Result<Response, ApiError> {
    let project = c.project(&id)?;
    if c.caller.project_scope.as_deref() == Some(id.as_str()) {
        return Err(ApiError::Conflict(
            "a credential cannot delete the project it is scoped to".into(),
        ));
    }
    let change = Change::new("project", "deleteProject", (&id, &project.name), None);
    let delete = async { Ok(c.state.identity.delete_project(&id)?) };
    c.audited(&change, StatusCode::NO_CONTENT, delete).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- users ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    name: Option<String>,
    domain_id: Option<String>,
    password: Option<String>,
    description: Option<String>,
    email: Option<String>,
    default_project_id: Option<String>,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
struct UserEnvelope {
    user: UserBody,
}

pub async fn list_users(
    c: Call,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let mut users = c.state.identity.list_users(&params.filter(&c)?)?;
    if let Some(enabled) = params.enabled {
        users.retain(|u| u.enabled == enabled);
    }
    let users: Vec<Value> = users.iter().map(|u| user_json(&c.base, u)).collect();
    Ok(Json(json!({"users": users, "links": c.links("users")})))
}

pub async fn create_user(c: Call, body: Body) -> Result<Response, ApiError> {
    let raw: Value = parse_body(&c.state, body).await?;
    let UserEnvelope { user: b } = from_value(&raw)?;
    let domain_id = c.check_domain(b.domain_id.as_deref())?;
    if let Some(project) = &b.default_project_id {
        c.project(project)?;
    }
    let new = NewUser {
        domain_id,
        name: b.name.ok_or_else(|| mandatory("user.name"))?,
        description: b.description.unwrap_or_default(),
        password: b.password,
        email: b.email,
        default_project_id: b.default_project_id,
        enabled: b.enabled.unwrap_or(true),
    };
    let identity = c.state.identity.clone();
    let user = blocking(move || identity.create_user(&new)).await?;
    let body = json!({"user": user_json(&c.base, &user)});
    let change = Change::new("user", "createUser", (&user.id, &user.name), Some(&raw));
    let (identity, id) = (c.state.identity.clone(), user.id.clone());
    c.created(change, &body, move || Ok(identity.delete_user(&id)?))
        .await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn get_user(c: Call, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let user = c.user(&id)?;
    Ok(Json(json!({"user": user_json(&c.base, &user)})))
}

pub async fn update_user(
    c: Call,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let old = c.user(&id)?;
    let raw: Value = parse_body(&c.state, body).await?;
    let UserEnvelope { user: b } = from_value(&raw)?;
    fixed("user.domain_id", b.domain_id.is_some())?;
    if let Some(project) = &b.default_project_id {
        c.project(project)?;
    }
    let update = UserUpdate {
        name: b.name,
        description: b.description,
        enabled: b.enabled,
        password: b.password,
        email: b.email.map(Some),
        default_project_id: b.default_project_id.map(Some),
    };
    let identity = c.state.identity.clone();
    let uid = id.clone();
    let change = Change::new("user", "updateUser", (&id, &old.name), Some(&raw));
    let update = blocking(move || identity.update_user(&uid, &update));
    let user = c.audited(&change, StatusCode::OK, update).await?;
    Ok(Json(json!({"user": user_json(&c.base, &user)})).into_response())
}

pub async fn delete_user(c: Call, Path(id): Path<String>) -> Result<Response, ApiError> {
    let user = c.user(&id)?;
    if id == c.caller.user_id {
        return Err(ApiError::Conflict("a user cannot delete itself".into()));
    }
    let change = Change::new("user", "deleteUser", (&id, &user.name), None);
    let delete = async { Ok(c.state.identity.delete_user(&id)?) };
    c.audited(&change, StatusCode::NO_CONTENT, delete).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v3/users/{id}/unlock`: lifts the user's login lockouts (an
/// `admin` of its domain), as `ctsd unlock --user` does offline.
pub async fn unlock_user(c: Call, Path(id): Path<String>) -> Result<Response, ApiError> {
    let user = c.user(&id)?;
    let change = Change::new("user", "unlockUser", (&id, &user.name), None);
    let (state, uid) = (c.state.clone(), id.clone());
    let unlock = blocking(move || crate::lockout::unlock(&state, &uid));
    let lifted = c.audited(&change, StatusCode::OK, unlock).await?;
    Ok(
        Json(json!({"user": {"id": id, "name": user.name, "lockouts_lifted": lifted}}))
            .into_response(),
    )
}

pub async fn groups_of_user(c: Call, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    c.user(&id)?;
    let groups = c.state.identity.list_user_groups(&id)?;
    let groups: Vec<Value> = groups.iter().map(|g| group_json(&c.base, g)).collect();
    let links = c.links(&format!("users/{id}/groups"));
    Ok(Json(json!({"groups": groups, "links": links})))
}

// ---- groups ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    name: Option<String>,
    domain_id: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct GroupEnvelope {
    group: GroupBody,
}

pub async fn list_groups(
    c: Call,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let groups = c.state.identity.list_groups(&params.filter(&c)?)?;
    let groups: Vec<Value> = groups.iter().map(|g| group_json(&c.base, g)).collect();
    Ok(Json(json!({"groups": groups, "links": c.links("groups")})))
}

pub async fn create_group(c: Call, body: Body) -> Result<Response, ApiError> {
    let raw: Value = parse_body(&c.state, body).await?;
    let GroupEnvelope { group: b } = from_value(&raw)?;
    let new = NewGroup {
        domain_id: c.check_domain(b.domain_id.as_deref())?,
        name: b.name.ok_or_else(|| mandatory("group.name"))?,
        description: b.description.unwrap_or_default(),
    };
    let group = c.state.identity.create_group(&new)?;
    let body = json!({"group": group_json(&c.base, &group)});
    let change = Change::new("group", "createGroup", (&group.id, &group.name), Some(&raw));
    let (identity, id) = (c.state.identity.clone(), group.id.clone());
    c.created(change, &body, move || Ok(identity.delete_group(&id)?))
        .await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn get_group(c: Call, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let group = c.group(&id)?;
    Ok(Json(json!({"group": group_json(&c.base, &group)})))
}

pub async fn update_group(
    c: Call,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let old = c.group(&id)?;
    let raw: Value = parse_body(&c.state, body).await?;
    let GroupEnvelope { group: b } = from_value(&raw)?;
    fixed("group.domain_id", b.domain_id.is_some())?;
    let update = GroupUpdate {
        name: b.name,
        description: b.description,
    };
    let change = Change::new("group", "updateGroup", (&id, &old.name), Some(&raw));
    let update = async { Ok(c.state.identity.update_group(&id, &update)?) };
    let group = c.audited(&change, StatusCode::OK, update).await?;
    Ok(Json(json!({"group": group_json(&c.base, &group)})).into_response())
}

pub async fn delete_group(c: Call, Path(id): Path<String>) -> Result<Response, ApiError> {
    let group = c.group(&id)?;
    let change = Change::new("group", "deleteGroup", (&id, &group.name), None);
    let delete = async { Ok(c.state.identity.delete_group(&id)?) };
    c.audited(&change, StatusCode::NO_CONTENT, delete).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn users_of_group(c: Call, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    c.group(&id)?;
    let users = c.state.identity.list_group_users(&id)?;
    let users: Vec<Value> = users.iter().map(|u| user_json(&c.base, u)).collect();
    let links = c.links(&format!("groups/{id}/users"));
    Ok(Json(json!({"users": users, "links": links})))
}

#[derive(Deserialize)]
pub struct MemberPath {
    id: String,
    user_id: String,
}

pub async fn add_member(c: Call, Path(m): Path<MemberPath>) -> Result<Response, ApiError> {
    let group = c.group(&m.id)?;
    let user = c.user(&m.user_id)?;
    let request = json!({"group_id": m.id, "user_id": m.user_id, "user_name": user.name});
    let change = Change::new(
        "group",
        "addUserToGroup",
        (&group.id, &group.name),
        Some(&request),
    );
    let add = async { Ok(c.state.identity.add_member(&m.id, &m.user_id)?) };
    c.audited(&change, StatusCode::NO_CONTENT, add).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn check_member(c: Call, Path(m): Path<MemberPath>) -> Result<StatusCode, ApiError> {
    c.group(&m.id)?;
    c.user(&m.user_id)?;
    if c.state.identity.is_member(&m.id, &m.user_id)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::ResourceNotFound {
            what: "membership",
            id: format!("{}/{}", m.id, m.user_id),
        })
    }
}

pub async fn remove_member(c: Call, Path(m): Path<MemberPath>) -> Result<Response, ApiError> {
    let group = c.group(&m.id)?;
    c.user(&m.user_id)?;
    let request = json!({"group_id": m.id, "user_id": m.user_id});
    let change = Change::new(
        "group",
        "removeUserFromGroup",
        (&group.id, &group.name),
        Some(&request),
    );
    let remove = async { Ok(c.state.identity.remove_member(&m.id, &m.user_id)?) };
    c.audited(&change, StatusCode::NO_CONTENT, remove).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- roles and assignments ----

#[derive(Deserialize, Default)]
pub struct RoleParams {
    name: Option<String>,
}

pub async fn list_roles(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<RoleParams>,
) -> Result<Json<Value>, ApiError> {
    let base = base_url(&state, &headers);
    let roles: Vec<Value> = state
        .identity
        .list_roles()?
        .iter()
        .filter(|r| params.name.as_deref().is_none_or(|n| n == r.role.name()))
        .map(|r| role_json(&base, r))
        .collect();
    let links = json!({"self": format!("{base}/v3/roles"), "previous": null, "next": null});
    Ok(Json(json!({"roles": roles, "links": links})))
}

/// A role named by its id or, for convenience, its name.
pub(crate) fn find_role(state: &AppState, id_or_name: &str) -> Result<RoleRecord, ApiError> {
    state
        .identity
        .list_roles()?
        .into_iter()
        .find(|r| r.id == id_or_name || r.role.name() == id_or_name)
        .ok_or_else(|| ApiError::ResourceNotFound {
            what: "role",
            id: id_or_name.to_string(),
        })
}

pub async fn get_role(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let role = find_role(&state, &id)?;
    Ok(Json(
        json!({"role": role_json(&base_url(&state, &headers), &role)}),
    ))
}

#[derive(Deserialize)]
pub struct ActorPath {
    id: String,
    actor: String,
    actor_id: String,
}

#[derive(Deserialize)]
pub struct AssignmentPath {
    id: String,
    actor: String,
    actor_id: String,
    role_id: String,
}

impl Call {
    /// The actor of `/v3/projects/{id}/{users|groups}/{actor_id}/…`,
    /// checked to be of the caller's domain, and its name.
    fn actor(&self, kind: &str, id: &str) -> Result<(Actor, String), ApiError> {
        match kind {
            "users" => Ok((Actor::User(id.into()), self.user(id)?.name)),
            "groups" => Ok((Actor::Group(id.into()), self.group(id)?.name)),
            _ => Err(ApiError::NotFound),
        }
    }
}

fn assignment_json(base: &str, project: &str, actor: &Actor, role: &RoleRecord) -> Value {
    let (kind, id) = match actor {
        Actor::User(id) => ("user", id),
        Actor::Group(id) => ("group", id),
    };
    let mut v = json!({
        "role": {"id": role.id, "name": role.role.name()},
        "scope": {"project": {"id": project}},
        "links": {"assignment": format!("{base}/v3/projects/{project}/{kind}s/{id}/roles/{}", role.id)},
    });
    v[kind] = json!({ "id": id });
    v
}

impl Call {
    /// The Keystone role objects of `held`, in the order of `GET /v3/roles`.
    pub(crate) fn roles_json(&self, held: &[Role]) -> Result<Vec<Value>, ApiError> {
        Ok(self
            .state
            .identity
            .list_roles()?
            .iter()
            .filter(|r| held.contains(&r.role))
            .map(|r| role_json(&self.base, r))
            .collect())
    }
}

pub async fn roles_of_actor(c: Call, Path(a): Path<ActorPath>) -> Result<Json<Value>, ApiError> {
    c.project(&a.id)?;
    let (actor, _) = c.actor(&a.actor, &a.actor_id)?;
    let held: Vec<Role> = c
        .state
        .identity
        .list_assignments(&a.id, Some(&actor))?
        .into_iter()
        .map(|x| x.role)
        .collect();
    let roles = c.roles_json(&held)?;
    let links = c.links(&format!(
        "projects/{}/{}/{}/roles",
        a.id, a.actor, a.actor_id
    ));
    Ok(Json(json!({"roles": roles, "links": links})))
}

pub async fn assign(c: Call, Path(a): Path<AssignmentPath>) -> Result<Response, ApiError> {
    let project = c.project(&a.id)?;
    let (actor, name) = c.actor(&a.actor, &a.actor_id)?;
    let role = find_role(&c.state, &a.role_id)?;
    let request = assignment_json(&c.base, &project.id, &actor, &role);
    let change = Change::new("role", "grantRole", (&a.actor_id, &name), Some(&request));
    let grant = async {
        let identity = &c.state.identity;
        Ok(identity.assign_role(&project.id, &actor, role.role)?)
    };
    c.audited(&change, StatusCode::NO_CONTENT, grant).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn check_assignment(
    c: Call,
    Path(a): Path<AssignmentPath>,
) -> Result<StatusCode, ApiError> {
    c.project(&a.id)?;
    let (actor, _) = c.actor(&a.actor, &a.actor_id)?;
    let role = find_role(&c.state, &a.role_id)?;
    let held = c.state.identity.list_assignments(&a.id, Some(&actor))?;
    if held.iter().any(|x| x.role == role.role) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::ResourceNotFound {
            what: "role assignment",
            id: format!("{}/{}/{}", a.id, a.actor_id, a.role_id),
        })
    }
}

pub async fn unassign(c: Call, Path(a): Path<AssignmentPath>) -> Result<Response, ApiError> {
    let project = c.project(&a.id)?;
    let (actor, name) = c.actor(&a.actor, &a.actor_id)?;
    let role = find_role(&c.state, &a.role_id)?;
    let request = assignment_json(&c.base, &project.id, &actor, &role);
    let change = Change::new("role", "revokeRole", (&a.actor_id, &name), Some(&request));
    let revoke = async {
        let identity = &c.state.identity;
        Ok(identity.unassign_role(&project.id, &actor, role.role)?)
    };
    c.audited(&change, StatusCode::NO_CONTENT, revoke).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
pub struct AssignmentParams {
    #[serde(rename = "scope.project.id")]
    project: Option<String>,
    #[serde(rename = "user.id")]
    user: Option<String>,
    #[serde(rename = "group.id")]
    group: Option<String>,
    /// Keystone's `include_names`: names beside the ids (`openstack role
    /// assignment list --names`).
    include_names: Option<String>,
}

impl Call {
    fn add_names(&self, v: &mut Value, project: &Project, actor: &Actor) -> Result<(), ApiError> {
        let domain = json!({"id": self.caller.domain_id, "name": self.caller.domain_name});
        v["scope"]["project"]["name"] = json!(project.name);
        v["scope"]["project"]["domain"] = domain.clone();
        let (kind, name) = match actor {
            Actor::User(id) => ("user", self.user(id)?.name),
            Actor::Group(id) => ("group", self.group(id)?.name),
        };
        v[kind]["name"] = json!(name);
        v[kind]["domain"] = domain;
        Ok(())
    }
}

/// `GET /v3/role_assignments`, filtered by `scope.project.id`, `user.id`
/// or `group.id`; over every project of the caller's domain, and the
/// domain itself, otherwise.
pub async fn list_assignments(
    c: Call,
    Query(params): Query<AssignmentParams>,
) -> Result<Json<Value>, ApiError> {
    let projects = match &params.project {
        Some(id) => vec![c.project(id)?],
        None => c.state.identity.list_projects(&Filter {
            domain_id: Some(c.caller.domain_id.clone()),
            ..Filter::default()
        })?,
    };
    let actor = match (&params.user, &params.group) {
        (Some(u), None) => Some(c.actor("users", u)?.0),
        (None, Some(g)) => Some(c.actor("groups", g)?.0),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest {
                field: "user.id",
                rule: "cannot be combined with group.id".into(),
            })
        }
    };
    let roles = c.state.identity.list_roles()?;
    let mut out = Vec::new();
    for project in &projects {
        for a in c
            .state
            .identity
            .list_assignments(&project.id, actor.as_ref())?
        {
            if let Some(role) = roles.iter().find(|r| r.role == a.role) {
                let mut v = assignment_json(&c.base, &project.id, &a.actor, role);
                if params.include_names.is_some() {
                    c.add_names(&mut v, project, &a.actor)?;
                }
                out.push(v);
            }
        }
    }
    // Domain admins, unless the filter names a project or a group.
    if params.project.is_none() && params.group.is_none() {
        let domain = &c.caller.domain_id;
        let user = params.user.as_deref();
        for (user_id, role) in c.state.identity.list_domain_assignments(domain, user)? {
            if let Some(role) = roles.iter().find(|r| r.role == role) {
                out.push(domain_assignment_json(&c.base, domain, &user_id, role));
            }
        }
    }
    Ok(Json(
        json!({"role_assignments": out, "links": c.links("role_assignments")}),
    ))
}

/// Refuses a change of `field`, which is set once at creation.
pub fn fixed(field: &'static str, given: bool) -> Result<(), ApiError> {
    if given {
        return Err(ApiError::BadRequest {
            field,
            rule: "is fixed at creation".into(),
        });
    }
    Ok(())
}

fn mandatory(field: &'static str) -> ApiError {
    ApiError::BadRequest {
        field,
        rule: "is mandatory".into(),
    }
}

/// Typed view of a body already parsed as JSON (kept raw for the audit
/// trace).
pub fn from_value<T: DeserializeOwned>(raw: &Value) -> Result<T, ApiError> {
    T::deserialize(raw).map_err(|e| ApiError::BadRequest {
        field: "body",
        rule: format!("must be the documented JSON object: {e}"),
    })
}
