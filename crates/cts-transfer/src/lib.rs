//! Trace transfer: every tracker with a transfer bucket gets its traces as
//! trace files in object storage, period by period, and (with
//! `is_support_validate`) hourly signed digests chained together.
//!
//! The transfer is a consumer of the journal with its own durable cursor
//! per tracker (`state`), holding the journal against retention until its
//! traces are in files. A period `[start, end)` of a tracker holds the
//! journaled traces, after the tracker's cursor, up to the first one
//! recorded at or after `end`; it is written once `end` plus a grace has
//! passed, so late group commits still fall in. Files are uploaded before
//! the cursor moves (see `state`), and a failed upload leaves the cursor
//! where it was: the traces wait, and the tracker shows `error` with
//! `noBucket` or `bucketPolicyError` until an upload succeeds again.
//!
//! A tracker's first period is the one holding the instant it gained a
//! bucket (`Tracker::transfer_since`, set with the change itself), read
//! from its start on (`start`): traces reported right after the change,
//! and the change's own trace, are in files however late the transfer
//! notices the tracker. A trace the transfer had to pass over (unreadable,
//! or removed from the journal before it was in files) is counted and
//! logged, never skipped silently.
//!
//! With several nodes (consumer state on PostgreSQL) a tracker is worked
//! by the node holding its lease (`cts_consumer`): every commit of its
//! state is fenced by the lease, so a node that lost it stops that
//! tracker without committing, and the next holder redoes the period from
//! the committed cursor (same objects, same names).

mod building;
mod keys;
mod state;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cts_archive::{
    build_digest, file_count, AgeRecipient, ChainLink, Compression, DigestSpec, LogFile,
    ObjectStorage, Period, PublicKeyInfo, SigningKey, SplitLimits, TraceFileOptions, TrackerPath,
    WriteError, WriteFailure,
};
use cts_consumer::{ConsumerError, ConsumerStore, Skips};
use cts_store::{StoreError, TraceStore};
use cts_tracker::{CompressType, ErrorDetail, Tracker, TrackerStatus, TrackerStore};
use serde::Deserialize;

use building::{Building, FilesSpec};
pub use keys::SECRET_PURPOSE;
pub use keys::{Keys, StoredKey, PG_SCHEMA};
use state::State;
pub use state::TrackerState;

/// The journal consumer name of the transfer.
pub const CONSUMER: &str = "transfer";

/// How long journal marks are kept: longer than the journal itself (7 days
/// by default), so every period a tracker may begin at has one.
const MARKS_KEPT_SECS: i64 = 8 * 86_400;

/// Failed attempts after which a disabled tracker's last periods are given
/// up (counted as skipped): with the backoff, about an hour.
const WIND_DOWN_ATTEMPTS: u32 = 16;

/// How often a local bucket's files are checked for expiry.
const EXPIRY_EVERY_SECS: i64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("transfer state: {0}")]
    State(String),
    #[error(transparent)]
    Consumer(#[from] cts_consumer::ConsumerError),
    #[error("reading the journal: {0}")]
    Journal(#[from] StoreError),
    #[error("trackers: {0}")]
    Trackers(#[from] cts_tracker::TrackerError),
    #[error("digest signing key: {0}")]
    Key(String),
    #[error("building trace files: {0}")]
    Files(#[from] cts_archive::FileError),
}

impl From<cts_db::DbError> for TransferError {
    fn from(e: cts_db::DbError) -> Self {
        TransferError::State(e.to_string())
    }
}

/// How the transfer runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Width of a period, seconds.
    pub period_secs: i64,
    /// Width of a digest window, seconds.
    pub digest_period_secs: i64,
    /// How long after a period ends its files are written, seconds.
    pub grace_secs: i64,
    /// Traces read from the journal at a time.
    pub batch: usize,
    /// Longest wait between attempts on a failing bucket, seconds.
    pub max_backoff_secs: i64,
    /// Trace files built at once while the journal is read on (0: each
    /// built and uploaded before reading on).
    pub files_building: usize,
    /// The size of a trace file.
    pub file_limits: SplitLimits,
    /// Trace JSON one tracker's transfer holds while it fills a period's
    /// files (one per service): past it, the fullest is written out early.
    pub max_held_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            period_secs: 300,
            digest_period_secs: 3600,
            grace_secs: 5,
            batch: 10_000,
            max_backoff_secs: 300,
            files_building: 2,
            file_limits: SplitLimits::default(),
            max_held_bytes: 128 << 20,
        }
    }
}

