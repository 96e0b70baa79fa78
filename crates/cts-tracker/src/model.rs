//! The tracker as stored, and its two wire views: the v3 `TrackerResponseBody`
//! and the v1.0 query and create responses.
//!
//! The serde derives are the storage form (a JSON column), not a wire
//! format: responses are built by [`Tracker::to_v3_json`],
//! [`Tracker::to_v1_json`] and [`Tracker::to_v1_created_json`].

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The name of the one management tracker of a project.
pub const SYSTEM_TRACKER_NAME: &str = "system";
/// LTS log group CTS writes to, and the management tracker's log topic.
pub(crate) const LTS_GROUP: &str = "CTS";
pub(crate) const LTS_SYSTEM_TOPIC: &str = "system-trace";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackerType {
    /// The management tracker, `system`, one per project.
    System,
    /// A data tracker: read and write operations on one OBS bucket.
    Data,
}

impl TrackerType {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackerType::System => "system",
            TrackerType::Data => "data",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<TrackerType> {
        match s {
            "system" => Some(TrackerType::System),
            "data" => Some(TrackerType::Data),
            _ => None,
        }
    }
}

/// Why a tracker is in `error`: the only values `detail` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorDetail {
    #[serde(rename = "bucketPolicyError")]
    BucketPolicyError,
    #[serde(rename = "noBucket")]
    NoBucket,
    #[serde(rename = "arrears")]
    Arrears,
}

impl ErrorDetail {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorDetail::BucketPolicyError => "bucketPolicyError",
            ErrorDetail::NoBucket => "noBucket",
            ErrorDetail::Arrears => "arrears",
        }
    }
}

/// `status`, with `detail` carried by `Error` so that a detail without an
/// error (or the reverse) cannot be represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackerStatus {
    Enabled,
    Disabled,
    Error(ErrorDetail),
}

impl TrackerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackerStatus::Enabled => "enabled",
            TrackerStatus::Disabled => "disabled",
            TrackerStatus::Error(_) => "error",
        }
    }

    /// Whether the tracker records traces. `error` is about transfer (bucket
    /// missing, policy, arrears), so such a tracker still records.
    pub fn is_recording(self) -> bool {
        self != TrackerStatus::Disabled
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressType {
    /// `*.json.gz`, the documented default.
    #[default]
    Gzip,
    /// Plain `*.json`.
    Json,
}

impl CompressType {
    pub fn as_str(self) -> &'static str {
        match self {
            CompressType::Gzip => "gzip",
            CompressType::Json => "json",
        }
    }
}

/// An operation type a data tracker records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DataEvent {
    Read,
    Write,
}

impl DataEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            DataEvent::Read => "READ",
            DataEvent::Write => "WRITE",
        }
    }
}

/// Where traces are transferred. An empty `bucket_name` means no transfer
/// (the v3 reference renders it that way: `"bucket_name": ""`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObsInfo {
    pub bucket_name: String,
    pub file_prefix_name: String,
    /// Whether the tracker created the bucket.
    pub is_obs_created: bool,
    /// Whether CTS may write to the bucket; set by the transfer.
    pub is_authorized_bucket: bool,
    /// Days trace files are kept in the bucket; 0 is "forever".
    pub bucket_lifecycle: i64,
    pub compress_type: CompressType,
    /// Whether the service type is a folder of the file path.
    pub is_sort_by_service: bool,
}

impl Default for ObsInfo {
    fn default() -> Self {
        ObsInfo {
            bucket_name: String::new(),
            file_prefix_name: String::new(),
            is_obs_created: false,
            is_authorized_bucket: false,
            bucket_lifecycle: 0,
            compress_type: CompressType::Gzip,
            is_sort_by_service: true,
        }
    }
}

