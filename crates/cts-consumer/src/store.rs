//! The consumer state store, on either backend: SQLite (`consumers.db`,
//! WAL, `synchronous = FULL`) for the embedded node, or PostgreSQL shared
//! by every node. A commit is durable when it returns on both.
//!
//! Per `(consumer, key)`: the journal cursor (every trace up to it is
//! decided) and the consumer's own body as JSON. A journal mark
//! `(period start, seq)` says: no trace recorded at or after the period
//! start has a sequence number at or below `seq` (it is the durable
//! sequence number read before that start). Marks belong to no consumer:
//! any consumer that begins at a period searches its first trace forward
//! from one ([`crate::start_cursor`]).
//!
//! On PostgreSQL a key's state is written only under its lease
//! ([`ConsumerStore::claim`], see `lease`); on SQLite the one node holds
//! every lease. The queries are the same on both (`sql`).

use std::path::Path;
use std::time::Duration;

use cts_db::{columns, Arg, Db, PgMigration, PgSchema, Sql, Val};
use cts_sqlite::{Migrations, M};
use cts_store::TraceStore;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::lease::{LeaseSettings, Leases};
use crate::ConsumerError;

const SCHEMA: &str = "
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
";

/// The consumer tables on PostgreSQL, with the leases. Never edit a
/// released entry: add one.
pub const PG_SCHEMA: PgSchema = PgSchema {
    ledger: "cts_consumer_migrations",
    migrations: &[PgMigration {
        version: 1,
        name: "cursors, journal marks, leases",
        sql: "
CREATE TABLE cursors (
    consumer TEXT NOT NULL,
    key TEXT NOT NULL,
    cursor BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (consumer, key)
);
CREATE TABLE journal_marks (
    period_start BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL
);
CREATE TABLE leases (
    consumer TEXT NOT NULL,
    key TEXT NOT NULL,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, key)
);",
    }],
};

/// The file name of the store in its directory (`DATA_DIR/consumers`).
pub const FILE: &str = "consumers.db";

/// The consumer tables on SQLite.
pub fn sqlite_migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(SCHEMA)])
}

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
    db: Db,
    /// None: the embedded store, whose one node holds every lease.
    leases: Option<Leases>,
    /// When (Unix seconds) [`ConsumerStore::mark`] last wrote a mark.
    marked_at: Mutex<i64>,
}

/// The writes of one transaction ([`ConsumerStore::transaction`]).
pub struct Tx<'a> {
    sql: &'a dyn Sql,
    leases: Option<&'a Leases>,
}

impl ConsumerStore {
    /// Opens (or creates) `dir/consumers.db`: the embedded node's store.
    pub fn open(dir: &Path) -> Result<ConsumerStore, ConsumerError> {
        let db = Db::sqlite(dir, FILE, &sqlite_migrations())?;
        Ok(ConsumerStore::with(db, None))
    }

    /// The store on `db`: the SQLite file [`FILE`] opened with
    /// [`sqlite_migrations`], or PostgreSQL opened with [`PG_SCHEMA`],
    /// shared by every node, where this node works under leases in the
    /// name `node` (see [`crate::node_id`]).
    pub fn new(
        db: Db,
        node: String,
        settings: LeaseSettings,
    ) -> Result<ConsumerStore, ConsumerError> {
        if !db.is_postgres() {
            return Ok(ConsumerStore::with(db, None));
        }
        settings.check()?;
        Ok(ConsumerStore::with(db, Some(Leases::new(node, settings))))
    }

    /// The store on PostgreSQL at `url`, on a pool of its own (plain
    /// connections), migrating its tables.
    pub fn connect(
        url: &str,
        node: String,
        settings: LeaseSettings,
    ) -> Result<ConsumerStore, ConsumerError> {
        let url: cts_db::PgUrl = url
            .parse()
            .map_err(|e| cts_db::DbError::Setting(format!("{e}")))?;
        let pool = cts_db::PgSettings::new(url).connect()?;
        ConsumerStore::new(Db::postgres(pool, &PG_SCHEMA, true)?, node, settings)
    }

    fn with(db: Db, leases: Option<Leases>) -> ConsumerStore {
        ConsumerStore {
            db,
            leases,
            marked_at: Mutex::new(i64::MIN),
        }
    }

    /// The state of `consumer` for `key`.
    pub fn get<T: DeserializeOwned>(
        &self,
        consumer: &str,
        key: &str,
    ) -> Result<Option<Entry<T>>, ConsumerError> {
        self.db.read(|sql| get(sql, consumer, key))
    }

