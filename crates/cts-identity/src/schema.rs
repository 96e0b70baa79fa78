//! The schema of the identity database, per backend: SQLite's migrations
//! (the `identity.db` of every existing data directory, unchanged) and
//! PostgreSQL's, which start from the same tables in one step. What differs
//! between the two (types, `WITHOUT ROWID`, collation) lives here, so that
//! every statement of the store is written once.

use rusqlite::Transaction;

use crate::role::Role;

/// Version 1.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS domains (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    enabled INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    region TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (domain_id, name)
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    email TEXT,
    default_project_id TEXT REFERENCES projects(id) ON DELETE SET NULL,
    password_hash TEXT,
    created_at INTEGER NOT NULL,
    password_changed_at INTEGER,
    UNIQUE (domain_id, name)
);
CREATE INDEX IF NOT EXISTS users_default_project ON users(default_project_id);
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (domain_id, name)
);
CREATE TABLE IF NOT EXISTS memberships (
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memberships_user ON memberships(user_id);
CREATE TABLE IF NOT EXISTS roles (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS user_assignments (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles(id),
    PRIMARY KEY (project_id, user_id, role_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS user_assignments_user ON user_assignments(user_id);
CREATE TABLE IF NOT EXISTS group_assignments (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles(id),
    PRIMARY KEY (project_id, group_id, role_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS group_assignments_group ON group_assignments(group_id);
CREATE TABLE IF NOT EXISTS access_keys (
    access TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    secret BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'inactive')),
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_use_at INTEGER
);
CREATE INDEX IF NOT EXISTS access_keys_user ON access_keys(user_id);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id TEXT REFERENCES projects(id) ON DELETE CASCADE,
    domain_id TEXT REFERENCES domains(id) ON DELETE CASCADE,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL,
    methods TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens(expires_at);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens(user_id);
";

/// Version 2: domain assignments; the login lockouts, which some databases
/// of version 1 already have.
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS domain_assignments (
    domain_id TEXT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles(id),
    PRIMARY KEY (domain_id, user_id, role_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS domain_assignments_user ON domain_assignments(user_id);
CREATE TABLE IF NOT EXISTS login_lockouts (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    locked_until INTEGER NOT NULL,
    PRIMARY KEY (user_id, source)
) WITHOUT ROWID;
";

/// The schema's migrations, in order; `user_version` counts those applied.
pub(crate) fn migrations() -> cts_sqlite::Migrations<'static> {
    cts_sqlite::Migrations::new(vec![
        cts_sqlite::M::up(SCHEMA),
        cts_sqlite::M::up_with_hook(SCHEMA_V2, admins_become_domain_admins),
    ])
}

/// Before version 2, `admin` on any project managed the whole domain: those
/// users keep that power as domain admins (the README tells operators to
/// review them). A new database has no assignments yet.
fn admins_become_domain_admins(tx: &Transaction<'_>) -> cts_sqlite::HookResult {
    tx.execute(
        "INSERT OR IGNORE INTO domain_assignments (domain_id, user_id, role_id) \
         SELECT p.domain_id, a.user_id, a.role_id FROM user_assignments a \
         JOIN projects p ON p.id = a.project_id \
         JOIN roles r ON r.id = a.role_id WHERE r.name = ?1",
        [Role::Admin.name()],
    )?;
    Ok(())
}

/// PostgreSQL: the tables of SQLite's versions 1 and 2. Integers are
/// `bigint` (the statements bind 64-bit values; flags are 0 or 1 as in
/// SQLite), names and ids sort bytewise (`COLLATE "C"`) as in SQLite.
pub(crate) const PG_SCHEMA: cts_db::PgSchema = cts_db::PgSchema {
    ledger: "identity_schema_migrations",
    migrations: &[cts_db::PgMigration {
        version: 1,
        name: "identities",
        sql: include_str!("pg/0001_identities.sql"),
    }],
};
