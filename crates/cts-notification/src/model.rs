//! The notification as stored, and its wire view (the reference's
//! `NotificationsResponseBody`).
//!
//! The serde derives are the storage form (a JSON column), not a wire
//! format: answers are built by [`Notification::to_json`].

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::filter::Filter;

/// `operation_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationType {
    /// Every recorded trace fires (`operations` are not used).
    Complete,
    /// Only the traces `operations` list fire.
    Customized,
}

impl OperationType {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationType::Complete => "complete",
            OperationType::Customized => "customized",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<OperationType> {
        match s {
            "complete" => Some(OperationType::Complete),
            "customized" => Some(OperationType::Customized),
            _ => None,
        }
    }
}

/// `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Enabled,
    Disabled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Enabled => "enabled",
            Status::Disabled => "disabled",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Status> {
        match s {
            "enabled" => Some(Status::Enabled),
            "disabled" => Some(Status::Disabled),
            _ => None,
        }
    }
}

/// `notification_type`: what `topic_id` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationType {
    /// An SMN topic (`urn:smn:…`).
    Smn,
    /// A function (`urn:fss:…`).
    Fun,
}

impl NotificationType {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::Smn => "smn",
            NotificationType::Fun => "fun",
        }
    }

    /// The path parameter of the query operation.
    pub fn parse(s: &str) -> Option<NotificationType> {
        match s {
            "smn" => Some(NotificationType::Smn),
            "fun" => Some(NotificationType::Fun),
            _ => None,
        }
    }

    /// A function URN makes a `fun` notification; anything else (or no
    /// topic yet) an `smn` one.
    pub fn of_topic(topic_id: Option<&str>) -> NotificationType {
        match topic_id {
            Some(t) if t.starts_with(FUNCTION_URN_PREFIX) => NotificationType::Fun,
            _ => NotificationType::Smn,
        }
    }
}

/// Function URNs (`urn:fss:{region}:{project}:function:…`).
pub const FUNCTION_URN_PREFIX: &str = "urn:fss:";

/// One entry of `operations`: traces of a service and resource type, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub service_type: String,
    pub resource_type: String,
    pub trace_names: Vec<String>,
}

/// One entry of `notify_user_list`: users of an IAM group, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyUsers {
    pub user_group: String,
    pub user_list: Vec<String>,
}

/// A user of `notify_user_list` as the identity store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedUser {
    pub id: String,
    pub name: String,
}

/// A key event notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub notification_id: String,
    pub project_id: String,
    pub domain_id: String,
    pub notification_name: String,
    pub operation_type: OperationType,
    pub operations: Vec<Operation>,
    pub notify_user_list: Vec<NotifyUsers>,
    /// `notify_user_list` resolved when it was set: only these users fire.
    pub users: Vec<ResolvedUser>,
    pub topic_id: Option<String>,
    pub filter: Option<Filter>,
    pub status: Status,
    pub create_time: i64,
    /// While enabled: the instant (ms) it was last enabled or changed,
    /// picked before the change's trace was written. Traces recorded at
    /// or after it are matched against this version of the rule.
    pub since: Option<i64>,
}

impl Notification {
    pub fn notification_type(&self) -> NotificationType {
        NotificationType::of_topic(self.topic_id.as_deref())
    }

    /// Whether the matcher evaluates it.
    pub fn is_active(&self) -> bool {
        self.status == Status::Enabled && self.topic_id.is_some()
    }

    /// The reference's `NotificationsResponseBody`.
    pub fn to_json(&self) -> Value {
        let mut o = json!({
            "notification_id": self.notification_id,
            "notification_name": self.notification_name,
            "notification_type": self.notification_type().as_str(),
            "operation_type": self.operation_type.as_str(),
            "operations": self.operations,
            "notify_user_list": self.notify_user_list,
            "status": self.status.as_str(),
            "project_id": self.project_id,
            "domain_id": self.domain_id,
            "create_time": self.create_time,
        });
        if let Some(t) = &self.topic_id {
            o["topic_id"] = t.as_str().into();
        }
        if let Some(f) = &self.filter {
            o["filter"] = f.to_json();
        }
        o
    }
}
