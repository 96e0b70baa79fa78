//! The tracker store: SQLite (one node) or PostgreSQL (every node) for
//! durability, an in-memory view of what each project records for the
//! ingest path (`view.rs`), and the rules that need the stored trackers
//! (one management tracker, unique names, quota, bucket rules).

use std::path::Path;
use std::sync::Arc;

use cts_db::{Arg, Db, DbError, Sql};
use parking_lot::RwLock;
use serde::Serialize;

use crate::error::{codes, TrackerError};
use crate::model::{
    DataBucket, Lts, ObsInfo, Tracker, TrackerStatus, TrackerType, LTS_GROUP, LTS_SYSTEM_TOPIC,
    SYSTEM_TRACKER_NAME,
};
use crate::request::{system_name_error, TrackerSpec};
use crate::view::{bump, ProjectView, RecordingDataTracker, Views};

/// Configurable quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Data trackers per project (the management tracker is always 1).
    pub data_trackers: u64,
    /// Key event notifications per project.
    pub notifications: u64,
}

impl Default for Limits {
    /// The public service's: 100 data trackers and 100 notifications.
    fn default() -> Self {
        Limits {
            data_trackers: 100,
            notifications: 100,
        }
    }
}

/// One entry of `GET /v3/{project_id}/quotas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quota {
    /// `tracker` or `notification`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub used: u64,
    pub quota: u64,
}

/// A failure inside a transaction: a broken rule, or the database.
pub(crate) enum Failure {
    Rule(TrackerError),
    Db(String),
}

impl From<TrackerError> for Failure {
    fn from(e: TrackerError) -> Self {
        Failure::Rule(e)
    }
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Self {
        Failure::Db(e.to_string())
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        Failure::Db(format!("stored tracker: {e}"))
    }
}

impl Failure {
    /// `db_code` tells a failed write (CTS.0004) from a failed read (CTS.0005).
    pub(crate) fn into_error(self, db_code: &'static str) -> TrackerError {
        match self {
            Failure::Rule(e) => e,
            Failure::Db(e) => TrackerError::storage(db_code, e),
        }
    }
}

/// The trackers of every project. Share it as `Arc<TrackerStore>`: it is
/// `Send + Sync` and every method takes `&self`.
///
/// Every call blocks (SQLite and its fsync, or PostgreSQL): async callers
/// run them with `spawn_blocking`. Each write is one transaction.
/// [`management_enabled`](Self::management_enabled) and
/// [`data_tracker_for`](Self::data_tracker_for) never touch the database:
/// they read a per-project view that every write rebuilds inside its
/// transaction and installs after the commit, and that follows the writes
/// of other nodes (see [`TrackerStore::refresh`]).
pub struct TrackerStore {
    pub(crate) db: Db,
    limits: Limits,
    pub(crate) views: RwLock<Views>,
}

impl std::fmt::Debug for TrackerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerStore")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Opens `dir/name` through `cts-db` (private, WAL, FULL, foreign keys)
/// brought to the last of `migrations`.
pub(crate) fn open_sqlite(
    dir: &Path,
    name: &str,
    migrations: &cts_sqlite::Migrations<'static>,
) -> Result<Db, TrackerError> {
    Db::sqlite(dir, name, migrations)
        .map_err(|e| TrackerError::storage(codes::WRITE_FAILED, e.to_string()))
}

impl TrackerStore {
    /// Opens (creating on first use) `dir/trackers.db`; `dir` is
    /// `DATA_DIR/trackers`.
    pub fn open(dir: &Path, limits: Limits) -> Result<TrackerStore, TrackerError> {
        let db = open_sqlite(dir, "trackers.db", &crate::schema::sqlite_trackers())?;
        TrackerStore::on(db, limits)
    }

    /// The store on `db`: the SQLite file of [`TrackerStore::open`], or
    /// PostgreSQL opened with [`crate::PG_SCHEMA`] (shared by every node;
    /// call [`TrackerStore::follow_other_nodes`] then).
    pub fn on(db: Db, limits: Limits) -> Result<TrackerStore, TrackerError> {
        let views = db
            .read(Views::load)
            .map_err(|e| e.into_error(codes::READ_FAILED))?;
        Ok(TrackerStore {
            db,
            limits,
            views: RwLock::new(views),
        })
    }

