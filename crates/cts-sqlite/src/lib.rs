//! The one way CTS opens an SQLite database (identity, trackers, catalog,
//! topics and outbox, …), so every store gets the same guarantees:
//!
//! * a private file (0600 in a 0700 directory, through `cts-fs`), created
//!   before SQLite sees it: SQLite would use the umask, and its `-wal` and
//!   `-shm` files inherit the database's mode;
//! * WAL (readers never block the writer), refused if SQLite cannot use it;
//! * `synchronous=FULL`: a committed transaction survives a power loss;
//! * foreign keys on, a 5 s busy timeout (another process, e.g. `ctsd
//!   unlock`, may hold the write lock briefly);
//! * versioned migrations (`rusqlite_migration`: `user_version` counts the
//!   migrations applied, the pending ones run in one transaction with the
//!   version update); a database written by a newer build is refused, never
//!   half understood.
//!
//! A migration is never edited once released: a change of schema is a new
//! migration at the end of the list.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use rusqlite;
use rusqlite::{Connection, TransactionBehavior};
pub use rusqlite_migration::{HookError, HookResult, Migrations, M};

/// Why a database could not be opened; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct OpenError {
    pub path: PathBuf,
    pub reason: OpenFailure,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenFailure {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("journal_mode is {0}, WAL is required")]
    NotWal(String),
    #[error("schema version {found}, this build knows up to {known}")]
    NewerSchema { found: i64, known: i64 },
    #[error("migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
}

/// Opens (creating on first use) `dir/name` with the settings above and
/// brings it to the last of `migrations`.
pub fn open(dir: &Path, name: &str, migrations: &Migrations<'_>) -> Result<Connection, OpenError> {
    let path = dir.join(name);
    connect(dir, &path, migrations).map_err(|reason| OpenError { path, reason })
}

fn connect(
    dir: &Path,
    path: &Path,
    migrations: &Migrations<'_>,
) -> Result<Connection, OpenFailure> {
    cts_fs::create_dir_all(dir)?;
    cts_fs::create_private(path)?;
    let mut conn = Connection::open(path)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenFailure::NotWal(mode));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Said here, with both numbers, rather than as the crate's "too far ahead".
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = found + i64::from(migrations.pending_migrations(&conn)?);
    if found > known {
        return Err(OpenFailure::NewerSchema { found, known });
    }
    // Immediate: another process upgrading a read lock to a write lock
    // mid-migration would fail at once instead of waiting out the timeout.
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    migrations.to_latest(&mut conn)?;
    conn.set_transaction_behavior(TransactionBehavior::Deferred);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn migrations(n: usize) -> Migrations<'static> {
        let all = [
            "CREATE TABLE t (x INTEGER PRIMARY KEY);",
            "CREATE TABLE u (y INTEGER PRIMARY KEY);",
            "INSERT INTO t (x) VALUES (7);",
        ];
        Migrations::new(all[..n].iter().map(|sql| M::up(sql)).collect())
    }

    #[test]
    fn creates_a_private_durable_database() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sub");
        let conn = open(&dir, "x.db", &migrations(2)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("x.db")), 0o600);
        let get = |p: &str| -> String {
            conn.pragma_query_value(None, p, |r| r.get::<_, rusqlite::types::Value>(0))
                .map(|v| format!("{v:?}"))
                .unwrap()
        };
        assert_eq!(get("journal_mode"), r#"Text("wal")"#);
        assert_eq!(get("synchronous"), "Integer(2)");
        assert_eq!(get("foreign_keys"), "Integer(1)");
        assert_eq!(get("user_version"), "Integer(2)");
    }

    #[test]
    fn only_the_pending_migrations_run_and_a_failed_one_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        drop(open(tmp.path(), "x.db", &migrations(1)).unwrap());
        let conn = open(tmp.path(), "x.db", &migrations(3)).unwrap();
        let x: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 7);
        drop(conn);

        // A failing hook rolls back its migration's rows and the version.
        let mut steps: Vec<M<'static>> = (0..3).map(|_| M::up("")).collect();
        steps.push(M::up_with_hook(
            "INSERT INTO t (x) VALUES (8);",
            |_tx: &rusqlite::Transaction| Err(HookError::Hook("refused".into())),
        ));
        let err = open(tmp.path(), "x.db", &Migrations::new(steps)).unwrap_err();
        assert!(matches!(err.reason, OpenFailure::Migration(_)), "{err}");
        let conn = open(tmp.path(), "x.db", &migrations(3)).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn newer_schema_is_refused_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        drop(open(tmp.path(), "x.db", &migrations(3)).unwrap());
        let err = open(tmp.path(), "x.db", &migrations(2)).unwrap_err();
        assert!(matches!(
            err.reason,
            OpenFailure::NewerSchema { found: 3, known: 2 }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("x.db") && msg.contains("schema version 3"),
            "{msg}"
        );
    }
}
