//! What trace transfer adds to the API: the encryption keys a tracker's
//! `kms_id` names, the public keys that verify digest signatures, and
//! `checkbucket` (can the server write to these buckets, and if not why).

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use cts_archive::{generate_age_key, AgeRecipient, WriteFailure};
use cts_tracker::EncryptionKey;

use crate::api::identity::{blocking, from_value, parse_body, Call, Change};
use crate::api::tokens::iso_time;
use crate::api::trackers;
use crate::error::ApiError;
use crate::state::now_ms;

fn key_json(k: &EncryptionKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "recipient": k.recipient,
        "create_time": k.created_at,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    recipient: Option<String>,
    #[serde(default)]
    generate: bool,
}

/// `POST /v3/{project_id}/encryption-keys`: registers `{"name",
/// "recipient": "age1…"}`, or with `{"name", "generate": true}` makes a
/// key pair, keeps the public half and answers the secret identity once.
pub async fn create_key(
    c: Call,
    Path(project_id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let raw: Value = parse_body(&c.state, body).await?;
    let b: NewKey = from_value(&raw)?;
    let (recipient, identity) = match (b.recipient, b.generate) {
        (Some(r), false) => {
            let parsed: AgeRecipient = r.parse().map_err(|e| ApiError::BadRequest {
                field: "recipient",
                rule: format!("must be an age X25519 recipient (age1…): {e}"),
            })?;
            (parsed.to_string(), None)
        }
        (None, true) => {
            let pair = generate_age_key();
            (pair.recipient.to_string(), Some(pair.identity))
        }
        _ => {
            return Err(ApiError::BadRequest {
                field: "recipient",
                rule: "give either recipient (age1…) or generate: true".into(),
            })
        }
    };
    let (project, name) = (project_id.clone(), b.name.clone());
    let key = trackers::blocking(&c.state.trackers, move |s| {
        s.create_key(&project, &name, &recipient, now_ms())
    })
    .await?;
    let mut body = json!({ "key": key_json(&key) });
    let change = Change::project_change(
        &project_id,
        "encryption_key",
        "createEncryptionKey",
        (&key.id, &key.name),
        Some(&raw),
    );
    // Recorded without the secret identity.
    let (store, project, id) = (c.state.trackers.clone(), project_id.clone(), key.id.clone());
    let undo = move || Ok(store.delete_key(&project, &id).map(drop)?);
    c.created(change, &body, undo).await?;
    if let Some(identity) = identity {
        // Shown once: the server keeps only the public half.
        body["identity"] = json!(identity.to_string());
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn list_keys(c: Call, Path(project_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let keys: Vec<Value> = trackers::blocking(&c.state.trackers, move |s| s.list_keys(&project_id))
        .await?
        .iter()
        .map(key_json)
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Deserialize)]
pub struct KeyPath {
    project_id: String,
    key_id: String,
}

pub async fn delete_key(c: Call, Path(p): Path<KeyPath>) -> Result<Response, ApiError> {
    let (project, id) = (p.project_id.clone(), p.key_id.clone());
    let key = trackers::blocking(&c.state.trackers, move |s| s.key(&project, &id)).await?;
    let change = Change::project_change(
        &p.project_id,
        "encryption_key",
        "deleteEncryptionKey",
        (&key.id, &key.name),
        None,
    );
    let (project, id) = (p.project_id.clone(), p.key_id.clone());
    let delete = trackers::blocking(&c.state.trackers, move |s| s.delete_key(&project, &id));
    c.audited(&change, StatusCode::NO_CONTENT, delete).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct KeyWindow {
    from: Option<i64>,
    to: Option<i64>,
}

/// `GET /v3/{project_id}/digest-public-keys?from=&to=` (ms): the keys that
/// signed digests in the window, for offline verification.
pub async fn public_keys(c: Call, Query(w): Query<KeyWindow>) -> Result<Json<Value>, ApiError> {
    let secs = |ms: Option<i64>| ms.map(|v| v.div_euclid(1000));
    let keys: Vec<Value> = c
        .state
        .transfer
        .public_keys(secs(w.from), secs(w.to))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .into_iter()
        .map(|k| {
            json!({
                "fingerprint": k.fingerprint,
                "public_key": k.public_key,
                "valid_from": k.valid_from.map(|s| iso_time(s * 1000)),
                "valid_to": k.valid_to.map(|s| iso_time(s * 1000)),
            })
        })
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

#[derive(Deserialize)]
struct CheckBuckets {
    buckets: Vec<Value>,
}

/// `POST /v3/{domain_id}/checkbucket`: per bucket, whether the server can
/// write there (it writes and removes a probe object), and why not; a
/// writable bucket holding trace files of a project other than the
/// caller's (its scoped project, else any of its domain) is reported as
/// `bucketPolicyError` too: on S3, sharing buckets is the operator's
/// policy, so this is where a tenant learns of it.
pub async fn check_buckets(c: Call, body: Body) -> Result<Json<Value>, ApiError> {
    let raw: Value = parse_body(&c.state, body).await?;
    let b: CheckBuckets = from_value(&raw)?;
    let own = own_projects(&c).await?;
    let mut out = Vec::with_capacity(b.buckets.len());
    for mut bucket in b.buckets {
        let name = bucket["bucket_name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let storage = c.state.transfer.storage();
        let response = match storage.check_write(&name).await {
            Ok(()) => match foreign_projects(&c, &name, &own).await {
                Some(others) => json!({
                    "success": false,
                    "response_code": 403,
                    "error_code": "bucketPolicyError",
                    "error_message": format!(
                        "the bucket holds trace files of other projects ({}): use a bucket \
                         of this project's own",
                        others.join(", ")
                    ),
                }),
                None => json!({"success": true, "response_code": 200}),
            },
            Err(e) => json!({
                "success": false,
                "response_code": e.status.unwrap_or(match e.failure {
                    WriteFailure::NoBucket => 404,
                    WriteFailure::PolicyError => 403,
                    WriteFailure::Other => 500,
                }),
                "error_code": e.detail().unwrap_or("error"),
                "error_message": e.message,
            }),
        };
        bucket["check_bucket_response"] = response;
        out.push(bucket);
    }
    Ok(Json(json!({ "buckets": out })))
}

/// The projects whose files belong in the caller's buckets.
async fn own_projects(c: &Call) -> Result<Vec<String>, ApiError> {
    if let Some(p) = &c.caller.project_scope {
        return Ok(vec![p.clone()]);
    }
    let identity = c.state.identity.clone();
    let filter = cts_identity::Filter {
        domain_id: Some(c.caller.domain_id.clone()),
        ..cts_identity::Filter::default()
    };
    let projects = blocking(move || identity.list_projects(&filter)).await?;
    Ok(projects.into_iter().map(|p| p.id).collect())
}

/// The other projects whose trace files lie in `bucket` (by the
/// `CloudTrace_{region}-{project_id}_` of their names), if any; nothing
/// when the bucket cannot be listed.
async fn foreign_projects(c: &Call, bucket: &str, own: &[String]) -> Option<Vec<String>> {
    let objects = c
        .state
        .transfer
        .storage()
        .list(bucket, "CloudTraces")
        .await
        .ok()?;
    let mut others: Vec<String> = objects
        .iter()
        .filter_map(|o| project_of(&o.key))
        .filter(|p| !own.iter().any(|o| o == p))
        .map(str::to_string)
        .collect();
    others.sort();
    others.dedup();
    (!others.is_empty()).then_some(others)
}

/// The project id in a trace file key
/// `CloudTraces/{region}/…/{prefix}_CloudTrace_{region}-{project_id}_…`.
fn project_of(key: &str) -> Option<&str> {
    let region = key.strip_prefix("CloudTraces/")?.split('/').next()?;
    let name = key.rsplit('/').next()?;
    let (_, rest) = name.split_once("CloudTrace_")?;
    let rest = rest.strip_prefix(region)?.strip_prefix('-')?;
    rest.split('_').next().filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::project_of;

    #[test]
    fn the_project_of_a_trace_file() {
        let key = "CloudTraces/eu-de/2016/5/30/system/ECS/logs_CloudTrace_eu-de-0a1b2c_2016-05-30T16-20-56Z_21d36ced8c8af71e.json.gz";
        assert_eq!(project_of(key), Some("0a1b2c"));
        let key = "CloudTraces/eu-de/2016/5/30/system/CloudTrace_eu-de-p1_2016-05-30T16-20-56Z_21d36ced8c8af71e.json.gz";
        assert_eq!(project_of(key), Some("p1"));
        assert_eq!(project_of("CloudTraces/eu-de/digest/x.json"), None);
        assert_eq!(project_of("other/eu-de/CloudTrace_eu-de-p1_x"), None);
    }
}