    /// Every key of `consumer` with its state, by key.
    pub fn all<T: DeserializeOwned>(
        &self,
        consumer: &str,
    ) -> Result<Vec<(String, Entry<T>)>, ConsumerError> {
        let rows = self.db.read(|sql| {
            sql.query(
                "SELECT key, cursor, body FROM cursors WHERE consumer = $1 ORDER BY key",
                &[Arg::Text(consumer)],
            )
        })?;
        rows.into_iter()
            .map(|row| {
                let [key, cursor, body] = columns(row)?;
                let key = key.into_text()?;
                let entry = entry(consumer, &key, cursor, body)?;
                Ok((key, entry))
            })
            .collect()
    }

    /// Commits the state of `consumer` for `key` (durable when it returns).
    /// On PostgreSQL only while this node holds the key's lease.
    pub fn put<T: Serialize>(
        &self,
        consumer: &str,
        key: &str,
        entry: &Entry<T>,
    ) -> Result<(), ConsumerError> {
        self.transaction(|tx| tx.put(consumer, key, entry))
    }

    /// Drops the state of `consumer` for `key`, and its lease.
    pub fn forget(&self, consumer: &str, key: &str) -> Result<(), ConsumerError> {
        self.transaction(|tx| tx.forget(consumer, key))
    }

    /// Runs `f` in one transaction: everything it writes is committed
    /// together (durable when this returns), or nothing when it fails.
    pub fn transaction<R>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<R, ConsumerError>,
    ) -> Result<R, ConsumerError> {
        self.db.transaction(|sql| {
            f(&Tx {
                sql,
                leases: self.leases.as_ref(),
            })
        })
    }

    /// The lowest cursor of `consumer`, if it has any key.
    pub fn min_cursor(&self, consumer: &str) -> Result<Option<u64>, ConsumerError> {
        let rows = self.db.read(|sql| {
            sql.query(
                "SELECT MIN(cursor) FROM cursors WHERE consumer = $1",
                &[Arg::Text(consumer)],
            )
        })?;
        Ok(first_int(&rows)?.map(|m| m as u64))
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

    /// Holds `journal` for every consumer from its lowest cursor as the
    /// shared store has it now. A consumer moves its own hold as it
    /// commits, on the node that holds its lease; the other nodes' holds
    /// of it stay where they were when last set (at their start, say), so
    /// retention, which runs on one node, calls this before each pass to
    /// see where every consumer stands.
    pub fn hold_all(&self, journal: &dyn TraceStore) -> Result<(), ConsumerError> {
        let rows = self.db.read(|sql| {
            sql.query(
                "SELECT consumer, MIN(cursor) FROM cursors GROUP BY consumer",
                &[],
            )
        })?;
        for row in rows {
            let [consumer, min] = columns(row)?;
            journal.hold_journal(&consumer.into_text()?, min.int()? as u64);
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
            tx.sql.exec(
                "DELETE FROM journal_marks WHERE period_start < $1",
                &[Arg::Int(now - keep_secs)],
            )?;
            Ok(())
        })?;
        *marked_at = now;
        Ok(())
    }

    /// The best mark for traces recorded at or after `at` (Unix seconds):
    /// that of the latest period start at or before it.
    pub fn journal_mark(&self, at: i64) -> Result<Option<u64>, ConsumerError> {
        let rows = self.db.read(|sql| {
            sql.query(
                "SELECT seq FROM journal_marks WHERE period_start <= $1 \
                 ORDER BY period_start DESC LIMIT 1",
                &[Arg::Int(at)],
            )
        })?;
        Ok(first_int(&rows)?.map(|s| s as u64))
    }

    /// Every journal mark, `(period start, seq)`, by period start.
    pub fn marks(&self) -> Result<Vec<(i64, u64)>, ConsumerError> {
        let rows = self.db.read(|sql| {
            sql.query(
                "SELECT period_start, seq FROM journal_marks ORDER BY period_start",
                &[],
            )
        })?;
        rows.into_iter()
            .map(|row| {
                let [start, seq] = columns(row)?;
                Ok((start.int()?, seq.int()? as u64))
            })
            .collect()
    }

    /// Whether this node may work `key` of `consumer`: it holds the key's
    /// lease, or took it now (free, or expired). Always so on the embedded
    /// store. Read the key's state after a claim, never before.
    pub fn claim(&self, consumer: &str, key: &str) -> Result<bool, ConsumerError> {
        match &self.leases {
            None => Ok(true),
            Some(leases) => self.db.read(|sql| leases.claim(sql, consumer, key)),
        }
    }

    /// Renews the leases this node holds (call it every
    /// [`ConsumerStore::renew_every`]); those another node took over are
    /// dropped, and their writes fail from then on.
    pub fn renew(&self) -> Result<(), ConsumerError> {
        match &self.leases {
            None => Ok(()),
            Some(leases) => self.db.read(|sql| leases.renew(sql)),
        }
    }

    /// Gives up every lease of this node (at stop), for others to take at
    /// once.
    pub fn release(&self) -> Result<(), ConsumerError> {
        match &self.leases {
            None => Ok(()),
            Some(leases) => self.db.read(|sql| leases.release(sql)),
        }
    }

    /// How often [`ConsumerStore::renew`] must run; None when there is
    /// nothing to renew (the embedded store).
    pub fn renew_every(&self) -> Option<Duration> {
        self.leases.as_ref().map(|l| l.settings().renew_every)
    }

    /// This node's name in the leases; None on the embedded store.
    pub fn node(&self) -> Option<&str> {
        self.leases.as_ref().map(Leases::node)
    }
}