    /// Runs `f` in one transaction that changes `project_id`'s trackers,
    /// then installs the project's new view.
    pub(crate) fn write<T>(
        &self,
        project_id: &str,
        f: impl FnOnce(&dyn Sql) -> Result<T, Failure>,
    ) -> Result<T, TrackerError> {
        let (out, view) = self
            .db
            .transaction(|tx| {
                let version = bump(tx, project_id)?;
                let out = f(tx)?;
                let view = ProjectView::of(&load_project(tx, project_id)?, version);
                Ok::<_, Failure>((out, view))
            })
            .map_err(|e| e.into_error(codes::WRITE_FAILED))?;
        self.views.write().install(project_id, view);
        Ok(out)
    }

    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, Failure>,
    ) -> Result<T, TrackerError> {
        self.db
            .read(f)
            .map_err(|e| e.into_error(codes::READ_FAILED))
    }

    /// Creates a tracker from a create request of either version.
    /// `key_exists` says whether a `kms_id` names a key of the project.
    pub fn create(
        &self,
        project_id: &str,
        domain_id: &str,
        spec: &TrackerSpec,
        now_ms: i64,
        key_exists: &dyn Fn(&str) -> bool,
    ) -> Result<Tracker, TrackerError> {
        self.write(project_id, |tx| {
            let existing = load_project(tx, project_id)?;
            match spec.tracker_type {
                TrackerType::System => {
                    if existing
                        .iter()
                        .any(|t| t.tracker_type == TrackerType::System)
                    {
                        return Err(TrackerError::conflict(
                            codes::SYSTEM_TRACKER_EXISTS,
                            "a management tracker has been created: the project has one already",
                        )
                        .into());
                    }
                }
                TrackerType::Data => {
                    if existing.iter().any(|t| t.tracker_name == spec.tracker_name) {
                        return Err(TrackerError::field(
                            codes::TRACKER_EXISTS,
                            "tracker_name",
                            format!("the tracker {:?} already exists", spec.tracker_name),
                        )
                        .into());
                    }
                    let data = existing.iter().filter(|t| t.data_bucket.is_some()).count();
                    if data as u64 >= self.limits.data_trackers {
                        return Err(TrackerError::conflict(
                            codes::TRACKER_QUOTA,
                            format!(
                                "the number of trackers has reached the upper limit: at most \
                                 {} data trackers per project",
                                self.limits.data_trackers
                            ),
                        )
                        .into());
                    }
                }
            }
            let mut t = new_tracker(project_id, domain_id, spec, now_ms);
            spec.apply_to(&mut t);
            t.transfer_since = t.transfers().then_some(now_ms);
            t.lts_since = t.streams().then_some(now_ms);
            spec.check_encryption(&t, key_exists)?;
            check_buckets(&t, &existing)?;
            check_organization(tx, &t)?;
            insert(tx, &t)?;
            Ok(t)
        })
    }

    /// Applies an update request of either version to the tracker it names,
    /// at `now_ms`; returns the tracker before and after.
    pub fn update(
        &self,
        project_id: &str,
        spec: &TrackerSpec,
        now_ms: i64,
        key_exists: &dyn Fn(&str) -> bool,
    ) -> Result<(Tracker, Tracker), TrackerError> {
        self.write(project_id, |tx| {
            let mut existing = load_project(tx, project_id)?;
            let Some(i) = existing.iter().position(|t| {
                t.tracker_type == spec.tracker_type && t.tracker_name == spec.tracker_name
            }) else {
                return Err(TrackerError::not_found(format!(
                    "{} tracker {:?}",
                    spec.tracker_type.as_str(),
                    spec.tracker_name
                ))
                .into());
            };
            let before = existing.swap_remove(i);
            if let (Some(asked), Some(b)) = (&spec.data_bucket_name, &before.data_bucket) {
                if *asked != b.data_bucket_name {
                    return Err(TrackerError::field(
                        codes::TRACKED_BUCKET_FIXED,
                        "data_bucket.data_bucket_name",
                        format!(
                            "the tracked OBS bucket cannot be modified: it is {:?}",
                            b.data_bucket_name
                        ),
                    )
                    .into());
                }
            }
            let mut after = before.clone();
            spec.apply_to(&mut after);
            if after.transfers() && !before.transfers() {
                after.transfer_since = Some(now_ms);
            }
            if after.streams() && !before.streams() {
                after.lts_since = Some(now_ms);
            }
            spec.check_encryption(&after, key_exists)?;
            check_buckets(&after, &existing)?;
            check_organization(tx, &after)?;
            update_body(tx, &after)?;
            Ok((before, after))
        })
    }

    /// The project's trackers, the management tracker first, then data
    /// trackers by creation; `name` and `tracker_type` filter.
    /// Every tracker of every project (the transfer walks them all).
    pub fn all(&self) -> Result<Vec<Tracker>, TrackerError> {
        self.read(|c| load(c, "1 = 1", &[]))
    }

    pub fn list(
        &self,
        project_id: &str,
        name: Option<&str>,
        tracker_type: Option<TrackerType>,
    ) -> Result<Vec<Tracker>, TrackerError> {
        let mut all = self.read(|c| load_project(c, project_id))?;
        all.retain(|t| {
            name.is_none_or(|n| t.tracker_name == n)
                && tracker_type.is_none_or(|ty| t.tracker_type == ty)
        });
        Ok(all)
    }

    /// The tracker `id` of the project (CTS.0214 when missing or another
    /// project's).
    pub fn get(&self, project_id: &str, id: &str) -> Result<Tracker, TrackerError> {
        self.read(|c| {
            load(
                c,
                "project_id = $1 AND id = $2",
                &[project_id.into(), id.into()],
            )?
            .pop()
            .ok_or_else(|| TrackerError::not_found(format!("id {id:?}")).into())
        })
    }

    /// Deletes trackers; returns what was deleted, tags included.
    ///
    /// `tracker_type` defaults to `data`: without `name` every data tracker
    /// goes (none is not an error); with a name, that data tracker.
    /// `system` deletes the management tracker (its name, if given, must be
    /// `system`). `name = system` without a type also means the management
    /// tracker: the reference's own example deletes it that way, and no
    /// data tracker can have that name.
    pub fn delete(
        &self,
        project_id: &str,
        name: Option<&str>,
        tracker_type: Option<TrackerType>,
    ) -> Result<Vec<Tracker>, TrackerError> {
        self.write(project_id, |tx| {
            let doomed = doomed(load_project(tx, project_id)?, name, tracker_type)?;
            for t in &doomed {
                tx.exec(
                    "DELETE FROM trackers WHERE id = $1",
                    &[t.id.as_str().into()],
                )?;
            }
            Ok(doomed)
        })
    }

    /// What [`TrackerStore::delete`] with these arguments would delete now
    /// (for the audit trace written before the deletion).
    pub fn to_delete(
        &self,
        project_id: &str,
        name: Option<&str>,
        tracker_type: Option<TrackerType>,
    ) -> Result<Vec<Tracker>, TrackerError> {
        self.read(|c| doomed(load_project(c, project_id)?, name, tracker_type))
    }

    /// Sets the status of a tracker (the transfer marks a tracker `error`
    /// with its cause, and `enabled` again when the cause is gone).
    pub fn set_status(
        &self,
        project_id: &str,
        tracker_name: &str,
        status: TrackerStatus,
    ) -> Result<Tracker, TrackerError> {
        self.write(project_id, |tx| {
            let mut t = load(
                tx,
                "project_id = $1 AND tracker_name = $2",
                &[project_id.into(), tracker_name.into()],
            )?
            .pop()
            .ok_or_else(|| TrackerError::not_found(format!("tracker {tracker_name:?}")))?;
            t.status = status;
            update_body(tx, &t)?;
            Ok(t)
        })
    }

    /// Enabling CTS: creates the project's management tracker, enabled and
    /// without transfer, unless it has one. Returns it when created.
    pub fn ensure_system_tracker(
        &self,
        project_id: &str,
        domain_id: &str,
        now_ms: i64,
    ) -> Result<Option<Tracker>, TrackerError> {
        if self.management_exists(project_id)? {
            return Ok(None);
        }
        let spec = TrackerSpec::new(TrackerType::System, SYSTEM_TRACKER_NAME.into());
        match self.create(project_id, domain_id, &spec, now_ms, &|_| false) {
            Ok(t) => Ok(Some(t)),
            // Created by a concurrent caller since the check.
            Err(e) if e.code == codes::SYSTEM_TRACKER_EXISTS => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn management_exists(&self, project_id: &str) -> Result<bool, TrackerError> {
        self.read(|c| {
            Ok(c.query_opt(
                "SELECT 1 FROM trackers WHERE project_id = $1 AND tracker_type = 'system'",
                &[project_id.into()],
            )?
            .is_some())
        })
    }

    /// `GET /v3/{project_id}/quotas`: trackers (1 management + the data
    /// tracker quota) and notifications, whose count the caller supplies.
    pub fn quotas(
        &self,
        project_id: &str,
        notifications_used: u64,
    ) -> Result<Vec<Quota>, TrackerError> {
        let used = self.read(|c| {
            let row = c.query_opt(
                "SELECT COUNT(*) FROM trackers WHERE project_id = $1",
                &[project_id.into()],
            )?;
            Ok(row.map_or(Ok(0), |r| r[0].int())?)
        })?;
        Ok(vec![
            Quota {
                kind: "tracker",
                used: used.unsigned_abs(),
                quota: 1 + self.limits.data_trackers,
            },
            Quota {
                kind: "notification",
                used: notifications_used,
                quota: self.limits.notifications,
            },
        ])
    }

    /// Whether the project's management tracker records (exists and is not
    /// disabled). From memory: called for every reported trace.
    pub fn management_enabled(&self, project_id: &str) -> bool {
        self.views
            .read()
            .projects
            .get(project_id)
            .is_some_and(|v| v.management)
    }

    /// The project's data tracker `tracker_name` if it records. From memory.
    pub fn data_tracker_for(
        &self,
        project_id: &str,
        tracker_name: &str,
    ) -> Option<Arc<RecordingDataTracker>> {
        self.views
            .read()
            .projects
            .get(project_id)
            .and_then(|v| v.data.get(tracker_name).cloned())
    }
}

/// A fresh tracker of the spec's type and name with every default.
fn new_tracker(project_id: &str, domain_id: &str, spec: &TrackerSpec, now_ms: i64) -> Tracker {
    let data_bucket = spec.data_bucket_name.as_ref().map(|name| DataBucket {
        data_bucket_name: name.clone(),
        data_event: spec.data_event.clone().unwrap_or_default(),
        search_enabled: true,
    });
    // A data tracker's traces go to a log topic of its own name.
    let topic = match spec.tracker_type {
        TrackerType::System => LTS_SYSTEM_TOPIC.to_owned(),
        TrackerType::Data => spec.tracker_name.clone(),
    };
    Tracker {
        id: uuid::Uuid::new_v4().to_string(),
        tracker_name: spec.tracker_name.clone(),
        tracker_type: spec.tracker_type,
        project_id: project_id.to_owned(),
        domain_id: domain_id.to_owned(),
        status: TrackerStatus::Enabled,
        create_time: now_ms,
        obs_info: ObsInfo::default(),
        data_bucket,
        lts: Lts {
            is_lts_enabled: false,
            log_group_name: LTS_GROUP.to_owned(),
            log_topic_name: topic,
        },
        group_id: None,
        stream_id: None,
        is_support_trace_files_encryption: false,
        kms_id: None,
        is_support_validate: false,
        is_organization_tracker: false,
        agency_name: None,
        exclude_service: Vec::new(),
        transfer_since: None,
        lts_since: None,
        tags: Vec::new(),
    }
}

/// Bucket rules against the project's other trackers: one data tracker per
/// (bucket, operation type) (CTS.0209), and no transfer into a tracked
/// bucket, which would record its own transfers forever (CTS.0213).
fn check_buckets(t: &Tracker, others: &[Tracker]) -> Result<(), TrackerError> {
    if let Some(b) = &t.data_bucket {
        for o in others {
            let Some(ob) = &o.data_bucket else { continue };
            if ob.data_bucket_name == b.data_bucket_name {
                if let Some(e) = b.data_event.iter().find(|e| ob.data_event.contains(e)) {
                    return Err(TrackerError::field(
                        codes::BUCKET_OPERATION_TRACKED,
                        "data_bucket.data_event",
                        format!(
                            "a type of operations on an OBS bucket can be tracked by only one \
                             tracker: {} on {:?} is tracked by {:?}",
                            e.as_str(),
                            b.data_bucket_name,
                            o.tracker_name
                        ),
                    ));
                }
            }
        }
    }
    let tracked = |bucket: &str| {
        t.data_bucket
            .iter()
            .chain(others.iter().filter_map(|o| o.data_bucket.as_ref()))
            .any(|b| b.data_bucket_name == bucket)
    };
    let transfer_loop = || {
        TrackerError::field(
            codes::TRANSFER_BUCKET_TRACKED,
            "obs_info.bucket_name",
            "the OBS bucket used for trace transfer cannot be a tracked OBS bucket",
        )
    };
    if !t.obs_info.bucket_name.is_empty() && tracked(&t.obs_info.bucket_name) {
        return Err(transfer_loop());
    }
    if let Some(b) = &t.data_bucket {
        if others
            .iter()
            .any(|o| o.obs_info.bucket_name == b.data_bucket_name)
        {
            return Err(transfer_loop());
        }
    }
    Ok(())
}

/// One organization tracker per domain (CTS.0229): the domain stands for the
/// organization, which this server does not otherwise model.
fn check_organization(tx: &dyn Sql, t: &Tracker) -> Result<(), Failure> {
    if !t.is_organization_tracker {
        return Ok(());
    }
    let others = load(
        tx,
        "domain_id = $1 AND tracker_type = 'system' AND project_id <> $2",
        &[t.domain_id.as_str().into(), t.project_id.as_str().into()],
    )?;
    match others.iter().find(|o| o.is_organization_tracker) {
        Some(o) => Err(TrackerError::field(
            codes::ORGANIZATION_TRACKER_EXISTS,
            "is_organization_tracker",
            format!(
                "the organization tracker already exists (project {}): disable it first",
                o.project_id
            ),
        )
        .into()),
        None => Ok(()),
    }
}

fn insert(tx: &dyn Sql, t: &Tracker) -> Result<(), Failure> {
    tx.exec(
        "INSERT INTO trackers (id, project_id, domain_id, tracker_name, tracker_type, create_time, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            t.id.as_str().into(),
            t.project_id.as_str().into(),
            t.domain_id.as_str().into(),
            t.tracker_name.as_str().into(),
            t.tracker_type.as_str().into(),
            t.create_time.into(),
            serde_json::to_string(t)?.as_str().into(),
        ],
    )?;
    Ok(())
}

