//! The LTS consumer: per tracker with `lts` on, a durable cursor in the
//! consumer store and a pass that reads after it, keeps the tracker's
//! traces, sends them in batches (several in flight, `pipeline`) and
//! commits the cursor after each batch the receiver acknowledged, in
//! journal order.
//! With several nodes a tracker streams from the node holding its lease
//! (`cts_consumer`); a node that lost it fails its next commit (fenced)
//! and stops that tracker: the new holder sends from the committed cursor
//! (at least once).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cts_consumer::{ConsumerError, ConsumerStore, Entry, Skips};
use cts_store::TraceStore;
use cts_tracker::{Tracker, TrackerStore};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::batch::{Batch, Reader};
use crate::pipeline::{Bounds, Done, Pipeline, Workers};
use crate::protocol::{self, Protocol, Stream};
use crate::sink::{Failure, SinkError, SinkSpec};
use crate::{LtsError, CONSUMER};

/// Batches of one tracker a pass sends at most, so that one tracker far
/// behind does not hold back the others for long (the next pass begins at
/// once when more is waiting).
const PASS_BATCHES: usize = 32;

/// How long journal marks are kept (longer than the journal's 7 days).
const MARKS_KEPT_SECS: i64 = 8 * 86_400;

/// Resolves a project's region.
pub type RegionOf = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How the streaming runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The transfer period (seconds): a tracker begins at the start of the
    /// period in which `lts` was switched on.
    pub period_secs: i64,
    /// Journal entries per request at most (the tracker's among them are
    /// sent).
    pub batch_max: usize,
    /// Batches of one tracker encoding or in flight at once (`otlp`; a
    /// `syslog` connection takes one batch after the other).
    pub in_flight: usize,
    /// Batches of one tracker parsed, encoded and compressed at once (the
    /// journal is read by one thread, in order); these threads and the
    /// reader run at background priority.
    pub encode_threads: usize,
    /// Time between passes: the longest a trace waits to be sent.
    pub interval: Duration,
    /// Longest wait between attempts on a failing receiver, seconds.
    pub max_backoff_secs: i64,
    /// Traces read from the journal at a time.
    pub read_batch: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            period_secs: 300,
            batch_max: 5_000,
            in_flight: 4,
            encode_threads: std::thread::available_parallelism().map_or(2, usize::from),
            interval: Duration::from_secs(1),
            max_backoff_secs: 30,
            read_batch: 10_000,
        }
    }
}

/// Which sink each project's trackers use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    pub default_sink: Option<String>,
    /// Project id → sink name; before the default.
    pub projects: BTreeMap<String, String>,
}

impl Routing {
    pub fn sink_of(&self, project_id: &str) -> Option<&str> {
        self.projects
            .get(project_id)
            .or(self.default_sink.as_ref())
            .map(String::as_str)
    }
}

/// A tracker's `lts` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LtsStatus {
    Enabled,
    Error(Failure),
}

/// What one sink did, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkMetrics {
    pub sink: String,
    /// Traces delivered since the last [`Lts::metrics`].
    pub delivered: u64,
    /// Failed requests since the last [`Lts::metrics`].
    pub failed: u64,
    /// Journal entries after the lowest cursor of its trackers (of any
    /// project: an upper bound of their own).
    pub backlog: u64,
    /// Seconds since the recording of the oldest trace a failed delivery
    /// waits on (0 when none waits).
    pub oldest_undelivered_secs: i64,
}

/// A tracker's stream, the body of its consumer state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    project_id: String,
    tracker_name: String,
    sink: String,
    /// Consecutive failed attempts, for the backoff.
    failures: u32,
    /// Unix ms before which no attempt is made.
    retry_at_ms: i64,
    error: Option<Failure>,
    /// `record_time` of the oldest trace a failed delivery waits on.
    oldest_ms: Option<i64>,
}

struct Sink {
    protocol: Arc<dyn Protocol>,
    delivered: AtomicU64,
    failed: AtomicU64,
}

/// A tracker and the sink its traces go to.
struct To<'a> {
    t: &'a Tracker,
    name: &'a str,
    sink: &'a Sink,
}

pub struct Lts {
    journal: Arc<dyn TraceStore>,
    trackers: Arc<TrackerStore>,
    consumers: Arc<ConsumerStore>,
    sinks: BTreeMap<String, Sink>,
    routing: Routing,
    region_of: RegionOf,
    settings: Settings,
    /// Read and encode the batches, at background priority.
    workers: Workers,
    skips: Skips,
    status: Mutex<HashMap<String, LtsStatus>>,
}

