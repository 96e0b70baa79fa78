//! Request bodies of the v3 and v1.0 tracker operations, read into one typed
//! [`TrackerSpec`] and checked field by field. Rules that need the stored
//! trackers (uniqueness, quota, the fixed tracked bucket) are checked by the
//! store.
//!
//! Unknown fields are ignored, as the public service does: clients built for
//! newer API versions send fields an older server does not know, and the
//! SDK's models already differ between regions. A known field of the wrong
//! JSON type is CTS.0003. `null` counts as absent (the SDK sends it for
//! unset fields of nested objects).

use cts_archive::{is_valid_bucket_name, is_valid_file_prefix};
use serde_json::{Map, Value};

use crate::error::{codes, TrackerError};
use crate::model::{CompressType, DataEvent, Tracker, TrackerStatus, TrackerType};
use crate::model::{LTS_SYSTEM_TOPIC, SYSTEM_TRACKER_NAME};

/// The only agency CTS creates or accepts.
pub const AGENCY_NAME: &str = "cts_admin_trust";
/// Services whose management traces can be excluded from transfer: only KMS
/// (its `createDatakey` traces) per the reference.
pub const EXCLUDABLE_SERVICES: &[&str] = &["KMS"];
/// Retention periods (days) a transfer bucket's lifecycle rule may have;
/// 0 keeps trace files forever.
pub const BUCKET_LIFECYCLES: &[i64] = &[0, 30, 60, 90, 180, 1095];
/// Data tracker names that would be confused with the management tracker.
const RESERVED_NAMES: &[&str] = &[SYSTEM_TRACKER_NAME, LTS_SYSTEM_TOPIC];

/// `obs_info` of a request; `None` leaves a field as it is (update) or at
/// its default (create). `bucket_name: Some("")` switches transfer off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObsSpec {
    pub bucket_name: Option<String>,
    pub file_prefix_name: Option<String>,
    pub is_obs_created: Option<bool>,
    pub bucket_lifecycle: Option<i64>,
    pub compress_type: Option<CompressType>,
    pub is_sort_by_service: Option<bool>,
}

/// A validated create or update request of either API version. On create,
/// absent fields take their defaults; on update, they keep their stored
/// values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerSpec {
    pub tracker_type: TrackerType,
    pub tracker_name: String,
    /// Update only: `Enabled` or `Disabled`.
    pub status: Option<TrackerStatus>,
    pub is_lts_enabled: Option<bool>,
    /// v1.0 only: `(log_group_name, log_topic_name)`.
    pub lts_names: Option<(String, String)>,
    pub obs: ObsSpec,
    pub is_support_trace_files_encryption: Option<bool>,
    /// `Some("")` removes the key.
    pub kms_id: Option<String>,
    pub is_support_validate: Option<bool>,
    pub is_organization_tracker: Option<bool>,
    pub agency_name: Option<String>,
    /// Sorted, without duplicates.
    pub exclude_service: Option<Vec<String>>,
    /// Data trackers: required on create, must not change on update.
    pub data_bucket_name: Option<String>,
    /// Data trackers: sorted, without duplicates, never empty.
    pub data_event: Option<Vec<DataEvent>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Update,
}

/// `POST /v3/{project_id}/tracker`.
pub fn parse_v3_create(body: &[u8]) -> Result<TrackerSpec, TrackerError> {
    parse_v3(body, Op::Create)
}

/// `PUT /v3/{project_id}/tracker`.
pub fn parse_v3_update(body: &[u8]) -> Result<TrackerSpec, TrackerError> {
    parse_v3(body, Op::Update)
}

/// `POST /v1.0/{project_id}/tracker`: always the management tracker, and
/// `bucket_name` is mandatory.
pub fn parse_v1_create(body: &[u8]) -> Result<TrackerSpec, TrackerError> {
    let v = parse_json(body)?;
    let f = Fields::root(&v)?;
    let mut spec = TrackerSpec::new(TrackerType::System, SYSTEM_TRACKER_NAME.into());
    let Some(bucket) = f.string("bucket_name")? else {
        return Err(TrackerError::body("bucket_name", "bucket_name is required"));
    };
    check_bucket_name("bucket_name", bucket)?;
    spec.obs.bucket_name = Some(bucket.into());
    spec.obs.file_prefix_name = file_prefix(&f, "file_prefix_name")?;
    spec.obs.is_obs_created = f.boolean("is_obs_created")?;
    spec.is_support_trace_files_encryption = f.boolean("is_support_trace_files_encryption")?;
    spec.kms_id = f.string("kms_id")?.map(str::to_owned);
    v1_lts(&f, &mut spec)?;
    if let Some(lfv) = f.object("log_file_validate")? {
        spec.is_support_validate = Some(lfv.required_bool("is_support_validate")?);
    }
    Ok(spec)
}

