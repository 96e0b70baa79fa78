//! The notification store: SQLite (`DATA_DIR/notifications/rules.db`,
//! opened the one way `cts-sqlite` opens every database) for durability,
//! and the compiled [`Matcher`] of the enabled rules, rebuilt by every
//! write before it returns.

use std::path::Path;
use std::sync::Arc;

use cts_sqlite::{Migrations, M};
use parking_lot::{Mutex, RwLock};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{codes, NotificationError};
use crate::matcher::Matcher;
use crate::model::{Notification, NotificationType, ResolvedUser, Status};
use crate::request::NotificationSpec;

/// The rule itself is the JSON `body` (its storage form); the columns beside
/// it are what lookups and constraints need.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (project_id, name)
);
";

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
/// every method blocks (SQLite, fsync'd): async callers use `spawn_blocking`.
pub struct NotificationStore {
    conn: Mutex<Connection>,
    quota: u64,
    /// The enabled rules compiled, replaced by every write.
    matcher: RwLock<Arc<Matcher>>,
}

impl std::fmt::Debug for NotificationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationStore")
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

fn db(code: &'static str) -> impl Fn(rusqlite::Error) -> NotificationError {
    move |e| NotificationError::storage(code, e)
}

fn decode(body: String) -> Result<Notification, NotificationError> {
    serde_json::from_str(&body)
        .map_err(|e| NotificationError::storage(codes::READ_FAILED, format!("stored rule: {e}")))
}

fn load(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Notification>, NotificationError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db(codes::READ_FAILED))?;
    let bodies = stmt
        .query_map(args, |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(db(codes::READ_FAILED))?;
    bodies.into_iter().map(decode).collect()
}

impl NotificationStore {
    /// Opens (creating on first use) `dir/rules.db`; `dir` is
    /// `DATA_DIR/notifications`. `quota`: notifications per project.
    pub fn open(dir: &Path, quota: u64) -> Result<NotificationStore, NotificationError> {
        let conn = cts_sqlite::open(dir, "rules.db", &Migrations::new(vec![M::up(SCHEMA)]))
            .map_err(|e| NotificationError::storage(codes::WRITE_FAILED, e))?;
        let all = load(&conn, "SELECT body FROM notifications", &[])?;
        Ok(NotificationStore {
            conn: Mutex::new(conn),
            quota,
            matcher: RwLock::new(Arc::new(Matcher::compile(all))),
        })
    }

    /// The enabled rules, compiled.
    pub fn matcher(&self) -> Arc<Matcher> {
        Arc::clone(&self.matcher.read())
    }

    /// Recompiles after a committed change, still under the connection
    /// lock so that matchers follow the commits in order.
    fn recompile(&self, conn: &Connection) -> Result<(), NotificationError> {
        let all = load(conn, "SELECT body FROM notifications", &[])?;
        *self.matcher.write() = Arc::new(Matcher::compile(all));
        Ok(())
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
        let mut conn = self.conn.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db(codes::WRITE_FAILED))?;
        if new {
            let count: i64 = tx
                .query_row(
                    "SELECT count(*) FROM notifications WHERE project_id = ?1",
                    [&n.project_id],
                    |r| r.get(0),
                )
                .map_err(db(codes::WRITE_FAILED))?;
            if count as u64 >= self.quota {
                return Err(NotificationError::quota(self.quota));
            }
        }
        check_name_free(&tx, n)?;
        let sql = if new {
            "INSERT INTO notifications (id, project_id, name, create_time, body) \
             VALUES (?1, ?2, ?3, ?4, ?5)"
        } else {
            "UPDATE notifications SET name = ?3, body = ?5 \
             WHERE id = ?1 AND project_id = ?2 AND create_time = ?4"
        };
        let changed = tx
            .execute(
                sql,
                params![
                    n.notification_id,
                    n.project_id,
                    n.notification_name,
                    n.create_time,
                    encode(n)
                ],
            )
            .map_err(db(codes::WRITE_FAILED))?;
        if changed == 0 {
            return Err(NotificationError::not_found(&n.notification_id));
        }
        tx.commit().map_err(db(codes::WRITE_FAILED))?;
        self.recompile(&conn)
    }

    /// One notification of the project.
    pub fn get(&self, project_id: &str, id: &str) -> Result<Notification, NotificationError> {
        let conn = self.conn.lock();
        let body: Option<String> = conn
            .query_row(
                "SELECT body FROM notifications WHERE id = ?1 AND project_id = ?2",
                [id, project_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db(codes::READ_FAILED))?;
        body.map(decode)
            .unwrap_or_else(|| Err(NotificationError::not_found(id)))
    }

    /// The project's notifications of `kind` (and `name`), oldest first.
    pub fn list(
        &self,
        project_id: &str,
        kind: Option<NotificationType>,
        name: Option<&str>,
    ) -> Result<Vec<Notification>, NotificationError> {
        let conn = self.conn.lock();
        let all = match name {
            Some(n) => load(
                &conn,
                "SELECT body FROM notifications WHERE project_id = ?1 AND name = ?2",
                &[&project_id, &n],
            )?,
            None => load(
                &conn,
                "SELECT body FROM notifications WHERE project_id = ?1 ORDER BY create_time, id",
                &[&project_id],
            )?,
        };
        Ok(all
            .into_iter()
            .filter(|n| kind.is_none_or(|k| n.notification_type() == k))
            .collect())
    }

    /// Deletes one notification of the project; returns it.
    pub fn delete(&self, project_id: &str, id: &str) -> Result<Notification, NotificationError> {
        let n = self.get(project_id, id)?;
        let conn = self.conn.lock();
        let gone = conn
            .execute(
                "DELETE FROM notifications WHERE id = ?1 AND project_id = ?2",
                [id, project_id],
            )
            .map_err(db(codes::WRITE_FAILED))?;
        if gone == 0 {
            return Err(NotificationError::not_found(id));
        }
        self.recompile(&conn)?;
        Ok(n)
    }

    /// How many notifications the project has: the quota's `used`.
    pub fn count(&self, project_id: &str) -> Result<u64, NotificationError> {
        let conn = self.conn.lock();
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM notifications WHERE project_id = ?1",
                [project_id],
                |r| r.get(0),
            )
            .map_err(db(codes::READ_FAILED))?;
        Ok(n as u64)
    }
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

fn check_name_free(conn: &Connection, n: &Notification) -> Result<(), NotificationError> {
    let other: Option<String> = conn
        .query_row(
            "SELECT id FROM notifications WHERE project_id = ?1 AND name = ?2 AND id != ?3",
            [&n.project_id, &n.notification_name, &n.notification_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(db(codes::WRITE_FAILED))?;
    match other {
        Some(_) => Err(NotificationError::name_taken(&n.notification_name)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
