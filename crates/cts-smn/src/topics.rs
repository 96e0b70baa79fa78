//! The topic store: topics, functions registered as topics, and their
//! subscriptions, per project.

use std::path::Path;

use cts_db::{Arg, Db, Row, SecretKey, Sql};
use rand::RngCore;

use crate::db::{self, now_ms};
use crate::error::SmnError;
use crate::model::{
    check_display_name, check_endpoint, check_function_urn, check_topic_name, topic_urn, Protocol,
    Subscription, Topic, TopicKind, MAX_SUBSCRIPTIONS, MAX_TOPICS,
};

/// Topics and subscriptions of every project. Share it as an `Arc`; every
/// method blocks on the database (async callers use `spawn_blocking`).
pub struct TopicStore {
    db: Db,
    /// Seals the subscriptions' signing secrets where nodes share them
    /// (PostgreSQL); `None`: in the clear (the embedded node's 0600 file).
    secrets: Option<SecretKey>,
    /// Woken by every change of the subscriptions made through this
    /// store, so the delivery serves a new subscription at once.
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
    /// Opens (creating on first use) the embedded store in `dir`
    /// (`DATA_DIR/notifications`).
    pub fn open(dir: &Path) -> Result<TopicStore, SmnError> {
        Ok(TopicStore::on(db::open_embedded(dir)?))
    }

