//! Trackers through the v3 and v1.0 APIs (one tracker, two views), their
//! tags, the tenant quotas, and the catalog calls (`operations`,
//! `resources`, `user-resources`). The rules live in `cts-tracker`; this
//! module reads bodies, calls the stores off the async workers, records
//! every change as a `CTS` trace and renders the answers.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use cts_tracker::{
    parse_tags_create, parse_tags_delete, parse_tracker_type_param, parse_v1_create,
    parse_v1_update, parse_v3_create, parse_v3_update, Tracker, TrackerError, TrackerSpec,
    TrackerStore, TrackerType, SYSTEM_TRACKER_NAME, TAG_RESOURCE_TYPE,
};

use cts_lts::LtsStatus;

use crate::api::identity::{Call, Change};
use crate::body::read_body;
use crate::error::ApiError;
use crate::state::now_ms;
use cts_archive::store::StoreError;

/// Runs a blocking tracker-store call off the async workers.
pub(crate) async fn blocking<T, F>(store: &Arc<TrackerStore>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&TrackerStore) -> Result<T, TrackerError> + Send + 'static,
{
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// The ids of the project's encryption keys: what a `kms_id` may name.
/// Read before the tracker write, whose transaction holds the store.
fn key_ids(store: &TrackerStore, project_id: &str) -> Result<Vec<String>, TrackerError> {
    Ok(store
        .list_keys(project_id)?
        .into_iter()
        .map(|k| k.id)
        .collect())
}

/// The body as bytes for the parsers, and as JSON for the audit trace.
async fn body_of(c: &Call, body: Body) -> Result<(Bytes, Option<Value>), ApiError> {
    let bytes = read_body(body, c.state.config.auth.max_identity_body_bytes, 0).await?;
    let json = serde_json::from_slice(&bytes).ok();
    Ok((bytes, json))
}

impl Call {
    /// Makes the transfer bucket ready before the change: a bucket that
    /// does not exist is refused unless the tracker is to create it
    /// (CTS.0211; created now, CTS.0216), and `bucket_lifecycle` becomes
    /// the bucket's lifecycle rule (CTS.0217); a local bucket another
    /// project owns is refused (403 CTS.0002, bucketPolicyError). A store that cannot tell
    /// whether the bucket exists (unreachable, access refused) lets the
    /// change through: the tracker's status says why later.
    async fn prepare_bucket(
        &self,
        project_id: &str,
        spec: &TrackerSpec,
        create: bool,
    ) -> Result<(), ApiError> {
        let obs = &spec.obs;
        if obs.bucket_name.is_none() && obs.bucket_lifecycle.is_none() {
            return Ok(());
        }
        let current = if create {
            None
        } else {
            let (project, name, kind) = (
                project_id.to_string(),
                spec.tracker_name.clone(),
                spec.tracker_type,
            );
            blocking(&self.state.trackers, move |s| {
                s.list(&project, Some(&name), Some(kind))
            })
            .await?
            .into_iter()
            .next()
            .map(|t| t.obs_info)
        };
        let current = current.as_ref();
        let bucket = obs
            .bucket_name
            .clone()
            .or_else(|| current.map(|o| o.bucket_name.clone()))
            .unwrap_or_default();
        if bucket.is_empty() {
            return Ok(());
        }
        let created = obs
            .is_obs_created
            .or(current.map(|o| o.is_obs_created))
            .unwrap_or(false);
        let days = obs
            .bucket_lifecycle
            .or(current.map(|o| o.bucket_lifecycle))
            .unwrap_or(0);
        let storage = self.state.transfer.storage();
        match storage.bucket_exists(&bucket).await {
            Ok(true) => {}
            Ok(false) if !created => return Err(TrackerError::bucket_missing(&bucket).into()),
            Ok(false) => storage.create_bucket(&bucket).await.map_err(|e| {
                tracing::warn!(bucket = %bucket, error = %e, "cannot create the bucket");
                TrackerError::bucket_not_created(&bucket)
            })?,
            Err(e) => {
                tracing::warn!(bucket = %bucket, error = %e, "cannot tell whether the bucket exists");
                return Ok(());
            }
        }
        match storage.claim_bucket(&bucket, project_id).await {
            Ok(()) => {}
            Err(StoreError::AccessDenied { .. }) => {
                return Err(TrackerError::bucket_of_another_project(&bucket).into())
            }
            Err(e) => tracing::warn!(bucket = %bucket, error = %e, "cannot claim the bucket"),
        }
        if let Ok(d @ 1..) = u32::try_from(days) {
            storage.set_lifecycle(&bucket, d).await.map_err(|e| {
                tracing::warn!(bucket = %bucket, error = %e, "cannot set the lifecycle rule");
                TrackerError::lifecycle_not_set(&bucket, days)
            })?;
        }
        Ok(())
    }

    /// Creates a tracker from `spec`; records `createTracker`, and deletes
    /// the tracker again when that trace cannot be written.
    pub(crate) async fn create_tracker(
        &self,
        project_id: &str,
        spec: TrackerSpec,
        request: Option<&Value>,
    ) -> Result<Tracker, ApiError> {
        self.prepare_bucket(project_id, &spec, true).await?;
        let (project, domain) = (project_id.to_string(), self.caller.domain_id.clone());
        let tracker = blocking(&self.state.trackers, move |s| {
            let keys = key_ids(s, &project)?;
            s.create(&project, &domain, &spec, now_ms(), &|id| {
                keys.iter().any(|k| k == id)
            })
        })
        .await?;
        let change = tracker_change("createTracker", &tracker, request);
        let store = Arc::clone(&self.state.trackers);
        let t = tracker.clone();
        let undo = move || {
            let kind = Some(t.tracker_type);
            Ok(store
                .delete(&t.project_id, Some(&t.tracker_name), kind)
                .map(drop)?)
        };
        self.created(change, &tracker.to_v3_json(), undo).await?;
        Ok(tracker)
    }

    /// Updates the tracker `spec` names; `updateTracker` is recorded first.
    pub(crate) async fn update_tracker(
        &self,
        project_id: &str,
        spec: TrackerSpec,
        request: Option<&Value>,
    ) -> Result<Tracker, ApiError> {
        self.prepare_bucket(project_id, &spec, false).await?;
        let (project, name, kind) = (
            project_id.to_string(),
            spec.tracker_name.clone(),
            spec.tracker_type,
        );
        let current = blocking(&self.state.trackers, move |s| {
            s.list(&project, Some(&name), Some(kind))
        })
        .await?;
        let project = project_id.to_string();
        // Before the trace is recorded: a tracker that begins to transfer
        // with this change has the change's own trace in its first period.
        let at = now_ms();
        let update = blocking(&self.state.trackers, move |s| {
            let keys = key_ids(s, &project)?;
            s.update(&project, &spec, at, &|id| keys.iter().any(|k| k == id))
        });
        // No such tracker: the update fails and changes nothing.
        let Some(before) = current.first() else {
            return Ok(update.await?.1);
        };
        let change = tracker_change("updateTracker", before, request);
        let (_, after) = self.audited(&change, StatusCode::OK, update).await?;
        Ok(after)
    }

    /// Deletes trackers, each recorded (`deleteTracker`) first.
    pub(crate) async fn delete_trackers(
        &self,
        project_id: &str,
        name: Option<String>,
        kind: Option<TrackerType>,
    ) -> Result<StatusCode, ApiError> {
        let (project, n) = (project_id.to_string(), name.clone());
        let doomed = blocking(&self.state.trackers, move |s| {
            s.to_delete(&project, n.as_deref(), kind)
        })
        .await?;
        for t in &doomed {
            let change = tracker_change("deleteTracker", t, None);
            let (project, id) = (t.project_id.clone(), t.id.clone());
            let delete = blocking(&self.state.trackers, move |s| {
                let t = s.get(&project, &id)?;
                s.delete(&project, Some(&t.tracker_name), Some(t.tracker_type))
            });
            self.audited(&change, StatusCode::NO_CONTENT, delete)
                .await?;
        }
        Ok(StatusCode::NO_CONTENT)
    }
}

/// A change of `tracker`.
fn tracker_change<'a>(
    trace_name: &'static str,
    tracker: &'a Tracker,
    request: Option<&'a Value>,
) -> Change<'a> {
    Change::tracker(
        &tracker.project_id,
        trace_name,
        (&tracker.id, &tracker.tracker_name),
        request,
    )
}

