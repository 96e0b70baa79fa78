//! Where this node's stores live: files in its data directory (the
//! embedded backend), or PostgreSQL shared with every other node
//! (`store.backend = "postgres"`) through ONE pool per process that every
//! store draws from.

use std::path::Path;

use cts_db::{Db, DbError, PgSchema, Pool};
use cts_sqlite::Migrations;

use crate::config::Config;

/// Opened once per process ([`Backend::open`]) and handed to every store.
#[derive(Clone)]
pub enum Backend {
    /// Each store in its own directory under `data_dir`.
    Embedded,
    Postgres {
        pool: Pool,
        /// Whether opening a store applies its pending migrations
        /// (`store.auto_migrate`), or refuses them naming `ctsd migrate`.
        auto_migrate: bool,
    },
}

impl Backend {
    /// The backend of `store.backend`; on PostgreSQL the pool (with the
    /// store's TLS and pool settings).
    pub fn open(config: &Config) -> Result<Backend, DbError> {
        Ok(match config.postgres_settings() {
            None => Backend::Embedded,
            Some(pg) => Backend::Postgres {
                pool: pg.connect()?,
                auto_migrate: pg.auto_migrate,
            },
        })
    }

    /// A state store's database: the SQLite file `dir/file` with its
    /// `sqlite` migrations, or the shared pool with its `schema` (which
    /// must be in [`pg_schemas`]).
    pub fn db(
        &self,
        dir: &Path,
        file: &str,
        sqlite: &Migrations<'static>,
        schema: &PgSchema,
    ) -> Result<Db, DbError> {
        match self {
            Backend::Embedded => Db::sqlite(dir, file, sqlite),
            Backend::Postgres { pool, auto_migrate } => {
                Db::postgres(pool.clone(), schema, *auto_migrate)
            }
        }
    }
}

/// Every PostgreSQL schema ctsd has, in the order `ctsd migrate` applies
/// them. A store moving to PostgreSQL adds its schema here.
pub fn pg_schemas() -> Vec<&'static PgSchema> {
    vec![
        &cts_store_pg::schema::SCHEMA,
        &cts_consumer::PG_SCHEMA,
        cts_identity::pg_schema(),
        &cts_smn::PG_SCHEMA,
        &cts_notification::PG_SCHEMA,
        &cts_tracker::PG_SCHEMA,
        &cts_transfer::PG_SCHEMA,
    ]
}
