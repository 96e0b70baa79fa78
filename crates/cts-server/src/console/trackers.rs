//! The Tracker page: the project's trackers with their status (and why,
//! in error), bucket, prefix, encryption, validation and analysis; create,
//! modify, enable, disable and delete. Forms become the v3 API's request
//! bodies and go through its parsers and its `Call` methods, so the rules,
//! their messages and the audit trail are the API's.

use askama::Template;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Map, Value};

use cts_tracker::{
    parse_tracker_type_param, parse_v3_create, parse_v3_update, Tracker, TrackerStatus, TrackerType,
};

use super::view::{html, time_utc, Chrome, ConfirmPage};
use super::{action, allowed, answer, done, PageError, Signed, Source};

const PAGE: &str = "/console/trackers";
use crate::api::trackers::blocking;
use crate::auth::Permission;
use crate::error::ApiError;
use crate::state::AppState;

/// The names of the project's data trackers (the Trace List's filter).
pub async fn data_tracker_names(state: &AppState, project: &str) -> Result<Vec<String>, ApiError> {
    let project = project.to_string();
    let trackers = blocking(&state.trackers, move |s| {
        s.list(&project, None, Some(TrackerType::Data))
    })
    .await?;
    Ok(trackers.into_iter().map(|t| t.tracker_name).collect())
}

/// A tracker as the table shows it.
pub struct Row {
    pub name: String,
    pub kind: &'static str,
    pub status: &'static str,
    /// Why the tracker is in error.
    pub detail: String,
    pub bucket: String,
    pub prefix: String,
    pub encryption: String,
    pub validation: bool,
    pub analysis: bool,
    pub data_bucket: String,
    pub created: String,
}

impl Row {
    fn of(t: &Tracker) -> Row {
        let detail = match t.status {
            TrackerStatus::Error(d) => d.as_str().to_string(),
            _ => String::new(),
        };
        let encryption = match (&t.kms_id, t.is_support_trace_files_encryption) {
            (Some(k), true) => format!("on (key {k})"),
            (_, true) => "on".into(),
            _ => "off".into(),
        };
        Row {
            name: t.tracker_name.clone(),
            kind: t.tracker_type.as_str(),
            status: t.status.as_str(),
            detail,
            bucket: t.obs_info.bucket_name.clone(),
            prefix: t.obs_info.file_prefix_name.clone(),
            encryption,
            validation: t.is_support_validate,
            analysis: t.lts.is_lts_enabled,
            data_bucket: t
                .data_bucket
                .as_ref()
                .map(|b| b.data_bucket_name.clone())
                .unwrap_or_default(),
            created: time_utc(t.create_time),
        }
    }
}

/// The fields of the create and modify form.
#[derive(Debug, Clone, Default)]
pub struct TrackerForm {
    pub tracker_type: String,
    pub tracker_name: String,
    pub bucket_name: String,
    pub file_prefix_name: String,
    pub is_obs_created: bool,
    pub bucket_lifecycle: String,
    pub is_support_validate: bool,
    pub encryption: bool,
    pub kms_id: String,
    pub is_lts_enabled: bool,
    pub data_bucket_name: String,
    pub data_read: bool,
    pub data_write: bool,
}

impl TrackerForm {
    fn of_post(s: &Signed) -> TrackerForm {
        let text = |n: &str| s.field(n).trim().to_string();
        let on = |n: &str| !s.field(n).is_empty();
        TrackerForm {
            tracker_type: text("tracker_type"),
            tracker_name: text("tracker_name"),
            bucket_name: text("bucket_name"),
            file_prefix_name: text("file_prefix_name"),
            is_obs_created: on("is_obs_created"),
            bucket_lifecycle: text("bucket_lifecycle"),
            is_support_validate: on("is_support_validate"),
            encryption: on("is_support_trace_files_encryption"),
            kms_id: text("kms_id"),
            is_lts_enabled: on("is_lts_enabled"),
            data_bucket_name: text("data_bucket_name"),
            data_read: on("data_event_read"),
            data_write: on("data_event_write"),
        }
    }

    fn of_tracker(t: &Tracker) -> TrackerForm {
        let events: Vec<&str> = t
            .data_bucket
            .iter()
            .flat_map(|b| b.data_event.iter().map(|e| e.as_str()))
            .collect();
        TrackerForm {
            tracker_type: t.tracker_type.as_str().into(),
            tracker_name: t.tracker_name.clone(),
            bucket_name: t.obs_info.bucket_name.clone(),
            file_prefix_name: t.obs_info.file_prefix_name.clone(),
            is_obs_created: t.obs_info.is_obs_created,
            bucket_lifecycle: match t.obs_info.bucket_lifecycle {
                0 => String::new(),
                d => d.to_string(),
            },
            is_support_validate: t.is_support_validate,
            encryption: t.is_support_trace_files_encryption,
            kms_id: t.kms_id.clone().unwrap_or_default(),
            is_lts_enabled: t.lts.is_lts_enabled,
            data_bucket_name: t
                .data_bucket
                .as_ref()
                .map(|b| b.data_bucket_name.clone())
                .unwrap_or_default(),
            data_read: events.contains(&"READ"),
            data_write: events.contains(&"WRITE"),
        }
    }

