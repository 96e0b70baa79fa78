//! Key event notifications through the v3 API: create, modify, query,
//! delete, and the dry run. The rules live in `cts-notification`; this
//! module reads bodies, resolves topics and users, calls the store off the
//! async workers, records every change as a `CTS` trace (fail closed) and
//! renders the answers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use cts_identity::{Filter, IdentityStore};
use cts_notification::{
    parse_create, parse_update, Directory, Notification, NotificationError, NotificationSpec,
    NotificationStore, NotificationType, ResolvedUser,
};

use crate::api::identity::{Call, Change};
use crate::body::read_body;
use crate::error::ApiError;
use crate::state::{now_ms, AppState};

/// Runs a blocking notification-store call off the async workers.
pub(crate) async fn blocking<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&NotificationStore, &dyn Directory) -> Result<T, NotificationError> + Send + 'static,
{
    let store = Arc::clone(&state.notifications);
    let dir = StateDirectory(state.clone());
    tokio::task::spawn_blocking(move || f(&store, &dir))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// Topics from `cts-smn`, groups and users from the identity store.
struct StateDirectory(AppState);

impl Directory for StateDirectory {
    fn topic_exists(&self, project_id: &str, topic_urn: &str) -> Result<bool, String> {
        self.0
            .topics
            .resolve(project_id, topic_urn)
            .map(|t| t.is_some())
            .map_err(|e| e.to_string())
    }

    fn group_members(
        &self,
        domain_id: &str,
        group: &str,
    ) -> Result<Option<Vec<ResolvedUser>>, String> {
        members(&self.0.identity, domain_id, group).map_err(|e| e.to_string())
    }
}

fn members(
    identity: &IdentityStore,
    domain_id: &str,
    group: &str,
) -> Result<Option<Vec<ResolvedUser>>, cts_identity::IdentityError> {
    let filter = Filter {
        domain_id: Some(domain_id.to_owned()),
        name: Some(group.to_owned()),
    };
    let Some(g) = identity.list_groups(&filter)?.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(
        identity
            .list_group_users(&g.id)?
            .into_iter()
            .map(|u| ResolvedUser {
                id: u.id,
                name: u.name,
            })
            .collect(),
    ))
}

/// The body as bytes for the parser, and as JSON for the audit trace.
async fn body_of(c: &Call, body: Body) -> Result<(Vec<u8>, Option<Value>), ApiError> {
    let bytes = read_body(body, c.state.config.auth.max_identity_body_bytes, 0).await?;
    let json = serde_json::from_slice(&bytes).ok();
    Ok((bytes.to_vec(), json))
}

/// A change of `n` (`CTS`, resource type `notification`).
fn change<'a>(
    trace_name: &'static str,
    n: &'a Notification,
    request: Option<&'a Value>,
) -> Change<'a> {
    Change::project_change(
        &n.project_id,
        "notification",
        trace_name,
        (&n.notification_id, &n.notification_name),
        request,
    )
}

/// `POST /v3/{project_id}/notifications`: recorded (`createNotification`)
/// once made; undone when its trace cannot be written.
pub async fn create(
    c: Call,
    Path(project_id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let (bytes, json) = body_of(&c, body).await?;
    let spec = parse_create(&bytes)?;
    let domain = c.caller.domain_id.clone();
    // Picked before the trace is written: the creation's own trace is
    // the first one an enabled rule sees.
    let at = now_ms();
    let n = blocking(&c.state, move |s, dir| {
        s.create(&project_id, &domain, &spec, at, dir)
    })
    .await?;
    let store = Arc::clone(&c.state.notifications);
    let (project, id) = (n.project_id.clone(), n.notification_id.clone());
    let undo = move || Ok(store.delete(&project, &id).map(drop)?);
    let answer = n.to_json();
    c.created(
        change("createNotification", &n, json.as_ref()),
        &answer,
        undo,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `PUT /v3/{project_id}/notifications`: recorded (`updateNotification`)
/// before it is made.
pub async fn update(
    c: Call,
    Path(project_id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (bytes, json) = body_of(&c, body).await?;
    let spec: NotificationSpec = parse_update(&bytes)?;
    let id = spec.notification_id.clone().unwrap_or_default();
    let (project, i) = (project_id.clone(), id.clone());
    let before = blocking(&c.state, move |s, _| s.get(&project, &i)).await?;
    let at = now_ms();
    let apply = blocking(&c.state, move |s, dir| {
        s.update(&project_id, &spec, at, dir)
    });
    let (_, after) = c
        .audited(
            &change("updateNotification", &before, json.as_ref()),
            StatusCode::OK,
            apply,
        )
        .await?;
    Ok(Json(after.to_json()))
}

#[derive(Deserialize)]
pub struct ListParams {
    notification_name: Option<String>,
}

/// `GET /v3/{project_id}/notifications/{notification_type}`.
pub async fn list(
    c: Call,
    Path((project_id, kind)): Path<(String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let kind = NotificationType::parse(&kind).ok_or_else(|| {
        NotificationError::param(
            "notification_type",
            format!("notification_type must be smn or fun, not {kind:?}"),
        )
    })?;
    let all = blocking(&c.state, move |s, _| {
        s.list(&project_id, Some(kind), params.notification_name.as_deref())
    })
    .await?;
    let all: Vec<Value> = all.iter().map(Notification::to_json).collect();
    Ok(Json(json!({ "notifications": all })))
}

#[derive(Deserialize)]
pub struct DeleteParams {
    notification_id: Option<String>,
}

/// `DELETE /v3/{project_id}/notifications?notification_id=a,b`: every id
/// must exist (else 404 naming the missing ones, nothing deleted); each
/// deletion is recorded (`deleteNotification`) before it is made.
pub async fn delete(
    c: Call,
    Path(project_id): Path<String>,
    Query(params): Query<DeleteParams>,
) -> Result<StatusCode, ApiError> {
    let mut ids: Vec<String> = Vec::new();
    for id in params
        .notification_id
        .as_deref()
        .unwrap_or_default()
        .split(',')
    {
        let id = id.trim();
        if !id.is_empty() && !ids.iter().any(|i| i == id) {
            ids.push(id.to_owned());
        }
    }
    if ids.is_empty() {
        return Err(NotificationError::param(
            "notification_id",
            "notification_id is required: one id, or several separated by commas",
        )
        .into());
    }
    let project = project_id.clone();
    let doomed = blocking(&c.state, move |s, _| {
        ids.iter()
            .map(|id| s.get(&project, id))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    for n in &doomed {
        let (project, id) = (n.project_id.clone(), n.notification_id.clone());
        let apply = blocking(&c.state, move |s, _| s.delete(&project, &id));
        c.audited(
            &change("deleteNotification", n, None),
            StatusCode::NO_CONTENT,
            apply,
        )
        .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