    /// The store on `db` ([`crate::open_embedded`], [`crate::open_postgres`]).
    pub fn on(db: Db) -> TopicStore {
        TopicStore {
            db,
            secrets: None,
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The store on `db`, the subscriptions' signing secrets sealed under
    /// `key` ([`SECRET_PURPOSE`] of `store.secret_key`). Seals the secrets
    /// still in the clear (written before, or copied by a move), and
    /// refuses a key other than the one the stored secrets were sealed
    /// under, naming the setting.
    pub fn sealed(db: Db, key: SecretKey) -> Result<TopicStore, SmnError> {
        db.transaction(|tx| {
            for row in tx.query("SELECT urn, secret FROM subscriptions", &[])? {
                let (urn, secret) = (row[0].text()?, row[1].text()?);
                if !SecretKey::is_sealed(secret) {
                    tx.exec(
                        "UPDATE subscriptions SET secret = $1 WHERE urn = $2 AND secret = $3",
                        &[
                            Arg::Text(&key.seal(secret.as_bytes(), urn.as_bytes())),
                            Arg::Text(urn),
                            Arg::Text(secret),
                        ],
                    )?;
                } else if key.open(secret, urn.as_bytes()).is_err() {
                    return Err(SmnError::Storage(format!(
                        "the signing secret of subscription {urn} is sealed under another \
                         store.secret_key (this node's key has fingerprint {}): give every \
                         node the same key",
                        key.fingerprint()
                    )));
                }
            }
            Ok(())
        })?;
        Ok(TopicStore {
            secrets: Some(key),
            ..TopicStore::on(db)
        })
    }

    /// A receiver that sees every later change of the subscriptions made
    /// through this store (other nodes' changes are found by polling).
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
        self.db.transaction(|tx| {
            let count = count(
                tx,
                "SELECT count(*) FROM topics WHERE project_id = $1",
                &[Arg::Text(&topic.project_id)],
            )?;
            if count >= MAX_TOPICS {
                return Err(SmnError::Quota {
                    what: "topics per project",
                    limit: MAX_TOPICS,
                });
            }
            let inserted = tx.exec(
                &format!(
                    "INSERT INTO topics ({TOPIC_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT DO NOTHING"
                ),
                &[
                    Arg::Text(&topic.urn),
                    Arg::Text(&topic.project_id),
                    Arg::Text(&topic.name),
                    Arg::Text(&topic.display_name),
                    Arg::Text(topic.kind.as_str()),
                    Arg::Int(topic.created_ms),
                ],
            )?;
            if inserted == 0 {
                return Err(SmnError::TopicExists(topic.urn.clone()));
            }
            Ok(())
        })?;
        Ok(topic)
    }

    /// The project's topic `urn`, if it has one: what a notification's
    /// `topic_id` must name.
    pub fn resolve(&self, project_id: &str, urn: &str) -> Result<Option<Topic>, SmnError> {
        let row = self.db.read(|sql| {
            sql.query_opt(
                &format!("SELECT {TOPIC_COLUMNS} FROM topics WHERE urn = $1 AND project_id = $2"),
                &[Arg::Text(urn), Arg::Text(project_id)],
            )
        })?;
        row.map(topic_of).transpose()
    }

    /// The project's topics, oldest first.
    pub fn topics(&self, project_id: &str) -> Result<Vec<Topic>, SmnError> {
        let rows = self.db.read(|sql| {
            sql.query(
                &format!(
                    "SELECT {TOPIC_COLUMNS} FROM topics WHERE project_id = $1 \
                     ORDER BY created_ms, rowid"
                ),
                &[Arg::Text(project_id)],
            )
        })?;
        rows.into_iter().map(topic_of).collect()
    }

    /// Deletes a topic with its subscriptions and their pending deliveries.
    pub fn delete_topic(&self, project_id: &str, urn: &str) -> Result<Topic, SmnError> {
        let topic = self
            .resolve(project_id, urn)?
            .ok_or_else(|| SmnError::TopicNotFound(urn.to_owned()))?;
        self.db.transaction(|tx| {
            tx.exec(
                "DELETE FROM topics WHERE urn = $1 AND project_id = $2",
                &[Arg::Text(urn), Arg::Text(project_id)],
            )
        })?;
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
        let sub = self.db.transaction(|tx| {
            let kind = tx
                .query_opt(
                    "SELECT kind FROM topics WHERE urn = $1 AND project_id = $2",
                    &[Arg::Text(topic_urn), Arg::Text(project_id)],
                )?
                .ok_or_else(|| SmnError::TopicNotFound(topic_urn.to_owned()))?;
            if kind[0].text()? == TopicKind::Function.as_str() && protocol == Protocol::Email {
                return Err(SmnError::invalid(
                    "protocol",
                    "a function is reached over http or https, not email",
                ));
            }
            let count = count(
                tx,
                "SELECT count(*) FROM subscriptions WHERE topic_urn = $1",
                &[Arg::Text(topic_urn)],
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
            let inserted = tx.exec(
                "INSERT INTO subscriptions \
                 (urn, topic_urn, protocol, endpoint, remark, secret, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    Arg::Text(&sub.urn),
                    Arg::Text(&sub.topic_urn),
                    Arg::Text(protocol.as_str()),
                    Arg::Text(&sub.endpoint),
                    Arg::Text(&sub.remark),
                    Arg::Text(&stored_secret(self.secrets.as_ref(), &sub.urn, &sub.secret)),
                    Arg::Int(sub.created_ms),
                ],
            )?;
            if inserted == 0 {
                return Err(SmnError::SubscriptionExists {
                    topic: sub.topic_urn,
                    protocol: protocol.as_str(),
                    endpoint: sub.endpoint,
                });
            }
            Ok(sub)
        })?;
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
        self.query_subscriptions("WHERE s.topic_urn = $1", &[Arg::Text(topic_urn)])
    }

    /// Every subscription of every project: what the delivery workers serve.
    pub fn all_subscriptions(&self) -> Result<Vec<Subscription>, SmnError> {
        self.query_subscriptions("", &[])
    }

    /// The project's subscription `urn`, if it has one.
    pub fn subscription(
        &self,
        project_id: &str,
        urn: &str,
    ) -> Result<Option<Subscription>, SmnError> {
        let mut found = self.query_subscriptions(
            "WHERE s.urn = $1 AND t.project_id = $2",
            &[Arg::Text(urn), Arg::Text(project_id)],
        )?;
        Ok(found.pop())
    }

    /// Removes a subscription and its pending deliveries.
    pub fn unsubscribe(&self, project_id: &str, urn: &str) -> Result<Subscription, SmnError> {
        let sub = self
            .subscription(project_id, urn)?
            .ok_or_else(|| SmnError::SubscriptionNotFound(urn.to_owned()))?;
        self.db.transaction(|tx| {
            tx.exec(
                "DELETE FROM subscriptions WHERE urn = $1",
                &[Arg::Text(urn)],
            )
        })?;
        self.changed();
        Ok(sub)
    }

    fn query_subscriptions(
        &self,
        filter: &str,
        args: &[Arg<'_>],
    ) -> Result<Vec<Subscription>, SmnError> {
        let rows = self.db.read(|sql| {
            sql.query(
                &format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s \
                     JOIN topics t ON t.urn = s.topic_urn {filter} \
                     ORDER BY s.created_ms, s.rowid"
                ),
                args,
            )
        })?;
        rows.into_iter()
            .map(|row| subscription_of(row, self.secrets.as_ref()))
            .collect()
    }
}

/// The one integer a `count(*)` answers.
pub(crate) fn count(sql: &dyn Sql, query: &str, args: &[Arg<'_>]) -> Result<usize, SmnError> {
    let n = match sql.query_opt(query, args)? {
        Some(row) => row[0].int()?,
        None => 0,
    };
    Ok(usize::try_from(n).unwrap_or(0))
}

fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    hex::encode(key)
}

fn topic_of(row: Row) -> Result<Topic, SmnError> {
    let [urn, project_id, name, display_name, kind, created_ms]: [cts_db::Val; 6] =
        row.try_into().map_err(|_| shape("topic"))?;
    let kind = kind.into_text()?;
    Ok(Topic {
        urn: urn.into_text()?,
        project_id: project_id.into_text()?,
        name: name.into_text()?,
        display_name: display_name.into_text()?,
        kind: TopicKind::parse(&kind).ok_or_else(|| unknown("topic kind", &kind))?,
        created_ms: created_ms.int()?,
    })
}

/// What purpose the subscriptions' signing secrets derive their key for
/// ([`SecretKey::derive`]).
pub const SECRET_PURPOSE: &str = "cts-smn subscription signing secrets";

/// A signing secret as the store keeps it: sealed (bound to its
/// subscription) when the store has a key.
pub(crate) fn stored_secret(key: Option<&SecretKey>, urn: &str, secret: &str) -> String {
    match key {
        Some(key) => key.seal(secret.as_bytes(), urn.as_bytes()),
        None => secret.to_owned(),
    }
}

fn subscription_of(row: Row, key: Option<&SecretKey>) -> Result<Subscription, SmnError> {
    let [urn, topic_urn, project_id, protocol, endpoint, remark, secret, created_ms]: [cts_db::Val;
        8] = row.try_into().map_err(|_| shape("subscription"))?;
    let protocol = protocol.into_text()?;
    let urn = urn.into_text()?;
    Ok(Subscription {
        secret: open_secret(key, &urn, secret.into_text()?)?,
        urn,
        topic_urn: topic_urn.into_text()?,
        project_id: project_id.into_text()?,
        protocol: Protocol::parse(&protocol).map_err(|_| unknown("protocol", &protocol))?,
        endpoint: endpoint.into_text()?,
        remark: remark.into_text()?,
        created_ms: created_ms.int()?,
    })
}

/// A stored signing secret opened: a sealed one needs the key it was
/// sealed under.
fn open_secret(key: Option<&SecretKey>, urn: &str, stored: String) -> Result<String, SmnError> {
    if !SecretKey::is_sealed(&stored) {
        return Ok(stored);
    }
    let unsealed = match key {
        Some(key) => key.open(&stored, urn.as_bytes()).map_err(|e| e.to_string()),
        None => Err("store.secret_key is not set".to_owned()),
    };
    unsealed
        .and_then(|b| String::from_utf8(b).map_err(|e| e.to_string()))
        .map_err(|e| {
            SmnError::Storage(format!(
                "the signing secret of subscription {urn} does not open: {e}"
            ))
        })
}

/// A stored row of another number of columns than its query selects.
pub(crate) fn shape(what: &str) -> SmnError {
    SmnError::Storage(format!("a stored {what} of an unexpected shape"))
}

/// A stored value outside its set.
pub(crate) fn unknown(what: &str, value: &str) -> SmnError {
    SmnError::Storage(format!("unknown {what} {value:?}"))
}