    /// The v3 request body (`create`: CreateTracker, else UpdateTracker).
    /// Values go as typed, so the API's parser names a bad one.
    fn body(&self, create: bool) -> Value {
        let mut b = Map::new();
        b.insert("tracker_type".into(), self.tracker_type.as_str().into());
        b.insert("tracker_name".into(), self.tracker_name.as_str().into());
        if !create || !self.bucket_name.is_empty() {
            let mut obs = Map::new();
            obs.insert("bucket_name".into(), self.bucket_name.as_str().into());
            obs.insert(
                "file_prefix_name".into(),
                self.file_prefix_name.as_str().into(),
            );
            obs.insert("is_obs_created".into(), self.is_obs_created.into());
            if !self.bucket_lifecycle.is_empty() {
                let days = self
                    .bucket_lifecycle
                    .parse::<i64>()
                    .map_or_else(|_| Value::from(self.bucket_lifecycle.as_str()), Value::from);
                obs.insert("bucket_lifecycle".into(), days);
            }
            b.insert("obs_info".into(), Value::Object(obs));
        }
        b.insert(
            "is_support_validate".into(),
            self.is_support_validate.into(),
        );
        b.insert("is_lts_enabled".into(), self.is_lts_enabled.into());
        if self.tracker_type == "data" {
            if create {
                let mut events = Vec::new();
                if self.data_read {
                    events.push("READ");
                }
                if self.data_write {
                    events.push("WRITE");
                }
                b.insert(
                    "data_bucket".into(),
                    json!({"data_bucket_name": self.data_bucket_name, "data_event": events}),
                );
            }
        } else {
            b.insert(
                "is_support_trace_files_encryption".into(),
                self.encryption.into(),
            );
            if !self.kms_id.is_empty() {
                b.insert("kms_id".into(), self.kms_id.as_str().into());
            }
        }
        Value::Object(b)
    }
}

#[derive(Template)]
#[template(path = "console/trackers.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<Row>,
    form: TrackerForm,
    error: Option<String>,
    notice: Option<String>,
}

async fn list_page(
    state: &AppState,
    s: &Signed,
    form: TrackerForm,
    error: Option<String>,
    notice: Option<String>,
) -> Result<ListPage, PageError> {
    allowed(state, s, Permission::CtsRead).await?;
    let can_write = allowed(state, s, Permission::CtsWrite).await.is_ok();
    let project = s.project().to_string();
    let trackers = blocking(&state.trackers, move |st| st.list(&project, None, None)).await?;
    Ok(ListPage {
        chrome: Chrome::of(s, "Trackers", "trackers", can_write),
        rows: trackers.iter().map(Row::of).collect(),
        form,
        error,
        notice,
    })
}

#[derive(serde::Deserialize)]
pub struct Notice {
    done: Option<String>,
}

/// `GET /console/trackers`.
pub async fn list(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    Query(n): Query<Notice>,
) -> Result<Response, PageError> {
    let form = TrackerForm {
        tracker_type: "data".into(),
        data_read: true,
        data_write: true,
        ..TrackerForm::default()
    };
    let page = list_page(&state, &s, form, None, n.done).await?;
    Ok(html(&page).into_response())
}

/// `POST /console/trackers`: create.
pub async fn create(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    req: Request,
) -> Result<Response, PageError> {
    allowed(&state, &s, Permission::CtsWrite).await?;
    let form = TrackerForm::of_post(&s);
    let body = form.body(true);
    let c = Source::of(&req).call(&state, &s);
    let result = async {
        let spec = parse_v3_create(body.to_string().as_bytes())?;
        c.create_tracker(s.project(), spec, Some(&body)).await
    }
    .await;
    answer(
        result,
        PAGE,
        |t| format!("Created tracker {}", t.tracker_name),
        |refused| list_page(&state, &s, form, Some(refused), None),
    )
    .await
}

#[derive(Template)]
#[template(path = "console/tracker_edit.html")]
struct EditPage {
    chrome: Chrome,
    form: TrackerForm,
    error: Option<String>,
}

#[derive(serde::Deserialize)]
pub struct Which {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    action: Option<String>,
}