/// What one tracker's transfer looks like, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub project_id: String,
    pub tracker_name: String,
    /// Journaled traces after the tracker's cursor (of any project: an
    /// upper bound of its own).
    pub backlog: u64,
    /// Seconds since the start of the oldest period not yet in files.
    pub oldest_age_secs: i64,
}

/// Starts a new digest signing key from `now_secs` on (`ctsd
/// rotate-digest-key`); the previous key stays valid for the digests it
/// signed. Returns the new key's fingerprint.
pub fn rotate_digest_key(keys: &Keys, now_secs: i64) -> Result<String, TransferError> {
    let stored = new_key(now_secs)?;
    keys.rotate_to(&stored)?;
    Ok(stored.fingerprint)
}

/// A new signing key, valid from `now_secs` on.
fn new_key(now_secs: i64) -> Result<StoredKey, TransferError> {
    let key = SigningKey::generate().map_err(|e| TransferError::Key(e.to_string()))?;
    Ok(StoredKey {
        fingerprint: key.fingerprint().to_string(),
        private_pem: key.to_pkcs8_pem(),
        public_pem: key.verifying_key().to_pem(),
        valid_from: now_secs,
        valid_to: None,
    })
}

/// The fields of a stored trace the transfer routes by.
#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    project_id: &'a str,
    #[serde(borrow)]
    trace_type: &'a str,
    #[serde(borrow)]
    tracker_name: &'a str,
    #[serde(borrow)]
    service_type: &'a str,
    record_time: i64,
}

/// The answer of a blocking job (one that panicked is an error).
async fn joined<T>(
    job: tokio::task::JoinHandle<Result<T, TransferError>>,
) -> Result<T, TransferError> {
    job.await
        .map_err(|e| TransferError::State(format!("blocking task: {e}")))?
}

/// Resolves a project's region (the path of its files).
pub type RegionOf = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub struct Transfer {
    journal: Arc<dyn TraceStore>,
    trackers: Arc<TrackerStore>,
    storage: ObjectStorage,
    /// SQLite: used from async code through [`Transfer::with_state`] only.
    state: Arc<State>,
    settings: Settings,
    region_of: RegionOf,
    /// Writes that failed since the last [`Transfer::take_failed_writes`].
    failed_writes: AtomicU64,
    /// Traces passed over since the last [`Transfer::take_skipped`].
    skips: Skips,
    /// When (Unix seconds) each local bucket's old files were last expired.
    expired_at: parking_lot::Mutex<std::collections::HashMap<String, i64>>,
    /// The threads of its blocking work (journal reads, gzip, encryption,
    /// SQLite), at ingest's priority (`cts-priority`): on saturated cores
    /// a query gets a core before a file's gzip (on Tokio's blocking
    /// threads the two weighed the same, and a pass doubled the query
    /// p99), while the transfer still keeps pace with ingest.
    workers: Arc<cts_priority::Pool>,
}

/// Why a period could not be written.
enum Failed {
    Write(WriteError),
    Fatal(TransferError),
}

impl From<TransferError> for Failed {
    fn from(e: TransferError) -> Self {
        Failed::Fatal(e)
    }
}

