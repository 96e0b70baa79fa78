//! The database of topics, subscriptions and the outbox: one database, so
//! that an enqueue fans a message out to the subscriptions of its topic in
//! the same transaction, and removing a subscription or a topic removes its
//! pending deliveries with it (foreign keys).
//!
//! On the embedded node it is `DATA_DIR/notifications/smn.db`; with
//! `store.backend = "postgres"` it is the shared database ([`PG_SCHEMA`]).
//! Every statement is written once for both (`cts-db`); what differs (types,
//! how `seq` and the insertion order are generated) lives in the two schemas
//! below.

use cts_db::{Db, PgMigration, PgSchema, Pool};
use cts_sqlite::{Migrations, M};
use std::path::Path;

use crate::error::SmnError;

/// Never edit a released migration: add one.
const SQLITE: &str = "
CREATE TABLE IF NOT EXISTS topics (
    urn TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    display_name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('smn', 'function')),
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS topics_by_project ON topics (project_id, created_ms);
CREATE TABLE IF NOT EXISTS subscriptions (
    urn TEXT PRIMARY KEY,
    topic_urn TEXT NOT NULL REFERENCES topics (urn) ON DELETE CASCADE,
    protocol TEXT NOT NULL CHECK (protocol IN ('http', 'https', 'email')),
    endpoint TEXT NOT NULL,
    remark TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (topic_urn, protocol, endpoint)
);
-- `seq` orders the messages: deliveries of one subscription go in its order.
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    project_id TEXT NOT NULL,
    topic_urn TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    notification_name TEXT NOT NULL,
    trace TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    subscription_urn TEXT NOT NULL REFERENCES subscriptions (urn) ON DELETE CASCADE,
    seq INTEGER NOT NULL REFERENCES messages (seq) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL,
    next_ms INTEGER NOT NULL,
    last_error TEXT,
    done_ms INTEGER,
    PRIMARY KEY (subscription_urn, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_by_state ON deliveries (state, seq);
CREATE INDEX IF NOT EXISTS deliveries_by_message ON deliveries (seq);
";

/// The same tables on PostgreSQL. SQLite's implicit `rowid` (the insertion
/// order lists break `created_ms` ties with) is an identity column of that
/// name here, so that the queries read the same on both.
const POSTGRES: &str = "
CREATE TABLE topics (
    urn TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    display_name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('smn', 'function')),
    created_ms BIGINT NOT NULL,
    rowid BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX topics_by_project ON topics (project_id, created_ms);
CREATE TABLE subscriptions (
    urn TEXT PRIMARY KEY,
    topic_urn TEXT NOT NULL REFERENCES topics (urn) ON DELETE CASCADE,
    protocol TEXT NOT NULL CHECK (protocol IN ('http', 'https', 'email')),
    endpoint TEXT NOT NULL,
    remark TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    rowid BIGINT GENERATED ALWAYS AS IDENTITY,
    UNIQUE (topic_urn, protocol, endpoint)
);
CREATE TABLE messages (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    project_id TEXT NOT NULL,
    topic_urn TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    notification_name TEXT NOT NULL,
    trace TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE deliveries (
    subscription_urn TEXT NOT NULL REFERENCES subscriptions (urn) ON DELETE CASCADE,
    seq BIGINT NOT NULL REFERENCES messages (seq) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts BIGINT NOT NULL,
    next_ms BIGINT NOT NULL,
    last_error TEXT,
    done_ms BIGINT,
    PRIMARY KEY (subscription_urn, seq)
);
CREATE INDEX deliveries_by_state ON deliveries (state, seq);
CREATE INDEX deliveries_by_message ON deliveries (seq);
";

/// The topics and outbox tables on PostgreSQL (`ctsd migrate` applies it).
pub static PG_SCHEMA: PgSchema = PgSchema {
    ledger: "smn_schema_migrations",
    migrations: &[PgMigration {
        version: 1,
        name: "topics, subscriptions, messages, deliveries",
        sql: POSTGRES,
    }],
};

/// Opens (creating on first use) `dir/smn.db` (`DATA_DIR/notifications`).
pub fn open_embedded(dir: &Path) -> Result<Db, SmnError> {
    let migrations = Migrations::new(vec![M::up(SQLITE)]);
    Ok(Db::sqlite(dir, "smn.db", &migrations)?)
}

/// The tables in the shared PostgreSQL database, migrated unless
/// `auto_migrate` is off (then pending migrations refuse the start).
pub fn open_postgres(pool: Pool, auto_migrate: bool) -> Result<Db, SmnError> {
    Ok(Db::postgres(pool, &PG_SCHEMA, auto_migrate)?)
}

pub(crate) use cts_clock::now_ms;
