//! Request bodies of create (`POST`) and modify (`PUT`), read into one typed
//! [`NotificationSpec`] and checked field by field. Rules that need other
//! stores (the name is free, the quota, the topic exists, the users exist)
//! are checked by the store with a [`Directory`](crate::Directory).
//!
//! Unknown fields are ignored, as the public service does; a known field of
//! the wrong JSON type is CTS.0003 naming it; `null` counts as absent.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::error::NotificationError;
use crate::filter::{parse_rules, Condition, Filter};
use crate::model::{NotifyUsers, Operation, OperationType, Status};

/// Limits of the console (and the reference's "50 users in 10 user groups").
pub const MAX_USER_GROUPS: usize = 10;
pub const MAX_USERS: usize = 50;
/// "Up to 1000 operations of 100 services can be added for each notification."
pub const MAX_OPERATIONS: usize = 1000;
pub const MAX_SERVICES: usize = 100;

/// A checked create or modify request. Modify replaces the whole rule:
/// absent optional fields are cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationSpec {
    pub notification_name: String,
    pub operation_type: OperationType,
    pub operations: Vec<Operation>,
    pub notify_user_list: Vec<NotifyUsers>,
    pub topic_id: Option<String>,
    pub filter: Option<Filter>,
    /// Modify only (mandatory there); a creation is enabled when it names
    /// a topic, else disabled.
    pub status: Option<Status>,
    /// Modify only (mandatory there).
    pub notification_id: Option<String>,
}

/// `POST /v3/{project_id}/notifications`.
pub fn parse_create(body: &[u8]) -> Result<NotificationSpec, NotificationError> {
    parse(body, false)
}

/// `PUT /v3/{project_id}/notifications`.
pub fn parse_update(body: &[u8]) -> Result<NotificationSpec, NotificationError> {
    parse(body, true)
}

fn parse(body: &[u8], update: bool) -> Result<NotificationSpec, NotificationError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        NotificationError::whole_body(format!("the body must be a JSON object: {e}"))
    })?;
    let f = Fields::of(&v, "")?;
    let name = f.required_str("notification_name")?;
    check_name(name)?;
    let operation_type = f.required_str("operation_type")?;
    let operation_type = OperationType::parse(operation_type).ok_or_else(|| {
        NotificationError::field(
            "operation_type",
            format!("operation_type must be complete or customized, not {operation_type:?}"),
        )
    })?;
    let operations = operations(&f)?;
    if operation_type == OperationType::Customized && operations.is_empty() {
        return Err(NotificationError::field(
            "operations",
            "operations: a customized notification lists at least one operation",
        ));
    }
    let notify_user_list = users(&f)?;
    let topic_id = f.str("topic_id")?.filter(|t| !t.is_empty());
    let filter = filter(&f)?;
    let (status, notification_id) = if update {
        let s = f.required_str("status")?;
        let status = Status::parse(s).ok_or_else(|| {
            NotificationError::field(
                "status",
                format!("status must be enabled or disabled, not {s:?}"),
            )
        })?;
        if status == Status::Enabled && topic_id.is_none() {
            return Err(NotificationError::field(
                "topic_id",
                "topic_id is required when status is enabled",
            ));
        }
        let id = f.required_str("notification_id")?;
        (Some(status), Some(id.to_owned()))
    } else {
        (None, None)
    };
    Ok(NotificationSpec {
        notification_name: name.to_owned(),
        operation_type,
        operations,
        notify_user_list,
        topic_id: topic_id.map(str::to_owned),
        filter,
        status,
        notification_id,
    })
}

/// Names: 1–64 letters, digits and underscores (the console's rule).
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_name(name: &str) -> Result<(), NotificationError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(NotificationError::field(
            "notification_name",
            format!("notification_name has 1 to 64 letters, digits and underscores, not {name:?}"),
        ))
    }
}

fn operations(f: &Fields<'_>) -> Result<Vec<Operation>, NotificationError> {
    let mut out = Vec::new();
    let mut services = HashSet::new();
    let mut count = 0;
    for (i, o) in f.objects("operations")?.into_iter().enumerate() {
        let service_type = o.required_str("service_type")?;
        if service_type.is_empty()
            || service_type.len() > 64
            || !service_type
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(NotificationError::field(
                &o.path("service_type"),
                format!(
                    "{}: a service acronym of 1 to 64 uppercase letters and digits, not \
                     {service_type:?}",
                    o.path("service_type")
                ),
            ));
        }
        let resource_type = o.required_str("resource_type")?;
        text(&o.path("resource_type"), resource_type, 128)?;
        let trace_names = o.required_strings("trace_names")?;
        if trace_names.is_empty() {
            return Err(NotificationError::field(
                &o.path("trace_names"),
                format!("{}: lists at least one trace name", o.path("trace_names")),
            ));
        }
        for (j, n) in trace_names.iter().enumerate() {
            text(&format!("{}[{j}]", o.path("trace_names")), n, 128)?;
        }
        services.insert(service_type);
        count += trace_names.len();
        if services.len() > MAX_SERVICES || count > MAX_OPERATIONS {
            return Err(NotificationError::field(
                &format!("operations[{i}]"),
                format!(
                    "operations: at most {MAX_OPERATIONS} trace names of {MAX_SERVICES} services"
                ),
            ));
        }
        out.push(Operation {
            service_type: service_type.to_owned(),
            resource_type: resource_type.to_owned(),
            trace_names,
        });
    }
    Ok(out)
}