async fn find(
    state: &AppState,
    project: &str,
    name: &str,
    kind: &str,
) -> Result<Tracker, ApiError> {
    let kind = parse_tracker_type_param(kind)?;
    let (project, n) = (project.to_string(), name.to_string());
    let found = blocking(&state.trackers, move |s| {
        s.list(&project, Some(&n), Some(kind))
    })
    .await?;
    found.into_iter().next().ok_or(ApiError::ResourceNotFound {
        what: "tracker",
        id: name.to_string(),
    })
}

/// `GET /console/trackers/edit?name=&type=`.
pub async fn edit(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    Query(w): Query<Which>,
) -> Result<Response, PageError> {
    allowed(&state, &s, Permission::CtsWrite).await?;
    let t = find(&state, s.project(), &w.name, &w.kind).await?;
    let page = EditPage {
        chrome: Chrome::of(&s, "Modify tracker", "trackers", true),
        form: TrackerForm::of_tracker(&t),
        error: None,
    };
    Ok(html(&page).into_response())
}

/// `POST /console/trackers/edit`: modify.
pub async fn update(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    req: Request,
) -> Result<Response, PageError> {
    allowed(&state, &s, Permission::CtsWrite).await?;
    let form = TrackerForm::of_post(&s);
    let body = form.body(false);
    let c = Source::of(&req).call(&state, &s);
    let result = async {
        let spec = parse_v3_update(body.to_string().as_bytes())?;
        c.update_tracker(s.project(), spec, Some(&body)).await
    }
    .await;
    answer(
        result,
        PAGE,
        |t| format!("Modified tracker {}", t.tracker_name),
        |refused| async {
            Ok(EditPage {
                chrome: Chrome::of(&s, "Modify tracker", "trackers", true),
                form,
                error: Some(refused),
            })
        },
    )
    .await
}

/// `GET /console/trackers/confirm?action=disable|delete&name=&type=`: the
/// question asked before a tracker stops recording or goes.
pub async fn confirm(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    Query(w): Query<Which>,
) -> Result<Response, PageError> {
    allowed(&state, &s, Permission::CtsWrite).await?;
    let act = action(w.action.as_deref())?;
    let t = find(&state, s.project(), &w.name, &w.kind).await?;
    let (name, kind) = (t.tracker_name, t.tracker_type.as_str());
    let question = match (act, kind) {
        ("delete", _) => format!(
            "Delete the {kind} tracker {name}? Its settings are removed; trace files already \
             written stay in their bucket."
        ),
        ("disable", "system") => format!(
            "Disable the {kind} tracker {name}? Management traces are no longer recorded or \
             transferred until it is enabled again."
        ),
        ("disable", _) => format!(
            "Disable the {kind} tracker {name}? The bucket's operations are no longer recorded \
             until it is enabled again."
        ),
        _ => format!("Enable the {kind} tracker {name}?"),
    };
    let page = ConfirmPage {
        chrome: Chrome::of(&s, "Confirm", "trackers", true),
        question,
        post_to: "/console/trackers/confirm",
        hidden: vec![
            ("action".into(), act.into()),
            ("name".into(), name),
            ("type".into(), kind.into()),
        ],
        button: format!("Yes, {act}"),
        cancel: PAGE,
    };
    Ok(html(&page).into_response())
}

/// `POST /console/trackers/confirm` (`action`, `name`, `type`): enable,
/// disable or delete.
pub async fn act(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    req: Request,
) -> Result<Response, PageError> {
    allowed(&state, &s, Permission::CtsWrite).await?;
    let w = Which {
        name: s.field("name").to_string(),
        kind: s.field("type").to_string(),
        action: Some(s.field("action").to_string()),
    };
    let act = action(w.action.as_deref())?;
    let kind = parse_tracker_type_param(&w.kind).map_err(ApiError::from)?;
    let c = Source::of(&req).call(&state, &s);
    match act {
        "delete" => {
            c.delete_trackers(s.project(), Some(w.name.clone()), Some(kind))
                .await?;
            Ok(done(PAGE, &format!("Deleted tracker {}", w.name)))
        }
        _ => {
            let status = if act == "enable" {
                "enabled"
            } else {
                "disabled"
            };
            let body =
                json!({"tracker_type": kind.as_str(), "tracker_name": w.name, "status": status});
            let spec = parse_v3_update(body.to_string().as_bytes()).map_err(ApiError::from)?;
            let t = c.update_tracker(s.project(), spec, Some(&body)).await?;
            let what = if act == "enable" {
                "Enabled tracker"
            } else {
                "Disabled tracker"
            };
            Ok(done(PAGE, &format!("{what} {}", t.tracker_name)))
        }
    }
}