/// `PUT /v1.0/{project_id}/tracker/{tracker_name}`: the name comes from the
/// path and can only be `system`.
pub fn parse_v1_update(tracker_name: &str, body: &[u8]) -> Result<TrackerSpec, TrackerError> {
    if tracker_name != SYSTEM_TRACKER_NAME {
        return Err(system_name_error(tracker_name));
    }
    let v = parse_json(body)?;
    let f = Fields::root(&v)?;
    let mut spec = TrackerSpec::new(TrackerType::System, SYSTEM_TRACKER_NAME.into());
    if let Some(bucket) = f.string("bucket_name")? {
        check_bucket_name("bucket_name", bucket)?;
        spec.obs.bucket_name = Some(bucket.into());
    }
    spec.obs.file_prefix_name = file_prefix(&f, "file_prefix_name")?;
    spec.obs.is_obs_created = f.boolean("is_obs_created")?;
    spec.status = status(f.string("status")?)?;
    v1_lts(&f, &mut spec)?;
    Ok(spec)
}

/// `tracker_type` of a query (`GET`/`DELETE /v3/{project_id}/trackers`).
pub fn parse_tracker_type_param(value: &str) -> Result<TrackerType, TrackerError> {
    TrackerType::parse(value).ok_or_else(|| {
        TrackerError::param(
            "tracker_type",
            format!("tracker_type must be system or data, not {value:?}"),
        )
    })
}

/// Data tracker names: 1–32 letters, digits, `-` and `_`, starting with a
/// letter or digit, and neither `system` nor `system-trace`.
pub fn is_valid_data_tracker_name(s: &str) -> bool {
    // The charset is the one trace queries accept for `tracker_name`.
    s.len() <= 32 && cts_model::is_valid_tracker_name(s) && !RESERVED_NAMES.contains(&s)
}

impl TrackerSpec {
    pub(crate) fn new(tracker_type: TrackerType, tracker_name: String) -> Self {
        TrackerSpec {
            tracker_type,
            tracker_name,
            status: None,
            is_lts_enabled: None,
            lts_names: None,
            obs: ObsSpec::default(),
            is_support_trace_files_encryption: None,
            kms_id: None,
            is_support_validate: None,
            is_organization_tracker: None,
            agency_name: None,
            exclude_service: None,
            data_bucket_name: None,
            data_event: None,
        }
    }

    /// Writes the given fields into `t` (a fresh tracker or a stored one).
    /// The tracked bucket is not touched: it is set once, by the store.
    pub(crate) fn apply_to(&self, t: &mut Tracker) {
        if let Some(s) = self.status {
            t.status = s;
        }
        if let Some(on) = self.is_lts_enabled {
            t.lts.is_lts_enabled = on;
        }
        if let Some((group, topic)) = &self.lts_names {
            t.lts.log_group_name.clone_from(group);
            t.lts.log_topic_name.clone_from(topic);
        }
        // The log group and stream ids derive from what they name (the
        // project's group, and its topic in it), so the same stream keeps
        // its id, also across a switch off and on.
        if t.lts.is_lts_enabled {
            let (project, lts) = (&t.project_id, &t.lts);
            t.group_id = Some(derived_id(&[project, &lts.log_group_name]));
            t.stream_id = Some(derived_id(&[
                project,
                &lts.log_group_name,
                &lts.log_topic_name,
            ]));
        }
        let (o, obs) = (&self.obs, &mut t.obs_info);
        if let Some(b) = &o.bucket_name {
            obs.bucket_name.clone_from(b);
        }
        if let Some(p) = &o.file_prefix_name {
            obs.file_prefix_name.clone_from(p);
        }
        if let Some(c) = o.is_obs_created {
            obs.is_obs_created = c;
        }
        if let Some(l) = o.bucket_lifecycle {
            obs.bucket_lifecycle = l;
        }
        if let Some(c) = o.compress_type {
            obs.compress_type = c;
        }
        if let Some(s) = o.is_sort_by_service {
            obs.is_sort_by_service = s;
        }
        if let Some(e) = self.is_support_trace_files_encryption {
            t.is_support_trace_files_encryption = e;
        }
        if let Some(k) = &self.kms_id {
            t.kms_id = (!k.is_empty()).then(|| k.clone());
        }
        if let Some(v) = self.is_support_validate {
            t.is_support_validate = v;
        }
        if let Some(o) = self.is_organization_tracker {
            t.is_organization_tracker = o;
        }
        if let Some(a) = &self.agency_name {
            t.agency_name = Some(a.clone());
        }
        if let Some(x) = &self.exclude_service {
            t.exclude_service.clone_from(x);
        }
        if let (Some(events), Some(b)) = (&self.data_event, &mut t.data_bucket) {
            b.data_event.clone_from(events);
        }
    }

    /// Encryption needs a key (CTS.0221), and a key named by this request,
    /// or one that encryption is being switched on with, must exist
    /// (CTS.0222). `key_exists` is the server's key registry.
    pub(crate) fn check_encryption(
        &self,
        t: &Tracker,
        key_exists: &dyn Fn(&str) -> bool,
    ) -> Result<(), TrackerError> {
        if t.is_support_trace_files_encryption && t.kms_id.is_none() {
            return Err(TrackerError::field(
                codes::KMS_ID_EMPTY,
                "kms_id",
                "kms_id is required when is_support_trace_files_encryption is true",
            ));
        }
        let named = self.kms_id.as_deref().is_some_and(|k| !k.is_empty())
            || self.is_support_trace_files_encryption == Some(true);
        match &t.kms_id {
            Some(k) if named && !key_exists(k) => Err(TrackerError::field(
                codes::KMS_VERIFICATION,
                "kms_id",
                format!("kms_id {k:?} names no key known to this server"),
            )),
            _ => Ok(()),
        }
    }
}

