//! CTS records what is done to itself: identity changes, token issues and
//! failed authentications become traces of the project concerned, stored
//! like any reported trace and queryable at once.

use serde_json::{json, Map, Value};

use cts_model::{parse_report, text, ReportContext};

use crate::auth::{Origin, Principal};
use crate::error::ApiError;
use crate::recording;
use crate::state::{now_ms, AppState};

/// Written instead of a secret in an audit trace.
const REDACTED: &str = "******";

/// The `user.invoked_by` of an operation made in the web console.
pub const CONSOLE_SERVICE: &str = "service.console";

/// One operation to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub project_id: String,
    /// `CTS` or `IAM`.
    pub service_type: &'static str,
    pub resource_type: &'static str,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    pub trace_name: &'static str,
    pub user: Option<Value>,
    pub origin: Origin,
    pub request: Option<Value>,
    pub response: Option<Value>,
    /// HTTP status of the answer.
    pub code: u16,
    pub message: Option<String>,
    /// Recorded even when the project's management tracker does not record
    /// (tracker changes: disabling must itself be on record).
    pub always: bool,
}

impl AuditEvent {
    pub fn new(
        project_id: &str,
        service_type: &'static str,
        resource_type: &'static str,
        trace_name: &'static str,
        origin: &Origin,
    ) -> AuditEvent {
        AuditEvent {
            project_id: project_id.to_string(),
            service_type,
            resource_type,
            resource_id: None,
            resource_name: None,
            trace_name,
            user: None,
            origin: origin.clone(),
            request: None,
            response: None,
            code: 200,
            message: None,
            always: false,
        }
    }

    /// A request whose credential was refused. `claimed_key` is the access
    /// key it named, if any, and `owner` that key's user, if it exists.
    pub fn failed_authentication(
        project_id: &str,
        origin: &Origin,
        claimed_key: Option<&str>,
        owner: Option<(&cts_identity::User, &cts_identity::Domain)>,
        why: &str,
    ) -> AuditEvent {
        let mut e = AuditEvent::new(project_id, "IAM", "credential", "authenticate", origin);
        e.code = 401;
        e.message = Some(why.to_string());
        let mut user = unknown_user();
        if let Some((owner, domain)) = owner {
            user["id"] = json!(owner.id);
            user["name"] = json!(owner.name);
            user["domain"] = json!({"id": domain.id, "name": domain.name});
        }
        if let Some(ak) = claimed_key {
            user["access_key_id"] = json!(ak);
            e.resource_name = Some(ak.to_string());
        }
        e.user = Some(user);
        e
    }

    pub fn by(mut self, principal: &Principal) -> AuditEvent {
        self.user = Some(user_of(principal));
        self
    }

    pub fn resource(mut self, id: Option<&str>, name: Option<&str>) -> AuditEvent {
        self.resource_id = id.map(str::to_string);
        self.resource_name = name.map(str::to_string);
        self
    }

    pub fn request(mut self, body: Option<&Value>) -> AuditEvent {
        self.request = body.map(redact);
        self
    }

    pub fn outcome(mut self, code: u16, response: Option<&Value>) -> AuditEvent {
        self.code = code;
        self.response = response.map(redact);
        self
    }

    /// The trace, valid by construction: every text a caller controls (its
    /// user agent, a claimed key, names) is fitted to its field's limit,
    /// so the report rules cannot drop the server's own record.
    fn to_trace(&self, now: i64) -> Value {
        let mut user = self.user.clone().unwrap_or_else(unknown_user);
        fit_strings(&mut user, text::NAME_MAX);
        // What the public CTS records for operations made in its console.
        let trace_type = if self.origin.console {
            user["invoked_by"] = json!([CONSOLE_SERVICE]);
            "ConsoleAction"
        } else {
            "ApiCall"
        };
        let mut t = json!({
            "time": now,
            "user": user,
            "service_type": self.service_type,
            "resource_type": self.resource_type,
            "trace_name": self.trace_name,
            "trace_type": trace_type,
            "code": self.code.to_string(),
            "source_ip": self.origin.source_ip,
        });
        let fields = [
            ("resource_id", &self.resource_id, text::NAME_MAX),
            ("resource_name", &self.resource_name, text::NAME_MAX),
            ("user_agent", &self.origin.user_agent, text::USER_AGENT_MAX),
        ];
        for (key, value, max) in fields {
            if let Some(v) = value {
                t[key] = json!(text::fit(v, max));
            }
        }
        // As in the public CTS, request and response are JSON text.
        if let Some(r) = &self.request {
            t["request"] = json!(r.to_string());
        }
        if let Some(r) = &self.response {
            t["response"] = json!(r.to_string());
        }
        if let Some(m) = &self.message {
            t["message"] = json!(m);
        }
        t
    }
}