/// The bucket a data tracker tracks; fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataBucket {
    pub data_bucket_name: String,
    /// Sorted, without duplicates, never empty.
    pub data_event: Vec<DataEvent>,
    /// Data traces are searchable through ListTraces (`tracker_name`).
    pub search_enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lts {
    pub is_lts_enabled: bool,
    pub log_group_name: String,
    pub log_topic_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// A tracker with every field of the v3 `TrackerResponseBody`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracker {
    /// UUID.
    pub id: String,
    pub tracker_name: String,
    pub tracker_type: TrackerType,
    pub project_id: String,
    pub domain_id: String,
    pub status: TrackerStatus,
    /// Milliseconds since the epoch.
    pub create_time: i64,
    pub obs_info: ObsInfo,
    /// `Some` exactly for data trackers.
    pub data_bucket: Option<DataBucket>,
    pub lts: Lts,
    /// LTS log group and stream ids, assigned when LTS is first enabled.
    pub group_id: Option<String>,
    pub stream_id: Option<String>,
    /// Management trackers only (data trackers are refused CTS.0220).
    pub is_support_trace_files_encryption: bool,
    pub kms_id: Option<String>,
    pub is_support_validate: bool,
    /// Management trackers only.
    pub is_organization_tracker: bool,
    /// `cts_admin_trust` when set.
    pub agency_name: Option<String>,
    /// `management_event_selector.exclude_service`; management trackers only.
    pub exclude_service: Vec<String>,
    /// When (ms) the tracker last began to transfer (created with a
    /// bucket, given one, or enabled with one), set in the transaction of
    /// that change: its first transfer period is the one holding this
    /// instant, from the period's start on. Not part of the API.
    #[serde(default)]
    pub transfer_since: Option<i64>,
    /// When (ms) the tracker last began to stream to LTS (`lts` switched
    /// on while recording, or recording enabled with `lts` on), set in the
    /// transaction of that change: streaming begins at the transfer period
    /// holding this instant, like the transfer. Not part of the API.
    #[serde(default)]
    pub lts_since: Option<i64>,
    /// Sorted by key; stored apart, so not part of the JSON column.
    #[serde(skip)]
    pub tags: Vec<Tag>,
}

impl Tracker {
    /// Whether the tracker writes trace files: a bucket, and recording.
    pub fn transfers(&self) -> bool {
        !self.obs_info.bucket_name.is_empty() && self.status.is_recording()
    }

    /// Whether the tracker streams its traces to LTS: `lts` on, and
    /// recording.
    pub fn streams(&self) -> bool {
        self.lts.is_lts_enabled && self.status.is_recording()
    }

    /// Whether the tracker records a stored trace of `project_id` with
    /// these fields: a management tracker its project's management traces
    /// (less `exclude_service`), a data tracker its own data traces.
    pub fn records(
        &self,
        project_id: &str,
        trace_type: &str,
        tracker_name: &str,
        service_type: &str,
    ) -> bool {
        if project_id != self.project_id {
            return false;
        }
        let data = trace_type.starts_with("Obs");
        match self.tracker_type {
            TrackerType::System => !data && !self.exclude_service.iter().any(|s| s == service_type),
            TrackerType::Data => data && tracker_name == self.tracker_name,
        }
    }

    /// The tracker as one element of `trackers` in the v3 query response,
    /// which is also the v3 create response. Type-specific fields appear
    /// only for their type, optional ones only when set; `tags` is an
    /// addition of this server (the SDK ignores it).
    pub fn to_v3_json(&self) -> Value {
        let mut o = self.common_json();
        o.insert(
            "is_support_validate".into(),
            self.is_support_validate.into(),
        );
        o.insert("obs_info".into(), self.obs_json(false));
        match &self.data_bucket {
            Some(b) => {
                o.insert(
                    "data_bucket".into(),
                    json!({
                        "data_bucket_name": b.data_bucket_name,
                        "data_event": b.data_event.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
                        "search_enabled": b.search_enabled,
                    }),
                );
            }
            None => {
                o.insert(
                    "is_support_trace_files_encryption".into(),
                    self.is_support_trace_files_encryption.into(),
                );
                if let Some(k) = &self.kms_id {
                    o.insert("kms_id".into(), k.as_str().into());
                }
                o.insert(
                    "is_organization_tracker".into(),
                    self.is_organization_tracker.into(),
                );
                if !self.exclude_service.is_empty() {
                    o.insert(
                        "management_event_selector".into(),
                        json!({ "exclude_service": self.exclude_service }),
                    );
                }
            }
        }
        if let Some(a) = &self.agency_name {
            o.insert("agency_name".into(), a.as_str().into());
        }
        o.insert(
            "tags".into(),
            self.tags
                .iter()
                .map(|t| json!({"key": t.key, "value": t.value}))
                .collect::<Vec<_>>()
                .into(),
        );
        Value::Object(o)
    }

    /// The v1.0 query response (`GET /v1.0/{project_id}/tracker`): the
    /// bucket fields flat at the top level, as out-of-date_apis documents.
    pub fn to_v1_json(&self) -> Value {
        let mut o = self.common_json();
        o.insert(
            "bucket_name".into(),
            self.obs_info.bucket_name.as_str().into(),
        );
        o.insert(
            "file_prefix_name".into(),
            self.obs_info.file_prefix_name.as_str().into(),
        );
        o.insert("is_obs_created".into(), self.obs_info.is_obs_created.into());
        Value::Object(o)
    }

