//! The notification store: the rules in a database (SQLite
//! `DATA_DIR/notifications/rules.db`, opened the one way `cts-sqlite` opens
//! every database, or the shared PostgreSQL database, [`PG_SCHEMA`]) for
//! durability, and the compiled [`Matcher`] of the enabled rules.
//!
//! **Across nodes.** Every rule write bumps the one row of `rules_version`
//! first, in its transaction (which also serialises rule writes of every
//! node, so the quota and the name rule hold across nodes). A write
//! recompiles this node's matcher before it returns; every other node reads
//! the version at most every [`RECHECK`] when its matcher is asked for, and
//! recompiles when it moved: a rule created, changed or deleted through one
//! node applies on every node within a second (plus the pass in flight).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cts_db::{copy_rows, Arg, Copied, Db, DbError, PgMigration, PgSchema, Pool, Row, Sql};
use cts_sqlite::{Migrations, M};
use parking_lot::{Mutex, RwLock};

use crate::error::{codes, NotificationError};
use crate::matcher::Matcher;
use crate::model::{Notification, NotificationType, ResolvedUser, Status};
use crate::request::NotificationSpec;

/// The rule itself is the JSON `body` (its storage form); the columns beside
/// it are what lookups and constraints need. Never edit a released
/// migration: add one.
const SQLITE_RULES: &str = "
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (project_id, name)
);
";

/// How far the rules have changed: bumped by every rule write.
const SQLITE_VERSION: &str = "
CREATE TABLE rules_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO rules_version (id, version) VALUES (1, 0);
";

const POSTGRES: &str = "
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    create_time BIGINT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE TABLE rules_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO rules_version (id, version) VALUES (1, 0);
";

/// The notification rules on PostgreSQL (`ctsd migrate` applies it).
pub static PG_SCHEMA: PgSchema = PgSchema {
    ledger: "notification_schema_migrations",
    migrations: &[PgMigration {
        version: 1,
        name: "notification rules and their version",
        sql: POSTGRES,
    }],
};

/// Longest time a node's matcher goes without reading the rules' version.
pub const RECHECK: Duration = Duration::from_secs(1);

/// What the rules refer to outside this store: topics (`cts-smn`) and the
/// identity store's groups and users. Errors are for the log.
pub trait Directory {
    /// Whether `topic_urn` is a topic or function URN of the project.
    fn topic_exists(&self, project_id: &str, topic_urn: &str) -> Result<bool, String>;
    /// The members of the domain's user group named `group`; `None` when
    /// the domain has no such group.
    fn group_members(
        &self,
        domain_id: &str,
        group: &str,
    ) -> Result<Option<Vec<ResolvedUser>>, String>;
}

/// The notifications of every project. Share it as `Arc<NotificationStore>`;
/// every method blocks (the database, durable): async callers use
/// `spawn_blocking`.
pub struct NotificationStore {
    db: Db,
    quota: u64,
    /// The enabled rules compiled, and the rules' version they are of.
    compiled: RwLock<(Arc<Matcher>, i64)>,
    /// When the version was last read; also serialises recompiles.
    checked: Mutex<Instant>,
}

impl std::fmt::Debug for NotificationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationStore")
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

fn db(code: &'static str) -> impl Fn(DbError) -> NotificationError {
    move |e| NotificationError::storage(code, e)
}

/// A database failure inside a rule write.
impl From<DbError> for NotificationError {
    fn from(e: DbError) -> Self {
        NotificationError::storage(codes::WRITE_FAILED, e)
    }
}

fn decode(row: Row) -> Result<Notification, NotificationError> {
    let unreadable = |e: String| NotificationError::storage(codes::READ_FAILED, e);
    let body = row
        .into_iter()
        .next()
        .ok_or_else(|| unreadable("a rule without its body".into()))?
        .into_text()
        .map_err(|e| unreadable(e.to_string()))?;
    serde_json::from_str(&body).map_err(|e| unreadable(format!("stored rule: {e}")))
}

