//! `DATA_DIR/notifications/smn.db`: topics, subscriptions and the outbox in
//! one database, so that an enqueue fans a message out to the subscriptions
//! of its topic in the same transaction, and removing a subscription or a
//! topic removes its pending deliveries with it (foreign keys).

use cts_sqlite::{Migrations, M};
use std::path::Path;

use rusqlite::Connection;

use crate::error::SmnError;

const SCHEMA: &str = "
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

pub(crate) fn open(dir: &Path) -> Result<Connection, SmnError> {
    Ok(cts_sqlite::open(
        dir,
        "smn.db",
        &Migrations::new(vec![M::up(SCHEMA)]),
    )?)
}

pub(crate) use cts_clock::now_ms;
