//! The one error type of the crate: a CTS error code with its HTTP status,
//! so the server maps it to `{"error_code", "error_msg"}` without knowing
//! the rules behind it.

/// Why a tracker, tag, quota or catalog operation failed.
///
/// `code` and `status` come from the CTS error table
/// (api-ref/source/appendix/error_codes.rst); `message` names the field and
/// the rule it breaks, and is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct TrackerError {
    /// `CTS.xxxx`.
    pub code: &'static str,
    /// HTTP status the code is documented with.
    pub status: u16,
    /// The request field or parameter at fault (`obs_info.bucket_name`,
    /// `tags[2].key`), when one is.
    pub field: Option<String>,
    pub message: String,
}

impl TrackerError {
    fn new(code: &'static str, status: u16, field: Option<&str>, message: String) -> Self {
        TrackerError {
            code,
            status,
            field: field.map(str::to_owned),
            message,
        }
    }

    /// A 400 with `code` about `field`.
    pub(crate) fn field(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        TrackerError::new(code, 400, Some(field), message.into())
    }

    /// CTS.0003: the body is not JSON, or a field has the wrong type or a
    /// value outside its documented set (the table has no narrower code).
    pub(crate) fn body(field: &str, message: impl Into<String>) -> Self {
        TrackerError::field(codes::INVALID_BODY, field, message)
    }

    /// CTS.0003 about the body as a whole (not JSON, not an object).
    pub(crate) fn whole_body(message: impl Into<String>) -> Self {
        TrackerError::new(codes::INVALID_BODY, 400, None, message.into())
    }

    /// CTS.0300: an invalid query parameter.
    pub(crate) fn param(field: &str, message: impl Into<String>) -> Self {
        TrackerError::field(codes::INVALID_PARAM, field, message)
    }

    /// CTS.0214 (404): no such tracker in the project.
    pub(crate) fn not_found(what: impl std::fmt::Display) -> Self {
        TrackerError::new(
            codes::NOT_FOUND,
            404,
            None,
            format!("the tracker does not exist: {what}"),
        )
    }

    /// CTS.0211: the transfer bucket does not exist and the tracker is not
    /// to create it (`is_obs_created: false`).
    pub fn bucket_missing(bucket: &str) -> Self {
        TrackerError::field(
            codes::BUCKET_MISSING,
            "obs_info.bucket_name",
            format!(
                "the OBS bucket {bucket:?} does not exist: create it first, or set \
                 is_obs_created to true"
            ),
        )
    }

    /// CTS.0002 (403, the reference's "you do not have the permissions
    /// required"): the transfer bucket belongs to another project (the
    /// tracker detail `bucketPolicyError`).
    pub fn bucket_of_another_project(bucket: &str) -> Self {
        TrackerError::new(
            codes::NO_PERMISSION,
            403,
            Some("obs_info.bucket_name"),
            format!(
                "bucketPolicyError: the OBS bucket {bucket:?} belongs to another project; use a \
                 bucket of this project's own"
            ),
        )
    }

    /// CTS.0216: the transfer bucket (`is_obs_created: true`) could not be
    /// created.
    pub fn bucket_not_created(bucket: &str) -> Self {
        TrackerError::field(
            codes::BUCKET_NOT_CREATED,
            "obs_info.bucket_name",
            format!("failed to create the OBS bucket {bucket:?}"),
        )
    }

    /// CTS.0217: the bucket's lifecycle rule (`bucket_lifecycle`) could not
    /// be set.
    pub fn lifecycle_not_set(bucket: &str, days: i64) -> Self {
        TrackerError::field(
            codes::LIFECYCLE_NOT_SET,
            "obs_info.bucket_lifecycle",
            format!("failed to set a lifecycle rule of {days} days for the OBS bucket {bucket:?}"),
        )
    }

    /// A 400 about the tracker as a whole (quota, conflicts).
    pub(crate) fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        TrackerError::new(code, 400, None, message.into())
    }

    /// CTS.0004 / CTS.0005 (500): the database failed; the detail is for the log.
    pub(crate) fn storage(code: &'static str, e: impl std::fmt::Display) -> Self {
        TrackerError::new(code, 500, None, format!("tracker storage: {e}"))
    }
}

