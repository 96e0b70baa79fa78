//! The consumer state store: `consumers.db` (SQLite, WAL, `synchronous =
//! FULL`, so a commit is durable when it returns).
//!
//! Per `(consumer, key)`: the journal cursor (every trace up to it is
//! decided) and the consumer's own body as JSON. A journal mark
//! `(period start, seq)` says: no trace recorded at or after the period
//! start has a sequence number at or below `seq` (it is the durable
//! sequence number read before that start). Marks belong to no consumer:
//! any consumer that begins at a period searches its first trace forward
//! from one ([`crate::start_cursor`]).

use std::path::Path;

use cts_store::TraceStore;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ConsumerError;

const SCHEMA: cts_sqlite::Schema<'static> = cts_sqlite::Schema {
    version: 1,
    sql: "
CREATE TABLE IF NOT EXISTS cursors (
    consumer TEXT NOT NULL,
    key TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (consumer, key)
);
CREATE TABLE IF NOT EXISTS journal_marks (
    period_start INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL
);
",
};

/// The file name of the store in its directory (`DATA_DIR/consumers`).
pub const FILE: &str = "consumers.db";

/// Lead of the next mark over the clock: `now` is read a moment before
/// the durable sequence number, so a period start closer than this is left
/// to the next mark.
const MARK_LEAD_SECS: i64 = 2;

/// One consumer's state for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    /// Every journal trace up to this sequence number is decided.
    pub cursor: u64,
    /// The consumer's own state.
    pub body: T,
}

/// The durable state of every journal consumer. Blocking: use it from
/// `spawn_blocking`.
pub struct ConsumerStore {
    conn: Mutex<Connection>,
    /// When (Unix seconds) [`ConsumerStore::mark`] last wrote a mark.
    marked_at: Mutex<i64>,
}

/// The writes of one transaction ([`ConsumerStore::transaction`]).
pub struct Tx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
}

impl ConsumerStore {
    /// Opens (or creates) `dir/consumers.db`.
    pub fn open(dir: &Path) -> Result<ConsumerStore, ConsumerError> {
        let conn = cts_sqlite::open(dir, FILE, SCHEMA)?;
        Ok(ConsumerStore {
            conn: Mutex::new(conn),
            marked_at: Mutex::new(i64::MIN),
        })
    }

    /// The state of `consumer` for `key`.
    pub fn get<T: DeserializeOwned>(
        &self,
        consumer: &str,
        key: &str,
    ) -> Result<Option<Entry<T>>, ConsumerError> {
        let conn = self.conn.lock();
        get(&conn, consumer, key)
    }

    /// Every key of `consumer` with its state, by key.
    pub fn all<T: DeserializeOwned>(
        &self,
        consumer: &str,
    ) -> Result<Vec<(String, Entry<T>)>, ConsumerError> {
        let conn = self.conn.lock();
        let mut stmt =
            conn.prepare("SELECT key, cursor, body FROM cursors WHERE consumer = ?1 ORDER BY key")?;
        let rows = stmt
            .query_map([consumer], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(key, cursor, body)| {
                let entry = entry(consumer, &key, cursor, &body)?;
                Ok((key, entry))
            })
            .collect()
    }

    /// Commits the state of `consumer` for `key` (durable when it returns).
    pub fn put<T: Serialize>(
        &self,
        consumer: &str,
        key: &str,
        entry: &Entry<T>,
    ) -> Result<(), ConsumerError> {
        self.transaction(|tx| tx.put(consumer, key, entry))
    }

    /// Drops the state of `consumer` for `key`.
    pub fn forget(&self, consumer: &str, key: &str) -> Result<(), ConsumerError> {
        self.transaction(|tx| tx.forget(consumer, key))
    }