fn users(f: &Fields<'_>) -> Result<Vec<NotifyUsers>, NotificationError> {
    let groups = f.objects("notify_user_list")?;
    if groups.len() > MAX_USER_GROUPS {
        return Err(NotificationError::field(
            "notify_user_list",
            format!("notify_user_list: at most {MAX_USER_GROUPS} user groups"),
        ));
    }
    let mut out = Vec::new();
    let mut total = 0;
    for g in groups {
        let user_group = g.required_str("user_group")?;
        text(&g.path("user_group"), user_group, 128)?;
        let user_list = g.required_strings("user_list")?;
        if user_list.is_empty() {
            return Err(NotificationError::field(
                &g.path("user_list"),
                format!("{}: lists at least one user", g.path("user_list")),
            ));
        }
        for (j, u) in user_list.iter().enumerate() {
            text(&format!("{}[{j}]", g.path("user_list")), u, 128)?;
        }
        total += user_list.len();
        if total > MAX_USERS {
            return Err(NotificationError::field(
                "notify_user_list",
                format!("notify_user_list: at most {MAX_USERS} users in all"),
            ));
        }
        out.push(NotifyUsers {
            user_group: user_group.to_owned(),
            user_list,
        });
    }
    Ok(out)
}

fn filter(f: &Fields<'_>) -> Result<Option<Filter>, NotificationError> {
    let Some(o) = f.object("filter")? else {
        return Ok(None);
    };
    let condition = match o.str("condition")? {
        None => Condition::And,
        Some(c) => Condition::parse(c).ok_or_else(|| {
            NotificationError::field(
                "filter.condition",
                format!("filter.condition must be AND or OR, not {c:?}"),
            )
        })?,
    };
    let is_support_filter = o.required_bool("is_support_filter")?;
    let rules = parse_rules(&o.required_strings("rule")?)?;
    Ok(Some(Filter {
        condition,
        is_support_filter,
        rules,
    }))
}

fn text(path: &str, v: &str, max: usize) -> Result<(), NotificationError> {
    if (1..=max).contains(&v.chars().count()) {
        Ok(())
    } else {
        Err(NotificationError::field(
            path,
            format!("{path}: 1 to {max} characters"),
        ))
    }
}

