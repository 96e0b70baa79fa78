//! The key event notifications page: list, create (complete or
//! customized: operations, users, filter rules, topic), modify, enable,
//! disable (confirmed), delete (confirmed), and the dry run of a rule shown
//! as the traces it would have matched. Every action calls the API's own
//! handler (`api::notifications`, `api::dry_run`) with the request body
//! the API documents, so its rules, messages and audit trail apply.

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value};

use super::traces::{Filters, Row};
use super::view::{html, time_utc, Chrome, ConfirmPage};
use super::{action, allowed, answer, done, PageError, Signed, Source};

const PAGE: &str = "/console/notifications";
use crate::api::{dry_run, notifications};
use crate::auth::Permission;
use crate::error::ApiError;
use crate::state::{now_ms, AppState};

/// A notification as the table shows it.
pub struct Item {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub operation_type: String,
    pub operations: String,
    pub users: String,
    pub topic: String,
    pub filter: String,
    pub status: String,
    pub created: String,
}

fn text_of(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Item {
    fn of(n: &Value) -> Item {
        let form = NotificationForm::of_json(n);
        Item {
            id: text_of(n, "notification_id"),
            name: text_of(n, "notification_name"),
            kind: text_of(n, "notification_type"),
            operation_type: text_of(n, "operation_type"),
            operations: form.operations.replace('\n', "; "),
            users: form.users.replace('\n', "; "),
            topic: text_of(n, "topic_id"),
            filter: form.rules.replace('\n', &format!(" {} ", form.condition)),
            status: text_of(n, "status"),
            created: n
                .get("create_time")
                .and_then(Value::as_i64)
                .map(time_utc)
                .unwrap_or_default(),
        }
    }
}

/// The create and modify form, as text the user edits: one operation
/// (`SERVICE resource_type name,name`), user group (`group: user, user`)
/// or filter rule (`key = value`) a line.
#[derive(Debug, Clone, Default)]
pub struct NotificationForm {
    pub id: String,
    pub name: String,
    pub operation_type: String,
    pub operations: String,
    pub users: String,
    pub topic_id: String,
    pub condition: String,
    pub rules: String,
    pub status: String,
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty())
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

impl NotificationForm {
    fn of_post(s: &Signed) -> NotificationForm {
        let t = |n: &str| s.field(n).trim().to_string();
        NotificationForm {
            id: t("notification_id"),
            name: t("notification_name"),
            operation_type: t("operation_type"),
            operations: t("operations"),
            users: t("users"),
            topic_id: t("topic_id"),
            condition: t("condition"),
            rules: t("rules"),
            status: t("status"),
        }
    }

    fn of_json(n: &Value) -> NotificationForm {
        let ops: Vec<String> = n["operations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| {
                format!(
                    "{} {} {}",
                    text_of(o, "service_type"),
                    text_of(o, "resource_type"),
                    strings(&o["trace_names"]).join(",")
                )
            })
            .collect();
        let users: Vec<String> = n["notify_user_list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|u| {
                format!(
                    "{}: {}",
                    text_of(u, "user_group"),
                    strings(&u["user_list"]).join(", ")
                )
            })
            .collect();
        let filter = &n["filter"];
        NotificationForm {
            id: text_of(n, "notification_id"),
            name: text_of(n, "notification_name"),
            operation_type: text_of(n, "operation_type"),
            operations: ops.join("\n"),
            users: users.join("\n"),
            topic_id: text_of(n, "topic_id"),
            condition: match text_of(filter, "condition") {
                c if c.is_empty() => "AND".into(),
                c => c,
            },
            rules: strings(&filter["rule"]).join("\n"),
            status: text_of(n, "status"),
        }
    }

    /// The API's request body (`update`: with `notification_id` and
    /// `status`). Lines go as typed, so the API's parser names a bad one.
    fn body(&self, update: bool) -> Value {
        let operations: Vec<Value> = lines(&self.operations)
            .map(|l| {
                let mut parts = l.split_whitespace();
                let mut o = json!({});
                if let Some(service) = parts.next() {
                    o["service_type"] = service.into();
                }
                if let Some(resource) = parts.next() {
                    o["resource_type"] = resource.into();
                }
                let names: Vec<String> = parts.flat_map(list).collect();
                o["trace_names"] = names.into();
                o
            })
            .collect();
        let users: Vec<Value> = lines(&self.users)
            .map(|l| {
                let (group, users) = l.split_once(':').unwrap_or((l, ""));
                json!({"user_group": group.trim(), "user_list": list(users)})
            })
            .collect();
        let mut b = json!({
            "notification_name": self.name,
            "operation_type": self.operation_type,
            "operations": operations,
            "notify_user_list": users,
        });
        if !self.topic_id.is_empty() {
            b["topic_id"] = self.topic_id.as_str().into();
        }
        let rules: Vec<&str> = lines(&self.rules).collect();
        if !rules.is_empty() {
            b["filter"] =
                json!({"condition": self.condition, "is_support_filter": true, "rule": rules});
        }
        if update {
            b["notification_id"] = self.id.as_str().into();
            b["status"] = self.status.as_str().into();
        }
        b
    }
}

