//! Key event notifications of the project (`--project-id`): `cts
//! notifications`, over the v3 notification API. A notification is named
//! by its name (or id); create and update send the whole rule, built from
//! the options (update starts from the rule as it is).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::enc;
use crate::ctx::{Column, Ctx};
use crate::timefmt;

const COLUMNS: &[Column] = &[
    ("NAME", "/notification_name"),
    ("ID", "/notification_id"),
    ("TYPE", "/notification_type"),
    ("OPERATIONS", "/operation_type"),
    ("STATUS", "/status"),
    ("TOPIC", "/topic_id"),
    ("CREATED", "/create_time"),
];

/// A notification, shown whole.
const DETAIL_COLUMNS: &[Column] = &[
    ("ID", "/notification_id"),
    ("NAME", "/notification_name"),
    ("TYPE", "/notification_type"),
    ("STATUS", "/status"),
    ("TOPIC", "/topic_id"),
    ("OPERATION_TYPE", "/operation_type"),
    ("OPERATIONS", "/operations"),
    ("USERS", "/notify_user_list"),
    ("FILTER", "/filter"),
    ("CREATED", "/create_time"),
];

const MATCH_COLUMNS: &[Column] = &[
    ("TIME", "/time"),
    ("SERVICE", "/service_type"),
    ("RESOURCE_TYPE", "/resource_type"),
    ("TRACE_NAME", "/trace_name"),
    ("USER", "/user/name"),
    ("RESOURCE", "/resource_name"),
    ("CODE", "/code"),
    ("RATING", "/trace_rating"),
];

/// The rule's settings; update replaces those given.
#[derive(Args)]
pub struct RuleOptions {
    /// Fire for these operations only: SERVICE:RESOURCE_TYPE:TRACE[,TRACE…]
    /// (repeat for more; e.g. ECS:ecs:deleteServer,stopServer).
    #[arg(long = "operation", value_name = "SERVICE:RESOURCE:TRACES")]
    operations: Vec<String>,
    /// Fire for every operation (the default when no --operation is given).
    #[arg(long, conflicts_with = "operations")]
    complete: bool,
    /// Fire for these users only: GROUP:USER[,USER…] (repeat for more groups).
    #[arg(long = "users", value_name = "GROUP:USERS")]
    users: Vec<String>,
    /// Advanced filter rule, "field = value" or "field != value" (repeat;
    /// fields api_version, code, trace_rating, trace_type, resource_id,
    /// resource_name). "" removes the filter.
    #[arg(long = "filter", value_name = "RULE")]
    filters: Vec<String>,
    /// A trace passes the filter when one rule holds (default: all of them).
    #[arg(long)]
    any: bool,
    /// Topic (or function) URN the messages go to.
    #[arg(long)]
    topic: Option<String>,
}

impl RuleOptions {
    /// Writes the options given into `body` (a whole rule).
    fn apply(&self, body: &mut Value) -> Result<()> {
        if self.complete {
            body["operation_type"] = "complete".into();
            body["operations"] = json!([]);
        }
        if !self.operations.is_empty() {
            let ops = self
                .operations
                .iter()
                .map(|o| operation(o))
                .collect::<Result<Vec<_>>>()?;
            body["operation_type"] = "customized".into();
            body["operations"] = Value::Array(ops);
        }
        if !self.users.is_empty() {
            let users = self
                .users
                .iter()
                .map(|u| users(u))
                .collect::<Result<Vec<_>>>()?;
            body["notify_user_list"] = Value::Array(users);
        }
        if self.filters.iter().any(|f| f.is_empty()) {
            body.as_object_mut().map(|o| o.remove("filter"));
        } else if !self.filters.is_empty() || self.any {
            let rules = if self.filters.is_empty() {
                body["filter"]["rule"].clone()
            } else {
                json!(self.filters)
            };
            body["filter"] = json!({
                "is_support_filter": true,
                "condition": if self.any { "OR" } else { "AND" },
                "rule": rules,
            });
        }
        if let Some(t) = &self.topic {
            body["topic_id"] = t.as_str().into();
        }
        Ok(())
    }
}

fn operation(s: &str) -> Result<Value> {
    let mut parts = s.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(service), Some(resource), Some(traces)) if !traces.is_empty() => Ok(json!({
            "service_type": service,
            "resource_type": resource,
            "trace_names": traces.split(',').collect::<Vec<_>>(),
        })),
        _ => bail!("--operation {s:?}: the form is SERVICE:RESOURCE_TYPE:TRACE[,TRACE…]"),
    }
}

fn users(s: &str) -> Result<Value> {
    match s.split_once(':') {
        Some((group, list)) if !list.is_empty() => Ok(json!({
            "user_group": group,
            "user_list": list.split(',').collect::<Vec<_>>(),
        })),
        _ => bail!("--users {s:?}: the form is GROUP:USER[,USER…]"),
    }
}

