//! Access keys (AK/SK) with the Huawei Cloud IAM API shapes
//! (`/v3.0/OS-CREDENTIAL/credentials`). A user manages its own keys; an
//! identity admin (`admin` role) those of every user of its domain. The
//! secret is answered once, at creation.

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use cts_identity::{AccessKey, AccessKeyStatus};

use crate::api::identity::{fixed, from_value, parse_body, Call, Change};
use crate::api::tokens::iso_time;
use crate::auth::is_domain_admin;
use crate::error::ApiError;

fn key_json(k: &AccessKey) -> Value {
    json!({
        "user_id": k.user_id,
        "access": k.access,
        "status": k.status.as_str(),
        "description": k.description,
        "create_time": iso_time(k.created_at),
        "last_use_time": k.last_use_at.map(iso_time),
    })
}

impl Call {
    /// `user_id` (default: the caller) if the caller may manage its keys.
    fn key_owner(&self, user_id: Option<&str>) -> Result<String, ApiError> {
        let user_id = user_id.unwrap_or(&self.caller.user_id);
        if user_id == self.caller.user_id {
            return Ok(user_id.to_string());
        }
        // Someone else's keys: only for a domain admin of the user's
        // domain. Others get the same 404 as for a user that does not
        // exist.
        let user = self.user(user_id)?;
        if is_domain_admin(&self.state, &self.caller)? {
            Ok(user.id)
        } else {
            Err(ApiError::ResourceNotFound {
                what: "user",
                id: user_id.to_string(),
            })
        }
    }

    /// The key `access`, if the caller may manage it.
    fn key(&self, access: &str) -> Result<AccessKey, ApiError> {
        let hidden = || ApiError::ResourceNotFound {
            what: "access key",
            id: access.to_string(),
        };
        let key = self
            .state
            .identity
            .get_access_key(access)
            .map_err(|_| hidden())?;
        self.key_owner(Some(&key.user_id)).map_err(|_| hidden())?;
        Ok(key)
    }
}

/// A change of `key`: the trace names the key and its user.
fn key_change<'a>(
    trace_name: &'static str,
    key: &'a AccessKey,
    request: Option<&'a Value>,
) -> Change<'a> {
    Change::new(
        "credential",
        trace_name,
        (&key.access, &key.user_id),
        request,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialBody {
    user_id: Option<String>,
    description: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
struct CredentialEnvelope {
    credential: CredentialBody,
}

pub async fn create(c: Call, body: Body) -> Result<Response, ApiError> {
    let raw: Value = parse_body(&c.state, body).await?;
    let CredentialEnvelope { credential: b } = from_value(&raw)?;
    let owner = c.key_owner(b.user_id.as_deref())?;
    let description = b.description.unwrap_or_default();
    let (key, secret) = c.state.identity.create_access_key(&owner, &description)?;
    let mut credential = key_json(&key);
    credential["secret"] = json!(secret);
    let body = json!({ "credential": credential });
    let change = key_change("createCredential", &key, Some(&raw));
    let (identity, access) = (c.state.identity.clone(), key.access.clone());
    c.created(change, &body, move || {
        Ok(identity.delete_access_key(&access)?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
pub struct ListParams {
    user_id: Option<String>,
}

pub async fn list(c: Call, Query(params): Query<ListParams>) -> Result<Json<Value>, ApiError> {
    let owner = c.key_owner(params.user_id.as_deref())?;
    let keys = c.state.identity.list_access_keys(&owner)?;
    let keys: Vec<Value> = keys.iter().map(key_json).collect();
    Ok(Json(json!({ "credentials": keys })))
}

pub async fn show(c: Call, Path(access): Path<String>) -> Result<Json<Value>, ApiError> {
    let key = c.key(&access)?;
    Ok(Json(json!({ "credential": key_json(&key) })))
}

pub async fn update(c: Call, Path(access): Path<String>, body: Body) -> Result<Response, ApiError> {
    let key = c.key(&access)?;
    let raw: Value = parse_body(&c.state, body).await?;
    let CredentialEnvelope { credential: b } = from_value(&raw)?;
    fixed("credential.user_id", b.user_id.is_some())?;
    let status = match b.status.as_deref() {
        None => None,
        Some("active") => Some(AccessKeyStatus::Active),
        Some("inactive") => Some(AccessKeyStatus::Inactive),
        Some(_) => {
            return Err(ApiError::BadRequest {
                field: "credential.status",
                rule: "must be active or inactive".into(),
            })
        }
    };
    let change = key_change("updateCredential", &key, Some(&raw));
    let update = async {
        let identity = &c.state.identity;
        let mut after = None;
        if let Some(status) = status {
            after = Some(identity.set_access_key_status(&access, status)?);
        }
        if let Some(description) = &b.description {
            after = Some(identity.set_access_key_description(&access, description)?);
        }
        Ok(after)
    };
    let key = c
        .audited(&change, StatusCode::OK, update)
        .await?
        .unwrap_or(key);
    Ok(Json(json!({ "credential": key_json(&key) })).into_response())
}

pub async fn delete(c: Call, Path(access): Path<String>) -> Result<Response, ApiError> {
    let key = c.key(&access)?;
    let change = key_change("deleteCredential", &key, None);
    let delete = async { Ok(c.state.identity.delete_access_key(&access)?) };
    c.audited(&change, StatusCode::NO_CONTENT, delete).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
