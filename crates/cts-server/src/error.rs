//! Every error the API answers, and its one mapping to HTTP.
//!
//! The body is always `{"error_code": "CTS.XXXX", "error_msg": "..."}`, with
//! the same message in Keystone's `"error": {"code", "title", "message"}` for
//! OpenStack clients; a refused report body also carries
//! `"errors": [{"index", "field", "rule"}]`.
//! Codes from the CTS reference are used where one fits; the project's own
//! codes, numbered from `CTS.9000`, are:
//!
//! | HTTP | Code     | Meaning                                                   |
//! |------|----------|-----------------------------------------------------------|
//! | 500  | CTS.9000 | Internal error (a bug: the request was not carried out)   |
//! | 413  | CTS.9001 | Request body larger than `limits.max_body_bytes`          |
//! | 404  | CTS.9002 | No such route                                             |
//! | 405  | CTS.9003 | Method not allowed on this route                          |
//! | 503  | CTS.9004 | Not ready: the store does not answer                      |
//! | 429  | CTS.9005 | Too many failed authentications; retry after `Retry-After`|
//! | 404  | CTS.9006 | No such resource (user, group, project, key, notification, …) |
//! | 409  | CTS.9007 | Name already taken, or a quota reached                    |
//! | 503  | CTS.9008 | Change refused: its audit trace could not be written      |
//! | 503  | CTS.9009 | More connections than `limits.max_connections`            |
//! | 408  | CTS.9010 | The body stalled longer than `limits.body_read_timeout`   |
//! | 503  | CTS.9011 | Read-only: the store opened on a damaged journal (`store.on_damage = "read-only"`) |
//!
//! Codes of the reference in use: `CTS.0003` (400, invalid request body),
//! `CTS.0300` (400, invalid query parameter), `CTS.0004` (500, the store
//! failed to write), `CTS.0005` (500, the store failed to read), `CTS.0002`
//! (401: no valid credential; 403: not authorized for the project), and
//! `CTS.0013` (403: the caller's roles lack the permission).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cts_identity::IdentityError;
use cts_model::{FieldError, QueryError, ReportError};
use cts_notification::NotificationError;
use cts_smn::SmnError;
use cts_store::StoreError;
use cts_tracker::TrackerError;