#[derive(Subcommand)]
pub enum NotificationsCommand {
    /// List the project's notifications.
    List {
        /// Only the notification with this name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Show one notification whole.
    Show { notification: String },
    /// Create a notification (enabled when it names a --topic).
    Create {
        /// 1-64 letters, digits and underscores.
        name: String,
        #[command(flatten)]
        options: RuleOptions,
    },
    /// Change a notification: the options given replace its settings.
    Update {
        /// Name or id.
        notification: String,
        /// New name.
        #[arg(long)]
        rename: Option<String>,
        #[command(flatten)]
        options: RuleOptions,
    },
    /// Send messages again (needs a topic: --topic, or the one it has).
    Enable {
        notification: String,
        #[arg(long)]
        topic: Option<String>,
    },
    /// Stop sending messages (the rule is kept).
    Disable { notification: String },
    /// Delete notifications.
    Delete {
        #[arg(required = true)]
        notifications: Vec<String>,
    },
    /// Evaluate a notification over the stored traces of a window: what
    /// would have fired (nothing is sent).
    DryRun {
        notification: String,
        /// Start: ms or s since 1970, RFC 3339, today, or a duration ago (1h).
        #[arg(long, default_value = "1h")]
        from: String,
        #[arg(long, default_value = "now")]
        to: String,
        /// Matching traces shown (all are counted).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

impl Ctx<'_> {
    /// Every notification of the project (both types).
    fn notifications(&self, name: Option<&str>) -> Result<Vec<Value>> {
        let query: Vec<(&str, String)> = name
            .map(|n| ("notification_name", n.to_string()))
            .into_iter()
            .collect();
        let mut all = Vec::new();
        for kind in ["smn", "fun"] {
            all.extend(self.get_list(
                &self.project_path(&format!("/notifications/{kind}"))?,
                &query,
                "notifications",
            )?);
        }
        Ok(all)
    }

    /// The notification named (or with the id) `n`.
    fn notification(&self, n: &str) -> Result<Value> {
        let all = self.notifications(None)?;
        all.into_iter()
            .find(|x| x["notification_name"] == n || x["notification_id"] == n)
            .with_context(|| format!("no notification named {n:?}"))
    }

    /// `PUT` of `current` with `status`, as the API takes a whole rule.
    fn put_notification(&self, current: &Value, status: &str) -> Result<Value> {
        let mut body = json!({"status": status});
        for field in [
            "notification_id",
            "notification_name",
            "operation_type",
            "operations",
            "notify_user_list",
            "topic_id",
            "filter",
        ] {
            if !current[field].is_null() {
                body[field] = current[field].clone();
            }
        }
        Ok(self
            .client
            .call(
                "PUT",
                &self.project_path("/notifications")?,
                &[],
                Some(&body),
            )?
            .body)
    }
}

pub fn notifications(c: &Ctx, cmd: NotificationsCommand) -> Result<()> {
    match cmd {
        NotificationsCommand::List { name } => {
            c.print_list(COLUMNS, &c.notifications(name.as_deref())?)
        }
        NotificationsCommand::Show { notification } => {
            c.print_one(DETAIL_COLUMNS, &c.notification(&notification)?)
        }
        NotificationsCommand::Create { name, options } => {
            let mut body = json!({"notification_name": name, "operation_type": "complete"});
            options.apply(&mut body)?;
            let reply =
                c.client
                    .call("POST", &c.project_path("/notifications")?, &[], Some(&body))?;
            c.print_one(DETAIL_COLUMNS, &reply.body)
        }
        NotificationsCommand::Update {
            notification,
            rename,
            options,
        } => {
            let mut current = c.notification(&notification)?;
            options.apply(&mut current)?;
            if let Some(r) = rename {
                current["notification_name"] = r.into();
            }
            let status = current["status"].as_str().unwrap_or("disabled").to_string();
            c.print_one(DETAIL_COLUMNS, &c.put_notification(&current, &status)?)
        }
        NotificationsCommand::Enable {
            notification,
            topic,
        } => {
            let mut current = c.notification(&notification)?;
            if let Some(t) = topic {
                current["topic_id"] = t.into();
            }
            c.put_notification(&current, "enabled")?;
            c.done(format!("notification {notification} is enabled"))
        }
        NotificationsCommand::Disable { notification } => {
            c.put_notification(&c.notification(&notification)?, "disabled")?;
            c.done(format!("notification {notification} is disabled"))
        }
        NotificationsCommand::Delete { notifications } => {
            let ids = notifications
                .iter()
                .map(|n| {
                    Ok(c.notification(n)?["notification_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string())
                })
                .collect::<Result<Vec<_>>>()?;
            let query = [("notification_id", ids.join(","))];
            c.client
                .call("DELETE", &c.project_path("/notifications")?, &query, None)?;
            c.done(format!("deleted {}", notifications.join(", ")))
        }
        NotificationsCommand::DryRun {
            notification,
            from,
            to,
            limit,
        } => {
            let id = c.notification(&notification)?["notification_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let now = timefmt::now_ms();
            let query = [
                ("from", timefmt::parse_time_arg(&from, now)?.to_string()),
                ("to", timefmt::parse_time_arg(&to, now)?.to_string()),
                ("limit", limit.to_string()),
            ];
            let path = c.project_path(&format!("/notifications/{}/dry-run", enc(&id)))?;
            let run = c.client.call("POST", &path, &query, Some(&json!({})))?.body;
            if matches!(c.output, crate::Output::Json) {
                return c.print_one(&[], &run);
            }
            println!(
                "{} of {} traces would have fired {notification}{}",
                run["matched"],
                run["scanned"],
                if run["truncated"] == true {
                    " (stopped early: narrow the window)"
                } else {
                    ""
                }
            );
            let traces = run["traces"].as_array().cloned().unwrap_or_default();
            c.print_list(MATCH_COLUMNS, &traces)
        }
    }
}
