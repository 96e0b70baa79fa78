//! SMN-shaped topics and subscriptions (`/v2/{project_id}/notifications/…`)
//! and the delivery status of their messages. The rules live in `cts-smn`;
//! this module reads bodies, calls the stores off the async workers,
//! records every change as a `CTS` trace (fail closed) and renders SMN's
//! shapes (`request_id`, `topic_urn`, `subscription_urn`, …).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use cts_smn::{Delivery, DeliveryState, Protocol, SmnError, Subscription, Topic, TopicStore};

use crate::api::identity::{parse_body, Call, Change};
use crate::error::ApiError;

/// Runs a blocking topic-store call off the async workers.
async fn with_topics<T, F>(c: &Call, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&TopicStore) -> Result<T, SmnError> + Send + 'static,
{
    let store = Arc::clone(&c.state.topics);
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `name` (and `display_name`) make an SMN topic; `function_urn` registers
/// a FunctionGraph function instead.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopic {
    name: Option<String>,
    #[serde(default)]
    display_name: String,
    function_urn: Option<String>,
    /// SMN's; there are no enterprise projects here.
    #[serde(rename = "enterprise_project_id")]
    _enterprise_project_id: Option<String>,
}

pub async fn create_topic(
    c: Call,
    Path(project_id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let request: Value = parse_body(&c.state, body).await?;
    let new: NewTopic = crate::api::identity::from_value(&request)?;
    let project = project_id.clone();
    let identity = Arc::clone(&c.state.identity);
    let topic = with_topics(&c, move |s| match (new.name, new.function_urn) {
        (Some(name), None) => {
            // The topic's URN names the region of its project.
            let region = identity
                .get_project(&project)
                .map(|p| p.region)
                .unwrap_or_default();
            s.create_topic(&project, &region, &name, &new.display_name)
        }
        (None, Some(urn)) => s.register_function(&project, &urn),
        _ => Err(SmnError::Invalid {
            field: "name",
            rule: "exactly one of name and function_urn is required".into(),
        }),
    })
    .await?;
    let response = json!({"request_id": request_id(), "topic_urn": topic.urn});
    let change = Change::project_change(
        &project_id,
        "topic",
        "createTopic",
        (&topic.urn, &topic.name),
        Some(&request),
    );
    let (store, project, urn) = (
        Arc::clone(&c.state.topics),
        project_id.clone(),
        topic.urn.clone(),
    );
    let undo = move || Ok(store.delete_topic(&project, &urn).map(drop)?);
    c.created(change, &response, undo).await?;
    Ok((StatusCode::CREATED, Json(response)).into_response())
}

#[derive(Deserialize)]
pub struct Page {
    offset: Option<String>,
    limit: Option<String>,
}

impl Page {
    /// SMN's paging: `offset` from 0, `limit` 1 to 100 (default 100).
    fn parse(&self) -> Result<(usize, usize), ApiError> {
        let number = |field: &'static str, v: &Option<String>, default: usize, max: usize| {
            let Some(v) = v else { return Ok(default) };
            match v.parse::<usize>() {
                Ok(n) if n <= max && (field == "offset" || n > 0) => Ok(n),
                _ => Err(ApiError::BadRequest {
                    field,
                    rule: format!(
                        "must be an integer from {} to {max}",
                        usize::from(field != "offset")
                    ),
                }),
            }
        };
        Ok((
            number("offset", &self.offset, 0, i32::MAX as usize)?,
            number("limit", &self.limit, 100, 100)?,
        ))
    }
}

fn topic_json(t: &Topic) -> Value {
    json!({
        "topic_urn": t.urn,
        "name": t.name,
        "display_name": t.display_name,
        "kind": t.kind,
        "push_policy": 0,
        "enterprise_project_id": "0",
        "create_time": t.created_ms,
    })
}

