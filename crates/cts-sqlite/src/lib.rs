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
//! * a schema version (`user_version`): a database written by a newer build
//!   is refused, never half understood; the schema and the caller's
//!   migration run in one immediate transaction with the version update.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use rusqlite;
use rusqlite::{Connection, Transaction, TransactionBehavior};

/// What a database must look like: its DDL (idempotent, `IF NOT EXISTS`) and
/// the version this build writes.
#[derive(Debug, Clone, Copy)]
pub struct Schema<'a> {
    pub sql: &'a str,
    pub version: i64,
}

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
}

/// Opens (creating on first use) `dir/name` with the settings above and
/// `schema` applied. `migrate` runs in the same transaction, after the DDL,
/// with the version the file had before (0 when new); what it returns is
/// handed back with the connection.
pub fn open_with<T, E>(
    dir: &Path,
    name: &str,
    schema: Schema<'_>,
    migrate: impl FnOnce(&Transaction<'_>, i64) -> Result<T, E>,
) -> Result<(Connection, T), E>
where
    E: From<OpenError>,
{
    let path = dir.join(name);
    let fail = |reason: OpenFailure| OpenError {
        path: path.clone(),
        reason,
    };
    let mut conn = connect(dir, &path, schema.version).map_err(fail)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| fail(e.into()))?;
    let before: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| fail(e.into()))?;
    tx.execute_batch(schema.sql).map_err(|e| fail(e.into()))?;
    let out = migrate(&tx, before)?;
    tx.pragma_update(None, "user_version", schema.version)
        .and_then(|()| tx.commit())
        .map_err(|e| fail(e.into()))?;
    Ok((conn, out))
}

/// [`open_with`] without a migration.
pub fn open(dir: &Path, name: &str, schema: Schema<'_>) -> Result<Connection, OpenError> {
    open_with(dir, name, schema, |_, _| Ok::<_, OpenError>(())).map(|(conn, ())| conn)
}

fn connect(dir: &Path, path: &Path, known: i64) -> Result<Connection, OpenFailure> {
    cts_fs::create_dir_all(dir)?;
    cts_fs::create_private(path)?;
    let conn = Connection::open(path)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenFailure::NotWal(mode));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > known {
        return Err(OpenFailure::NewerSchema { found, known });
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SCHEMA: Schema<'static> = Schema {
        sql: "CREATE TABLE IF NOT EXISTS t (x INTEGER PRIMARY KEY);",
        version: 2,
    };

    #[test]
    fn creates_a_private_durable_database() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sub");
        let conn = open(&dir, "x.db", SCHEMA).unwrap();
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
    fn migration_sees_the_old_version_and_shares_the_transaction() {
        let tmp = tempfile::tempdir().unwrap();
        drop(
            open(
                tmp.path(),
                "x.db",
                Schema {
                    version: 1,
                    ..SCHEMA
                },
            )
            .unwrap(),
        );
        let (conn, before) = open_with(tmp.path(), "x.db", SCHEMA, |tx, before| {
            tx.execute("INSERT INTO t (x) VALUES (7)", [])
                .map_err(|e| OpenError {
                    path: PathBuf::new(),
                    reason: e.into(),
                })?;
            Ok::<_, OpenError>(before)
        })
        .unwrap();
        assert_eq!(before, 1);
        let x: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 7);

        // A failed migration leaves neither its rows nor the new version.
        drop(conn);
        let failed = open_with(
            tmp.path(),
            "x.db",
            Schema {
                version: 3,
                ..SCHEMA
            },
            |tx, _| {
                tx.execute("INSERT INTO t (x) VALUES (8)", []).unwrap();
                Err::<(), _>(OpenError {
                    path: PathBuf::new(),
                    reason: OpenFailure::NotWal("test".into()),
                })
            },
        );
        assert!(failed.is_err());
        let conn = open(tmp.path(), "x.db", SCHEMA).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn newer_schema_is_refused_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        drop(
            open(
                tmp.path(),
                "x.db",
                Schema {
                    version: 5,
                    ..SCHEMA
                },
            )
            .unwrap(),
        );
        let err = open(tmp.path(), "x.db", SCHEMA).unwrap_err();
        assert!(matches!(
            err.reason,
            OpenFailure::NewerSchema { found: 5, known: 2 }
        ));
        let msg = err.to_string();
        assert!(
            msg.contains("x.db") && msg.contains("schema version 5"),
            "{msg}"
        );
    }
}