    /// The v1.0 create response (`POST /v1.0/{project_id}/tracker`): the
    /// bucket in `obs_info`, encryption and `log_file_validate` as the
    /// reference's example shows them.
    pub fn to_v1_created_json(&self) -> Value {
        let mut o = self.common_json();
        o.insert("obs_info".into(), self.obs_json(true));
        o.insert(
            "is_support_trace_files_encryption".into(),
            self.is_support_trace_files_encryption.into(),
        );
        if let Some(k) = &self.kms_id {
            o.insert("kms_id".into(), k.as_str().into());
        }
        o.insert(
            "log_file_validate".into(),
            json!({ "is_support_validate": self.is_support_validate }),
        );
        Value::Object(o)
    }

    /// Fields every view shares.
    fn common_json(&self) -> Map<String, Value> {
        let mut o = Map::new();
        o.insert("id".into(), self.id.as_str().into());
        o.insert("create_time".into(), self.create_time.into());
        o.insert("domain_id".into(), self.domain_id.as_str().into());
        o.insert("project_id".into(), self.project_id.as_str().into());
        o.insert("tracker_name".into(), self.tracker_name.as_str().into());
        o.insert("tracker_type".into(), self.tracker_type.as_str().into());
        o.insert("status".into(), self.status.as_str().into());
        if let TrackerStatus::Error(d) = self.status {
            o.insert("detail".into(), d.as_str().into());
        }
        o.insert(
            "lts".into(),
            json!({
                "is_lts_enabled": self.lts.is_lts_enabled,
                "log_group_name": self.lts.log_group_name,
                "log_topic_name": self.lts.log_topic_name,
            }),
        );
        if let Some(g) = &self.group_id {
            o.insert("group_id".into(), g.as_str().into());
        }
        if let Some(s) = &self.stream_id {
            o.insert("stream_id".into(), s.as_str().into());
        }
        o
    }