pub async fn list_topics(
    c: Call,
    Path(project_id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (offset, limit) = page.parse()?;
    let topics = with_topics(&c, move |s| s.topics(&project_id)).await?;
    let shown: Vec<Value> = topics
        .iter()
        .skip(offset)
        .take(limit)
        .map(topic_json)
        .collect();
    Ok(Json(json!({
        "request_id": request_id(),
        "topic_count": topics.len(),
        "topics": shown,
    })))
}

pub async fn delete_topic(
    c: Call,
    Path((project_id, urn)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (project, u) = (project_id.clone(), urn.clone());
    let topic = with_topics(&c, move |s| s.resolve(&project, &u))
        .await?
        .ok_or_else(|| ApiError::from(SmnError::TopicNotFound(urn.clone())))?;
    let change = Change::project_change(
        &project_id,
        "topic",
        "deleteTopic",
        (&topic.urn, &topic.name),
        None,
    );
    let (project, u) = (project_id.clone(), urn.clone());
    let delete = with_topics(&c, move |s| s.delete_topic(&project, &u));
    c.audited(&change, StatusCode::OK, delete).await?;
    Ok(Json(json!({"request_id": request_id()})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    protocol: String,
    endpoint: String,
    #[serde(default)]
    remark: String,
}

/// Answers the new subscription's signing `secret` once (the audit trace
/// records the answer without it).
pub async fn subscribe(
    c: Call,
    Path((project_id, topic_urn)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let request: Value = parse_body(&c.state, body).await?;
    let new: NewSubscription = crate::api::identity::from_value(&request)?;
    let protocol = Protocol::parse(&new.protocol)?;
    let project = project_id.clone();
    let sub = with_topics(&c, move |s| {
        s.subscribe(&project, &topic_urn, protocol, &new.endpoint, &new.remark)
    })
    .await?;
    let recorded = json!({"request_id": request_id(), "subscription_urn": sub.urn});
    let change = Change::project_change(
        &project_id,
        "subscription",
        "createSubscription",
        (&sub.urn, &sub.endpoint),
        Some(&request),
    );
    let (store, project, urn) = (
        Arc::clone(&c.state.topics),
        project_id.clone(),
        sub.urn.clone(),
    );
    let undo = move || Ok(store.unsubscribe(&project, &urn).map(drop)?);
    c.created(change, &recorded, undo).await?;
    let mut response = recorded;
    response["secret"] = json!(sub.secret);
    Ok((StatusCode::CREATED, Json(response)).into_response())
}

fn subscription_json(s: &Subscription) -> Value {
    json!({
        "subscription_urn": s.urn,
        "topic_urn": s.topic_urn,
        "protocol": s.protocol,
        "endpoint": s.endpoint,
        "remark": s.remark,
        "owner": s.project_id,
        // Confirmed on creation: only the project's administrators add them.
        "status": 1,
        "create_time": s.created_ms,
    })
}

pub async fn list_subscriptions(
    c: Call,
    Path((project_id, topic_urn)): Path<(String, String)>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (offset, limit) = page.parse()?;
    let subs = with_topics(&c, move |s| s.subscriptions(&project_id, &topic_urn)).await?;
    let shown: Vec<Value> = subs
        .iter()
        .skip(offset)
        .take(limit)
        .map(subscription_json)
        .collect();
    Ok(Json(json!({
        "request_id": request_id(),
        "subscription_count": subs.len(),
        "subscriptions": shown,
    })))
}

pub async fn unsubscribe(
    c: Call,
    Path((project_id, urn)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (project, u) = (project_id.clone(), urn.clone());
    let sub = with_topics(&c, move |s| s.subscription(&project, &u))
        .await?
        .ok_or_else(|| ApiError::from(SmnError::SubscriptionNotFound(urn.clone())))?;
    let change = Change::project_change(
        &project_id,
        "subscription",
        "deleteSubscription",
        (&sub.urn, &sub.endpoint),
        None,
    );
    let (project, u) = (project_id.clone(), urn.clone());
    let delete = with_topics(&c, move |s| s.unsubscribe(&project, &u));
    c.audited(&change, StatusCode::OK, delete).await?;
    Ok(Json(json!({"request_id": request_id()})))
}

#[derive(Deserialize)]
pub struct DeliveryParams {
    subscription_urn: Option<String>,
    state: Option<String>,
    #[serde(flatten)]
    page: Page,
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "message_id": d.message_id,
        "subscription_urn": d.subscription_urn,
        "topic_urn": d.topic_urn,
        "notification_id": d.notification_id,
        "notification_name": d.notification_name,
        "state": d.state,
        "attempts": d.attempts,
        "create_time": d.created_ms,
        "next_attempt_time": (d.state == DeliveryState::Pending).then_some(d.next_ms),
        "done_time": d.done_ms,
        "last_error": d.last_error,
    })
}

/// The project's messages per subscription, newest first, with their state
/// (`pending`, `delivered`, `dead`), attempts and last error.
pub async fn deliveries(
    c: Call,
    Path(project_id): Path<String>,
    Query(params): Query<DeliveryParams>,
) -> Result<Json<Value>, ApiError> {
    let (offset, limit) = params.page.parse()?;
    let state = params
        .state
        .as_deref()
        .map(|s| {
            DeliveryState::parse(s).ok_or_else(|| ApiError::BadRequest {
                field: "state",
                rule: format!("{s:?} is not one of pending, delivered, dead"),
            })
        })
        .transpose()?;
    let outbox = Arc::clone(&c.state.outbox);
    let sub = params.subscription_urn;
    let found = tokio::task::spawn_blocking(move || {
        outbox.deliveries(&project_id, sub.as_deref(), state, offset, limit)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let shown: Vec<Value> = found.iter().map(delivery_json).collect();
    Ok(Json(
        json!({"request_id": request_id(), "deliveries": shown}),
    ))
}