/// The codes this crate answers with, by rule.
pub mod codes {
    /// No such encryption key in the project (404; the reference has no
    /// code for the key registry this server adds).
    pub const KEY_NOT_FOUND: &str = "CTS.9006";
    /// Body not JSON, wrong field type, value outside its set.
    pub const INVALID_BODY: &str = "CTS.0003";
    /// The database failed to write.
    pub const WRITE_FAILED: &str = "CTS.0004";
    /// The database failed to read.
    pub const READ_FAILED: &str = "CTS.0005";
    /// The data tracker quota is used up.
    pub const TRACKER_QUOTA: &str = "CTS.0200";
    /// The project already has its management tracker.
    pub const SYSTEM_TRACKER_EXISTS: &str = "CTS.0201";
    /// `tracker_type` is missing or neither `system` nor `data` (Huawei
    /// Cloud table; the OTC table has no code for it).
    pub const TRACKER_TYPE_VALUE: &str = "CTS.0202";
    /// `tracker_name` breaks the naming rule.
    pub const TRACKER_NAME_FORMAT: &str = "CTS.0203";
    /// A management tracker's name is not `system`.
    pub const SYSTEM_TRACKER_NAME: &str = "CTS.0204";
    /// `status` is neither `enabled` nor `disabled`.
    pub const STATUS_VALUE: &str = "CTS.0205";
    /// A management tracker's body has `data_bucket` (Huawei Cloud table).
    pub const SYSTEM_TRACKER_DATA_BUCKET: &str = "CTS.0206";
    /// A data tracker is named `system` (Huawei Cloud table).
    pub const DATA_TRACKER_NAMED_SYSTEM: &str = "CTS.0207";
    /// A tracker with that name exists.
    pub const TRACKER_EXISTS: &str = "CTS.0208";
    /// Another data tracker tracks that operation type on that bucket.
    pub const BUCKET_OPERATION_TRACKED: &str = "CTS.0209";
    /// A data tracker without a bucket to track.
    pub const TRACKED_BUCKET_EMPTY: &str = "CTS.0210";
    /// The bucket does not exist (the reference's "tracked OBS bucket does
    /// not exist"; here also a transfer bucket not to be created).
    pub const BUCKET_MISSING: &str = "CTS.0211";
    /// The tracked bucket of a data tracker was changed.
    pub const TRACKED_BUCKET_FIXED: &str = "CTS.0212";
    /// A transfer bucket that is also a tracked bucket.
    pub const TRANSFER_BUCKET_TRACKED: &str = "CTS.0213";
    /// No such tracker (404).
    pub const NOT_FOUND: &str = "CTS.0214";
    /// Not permitted: here, a transfer bucket of another project.
    pub const NO_PERMISSION: &str = "CTS.0002";
    /// The transfer bucket could not be created.
    pub const BUCKET_NOT_CREATED: &str = "CTS.0216";
    /// The transfer bucket's lifecycle rule could not be set.
    pub const LIFECYCLE_NOT_SET: &str = "CTS.0217";
    /// `file_prefix_name` breaks its rule.
    pub const FILE_PREFIX_FORMAT: &str = "CTS.0218";
    /// `data_event` is empty.
    pub const OPERATION_TYPE_EMPTY: &str = "CTS.0219";
    /// Encryption asked of a data tracker.
    pub const KMS_NOT_SUPPORTED: &str = "CTS.0220";
    /// Encryption on without `kms_id`.
    pub const KMS_ID_EMPTY: &str = "CTS.0221";
    /// `kms_id` names no known key.
    pub const KMS_VERIFICATION: &str = "CTS.0222";
    /// `data_event` holds something other than `READ` / `WRITE`.
    pub const OPERATION_TYPE_VALUE: &str = "CTS.0225";
    /// Another project of the domain has the organization tracker.
    pub const ORGANIZATION_TRACKER_EXISTS: &str = "CTS.0229";
    /// A bucket name breaks the OBS naming rule.
    pub const BUCKET_NAME: &str = "CTS.0231";
    /// An invalid query parameter (this server's use of the code).
    pub const INVALID_PARAM: &str = "CTS.0300";
}