#[derive(Template)]
#[template(path = "console/notifications.html")]
struct ListPage {
    chrome: Chrome,
    items: Vec<Item>,
    form: NotificationForm,
    error: Option<String>,
    notice: Option<String>,
}

/// Every notification of the project, through the API's list (both types).
async fn all(state: &AppState, s: &Signed, src: &Source) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    for kind in ["smn", "fun"] {
        let c = src.call(state, s);
        let path = Path((s.project().to_string(), kind.to_string()));
        let params =
            Query(serde_urlencoded::from_str("").map_err(|e| ApiError::Internal(e.to_string()))?);
        let answer = notifications::list(c, path, params).await?;
        out.extend(
            answer.0["notifications"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    Ok(out)
}

async fn list_page(
    state: &AppState,
    s: &Signed,
    src: &Source,
    form: NotificationForm,
    error: Option<String>,
    notice: Option<String>,
) -> Result<ListPage, PageError> {
    allowed(state, s, Permission::CtsRead).await?;
    let can_write = allowed(state, s, Permission::CtsWrite).await.is_ok();
    Ok(ListPage {
        chrome: Chrome::of(s, "Key event notifications", "notifications", can_write),
        items: all(state, s, src).await?.iter().map(Item::of).collect(),
        form,
        error,
        notice,
    })
}

/// `GET /console/notifications`.
pub async fn index(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    req: Request,
) -> Result<Response, PageError> {
    let src = Source::of(&req);
    let notice = req.uri().query().and_then(|q| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == "done")
            .map(|(_, v)| v)
    });
    let form = NotificationForm {
        operation_type: "complete".into(),
        condition: "AND".into(),
        ..NotificationForm::default()
    };
    let page = list_page(&state, &s, &src, form, None, notice).await?;
    Ok(html(&page).into_response())
}

/// `POST /console/notifications`: create.
pub async fn create(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    req: Request,
) -> Result<Response, PageError> {
    let src = Source::of(&req);
    allowed(&state, &s, Permission::CtsWrite).await?;
    let form = NotificationForm::of_post(&s);
    let body = Body::from(form.body(false).to_string());
    let c = src.call(&state, &s);
    let result = notifications::create(c, Path(s.project().to_string()), body).await;
    let made = format!("Created notification {}", form.name);
    answer(
        result,
        PAGE,
        |_| made,
        |refused| list_page(&state, &s, &src, form, Some(refused), None),
    )
    .await
}

/// The notification `id` of the project, as the API lists it.
async fn find(state: &AppState, s: &Signed, src: &Source, id: &str) -> Result<Value, ApiError> {
    all(state, s, src)
        .await?
        .into_iter()
        .find(|n| n["notification_id"] == id)
        .ok_or(ApiError::ResourceNotFound {
            what: "notification",
            id: id.to_string(),
        })
}

#[derive(serde::Deserialize)]
pub struct Which {
    id: String,
    action: Option<String>,
    range: Option<String>,
}

#[derive(Template)]
#[template(path = "console/notification_edit.html")]
struct EditPage {
    chrome: Chrome,
    form: NotificationForm,
    error: Option<String>,
}

/// `GET /console/notifications/edit?id=`.
pub async fn edit(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    Query(w): Query<Which>,
    req: Request,
) -> Result<Response, PageError> {
    let src = Source::of(&req);
    allowed(&state, &s, Permission::CtsWrite).await?;
    let n = find(&state, &s, &src, &w.id).await?;
    let page = EditPage {
        chrome: Chrome::of(&s, "Modify notification", "notifications", true),
        form: NotificationForm::of_json(&n),
        error: None,
    };
    Ok(html(&page).into_response())
}

/// `POST /console/notifications/edit`: modify.
pub async fn update(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    req: Request,
) -> Result<Response, PageError> {
    let src = Source::of(&req);
    allowed(&state, &s, Permission::CtsWrite).await?;
    let form = NotificationForm::of_post(&s);
    let body = Body::from(form.body(true).to_string());
    let c = src.call(&state, &s);
    let result = notifications::update(c, Path(s.project().to_string()), body).await;
    let made = format!("Modified notification {}", form.name);
    answer(
        result,
        PAGE,
        |_| made,
        |refused| async {
            Ok(EditPage {
                chrome: Chrome::of(&s, "Modify notification", "notifications", true),
                error: Some(refused),
                form,
            })
        },
    )
    .await
}