fn update_body(tx: &dyn Sql, t: &Tracker) -> Result<(), Failure> {
    tx.exec(
        "UPDATE trackers SET body = $1 WHERE id = $2",
        &[
            serde_json::to_string(t)?.as_str().into(),
            t.id.as_str().into(),
        ],
    )?;
    Ok(())
}

pub(crate) fn load_project(c: &dyn Sql, project_id: &str) -> Result<Vec<Tracker>, Failure> {
    load(c, "project_id = $1", &[project_id.into()])
}

/// Trackers matching `filter` (an SQL condition on `trackers`), with their
/// tags, the management tracker first, then by creation.
pub(crate) fn load(c: &dyn Sql, filter: &str, args: &[Arg<'_>]) -> Result<Vec<Tracker>, Failure> {
    let rows = c.query(
        &format!(
            "SELECT body FROM trackers WHERE {filter} \
             ORDER BY tracker_type = 'data', create_time, tracker_name"
        ),
        args,
    )?;
    rows.iter()
        .map(|row| {
            let mut t: Tracker = serde_json::from_str(row[0].text()?)?;
            t.tags = c
                .query(
                    "SELECT key, value FROM tags WHERE tracker_id = $1 ORDER BY key",
                    &[t.id.as_str().into()],
                )?
                .into_iter()
                .map(|r| {
                    let mut r = r.into_iter();
                    let mut next = || r.next().unwrap_or(cts_db::Val::Null).into_text();
                    Ok(crate::model::Tag {
                        key: next()?,
                        value: next()?,
                    })
                })
                .collect::<Result<_, DbError>>()?;
            Ok(t)
        })
        .collect()
}

/// The trackers of `all` that a deletion by `name` and `tracker_type`
/// removes (see [`TrackerStore::delete`]).
fn doomed(
    all: Vec<Tracker>,
    name: Option<&str>,
    tracker_type: Option<TrackerType>,
) -> Result<Vec<Tracker>, Failure> {
    let system = match (tracker_type, name) {
        (Some(TrackerType::System), Some(n)) if n != SYSTEM_TRACKER_NAME => {
            return Err(system_name_error(n).into())
        }
        (Some(TrackerType::System), _) | (None, Some(SYSTEM_TRACKER_NAME)) => true,
        _ => false,
    };
    let doomed: Vec<Tracker> = all
        .into_iter()
        .filter(|t| match (system, name) {
            (true, _) => t.tracker_type == TrackerType::System,
            (false, None) => t.tracker_type == TrackerType::Data,
            (false, Some(n)) => t.tracker_type == TrackerType::Data && t.tracker_name == n,
        })
        .collect();
    if doomed.is_empty() && (system || name.is_some()) {
        return Err(TrackerError::not_found(format!(
            "{} tracker {:?}",
            if system { "system" } else { "data" },
            name.unwrap_or(SYSTEM_TRACKER_NAME)
        ))
        .into());
    }
    Ok(doomed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{CompressType, DataEvent, ErrorDetail};
    use crate::request::{parse_v1_create, parse_v1_update, parse_v3_create, parse_v3_update};
    use crate::testing::{pg_db, trackers};
    use cts_testpg::{both, Place};
    use serde_json::{json, Value};

    pub(crate) fn sys_spec() -> TrackerSpec {
        TrackerSpec::new(TrackerType::System, SYSTEM_TRACKER_NAME.into())
    }

    fn v3(v: Value) -> TrackerSpec {
        parse_v3_create(v.to_string().as_bytes()).unwrap()
    }

    fn v3u(v: Value) -> TrackerSpec {
        parse_v3_update(v.to_string().as_bytes()).unwrap()
    }

    fn data(name: &str, bucket: &str, events: &[&str]) -> TrackerSpec {
        v3(json!({
            "tracker_type": "data", "tracker_name": name,
            "data_bucket": {"data_bucket_name": bucket, "data_event": events}
        }))
    }

    const NO_KEYS: &dyn Fn(&str) -> bool = &|_| false;

    fn create(s: &TrackerStore, p: &str, spec: &TrackerSpec) -> Result<Tracker, TrackerError> {
        s.create(p, "d1", spec, 1_000, NO_KEYS)
    }

    fn err_code<T: std::fmt::Debug>(r: Result<T, TrackerError>) -> &'static str {
        r.unwrap_err().code
    }

    fn v3_create_is_seen_through_v1(place: &Place) {
        let s = trackers(place, Limits::default());
        let spec = v3(json!({
            "tracker_type": "system", "tracker_name": "system",
            "obs_info": {"bucket_name": "test-bucket", "file_prefix_name": "11", "compress_type": "json"},
            "is_lts_enabled": true, "is_support_validate": true
        }));
        let t = create(&s, "p1", &spec).unwrap();
        assert_eq!(t.status, TrackerStatus::Enabled);
        assert_eq!(t.create_time, 1_000);
        assert_eq!(t.obs_info.compress_type, CompressType::Json);
        let listed = s.list("p1", Some("system"), None).unwrap();
        assert_eq!(listed, std::slice::from_ref(&t));
        let v1 = listed[0].to_v1_json();
        assert_eq!(v1["bucket_name"], "test-bucket");
        assert_eq!(v1["file_prefix_name"], "11");
        assert_eq!(v1["tracker_type"], "system");
        assert_eq!(v1["id"], json!(t.id));
        assert_eq!(
            v1["lts"],
            json!({"is_lts_enabled": true, "log_group_name": "CTS", "log_topic_name": "system-trace"})
        );
        assert!(v1["group_id"].is_string() && v1["stream_id"].is_string());
        // A v1 update changes the same tracker, seen through v3.
        let (before, after) = s
            .update(
                "p1",
                &parse_v1_update(
                    "system",
                    br#"{"status": "disabled", "file_prefix_name": "x"}"#,
                )
                .unwrap(),
                0,
                NO_KEYS,
            )
            .unwrap();
        assert_eq!(before, t);
        let v3 = s.list("p1", None, None).unwrap()[0].to_v3_json();
        assert_eq!(v3["status"], "disabled");
        assert_eq!(v3["obs_info"]["file_prefix_name"], "x");
        assert_eq!(v3["obs_info"]["bucket_name"], "test-bucket");
        assert_eq!(v3["obs_info"]["compress_type"], "json");
        assert_eq!(after.to_v3_json(), v3);
    }

    fn v1_create_is_seen_through_v3(place: &Place) {
        let s = trackers(place, Limits::default());
        let spec = parse_v1_create(
            br#"{"bucket_name": "obs-f1da", "file_prefix_name": "yO8Q", "is_obs_created": true,
                 "is_support_trace_files_encryption": true, "kms_id": "key-1",
                 "lts": {"is_lts_enabled": true, "log_group_name": "G", "log_topic_name": "T"},
                 "log_file_validate": {"is_support_validate": true}}"#,
        )
        .unwrap();
        let t = s.create("p1", "d1", &spec, 5, &|k| k == "key-1").unwrap();
        let v1 = t.to_v1_created_json();
        assert_eq!(v1["obs_info"]["bucket_name"], "obs-f1da");
        assert_eq!(v1["kms_id"], "key-1");
        let v3 = s.list("p1", None, Some(TrackerType::System)).unwrap()[0].to_v3_json();
        assert_eq!(v3["tracker_name"], "system");
        assert_eq!(v3["obs_info"]["is_obs_created"], true);
        assert_eq!(v3["is_support_trace_files_encryption"], true);
        assert_eq!(v3["kms_id"], "key-1");
        assert_eq!(v3["is_support_validate"], true);
        assert_eq!(
            v3["lts"],
            json!({"is_lts_enabled": true, "log_group_name": "G", "log_topic_name": "T"})
        );
        // And a v3 update of it is seen through v1.
        s.update(
            "p1",
            &v3u(json!({"tracker_type": "system", "obs_info": {"bucket_name": "other"}})),
            0,
            NO_KEYS,
        )
        .unwrap();
        assert_eq!(
            s.list("p1", None, None).unwrap()[0].to_v1_json()["bucket_name"],
            "other"
        );
    }

    fn one_management_tracker_per_project(place: &Place) {
        let s = trackers(place, Limits::default());
        create(&s, "p1", &sys_spec()).unwrap();
        assert_eq!(err_code(create(&s, "p1", &sys_spec())), "CTS.0201");
        let v1 = parse_v1_create(br#"{"bucket_name": "abc"}"#).unwrap();
        assert_eq!(err_code(create(&s, "p1", &v1)), "CTS.0201");
        create(&s, "p2", &v1).unwrap();
    }

    fn data_tracker_names_are_unique_in_a_project(place: &Place) {
        let s = trackers(place, Limits::default());
        create(&s, "p1", &data("d1", "bkt1", &["READ"])).unwrap();
        let e = create(&s, "p1", &data("d1", "bkt2", &["READ"])).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("CTS.0208", Some("tracker_name"))
        );
        create(&s, "p2", &data("d1", "bkt1", &["READ"])).unwrap();
    }

    fn data_tracker_quota(place: &Place) {
        let s = trackers(
            place,
            Limits {
                data_trackers: 2,
                notifications: 7,
            },
        );
        create(&s, "p1", &sys_spec()).unwrap();
        create(&s, "p1", &data("a", "bkt1", &["READ"])).unwrap();
        create(&s, "p1", &data("b", "bkt2", &["READ"])).unwrap();
        let e = create(&s, "p1", &data("c", "bkt3", &["READ"])).unwrap_err();
        assert_eq!((e.code, e.status), ("CTS.0200", 400));
        assert_eq!(
            s.quotas("p1", 3).unwrap(),
            [
                Quota {
                    kind: "tracker",
                    used: 3,
                    quota: 3
                },
                Quota {
                    kind: "notification",
                    used: 3,
                    quota: 7
                },
            ]
        );
        s.delete("p1", Some("a"), None).unwrap();
        create(&s, "p1", &data("c", "bkt3", &["READ"])).unwrap();
    }

    fn default_quotas(place: &Place) {
        let s = trackers(place, Limits::default());
        let q = s.quotas("p1", 0).unwrap();
        assert_eq!(
            serde_json::to_value(&q).unwrap(),
            json!([{"type": "tracker", "used": 0, "quota": 101}, {"type": "notification", "used": 0, "quota": 100}])
        );
    }

    fn one_data_tracker_per_bucket_and_operation_type(place: &Place) {
        let s = trackers(place, Limits::default());
        create(&s, "p1", &data("r", "bkt1", &["READ"])).unwrap();
        create(&s, "p1", &data("w", "bkt1", &["WRITE"])).unwrap();
        let e = create(&s, "p1", &data("rw", "bkt1", &["WRITE", "READ"])).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("CTS.0209", Some("data_bucket.data_event"))
        );
        // Also when an update widens the events.
        let e = s
            .update("p1", &v3u(json!({"tracker_type": "data", "tracker_name": "r", "data_bucket": {"data_event": ["READ", "WRITE"]}})), 0, NO_KEYS)
            .unwrap_err();
        assert_eq!(e.code, "CTS.0209");
        // Another project may track the same bucket.
        create(&s, "p2", &data("rw", "bkt1", &["WRITE", "READ"])).unwrap();
    }

    fn the_tracked_bucket_is_fixed(place: &Place) {
        let s = trackers(place, Limits::default());
        create(&s, "p1", &data("d", "bkt1", &["READ"])).unwrap();
        let upd = |bucket: &str| {
            v3u(json!({"tracker_type": "data", "tracker_name": "d",
                       "data_bucket": {"data_bucket_name": bucket, "data_event": ["WRITE"]}}))
        };
        let e = s.update("p1", &upd("bkt2"), 0, NO_KEYS).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("CTS.0212", Some("data_bucket.data_bucket_name"))
        );
        let (_, after) = s.update("p1", &upd("bkt1"), 0, NO_KEYS).unwrap();
        assert_eq!(after.data_bucket.unwrap().data_event, [DataEvent::Write]);
    }

    fn no_transfer_into_a_tracked_bucket(place: &Place) {
        let s = trackers(place, Limits::default());
        let own = v3(json!({"tracker_type": "data", "tracker_name": "d",
            "data_bucket": {"data_bucket_name": "bkt1", "data_event": ["READ"]},
            "obs_info": {"bucket_name": "bkt1"}}));
        let e = create(&s, "p1", &own).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("CTS.0213", Some("obs_info.bucket_name"))
        );
        create(&s, "p1", &data("d", "bkt1", &["READ"])).unwrap();
        let sys = v3(json!({"tracker_type": "system", "obs_info": {"bucket_name": "bkt1"}}));
        assert_eq!(err_code(create(&s, "p1", &sys)), "CTS.0213");
        let sys = v3(json!({"tracker_type": "system", "obs_info": {"bucket_name": "logs"}}));
        create(&s, "p1", &sys).unwrap();
        // Tracking the management tracker's transfer bucket would loop too.
        assert_eq!(
            err_code(create(&s, "p1", &data("e", "logs", &["WRITE"]))),
            "CTS.0213"
        );
        let e = s
            .update(
                "p1",
                &v3u(json!({"tracker_type": "system", "obs_info": {"bucket_name": "bkt1"}})),
                0,
                NO_KEYS,
            )
            .unwrap_err();
        assert_eq!(e.code, "CTS.0213");
    }

    fn encryption_needs_an_existing_key(place: &Place) {
        let s = trackers(place, Limits::default());
        let keys: &dyn Fn(&str) -> bool = &|k| k == "k1";
        let no_key =
            v3(json!({"tracker_type": "system", "is_support_trace_files_encryption": true}));
        let e = s.create("p1", "d1", &no_key, 1, keys).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("CTS.0221", Some("kms_id")));
        let empty = v3(
            json!({"tracker_type": "system", "is_support_trace_files_encryption": true, "kms_id": ""}),
        );
        assert_eq!(err_code(s.create("p1", "d1", &empty, 1, keys)), "CTS.0221");
        let unknown = v3(
            json!({"tracker_type": "system", "is_support_trace_files_encryption": true, "kms_id": "k2"}),
        );
        let e = s.create("p1", "d1", &unknown, 1, keys).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("CTS.0222", Some("kms_id")));
        let ok = v3(
            json!({"tracker_type": "system", "is_support_trace_files_encryption": true, "kms_id": "k1"}),
        );
        s.create("p1", "d1", &ok, 1, keys).unwrap();
        // Switching it off keeps the key; removing the key while on is refused.
        let off =
            v3u(json!({"tracker_type": "system", "is_support_trace_files_encryption": false}));
        let (_, after) = s.update("p1", &off, 0, keys).unwrap();
        assert_eq!(after.kms_id.as_deref(), Some("k1"));
        // Switching it on again checks the key again (it may be gone).
        let on = v3u(json!({"tracker_type": "system", "is_support_trace_files_encryption": true}));
        assert_eq!(err_code(s.update("p1", &on, 0, NO_KEYS)), "CTS.0222");
        s.update("p1", &on, 0, keys).unwrap();
        let drop_key = v3u(json!({"tracker_type": "system", "kms_id": ""}));
        assert_eq!(err_code(s.update("p1", &drop_key, 0, keys)), "CTS.0221");
        // Unrelated updates do not re-verify the key.
        let unrelated = v3u(json!({"tracker_type": "system", "is_support_validate": true}));
        s.update("p1", &unrelated, 0, NO_KEYS).unwrap();
    }

    fn one_organization_tracker_per_domain(place: &Place) {
        let s = trackers(place, Limits::default());
        let org = v3(json!({"tracker_type": "system", "is_organization_tracker": true}));
        s.create("p1", "d1", &org, 1, NO_KEYS).unwrap();
        let e = s.create("p2", "d1", &org, 1, NO_KEYS).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("CTS.0229", Some("is_organization_tracker"))
        );
        s.create("p3", "d2", &org, 1, NO_KEYS).unwrap();
        s.create("p2", "d1", &sys_spec(), 1, NO_KEYS).unwrap();
        let on = v3u(json!({"tracker_type": "system", "is_organization_tracker": true}));
        assert_eq!(err_code(s.update("p2", &on, 0, NO_KEYS)), "CTS.0229");
        let off = v3u(json!({"tracker_type": "system", "is_organization_tracker": false}));
        s.update("p1", &off, 0, NO_KEYS).unwrap();
        s.update("p2", &on, 0, NO_KEYS).unwrap();
    }

    /// `transfer_since` is the instant a tracker begins to transfer: with a
    /// bucket at creation, a bucket given, or enabled again; other changes
    /// keep it.
    fn transfer_since_marks_the_change_that_starts_transfer(place: &Place) {
        let s = trackers(place, Limits::default());
        let t = s
            .create(
                "p1",
                "d1",
                &v3(json!({"tracker_type": "system"})),
                1_000,
                NO_KEYS,
            )
            .unwrap();
        assert_eq!(t.transfer_since, None, "no bucket");
        let to = |bucket: &str, at: i64| {
            s.update(
                "p1",
                &v3u(json!({"tracker_type": "system", "obs_info": {"bucket_name": bucket}})),
                at,
                NO_KEYS,
            )
            .unwrap()
            .1
        };
        assert_eq!(to("abc", 2_000).transfer_since, Some(2_000));
        assert_eq!(
            to("def", 3_000).transfer_since,
            Some(2_000),
            "still transferring"
        );
        let status = |st: &str, at: i64| {
            s.update(
                "p1",
                &v3u(json!({"tracker_type": "system", "status": st})),
                at,
                NO_KEYS,
            )
            .unwrap()
            .1
        };
        assert_eq!(status("disabled", 4_000).transfer_since, Some(2_000));
        assert_eq!(status("enabled", 5_000).transfer_since, Some(5_000));
        let d = s
            .create(
                "p1",
                "d1",
                &v3(json!({"tracker_type": "data", "tracker_name": "d",
                    "data_bucket": {"data_bucket_name": "src", "data_event": ["READ"]},
                    "obs_info": {"bucket_name": "dst"}})),
                6_000,
                NO_KEYS,
            )
            .unwrap();
        assert_eq!(d.transfer_since, Some(6_000));
    }

    fn update_keeps_what_it_does_not_name(place: &Place) {
        let s = trackers(place, Limits::default());
        let spec = v3(
            json!({"tracker_type": "system", "is_lts_enabled": true, "agency_name": "cts_admin_trust",
            "management_event_selector": {"exclude_service": ["KMS"]},
            "obs_info": {"bucket_name": "abc", "file_prefix_name": "p", "is_sort_by_service": false, "bucket_lifecycle": 30}}),
        );
        let t = create(&s, "p1", &spec).unwrap();
        let (before, after) = s
            .update("p1", &v3u(json!({"tracker_type": "system", "is_lts_enabled": false, "obs_info": {"file_prefix_name": "q"}})), 0, NO_KEYS)
            .unwrap();
        assert_eq!(before, t);
        assert_eq!(after.obs_info.bucket_name, "abc");
        assert_eq!(after.obs_info.file_prefix_name, "q");
        assert!(!after.obs_info.is_sort_by_service);
        assert_eq!(after.obs_info.bucket_lifecycle, 30);
        assert_eq!(after.exclude_service, ["KMS"]);
        assert_eq!(after.agency_name.as_deref(), Some("cts_admin_trust"));
        // LTS ids stay assigned after switching off.
        assert!(!after.lts.is_lts_enabled);
        assert_eq!(after.group_id, t.group_id);
        assert!(t.group_id.is_some());
        // An empty bucket name switches transfer off.
        let (_, after) = s
            .update(
                "p1",
                &v3u(json!({"tracker_type": "system", "obs_info": {"bucket_name": ""}})),
                0,
                NO_KEYS,
            )
            .unwrap();
        assert_eq!(after.obs_info.bucket_name, "");
    }

    fn missing_trackers_are_404(place: &Place) {
        let s = trackers(place, Limits::default());
        let e = s
            .update("p1", &v3u(json!({"tracker_type": "system"})), 0, NO_KEYS)
            .unwrap_err();
        assert_eq!((e.code, e.status), ("CTS.0214", 404));
        create(&s, "p1", &data("d", "bkt1", &["READ"])).unwrap();
        // The name exists, but not as that type.
        assert_eq!(
            err_code(s.update(
                "p1",
                &v3u(json!({"tracker_type": "data", "tracker_name": "x"})),
                0,
                NO_KEYS
            )),
            "CTS.0214"
        );
        assert_eq!(err_code(s.get("p1", "nope")), "CTS.0214");
        assert_eq!(
            err_code(s.set_status("p1", "nope", TrackerStatus::Enabled)),
            "CTS.0214"
        );
        let t = s.list("p1", None, None).unwrap().remove(0);
        assert_eq!(s.get("p1", &t.id).unwrap(), t);
        assert_eq!(err_code(s.get("p2", &t.id)), "CTS.0214");
    }

    fn list_filters_and_orders(place: &Place) {
        let s = trackers(place, Limits::default());
        s.create("p1", "d1", &data("z", "bkt1", &["READ"]), 1, NO_KEYS)
            .unwrap();
        s.create("p1", "d1", &data("a", "bkt2", &["READ"]), 2, NO_KEYS)
            .unwrap();
        s.create("p1", "d1", &sys_spec(), 3, NO_KEYS).unwrap();
        let names = |ts: Vec<Tracker>| ts.into_iter().map(|t| t.tracker_name).collect::<Vec<_>>();
        assert_eq!(
            names(s.list("p1", None, None).unwrap()),
            ["system", "z", "a"]
        );
        assert_eq!(
            names(s.list("p1", None, Some(TrackerType::Data)).unwrap()),
            ["z", "a"]
        );
        assert_eq!(names(s.list("p1", Some("a"), None).unwrap()), ["a"]);
        assert!(s
            .list("p1", Some("a"), Some(TrackerType::System))
            .unwrap()
            .is_empty());
        assert!(s.list("p1", Some("nope"), None).unwrap().is_empty());
        assert!(s.list("p2", None, None).unwrap().is_empty());
    }

    fn names_of(ts: &[Tracker]) -> Vec<&str> {
        ts.iter().map(|t| t.tracker_name.as_str()).collect()
    }

    fn three(s: &TrackerStore) {
        create(s, "p1", &sys_spec()).unwrap();
        create(s, "p1", &data("a", "bkt1", &["READ"])).unwrap();
        create(s, "p1", &data("b", "bkt2", &["READ"])).unwrap();
    }

    fn delete_without_name_deletes_every_data_tracker(place: &Place) {
        let s = trackers(place, Limits::default());
        three(&s);
        create(&s, "p2", &data("a", "bkt1", &["READ"])).unwrap();
        assert_eq!(names_of(&s.delete("p1", None, None).unwrap()), ["a", "b"]);
        assert_eq!(names_of(&s.list("p1", None, None).unwrap()), ["system"]);
        assert!(s
            .delete("p1", None, Some(TrackerType::Data))
            .unwrap()
            .is_empty());
        assert_eq!(s.list("p2", None, None).unwrap().len(), 1);
    }

    fn delete_by_name_and_type(place: &Place) {
        let s = trackers(place, Limits::default());
        three(&s);
        assert_eq!(names_of(&s.delete("p1", Some("a"), None).unwrap()), ["a"]);
        assert_eq!(
            err_code(s.delete("p1", Some("a"), Some(TrackerType::Data))),
            "CTS.0214"
        );
        // `system` as a data tracker name does not exist.
        assert_eq!(
            err_code(s.delete("p1", Some("system"), Some(TrackerType::Data))),
            "CTS.0214"
        );
        let e = s
            .delete("p1", Some("b"), Some(TrackerType::System))
            .unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("CTS.0204", Some("tracker_name"))
        );
        assert_eq!(
            names_of(
                &s.delete("p1", Some("system"), Some(TrackerType::System))
                    .unwrap()
            ),
            ["system"]
        );
        assert_eq!(
            err_code(s.delete("p1", None, Some(TrackerType::System))),
            "CTS.0214"
        );
        assert_eq!(names_of(&s.list("p1", None, None).unwrap()), ["b"]);
    }

    fn delete_system_by_name_alone_or_by_type_alone(place: &Place) {
        let s = trackers(place, Limits::default());
        three(&s);
        // The reference's example: `?tracker_name=system`, no type.
        assert_eq!(
            names_of(&s.delete("p1", Some("system"), None).unwrap()),
            ["system"]
        );
        create(&s, "p1", &sys_spec()).unwrap();
        assert_eq!(
            names_of(&s.delete("p1", None, Some(TrackerType::System)).unwrap()),
            ["system"]
        );
        assert_eq!(names_of(&s.list("p1", None, None).unwrap()), ["a", "b"]);
    }

    fn ingest_view_follows_every_write(place: &Place) {
        let s = trackers(place, Limits::default());
        assert!(!s.management_enabled("p1"));
        assert_eq!(
            s.ensure_system_tracker("p1", "d1", 9)
                .unwrap()
                .unwrap()
                .create_time,
            9
        );
        assert!(s.ensure_system_tracker("p1", "d1", 10).unwrap().is_none());
        assert!(s.management_enabled("p1"));
        assert!(!s.management_enabled("p2"));
        let t = create(&s, "p1", &data("d", "bkt1", &["WRITE", "READ"])).unwrap();
        let info = s.data_tracker_for("p1", "d").unwrap();
        assert_eq!(
            *info,
            RecordingDataTracker {
                id: t.id.clone(),
                tracker_name: "d".into(),
                data_bucket_name: "bkt1".into(),
                data_event: vec![DataEvent::Read, DataEvent::Write],
            }
        );
        assert!(s.data_tracker_for("p2", "d").is_none());
        let disable = |name: &str, ty: &str| {
            v3u(json!({"tracker_type": ty, "tracker_name": name, "status": "disabled"}))
        };
        s.update("p1", &disable("system", "system"), 0, NO_KEYS)
            .unwrap();
        s.update("p1", &disable("d", "data"), 0, NO_KEYS).unwrap();
        assert!(!s.management_enabled("p1"));
        assert!(s.data_tracker_for("p1", "d").is_none());
        // `error` is about transfer: the tracker still records.
        s.set_status("p1", "system", TrackerStatus::Error(ErrorDetail::NoBucket))
            .unwrap();
        assert!(s.management_enabled("p1"));
        s.set_status("p1", "d", TrackerStatus::Enabled).unwrap();
        assert!(s.data_tracker_for("p1", "d").is_some());
        s.delete("p1", None, None).unwrap();
        assert!(s.data_tracker_for("p1", "d").is_none());
        assert!(s.management_enabled("p1"));
        s.delete("p1", Some("system"), None).unwrap();
        assert!(!s.management_enabled("p1"));
    }

    fn a_failed_write_leaves_the_view_alone(place: &Place) {
        let s = trackers(place, Limits::default());
        create(&s, "p1", &sys_spec()).unwrap();
        assert!(create(&s, "p1", &sys_spec()).is_err());
        assert!(s.management_enabled("p1"));
    }

    fn status_error_carries_its_detail(place: &Place) {
        let s = trackers(place, Limits::default());
        create(&s, "p1", &sys_spec()).unwrap();
        let t = s
            .set_status(
                "p1",
                "system",
                TrackerStatus::Error(ErrorDetail::BucketPolicyError),
            )
            .unwrap();
        let v = s.list("p1", None, None).unwrap()[0].to_v3_json();
        assert_eq!(
            (v["status"].as_str(), v["detail"].as_str()),
            (Some("error"), Some("bucketPolicyError"))
        );
        assert_eq!(t.to_v3_json(), v);
        // A user's enable clears the error.
        s.update(
            "p1",
            &v3u(json!({"tracker_type": "system", "status": "enabled"})),
            0,
            NO_KEYS,
        )
        .unwrap();
        assert!(s.list("p1", None, None).unwrap()[0]
            .to_v3_json()
            .get("detail")
            .is_none());
    }

    /// Reopened (on PostgreSQL: another node), the trackers and the view
    /// are as they were.
    fn reopen_keeps_trackers_and_rebuilds_the_view(place: &Place) {
        let (sys, d) = {
            let s = trackers(place, Limits::default());
            let sys = create(&s, "p1", &sys_spec()).unwrap();
            let d = create(&s, "p1", &data("d", "bkt1", &["READ"])).unwrap();
            s.create_tags(
                "p1",
                &d.id,
                &[crate::model::Tag {
                    key: "k".into(),
                    value: "v".into(),
                }],
            )
            .unwrap();
            s.update(
                "p1",
                &v3u(json!({"tracker_type": "system", "status": "disabled"})),
                0,
                NO_KEYS,
            )
            .unwrap();
            (sys, s.get("p1", &d.id).unwrap())
        };
        let s = trackers(place, Limits::default());
        let sys = Tracker {
            status: TrackerStatus::Disabled,
            ..sys
        };
        assert_eq!(s.list("p1", None, None).unwrap(), [sys, d]);
        assert!(!s.management_enabled("p1"));
        assert!(s.data_tracker_for("p1", "d").is_some());
        if let Place::Sqlite(dir) = place {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("trackers/trackers.db"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// A trackers.db of the previous version opens with its trackers, and
    /// the view is built from them.
    #[test]
    fn a_database_of_version_2_opens_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let t = {
            let v2 = cts_sqlite::Migrations::new(vec![
                cts_sqlite::M::up(crate::schema::SQLITE_TRACKERS),
                cts_sqlite::M::up(crate::schema::SQLITE_KEYS),
            ]);
            let conn = cts_sqlite::open(dir.path(), "trackers.db", &v2).unwrap();
            let t = new_tracker("p1", "d1", &sys_spec(), 5);
            conn.execute(
                "INSERT INTO trackers (id, project_id, domain_id, tracker_name, tracker_type, \
                 create_time, body) VALUES (?1, 'p1', 'd1', 'system', 'system', 5, ?2)",
                [&t.id, &serde_json::to_string(&t).unwrap()],
            )
            .unwrap();
            t
        };
        let s = TrackerStore::open(dir.path(), Limits::default()).unwrap();
        assert_eq!(s.list("p1", None, None).unwrap(), [t]);
        assert!(s.management_enabled("p1"));
        create(&s, "p1", &data("d", "bkt1", &["READ"])).unwrap();
        assert!(s.data_tracker_for("p1", "d").is_some());
    }

    #[test]
    fn an_unusable_directory_is_500() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let e = TrackerStore::open(&file, Limits::default()).unwrap_err();
        assert_eq!((e.code, e.status), ("CTS.0004", 500));
    }

    fn storage_failures_are_500(place: &Place) {
        let s = trackers(place, Limits::default());
        create(&s, "p1", &sys_spec()).unwrap();
        s.db.transaction(|tx| tx.exec("UPDATE trackers SET body = 'not json'", &[]))
            .unwrap();
        let e = s.list("p1", None, None).unwrap_err();
        assert_eq!((e.code, e.status), ("CTS.0005", 500));
        let e = create(&s, "p1", &data("d", "bkt1", &["READ"])).unwrap_err();
        assert_eq!((e.code, e.status), ("CTS.0004", 500));
    }

    fn concurrent_readers_and_writers(place: &Place) {
        let s = trackers(place, Limits::default());
        let s = Arc::new(s);
        create(&s, "p1", &sys_spec()).unwrap();
        let writer = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..20 {
                    let status = if i % 2 == 0 { "disabled" } else { "enabled" };
                    s.update(
                        "p1",
                        &v3u(json!({"tracker_type": "system", "status": status})),
                        0,
                        NO_KEYS,
                    )
                    .unwrap();
                }
            })
        };
        let mut reads = 0u64;
        while !writer.is_finished() {
            s.management_enabled("p1");
            reads += 1;
        }
        writer.join().unwrap();
        assert!(reads > 0);
        assert!(s.management_enabled("p1"));
    }

    /// Two nodes on one database: what one changes, the other's view
    /// shows within the documented bound (a refresh every second).
    #[test]
    fn another_nodes_changes_reach_the_view_within_a_second() {
        let pg = cts_testpg::TestPg::start();
        let a = TrackerStore::on(pg_db(&pg), Limits::default()).unwrap();
        let b = Arc::new(TrackerStore::on(pg_db(&pg), Limits::default()).unwrap());
        TrackerStore::follow_other_nodes(&b);
        // Measured from the commit on `a`; the bound is REFRESH_EVERY plus a
        // reload, with slack for a starved test machine.
        let within = |what: &str, seen: &dyn Fn() -> bool| {
            let start = std::time::Instant::now();
            while !seen() {
                assert!(
                    start.elapsed() < crate::REFRESH_EVERY * 3,
                    "{what}: not seen by the other node after {:?}",
                    start.elapsed()
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            start.elapsed()
        };
        create(&a, "p1", &sys_spec()).unwrap();
        let took = within("created", &|| b.management_enabled("p1"));
        eprintln!("a tracker created on one node recorded on the other after {took:?}");
        create(&a, "p1", &data("d", "bkt1", &["READ"])).unwrap();
        within("data tracker", &|| b.data_tracker_for("p1", "d").is_some());
        let off = v3u(json!({"tracker_type": "system", "status": "disabled"}));
        a.update("p1", &off, 0, NO_KEYS).unwrap();
        within("disabled", &|| !b.management_enabled("p1"));
        a.delete("p1", Some("d"), None).unwrap();
        within("deleted", &|| b.data_tracker_for("p1", "d").is_none());
        // A write of `b` itself shows at once, and a refresh never brings
        // back what it replaced.
        let on = v3u(json!({"tracker_type": "system", "status": "enabled"}));
        b.update("p1", &on, 0, NO_KEYS).unwrap();
        assert!(b.management_enabled("p1"));
        b.refresh().unwrap();
        assert!(b.management_enabled("p1"));
        assert_eq!(b.refresh().unwrap(), 0, "nothing changed since");
    }

    /// Two nodes creating the last tracker the quota allows at once: one
    /// wins, the other is told the quota is reached, never both.
    #[test]
    fn the_quota_holds_across_nodes() {
        let pg = cts_testpg::TestPg::start();
        let limits = Limits {
            data_trackers: 1,
            notifications: 1,
        };
        let nodes: Vec<Arc<TrackerStore>> = (0..2)
            .map(|_| Arc::new(TrackerStore::on(pg_db(&pg), limits).unwrap()))
            .collect();
        for round in 0..5 {
            let project = format!("p{round}");
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let outcomes: Vec<Result<Tracker, TrackerError>> = nodes
                .iter()
                .enumerate()
                .map(|(i, node)| {
                    let (node, barrier, project) =
                        (Arc::clone(node), Arc::clone(&barrier), project.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let bucket = format!("bkt{i}");
                        create(&node, &project, &data(&format!("t{i}"), &bucket, &["READ"]))
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect();
            let won = outcomes.iter().filter(|r| r.is_ok()).count();
            assert_eq!(won, 1, "round {round}: {outcomes:?}");
            let lost = outcomes.iter().find_map(|r| r.as_ref().err()).unwrap();
            assert_eq!(lost.code, codes::TRACKER_QUOTA, "{lost:?}");
            assert_eq!(nodes[0].list(&project, None, None).unwrap().len(), 1);
        }
    }

    both!(
        v3_create_is_seen_through_v1,
        v1_create_is_seen_through_v3,
        one_management_tracker_per_project,
        data_tracker_names_are_unique_in_a_project,
        data_tracker_quota,
        default_quotas,
        one_data_tracker_per_bucket_and_operation_type,
        the_tracked_bucket_is_fixed,
        no_transfer_into_a_tracked_bucket,
        encryption_needs_an_existing_key,
        one_organization_tracker_per_domain,
        transfer_since_marks_the_change_that_starts_transfer,
        update_keeps_what_it_does_not_name,
        missing_trackers_are_404,
        list_filters_and_orders,
        delete_without_name_deletes_every_data_tracker,
        delete_by_name_and_type,
        delete_system_by_name_alone_or_by_type_alone,
        ingest_view_follows_every_write,
        a_failed_write_leaves_the_view_alone,
        status_error_carries_its_detail,
        reopen_keeps_trackers_and_rebuilds_the_view,
        storage_failures_are_500,
        concurrent_readers_and_writers,
    );
}
