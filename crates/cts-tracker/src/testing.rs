//! Tests only: the trackers and the catalog on a test's [`Place`], so that
//! the same tests run on SQLite and on PostgreSQL (`cts_testpg::both!`).

use cts_db::{Db, PgSettings};
use cts_testpg::{Place, TestPg};

use crate::{Catalog, Limits, TrackerStore, PG_SCHEMA};

/// The tracker schema on PostgreSQL, as a new node (its own pool).
pub(crate) fn pg_db(pg: &TestPg) -> Db {
    let mut settings = PgSettings::new(pg.url().parse().unwrap());
    settings.pool_size = 4;
    Db::postgres(settings.connect().unwrap(), &PG_SCHEMA, true).unwrap()
}

/// The trackers on `place`; on PostgreSQL each call is a node of its own.
pub(crate) fn trackers(place: &Place, limits: Limits) -> TrackerStore {
    match place {
        Place::Sqlite(dir) => TrackerStore::open(&dir.path().join("trackers"), limits).unwrap(),
        Place::Postgres(pg) => TrackerStore::on(pg_db(pg), limits).unwrap(),
    }
}

/// The catalog on `place`.
pub(crate) fn catalog(place: &Place) -> Catalog {
    match place {
        Place::Sqlite(dir) => Catalog::open(&dir.path().join("trackers")).unwrap(),
        Place::Postgres(pg) => Catalog::on(pg_db(pg)).unwrap(),
    }
}