impl Lts {
    /// Builds a client per sink and holds the journal from the lowest
    /// cursor before anything else runs. Blocking.
    pub fn open(
        journal: Arc<dyn TraceStore>,
        trackers: Arc<TrackerStore>,
        consumers: Arc<ConsumerStore>,
        sinks: &[SinkSpec],
        routing: Routing,
        settings: Settings,
        region_of: RegionOf,
    ) -> Result<Lts, String> {
        let mut built = BTreeMap::new();
        for spec in sinks {
            spec.check().map_err(|e| e.to_string())?;
            let protocol =
                protocol::build(spec).map_err(|e| format!("lts sink {}: {e}", spec.name))?;
            let sink = Sink {
                protocol,
                delivered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            };
            built.insert(spec.name.clone(), sink);
        }
        let named = routing.default_sink.iter().chain(routing.projects.values());
        if let Some(missing) = named.into_iter().find(|n| !built.contains_key(*n)) {
            return Err(format!("lts: no sink is named {missing:?}"));
        }
        consumers
            .hold(journal.as_ref(), CONSUMER)
            .map_err(|e| e.to_string())?;
        let status = consumers
            .all::<State>(CONSUMER)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(id, e)| {
                (
                    id,
                    e.body.error.map_or(LtsStatus::Enabled, LtsStatus::Error),
                )
            })
            .collect();
        // The encoders and the one reader of a tracker's pass.
        let workers = crate::pipeline::start_workers(settings.encode_threads + 1)
            .map_err(|e| format!("lts: starting the worker threads: {e}"))?;
        Ok(Lts {
            journal,
            trackers,
            consumers,
            sinks: built,
            routing,
            region_of,
            settings,
            workers,
            skips: Skips::new(CONSUMER),
            status: Mutex::new(status),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The `lts` status of a tracker that streams.
    pub fn status(&self, tracker: &Tracker) -> Option<LtsStatus> {
        if !tracker.streams() {
            return None;
        }
        let known = self.status.lock().get(&tracker.id).copied();
        Some(
            known.unwrap_or(match self.routing.sink_of(&tracker.project_id) {
                Some(_) => LtsStatus::Enabled,
                None => LtsStatus::Error(Failure::NoSink),
            }),
        )
    }

    /// Traces passed over since the last call (for a counter; none
    /// expected).
    pub fn take_skipped(&self) -> u64 {
        self.skips.take()
    }

    /// Per sink: delivered, failed, backlog and oldest undelivered age.
    pub async fn metrics(&self, now_ms: i64) -> Result<Vec<SinkMetrics>, LtsError> {
        // `stats` asks the database on PostgreSQL: off the async workers too.
        let (states, durable) = self
            .blocking(|c, j| Ok((c.all::<State>(CONSUMER)?, j.stats().journal_seq)))
            .await?;
        Ok(self
            .sinks
            .iter()
            .map(|(name, sink)| {
                let mine = states.iter().filter(|(_, e)| e.body.sink == *name);
                let (mut backlog, mut oldest) = (0, 0);
                for (_, e) in mine {
                    backlog = backlog.max(durable.saturating_sub(e.cursor));
                    if let Some(ms) = e.body.oldest_ms {
                        oldest = oldest.max((now_ms - ms).max(0) / 1000);
                    }
                }
                SinkMetrics {
                    sink: name.clone(),
                    delivered: sink.delivered.swap(0, Ordering::Relaxed),
                    failed: sink.failed.swap(0, Ordering::Relaxed),
                    backlog,
                    oldest_undelivered_secs: oldest,
                }
            })
            .collect())
    }

    /// Runs `f` on the consumer store and the journal on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ConsumerStore, &dyn TraceStore) -> Result<T, LtsError> + Send + 'static,
    ) -> Result<T, LtsError> {
        let (consumers, journal) = (Arc::clone(&self.consumers), Arc::clone(&self.journal));
        tokio::task::spawn_blocking(move || f(&consumers, journal.as_ref()))
            .await
            .map_err(|e| LtsError::Task(e.to_string()))?
    }

    async fn save(&self, id: &str, e: Entry<State>) -> Result<(), LtsError> {
        let id = id.to_string();
        self.blocking(move |c, _| Ok(c.put(CONSUMER, &id, &e)?))
            .await
    }

    /// One pass: a request per streaming tracker (at most). Answers whether
    /// more is due at once (a full batch was sent). A tracker that fails
    /// does not stop the others.
    pub async fn run_once(&self, now_ms: i64) -> Result<bool, LtsError> {
        let p = self.settings.period_secs;
        self.blocking(move |c, j| Ok(c.mark(j, now_ms / 1000, p, MARKS_KEPT_SECS)?))
            .await?;
        let trackers = Arc::clone(&self.trackers);
        let all = tokio::task::spawn_blocking(move || trackers.all())
            .await
            .map_err(|e| LtsError::Task(e.to_string()))??;
        let known = self.blocking(|c, _| Ok(c.all::<State>(CONSUMER)?)).await?;
        for (id, e) in known {
            let streams = all.iter().any(|t| {
                t.id == id
                    && t.streams()
                    && self.routing.sink_of(&t.project_id) == Some(e.body.sink.as_str())
            });
            if !streams {
                // Switched off (or moved to another sink): a new start
                // begins at the period of the change that switches it on.
                self.status.lock().remove(&id);
                self.blocking(move |c, _| Ok(c.forget(CONSUMER, &id)?))
                    .await?;
            }
        }
        let (mut more, mut failed) = (false, None);
        for t in all.iter().filter(|t| t.streams()) {
            match self.run_tracker(t, now_ms).await {
                Ok(m) => more |= m,
                // Another node took the tracker over: its work stopped here
                // without committing, and goes on there.
                Err(LtsError::Consumer(e @ ConsumerError::LeaseLost { .. })) => {
                    tracing::info!(tracker = %t.tracker_name, project = %t.project_id, error = %e,
                        "lts streaming of a tracker moved to another node");
                }
                Err(e) => {
                    tracing::warn!(tracker = %t.tracker_name, project = %t.project_id, error = %e,
                        "lts streaming of a tracker failed; the others go on");
                    failed.get_or_insert(e);
                }
            }
        }
        self.blocking(|c, j| Ok(c.hold(j, CONSUMER)?)).await?;
        failed.map_or(Ok(more), Err)
    }

    /// The state of a tracker that begins to stream: the cursor before the
    /// first trace recorded from the start of the period holding
    /// `lts_since`.
    async fn begin(&self, t: &Tracker, sink: &str, now_ms: i64) -> Result<Entry<State>, LtsError> {
        let (p, batch) = (self.settings.period_secs, self.settings.read_batch);
        let since = t.lts_since.unwrap_or(now_ms).div_euclid(1000);
        let start = since.div_euclid(p) * p;
        let (found, marked) = self
            .blocking(move |c, j| {
                let mark = c.journal_mark(start)?;
                let found = cts_consumer::start_cursor(j, mark.unwrap_or(0), start * 1000, batch)?;
                Ok((found, mark.is_some()))
            })
            .await?;
        if marked {
            self.skips.record(
                &key(t),
                found.gone,
                "journal entries (of any project) of its first period removed before it began",
            );
        }
        let entry = Entry {
            cursor: found.cursor,
            body: State {
                project_id: t.project_id.clone(),
                tracker_name: t.tracker_name.clone(),
                sink: sink.to_string(),
                failures: 0,
                retry_at_ms: 0,
                error: None,
                oldest_ms: None,
            },
        };
        self.save(&t.id, entry.clone()).await?;
        Ok(entry)
    }

    /// Delivers the waiting batches of `t` through a [`Pipeline`] (at most
    /// [`PASS_BATCHES`]), committing the cursor after each acknowledged
    /// batch in journal order; answers whether more is waiting.
    async fn run_tracker(&self, t: &Tracker, now_ms: i64) -> Result<bool, LtsError> {
        let Some((name, sink)) = self
            .routing
            .sink_of(&t.project_id)
            .and_then(|n| self.sinks.get_key_value(n))
        else {
            self.status
                .lock()
                .insert(t.id.clone(), LtsStatus::Error(Failure::NoSink));
            return Ok(false);
        };
        // One node at a time: the state is read after the lease is held.
        let id = t.id.clone();
        if !self
            .blocking(move |c, _| Ok(c.claim(CONSUMER, &id)?))
            .await?
        {
            return Ok(false);
        }
        let id = t.id.clone();
        let mut e = match self
            .blocking(move |c, _| Ok(c.get::<State>(CONSUMER, &id)?))
            .await?
        {
            Some(e) => e,
            None => self.begin(t, name, now_ms).await?,
        };
        if now_ms < e.body.retry_at_ms {
            return Ok(false);
        }
        let reader = Reader {
            journal: Arc::clone(&self.journal),
            tracker: t.clone(),
            stream: self.stream(t),
            protocol: Arc::clone(&sink.protocol),
            batch_max: self.settings.batch_max,
        };
        let protocol = Arc::clone(&sink.protocol);
        // After a failure one batch probes the receiver: no batches read,
        // encoded and refused in vain while it is down.
        let probing = e.body.failures > 0;
        let (batches, in_flight) = match (probing, protocol.concurrent()) {
            (true, _) => (1, 1),
            (false, true) => (PASS_BATCHES, self.settings.in_flight),
            (false, false) => (PASS_BATCHES, 1),
        };
        let bounds = Bounds {
            batches,
            in_flight,
            encoders: self.settings.encode_threads,
        };
        let mut pipeline = Pipeline::start(
            reader,
            move |body| {
                let protocol = Arc::clone(&protocol);
                async move { protocol.send(body).await }
            },
            e.cursor,
            bounds,
            &self.workers,
        );
        let (to, mut more) = (To { t, name, sink }, false);
        while let Some(done) = pipeline.next().await {
            let Done { batch, result } = done?;
            self.skips.record(
                &key(t),
                batch.gone,
                "journal entries (of any project) removed before they were delivered",
            );
            self.skips
                .record(&key(t), batch.unreadable, "stored traces that do not read");
            match result {
                Ok(()) => {
                    more = batch.more;
                    self.delivered(&to, &mut e, &batch).await?;
                }
                Err(err) => {
                    // The cursor stays before this batch: the later ones
                    // in flight are dropped and sent again after it.
                    self.failed(&to, e, &batch, err, now_ms).await?;
                    return Ok(false);
                }
            }
        }
        Ok(more)
    }

    /// Commits the cursor after a delivered batch.
    async fn delivered(
        &self,
        &To { t, name, sink }: &To<'_>,
        e: &mut Entry<State>,
        batch: &Batch,
    ) -> Result<(), LtsError> {
        if batch.count == 0 && batch.upto == e.cursor {
            return Ok(());
        }
        sink.delivered.fetch_add(batch.count, Ordering::Relaxed);
        let recovered = e.body.error.is_some();
        e.cursor = batch.upto;
        e.body.failures = 0;
        e.body.retry_at_ms = 0;
        e.body.error = None;
        e.body.oldest_ms = None;
        self.save(&t.id, e.clone()).await?;
        if batch.count > 0 {
            self.status.lock().insert(t.id.clone(), LtsStatus::Enabled);
        }
        if recovered {
            tracing::info!(tracker = %t.tracker_name, project = %t.project_id, sink = %name,
                "lts delivery works again");
        }
        Ok(())
    }

    /// Records a failed delivery and when to try again.
    async fn failed(
        &self,
        &To { t, name, sink }: &To<'_>,
        mut e: Entry<State>,
        batch: &Batch,
        err: SinkError,
        now_ms: i64,
    ) -> Result<(), LtsError> {
        sink.failed.fetch_add(1, Ordering::Relaxed);
        e.body.failures += 1;
        let backoff = (1i64 << e.body.failures.min(10)).min(self.settings.max_backoff_secs);
        e.body.retry_at_ms = now_ms + backoff * 1000;
        e.body.error = Some(err.failure);
        e.body.oldest_ms = e.body.oldest_ms.or(batch.oldest_ms);
        self.save(&t.id, e).await?;
        self.status
            .lock()
            .insert(t.id.clone(), LtsStatus::Error(err.failure));
        tracing::warn!(tracker = %t.tracker_name, project = %t.project_id, sink = %name,
            error = %err, retry_in_secs = backoff, "lts delivery failed; the traces wait");
        Ok(())
    }

    fn stream(&self, t: &Tracker) -> Stream {
        Stream {
            project_id: t.project_id.clone(),
            region: (self.region_of)(&t.project_id).unwrap_or_else(|| "default".into()),
            log_group: t.lts.log_group_name.clone(),
            log_topic: t.lts.log_topic_name.clone(),
            group_id: t.group_id.clone().unwrap_or_default(),
            stream_id: t.stream_id.clone().unwrap_or_default(),
        }
    }
}

fn key(t: &Tracker) -> String {
    format!("{}/{}", t.project_id, t.tracker_name)
}