fn parse_v3(body: &[u8], op: Op) -> Result<TrackerSpec, TrackerError> {
    let v = parse_json(body)?;
    let f = Fields::root(&v)?;
    let tracker_type = match f.string("tracker_type")? {
        None => {
            return Err(TrackerError::field(
                codes::TRACKER_TYPE_VALUE,
                "tracker_type",
                "tracker_type is required: system or data",
            ))
        }
        Some(s) => TrackerType::parse(s).ok_or_else(|| {
            TrackerError::field(
                codes::TRACKER_TYPE_VALUE,
                "tracker_type",
                format!("tracker_type must be system or data, not {s:?}"),
            )
        })?,
    };
    let name = tracker_name(tracker_type, f.string("tracker_name")?)?;
    let mut spec = TrackerSpec::new(tracker_type, name);
    // Create has no status: a new tracker is enabled (and the field is
    // ignored like any unknown one).
    if op == Op::Update {
        spec.status = status(f.string("status")?)?;
    }
    spec.is_lts_enabled = f.boolean("is_lts_enabled")?;
    if let Some(o) = f.object("obs_info")? {
        spec.obs = obs_spec(&o)?;
    }
    spec.is_support_trace_files_encryption = f.boolean("is_support_trace_files_encryption")?;
    spec.kms_id = f.string("kms_id")?.map(str::to_owned);
    spec.is_support_validate = f.boolean("is_support_validate")?;
    spec.is_organization_tracker = f.boolean("is_organization_tracker")?;
    if let Some(a) = f.string("agency_name")? {
        if a != AGENCY_NAME {
            return Err(TrackerError::body(
                "agency_name",
                format!("agency_name can only be {AGENCY_NAME}, not {a:?}"),
            ));
        }
        spec.agency_name = Some(a.into());
    }
    if let Some(sel) = f.object("management_event_selector")? {
        spec.exclude_service = exclude_service(&sel)?;
    }
    if let Some(db) = f.object("data_bucket")? {
        if let Some(name) = db.string("data_bucket_name")? {
            if name.is_empty() {
                return Err(tracked_bucket_empty());
            }
            check_bucket_name("data_bucket.data_bucket_name", name)?;
            spec.data_bucket_name = Some(name.into());
        }
        spec.data_event = data_events(&db)?;
    }
    check_type_fields(&spec, op)?;
    Ok(spec)
}

/// Fields that belong to one tracker type only.
fn check_type_fields(spec: &TrackerSpec, op: Op) -> Result<(), TrackerError> {
    match spec.tracker_type {
        TrackerType::System => {
            if spec.data_bucket_name.is_some() || spec.data_event.is_some() {
                return Err(TrackerError::field(
                    codes::SYSTEM_TRACKER_DATA_BUCKET,
                    "data_bucket",
                    "data_bucket is for data trackers only",
                ));
            }
        }
        TrackerType::Data => {
            if spec.is_support_trace_files_encryption == Some(true) {
                return Err(TrackerError::field(
                    codes::KMS_NOT_SUPPORTED,
                    "is_support_trace_files_encryption",
                    "trace file encryption is supported for the management tracker only",
                ));
            }
            if spec.kms_id.as_deref().is_some_and(|k| !k.is_empty()) {
                return Err(TrackerError::field(
                    codes::KMS_NOT_SUPPORTED,
                    "kms_id",
                    "kms_id is supported for the management tracker only",
                ));
            }
            if spec.is_organization_tracker == Some(true) {
                return Err(TrackerError::body(
                    "is_organization_tracker",
                    "is_organization_tracker applies to the management tracker only",
                ));
            }
            if spec.exclude_service.as_ref().is_some_and(|x| !x.is_empty()) {
                return Err(TrackerError::body(
                    "management_event_selector.exclude_service",
                    "management_event_selector applies to the management tracker only",
                ));
            }
            if op == Op::Create {
                if spec.data_bucket_name.is_none() {
                    return Err(tracked_bucket_empty());
                }
                if spec.data_event.is_none() {
                    return Err(operation_type_empty());
                }
            }
        }
    }
    Ok(())
}

/// The management tracker's name defaults to and must be `system`; a data
/// tracker's is required and follows [`is_valid_data_tracker_name`].
fn tracker_name(t: TrackerType, name: Option<&str>) -> Result<String, TrackerError> {
    match (t, name) {
        (TrackerType::System, None) => Ok(SYSTEM_TRACKER_NAME.into()),
        (TrackerType::System, Some(n)) if n == SYSTEM_TRACKER_NAME => Ok(n.into()),
        (TrackerType::System, Some(n)) => Err(system_name_error(n)),
        (TrackerType::Data, Some(n)) if is_valid_data_tracker_name(n) => Ok(n.into()),
        (TrackerType::Data, Some(n)) if n == SYSTEM_TRACKER_NAME => Err(TrackerError::field(
            codes::DATA_TRACKER_NAMED_SYSTEM,
            "tracker_name",
            "a data tracker cannot be named system: that name is the management tracker's",
        )),
        (TrackerType::Data, n) => Err(TrackerError::field(
            codes::TRACKER_NAME_FORMAT,
            "tracker_name",
            format!(
                "tracker_name of a data tracker must be 1 to 32 letters, digits, hyphens and \
                 underscores starting with a letter or digit, and neither system nor \
                 system-trace; got {n:?}"
            ),
        )),
    }
}

