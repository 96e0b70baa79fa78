//! The tables of trackers, tags, encryption keys, the change counter and
//! the catalog, on each backend. The statements of the stores are written
//! once for both; only the migrations are per backend. A released migration
//! is never edited: a change is a new one.

use cts_db::{PgMigration, PgSchema};
use cts_sqlite::{Migrations, M};

/// The tracker itself is the JSON `body` (its storage form); the columns
/// beside it are what queries and constraints need. A data tracker cannot
/// be named `system`, so the unique name also means one management tracker
/// per project.
pub(crate) const SQLITE_TRACKERS: &str = "
CREATE TABLE IF NOT EXISTS trackers (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    domain_id TEXT NOT NULL,
    tracker_name TEXT NOT NULL,
    tracker_type TEXT NOT NULL CHECK (tracker_type IN ('system', 'data')),
    create_time INTEGER NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (project_id, tracker_name)
);
CREATE INDEX IF NOT EXISTS trackers_domain ON trackers(domain_id, tracker_type);
CREATE TABLE IF NOT EXISTS tags (
    tracker_id TEXT NOT NULL REFERENCES trackers(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tracker_id, key)
) WITHOUT ROWID;
";

/// Version 2: databases of version 1 may lack the key table.
pub(crate) const SQLITE_KEYS: &str = "
CREATE TABLE IF NOT EXISTS encryption_keys (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    recipient TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (project_id, name)
);
";

/// Version 3: the change counter (see `view.rs`).
const SQLITE_CHANGES: &str = "
CREATE TABLE tracker_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO tracker_version (id, version) VALUES (1, 0);
CREATE TABLE tracker_projects (
    project_id TEXT PRIMARY KEY,
    changed_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tracker_projects_changed ON tracker_projects(changed_at);
";

/// `DATA_DIR/trackers/trackers.db`.
pub(crate) fn sqlite_trackers() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(SQLITE_TRACKERS),
        M::up(SQLITE_KEYS),
        M::up(SQLITE_CHANGES),
    ])
}

pub(crate) const SQLITE_CATALOG: &str = "
CREATE TABLE IF NOT EXISTS operations (
    domain_id TEXT NOT NULL,
    service_type TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    trace_name TEXT NOT NULL,
    PRIMARY KEY (domain_id, service_type, resource_type, trace_name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    project_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (project_id, user_name)
) WITHOUT ROWID;
";

/// Version 2: the names the tables have in PostgreSQL, where `users` is
/// the identity store's.
const SQLITE_CATALOG_NAMES: &str = "
ALTER TABLE operations RENAME TO catalog_operations;
ALTER TABLE users RENAME TO catalog_users;
";

/// `DATA_DIR/trackers/catalog.db`.
pub(crate) fn sqlite_catalog() -> Migrations<'static> {
    Migrations::new(vec![M::up(SQLITE_CATALOG), M::up(SQLITE_CATALOG_NAMES)])
}

/// The same tables in PostgreSQL (trackers and catalog in one schema),
/// recorded in `tracker_schema_migrations`; `ctsd migrate` applies them.
pub static PG_SCHEMA: PgSchema = PgSchema {
    ledger: "tracker_schema_migrations",
    migrations: &[PgMigration {
        version: 1,
        name: "trackers, tags, encryption keys, the change counter, the catalog",
        sql: "
CREATE TABLE trackers (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    domain_id TEXT NOT NULL,
    tracker_name TEXT NOT NULL,
    tracker_type TEXT NOT NULL CHECK (tracker_type IN ('system', 'data')),
    create_time BIGINT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (project_id, tracker_name)
);
CREATE INDEX trackers_domain ON trackers (domain_id, tracker_type);
CREATE TABLE tags (
    tracker_id TEXT NOT NULL REFERENCES trackers (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tracker_id, key)
);
CREATE TABLE encryption_keys (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    recipient TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE TABLE tracker_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO tracker_version (id, version) VALUES (1, 0);
CREATE TABLE tracker_projects (
    project_id TEXT PRIMARY KEY,
    changed_at BIGINT NOT NULL
);
CREATE INDEX tracker_projects_changed ON tracker_projects (changed_at);
CREATE TABLE catalog_operations (
    domain_id TEXT NOT NULL,
    service_type TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    trace_name TEXT NOT NULL,
    PRIMARY KEY (domain_id, service_type, resource_type, trace_name)
);
CREATE TABLE catalog_users (
    project_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (project_id, user_name)
);
",
    }],
};