/// `GET /console/notifications/confirm?action=disable|delete&id=`.
pub async fn confirm(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    Query(w): Query<Which>,
    req: Request,
) -> Result<Response, PageError> {
    let src = Source::of(&req);
    allowed(&state, &s, Permission::CtsWrite).await?;
    let act = action(w.action.as_deref())?;
    let n = find(&state, &s, &src, &w.id).await?;
    let name = text_of(&n, "notification_name");
    let question = match act {
        "delete" => format!("Delete the notification {name}? Nobody is notified of its operations any more."),
        "disable" => format!("Disable the notification {name}? Nobody is notified of its operations until it is enabled again."),
        _ => format!("Enable the notification {name}?"),
    };
    let page = ConfirmPage {
        chrome: Chrome::of(&s, "Confirm", "notifications", true),
        question,
        post_to: "/console/notifications/confirm",
        hidden: vec![("action".into(), act.into()), ("id".into(), w.id)],
        button: format!("Yes, {act}"),
        cancel: "/console/notifications",
    };
    Ok(html(&page).into_response())
}

/// `POST /console/notifications/confirm` (`action`, `id`).
pub async fn act(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    req: Request,
) -> Result<Response, PageError> {
    let src = Source::of(&req);
    allowed(&state, &s, Permission::CtsWrite).await?;
    let act = action(Some(s.field("action")))?;
    let id = s.field("id").to_string();
    let n = find(&state, &s, &src, &id).await?;
    let name = text_of(&n, "notification_name");
    let c = src.call(&state, &s);
    let project = Path(s.project().to_string());
    if act == "delete" {
        let q = serde_urlencoded::to_string([("notification_id", &id)]).unwrap_or_default();
        let params =
            serde_urlencoded::from_str(&q).map_err(|e| ApiError::Internal(e.to_string()))?;
        notifications::delete(c, project, Query(params)).await?;
        return Ok(done(PAGE, &format!("Deleted notification {name}")));
    }
    let mut form = NotificationForm::of_json(&n);
    form.status = if act == "enable" {
        "enabled"
    } else {
        "disabled"
    }
    .into();
    let _updated =
        notifications::update(c, project, Body::from(form.body(true).to_string())).await?;
    Ok(done(
        PAGE,
        &format!(
            "{} notification {name}",
            if act == "enable" {
                "Enabled"
            } else {
                "Disabled"
            }
        ),
    ))
}

#[derive(Template)]
#[template(path = "console/dry_run.html")]
struct DryRunPage {
    chrome: Chrome,
    id: String,
    name: String,
    range: String,
    scanned: u64,
    matched: u64,
    truncated: bool,
    rows: Vec<Row>,
    query: String,
}

/// `GET /console/notifications/dry-run?id=&range=hour|day|week`: the
/// traces of the range the rule would have matched (nothing is sent).
pub async fn dry_run(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    Query(w): Query<Which>,
    req: Request,
) -> Result<Response, PageError> {
    let src = Source::of(&req);
    allowed(&state, &s, Permission::CtsRead).await?;
    let n = find(&state, &s, &src, &w.id).await?;
    let range = match w.range.as_deref() {
        Some(r @ ("day" | "week")) => r.to_string(),
        _ => "hour".to_string(),
    };
    let f = Filters::of(&[("range".to_string(), range.clone())]);
    let (from, to) = f.window(now_ms())?;
    let q = serde_urlencoded::to_string([
        ("from", from.to_string()),
        ("to", to.to_string()),
        ("limit", "200".into()),
    ])
    .unwrap_or_default();
    let params = serde_urlencoded::from_str(&q).map_err(|e| ApiError::Internal(e.to_string()))?;
    let c = src.call(&state, &s);
    let outcome = dry_run::dry_run(
        c,
        Path((s.project().to_string(), w.id.clone())),
        Query(params),
    )
    .await?
    .0;
    let count = |k: &str| outcome[k].as_u64().unwrap_or(0);
    let page = DryRunPage {
        chrome: Chrome::of(&s, "Dry run", "notifications", false),
        name: text_of(&n, "notification_name"),
        id: w.id,
        scanned: count("scanned"),
        matched: count("matched"),
        truncated: outcome["truncated"].as_bool().unwrap_or(false),
        rows: outcome["traces"]
            .as_array()
            .into_iter()
            .flatten()
            .map(Row::of)
            .collect(),
        query: f.query_string(),
        range,
    };
    Ok(html(&page).into_response())
}