impl Tx<'_> {
    /// The state of `consumer` for `key`, as this transaction sees it.
    pub fn get<T: DeserializeOwned>(
        &self,
        consumer: &str,
        key: &str,
    ) -> Result<Option<Entry<T>>, ConsumerError> {
        get(self.sql, consumer, key)
    }

    /// Writes the state of `consumer` for `key`; fails with
    /// [`ConsumerError::LeaseLost`] unless this node holds the key's lease.
    pub fn put<T: Serialize>(
        &self,
        consumer: &str,
        key: &str,
        entry: &Entry<T>,
    ) -> Result<(), ConsumerError> {
        if let Some(leases) = self.leases {
            leases.fence(self.sql, consumer, key)?;
        }
        let body = body(consumer, key, &entry.body)?;
        self.sql.exec(
            "INSERT INTO cursors (consumer, key, cursor, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (consumer, key) DO UPDATE SET cursor = excluded.cursor, body = excluded.body",
            &[
                Arg::Text(consumer),
                Arg::Text(key),
                Arg::Int(entry.cursor as i64),
                Arg::Text(&body),
            ],
        )?;
        Ok(())
    }

    /// Writes the state of `consumer` for `key` unless it has one (an
    /// import that may run twice, before any node works the key). Answers
    /// whether it wrote.
    pub fn put_new<T: Serialize>(
        &self,
        consumer: &str,
        key: &str,
        entry: &Entry<T>,
    ) -> Result<bool, ConsumerError> {
        let body = body(consumer, key, &entry.body)?;
        let n = self.sql.exec(
            "INSERT INTO cursors (consumer, key, cursor, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (consumer, key) DO NOTHING",
            &[
                Arg::Text(consumer),
                Arg::Text(key),
                Arg::Int(entry.cursor as i64),
                Arg::Text(&body),
            ],
        )?;
        Ok(n == 1)
    }

    /// Drops the state of `consumer` for `key` and its lease: a node still
    /// working the key fails its next write.
    pub fn forget(&self, consumer: &str, key: &str) -> Result<(), ConsumerError> {
        self.sql.exec(
            "DELETE FROM cursors WHERE consumer = $1 AND key = $2",
            &[Arg::Text(consumer), Arg::Text(key)],
        )?;
        if let Some(leases) = self.leases {
            leases.forget(self.sql, consumer, key)?;
        }
        Ok(())
    }

    /// Records that no trace recorded at or after `period_start` is at or
    /// below `seq` (keeps the higher of two marks of one start).
    pub fn mark_journal(&self, period_start: i64, seq: u64) -> Result<(), ConsumerError> {
        self.sql.exec(
            "INSERT INTO journal_marks (period_start, seq) VALUES ($1, $2) \
             ON CONFLICT (period_start) DO UPDATE SET seq = excluded.seq \
             WHERE excluded.seq > journal_marks.seq",
            &[Arg::Int(period_start), Arg::Int(seq as i64)],
        )?;
        Ok(())
    }
}

fn get<T: DeserializeOwned>(
    sql: &dyn Sql,
    consumer: &str,
    key: &str,
) -> Result<Option<Entry<T>>, ConsumerError> {
    let row = sql
        .query(
            "SELECT cursor, body FROM cursors WHERE consumer = $1 AND key = $2",
            &[Arg::Text(consumer), Arg::Text(key)],
        )?
        .into_iter()
        .next();
    row.map(|row| {
        let [cursor, body] = columns(row)?;
        entry(consumer, key, cursor, body)
    })
    .transpose()
}

/// The integer of the first column of the first row, if any (NULL: none).
fn first_int(rows: &[Vec<Val>]) -> Result<Option<i64>, ConsumerError> {
    match rows.first().and_then(|r| r.first()) {
        Some(v) => Ok(v.opt_int()?),
        None => Ok(None),
    }
}

fn entry<T: DeserializeOwned>(
    consumer: &str,
    key: &str,
    cursor: Val,
    body: Val,
) -> Result<Entry<T>, ConsumerError> {
    let cursor = cursor.int()?;
    let body = serde_json::from_str(body.text()?).map_err(|source| ConsumerError::Body {
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