    /// Runs `f` in one transaction: everything it writes is committed
    /// together (durable when this returns), or nothing when it fails.
    pub fn transaction<R>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<R, ConsumerError>,
    ) -> Result<R, ConsumerError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let out = f(&Tx { tx: &tx })?;
        tx.commit()?;
        Ok(out)
    }

    /// The lowest cursor of `consumer`, if it has any key.
    pub fn min_cursor(&self, consumer: &str) -> Result<Option<u64>, ConsumerError> {
        let min: Option<i64> = self.conn.lock().query_row(
            "SELECT MIN(cursor) FROM cursors WHERE consumer = ?1",
            [consumer],
            |r| r.get(0),
        )?;
        Ok(min.map(|m| m as u64))
    }

    /// Holds `journal` for `consumer` from its lowest cursor (releases it
    /// when the consumer has no key left). Call it at start, before
    /// retention runs, and after each commit that moves a cursor.
    pub fn hold(&self, journal: &dyn TraceStore, consumer: &str) -> Result<(), ConsumerError> {
        match self.min_cursor(consumer)? {
            Some(min) => journal.hold_journal(consumer, min),
            None => journal.release_journal(consumer),
        }
        Ok(())
    }

    /// Marks the journal for the next start of a `period_secs` grid:
    /// nothing recorded from then on is at or below the sequence number
    /// durable now. Writes at most one mark per tenth of a period (any
    /// consumer may call it on every pass), and forgets marks older than
    /// `keep_secs`.
    pub fn mark(
        &self,
        journal: &dyn TraceStore,
        now: i64,
        period_secs: i64,
        keep_secs: i64,
    ) -> Result<(), ConsumerError> {
        let p = period_secs.max(1);
        let mut marked_at = self.marked_at.lock();
        if now < marked_at.saturating_add((p / 10).max(1)) {
            return Ok(());
        }
        let start = (now + MARK_LEAD_SECS).div_euclid(p) * p + p;
        let seq = journal.stats().journal_seq;
        self.transaction(|tx| {
            tx.mark_journal(start, seq)?;
            tx.tx.execute(
                "DELETE FROM journal_marks WHERE period_start < ?1",
                [now - keep_secs],
            )?;
            Ok(())
        })?;
        *marked_at = now;
        Ok(())
    }

    /// The best mark for traces recorded at or after `at` (Unix seconds):
    /// that of the latest period start at or before it.
    pub fn journal_mark(&self, at: i64) -> Result<Option<u64>, ConsumerError> {
        Ok(self
            .conn
            .lock()
            .query_row(
                "SELECT seq FROM journal_marks WHERE period_start <= ?1 \
                 ORDER BY period_start DESC LIMIT 1",
                [at],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|s| s as u64))
    }
}

impl Tx<'_> {
    /// The state of `consumer` for `key`, as this transaction sees it.
    pub fn get<T: DeserializeOwned>(
        &self,
        consumer: &str,
        key: &str,
    ) -> Result<Option<Entry<T>>, ConsumerError> {
        get(self.tx, consumer, key)
    }

    /// Writes the state of `consumer` for `key`.
    pub fn put<T: Serialize>(
        &self,
        consumer: &str,
        key: &str,
        entry: &Entry<T>,
    ) -> Result<(), ConsumerError> {
        let body = body(consumer, key, &entry.body)?;
        self.tx.execute(
            "INSERT INTO cursors (consumer, key, cursor, body) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (consumer, key) DO UPDATE SET cursor = excluded.cursor, body = excluded.body",
            params![consumer, key, entry.cursor as i64, body],
        )?;
        Ok(())
    }

    /// Writes the state of `consumer` for `key` unless it has one (an
    /// import that may run twice). Answers whether it wrote.
    pub fn put_new<T: Serialize>(
        &self,
        consumer: &str,
        key: &str,
        entry: &Entry<T>,
    ) -> Result<bool, ConsumerError> {
        let body = body(consumer, key, &entry.body)?;
        let n = self.tx.execute(
            "INSERT INTO cursors (consumer, key, cursor, body) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (consumer, key) DO NOTHING",
            params![consumer, key, entry.cursor as i64, body],
        )?;
        Ok(n == 1)
    }

    /// Drops the state of `consumer` for `key`.
    pub fn forget(&self, consumer: &str, key: &str) -> Result<(), ConsumerError> {
        self.tx.execute(
            "DELETE FROM cursors WHERE consumer = ?1 AND key = ?2",
            params![consumer, key],
        )?;
        Ok(())
    }

    /// Records that no trace recorded at or after `period_start` is at or
    /// below `seq` (keeps the higher of two marks of one start).
    pub fn mark_journal(&self, period_start: i64, seq: u64) -> Result<(), ConsumerError> {
        self.tx.execute(
            "INSERT INTO journal_marks (period_start, seq) VALUES (?1, ?2) \
             ON CONFLICT (period_start) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            params![period_start, seq as i64],
        )?;
        Ok(())
    }
}

fn get<T: DeserializeOwned>(
    conn: &Connection,
    consumer: &str,
    key: &str,
) -> Result<Option<Entry<T>>, ConsumerError> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT cursor, body FROM cursors WHERE consumer = ?1 AND key = ?2",
            params![consumer, key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(cursor, body)| entry(consumer, key, cursor, &body))
        .transpose()
}

fn entry<T: DeserializeOwned>(
    consumer: &str,
    key: &str,
    cursor: i64,
    body: &str,
) -> Result<Entry<T>, ConsumerError> {
    let body = serde_json::from_str(body).map_err(|source| ConsumerError::Body {
        consumer: consumer.into(),
        key: key.into(),
        source,
    })?;
    Ok(Entry {
        cursor: cursor as u64,
        body,
    })
}

fn body<T: Serialize>(consumer: &str, key: &str, body: &T) -> Result<String, ConsumerError> {
    serde_json::to_string(body).map_err(|source| ConsumerError::Body {
        consumer: consumer.into(),
        key: key.into(),
        source,
    })
}
