//! Tests only: where a test's trackers and catalog live, so that the same
//! tests run on SQLite and on PostgreSQL.

use cts_db::{Db, PgSettings};
use cts_testpg::TestPg;

use crate::{Catalog, Limits, TrackerStore, PG_SCHEMA};

/// An SQLite directory, or a throwaway PostgreSQL server. Each `open`
/// on PostgreSQL is a node of its own (its own pool and view).
pub(crate) enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(TestPg),
}

impl Place {
    pub(crate) fn sqlite() -> Place {
        Place::Sqlite(tempfile::tempdir().unwrap())
    }

    pub(crate) fn postgres() -> Place {
        Place::Postgres(TestPg::start())
    }

    /// The tracker schema on PostgreSQL, as a new node.
    pub(crate) fn pg_db(pg: &TestPg) -> Db {
        let mut settings = PgSettings::new(pg.url().parse().unwrap());
        settings.pool_size = 4;
        Db::postgres(settings.connect().unwrap(), &PG_SCHEMA, true).unwrap()
    }

    pub(crate) fn trackers(&self, limits: Limits) -> TrackerStore {
        match self {
            Place::Sqlite(dir) => TrackerStore::open(&dir.path().join("trackers"), limits).unwrap(),
            Place::Postgres(pg) => TrackerStore::on(Place::pg_db(pg), limits).unwrap(),
        }
    }

    pub(crate) fn catalog(&self) -> Catalog {
        match self {
            Place::Sqlite(dir) => Catalog::open(&dir.path().join("trackers")).unwrap(),
            Place::Postgres(pg) => Catalog::on(Place::pg_db(pg)).unwrap(),
        }
    }
}

/// Runs each test `$name(&Place)` on SQLite and on PostgreSQL, as two
/// tests `$name::sqlite` and `$name::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name(&crate::testing::Place::sqlite());
                }

                #[test]
                fn postgres() {
                    super::$name(&crate::testing::Place::postgres());
                }
            }
        )*
    };
}
