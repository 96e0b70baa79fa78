//! The one error type of the crate: a CTS error code with its HTTP status,
//! so the server maps it to `{"error_code", "error_msg"}` without knowing
//! the rules behind it.

/// Why a notification operation failed.
///
/// `code` and `status` come from the CTS error table where it has one
/// (api-ref/source/appendix/error_codes.rst); `message` names the field and
/// the rule it breaks, and is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct NotificationError {
    /// `CTS.xxxx`.
    pub code: &'static str,
    /// HTTP status the code is documented with.
    pub status: u16,
    /// The request field or parameter at fault (`filter.rule[2]`), when one is.
    pub field: Option<String>,
    pub message: String,
}

impl NotificationError {
    fn new(code: &'static str, status: u16, field: Option<&str>, message: String) -> Self {
        NotificationError {
            code,
            status,
            field: field.map(str::to_owned),
            message,
        }
    }

    /// CTS.0003 (400): `field` breaks its rule (type, value, length, count).
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        NotificationError::new(codes::INVALID_BODY, 400, Some(field), message.into())
    }

    /// CTS.0003 about the body as a whole (not JSON, not an object).
    pub(crate) fn whole_body(message: impl Into<String>) -> Self {
        NotificationError::new(codes::INVALID_BODY, 400, None, message.into())
    }

    /// CTS.0300 (400): an invalid query parameter.
    pub fn param(field: &str, message: impl Into<String>) -> Self {
        NotificationError::new(codes::INVALID_PARAM, 400, Some(field), message.into())
    }

    /// CTS.0400 (400): another notification of the project has the name.
    pub(crate) fn name_taken(name: &str) -> Self {
        NotificationError::new(
            codes::NAME_EXISTS,
            400,
            Some("notification_name"),
            format!("notification_name: a notification named {name:?} exists already"),
        )
    }

    /// CTS.9006 (404): no such notification in the project.
    pub fn not_found(id: &str) -> Self {
        NotificationError::new(
            codes::NOT_FOUND,
            404,
            Some("notification_id"),
            format!("notification_id: the notification {id:?} does not exist"),
        )
    }

    /// CTS.9007 (409): the project has as many notifications as its quota.
    pub(crate) fn quota(limit: u64) -> Self {
        NotificationError::new(
            codes::QUOTA,
            409,
            None,
            format!(
                "the number of key event notifications has reached the upper limit: at most \
                 {limit} per project"
            ),
        )
    }

    /// CTS.0004 / CTS.0005 (500): the database failed; the detail is for the log.
    pub(crate) fn storage(code: &'static str, e: impl std::fmt::Display) -> Self {
        NotificationError::new(code, 500, None, format!("notification storage: {e}"))
    }
}

/// The codes this crate answers with, by rule.
pub mod codes {
    /// Body not JSON, wrong field type, value outside its set.
    pub const INVALID_BODY: &str = "CTS.0003";
    /// The database failed to write.
    pub const WRITE_FAILED: &str = "CTS.0004";
    /// The database failed to read.
    pub const READ_FAILED: &str = "CTS.0005";
    /// An invalid query parameter (this server's use of the code).
    pub const INVALID_PARAM: &str = "CTS.0300";
    /// "NotificationV3 name is existed already."
    pub const NAME_EXISTS: &str = "CTS.0400";
    /// No such notification (the reference has no code: the server's
    /// "no such resource").
    pub const NOT_FOUND: &str = "CTS.9006";
    /// The notification quota is used up (the server's "quota reached").
    pub const QUOTA: &str = "CTS.9007";
}
