//! What each project records, in memory for the ingest path, and how it
//! follows changes made through other nodes.
//!
//! Every tracker write (of any node) bumps the one-row counter
//! `tracker_version` first, in its transaction, and notes the project with
//! the new version in `tracker_projects`. The counter's row lock is held to
//! the commit, so writes are serialised and commit in version order: a
//! node that reads version `v` has every change up to `v` visible. A node
//! installs its own writes at once; [`TrackerStore::refresh`] reads the
//! counter and reloads the projects changed since the version it saw last.
//! On PostgreSQL [`TrackerStore::follow_other_nodes`] does that every
//! [`REFRESH_EVERY`]: a tracker created, enabled, disabled or deleted
//! through one node takes effect on every node within about a second.
//!
//! Each project's view carries the version it was loaded at, and a view is
//! never replaced by an older one, so a refresh racing a local write
//! cannot bring back a state the write replaced.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use cts_db::Sql;

use crate::error::codes;
use crate::model::{DataEvent, Tracker};
use crate::store::{load, load_project, Failure, TrackerStore};
use crate::TrackerError;

/// How often a node looks for tracker changes of other nodes.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// What the ingest path needs of a recording data tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingDataTracker {
    pub id: String,
    pub tracker_name: String,
    pub data_bucket_name: String,
    pub data_event: Vec<DataEvent>,
}

/// What a project records, as of `version`.
#[derive(Debug, Default)]
pub(crate) struct ProjectView {
    pub(crate) version: i64,
    pub(crate) management: bool,
    pub(crate) data: HashMap<String, Arc<RecordingDataTracker>>,
}

impl ProjectView {
    pub(crate) fn of(trackers: &[Tracker], version: i64) -> Self {
        let mut view = ProjectView {
            version,
            ..ProjectView::default()
        };
        for t in trackers.iter().filter(|t| t.status.is_recording()) {
            match &t.data_bucket {
                None => view.management = true,
                Some(b) => {
                    view.data.insert(
                        t.tracker_name.clone(),
                        Arc::new(RecordingDataTracker {
                            id: t.id.clone(),
                            tracker_name: t.tracker_name.clone(),
                            data_bucket_name: b.data_bucket_name.clone(),
                            data_event: b.data_event.clone(),
                        }),
                    );
                }
            }
        }
        view
    }
}

/// Every project's view (projects without trackers keep an empty one, for
/// its version) and the counter's version they are complete up to.
#[derive(Debug, Default)]
pub(crate) struct Views {
    pub(crate) projects: HashMap<String, ProjectView>,
    pub(crate) seen: i64,
}

impl Views {
    /// Installs `view` unless the project's view is newer.
    pub(crate) fn install(&mut self, project_id: &str, view: ProjectView) {
        match self.projects.get(project_id) {
            Some(old) if old.version > view.version => {}
            _ => {
                self.projects.insert(project_id.to_owned(), view);
            }
        }
    }

    /// Every project's view as of `version`.
    pub(crate) fn load(c: &dyn Sql) -> Result<Views, Failure> {
        let version = current_version(c)?;
        let mut by_project: HashMap<String, Vec<Tracker>> = HashMap::new();
        for t in load(c, "1 = 1", &[])? {
            by_project.entry(t.project_id.clone()).or_default().push(t);
        }
        Ok(Views {
            projects: by_project
                .into_iter()
                .map(|(p, ts)| (p, ProjectView::of(&ts, version)))
                .collect(),
            seen: version,
        })
    }
}

fn current_version(c: &dyn Sql) -> Result<i64, Failure> {
    let row = c
        .query_opt("SELECT version FROM tracker_version WHERE id = 1", &[])?
        .ok_or_else(|| Failure::Db("the row of tracker_version is missing".into()))?;
    Ok(row[0].int()?)
}

/// The first statement of every tracker write: takes the counter's row
/// lock (held to the commit, so the rules that read the stored trackers —
/// quota, unique names, one management tracker — hold across nodes as
/// they do in one process), notes the project, answers the new version.
pub(crate) fn bump(tx: &dyn Sql, project_id: &str) -> Result<i64, Failure> {
    tx.exec(
        "UPDATE tracker_version SET version = version + 1 WHERE id = 1",
        &[],
    )?;
    let version = current_version(tx)?;
    tx.exec(
        "INSERT INTO tracker_projects (project_id, changed_at) VALUES ($1, $2) \
         ON CONFLICT (project_id) DO UPDATE SET changed_at = excluded.changed_at",
        &[project_id.into(), version.into()],
    )?;
    Ok(version)
}

impl TrackerStore {
    /// Reloads the views of the projects whose trackers changed (through
    /// any node) since the last refresh; one small query when none did.
    /// Answers how many projects were reloaded.
    pub fn refresh(&self) -> Result<usize, TrackerError> {
        let seen = self.views.read().seen;
        let (version, changed) = self
            .db
            .read(|c| {
                let version = current_version(c)?;
                if version == seen {
                    return Ok((version, Vec::new()));
                }
                // Loaded after the version was read: as new as it, or newer.
                let mut changed = Vec::new();
                for row in c.query(
                    "SELECT project_id FROM tracker_projects WHERE changed_at > $1",
                    &[seen.into()],
                )? {
                    let project = row[0].text()?.to_owned();
                    let view = ProjectView::of(&load_project(c, &project)?, version);
                    changed.push((project, view));
                }
                Ok::<_, Failure>((version, changed))
            })
            .map_err(|e| e.into_error(codes::READ_FAILED))?;
        let mut views = self.views.write();
        let n = changed.len();
        for (project, view) in changed {
            views.install(&project, view);
        }
        views.seen = views.seen.max(version);
        Ok(n)
    }

    /// Keeps the view of `store` current with the changes of other nodes:
    /// on PostgreSQL a thread refreshes it every [`REFRESH_EVERY`] until
    /// the store is dropped. On SQLite this process is the only writer and
    /// nothing is started.
    pub fn follow_other_nodes(store: &Arc<TrackerStore>) {
        if !store.db.is_postgres() {
            return;
        }
        let weak: Weak<TrackerStore> = Arc::downgrade(store);
        let spawned = std::thread::Builder::new()
            .name("tracker-refresh".into())
            .spawn(move || loop {
                std::thread::sleep(REFRESH_EVERY);
                let Some(store) = weak.upgrade() else { return };
                if let Err(e) = store.refresh() {
                    tracing::warn!(error = %e, "could not look for tracker changes of other nodes");
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "no thread to follow the tracker changes of other nodes");
        }
    }
}
