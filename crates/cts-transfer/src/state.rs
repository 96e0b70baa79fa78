//! The durable state of the transfer. Per tracker, in the shared consumer
//! state (`cts_consumer::ConsumerStore`, consumer [`crate::CONSUMER`], key
//! the tracker id): the journal cursor up to which its traces are in files
//! and, as the body, the next period to write, the trace files not yet in a
//! digest and the last digest of each chain. The digest signing keys stay
//! in `DATA_DIR/transfer/transfer.db` or in PostgreSQL (`keys`).
//!
//! A period's files are uploaded first and its state is committed after, in
//! one transaction: a crash in between redoes the period, which writes the
//! same objects under the same names. That is what makes every trace land
//! in exactly one file.
//!
//! Data directories from before the consumer store kept the tracker state
//! and the journal marks in `transfer.db`: [`State::open`] moves them over
//! (idempotently: copied where absent, then deleted from the old file).

use std::collections::BTreeMap;
use std::sync::Arc;

use cts_archive::{ChainLink, LogFile};
use cts_consumer::{ConsumerStore, Entry};
use cts_db::{DbError, Sql};
use serde::{Deserialize, Serialize};

use crate::keys::Keys;
use crate::{TransferError, CONSUMER};

/// Where one tracker's transfer stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerState {
    pub project_id: String,
    pub tracker_name: String,
    /// Every trace of the journal up to this sequence number is decided:
    /// in a file, or not the tracker's. Stored as the consumer cursor.
    #[serde(skip)]
    pub cursor: u64,
    /// Start (Unix seconds) of the next period to write.
    pub next_period: i64,
    /// Start of the window the next digests cover.
    pub digest_start: i64,
    /// Trace files written since the last digest, per chain (service type,
    /// or `""` without `is_sort_by_service`).
    pub pending: BTreeMap<String, Vec<LogFile>>,
    /// The last digest of each chain.
    pub chains: BTreeMap<String, ChainLink>,
    /// Consecutive failed attempts, for the backoff.
    pub failures: u32,
    /// Unix seconds before which no attempt is made.
    pub retry_at: i64,
    /// Set when the tracker was found disabled: the end of the last period
    /// to write (it recorded nothing after), then the chains end.
    #[serde(default)]
    pub until: Option<i64>,
}

pub struct State {
    pub consumers: Arc<ConsumerStore>,
    pub keys: Keys,
}

impl State {
    /// Takes the signing keys and moves tracker state and journal marks
    /// an older version left in their SQLite file into `consumers`.
    pub fn open(keys: Keys, consumers: Arc<ConsumerStore>) -> Result<State, TransferError> {
        if !keys.db.is_postgres() {
            keys.db.read(|conn| migrate(conn, &consumers))?;
        }
        Ok(State { consumers, keys })
    }

    pub fn tracker(&self, tracker_id: &str) -> Result<Option<TrackerState>, TransferError> {
        Ok(self
            .consumers
            .get::<TrackerState>(CONSUMER, tracker_id)?
            .map(with_cursor))
    }

    pub fn all(&self) -> Result<Vec<(String, TrackerState)>, TransferError> {
        Ok(self
            .consumers
            .all::<TrackerState>(CONSUMER)?
            .into_iter()
            .map(|(id, e)| (id, with_cursor(e)))
            .collect())
    }

    /// Commits a tracker's new state (fsync'd before it returns).
    pub fn save(&self, tracker_id: &str, state: &TrackerState) -> Result<(), TransferError> {
        let entry = Entry {
            cursor: state.cursor,
            body: state,
        };
        Ok(self.consumers.put(CONSUMER, tracker_id, &entry)?)
    }

    pub fn forget(&self, tracker_id: &str) -> Result<(), TransferError> {
        Ok(self.consumers.forget(CONSUMER, tracker_id)?)
    }
}

fn with_cursor(e: Entry<TrackerState>) -> TrackerState {
    TrackerState {
        cursor: e.cursor,
        ..e.body
    }
}

/// Moves the `trackers` and `journal_marks` rows of an old `transfer.db`
/// into the consumer store. Copied first (a row the store already has is
/// newer and stays), deleted after: a crash in between copies nothing twice.
fn migrate(old: &dyn Sql, consumers: &ConsumerStore) -> Result<(), TransferError> {
    let has_trackers = old
        .query_opt(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'trackers'",
            &[],
        )
        .map_err(db)?
        .is_some();
    if !has_trackers {
        return Ok(());
    }
    let trackers = old
        .query("SELECT tracker_id, body FROM trackers", &[])
        .and_then(|rows| {
            rows.into_iter()
                .map(|r| Ok((r[0].text()?.to_owned(), r[1].text()?.to_owned())))
                .collect::<Result<Vec<_>, DbError>>()
        })
        .map_err(db)?;
    let marks = old
        .query("SELECT period_start, seq FROM journal_marks", &[])
        .and_then(|rows| {
            rows.into_iter()
                .map(|r| Ok((r[0].int()?, r[1].int()?)))
                .collect::<Result<Vec<_>, DbError>>()
        })
        .map_err(db)?;
    if trackers.is_empty() && marks.is_empty() {
        return Ok(());
    }
    consumers.transaction(|tx| {
        for (id, body) in &trackers {
            let mut body: serde_json::Value =
                serde_json::from_str(body).map_err(|source| cts_consumer::ConsumerError::Body {
                    consumer: CONSUMER.into(),
                    key: id.clone(),
                    source,
                })?;
            let cursor = body
                .as_object_mut()
                .and_then(|o| o.remove("cursor"))
                .and_then(|c| c.as_u64())
                .unwrap_or(0);
            tx.put_new(CONSUMER, id, &Entry { cursor, body })?;
        }
        for (start, seq) in &marks {
            tx.mark_journal(*start, *seq as u64)?;
        }
        Ok(())
    })?;
    old.exec("DELETE FROM trackers", &[]).map_err(db)?;
    old.exec("DELETE FROM journal_marks", &[]).map_err(db)?;
    tracing::info!(
        trackers = trackers.len(),
        marks = marks.len(),
        "moved the transfer state into the consumer store"
    );
    Ok(())
}

pub(crate) fn db(e: DbError) -> TransferError {
    TransferError::State(e.to_string())
}
