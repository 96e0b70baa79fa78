//! The topic store: topics, functions registered as topics, and their
//! subscriptions, per project.

use std::path::Path;

use parking_lot::Mutex;
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::db::{self, now_ms};
use crate::error::SmnError;
use crate::model::{
    check_display_name, check_endpoint, check_function_urn, check_topic_name, topic_urn, Protocol,
    Subscription, Topic, TopicKind, MAX_SUBSCRIPTIONS, MAX_TOPICS,
};

/// Topics and subscriptions of every project. Share it as an `Arc`; every
/// method blocks on SQLite (async callers use `spawn_blocking`).
pub struct TopicStore {
    conn: Mutex<Connection>,
    /// Woken by every change of the subscriptions, so the delivery serves
    /// a new subscription at once.
    changes: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for TopicStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicStore").finish_non_exhaustive()
    }
}

const TOPIC_COLUMNS: &str = "urn, project_id, name, display_name, kind, created_ms";
const SUBSCRIPTION_COLUMNS: &str =
    "s.urn, s.topic_urn, t.project_id, s.protocol, s.endpoint, s.remark, s.secret, s.created_ms";

impl TopicStore {
    /// Opens (creating on first use) the store in `dir`
    /// (`DATA_DIR/notifications`).
    pub fn open(dir: &Path) -> Result<TopicStore, SmnError> {
        Ok(TopicStore {
            conn: Mutex::new(db::open(dir)?),
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    /// A receiver that sees every later change of the subscriptions.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Creates topic `name` of `project_id`, whose region is `region` (URN
    /// `urn:smn:{region}:{project_id}:{name}`).
    pub fn create_topic(
        &self,
        project_id: &str,
        region: &str,
        name: &str,
        display_name: &str,
    ) -> Result<Topic, SmnError> {
        check_topic_name(name)?;
        check_display_name(display_name)?;
        self.insert_topic(Topic {
            urn: topic_urn(region, project_id, name),
            project_id: project_id.to_owned(),
            name: name.to_owned(),
            display_name: display_name.to_owned(),
            kind: TopicKind::Smn,
            created_ms: now_ms(),
        })
    }

    /// Registers a FunctionGraph function URN as a topic: its subscriptions
    /// (HTTP(S) only) are the endpoints that run the function.
    pub fn register_function(
        &self,
        project_id: &str,
        function_urn: &str,
    ) -> Result<Topic, SmnError> {
        let name = check_function_urn(project_id, function_urn)?;
        self.insert_topic(Topic {
            urn: function_urn.to_owned(),
            project_id: project_id.to_owned(),
            name: name.to_owned(),
            display_name: String::new(),
            kind: TopicKind::Function,
            created_ms: now_ms(),
        })
    }

    fn insert_topic(&self, topic: Topic) -> Result<Topic, SmnError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let count: usize = tx.query_row(
            "SELECT count(*) FROM topics WHERE project_id = ?1",
            [&topic.project_id],
            |r| r.get(0),
        )?;
        if count >= MAX_TOPICS {
            return Err(SmnError::Quota {
                what: "topics per project",
                limit: MAX_TOPICS,
            });
        }
        let inserted = tx.execute(
            &format!(
                "INSERT OR IGNORE INTO topics ({TOPIC_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            params![
                topic.urn,
                topic.project_id,
                topic.name,
                topic.display_name,
                topic.kind.as_str(),
                topic.created_ms
            ],
        )?;
        if inserted == 0 {
            return Err(SmnError::TopicExists(topic.urn));
        }
        tx.commit()?;
        Ok(topic)
    }

    /// The project's topic `urn`, if it has one: what a notification's
    /// `topic_id` must name.
    pub fn resolve(&self, project_id: &str, urn: &str) -> Result<Option<Topic>, SmnError> {
        Ok(self
            .conn
            .lock()
            .query_row(
                &format!("SELECT {TOPIC_COLUMNS} FROM topics WHERE urn = ?1 AND project_id = ?2"),
                [urn, project_id],
                topic_of,
            )
            .optional()?)
    }

    /// The project's topics, oldest first.
    pub fn topics(&self, project_id: &str) -> Result<Vec<Topic>, SmnError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TOPIC_COLUMNS} FROM topics WHERE project_id = ?1 ORDER BY created_ms, rowid"
        ))?;
        let rows = stmt.query_map([project_id], topic_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes a topic with its subscriptions and their pending deliveries.
    pub fn delete_topic(&self, project_id: &str, urn: &str) -> Result<Topic, SmnError> {
        let topic = self
            .resolve(project_id, urn)?
            .ok_or_else(|| SmnError::TopicNotFound(urn.to_owned()))?;
        self.conn.lock().execute(
            "DELETE FROM topics WHERE urn = ?1 AND project_id = ?2",
            [urn, project_id],
        )?;
        self.changed();
        Ok(topic)
    }

    /// Subscribes `endpoint` to the project's topic `topic_urn`, with a new
    /// random signing secret.
    pub fn subscribe(
        &self,
        project_id: &str,
        topic_urn: &str,
        protocol: Protocol,
        endpoint: &str,
        remark: &str,
    ) -> Result<Subscription, SmnError> {
        check_endpoint(protocol, endpoint)?;
        if remark.len() >= 128 {
            return Err(SmnError::invalid(
                "remark",
                "must be shorter than 128 bytes",
            ));
        }
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let kind: Option<String> = tx
            .query_row(
                "SELECT kind FROM topics WHERE urn = ?1 AND project_id = ?2",
                [topic_urn, project_id],
                |r| r.get(0),
            )
            .optional()?;
        let kind = kind.ok_or_else(|| SmnError::TopicNotFound(topic_urn.to_owned()))?;
        if kind == TopicKind::Function.as_str() && protocol == Protocol::Email {
            return Err(SmnError::invalid(
                "protocol",
                "a function is reached over http or https, not email",
            ));
        }
        let count: usize = tx.query_row(
            "SELECT count(*) FROM subscriptions WHERE topic_urn = ?1",
            [topic_urn],
            |r| r.get(0),
        )?;
        if count >= MAX_SUBSCRIPTIONS {
            return Err(SmnError::Quota {
                what: "subscriptions per topic",
                limit: MAX_SUBSCRIPTIONS,
            });
        }
        let sub = Subscription {
            urn: format!("{topic_urn}:{}", uuid::Uuid::new_v4().simple()),
            topic_urn: topic_urn.to_owned(),
            project_id: project_id.to_owned(),
            protocol,
            endpoint: endpoint.to_owned(),
            remark: remark.to_owned(),
            secret: new_secret(),
            created_ms: now_ms(),
        };
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO subscriptions \
             (urn, topic_urn, protocol, endpoint, remark, secret, created_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                sub.urn,
                sub.topic_urn,
                protocol.as_str(),
                sub.endpoint,
                sub.remark,
                sub.secret,
                sub.created_ms
            ],
        )?;
        if inserted == 0 {
            return Err(SmnError::SubscriptionExists {
                topic: sub.topic_urn,
                protocol: protocol.as_str(),
                endpoint: sub.endpoint,
            });
        }
        tx.commit()?;
        self.changed();
        Ok(sub)
    }

    /// The subscriptions of the project's topic `topic_urn`, oldest first.
    pub fn subscriptions(
        &self,
        project_id: &str,
        topic_urn: &str,
    ) -> Result<Vec<Subscription>, SmnError> {
        if self.resolve(project_id, topic_urn)?.is_none() {
            return Err(SmnError::TopicNotFound(topic_urn.to_owned()));
        }
        self.query_subscriptions("WHERE s.topic_urn = ?1", [topic_urn])
    }

    /// Every subscription of every project: what the delivery workers serve.
    pub fn all_subscriptions(&self) -> Result<Vec<Subscription>, SmnError> {
        self.query_subscriptions("", [])
    }

    /// The project's subscription `urn`, if it has one.
    pub fn subscription(
        &self,
        project_id: &str,
        urn: &str,
    ) -> Result<Option<Subscription>, SmnError> {
        let mut found =
            self.query_subscriptions("WHERE s.urn = ?1 AND t.project_id = ?2", [urn, project_id])?;
        Ok(found.pop())
    }

    /// Removes a subscription and its pending deliveries.
    pub fn unsubscribe(&self, project_id: &str, urn: &str) -> Result<Subscription, SmnError> {
        let sub = self
            .subscription(project_id, urn)?
            .ok_or_else(|| SmnError::SubscriptionNotFound(urn.to_owned()))?;
        self.conn
            .lock()
            .execute("DELETE FROM subscriptions WHERE urn = ?1", [urn])?;
        self.changed();
        Ok(sub)
    }

    fn query_subscriptions<P: rusqlite::Params>(
        &self,
        filter: &str,
        params: P,
    ) -> Result<Vec<Subscription>, SmnError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s \
             JOIN topics t ON t.urn = s.topic_urn {filter} ORDER BY s.created_ms, s.rowid"
        ))?;
        let rows = stmt.query_map(params, subscription_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    hex::encode(key)
}

fn topic_of(r: &Row<'_>) -> rusqlite::Result<Topic> {
    let kind: String = r.get(4)?;
    Ok(Topic {
        urn: r.get(0)?,
        project_id: r.get(1)?,
        name: r.get(2)?,
        display_name: r.get(3)?,
        kind: TopicKind::parse(&kind).ok_or_else(|| bad_column(4, &kind))?,
        created_ms: r.get(5)?,
    })
}

fn subscription_of(r: &Row<'_>) -> rusqlite::Result<Subscription> {
    let protocol: String = r.get(3)?;
    Ok(Subscription {
        urn: r.get(0)?,
        topic_urn: r.get(1)?,
        project_id: r.get(2)?,
        protocol: Protocol::parse(&protocol).map_err(|_| bad_column(3, &protocol))?,
        endpoint: r.get(4)?,
        remark: r.get(5)?,
        secret: r.get(6)?,
        created_ms: r.get(7)?,
    })
}

fn bad_column(index: usize, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        format!("unknown value {value:?}").into(),
    )
}