/// CTS.0204, for bodies, paths and query parameters alike.
pub(crate) fn system_name_error(name: &str) -> TrackerError {
    TrackerError::field(
        codes::SYSTEM_TRACKER_NAME,
        "tracker_name",
        format!("the tracker_name of a management tracker can only be system, not {name:?}"),
    )
}

fn status(s: Option<&str>) -> Result<Option<TrackerStatus>, TrackerError> {
    match s {
        None => Ok(None),
        Some("enabled") => Ok(Some(TrackerStatus::Enabled)),
        Some("disabled") => Ok(Some(TrackerStatus::Disabled)),
        Some(other) => Err(TrackerError::field(
            codes::STATUS_VALUE,
            "status",
            format!("status can only be enabled or disabled, not {other:?}"),
        )),
    }
}

fn obs_spec(f: &Fields<'_>) -> Result<ObsSpec, TrackerError> {
    let bucket_name = match f.string("bucket_name")? {
        Some(b) if !b.is_empty() => {
            check_bucket_name(&f.path("bucket_name"), b)?;
            Some(b.to_owned())
        }
        other => other.map(str::to_owned),
    };
    let bucket_lifecycle = f.integer("bucket_lifecycle")?;
    if let Some(days) = bucket_lifecycle {
        if !BUCKET_LIFECYCLES.contains(&days) {
            return Err(TrackerError::body(
                &f.path("bucket_lifecycle"),
                format!("bucket_lifecycle must be one of {BUCKET_LIFECYCLES:?} days, not {days}"),
            ));
        }
    }
    let compress_type = match f.string("compress_type")? {
        None => None,
        Some("gzip") => Some(CompressType::Gzip),
        Some("json") => Some(CompressType::Json),
        Some(other) => {
            return Err(TrackerError::body(
                &f.path("compress_type"),
                format!("compress_type must be gzip or json, not {other:?}"),
            ))
        }
    };
    Ok(ObsSpec {
        bucket_name,
        file_prefix_name: file_prefix(f, "file_prefix_name")?,
        is_obs_created: f.boolean("is_obs_created")?,
        bucket_lifecycle,
        compress_type,
        is_sort_by_service: f.boolean("is_sort_by_service")?,
    })
}

fn file_prefix(f: &Fields<'_>, name: &str) -> Result<Option<String>, TrackerError> {
    match f.string(name)? {
        Some(p) if !is_valid_file_prefix(p) => Err(TrackerError::field(
            codes::FILE_PREFIX_FORMAT,
            &f.path(name),
            "file_prefix_name must be 0 to 64 letters, digits, hyphens, underscores and periods, \
             and not . or ..",
        )),
        p => Ok(p.map(str::to_owned)),
    }
}

fn check_bucket_name(field: &str, name: &str) -> Result<(), TrackerError> {
    if is_valid_bucket_name(name) {
        return Ok(());
    }
    Err(TrackerError::field(
        codes::BUCKET_NAME,
        field,
        format!(
            "invalid bucket name {name:?}: a bucket name must be a string of 3 to 63 \
             characters, including only lowercase letters, digits, hyphens (-), or periods \
             (.), start and end with a digit or a lowercase letter, have no two adjacent \
             periods nor a period next to a hyphen, and not be an IP address"
        ),
    ))
}

fn exclude_service(f: &Fields<'_>) -> Result<Option<Vec<String>>, TrackerError> {
    let Some(list) = f.strings("exclude_service")? else {
        return Ok(None);
    };
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for s in list {
        if !EXCLUDABLE_SERVICES.contains(&s) {
            return Err(TrackerError::body(
                &f.path("exclude_service"),
                format!("exclude_service can only contain {EXCLUDABLE_SERVICES:?}, not {s:?}"),
            ));
        }
        out.push(s.into());
    }
    out.sort_unstable();
    out.dedup();
    Ok(Some(out))
}

fn data_events(f: &Fields<'_>) -> Result<Option<Vec<DataEvent>>, TrackerError> {
    let Some(list) = f.strings("data_event")? else {
        return Ok(None);
    };
    if list.is_empty() {
        return Err(operation_type_empty());
    }
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        out.push(match s {
            "READ" => DataEvent::Read,
            "WRITE" => DataEvent::Write,
            other => {
                return Err(TrackerError::field(
                    codes::OPERATION_TYPE_VALUE,
                    &f.path("data_event"),
                    format!("only WRITE and/or READ operations can be tracked, not {other:?}"),
                ))
            }
        });
    }
    out.sort_unstable();
    out.dedup();
    Ok(Some(out))
}

fn tracked_bucket_empty() -> TrackerError {
    TrackerError::field(
        codes::TRACKED_BUCKET_EMPTY,
        "data_bucket.data_bucket_name",
        "the OBS bucket to track cannot be empty",
    )
}

