//! The one PostgreSQL migration runner: every schema (traces, consumer
//! state, identities, …) is an ordered list of migrations applied once each
//! and recorded in that schema's own ledger table.
//!
//! A runner of our own rather than a migration crate: several nodes may
//! start at once on a new database, so it must serialise them (the ledger's
//! table lock) and tell each caller which versions it applied. Portable to
//! PostgreSQL-compatible engines: no advisory locks.

use postgres::error::SqlState;
use postgres::GenericClient;

use crate::{DbError, Pool};

/// One schema change. Versions are consecutive from 1 and never edited
/// once released: a change is a new entry.
#[derive(Debug)]
pub struct PgMigration {
    pub version: i32,
    pub name: &'static str,
    /// One or more statements, run in the migration's transaction.
    pub sql: &'static str,
}

/// A store's tables on PostgreSQL: its migrations and the ledger table
/// (`[a-z_][a-z0-9_]*`, unique per schema) that records which ran.
#[derive(Debug)]
pub struct PgSchema {
    pub ledger: &'static str,
    pub migrations: &'static [PgMigration],
}

impl PgSchema {
    /// The version this build expects.
    pub fn current(&self) -> i32 {
        self.migrations.last().map_or(0, |m| m.version)
    }

    /// Refuses a list this runner cannot apply safely (a mistake of the
    /// code, caught by any test that opens the schema).
    fn check(&self) -> Result<(), DbError> {
        let bad = |detail: String| DbError::BadSchema {
            ledger: self.ledger,
            detail,
        };
        let mut chars = self.ledger.chars();
        let identifier = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !identifier {
            return Err(bad("the ledger is not a plain lower-case identifier".into()));
        }
        for (i, m) in self.migrations.iter().enumerate() {
            if i64::from(m.version) != i as i64 + 1 {
                return Err(bad(format!(
                    "migration {:?} has version {}, expected {}",
                    m.name,
                    m.version,
                    i + 1
                )));
            }
        }
        Ok(())
    }

    fn ledger_ddl(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
            self.ledger
        )
    }

    fn applied(&self, client: &mut impl GenericClient) -> Result<i32, DbError> {
        let sql = format!("SELECT coalesce(max(version), 0) FROM {}", self.ledger);
        Ok(client.query_one(&sql, &[])?.get(0))
    }

    fn check_known(&self, applied: i32) -> Result<(), DbError> {
        if applied > self.current() {
            return Err(DbError::SchemaAhead {
                ledger: self.ledger,
                applied,
                expected: self.current(),
            });
        }
        Ok(())
    }
}

/// Applies the migrations of `schema` not yet applied, in order, in one
/// transaction; returns the versions it applied (empty when the schema was
/// current). A node starting at the same time waits on the ledger's lock
/// and then finds nothing left to do. A database of a newer build is
/// refused.
pub fn migrate(client: &mut postgres::Client, schema: &PgSchema) -> Result<Vec<i32>, DbError> {
    schema.check()?;
    create_ledger(client, schema)?;
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", schema.ledger))?;
    let applied = schema.applied(&mut tx)?;
    schema.check_known(applied)?;
    let insert = format!(
        "INSERT INTO {} (version, name) VALUES ($1, $2)",
        schema.ledger
    );
    let mut done = Vec::new();
    for m in schema.migrations.iter().filter(|m| m.version > applied) {
        tx.batch_execute(m.sql)?;
        tx.execute(&insert, &[&m.version, &m.name])?;
        done.push(m.version);
    }
    tx.commit()?;
    Ok(done)
}

/// Fails unless `schema` is exactly at the version this build expects (a
/// start with `store.auto_migrate = false`), naming `ctsd migrate`.
pub fn check_current(client: &mut postgres::Client, schema: &PgSchema) -> Result<(), DbError> {
    schema.check()?;
    let applied = match schema.applied(client) {
        Err(DbError::Postgres(e)) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => 0,
        other => other?,
    };
    schema.check_known(applied)?;
    if applied < schema.current() {
        return Err(DbError::SchemaBehind {
            ledger: schema.ledger,
            applied,
            expected: schema.current(),
        });
    }
    Ok(())
}

/// What a store does as it opens on PostgreSQL: applies the pending
/// migrations of `schema` (`auto_migrate`, logging each), or refuses a
/// schema that is not current, naming `ctsd migrate`.
pub fn ensure_schema(pool: &Pool, schema: &PgSchema, auto_migrate: bool) -> Result<(), DbError> {
    let mut client = pool.get()?;
    if auto_migrate {
        for version in migrate(&mut client, schema)? {
            tracing::info!(ledger = schema.ledger, version, "schema migration applied");
        }
        Ok(())
    } else {
        check_current(&mut client, schema)
    }
}

/// `CREATE TABLE IF NOT EXISTS` is not safe against a concurrent twin (both
/// may insert the catalog row); the loser retries and finds the table.
fn create_ledger(client: &mut postgres::Client, schema: &PgSchema) -> Result<(), DbError> {
    let ddl = schema.ledger_ddl();
    for _ in 0..3 {
        match client.batch_execute(&ddl) {
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
    Ok(client.batch_execute(&ddl)?)
}