// ---- v3 ----

pub async fn create_v3(
    c: Call,
    Path(project_id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let (bytes, json) = body_of(&c, body).await?;
    let spec = parse_v3_create(&bytes)?;
    let tracker = c.create_tracker(&project_id, spec, json.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(tracker.to_v3_json())).into_response())
}

pub async fn update_v3(
    c: Call,
    Path(project_id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let (bytes, json) = body_of(&c, body).await?;
    let spec = parse_v3_update(&bytes)?;
    c.update_tracker(&project_id, spec, json.as_ref()).await?;
    Ok(StatusCode::OK)
}

#[derive(Deserialize)]
pub struct TrackerParams {
    tracker_name: Option<String>,
    tracker_type: Option<String>,
}

impl TrackerParams {
    fn kind(&self) -> Result<Option<TrackerType>, ApiError> {
        Ok(self
            .tracker_type
            .as_deref()
            .map(parse_tracker_type_param)
            .transpose()?)
    }
}

pub async fn list_v3(
    c: Call,
    Path(project_id): Path<String>,
    Query(params): Query<TrackerParams>,
) -> Result<Json<Value>, ApiError> {
    let kind = params.kind()?;
    let trackers = blocking(&c.state.trackers, move |s| {
        s.list(&project_id, params.tracker_name.as_deref(), kind)
    })
    .await?;
    let trackers: Vec<Value> = trackers
        .iter()
        .map(|t| with_lts_status(&c, t, t.to_v3_json()))
        .collect();
    Ok(Json(json!({ "trackers": trackers })))
}

/// Adds the delivery status of a streaming tracker to its `lts`:
/// `"status": "enabled"`, or `"error"` with `"detail"` (`unreachable`,
/// `rejected`, `tlsError`, `noSink`).
fn with_lts_status(c: &Call, t: &Tracker, mut v: Value) -> Value {
    if let Some(status) = c.state.lts.status(t) {
        let lts = &mut v["lts"];
        match status {
            LtsStatus::Enabled => lts["status"] = json!("enabled"),
            LtsStatus::Error(why) => {
                lts["status"] = json!("error");
                lts["detail"] = json!(why.as_str());
            }
        }
    }
    v
}

pub async fn delete_v3(
    c: Call,
    Path(project_id): Path<String>,
    Query(params): Query<TrackerParams>,
) -> Result<StatusCode, ApiError> {
    let kind = params.kind()?;
    c.delete_trackers(&project_id, params.tracker_name, kind)
        .await
}

// ---- v1.0: the management tracker only ----

pub async fn create_v1(
    c: Call,
    Path(project_id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let (bytes, json) = body_of(&c, body).await?;
    let spec = parse_v1_create(&bytes)?;
    let tracker = c.create_tracker(&project_id, spec, json.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(tracker.to_v1_created_json())).into_response())
}

#[derive(Deserialize)]
pub struct V1Path {
    project_id: String,
    tracker_name: String,
}

/// Answers the modified tracker: the reference shows no body, but the
/// clients (otcextensions, OpenStack4j) read one, as the public service
/// sends it.
pub async fn update_v1(
    c: Call,
    Path(p): Path<V1Path>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (bytes, json) = body_of(&c, body).await?;
    let spec = parse_v1_update(&p.tracker_name, &bytes)?;
    let tracker = c.update_tracker(&p.project_id, spec, json.as_ref()).await?;
    Ok(Json(tracker.to_v1_json()))
}

#[derive(Deserialize)]
pub struct V1Params {
    tracker_name: Option<String>,
}

/// v1.0 answers one object: the management tracker.
pub async fn list_v1(
    c: Call,
    Path(project_id): Path<String>,
    Query(params): Query<V1Params>,
) -> Result<Json<Value>, ApiError> {
    let name = params.tracker_name.unwrap_or(SYSTEM_TRACKER_NAME.into());
    let trackers = blocking(&c.state.trackers, move |s| {
        s.list(&project_id, Some(&name), Some(TrackerType::System))
    })
    .await?;
    let tracker = trackers.first().ok_or(ApiError::Tracker(TrackerError {
        code: "CTS.0214",
        status: 404,
        field: None,
        message: "the tracker does not exist".into(),
    }))?;
    Ok(Json(with_lts_status(&c, tracker, tracker.to_v1_json())))
}

pub async fn delete_v1(
    c: Call,
    Path(project_id): Path<String>,
    Query(params): Query<V1Params>,
) -> Result<StatusCode, ApiError> {
    let name = params.tracker_name.unwrap_or(SYSTEM_TRACKER_NAME.into());
    c.delete_trackers(&project_id, Some(name), Some(TrackerType::System))
        .await
}

// ---- tags ----

#[derive(Deserialize)]
pub struct TagPath {
    project_id: String,
    resource_type: String,
    resource_id: String,
}

impl TagPath {
    fn check(&self) -> Result<(), ApiError> {
        if self.resource_type == TAG_RESOURCE_TYPE {
            Ok(())
        } else {
            Err(ApiError::BadRequest {
                field: "resource_type",
                rule: format!(
                    "must be {TAG_RESOURCE_TYPE}: trackers are the only tagged resources"
                ),
            })
        }
    }
}

pub async fn create_tags(
    c: Call,
    Path(p): Path<TagPath>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    change_tags(c, p, body, "createTag", |s, project, id, bytes| {
        s.create_tags(project, id, &parse_tags_create(bytes)?)
    })
    .await
}

pub async fn delete_tags(
    c: Call,
    Path(p): Path<TagPath>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    change_tags(c, p, body, "deleteTag", |s, project, id, bytes| {
        s.delete_tags(project, id, &parse_tags_delete(bytes)?)
    })
    .await
}

/// Applies a tag request to the tracker of the path, and records it.
async fn change_tags<F>(
    c: Call,
    p: TagPath,
    body: Body,
    trace_name: &'static str,
    apply: F,
) -> Result<StatusCode, ApiError>
where
    F: FnOnce(&TrackerStore, &str, &str, &[u8]) -> Result<Tracker, TrackerError> + Send + 'static,
{
    p.check()?;
    let (bytes, json) = body_of(&c, body).await?;
    let (project, id) = (p.project_id.clone(), p.resource_id.clone());
    let tracker = blocking(&c.state.trackers, move |s| s.get(&project, &id)).await?;
    let change = tracker_change(trace_name, &tracker, json.as_ref());
    let tag = blocking(&c.state.trackers, move |s| {
        apply(s, &p.project_id, &p.resource_id, &bytes)
    });
    c.audited(&change, StatusCode::NO_CONTENT, tag).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- quotas and the catalog ----

pub async fn quotas(c: Call, Path(project_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let project = project_id.clone();
    let used = crate::api::notifications::blocking(&c.state, move |s, _| s.count(&project)).await?;
    let quotas = blocking(&c.state.trackers, move |s| s.quotas(&project_id, used)).await?;
    Ok(Json(json!({ "resources": quotas })))
}

#[derive(Deserialize)]
pub struct OperationParams {
    service_type: Option<String>,
    resource_type: Option<String>,
}

pub async fn operations(
    c: Call,
    Query(params): Query<OperationParams>,
) -> Result<Json<Value>, ApiError> {
    let operations = c.state.catalog.operations(
        &c.caller.domain_id,
        params.service_type.as_deref(),
        params.resource_type.as_deref(),
    )?;
    Ok(Json(json!({ "operations": operations })))
}

/// `GET /v3/{domain_id}/resources` (the route names the segment
/// `project_id`; the authorization layer checks it is the caller's domain).
pub async fn resources(c: Call) -> Json<Value> {
    let resources = c.state.catalog.resources(&c.caller.domain_id);
    Json(json!({ "resources": resources }))
}

pub async fn user_resources(c: Call, Path(project_id): Path<String>) -> Json<Value> {
    let users: Vec<Value> = c
        .state
        .catalog
        .users(&project_id, now_ms())
        .into_iter()
        .map(|name| json!({ "name": name }))
        .collect();
    Json(json!({ "users": users }))
}