use crate::auth::AuthFailure;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The report body broke the rules of the trace structure.
    #[error("{0}")]
    Report(#[from] ReportError),
    /// Something about the report request other than its traces (path,
    /// headers, unreadable body).
    #[error("{field}: {rule}")]
    BadRequest { field: &'static str, rule: String },
    #[error("{0}")]
    Query(#[from] QueryError),
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    /// The store could not record a batch; the detail is logged, not shown.
    #[error("failed to write data")]
    Write(String),
    #[error("failed to read data")]
    Read(String),
    #[error("internal error")]
    Internal(String),
    #[error("not ready: {0}")]
    Unavailable(String),
    /// An audited change refused (or undone) because its trace could not
    /// be written: no change is made unaudited.
    #[error(
        "the change was refused: its audit trace could not be written, so nothing was changed"
    )]
    NotAudited(String),
    /// A change while the store is read-only after damage: the reason
    /// names the damage, where it was copied and what to run.
    #[error("the store is read-only because its journal is damaged, so nothing can be recorded or changed: {0}")]
    ReadOnly(String),
    #[error("too many connections (at most {max}); retry later")]
    TooManyConnections { max: usize },
    #[error("body: the client stopped sending it; the connection is closed")]
    BodyTimeout,
    #[error("authentication failed: {}", .0.message)]
    Unauthenticated(AuthFailure),
    /// Not authorized for the project in the path (or it does not exist:
    /// the caller must not learn which).
    #[error("{0}")]
    Forbidden(String),
    #[error("no permission: this needs the role {needed} {scope}")]
    MissingRole {
        needed: String,
        /// Where the role is needed: on the project, or in the domain.
        scope: &'static str,
    },
    #[error("too many failed authentications; retry in {} s", retry_after.as_secs())]
    Throttled { retry_after: Duration },
    #[error("{what} {id} does not exist")]
    ResourceNotFound { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("API version {0} is not supported; GET / lists the versions")]
    UnknownVersion(String),
    /// A tracker, tag, quota or catalog rule, with its own CTS code.
    #[error("{}", .0.message)]
    Tracker(#[from] TrackerError),
    /// A key event notification rule, with its own CTS code.
    #[error("{}", .0.message)]
    Notification(#[from] NotificationError),
}

impl From<SmnError> for ApiError {
    fn from(e: SmnError) -> ApiError {
        match e {
            SmnError::Invalid { field, rule } => ApiError::BadRequest { field, rule },
            SmnError::TopicNotFound(id) => ApiError::ResourceNotFound { what: "topic", id },
            SmnError::SubscriptionNotFound(id) => ApiError::ResourceNotFound {
                what: "subscription",
                id,
            },
            SmnError::TopicExists(_)
            | SmnError::SubscriptionExists { .. }
            | SmnError::Quota { .. } => ApiError::Conflict(e.to_string()),
            SmnError::Storage(detail) => ApiError::Write(detail),
            SmnError::LeaseLost(_) => ApiError::Write(e.to_string()),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> ApiError {
        match e {
            IdentityError::NotFound { what, id } => ApiError::ResourceNotFound { what, id },
            IdentityError::Invalid { field, rule } => ApiError::BadRequest { field, rule },
            IdentityError::Conflict { .. } | IdentityError::QuotaExceeded { .. } => {
                ApiError::Conflict(e.to_string())
            }
            IdentityError::InvalidCredentials
            | IdentityError::ScopeNotAllowed
            | IdentityError::UnknownAccessKey
            | IdentityError::InactiveAccessKey
            | IdentityError::UnknownToken
            | IdentityError::TokenExpired
            | IdentityError::TokenRevoked => ApiError::Unauthenticated(AuthFailure {
                reason: "invalid_credentials",
                message: e.to_string(),
            }),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    /// A batch the store did not record.
    pub fn not_written(e: StoreError) -> ApiError {
        match e {
            StoreError::ReadOnly(reason) => ApiError::ReadOnly(reason),
            StoreError::Retired(rule) => ApiError::BadRequest {
                field: "time",
                rule,
            },
            e => ApiError::Write(e.to_string()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Report(_) | ApiError::BadRequest { .. } | ApiError::Query(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Write(_) | ApiError::Read(_) | ApiError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Unavailable(_)
            | ApiError::NotAudited(_)
            | ApiError::ReadOnly(_)
            | ApiError::TooManyConnections { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::MissingRole { .. } => StatusCode::FORBIDDEN,
            ApiError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ResourceNotFound { .. } | ApiError::UnknownVersion(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Tracker(e) => {
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ApiError::Notification(e) => {
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST)
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Report(_) | ApiError::BadRequest { .. } => "CTS.0003",
            ApiError::Query(_) => "CTS.0300",
            ApiError::Write(_) => "CTS.0004",
            ApiError::Read(_) => "CTS.0005",
            ApiError::Internal(_) => "CTS.9000",
            ApiError::BodyTooLarge { .. } => "CTS.9001",
            ApiError::NotFound => "CTS.9002",
            ApiError::MethodNotAllowed => "CTS.9003",
            ApiError::Unavailable(_) => "CTS.9004",
            ApiError::TooManyConnections { .. } => "CTS.9009",
            ApiError::BodyTimeout => "CTS.9010",
            ApiError::ReadOnly(_) => "CTS.9011",
            ApiError::Unauthenticated(_) | ApiError::Forbidden(_) => "CTS.0002",
            ApiError::MissingRole { .. } => "CTS.0013",
            ApiError::Throttled { .. } => "CTS.9005",
            ApiError::ResourceNotFound { .. } => "CTS.9006",
            ApiError::Conflict(_) => "CTS.9007",
            ApiError::NotAudited(_) => "CTS.9008",
            ApiError::UnknownVersion(_) => "CTS.0100",
            ApiError::Tracker(e) => e.code,
            ApiError::Notification(e) => e.code,
        }
    }

    /// The field errors of a refused report body: every broken rule, so a
    /// reporter can fix a whole batch at once.
    fn field_errors(&self) -> Option<Vec<FieldError>> {
        let one = |field: &str, rule: String| {
            vec![FieldError {
                index: None,
                field: field.to_string(),
                rule,
            }]
        };
        match self {
            ApiError::Report(ReportError::Invalid(errors)) => Some(errors.clone()),
            ApiError::Report(ReportError::Malformed(detail)) => Some(one(
                "body",
                format!("must be a JSON object of the form {{\"traces\": [...]}} ({detail})"),
            )),
            ApiError::Report(ReportError::TooMany { max, got }) => Some(one(
                "traces",
                format!("must hold at most {max} traces, got {got}"),
            )),
            ApiError::Report(ReportError::Empty) => {
                Some(one("traces", "must hold at least one trace".into()))
            }
            ApiError::BadRequest { field, rule } => Some(one(field, rule.clone())),
            ApiError::Tracker(TrackerError {
                field: Some(field),
                message,
                ..
            }) => Some(one(field, message.clone())),
            ApiError::Notification(NotificationError {
                field: Some(field),
                message,
                ..
            }) => Some(one(field, message.clone())),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Write(detail)
            | ApiError::Read(detail)
            | ApiError::Internal(detail)
            | ApiError::NotAudited(detail) => {
                tracing::error!(code = self.code(), %detail, "request failed");
            }
            ApiError::Unavailable(detail) => tracing::warn!(%detail, "not ready"),
            ApiError::Tracker(e) if e.status >= 500 => {
                tracing::error!(code = e.code, detail = %e.message, "request failed");
            }
            ApiError::Notification(e) if e.status >= 500 => {
                tracing::error!(code = e.code, detail = %e.message, "request failed");
            }
            _ => {}
        }
        let msg = self.to_string();
        let mut body = json!({
            "error_code": self.code(),
            "error_msg": msg,
            // Keystone's shape, which keystoneauth and openstacksdk read.
            "error": {
                "code": status.as_u16(),
                "title": status.canonical_reason().unwrap_or("Error"),
                "message": format!("{}: {msg}", self.code()),
            },
        });
        if let Some(errors) = self.field_errors() {
            body["errors"] = json!(errors);
        }
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Throttled { retry_after } => {
                headers.insert(header::RETRY_AFTER, retry_after.as_secs().into());
            }
            ApiError::TooManyConnections { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::BodyTimeout => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::Unauthenticated(_) => {
                // What keystoneauth and browsers expect of a 401.
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Keystone uri=\"/v3\", SDK-HMAC-SHA256"),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(e: ApiError) -> (StatusCode, serde_json::Value) {
        let r = e.into_response();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn invalid_report_lists_every_error() {
        let e = ApiError::Report(ReportError::Invalid(vec![
            FieldError {
                index: Some(2),
                field: "trace_name".into(),
                rule: "must start with a letter".into(),
            },
            FieldError {
                index: Some(5),
                field: "time".into(),
                rule: "is mandatory".into(),
            },
        ]));
        let (status, body) = body_of(e).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error_code"], "CTS.0003");
        let msg = body["error_msg"].as_str().unwrap();
        assert!(
            msg.contains("traces[2].trace_name: must start with a letter"),
            "{msg}"
        );
        assert!(msg.contains("traces[5].time"), "{msg}");
        assert_eq!(
            body["errors"],
            json!([
                {"index": 2, "field": "trace_name", "rule": "must start with a letter"},
                {"index": 5, "field": "time", "rule": "is mandatory"},
            ])
        );
    }

    #[tokio::test]
    async fn codes_and_statuses() {
        let cases = [
            (
                ApiError::Query(QueryError {
                    param: "limit".into(),
                    rule: "must be an integer".into(),
                }),
                400,
                "CTS.0300",
            ),
            (ApiError::BodyTooLarge { limit: 10 }, 413, "CTS.9001"),
            (ApiError::NotFound, 404, "CTS.9002"),
            (ApiError::MethodNotAllowed, 405, "CTS.9003"),
            (ApiError::Write("disk full".into()), 500, "CTS.0004"),
            (ApiError::Read("corrupt".into()), 500, "CTS.0005"),
            (ApiError::Internal("bug".into()), 500, "CTS.9000"),
            (ApiError::Unavailable("store".into()), 503, "CTS.9004"),
            (ApiError::NotAudited("disk full".into()), 503, "CTS.9008"),
            (ApiError::TooManyConnections { max: 2 }, 503, "CTS.9009"),
            (ApiError::BodyTimeout, 408, "CTS.9010"),
        ];
        for (e, status, code) in cases {
            let (s, body) = body_of(e).await;
            assert_eq!(s.as_u16(), status);
            assert_eq!(body["error_code"], code);
            // And Keystone's shape for OpenStack clients.
            assert_eq!(body["error"]["code"], status);
            let keystone = body["error"]["message"].as_str().unwrap();
            assert!(keystone.starts_with(&format!("{code}: ")), "{keystone}");
            assert!(body.get("errors").is_none());
        }
        let (_, body) = body_of(ApiError::Query(QueryError {
            param: "limit".into(),
            rule: "must be an integer".into(),
        }))
        .await;
        assert!(body["error_msg"].as_str().unwrap().contains("limit"));
        // Internal details stay in the log.
        let (_, body) = body_of(ApiError::Write("/secret/path".into())).await;
        assert!(!body["error_msg"].as_str().unwrap().contains("secret"));
    }
}
