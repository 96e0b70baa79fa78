//! The durable state of the transfer (`DATA_DIR/transfer/transfer.db`):
//! per tracker, the journal cursor up to which its traces are in files, the
//! next period to write, the trace files not yet in a digest and the last
//! digest of each chain; and the digest signing keys.
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
