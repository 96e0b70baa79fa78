//! What gets recorded: a project's trackers decide which reported traces
//! are kept, and every recorded trace teaches the operation catalog.

use cts_model::{Trace, TraceKind};
use cts_store::{AppendOutcome, PreparedTrace, StoreError, TraceStore};
use cts_tracker::{DataEvent, RecordingDataTracker};
use serde::Serialize;

use crate::state::AppState;

/// Why reported traces were not recorded, by cause.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct NotRecorded {
    /// Traces left out.
    pub count: usize,
    /// One sentence per cause.
    pub reasons: Vec<String>,
}

impl NotRecorded {
    fn add(&mut self, n: usize, reason: String) {
        if n > 0 {
            self.count += n;
            self.reasons.push(reason);
        }
    }
}

/// The bucket a data trace is about: its `resource_name` (or
/// `resource_id`) up to the first `/` (`bucket/object/key` → `bucket`).
fn bucket_of<S: AsRef<str>>(t: &Trace<S>) -> Option<&str> {
    let name = [&t.resource_name, &t.resource_id]
        .into_iter()
        .flatten()
        .map(AsRef::as_ref)
        .find(|n| !n.is_empty())?;
    name.split('/').next()
}

/// Whether `tracker` records `t`: its bucket, and its operation type
/// (`read_only: true` is a READ, anything else a WRITE).
fn tracks<S: AsRef<str>>(tracker: &RecordingDataTracker, t: &Trace<S>) -> bool {
    let event = if t.read_only == Some(true) {
        DataEvent::Read
    } else {
        DataEvent::Write
    };
    bucket_of(t) == Some(tracker.data_bucket_name.as_str()) && tracker.data_event.contains(&event)
}

/// The traces of `project_id` that its trackers record, and what was left
/// out and why. The ids of the left-out traces are set to `None` in
/// `ids` (the reported ids, in request order). Answered from the trackers'
/// in-memory view.
pub fn admit<S: AsRef<str>>(
    state: &AppState,
    project_id: &str,
    mut traces: Vec<Trace<S>>,
    ids: &mut [Option<String>],
) -> (Vec<Trace<S>>, NotRecorded) {
    let trackers = &state.trackers;
    let management = trackers.management_enabled(project_id);
    let (mut no_management, mut no_tracker, mut mismatch) = (0, 0, 0);
    let mut records = |t: &Trace<S>| match t.kind() {
        TraceKind::Management => {
            no_management += usize::from(!management);
            management
        }
        TraceKind::Data => match trackers.data_tracker_for(project_id, t.tracker_name.as_ref()) {
            Some(tracker) if tracks(&tracker, t) => true,
            Some(_) => {
                mismatch += 1;
                false
            }
            None => {
                no_tracker += 1;
                false
            }
        },
    };
    // In place: a batch whose traces are all kept is not moved.
    let mut ids = ids.iter_mut();
    traces.retain(|t| {
        let id = ids.next().expect("one id per trace");
        let keep = records(t);
        if !keep {
            *id = None;
        }
        keep
    });
    let mut out = NotRecorded::default();
    out.add(
        no_management,
        format!(
            "{no_management} management trace(s): project {project_id} has no enabled management \
             tracker (POST /v3/{project_id}/tracker with tracker_type system enables CTS)"
        ),
    );
    out.add(
        no_tracker,
        format!(
            "{no_tracker} data trace(s): their tracker_name names no enabled data tracker of the \
             project"
        ),
    );
    out.add(
        mismatch,
        format!(
            "{mismatch} data trace(s): not of the bucket (resource_name up to the first '/') or \
             the operation type (read_only: READ, else WRITE) their data tracker records"
        ),
    );
    (traces, out)
}

/// Appends `traces` of a project of `domain_id` durably and lets the
/// catalog learn their service types, resource types, trace names and
/// users (per the project's domain, not the one a reporter wrote into a
/// trace's user). Blocking.
pub fn append<S: AsRef<str>>(
    state: &AppState,
    store: &dyn TraceStore,
    traces: Vec<Trace<S>>,
    domain_id: &str,
) -> Result<AppendOutcome, StoreError> {
    if traces.is_empty() {
        return Ok(AppendOutcome::default());
    }
    // Learned as each trace is prepared for the store, from references: no
    // copies on the ingest path. A failed append may so teach the catalog
    // an operation it then does not hold, which costs nothing.
    let prepared = traces
        .iter()
        .map(|t| {
            state.catalog.observe(
                t.project_id.as_ref(),
                domain_id,
                t.service_type.as_ref(),
                t.resource_type.as_ref(),
                t.trace_name.as_ref(),
                t.user.name.as_ref().map_or("", AsRef::as_ref),
                t.time,
            );
            PreparedTrace::of(t)
        })
        .collect();
    drop(traces);
    let outcome = store.append_prepared(prepared)?;
    // A permit is kept when the matcher is busy: it never misses one.
    state.appended.notify_one();
    Ok(outcome)
}
