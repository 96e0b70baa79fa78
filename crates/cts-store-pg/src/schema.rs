//! Versioned schema migrations: an ordered list applied once each and
//! recorded in `cts_schema_migrations`.
//!
//! A list of our own rather than a migration crate: the schema is a few
//! statements, and several nodes may start at once on a new database, so
//! the runner must serialise them (the table lock below) and tell each
//! caller which versions it applied. Portable to PostgreSQL-compatible
//! engines: no advisory locks.

use postgres::error::SqlState;
use postgres::GenericClient;

use crate::PgError;

/// One schema change. Versions are consecutive from 1 and never edited
/// once released: a change is a new entry.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "traces partitioned by day, positions counter",
    sql: include_str!("migrations/0001_traces.sql"),
}];

/// The version the code expects.
pub fn current() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS cts_schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Applies the migrations not yet applied, in order, in one transaction;
/// returns those it applied (empty when the schema was current). A node
/// starting at the same time waits on the ledger's lock and then finds
/// nothing left to do.
pub fn migrate(client: &mut postgres::Client) -> Result<Vec<&'static Migration>, PgError> {
    create_ledger(client)?;
    let mut tx = client.transaction()?;
    tx.batch_execute("LOCK TABLE cts_schema_migrations IN EXCLUSIVE MODE")?;
    let applied = applied_version(&mut tx)?;
    check_known(applied)?;
    let mut done = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > applied) {
        tx.batch_execute(m.sql)?;
        tx.execute(
            "INSERT INTO cts_schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )?;
        done.push(m);
    }
    tx.commit()?;
    Ok(done)
}

/// Fails unless the schema is exactly the one the code expects (a start
/// with `store.auto_migrate = false`).
pub fn check_current(client: &mut postgres::Client) -> Result<(), PgError> {
    let applied = match applied_version(client) {
        Err(PgError::Database(e)) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => 0,
        other => other?,
    };
    check_known(applied)?;
    if applied < current() {
        return Err(PgError::SchemaBehind {
            applied,
            expected: current(),
        });
    }
    Ok(())
}

fn check_known(applied: i32) -> Result<(), PgError> {
    if applied > current() {
        return Err(PgError::SchemaAhead {
            applied,
            expected: current(),
        });
    }
    Ok(())
}

fn applied_version(client: &mut impl GenericClient) -> Result<i32, PgError> {
    let row = client.query_one(
        "SELECT coalesce(max(version), 0) FROM cts_schema_migrations",
        &[],
    )?;
    Ok(row.get(0))
}

/// `CREATE TABLE IF NOT EXISTS` is not safe against a concurrent twin (both
/// may insert the catalog row); the loser retries and finds the table.
fn create_ledger(client: &mut postgres::Client) -> Result<(), PgError> {
    for _ in 0..3 {
        match client.batch_execute(LEDGER) {
            Err(e)
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                    || e.code() == Some(&SqlState::DUPLICATE_TABLE)
                    // The twin's row type, created first ("type … already exists").
                    || e.code() == Some(&SqlState::DUPLICATE_OBJECT) =>
            {
                continue
            }
            other => return Ok(other?),
        }
    }
    Ok(client.batch_execute(LEDGER)?)
}
