//! Keystone's role assignments on a domain
//! (`/v3/domains/{domain_id}/users/{user_id}/roles/{role_id}`): who is a
//! domain admin. Only `admin` is assigned on a domain; only a domain admin
//! assigns it, and only in its own domain (another domain answers 404).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::identity::{find_role, Call, Change};
use crate::error::ApiError;
use cts_identity::{RoleRecord, User};

#[derive(Deserialize)]
pub struct UserPath {
    domain_id: String,
    user_id: String,
}

#[derive(Deserialize)]
pub struct AssignmentPath {
    domain_id: String,
    user_id: String,
    role_id: String,
}

impl Call {
    /// The user of a domain path, if both are the caller's domain's.
    fn domain_user(&self, domain_id: &str, user_id: &str) -> Result<User, ApiError> {
        if domain_id != self.caller.domain_id {
            return Err(ApiError::ResourceNotFound {
                what: "domain",
                id: domain_id.to_string(),
            });
        }
        self.user(user_id)
    }
}

/// The Keystone shape of a domain assignment (role assignment lists).
pub fn domain_assignment_json(base: &str, domain: &str, user: &str, role: &RoleRecord) -> Value {
    json!({
        "role": {"id": role.id, "name": role.role.name()},
        "scope": {"domain": {"id": domain}},
        "user": {"id": user},
        "links": {"assignment": format!("{base}/v3/domains/{domain}/users/{user}/roles/{}", role.id)},
    })
}

pub async fn roles_of_user(c: Call, Path(p): Path<UserPath>) -> Result<Json<Value>, ApiError> {
    let user = c.domain_user(&p.domain_id, &p.user_id)?;
    let held: Vec<_> = c
        .state
        .identity
        .list_domain_assignments(&p.domain_id, Some(&user.id))?
        .into_iter()
        .map(|(_, role)| role)
        .collect();
    let roles = c.roles_json(&held)?;
    let links = c.links(&format!(
        "domains/{}/users/{}/roles",
        p.domain_id, p.user_id
    ));
    Ok(Json(json!({"roles": roles, "links": links})))
}

pub async fn assign(c: Call, Path(p): Path<AssignmentPath>) -> Result<Response, ApiError> {
    let user = c.domain_user(&p.domain_id, &p.user_id)?;
    let role = find_role(&c.state, &p.role_id)?;
    let request = domain_assignment_json(&c.base, &p.domain_id, &user.id, &role);
    let change = Change::new("role", "grantRole", (&user.id, &user.name), Some(&request));
    let grant = async {
        let identity = &c.state.identity;
        Ok(identity.assign_domain_role(&p.domain_id, &user.id, role.role)?)
    };
    c.audited(&change, StatusCode::NO_CONTENT, grant).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn check(c: Call, Path(p): Path<AssignmentPath>) -> Result<StatusCode, ApiError> {
    let user = c.domain_user(&p.domain_id, &p.user_id)?;
    let role = find_role(&c.state, &p.role_id)?;
    let held = c
        .state
        .identity
        .list_domain_assignments(&p.domain_id, Some(&user.id))?;
    if held.iter().any(|(_, r)| *r == role.role) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::ResourceNotFound {
            what: "role assignment",
            id: format!("{}/{}/{}", p.domain_id, p.user_id, p.role_id),
        })
    }
}

pub async fn unassign(c: Call, Path(p): Path<AssignmentPath>) -> Result<Response, ApiError> {
    let user = c.domain_user(&p.domain_id, &p.user_id)?;
    let role = find_role(&c.state, &p.role_id)?;
    let request = domain_assignment_json(&c.base, &p.domain_id, &user.id, &role);
    let change = Change::new("role", "revokeRole", (&user.id, &user.name), Some(&request));
    let revoke = async {
        let identity = &c.state.identity;
        Ok(identity.unassign_domain_role(&p.domain_id, &user.id, role.role)?)
    };
    c.audited(&change, StatusCode::NO_CONTENT, revoke).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