fn load(db: &Db, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Notification>, NotificationError> {
    let rows = db.read(|s| s.query(sql, args)).map_err(db_read())?;
    rows.into_iter().map(decode).collect()
}

fn db_read() -> impl Fn(DbError) -> NotificationError {
    db(codes::READ_FAILED)
}

fn version(sql: &dyn Sql) -> Result<i64, DbError> {
    match sql.query_opt("SELECT version FROM rules_version WHERE id = 1", &[])? {
        Some(row) => row[0].int(),
        None => Ok(0),
    }
}

impl NotificationStore {
    /// Opens (creating on first use) `dir/rules.db`; `dir` is
    /// `DATA_DIR/notifications`. `quota`: notifications per project.
    pub fn open(dir: &Path, quota: u64) -> Result<NotificationStore, NotificationError> {
        let migrations = Migrations::new(vec![M::up(SQLITE_RULES), M::up(SQLITE_VERSION)]);
        let db = Db::sqlite(dir, "rules.db", &migrations).map_err(db(codes::WRITE_FAILED))?;
        NotificationStore::on(db, quota)
    }

    /// The store in the shared PostgreSQL database, migrated unless
    /// `auto_migrate` is off (then pending migrations refuse the start).
    pub fn open_postgres(
        pool: Pool,
        auto_migrate: bool,
        quota: u64,
    ) -> Result<NotificationStore, NotificationError> {
        let db = Db::postgres(pool, &PG_SCHEMA, auto_migrate).map_err(db(codes::WRITE_FAILED))?;
        NotificationStore::on(db, quota)
    }

    fn on(db: Db, quota: u64) -> Result<NotificationStore, NotificationError> {
        let store = NotificationStore {
            db,
            quota,
            compiled: RwLock::new((Arc::new(Matcher::default()), i64::MIN)),
            checked: Mutex::new(Instant::now()),
        };
        store.recompile(&mut store.checked.lock())?;
        Ok(store)
    }

    /// The enabled rules, compiled: those of this node's writes at once,
    /// other nodes' within [`RECHECK`]. A version that cannot be read
    /// leaves the matcher as it is (and is logged).
    pub fn matcher(&self) -> Arc<Matcher> {
        if let Some(mut checked) = self.checked.try_lock() {
            if checked.elapsed() >= RECHECK {
                let moved = self.db.read(version).map(|v| v != self.compiled.read().1);
                match moved {
                    Ok(false) => *checked = Instant::now(),
                    Ok(true) => {
                        if let Err(e) = self.recompile(&mut checked) {
                            tracing::warn!(error = %e, "notification rules not reloaded; retried");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "notification rules' version not read; retried")
                    }
                }
            }
        }
        Arc::clone(&self.compiled.read().0)
    }

    /// Compiles the rules as they are now, under the `checked` lock so that
    /// an older load never replaces a newer one. The version is read before
    /// the rules: a write in between is compiled in early and compiled
    /// again at the next check, never missed.
    fn recompile(&self, checked: &mut Instant) -> Result<(), NotificationError> {
        let version = self.db.read(version).map_err(db_read())?;
        let all = load(&self.db, "SELECT body FROM notifications", &[])?;
        *self.compiled.write() = (Arc::new(Matcher::compile(all)), version);
        *checked = Instant::now();
        Ok(())
    }

    /// Recompiles after a committed write of this node.
    fn written(&self) -> Result<(), NotificationError> {
        self.recompile(&mut self.checked.lock())
    }

    /// The users of `spec.notify_user_list`, each a member of its group.
    fn resolve(
        spec: &NotificationSpec,
        project_id: &str,
        domain_id: &str,
        dir: &dyn Directory,
    ) -> Result<Vec<ResolvedUser>, NotificationError> {
        let unreadable = |e: String| NotificationError::storage(codes::READ_FAILED, e);
        if let Some(topic) = &spec.topic_id {
            if !dir.topic_exists(project_id, topic).map_err(unreadable)? {
                return Err(NotificationError::field(
                    "topic_id",
                    format!(
                        "topic_id: {topic:?} is not a topic of this project (create it with \
                         POST /v2/{{project_id}}/notifications/topics)"
                    ),
                ));
            }
        }
        let mut users: Vec<ResolvedUser> = Vec::new();
        for (i, g) in spec.notify_user_list.iter().enumerate() {
            let path = format!("notify_user_list[{i}]");
            let Some(members) = dir
                .group_members(domain_id, &g.user_group)
                .map_err(unreadable)?
            else {
                return Err(NotificationError::field(
                    &format!("{path}.user_group"),
                    format!(
                        "{path}.user_group: no user group {:?} in this account",
                        g.user_group
                    ),
                ));
            };
            for (j, name) in g.user_list.iter().enumerate() {
                let Some(u) = members.iter().find(|m| &m.name == name) else {
                    return Err(NotificationError::field(
                        &format!("{path}.user_list[{j}]"),
                        format!(
                            "{path}.user_list[{j}]: {name:?} is not a user of the group {:?}",
                            g.user_group
                        ),
                    ));
                };
                if !users.contains(u) {
                    users.push(u.clone());
                }
            }
        }
        Ok(users)
    }

    /// Creates a notification: enabled when it names a topic, else
    /// disabled. `now_ms` is its create time and, when enabled, its `since`.
    pub fn create(
        &self,
        project_id: &str,
        domain_id: &str,
        spec: &NotificationSpec,
        now_ms: i64,
        dir: &dyn Directory,
    ) -> Result<Notification, NotificationError> {
        let users = Self::resolve(spec, project_id, domain_id, dir)?;
        let status = if spec.topic_id.is_some() {
            Status::Enabled
        } else {
            Status::Disabled
        };
        let key = Key {
            notification_id: uuid::Uuid::new_v4().to_string(),
            project_id: project_id.to_owned(),
            domain_id: domain_id.to_owned(),
            create_time: now_ms,
        };
        let n = rule(spec, users, status, now_ms, key);
        self.commit(&n, true)?;
        Ok(n)
    }

    /// Replaces the notification `spec.notification_id` names; returns it
    /// as it was and as it is. An enabled result gets `since = now_ms`
    /// (pick it before the change's trace is written).
    pub fn update(
        &self,
        project_id: &str,
        spec: &NotificationSpec,
        now_ms: i64,
        dir: &dyn Directory,
    ) -> Result<(Notification, Notification), NotificationError> {
        let id = spec.notification_id.as_deref().unwrap_or_default();
        let before = self.get(project_id, id)?;
        let users = Self::resolve(spec, project_id, &before.domain_id, dir)?;
        let status = spec.status.unwrap_or(before.status);
        let key = Key {
            notification_id: before.notification_id.clone(),
            project_id: before.project_id.clone(),
            domain_id: before.domain_id.clone(),
            create_time: before.create_time,
        };
        let after = rule(spec, users, status, now_ms, key);
        self.commit(&after, false)?;
        Ok((before, after))
    }

    /// Writes `n` (a new one within the quota, or over the stored one) in
    /// one transaction, then recompiles the matcher.
    fn commit(&self, n: &Notification, new: bool) -> Result<(), NotificationError> {
        self.db.transaction(|tx| {
            bump(tx)?;
            if new {
                let count = count(tx, &n.project_id)?;
                if count >= self.quota {
                    return Err(NotificationError::quota(self.quota));
                }
            }
            check_name_free(tx, n)?;
            // Parameters are numbered in the order of their first use.
            let (id, project, name, time, body) = (
                Arg::Text(&n.notification_id),
                Arg::Text(&n.project_id),
                Arg::Text(&n.notification_name),
                Arg::Int(n.create_time),
                Arg::Text(&encode(n)),
            );
            let changed = if new {
                tx.exec(
                    "INSERT INTO notifications (id, project_id, name, create_time, body) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[id, project, name, time, body],
                )?
            } else {
                tx.exec(
                    "UPDATE notifications SET name = $1, body = $2 \
                     WHERE id = $3 AND project_id = $4 AND create_time = $5",
                    &[name, body, id, project, time],
                )?
            };
            if changed == 0 {
                return Err(NotificationError::not_found(&n.notification_id));
            }
            Ok(())
        })?;
        self.written()
    }

    /// One notification of the project.
    pub fn get(&self, project_id: &str, id: &str) -> Result<Notification, NotificationError> {
        load(
            &self.db,
            "SELECT body FROM notifications WHERE id = $1 AND project_id = $2",
            &[Arg::Text(id), Arg::Text(project_id)],
        )?
        .pop()
        .ok_or_else(|| NotificationError::not_found(id))
    }

    /// The project's notifications of `kind` (and `name`), oldest first.
    pub fn list(
        &self,
        project_id: &str,
        kind: Option<NotificationType>,
        name: Option<&str>,
    ) -> Result<Vec<Notification>, NotificationError> {
        let all = load(
            &self.db,
            "SELECT body FROM notifications WHERE project_id = $1 \
             AND (CAST($2 AS TEXT) IS NULL OR name = $2) ORDER BY create_time, id",
            &[Arg::Text(project_id), name.into()],
        )?;
        Ok(all
            .into_iter()
            .filter(|n| kind.is_none_or(|k| n.notification_type() == k))
            .collect())
    }

    /// Deletes one notification of the project; returns it.
    pub fn delete(&self, project_id: &str, id: &str) -> Result<Notification, NotificationError> {
        let n = self.get(project_id, id)?;
        self.db.transaction(|tx| {
            bump(tx)?;
            let gone = tx.exec(
                "DELETE FROM notifications WHERE id = $1 AND project_id = $2",
                &[Arg::Text(id), Arg::Text(project_id)],
            )?;
            if gone == 0 {
                return Err(NotificationError::not_found(id));
            }
            Ok(())
        })?;
        self.written()?;
        Ok(n)
    }

    /// How many notifications the project has: the quota's `used`.
    pub fn count(&self, project_id: &str) -> Result<u64, NotificationError> {
        self.db
            .read(|sql| count(sql, project_id))
            .map_err(db_read())
    }
}

/// Moves the rules' version on; first in every rule write, so that its row
/// lock orders the writes of every node.
fn bump(tx: &dyn Sql) -> Result<(), DbError> {
    tx.exec(
        "UPDATE rules_version SET version = version + 1 WHERE id = 1",
        &[],
    )?;
    Ok(())
}

fn count(sql: &dyn Sql, project_id: &str) -> Result<u64, DbError> {
    let row = sql.query_opt(
        "SELECT count(*) FROM notifications WHERE project_id = $1",
        &[Arg::Text(project_id)],
    )?;
    Ok(row.map(|r| r[0].int()).transpose()?.unwrap_or(0) as u64)
}

/// What a notification keeps whatever its changes.
struct Key {
    notification_id: String,
    project_id: String,
    domain_id: String,
    create_time: i64,
}

/// The notification `spec` describes, with `key`.
fn rule(
    spec: &NotificationSpec,
    users: Vec<ResolvedUser>,
    status: Status,
    now_ms: i64,
    key: Key,
) -> Notification {
    Notification {
        notification_id: key.notification_id,
        project_id: key.project_id,
        domain_id: key.domain_id,
        notification_name: spec.notification_name.clone(),
        operation_type: spec.operation_type,
        operations: spec.operations.clone(),
        notify_user_list: spec.notify_user_list.clone(),
        users,
        topic_id: spec.topic_id.clone(),
        filter: spec.filter.clone(),
        status,
        create_time: key.create_time,
        since: (status == Status::Enabled).then_some(now_ms),
    }
}

fn encode(n: &Notification) -> String {
    serde_json::to_string(n).expect("a notification serializes")
}

fn check_name_free(tx: &dyn Sql, n: &Notification) -> Result<(), NotificationError> {
    let other = tx.query_opt(
        "SELECT id FROM notifications WHERE project_id = $1 AND name = $2 AND id != $3",
        &[
            Arg::Text(&n.project_id),
            Arg::Text(&n.notification_name),
            Arg::Text(&n.notification_id),
        ],
    )?;
    match other {
        Some(_) => Err(NotificationError::name_taken(&n.notification_name)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;

impl NotificationStore {
    /// Copies every rule `target` lacks into it (`ctsd migrate-from-embedded`),
    /// moving the rules' version on so that every node recompiles its
    /// matcher within [`RECHECK`].
    pub fn copy_into(&self, target: &NotificationStore) -> Result<Copied, NotificationError> {
        const COLUMNS: [&str; 5] = ["id", "project_id", "name", "create_time", "body"];
        let copied = self.db.read(|from| {
            target.db.transaction(|to| {
                bump(to)?;
                copy_rows(
                    from,
                    to,
                    "notifications",
                    &COLUMNS,
                    |_| Ok::<_, DbError>(()),
                )
            })
        })?;
        Ok(copied)
    }
}