impl Transfer {
    /// Takes the signing `keys`, moves state an older version left in
    /// their file into `consumers`, makes the first signing key if there
    /// is none (one, when several nodes start together), and holds the
    /// journal from the lowest cursor before anything else runs.
    #[allow(clippy::too_many_arguments)] // everything the transfer works with
    pub fn open(
        keys: Keys,
        consumers: Arc<ConsumerStore>,
        journal: Arc<dyn TraceStore>,
        trackers: Arc<TrackerStore>,
        storage: ObjectStorage,
        settings: Settings,
        region_of: RegionOf,
        now_secs: i64,
    ) -> Result<Transfer, TransferError> {
        let state = Arc::new(State::open(keys, consumers)?);
        let workers = cts_priority::Pool::for_rounds("cts-transfer", cts_priority::Tier::Ingest)
            .map_err(|e| TransferError::State(format!("starting its threads: {e}")))?;
        let t = Transfer {
            journal,
            trackers,
            storage,
            state,
            settings,
            region_of,
            failed_writes: AtomicU64::new(0),
            skips: Skips::new(CONSUMER),
            expired_at: parking_lot::Mutex::default(),
            workers: Arc::new(workers),
        };
        if t.state.keys.all()?.is_empty() {
            t.state.keys.add_first(&new_key(now_secs)?)?;
        }
        hold(&t.state, t.journal.as_ref())?;
        Ok(t)
    }

    pub fn storage(&self) -> &ObjectStorage {
        &self.storage
    }

    /// How many writes failed since the last call (for a counter metric).
    pub fn take_failed_writes(&self) -> u64 {
        self.failed_writes.swap(0, Ordering::Relaxed)
    }

    /// How many traces a tracker should have archived were passed over
    /// since the last call (for a counter metric; there should be none).
    pub fn take_skipped(&self) -> u64 {
        self.skips.take()
    }

    fn skip(&self, t: &Tracker, count: u64, why: &str) {
        let key = format!("{}/{}", t.project_id, t.tracker_name);
        self.skips.record(&key, count, why);
    }

    /// Marks the journal for the next period start (a few times per
    /// period, so a search from it reads little).
    async fn mark_journal(&self, now: i64) -> Result<(), TransferError> {
        let (p, journal) = (self.settings.period_secs, Arc::clone(&self.journal));
        self.with_state(move |st| {
            Ok(st
                .consumers
                .mark(journal.as_ref(), now, p, MARKS_KEPT_SECS)?)
        })
        .await
    }

    /// Runs `f` on the transfer state (SQLite reads and commits) on a
    /// blocking thread, off the async workers.
    async fn with_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> Result<T, TransferError> + Send + 'static,
    ) -> Result<T, TransferError> {
        let state = Arc::clone(&self.state);
        self.blocking(move || f(&state)).await
    }

    /// Runs `f` on the tracker store (SQLite) on a blocking thread.
    async fn with_trackers<T: Send + 'static>(
        &self,
        f: impl FnOnce(&TrackerStore) -> Result<T, cts_tracker::TrackerError> + Send + 'static,
    ) -> Result<T, TransferError> {
        let trackers = Arc::clone(&self.trackers);
        self.blocking(move || Ok(f(&trackers)?)).await
    }

    /// Runs `f` (SQLite, journal reads, gzip, encryption, hashing,
    /// signing) on the transfer's threads, off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, TransferError> + Send + 'static,
    ) -> Result<T, TransferError> {
        joined(self.workers.spawn_blocking(f)).await
    }

    /// [`Transfer::with_state`] for an API call or a metrics scrape: on
    /// Tokio's blocking threads, at the caller's priority, not a pass's.
    async fn read_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> Result<T, TransferError> + Send + 'static,
    ) -> Result<T, TransferError> {
        let state = Arc::clone(&self.state);
        joined(tokio::task::spawn_blocking(move || f(&state))).await
    }

    /// Commits a tracker's state.
    async fn save(&self, tracker_id: &str, s: &TrackerState) -> Result<(), TransferError> {
        let (id, s) = (tracker_id.to_string(), s.clone());
        self.with_state(move |st| st.save(&id, &s)).await
    }

    /// Drops a tracker's state.
    async fn forget(&self, tracker_id: &str) -> Result<(), TransferError> {
        let id = tracker_id.to_string();
        self.with_state(move |st| st.forget(&id)).await
    }

    /// Sets a tracker's status in the tracker store.
    async fn set_status(&self, t: &Tracker, status: TrackerStatus) -> Result<(), TransferError> {
        let (project, name) = (t.project_id.clone(), t.tracker_name.clone());
        self.with_trackers(move |s| s.set_status(&project, &name, status).map(drop))
            .await
    }

    /// The public halves of the keys valid at some point of `[from, to]`.
    /// Read from the state each time: `ctsd rotate-digest-key` may have
    /// added one from another process.
    pub async fn public_keys(
        &self,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<PublicKeyInfo>, TransferError> {
        Ok(self
            .read_state(|st| st.keys.all())
            .await?
            .iter()
            .filter(|k| to.is_none_or(|to| k.valid_from <= to))
            .filter(|k| from.is_none_or(|from| k.valid_to.is_none_or(|end| end >= from)))
            .map(|k| PublicKeyInfo {
                fingerprint: k.fingerprint.clone(),
                public_key: k.public_pem.clone(),
                valid_from: Some(k.valid_from),
                valid_to: k.valid_to,
            })
            .collect())
    }

    /// Holds the journal from the lowest cursor of all trackers.
    async fn hold(&self) -> Result<(), TransferError> {
        let journal = Arc::clone(&self.journal);
        self.with_state(move |st| hold(st, journal.as_ref())).await
    }
}