fn operation_type_empty() -> TrackerError {
    TrackerError::field(
        codes::OPERATION_TYPE_EMPTY,
        "data_bucket.data_event",
        "the operation type cannot be empty: give READ, WRITE or both",
    )
}

/// v1.0 `lts`: all three fields are mandatory; the names name the LTS log
/// group and stream (here: the receiver's group and topic).
fn v1_lts(f: &Fields<'_>, spec: &mut TrackerSpec) -> Result<(), TrackerError> {
    let Some(lts) = f.object("lts")? else {
        return Ok(());
    };
    spec.is_lts_enabled = Some(lts.required_bool("is_lts_enabled")?);
    let name = |field: &str| -> Result<String, TrackerError> {
        let Some(n) = lts.string(field)? else {
            return Err(TrackerError::body(
                &lts.path(field),
                format!("{field} is required"),
            ));
        };
        let ok = (1..=64).contains(&n.len())
            && n.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if !ok {
            return Err(TrackerError::body(
                &lts.path(field),
                format!(
                    "{field} must be 1 to 64 letters, digits, hyphens, underscores and periods"
                ),
            ));
        }
        Ok(n.into())
    };
    spec.lts_names = Some((name("log_group_name")?, name("log_topic_name")?));
    Ok(())
}

/// The body as JSON; CTS.0003 when empty or malformed.
pub(crate) fn parse_json(body: &[u8]) -> Result<Value, TrackerError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(TrackerError::whole_body("the message body is empty"));
    }
    serde_json::from_slice(body)
        .map_err(|e| TrackerError::whole_body(format!("the message body is not valid JSON: {e}")))
}

/// Typed access to the fields of one JSON object, naming each by its path.
pub(crate) struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    pub(crate) fn root(v: &'a Value) -> Result<Self, TrackerError> {
        match v {
            Value::Object(obj) => Ok(Fields {
                obj,
                prefix: String::new(),
            }),
            _ => Err(TrackerError::whole_body(
                "the message body must be a JSON object",
            )),
        }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    fn wrong_type(&self, name: &str, kind: &str) -> TrackerError {
        TrackerError::body(
            &self.path(name),
            format!("{} must be {kind}", self.path(name)),
        )
    }

    pub(crate) fn string(&self, name: &str) -> Result<Option<&'a str>, TrackerError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong_type(name, "a string")),
        }
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, TrackerError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong_type(name, "a boolean")),
        }
    }

    fn required_bool(&self, name: &str) -> Result<bool, TrackerError> {
        self.boolean(name)?.ok_or_else(|| {
            TrackerError::body(&self.path(name), format!("{} is required", self.path(name)))
        })
    }

    fn integer(&self, name: &str) -> Result<Option<i64>, TrackerError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(name, "an integer")),
        }
    }

    pub(crate) fn object(&self, name: &str) -> Result<Option<Fields<'a>>, TrackerError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(obj)) => Ok(Some(Fields {
                obj,
                prefix: self.path(name),
            })),
            Some(_) => Err(self.wrong_type(name, "an object")),
        }
    }

    pub(crate) fn array(&self, name: &str) -> Result<Option<&'a Vec<Value>>, TrackerError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(self.wrong_type(name, "an array")),
        }
    }

    fn strings(&self, name: &str) -> Result<Option<Vec<&'a str>>, TrackerError> {
        let Some(a) = self.array(name)? else {
            return Ok(None);
        };
        a.iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.wrong_type(name, "an array of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The elements of an array of objects, each named `name[i]`.
    pub(crate) fn objects(&self, name: &str) -> Result<Vec<Fields<'a>>, TrackerError> {
        let Some(a) = self.array(name)? else {
            return Ok(Vec::new());
        };
        a.iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(obj) => Ok(Fields {
                    obj,
                    prefix: format!("{}[{i}]", self.path(name)),
                }),
                _ => Err(TrackerError::body(
                    &format!("{}[{i}]", self.path(name)),
                    format!("{}[{i}] must be an object", self.path(name)),
                )),
            })
            .collect()
    }
}