/// The fields of one JSON object of the body, each named by its path.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    fn of(v: &'a Value, prefix: &str) -> Result<Fields<'a>, NotificationError> {
        match v {
            Value::Object(map) => Ok(Fields {
                map,
                prefix: prefix.to_owned(),
            }),
            _ if prefix.is_empty() => Err(NotificationError::whole_body(
                "the body must be a JSON object",
            )),
            _ => Err(NotificationError::field(
                prefix,
                format!("{prefix} must be an object"),
            )),
        }
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn wrong(&self, name: &str, kind: &str) -> NotificationError {
        let p = self.path(name);
        NotificationError::field(&p, format!("{p} must be {kind}"))
    }

    fn missing(&self, name: &str) -> NotificationError {
        let p = self.path(name);
        NotificationError::field(&p, format!("{p} is required"))
    }

    fn str(&self, name: &str) -> Result<Option<&'a str>, NotificationError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong(name, "a string")),
        }
    }

    fn required_str(&self, name: &str) -> Result<&'a str, NotificationError> {
        self.str(name)?.ok_or_else(|| self.missing(name))
    }

    fn required_bool(&self, name: &str) -> Result<bool, NotificationError> {
        match self.get(name) {
            None => Err(self.missing(name)),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.wrong(name, "true or false")),
        }
    }

    fn required_strings(&self, name: &str) -> Result<Vec<String>, NotificationError> {
        let Some(v) = self.get(name) else {
            return Err(self.missing(name));
        };
        let items = v
            .as_array()
            .ok_or_else(|| self.wrong(name, "an array of strings"))?;
        items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.wrong(name, "an array of strings"))
    }

    fn object(&self, name: &str) -> Result<Option<Fields<'a>>, NotificationError> {
        self.get(name)
            .map(|v| Fields::of(v, &self.path(name)))
            .transpose()
    }

    fn objects(&self, name: &str) -> Result<Vec<Fields<'a>>, NotificationError> {
        let Some(v) = self.get(name) else {
            return Ok(Vec::new());
        };
        let items = v
            .as_array()
            .ok_or_else(|| self.wrong(name, "an array of objects"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| Fields::of(item, &format!("{}[{i}]", self.path(name))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(v: Value) -> Result<NotificationSpec, NotificationError> {
        parse_create(v.to_string().as_bytes())
    }

    fn field_of(v: Value) -> String {
        create(v).unwrap_err().field.unwrap_or_default()
    }

    #[test]
    fn the_reference_examples_read() {
        let s = create(json!({
            "notification_name": "test",
            "operation_type": "customized",
            "filter": {"is_support_filter": true, "condition": "OR",
                       "rule": ["code != 200", "api_version = v1.0", "trace_rating = normal",
                                "trace_type != ApiCall", "resource_id = xxx", "resource_name = xxx"]},
            "operations": [{"service_type": "CTS", "resource_type": "tracker",
                            "trace_names": ["createTracker", "deleteTracker"]}],
            "notify_user_list": [{"user_group": "admin", "user_list": ["test1", "test2"]}],
            "topic_id": "urn:smn:region:24edf66e79d04187acb99a463e610764:test"
        }))
        .unwrap();
        assert_eq!(s.operation_type, OperationType::Customized);
        assert_eq!(s.filter.unwrap().rules.len(), 6);
        assert_eq!(s.notify_user_list[0].user_list, ["test1", "test2"]);
        let s = create(json!({"notification_name": "all", "operation_type": "complete"})).unwrap();
        assert!(s.operations.is_empty() && s.topic_id.is_none());
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        let base = |extra: Value| {
            let mut v = json!({"notification_name": "n", "operation_type": "complete"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        assert_eq!(
            field_of(json!({"operation_type": "complete"})),
            "notification_name"
        );
        assert_eq!(
            field_of(base(json!({"notification_name": "a-b"}))),
            "notification_name"
        );
        assert_eq!(
            field_of(base(json!({"operation_type": "all"}))),
            "operation_type"
        );
        assert_eq!(
            field_of(base(json!({"operation_type": "customized"}))),
            "operations"
        );
        assert_eq!(
            field_of(base(
                json!({"operations": [{"service_type": "ecs", "resource_type": "vm", "trace_names": ["a"]}]})
            )),
            "operations[0].service_type"
        );
        assert_eq!(
            field_of(base(
                json!({"operations": [{"service_type": "ECS", "resource_type": "vm", "trace_names": []}]})
            )),
            "operations[0].trace_names"
        );
        assert_eq!(
            field_of(base(
                json!({"notify_user_list": [{"user_group": "g", "user_list": [1]}]})
            )),
            "notify_user_list[0].user_list"
        );
        let groups: Vec<Value> = (0..11)
            .map(|i| json!({"user_group": format!("g{i}"), "user_list": ["u"]}))
            .collect();
        assert_eq!(
            field_of(base(json!({"notify_user_list": groups}))),
            "notify_user_list"
        );
        let users: Vec<String> = (0..26).map(|i| format!("u{i}")).collect();
        let two = json!([{"user_group": "a", "user_list": users}, {"user_group": "b", "user_list": users}]);
        assert_eq!(
            field_of(base(json!({"notify_user_list": two}))),
            "notify_user_list"
        );
        assert_eq!(
            field_of(base(
                json!({"filter": {"condition": "XOR", "is_support_filter": true, "rule": []}})
            )),
            "filter.condition"
        );
        assert_eq!(
            field_of(base(json!({"filter": {"condition": "AND", "rule": []}}))),
            "filter.is_support_filter"
        );
        assert_eq!(
            field_of(base(
                json!({"filter": {"is_support_filter": true, "rule": ["code == 2"]}})
            )),
            "filter.rule[0]"
        );
        assert_eq!(field_of(base(json!({"topic_id": 5}))), "topic_id");
        assert!(parse_create(b"[1]").unwrap_err().field.is_none());
        assert!(parse_create(b"{").is_err());
    }

    #[test]
    fn modify_needs_status_id_and_a_topic_when_enabled() {
        let update = |v: Value| parse_update(v.to_string().as_bytes());
        let ok = json!({"notification_name": "n", "operation_type": "complete", "status": "disabled",
                        "notification_id": "x"});
        assert_eq!(update(ok.clone()).unwrap().status, Some(Status::Disabled));
        let mut enabled = ok.clone();
        enabled["status"] = "enabled".into();
        assert_eq!(
            update(enabled.clone()).unwrap_err().field.as_deref(),
            Some("topic_id")
        );
        enabled["topic_id"] = "urn:smn:r:p:t".into();
        assert_eq!(update(enabled).unwrap().status, Some(Status::Enabled));
        let mut bad = ok.clone();
        bad["status"] = "on".into();
        assert_eq!(update(bad).unwrap_err().field.as_deref(), Some("status"));
        let mut no_id = ok;
        no_id.as_object_mut().unwrap().remove("notification_id");
        assert_eq!(
            update(no_id).unwrap_err().field.as_deref(),
            Some("notification_id")
        );
    }
}