/// The key that signs at `at`.
fn signing_key(state: &State, at: i64) -> Result<SigningKey, TransferError> {
    let keys = state.keys.all()?;
    let k = keys
        .iter()
        .rev()
        .find(|k| k.valid_from <= at)
        .or_else(|| keys.first())
        .ok_or_else(|| TransferError::Key("no signing key".into()))?;
    SigningKey::from_pkcs8_pem(&k.private_pem).map_err(|e| TransferError::Key(e.to_string()))
}

/// Holds the journal from the lowest cursor of all trackers.
fn hold(state: &State, journal: &dyn TraceStore) -> Result<(), TransferError> {
    Ok(state.consumers.hold(journal, CONSUMER)?)
}

impl Transfer {
    /// Progress of every tracker the transfer knows, given the journal's
    /// last durable sequence number.
    pub async fn progress(
        &self,
        now_secs: i64,
        durable: u64,
    ) -> Result<Vec<Progress>, TransferError> {
        Ok(self
            .read_state(|st| st.all())
            .await?
            .into_iter()
            .map(|(_, s)| Progress {
                backlog: durable.saturating_sub(s.cursor),
                oldest_age_secs: if durable > s.cursor {
                    (now_secs - s.next_period).max(0)
                } else {
                    0
                },
                project_id: s.project_id,
                tracker_name: s.tracker_name,
            })
            .collect())
    }

    /// One pass: every due period and digest of every transferring tracker.
    /// A tracker that fails does not stop the others: the pass goes on and
    /// answers the first failure at its end.
    pub async fn run_once(&self, now_secs: i64) -> Result<(), TransferError> {
        self.mark_journal(now_secs).await?;
        let trackers = self.with_trackers(|s| s.all()).await?;
        let known = self.with_state(|st| st.all()).await?;
        let mut due = Vec::new();
        for (id, _) in &known {
            match trackers.iter().find(|t| &t.id == id) {
                Some(t) if t.transfers() => {}
                // Disabled: what it recorded while enabled is still written
                // (`run_tracker`), then each chain ends.
                Some(t) if !t.obs_info.bucket_name.is_empty() => due.push(t),
                // Deleted, or its bucket removed: nothing left to write
                // with; the chains stay open.
                _ => self.forget(id).await?,
            }
        }
        due.extend(trackers.iter().filter(|t| t.transfers()));
        let mut failed = None;
        for t in due {
            match self.run_tracker(t, now_secs).await {
                Ok(()) => {}
                // Another node took the tracker over: its work stopped here
                // without committing, and goes on there.
                Err(TransferError::Consumer(e @ ConsumerError::LeaseLost { .. })) => {
                    tracing::info!(tracker = %t.tracker_name, project = %t.project_id, error = %e,
                        "transfer of a tracker moved to another node");
                }
                Err(e) => {
                    tracing::warn!(
                        tracker = %t.tracker_name,
                        project = %t.project_id,
                        error = %e,
                        "transfer of a tracker failed; the others go on"
                    );
                    failed.get_or_insert(e);
                }
            }
        }
        self.expire(&trackers, now_secs).await;
        self.hold().await?;
        failed.map_or(Ok(()), Err)
    }

