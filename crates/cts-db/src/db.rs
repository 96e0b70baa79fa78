//! [`Db`]: a store's database, an SQLite file of this node or PostgreSQL
//! shared by every node, behind the same two calls.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, TransactionBehavior};

use crate::migrate::{ensure_schema, PgSchema};
use crate::sql::PgSql;
use crate::{DbError, Pool, Sql};

/// A store's database. Cheap to clone (one shared handle). Every call
/// blocks (SQLite, fsync, the network): call it from `spawn_blocking`,
/// never on an async worker.
#[derive(Clone)]
pub struct Db(Arc<Backend>);

enum Backend {
    /// One connection: SQLite serialises writers anyway, and WAL lets the
    /// one connection's reads run beside another process's write.
    Sqlite(Mutex<Connection>),
    /// A connection taken from the node's pool per call, none held between
    /// calls.
    Postgres(Option<Pool>),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_postgres() {
            "Db(PostgreSQL)"
        } else {
            "Db(SQLite)"
        })
    }
}

impl Db {
    /// Opens (creating on first use) `dir/file` through `cts_sqlite::open`
    /// and brings it to the last of `migrations`.
    pub fn sqlite(
        dir: &Path,
        file: &str,
        migrations: &cts_sqlite::Migrations<'static>,
    ) -> Result<Db, DbError> {
        let conn = cts_sqlite::open(dir, file, migrations)?;
        Ok(Db(Arc::new(Backend::Sqlite(Mutex::new(conn)))))
    }

    /// A store on the node's pool: applies the pending migrations of
    /// `schema` (`auto_migrate`), or refuses a schema that is not current,
    /// naming `ctsd migrate`.
    pub fn postgres(pool: Pool, schema: &PgSchema, auto_migrate: bool) -> Result<Db, DbError> {
        ensure_schema(&pool, schema, auto_migrate)?;
        Ok(Db(Arc::new(Backend::Postgres(Some(pool)))))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(*self.0, Backend::Postgres(_))
    }

    /// Runs `f` outside a transaction: on PostgreSQL each statement commits
    /// by itself; on SQLite nothing else of this process runs meanwhile.
    pub fn read<R, E: From<DbError>>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<R, E>,
    ) -> Result<R, E> {
        match &*self.0 {
            Backend::Sqlite(conn) => f(&*conn.lock()),
            Backend::Postgres(pool) => {
                let mut client = pool.as_ref().expect("open").get().map_err(DbError::from)?;
                f(&PgSql(RefCell::new(&mut *client)))
            }
        }
    }

    /// Runs `f` in one transaction, committed when `f` succeeds and rolled
    /// back when it fails.
    pub fn transaction<R, E: From<DbError>>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<R, E>,
    ) -> Result<R, E> {
        match &*self.0 {
            Backend::Sqlite(conn) => {
                let mut conn = conn.lock();
                // Immediate: the write lock up front, so that another
                // process's writer makes this wait (busy timeout) rather
                // than fail midway upgrading a read lock.
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(DbError::from)?;
                let out = f(&*tx as &Connection)?;
                tx.commit().map_err(DbError::from)?;
                Ok(out)
            }
            Backend::Postgres(pool) => {
                let mut client = pool.as_ref().expect("open").get().map_err(DbError::from)?;
                let mut tx = client.transaction().map_err(DbError::from)?;
                let out = f(&PgSql(RefCell::new(&mut tx)))?;
                tx.commit().map_err(DbError::from)?;
                Ok(out)
            }
        }
    }
}

/// Closing a PostgreSQL client blocks on its own runtime, which panics on
/// an async worker (where the last handle of a store may well be dropped,
/// e.g. as the server stops): the pool is dropped on a thread of its own.
impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Postgres(pool) = self {
            if let Some(pool) = pool.take() {
                let _ = std::thread::Builder::new()
                    .name("pg-close".into())
                    .spawn(move || drop(pool));
            }
        }
    }
}
