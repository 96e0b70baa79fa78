//! The one way a store talks to its database, so that every store (traces
//! aside, which have a backend each) is written once and runs on SQLite (one
//! node, a file in its data directory) or on PostgreSQL (any number of
//! nodes sharing one database):
//!
//! * [`Db`]: a store's database; [`Db::read`] and [`Db::transaction`] hand
//!   `f` a [`Sql`] that runs statements with `$1`, `$2`, … parameters
//!   ([`Arg`]) and answers rows of [`Val`]. One statement text for both
//!   backends (see `sql` for the rules of parameters and types; where the
//!   dialects differ, branch on [`Db::is_postgres`]).
//! * SQLite files are opened through `cts_sqlite::open` (private file, WAL,
//!   `synchronous=FULL`, its migrations), unchanged.
//! * PostgreSQL: the node's one [`Pool`] (from [`PgSettings`], with TLS),
//!   and one migration runner ([`migrate`]) for every [`PgSchema`], each
//!   recorded in its own ledger table.
//! * [`Sealer`]: secrets a store keeps in its database, sealed (AES-256-GCM).
//! * [`copy_rows`]: a table copied into another database where rows are
//!   missing (moving an embedded node over).
//!
//! Every call blocks: call it from `spawn_blocking`, never on an async
//! worker.

mod copy;
mod db;
mod migrate;
mod sealed;
mod settings;
mod sql;
mod value;

pub use copy::{copy_rows, copy_rows_in_order, Copied};
pub use db::Db;
pub use migrate::{check_current, ensure_schema, migrate, PgMigration, PgSchema};
pub use sealed::{SealError, Sealer, SecretKey};
pub use settings::{PgSettings, PgUrl, PgUrlError, Pool};
pub use sql::Sql;
pub use value::{columns, Arg, Row, Val};

use postgres::error::SqlState;

/// Why a statement, a connection or a migration failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Open(#[from] cts_sqlite::OpenError),
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {}", describe(.0))]
    Postgres(#[from] postgres::Error),
    #[error("invalid PostgreSQL setting: {0}")]
    Setting(String),
    #[error("cannot connect to PostgreSQL at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("no PostgreSQL connection available: {0}")]
    Pool(#[from] r2d2_postgres::r2d2::Error),
    #[error(
        "the database schema of {ledger} is at version {applied}, this ctsd needs {expected}: \
         run `ctsd migrate` (or start with store.auto_migrate = true)"
    )]
    SchemaBehind {
        ledger: &'static str,
        applied: i32,
        expected: i32,
    },
    #[error(
        "the database schema of {ledger} is at version {applied}, newer than this ctsd knows \
         ({expected}): run a newer ctsd"
    )]
    SchemaAhead {
        ledger: &'static str,
        applied: i32,
        expected: i32,
    },
    #[error("the migrations of {ledger} cannot be applied: {detail}")]
    BadSchema {
        ledger: &'static str,
        detail: String,
    },
    #[error("statement parameter {name} has no value ({given} given; parameters are $1, $2, …)")]
    Parameter { name: String, given: usize },
    #[error("column {column} has type {ty}, which is not read: cast it to bigint or text")]
    ColumnType { column: String, ty: String },
    #[error("a row of {found} columns where {expected} were expected")]
    Columns { expected: usize, found: usize },
    #[error("a column of an unexpected shape: expected {expected}, found {found}")]
    Shape {
        expected: &'static str,
        found: &'static str,
    },
}

impl DbError {
    /// A row with the same unique key (or primary key) exists: SQLite's
    /// UNIQUE or PRIMARY KEY constraint, PostgreSQL's 23505.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            DbError::Postgres(e) => e.code() == Some(&SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

/// The server's own message (with its detail) when there is one: the
/// client library's `Display` says only "db error".
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}): {detail}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}
