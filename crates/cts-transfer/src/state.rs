//! The durable state of the transfer (`DATA_DIR/transfer/transfer.db`):
//! per tracker, the journal cursor up to which its traces are in files, the
//! next period to write, the trace files not yet in a digest and the last
//! digest of each chain; the digest signing keys; and journal marks.
//!
//! A journal mark `(period start, seq)` says: no trace recorded at or after
//! the period start has a sequence number at or below `seq` (it is the
//! durable sequence number read before that start). A consumer that begins
//! at a period (a tracker that gained a bucket in it) searches its first
//! trace forward from the mark instead of from the journal's beginning.
//!
//! A period's files are uploaded first and its state is committed after, in
//! one transaction: a crash in between redoes the period, which writes the
//! same objects under the same names. That is what makes every trace land
//! in exactly one file.

use std::collections::BTreeMap;
use std::path::Path;

use cts_archive::{ChainLink, LogFile};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::TransferError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS trackers (
    tracker_id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS journal_marks (
    period_start INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS signing_keys (
    fingerprint TEXT PRIMARY KEY,
    private_pem TEXT NOT NULL,
    public_pem TEXT NOT NULL,
    valid_from INTEGER NOT NULL,
    valid_to INTEGER
);
";

/// Where one tracker's transfer stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerState {
    pub project_id: String,
    pub tracker_name: String,
    /// Every trace of the journal up to this sequence number is decided:
    /// in a file, or not the tracker's.
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

/// A digest signing key as stored.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub fingerprint: String,
    pub private_pem: String,
    pub public_pem: String,
    /// Unix seconds.
    pub valid_from: i64,
    pub valid_to: Option<i64>,
}

pub struct State {
    conn: Mutex<Connection>,
}

fn db(e: rusqlite::Error) -> TransferError {
    TransferError::State(e.to_string())
}

impl State {
    pub fn open(dir: &Path) -> Result<State, TransferError> {
        cts_fs::create_dir_all(dir)
            .map_err(|e| TransferError::State(format!("{}: {e}", dir.display())))?;
        let path = dir.join("transfer.db");
        // It holds the signing keys.
        cts_fs::create_private(&path)
            .map_err(|e| TransferError::State(format!("{}: {e}", path.display())))?;
        let conn = Connection::open(&path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        Ok(State {
            conn: Mutex::new(conn),
        })
    }

    pub fn tracker(&self, tracker_id: &str) -> Result<Option<TrackerState>, TransferError> {
        let body: Option<String> = self
            .conn
            .lock()
            .query_row(
                "SELECT body FROM trackers WHERE tracker_id = ?1",
                [tracker_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| TransferError::State(e.to_string())))
            .transpose()
    }

    pub fn all(&self) -> Result<Vec<(String, TrackerState)>, TransferError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT tracker_id, body FROM trackers")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        rows.into_iter()
            .map(|(id, body)| {
                let s =
                    serde_json::from_str(&body).map_err(|e| TransferError::State(e.to_string()))?;
                Ok((id, s))
            })
            .collect()
    }

    /// Commits a tracker's new state (fsync'd before it returns).
    pub fn save(&self, tracker_id: &str, state: &TrackerState) -> Result<(), TransferError> {
        let body = serde_json::to_string(state).map_err(|e| TransferError::State(e.to_string()))?;
        self.conn
            .lock()
            .execute(
                "INSERT INTO trackers (tracker_id, body) VALUES (?1, ?2) \
                 ON CONFLICT (tracker_id) DO UPDATE SET body = excluded.body",
                params![tracker_id, body],
            )
            .map_err(db)?;
        Ok(())
    }

    pub fn forget(&self, tracker_id: &str) -> Result<(), TransferError> {
        self.conn
            .lock()
            .execute("DELETE FROM trackers WHERE tracker_id = ?1", [tracker_id])
            .map_err(db)?;
        Ok(())
    }

    /// Records that no trace recorded at or after `period_start` is at or
    /// below `seq`, and forgets marks older than `keep_from`.
    pub fn mark_journal(
        &self,
        period_start: i64,
        seq: u64,
        keep_from: i64,
    ) -> Result<(), TransferError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO journal_marks (period_start, seq) VALUES (?1, ?2) \
             ON CONFLICT (period_start) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            params![period_start, seq as i64],
        )
        .map_err(db)?;
        conn.execute(
            "DELETE FROM journal_marks WHERE period_start < ?1",
            [keep_from],
        )
        .map_err(db)?;
        Ok(())
    }

    /// The best mark for traces recorded at or after `at`: that of the
    /// latest period start at or before it.
    pub fn journal_mark(&self, at: i64) -> Result<Option<u64>, TransferError> {
        self.conn
            .lock()
            .query_row(
                "SELECT seq FROM journal_marks WHERE period_start <= ?1 \
                 ORDER BY period_start DESC LIMIT 1",
                [at],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|seq| seq.map(|s| s as u64))
            .map_err(db)
    }

    pub fn keys(&self) -> Result<Vec<StoredKey>, TransferError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare(
                "SELECT fingerprint, private_pem, public_pem, valid_from, valid_to \
                 FROM signing_keys ORDER BY valid_from",
            )
            .map_err(db)?;
        let keys = stmt
            .query_map([], |r| {
                Ok(StoredKey {
                    fingerprint: r.get(0)?,
                    private_pem: r.get(1)?,
                    public_pem: r.get(2)?,
                    valid_from: r.get(3)?,
                    valid_to: r.get(4)?,
                })
            })
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        Ok(keys)
    }

    /// Ends the validity of the current key at `now` and adds `key`.
    pub fn rotate_to(&self, key: &StoredKey) -> Result<(), TransferError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(db)?;
        tx.execute(
            "UPDATE signing_keys SET valid_to = ?1 WHERE valid_to IS NULL",
            [key.valid_from],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO signing_keys (fingerprint, private_pem, public_pem, valid_from) \
             VALUES (?1, ?2, ?3, ?4)",
            params![
                key.fingerprint,
                key.private_pem,
                key.public_pem,
                key.valid_from
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }
}
