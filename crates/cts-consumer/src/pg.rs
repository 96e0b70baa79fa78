//! The consumer state on PostgreSQL: one connection per process (the
//! consumers' statements are few and short; SQLite serialises them the
//! same way), made again when the server dropped it, and the versioned
//! migrations of the consumer tables.
//!
//! Migrations are a list: version `n` is `MIGRATIONS[n - 1]`, applied once
//! and recorded in `consumer_schema_migrations`, all in one transaction
//! that holds that table locked, so nodes starting together apply each
//! version once. A database with a version this build does not know is
//! refused rather than written by older code.

use std::cell::RefCell;

use std::ops::DerefMut;

use parking_lot::{Mutex, MutexGuard};
use postgres::{Client, NoTls};

use crate::sql::{Arg, Sql};
use crate::ConsumerError;

/// The consumer tables, version by version. Never edit a released entry:
/// add one.
const MIGRATIONS: &[&str] = &["
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
);
"];

/// A connection to PostgreSQL: one of its own, or one taken from a pool
/// the caller keeps (with its TLS and timeouts).
pub type PgConnection = Box<dyn DerefMut<Target = Client> + Send>;

/// Makes a [`PgConnection`]; called again when the server dropped the last.
pub type PgConnector = Box<dyn Fn() -> Result<PgConnection, ConsumerError> + Send + Sync>;

pub(crate) struct Pg {
    connect: PgConnector,
    client: Mutex<Option<PgConnection>>,
}

impl Pg {
    /// A connector of plain (unencrypted) connections to `url`.
    pub(crate) fn plain(url: &str) -> Result<PgConnector, ConsumerError> {
        let config: postgres::Config = url.parse()?;
        Ok(Box::new(move || {
            Ok(Box::new(Box::new(config.connect(NoTls)?)) as PgConnection)
        }))
    }

    /// Connects and brings the consumer tables to this build's version.
    pub(crate) fn connect(connect: PgConnector) -> Result<Pg, ConsumerError> {
        let pg = Pg {
            connect,
            client: Mutex::new(None),
        };
        pg.transaction(migrate)?;
        Ok(pg)
    }

    /// Runs `f` on the connection (each statement commits by itself).
    pub(crate) fn read<R>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<R, ConsumerError>,
    ) -> Result<R, ConsumerError> {
        let mut client = self.client()?;
        let conn: &mut Client = client.as_mut().expect("connected");
        f(&RefCell::new(conn))
    }

    /// Runs `f` in one transaction, committed when it succeeds.
    pub(crate) fn transaction<R>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<R, ConsumerError>,
    ) -> Result<R, ConsumerError> {
        let mut client = self.client()?;
        let mut tx = client.as_mut().expect("connected").transaction()?;
        let out = f(&RefCell::new(&mut tx))?;
        tx.commit()?;
        Ok(out)
    }

    /// The connection, made again when there is none or the server
    /// closed it.
    fn client(&self) -> Result<MutexGuard<'_, Option<PgConnection>>, ConsumerError> {
        let mut client = self.client.lock();
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            *client = Some((self.connect)()?);
        }
        Ok(client)
    }
}

/// Closing a client blocks on its own runtime, which panics on an async
/// worker (where the last `Arc` of the store may well be dropped, e.g. as
/// the server stops): the connection is closed on a thread of its own.
impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(conn) = self.client.get_mut().take() {
            let _ = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(conn));
        }
    }
}

fn migrate(sql: &dyn Sql) -> Result<(), ConsumerError> {
    sql.exec(
        "CREATE TABLE IF NOT EXISTS consumer_schema_migrations (
             version INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
        &[],
    )?;
    sql.exec(
        "LOCK TABLE consumer_schema_migrations IN EXCLUSIVE MODE",
        &[],
    )?;
    let found = sql
        .query(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM consumer_schema_migrations",
            &[],
        )?
        .first()
        .and_then(|r| r.first().and_then(|v| v.int()))
        .unwrap_or(0);
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(ConsumerError::NewerSchema { found, known });
    }
    for (version, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        for statement in step.split(';').filter(|s| !s.trim().is_empty()) {
            sql.exec(statement, &[])?;
        }
        sql.exec(
            "INSERT INTO consumer_schema_migrations (version) VALUES ($1::BIGINT::INTEGER)",
            &[Arg::Int(version as i64 + 1)],
        )?;
    }
    Ok(())
}
