//! The two backends the unit tests run on: every test that takes its store
//! from [`temp_store`] runs twice through [`both!`], on SQLite in a
//! temporary directory and on a fresh database of one throwaway PostgreSQL
//! server per test process (stopped when the process exits).

use std::cell::Cell;
use std::path::Path;
use std::sync::Mutex;

use cts_testpg::TestPg;

use crate::{rules, IdentityStore, ServerKey};

thread_local! {
    /// Whether the running test is the PostgreSQL run.
    static ON_POSTGRES: Cell<bool> = const { Cell::new(false) };
}

static SERVER: Mutex<Option<TestPg>> = Mutex::new(None);

extern "C" fn stop_server() {
    if let Ok(mut server) = SERVER.lock() {
        server.take();
    }
}

/// Runs `test` with [`temp_store`] answering PostgreSQL stores.
pub(crate) fn on_postgres(test: fn()) {
    ON_POSTGRES.with(|p| p.set(true));
    test();
}

/// A new database on this process's server (started on first use).
pub(crate) fn pg_database() -> String {
    let mut server = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let server = server.get_or_insert_with(|| {
        // SAFETY: registers a plain function, run once at process exit.
        unsafe { libc::atexit(stop_server) };
        TestPg::start()
    });
    server.fresh_database()
}

/// A random server key, as a node's configuration would give it.
pub(crate) fn random_key() -> ServerKey {
    ServerKey::derive(&rules::random_bytes::<32>(), "the test key")
}

/// A store (a "node") on the PostgreSQL database `url`.
pub(crate) fn pg_store(url: &str, key: &ServerKey) -> IdentityStore {
    let settings = cts_db::PgSettings::new(url.parse().unwrap());
    IdentityStore::open_postgres(settings.connect().unwrap(), true, key).unwrap()
}

/// Where a test's store lives: a temporary directory (for SQLite, and for
/// files like `bootstrap.json`), and on PostgreSQL the database and key.
pub(crate) struct Place {
    dir: tempfile::TempDir,
    postgres: Option<(String, ServerKey)>,
}

impl Place {
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Another store on the same data, as after a restart.
    pub(crate) fn reopen(&self) -> IdentityStore {
        match &self.postgres {
            Some((url, key)) => pg_store(url, key),
            None => IdentityStore::open(&self.dir.path().join("identity")).unwrap(),
        }
    }
}

/// A store on the backend of the running test.
pub(crate) fn temp_store() -> (Place, IdentityStore) {
    let place = Place {
        dir: tempfile::tempdir().unwrap(),
        postgres: ON_POSTGRES
            .with(Cell::get)
            .then(|| (pg_database(), random_key())),
    };
    let store = place.reopen();
    (place, store)
}

/// Runs the test `$name()` on SQLite and on PostgreSQL, as two tests.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name();
            }

            #[test]
            fn postgres() {
                crate::testdb::on_postgres(super::$name);
            }
        }
    )*};
}
pub(crate) use both;
