//! The API version documents (`GET /`, `GET /{version}`), shaped as the
//! CTS reference describes them and readable by keystoneauth's version
//! discovery, which probes the same paths.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use crate::api::base_url;
use crate::error::ApiError;
use crate::state::AppState;

/// (id, status) of every API version served.
const VERSIONS: [(&str, &str); 3] = [
    ("v1.0", "SUPPORTED"),
    ("v2.0", "SUPPORTED"),
    ("v3", "CURRENT"),
];

const UPDATED: &str = "2018-09-30T00:00:00Z";

fn document(base: &str, id: &str, status: &str) -> Value {
    let mut v = json!({
        "id": id,
        "links": [{"href": format!("{base}/{id}/"), "rel": "self"}],
        "min_version": "",
        "status": status,
        "updated": UPDATED,
        "version": "",
    });
    if id == "v3" {
        // The identity API lives under /v3 as well.
        v["media-types"] = json!([{
            "base": "application/json",
            "type": "application/vnd.openstack.identity-v3+json",
        }]);
    }
    v
}

pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    let base = base_url(&state, &headers);
    let versions: Vec<Value> = VERSIONS
        .iter()
        .map(|(id, status)| document(&base, id, status))
        .collect();
    Json(json!({ "versions": versions }))
}

pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (id, status) = VERSIONS
        .iter()
        .find(|(id, _)| *id == version)
        .ok_or(ApiError::UnknownVersion(version))?;
    let base = base_url(&state, &headers);
    Ok(Json(json!({ "version": document(&base, id, status) })))
}