/// The `user` of a trace whose caller is not known.
fn unknown_user() -> Value {
    json!({"id": "unknown", "name": "anonymous", "domain": {"id": "unknown", "name": "unknown"}})
}

/// Fits every string in `v` (the `user` object) to `max` characters.
fn fit_strings(v: &mut Value, max: usize) {
    match v {
        Value::String(s) => *s = text::fit(s, max),
        Value::Object(map) => map.values_mut().for_each(|v| fit_strings(v, max)),
        _ => {}
    }
}

/// The trace's `user` object for a caller.
pub fn user_of(p: &Principal) -> Value {
    let mut user = json!({
        "id": p.user_id,
        "name": p.user_name,
        "user_name": p.user_name,
        "domain": {"id": p.domain_id, "name": p.domain_name},
        "type": "IAMUser",
    });
    if let Some(ak) = &p.access_key_id {
        user["access_key_id"] = json!(ak);
    }
    user
}

/// `value` with every password, secret and token replaced.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = k.to_ascii_lowercase();
                    let secret = key.contains("password")
                        || key.contains("secret")
                        || key == "token_id"
                        || key == "x-subject-token";
                    let v = if secret && !v.is_null() {
                        json!(REDACTED)
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// The project a caller's own operations are recorded in: the credential's
/// project, else the user's default project, else the first project of its
/// domain.
pub fn home_project(
    state: &AppState,
    user_id: &str,
    domain_id: &str,
    scope: Option<&str>,
) -> Option<String> {
    if let Some(p) = scope {
        return Some(p.to_string());
    }
    if let Some(p) = state
        .identity
        .get_user(user_id)
        .ok()
        .and_then(|u| u.default_project_id)
    {
        return Some(p);
    }
    let filter = cts_identity::Filter {
        domain_id: Some(domain_id.to_string()),
        ..cts_identity::Filter::default()
    };
    let projects = state.identity.list_projects(&filter).ok()?;
    projects.into_iter().next().map(|p| p.id)
}

/// Records `event` durably before returning. A failure is logged and
/// counted, and returned: the caller refuses (or undoes) the change it
/// describes (see `Call::audited`).
pub async fn record(state: &AppState, event: AuditEvent) -> Result<(), ApiError> {
    // CTS's own traces obey the project's management tracker like any other.
    if !event.always && !state.trackers.management_enabled(&event.project_id) {
        tracing::debug!(
            project = %event.project_id,
            trace_name = event.trace_name,
            "not recorded: the project's management tracker does not record"
        );
        return Ok(());
    }
    let now = now_ms();
    let body = json!({ "traces": [event.to_trace(now)] });
    let ctx_state = state.clone();
    let project = event.project_id.clone();
    // Audit traces are rare: their project's domain is looked up.
    let domain = state
        .identity
        .get_project(&project)
        .map(|p| p.domain_id)
        .unwrap_or_default();
    let result = state
        .with_store(move |store| {
            let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
            let ctx = ReportContext {
                project_id: &project,
                now_ms: now,
                oldest_time_ms: now - ctx_state.config.retention_ms(),
                newest_time_ms: now + 1,
                max_traces: 1,
            };
            let traces = parse_report(&bytes, &ctx).map_err(|e| e.to_string())?;
            recording::append(&ctx_state, store, traces, &domain).map_err(|e| e.to_string())
        })
        .await;
    match result {
        Ok(Ok(_)) => {
            state.metrics.audit_traces.inc();
            Ok(())
        }
        Ok(Err(e)) | Err(e) => {
            state.metrics.audit_failures.inc();
            tracing::error!(
                error = %e,
                project = %event.project_id,
                trace_name = event.trace_name,
                "could not record an audit trace"
            );
            Err(ApiError::NotAudited(e))
        }
    }
}

/// Records the refusal `event` in the background (its answer must not
/// wait on the store), rate-limited per source address (see
/// [`crate::refusals`]).
pub fn refused(state: &AppState, event: AuditEvent) {
    let (full, ended) = state
        .refusals
        .admit(&event, std::time::Instant::now(), now_ms());
    if let Some(summary) = ended {
        spawn(state, summary.event());
    }
    if full {
        spawn(state, event);
    }
}

/// Records `event` in the background.
pub fn spawn(state: &AppState, event: AuditEvent) {
    let state = state.clone();
    // Nothing to refuse: the request was refused anyway, and a failure is
    // logged and counted by `record`.
    tokio::spawn(async move { drop(record(&state, event).await) });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let v = json!({
            "auth": {"identity": {"password": {"user": {"name": "bob", "password": "hunter22"}}}},
            "credential": {"access": "AK1", "secret": "s3cr3t"},
            "list": [{"secret_key": "x"}, {"name": "n"}],
            "user": {"password_expires_at": null}
        });
        let r = redact(&v);
        let text = r.to_string();
        assert!(!text.contains("hunter22"), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!text.contains("\"x\""), "{text}");
        assert_eq!(r["credential"]["access"], "AK1");
        assert_eq!(r["list"][1]["name"], "n");
        assert!(r["user"]["password_expires_at"].is_null());
    }

    /// Runs `check` on `e` as the store gets it: its trace parsed by the
    /// report rules (which must accept it).
    fn stored(e: &AuditEvent, check: impl FnOnce(&cts_model::Trace<cts_model::Text<'_>>)) {
        let now = 1_700_000_000_000;
        let bytes = serde_json::to_vec(&json!({ "traces": [e.to_trace(now)] })).unwrap();
        let ctx = ReportContext {
            project_id: "p1",
            now_ms: now,
            oldest_time_ms: 0,
            newest_time_ms: now + 1,
            max_traces: 1,
        };
        check(&parse_report(&bytes, &ctx).unwrap()[0]);
    }

    #[test]
    fn traces_are_valid_reports() {
        let origin = Origin {
            source_ip: "10.1.2.3".into(),
            user_agent: Some("curl/8".into()),
            console: false,
        };
        let e = AuditEvent::new("p1", "IAM", "user", "createUser", &origin)
            .resource(Some("u1"), Some("bob"))
            .request(Some(
                &json!({"user": {"name": "bob", "password": "pw123456"}}),
            ))
            .outcome(201, Some(&json!({"user": {"id": "u1"}})));
        stored(&e, |t| {
            assert_eq!(t.trace_name, "createUser");
            assert_eq!(t.trace_rating, "normal");
            assert_eq!(t.source_ip, "10.1.2.3");
            assert!(!t.request.as_ref().unwrap().get().contains("pw123456"));
        });
        let failed =
            AuditEvent::failed_authentication("p1", &origin, Some("AK123"), None, "bad signature");
        stored(&failed, |t| {
            assert_eq!(t.trace_rating, "warning");
            assert_eq!(t.trace_name, "authenticate");
            assert_eq!(t.user.access_key_id.as_deref(), Some("AK123"));
        });
    }

    #[test]
    fn console_operations_are_console_actions_invoked_by_the_console() {
        let origin = Origin {
            source_ip: "127.0.0.1".into(),
            user_agent: None,
            console: true,
        };
        let e = AuditEvent::new("p1", "CTS", "tracker", "updateTracker", &origin);
        stored(&e, |t| {
            assert_eq!(t.trace_type, "ConsoleAction");
            let by: Vec<&str> = t.user.invoked_by.iter().flatten().map(|s| &**s).collect();
            assert_eq!(by, [CONSOLE_SERVICE]);
        });
    }

    #[test]
    fn caller_text_never_makes_a_trace_invalid() {
        let hostile = format!("\t\u{1b}\u{85}{}", "é".repeat(1500));
        let origin = Origin {
            source_ip: "::1".into(),
            user_agent: Some(hostile.clone()),
            console: false,
        };
        let e = AuditEvent::failed_authentication("p1", &origin, Some(&hostile), None, &hostile)
            .resource(Some(&hostile), Some(&hostile))
            .request(Some(&json!({ "name": hostile })));
        stored(&e, |t| {
            assert_eq!(t.user_agent.as_deref().unwrap().chars().count(), 1024);
            assert_eq!(t.resource_name.as_deref().unwrap().chars().count(), 256);
            let ak = t.user.access_key_id.as_deref().unwrap();
            assert!(ak.starts_with("\u{fffd}\u{fffd}\u{fffd}é"), "{ak}");
        });
    }
}