    /// `obs_info`; v1.0 documents `bucket_lifecycle` as a string and has no
    /// compression or sorting options.
    fn obs_json(&self, v1: bool) -> Value {
        let obs = &self.obs_info;
        let mut o = Map::new();
        o.insert("bucket_name".into(), obs.bucket_name.as_str().into());
        o.insert(
            "file_prefix_name".into(),
            obs.file_prefix_name.as_str().into(),
        );
        o.insert("is_obs_created".into(), obs.is_obs_created.into());
        o.insert(
            "is_authorized_bucket".into(),
            obs.is_authorized_bucket.into(),
        );
        if v1 {
            o.insert(
                "bucket_lifecycle".into(),
                obs.bucket_lifecycle.to_string().into(),
            );
        } else {
            o.insert("bucket_lifecycle".into(), obs.bucket_lifecycle.into());
            o.insert("compress_type".into(), obs.compress_type.as_str().into());
            o.insert("is_sort_by_service".into(), obs.is_sort_by_service.into());
        }
        // Buckets live in the one object store this server is configured
        // with; the reference shows an empty location for that case.
        o.insert("bucket_location".into(), "".into());
        Value::Object(o)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn system_tracker() -> Tracker {
        Tracker {
            id: "2e6fa9b8-8c6e-456d-b5d3-77be972d220b".into(),
            tracker_name: "system".into(),
            tracker_type: TrackerType::System,
            project_id: "p1".into(),
            domain_id: "d1".into(),
            status: TrackerStatus::Enabled,
            create_time: 1587958482923,
            obs_info: ObsInfo {
                bucket_name: "obs-f1da".into(),
                file_prefix_name: "yO8Q".into(),
                bucket_lifecycle: 30,
                ..ObsInfo::default()
            },
            data_bucket: None,
            lts: Lts {
                is_lts_enabled: true,
                log_group_name: "CTS".into(),
                log_topic_name: "system-trace".into(),
            },
            group_id: Some("g".into()),
            stream_id: Some("s".into()),
            is_support_trace_files_encryption: true,
            kms_id: Some("13a4207c-7abe-4b68-8510-16b84c3b5504".into()),
            is_support_validate: true,
            is_organization_tracker: false,
            agency_name: None,
            exclude_service: vec![],
            transfer_since: None,
            lts_since: None,
            tags: vec![],
        }
    }

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn v3_system_tracker_has_management_fields_only() {
        let v = system_tracker().to_v3_json();
        assert_eq!(
            keys(&v),
            [
                "create_time",
                "domain_id",
                "group_id",
                "id",
                "is_organization_tracker",
                "is_support_trace_files_encryption",
                "is_support_validate",
                "kms_id",
                "lts",
                "obs_info",
                "project_id",
                "status",
                "stream_id",
                "tags",
                "tracker_name",
                "tracker_type"
            ]
        );
        assert_eq!(
            v["obs_info"],
            json!({
                "bucket_name": "obs-f1da", "file_prefix_name": "yO8Q", "is_obs_created": false,
                "is_authorized_bucket": false, "bucket_lifecycle": 30, "compress_type": "gzip",
                "is_sort_by_service": true, "bucket_location": ""
            })
        );
        assert_eq!(
            v["lts"],
            json!({"is_lts_enabled": true, "log_group_name": "CTS", "log_topic_name": "system-trace"})
        );
        assert_eq!(v["create_time"], json!(1587958482923i64));
    }

    #[test]
    fn v3_data_tracker_has_data_bucket_and_no_management_fields() {
        let mut t = system_tracker();
        t.tracker_type = TrackerType::Data;
        t.tracker_name = "d1".into();
        t.is_support_trace_files_encryption = false;
        t.kms_id = None;
        t.group_id = None;
        t.stream_id = None;
        t.data_bucket = Some(DataBucket {
            data_bucket_name: "tracked".into(),
            data_event: vec![DataEvent::Read, DataEvent::Write],
            search_enabled: true,
        });
        t.agency_name = Some("cts_admin_trust".into());
        t.tags = vec![Tag {
            key: "k".into(),
            value: "v".into(),
        }];
        let v = t.to_v3_json();
        assert_eq!(
            keys(&v),
            [
                "agency_name",
                "create_time",
                "data_bucket",
                "domain_id",
                "id",
                "is_support_validate",
                "lts",
                "obs_info",
                "project_id",
                "status",
                "tags",
                "tracker_name",
                "tracker_type"
            ]
        );
        assert_eq!(
            v["data_bucket"],
            json!({"data_bucket_name": "tracked", "data_event": ["READ", "WRITE"], "search_enabled": true})
        );
        assert_eq!(v["tags"], json!([{"key": "k", "value": "v"}]));
    }

    #[test]
    fn detail_only_with_error_and_selector_only_when_set() {
        let mut t = system_tracker();
        assert!(t.to_v3_json().get("detail").is_none());
        assert!(t.to_v3_json().get("management_event_selector").is_none());
        t.status = TrackerStatus::Error(ErrorDetail::NoBucket);
        t.exclude_service = vec!["KMS".into()];
        let v = t.to_v3_json();
        assert_eq!(v["status"], "error");
        assert_eq!(v["detail"], "noBucket");
        assert_eq!(
            v["management_event_selector"],
            json!({"exclude_service": ["KMS"]})
        );
        assert_eq!(t.to_v1_json()["detail"], "noBucket");
    }

    #[test]
    fn v1_query_view_is_flat_as_documented() {
        let v = system_tracker().to_v1_json();
        assert_eq!(
            keys(&v),
            [
                "bucket_name",
                "create_time",
                "domain_id",
                "file_prefix_name",
                "group_id",
                "id",
                "is_obs_created",
                "lts",
                "project_id",
                "status",
                "stream_id",
                "tracker_name",
                "tracker_type"
            ]
        );
        assert_eq!(v["bucket_name"], "obs-f1da");
        assert_eq!(v["file_prefix_name"], "yO8Q");
    }

    #[test]
    fn v1_created_view_matches_the_seed_example() {
        let v = system_tracker().to_v1_created_json();
        assert_eq!(v["obs_info"]["bucket_name"], "obs-f1da");
        assert_eq!(v["obs_info"]["bucket_lifecycle"], "30");
        assert!(v["obs_info"].get("compress_type").is_none());
        assert_eq!(v["kms_id"], "13a4207c-7abe-4b68-8510-16b84c3b5504");
        assert_eq!(v["is_support_trace_files_encryption"], true);
        assert_eq!(v["log_file_validate"], json!({"is_support_validate": true}));
        assert!(v.get("bucket_name").is_none());
    }

    #[test]
    fn storage_form_round_trips_without_tags() {
        let mut t = system_tracker();
        t.status = TrackerStatus::Error(ErrorDetail::Arrears);
        let back: Tracker = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}