    /// `bucket_lifecycle` where the store has no lifecycle rules (a local
    /// directory; on S3 the bucket's rule, set with the tracker, does it):
    /// hourly, the files written more than that many days ago go.
    async fn expire(&self, trackers: &[Tracker], now: i64) {
        for t in trackers.iter().filter(|t| t.transfers()) {
            let Ok(days @ 1..) = u32::try_from(t.obs_info.bucket_lifecycle) else {
                continue;
            };
            let bucket = &t.obs_info.bucket_name;
            {
                let mut expired_at = self.expired_at.lock();
                if expired_at
                    .get(bucket)
                    .is_some_and(|at| now < at + EXPIRY_EVERY_SECS)
                {
                    continue;
                }
                expired_at.insert(bucket.clone(), now);
            }
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(now.max(0) as u64);
            match self.storage.expire(bucket, days, at).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(bucket = %bucket, days, files = n, "expired old trace files")
                }
                Err(e) => {
                    tracing::warn!(bucket = %bucket, error = %e, "expiring old trace files failed")
                }
            }
        }
    }

    /// The state of a tracker that begins to transfer: its first period is
    /// the one holding `transfer_since` (trackers from before it existed:
    /// now), read from the period's start on.
    async fn begin(&self, t: &Tracker, now: i64) -> Result<TrackerState, TransferError> {
        let p = self.settings.period_secs;
        let since = t.transfer_since.map_or(now, |ms| ms.div_euclid(1000));
        let start = since.div_euclid(p) * p;
        // No mark (a first start, or marks older than the journal): the
        // journal from its beginning, whose removed part is older still.
        let mark = self
            .with_state(move |st| Ok(st.consumers.journal_mark(start)?))
            .await?;
        let (journal, batch) = (Arc::clone(&self.journal), self.settings.batch);
        let found = self
            .blocking(move || {
                let from = mark.unwrap_or(0);
                Ok(cts_consumer::start_cursor(
                    journal.as_ref(),
                    from,
                    start * 1000,
                    batch,
                )?)
            })
            .await?;
        if mark.is_some() && found.gone > 0 {
            self.skip(
                t,
                found.gone,
                "journal entries (of any project) of its first period removed before it began",
            );
        }
        let cursor = found.cursor;
        let s = TrackerState {
            project_id: t.project_id.clone(),
            tracker_name: t.tracker_name.clone(),
            cursor,
            next_period: start,
            digest_start: start,
            pending: BTreeMap::new(),
            chains: BTreeMap::new(),
            failures: 0,
            retry_at: 0,
            until: None,
        };
        self.save(&t.id, &s).await?;
        Ok(s)
    }

    /// Writes what is due for `t`. A disabled tracker winds down: the
    /// periods up to the one it was found disabled in are written (it
    /// recorded nothing after), each chain ends, and its state goes.
    async fn run_tracker(&self, t: &Tracker, now: i64) -> Result<(), TransferError> {
        let p = self.settings.period_secs;
        // One node at a time: its state is read after the lease is held.
        let id = t.id.clone();
        if !self
            .with_state(move |st| Ok(st.consumers.claim(CONSUMER, &id)?))
            .await?
        {
            return Ok(());
        }
        let id = t.id.clone();
        let mut s = match self.with_state(move |st| st.tracker(&id)).await? {
            Some(s) => s,
            None => self.begin(t, now).await?,
        };
        let on = t.transfers();
        let until = (!on).then(|| s.until.unwrap_or(now.div_euclid(p) * p + p));
        if s.until != until {
            s.until = until;
            self.save(&t.id, &s).await?;
        }
        if now < s.retry_at {
            return Ok(());
        }
        let outcome = self.catch_up(t, &mut s, now).await;
        match outcome {
            Ok(()) if s.until.is_some_and(|u| s.next_period >= u) => {
                self.forget(&t.id).await?;
                Ok(())
            }
            Ok(()) => {
                if on && (s.failures > 0 || matches!(t.status, TrackerStatus::Error(_))) {
                    s.failures = 0;
                    s.retry_at = 0;
                    self.save(&t.id, &s).await?;
                    self.set_status(t, TrackerStatus::Enabled).await?;
                    tracing::info!(tracker = %t.tracker_name, project = %t.project_id, "transfer works again");
                }
                Ok(())
            }
            Err(Failed::Write(e)) if !on && s.failures + 1 >= WIND_DOWN_ATTEMPTS => {
                // A disabled tracker must not hold the journal for ever.
                self.failed_writes.fetch_add(1, Ordering::Relaxed);
                // `stats` asks the database on PostgreSQL: off the async workers.
                let journal = Arc::clone(&self.journal);
                let durable = self
                    .blocking(move || Ok(journal.stats().journal_seq))
                    .await?;
                let backlog = durable.saturating_sub(s.cursor);
                self.skip(
                    t,
                    backlog,
                    &format!("journal entries (of any project) left unwritten by a disabled tracker: {e}"),
                );
                self.forget(&t.id).await?;
                Ok(())
            }
            Err(Failed::Write(e)) => {
                self.failed_writes.fetch_add(1, Ordering::Relaxed);
                s.failures += 1;
                let backoff = (5i64 << s.failures.min(10)).min(self.settings.max_backoff_secs);
                s.retry_at = now + backoff;
                self.save(&t.id, &s).await?;
                tracing::warn!(
                    tracker = %t.tracker_name,
                    project = %t.project_id,
                    error = %e,
                    retry_in_secs = backoff,
                    "transfer failed; the traces wait"
                );
                let detail = match e.failure {
                    WriteFailure::NoBucket => Some(ErrorDetail::NoBucket),
                    WriteFailure::PolicyError => Some(ErrorDetail::BucketPolicyError),
                    WriteFailure::Other => None,
                };
                if let Some(detail) = detail.filter(|_| on) {
                    if t.status != TrackerStatus::Error(detail) {
                        self.set_status(t, TrackerStatus::Error(detail)).await?;
                    }
                }
                Ok(())
            }
            Err(Failed::Fatal(e)) => Err(e),
        }
    }

    /// Writes every due period, then every due digest.
    async fn catch_up(&self, t: &Tracker, s: &mut TrackerState, now: i64) -> Result<(), Failed> {
        let (p, g) = (self.settings.period_secs, self.settings.grace_secs);
        if t.obs_info.is_obs_created {
            let bucket = &t.obs_info.bucket_name;
            if !self.storage.bucket_exists(bucket).await.map_err(write)? {
                self.storage.create_bucket(bucket).await.map_err(write)?;
            }
        }
        // A local bucket is its first user's: another project's files
        // would break the owner's `cts verify` (bucketPolicyError).
        self.storage
            .claim_bucket(&t.obs_info.bucket_name, &t.project_id)
            .await
            .map_err(write)?;
        while s.next_period + p + g <= now && s.until.is_none_or(|u| s.next_period < u) {
            let period = Period {
                start: s.next_period,
                end: s.next_period + p,
            };
            self.write_period(t, s, period).await?;
            s.next_period += p;
            self.save(&t.id, s).await?;
        }
        let dp = self.settings.digest_period_secs;
        if s.until.is_some_and(|u| s.next_period >= u) {
            // Wound down: each chain ends here.
            if !s.chains.is_empty() || !s.pending.is_empty() {
                let end = s.next_period;
                self.write_digests(t, s, end, true).await?;
            }
        } else if t.is_support_validate {
            while s.digest_start + dp <= s.next_period {
                let end = s.digest_start + dp;
                self.write_digests(t, s, end, false).await?;
                s.digest_start = end;
                self.save(&t.id, s).await?;
            }
        } else if !s.chains.is_empty() {
            // Validation was turned off: each chain ends here.
            let end = s.next_period;
            self.write_digests(t, s, end, true).await?;
            s.chains.clear();
            s.digest_start = end;
            self.save(&t.id, s).await?;
        } else {
            s.pending.clear();
            s.digest_start = s.next_period;
        }
        Ok(())
    }

    fn path(&self, t: &Tracker) -> TrackerPath {
        TrackerPath {
            file_prefix: t.obs_info.file_prefix_name.clone(),
            region: (self.region_of)(&t.project_id).unwrap_or_else(|| "default".into()),
            tracker_name: t.tracker_name.clone(),
        }
    }

    async fn file_options(&self, t: &Tracker) -> Result<TraceFileOptions, Failed> {
        let mut recipients = Vec::new();
        if t.is_support_trace_files_encryption {
            if let Some(kms) = &t.kms_id {
                let (project, kms) = (t.project_id.clone(), kms.clone());
                let key = self.with_trackers(move |s| s.key(&project, &kms)).await?;
                let r: AgeRecipient = key
                    .recipient
                    .parse()
                    .map_err(|e: cts_archive::FileError| TransferError::Files(e))?;
                recipients.push(r);
            }
        }
        Ok(TraceFileOptions {
            compression: match t.obs_info.compress_type {
                CompressType::Gzip => Compression::Gzip,
                CompressType::Json => Compression::Json,
            },
            recipients,
            limits: self.settings.file_limits,
            ..TraceFileOptions::default()
        })
    }

    /// Reads the period's traces from the journal and uploads them, a file
    /// (of at most 50,000 traces or 50 MB) at a time per service.
    async fn write_period(
        &self,
        t: &Tracker,
        s: &mut TrackerState,
        period: Period,
    ) -> Result<(), Failed> {
        let path = self.path(t);
        let options = self.file_options(t).await?;
        let by_service = t.obs_info.is_sort_by_service;
        let end_ms = period.end * 1000;
        let mut cursor = s.cursor;
        let mut open: BTreeMap<String, Part> = BTreeMap::new();
        let mut pending: Vec<(String, LogFile)> = Vec::new();
        // JSON bytes in the open parts.
        let mut held = 0usize;
        let mut building = Building::new(
            &t.obs_info.bucket_name,
            self.settings.files_building,
            Arc::clone(&self.workers),
        );
        'read: loop {
            // Reading decompresses frames: off the async workers.
            let (journal, batch_size) = (Arc::clone(&self.journal), self.settings.batch);
            let batch = self
                .blocking(move || {
                    Ok(cts_consumer::read_batch(
                        journal.as_ref(),
                        cursor,
                        batch_size,
                    )?)
                })
                .await?;
            self.skip(
                t,
                batch.gone,
                "journal entries (of any project) removed before they were in files",
            );
            // Past the gap, if there was one.
            cursor = batch.entries.first().map_or(batch.cursor, |e| e.seq - 1);
            if batch.entries.is_empty() {
                break;
            }
            for entry in batch.entries {
                // Routed first: the chain is copied out so the document can move.
                let route = match serde_json::from_slice::<Meta>(&entry.doc) {
                    Ok(meta) if meta.record_time >= end_ms => break 'read,
                    Ok(meta) if belongs(t, &meta) => {
                        Some(if by_service { meta.service_type } else { "" }.to_string())
                    }
                    Ok(_) => None,
                    Err(_) => {
                        self.skip(t, 1, "a stored trace that does not read");
                        None
                    }
                };
                cursor = entry.seq;
                let Some(chain) = route else {
                    continue;
                };
                let chain = chain.as_str();
                let part = open.entry(chain.to_string()).or_default();
                part.bytes += entry.doc.len() + 1;
                held += entry.doc.len() + 1;
                part.docs.push(entry.doc);
                let limits = self.settings.file_limits;
                let spec = if part.docs.len() >= limits.max_traces
                    || part.bytes >= limits.max_json_bytes
                {
                    held -= part.bytes;
                    Some(part.take_files(t, &path, chain, period, &options))
                } else if held > self.settings.max_held_bytes {
                    // Many chains filling at once: the fullest goes out
                    // early as a smaller file, so memory stays bounded
                    // whatever the number of services.
                    let (chain, part) = open
                        .iter_mut()
                        .max_by_key(|(_, p)| p.bytes)
                        .expect("a part holds the bytes");
                    held -= part.bytes;
                    Some(part.take_files(t, &path, chain, period, &options))
                } else {
                    None
                };
                if let Some(spec) = spec {
                    building.start(spec, &mut pending, &self.storage).await?;
                }
            }
        }
        for (chain, mut part) in open {
            if !part.docs.is_empty() {
                let spec = part.take_files(t, &path, &chain, period, &options);
                building.start(spec, &mut pending, &self.storage).await?;
            }
        }
        building.finish(&mut pending, &self.storage).await?;
        s.cursor = cursor;
        if t.is_support_validate {
            for (chain, file) in pending {
                s.pending.entry(chain).or_default().push(file);
            }
        }
        Ok(())
    }

    /// The digests of every chain for the window ending at `end`.
    async fn write_digests(
        &self,
        t: &Tracker,
        s: &mut TrackerState,
        end: i64,
        ending: bool,
    ) -> Result<(), Failed> {
        let path = self.path(t);
        let chains: Vec<String> = s
            .chains
            .keys()
            .chain(s.pending.keys())
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let links: Vec<(String, Option<ChainLink>, Vec<LogFile>)> = chains
            .into_iter()
            .map(|chain| {
                let previous = s.chains.get(&chain).cloned();
                let log_files = s.pending.get(&chain).cloned().unwrap_or_default();
                (chain, previous, log_files)
            })
            .collect();
        let (bucket, project, digest_start) = (
            t.obs_info.bucket_name.clone(),
            t.project_id.clone(),
            s.digest_start,
        );
        // Reading the key (SQLite) and signing: off the async workers.
        let digests = self
            .with_state(move |st| {
                let key = signing_key(st, end)?;
                Ok(links
                    .into_iter()
                    .map(|(chain, previous, log_files)| {
                        let digest = build_digest(
                            DigestSpec {
                                bucket: &bucket,
                                path: &path,
                                project_id: &project,
                                service: (!chain.is_empty()).then_some(chain.as_str()),
                                start: previous.as_ref().map_or(digest_start, |p| p.end_time),
                                end,
                                ending,
                                previous: previous.as_ref(),
                                log_files,
                            },
                            &key,
                        );
                        (chain, digest)
                    })
                    .collect::<Vec<_>>())
            })
            .await?;
        for (chain, digest) in digests {
            self.storage
                .put(
                    &t.obs_info.bucket_name,
                    &digest.key,
                    Bytes::clone(&digest.body),
                    &digest.metadata(),
                )
                .await
                .map_err(write)?;
            s.chains.insert(chain.clone(), digest.link());
            s.pending.remove(&chain);
        }
        Ok(())
    }
}

/// A file being filled.
#[derive(Default)]
struct Part {
    docs: Vec<Vec<u8>>,
    bytes: usize,
    /// The number of the next part of this chain in the period.
    next: u32,
}

impl Part {
    /// The files of the traces held, this chain's next parts; empties it.
    fn take_files(
        &mut self,
        t: &Tracker,
        path: &TrackerPath,
        chain: &str,
        period: Period,
        options: &TraceFileOptions,
    ) -> FilesSpec {
        let docs = std::mem::take(&mut self.docs);
        self.bytes = 0;
        let first_part = self.next;
        self.next += file_count(&docs, options.limits);
        FilesSpec {
            path: path.clone(),
            project: t.project_id.clone(),
            chain: chain.to_string(),
            period,
            docs,
            options: TraceFileOptions {
                first_part,
                ..options.clone()
            },
        }
    }
}

fn write(e: cts_archive::StoreError) -> Failed {
    Failed::Write(WriteError::from(e))
}

/// Whether a trace goes to `t`'s files.
fn belongs(t: &Tracker, m: &Meta<'_>) -> bool {
    t.records(m.project_id, m.trace_type, m.tracker_name, m.service_type)
}