/// A UUID (version 8) derived from `parts`: the same parts, the same id.
fn derived_id(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: the LTS ids name what they identify, the same on every
    /// read and after a switch off and on; another topic is another stream.
    #[test]
    fn lts_ids_derive_from_what_they_name() {
        let a = derived_id(&["p1", "CTS", "system-trace"]);
        assert_eq!(a, derived_id(&["p1", "CTS", "system-trace"]));
        assert_ne!(a, derived_id(&["p1", "CTS", "photos"]));
        assert_ne!(a, derived_id(&["p2", "CTS", "system-trace"]));
        // Lengths are part of the input: no two splits collide.
        assert_ne!(derived_id(&["p1C", "TS"]), derived_id(&["p1", "CTS"]));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }
    use serde_json::json;

    fn v3c(v: Value) -> Result<TrackerSpec, TrackerError> {
        parse_v3_create(v.to_string().as_bytes())
    }

    fn v3u(v: Value) -> Result<TrackerSpec, TrackerError> {
        parse_v3_update(v.to_string().as_bytes())
    }

    fn code(r: Result<TrackerSpec, TrackerError>) -> (&'static str, Option<String>) {
        let e = r.unwrap_err();
        (e.code, e.field)
    }

    fn data(extra: Value) -> Value {
        let mut v = json!({
            "tracker_type": "data", "tracker_name": "d1",
            "data_bucket": {"data_bucket_name": "tracked", "data_event": ["WRITE", "READ", "READ"]}
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn v3_create_example_of_the_reference_parses() {
        let s = v3c(json!({
            "tracker_type": "system", "tracker_name": "system",
            "obs_info": {"is_obs_created": false, "bucket_name": "test-bucket", "file_prefix_name": "11"},
            "is_lts_enabled": true, "is_support_validate": true
        }))
        .unwrap();
        assert_eq!(s.tracker_type, TrackerType::System);
        assert_eq!(s.obs.bucket_name.as_deref(), Some("test-bucket"));
        assert_eq!(s.obs.file_prefix_name.as_deref(), Some("11"));
        assert_eq!(s.is_lts_enabled, Some(true));
        assert_eq!(s.is_support_validate, Some(true));
    }

    #[test]
    fn data_tracker_events_are_sorted_and_deduplicated() {
        let s = v3c(data(json!({}))).unwrap();
        assert_eq!(s.data_event, Some(vec![DataEvent::Read, DataEvent::Write]));
        assert_eq!(s.data_bucket_name.as_deref(), Some("tracked"));
    }

    #[test]
    fn body_must_be_a_json_object() {
        for body in [&b""[..], b"  ", b"{", b"[1]", b"\"x\""] {
            let e = parse_v3_create(body).unwrap_err();
            assert_eq!((e.code, e.status, e.field), ("CTS.0003", 400, None));
        }
    }

    #[test]
    fn tracker_type_is_required_and_enumerated() {
        assert_eq!(
            code(v3c(json!({"tracker_name": "system"}))),
            ("CTS.0202", Some("tracker_type".into()))
        );
        assert_eq!(
            code(v3c(json!({"tracker_type": "admin"}))),
            ("CTS.0202", Some("tracker_type".into()))
        );
        assert_eq!(code(v3c(json!({"tracker_type": 1}))).0, "CTS.0003");
        assert_eq!(parse_tracker_type_param("x").unwrap_err().code, "CTS.0300");
        assert_eq!(parse_tracker_type_param("data").unwrap(), TrackerType::Data);
    }

    #[test]
    fn management_tracker_name_defaults_to_and_must_be_system() {
        assert_eq!(
            v3c(json!({"tracker_type": "system"})).unwrap().tracker_name,
            "system"
        );
        assert_eq!(
            code(v3c(
                json!({"tracker_type": "system", "tracker_name": "System"})
            )),
            ("CTS.0204", Some("tracker_name".into()))
        );
        assert_eq!(
            code(v3u(
                json!({"tracker_type": "system", "tracker_name": "other"})
            ))
            .0,
            "CTS.0204"
        );
    }

    #[test]
    fn data_tracker_name_rules() {
        assert_eq!(
            code(v3c(data(json!({"tracker_name": "system"})))),
            ("CTS.0207", Some("tracker_name".into()))
        );
        for bad in ["", "system-trace", "-a", "_a", "a b", "é", &"a".repeat(33)] {
            assert_eq!(
                code(v3c(data(json!({"tracker_name": bad})))),
                ("CTS.0203", Some("tracker_name".into())),
                "{bad:?}"
            );
        }
        let mut no_name = data(json!({}));
        no_name.as_object_mut().unwrap().remove("tracker_name");
        assert_eq!(code(v3c(no_name)).0, "CTS.0203");
        for good in ["a", "9x", "data-tracker_1", &"a".repeat(32)] {
            assert!(v3c(data(json!({"tracker_name": good}))).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn bucket_name_rules() {
        for bad in [
            "ab",
            "Abc",
            "-abc",
            ".abc",
            "ab_c",
            "a..b",
            "a.-b",
            "a-.b",
            "192.168.1.1",
            "abc-",
            "abc.",
            &"a".repeat(64),
        ] {
            assert!(!is_valid_bucket_name(bad), "{bad:?}");
            assert_eq!(
                code(v3c(
                    json!({"tracker_type": "system", "obs_info": {"bucket_name": bad}})
                )),
                ("CTS.0231", Some("obs_info.bucket_name".into()))
            );
            assert_eq!(
                code(v3c(data(
                    json!({"data_bucket": {"data_bucket_name": bad, "data_event": ["READ"]}})
                ))),
                ("CTS.0231", Some("data_bucket.data_bucket_name".into()))
            );
        }
        for good in ["abc", "0bucket", "my-bucket.logs", "1.2.3", &"a".repeat(63)] {
            assert!(is_valid_bucket_name(good), "{good:?}");
        }
        // An empty transfer bucket switches transfer off.
        let s = v3u(json!({"tracker_type": "system", "obs_info": {"bucket_name": ""}})).unwrap();
        assert_eq!(s.obs.bucket_name.as_deref(), Some(""));
    }

    #[test]
    fn file_prefix_rules() {
        let long = "a".repeat(65);
        for bad in ["a/b", "a b", "ä", ".", "..", long.as_str()] {
            assert_eq!(
                code(v3c(
                    json!({"tracker_type": "system", "obs_info": {"file_prefix_name": bad}})
                )),
                ("CTS.0218", Some("obs_info.file_prefix_name".into()))
            );
        }
        for good in ["", "yO8Q", "a-b.c_d", &"Z".repeat(64)] {
            assert!(is_valid_file_prefix(good));
        }
    }

    #[test]
    fn obs_enumerations() {
        let sys = |obs: Value| v3c(json!({"tracker_type": "system", "obs_info": obs}));
        assert_eq!(
            code(sys(json!({"compress_type": "zip"}))),
            ("CTS.0003", Some("obs_info.compress_type".into()))
        );
        assert_eq!(
            code(sys(json!({"bucket_lifecycle": 7}))),
            ("CTS.0003", Some("obs_info.bucket_lifecycle".into()))
        );
        assert_eq!(
            code(sys(json!({"is_sort_by_service": "yes"}))),
            ("CTS.0003", Some("obs_info.is_sort_by_service".into()))
        );
        let s = sys(
            json!({"compress_type": "json", "bucket_lifecycle": 1095, "is_sort_by_service": false}),
        )
        .unwrap();
        assert_eq!(s.obs.compress_type, Some(CompressType::Json));
        assert_eq!(s.obs.bucket_lifecycle, Some(1095));
        assert_eq!(s.obs.is_sort_by_service, Some(false));
    }

    #[test]
    fn tracked_bucket_and_operation_type_rules() {
        let mut no_bucket = data(json!({}));
        no_bucket.as_object_mut().unwrap().remove("data_bucket");
        assert_eq!(code(v3c(no_bucket)).0, "CTS.0210");
        assert_eq!(
            code(v3c(data(
                json!({"data_bucket": {"data_bucket_name": "", "data_event": ["READ"]}})
            )))
            .0,
            "CTS.0210"
        );
        assert_eq!(
            code(v3c(data(
                json!({"data_bucket": {"data_bucket_name": "tracked"}})
            ))),
            ("CTS.0219", Some("data_bucket.data_event".into()))
        );
        assert_eq!(
            code(v3c(data(
                json!({"data_bucket": {"data_bucket_name": "tracked", "data_event": []}})
            )))
            .0,
            "CTS.0219"
        );
        assert_eq!(
            code(v3c(data(
                json!({"data_bucket": {"data_bucket_name": "tracked", "data_event": ["DELETE"]}})
            ))),
            ("CTS.0225", Some("data_bucket.data_event".into()))
        );
        assert_eq!(
            code(v3c(data(
                json!({"data_bucket": {"data_bucket_name": "tracked", "data_event": ["read"]}})
            )))
            .0,
            "CTS.0225"
        );
        // An update may leave the bucket out; it may not empty the events.
        assert!(v3u(json!({"tracker_type": "data", "tracker_name": "d1"})).is_ok());
        assert_eq!(
            code(v3u(json!({"tracker_type": "data", "tracker_name": "d1", "data_bucket": {"data_event": []}}))).0,
            "CTS.0219"
        );
    }

    #[test]
    fn management_only_fields_are_refused_on_data_trackers() {
        assert_eq!(
            code(v3c(data(
                json!({"is_support_trace_files_encryption": true, "kms_id": "k"})
            ))),
            ("CTS.0220", Some("is_support_trace_files_encryption".into()))
        );
        assert_eq!(
            code(v3c(data(json!({"kms_id": "k"})))),
            ("CTS.0220", Some("kms_id".into()))
        );
        assert_eq!(
            code(v3c(data(json!({"is_organization_tracker": true})))),
            ("CTS.0003", Some("is_organization_tracker".into()))
        );
        assert_eq!(
            code(v3c(data(
                json!({"management_event_selector": {"exclude_service": ["KMS"]}})
            )))
            .0,
            "CTS.0003"
        );
        // Their "off" values are harmless.
        assert!(v3c(data(
            json!({"is_support_trace_files_encryption": false, "is_organization_tracker": false})
        ))
        .is_ok());
    }

    #[test]
    fn data_bucket_is_refused_on_the_management_tracker() {
        assert_eq!(
            code(v3c(
                json!({"tracker_type": "system", "data_bucket": {"data_bucket_name": "abc", "data_event": ["READ"]}})
            )),
            ("CTS.0206", Some("data_bucket".into()))
        );
    }

    #[test]
    fn agency_and_exclude_service_values() {
        assert_eq!(
            code(v3c(
                json!({"tracker_type": "system", "agency_name": "admin"})
            )),
            ("CTS.0003", Some("agency_name".into()))
        );
        assert_eq!(
            code(v3c(
                json!({"tracker_type": "system", "management_event_selector": {"exclude_service": ["ECS"]}})
            )),
            (
                "CTS.0003",
                Some("management_event_selector.exclude_service".into())
            )
        );
        let s = v3c(json!({
            "tracker_type": "system", "agency_name": "cts_admin_trust",
            "management_event_selector": {"exclude_service": ["KMS", "KMS"]}
        }))
        .unwrap();
        assert_eq!(s.agency_name.as_deref(), Some("cts_admin_trust"));
        assert_eq!(s.exclude_service, Some(vec!["KMS".to_owned()]));
    }

    #[test]
    fn status_only_on_update_and_only_enabled_or_disabled() {
        assert_eq!(
            v3c(json!({"tracker_type": "system", "status": "disabled"}))
                .unwrap()
                .status,
            None
        );
        assert_eq!(
            v3u(json!({"tracker_type": "system", "status": "disabled"}))
                .unwrap()
                .status,
            Some(TrackerStatus::Disabled)
        );
        for bad in ["error", "Enabled", ""] {
            assert_eq!(
                code(v3u(json!({"tracker_type": "system", "status": bad}))),
                ("CTS.0205", Some("status".into()))
            );
        }
        assert_eq!(
            parse_v1_update("system", br#"{"status": "stopped"}"#)
                .unwrap_err()
                .code,
            "CTS.0205"
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_null_is_absent() {
        let s = v3c(json!({
            "tracker_type": "system", "future_field": {"x": 1}, "kms_id": null,
            "obs_info": {"bucket_name": null, "something": 1}
        }))
        .unwrap();
        assert_eq!(s.kms_id, None);
        assert_eq!(s.obs, ObsSpec::default());
    }

    #[test]
    fn wrong_types_name_the_field() {
        assert_eq!(
            code(v3c(json!({"tracker_type": "system", "obs_info": "b"}))),
            ("CTS.0003", Some("obs_info".into()))
        );
        assert_eq!(
            code(v3c(
                json!({"tracker_type": "system", "is_lts_enabled": "true"})
            )),
            ("CTS.0003", Some("is_lts_enabled".into()))
        );
        assert_eq!(
            code(v3c(data(
                json!({"data_bucket": {"data_bucket_name": "abc", "data_event": [1]}})
            ))),
            ("CTS.0003", Some("data_bucket.data_event".into()))
        );
    }

    #[test]
    fn v1_create_example_of_the_seed_parses() {
        // The seed's example, with its stray quotes fixed.
        let body = br#"{
          "bucket_name": "obs-f1da", "is_support_trace_files_encryption": true,
          "kms_id": "13a4207c-7abe-4b68-8510-16b84c3b5504", "is_obs_created": true,
          "file_prefix_name": "yO8Q",
          "lts": {"is_lts_enabled": true, "log_group_name": "CTS", "log_topic_name": "system-trace"},
          "log_file_validate": {"is_support_validate": true}
        }"#;
        let s = parse_v1_create(body).unwrap();
        assert_eq!(
            (s.tracker_type, s.tracker_name.as_str()),
            (TrackerType::System, "system")
        );
        assert_eq!(s.obs.bucket_name.as_deref(), Some("obs-f1da"));
        assert_eq!(s.obs.is_obs_created, Some(true));
        assert_eq!(
            s.kms_id.as_deref(),
            Some("13a4207c-7abe-4b68-8510-16b84c3b5504")
        );
        assert_eq!(s.lts_names, Some(("CTS".into(), "system-trace".into())));
        assert_eq!(s.is_support_validate, Some(true));
    }

    #[test]
    fn v1_create_rules() {
        assert_eq!(
            parse_v1_create(b"{}").unwrap_err().field.as_deref(),
            Some("bucket_name")
        );
        assert_eq!(
            parse_v1_create(br#"{"bucket_name": ""}"#).unwrap_err().code,
            "CTS.0231"
        );
        assert_eq!(
            parse_v1_create(br#"{"bucket_name": "abc", "file_prefix_name": "a/b"}"#)
                .unwrap_err()
                .code,
            "CTS.0218"
        );
        let e = parse_v1_create(
            br#"{"bucket_name": "abc", "lts": {"is_lts_enabled": true, "log_group_name": "CTS"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("CTS.0003", Some("lts.log_topic_name"))
        );
        let e = parse_v1_create(br#"{"bucket_name": "abc", "lts": {"is_lts_enabled": true, "log_group_name": "a b", "log_topic_name": "t"}}"#)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("lts.log_group_name"));
        let e = parse_v1_create(br#"{"bucket_name": "abc", "log_file_validate": {}}"#).unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("log_file_validate.is_support_validate")
        );
    }

    #[test]
    fn v1_update_is_the_management_tracker_only() {
        let e = parse_v1_update("d1", b"{}").unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("CTS.0204", Some("tracker_name"))
        );
        let s = parse_v1_update(
            "system",
            br#"{"bucket_name": "my-created-bucket", "file_prefix_name": "some_folder", "status": "disabled",
                 "lts": {"is_lts_enabled": true, "log_group_name": "CTS", "log_topic_name": "system-trace"}}"#,
        )
        .unwrap();
        assert_eq!(s.status, Some(TrackerStatus::Disabled));
        assert_eq!(s.obs.bucket_name.as_deref(), Some("my-created-bucket"));
        assert_eq!(
            parse_v1_update("system", br#"{"bucket_name": "my_created_bucket"}"#)
                .unwrap_err()
                .code,
            "CTS.0231"
        );
    }
}
