//! The durable outbox: messages the notification rules produced, and one
//! delivery per (message, subscription) with its state.
//!
//! Fan-out happens at enqueue time, in the enqueue's transaction: a message
//! goes to the subscriptions its topic has when it is enqueued (like SMN, a
//! later subscription does not receive earlier messages), and each
//! subscription's deliveries carry their own state, so one failing endpoint
//! holds back only its own queue. A delivery is `pending` until it is
//! `delivered` or, after its retry window, `dead`.

use std::path::Path;

use cts_db::{Arg, Db, Row, Val};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::db::{self, now_ms};
use crate::error::SmnError;
use crate::topics::{count, shape, unknown};

/// A message for a topic, as the notification matcher produces it.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    /// Stable across retries of the producer: enqueueing the same id again
    /// changes nothing (at-least-once producers, exactly one message).
    pub message_id: String,
    pub project_id: String,
    /// A topic or function URN of `project_id`.
    pub topic_urn: String,
    pub notification_id: String,
    pub notification_name: String,
    /// The trace as stored (JSON).
    pub trace: Box<RawValue>,
}

/// What an enqueue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enqueued {
    /// Messages stored (the others were already there).
    pub messages: usize,
    /// Deliveries created for them.
    pub deliveries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "dead" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

/// One message on its way to one subscription.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    /// The message's position in the outbox: a subscription receives its
    /// messages in this order.
    pub seq: i64,
    pub message_id: String,
    pub subscription_urn: String,
    pub topic_urn: String,
    pub notification_id: String,
    pub notification_name: String,
    pub state: DeliveryState,
    pub attempts: u32,
    /// Unix milliseconds: when the message was enqueued, when the next
    /// attempt is due, when it was delivered or given up.
    pub created_ms: i64,
    pub next_ms: i64,
    pub done_ms: Option<i64>,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub trace: String,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Failed; try again at `next_ms`.
    Retry {
        next_ms: i64,
        error: String,
    },
    /// Failed for the last time.
    Dead {
        error: String,
    },
}

/// The lease an attempt's record is fenced by (several nodes): the lease
/// row of `consumer` for the subscription must be `holder`'s and unexpired,
/// and stays locked until the record commits, so no takeover passes it.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub consumer: &'a str,
    pub holder: &'a str,
}

/// Totals of every project, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub pending: u64,
    pub dead: u64,
    /// Enqueue time (Unix ms) of the oldest pending delivery.
    pub oldest_pending_ms: Option<i64>,
}

/// How long finished deliveries are kept (see [`Outbox::prune`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// After delivery, in ms.
    pub delivered_ms: i64,
    /// After a delivery was given up, in ms.
    pub dead_ms: i64,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub delivered: u64,
    pub dead: u64,
    /// Messages left without any delivery.
    pub messages: u64,
}

/// Rows removed per transaction: the connection is shared with enqueue and
/// the delivery workers, which wait at most one such batch.
const PRUNE_BATCH: i64 = 1000;

/// The outbox. Share it as an `Arc`; every method blocks on the database
/// (async callers use `spawn_blocking`). Writes are durable before they
/// return (SQLite: WAL, `synchronous=FULL`; PostgreSQL: committed): an
/// enqueued message survives a crash.
pub struct Outbox {
    db: Db,
    /// Bumped after each commit through this outbox that created
    /// deliveries: the delivery workers wait on it instead of polling.
    enqueued: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

const DELIVERY_COLUMNS: &str = "d.seq, m.message_id, d.subscription_urn, m.topic_urn, \
     m.notification_id, m.notification_name, d.state, d.attempts, m.created_ms, d.next_ms, \
     d.done_ms, d.last_error, m.trace";

impl Outbox {
    /// Opens (creating on first use) the embedded outbox in `dir`
    /// (`DATA_DIR/notifications`, beside the topics it fans out to).
    pub fn open(dir: &Path) -> Result<Outbox, SmnError> {
        Ok(Outbox::on(db::open_embedded(dir)?))
    }

    /// The outbox on `db`, the database of the topics it fans out to.
    pub fn on(db: Db) -> Outbox {
        Outbox {
            db,
            enqueued: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Whether other nodes enqueue into this outbox too (PostgreSQL): then
    /// [`Outbox::watch`] does not see every enqueue, and workers poll.
    pub fn is_shared(&self) -> bool {
        self.db.is_postgres()
    }

    /// A receiver that sees every later enqueue through this outbox that
    /// created deliveries.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.enqueued.subscribe()
    }

    /// Stores `msgs` and their deliveries in one transaction; a message
    /// whose id is already stored (by this node or another) is left as it
    /// is.
    pub fn enqueue(&self, msgs: Vec<OutboxMessage>) -> Result<Enqueued, SmnError> {
        let now = now_ms();
        let done = self.db.transaction(|tx| {
            let mut done = Enqueued::default();
            for m in &msgs {
                let stored = tx.query_opt(
                    "INSERT INTO messages (message_id, project_id, topic_urn, \
                     notification_id, notification_name, trace, created_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (message_id) DO NOTHING RETURNING seq",
                    &[
                        Arg::Text(&m.message_id),
                        Arg::Text(&m.project_id),
                        Arg::Text(&m.topic_urn),
                        Arg::Text(&m.notification_id),
                        Arg::Text(&m.notification_name),
                        Arg::Text(m.trace.get()),
                        Arg::Int(now),
                    ],
                )?;
                let Some(seq) = stored else {
                    continue;
                };
                done.messages += 1;
                let fanned = tx.exec(
                    "INSERT INTO deliveries (subscription_urn, seq, state, attempts, next_ms) \
                     SELECT s.urn, CAST($1 AS BIGINT), 'pending', 0, CAST($2 AS BIGINT) \
                     FROM subscriptions s JOIN topics t ON t.urn = s.topic_urn \
                     WHERE t.urn = $3 AND t.project_id = $4",
                    &[
                        Arg::Int(seq[0].int()?),
                        Arg::Int(now),
                        Arg::Text(&m.topic_urn),
                        Arg::Text(&m.project_id),
                    ],
                )?;
                done.deliveries += fanned as usize;
            }
            Ok::<_, SmnError>(done)
        })?;
        if done.deliveries > 0 {
            self.enqueued.send_modify(|n| *n += 1);
        }
        Ok(done)
    }

    /// The oldest pending delivery of `subscription_urn`: the only one its
    /// worker may attempt (deliveries of a subscription go in order).
    pub fn next_pending(&self, subscription_urn: &str) -> Result<Option<Delivery>, SmnError> {
        let row = self.db.read(|sql| {
            sql.query_opt(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN messages m ON m.seq = d.seq \
                     WHERE d.subscription_urn = $1 AND d.state = 'pending' ORDER BY d.seq LIMIT 1"
                ),
                &[Arg::Text(subscription_urn)],
            )
        })?;
        row.map(delivery_of).transpose()
    }

    /// Records how an attempt at delivery (`subscription_urn`, `seq`) ended.
    /// Only a pending delivery changes: a subscription removed meanwhile
    /// took its deliveries with it. With a `fence` (the leases of several
    /// nodes, in this database) only while its lease holds, else
    /// [`SmnError::LeaseLost`].
    pub fn record(
        &self,
        subscription_urn: &str,
        seq: i64,
        attempt: Attempt,
        fence: Option<&Fence<'_>>,
    ) -> Result<(), SmnError> {
        let now = now_ms();
        let (state, next_ms, done_ms, error) = match attempt {
            Attempt::Delivered => (DeliveryState::Delivered, now, Some(now), None),
            Attempt::Retry { next_ms, error } => {
                (DeliveryState::Pending, next_ms, None, Some(error))
            }
            Attempt::Dead { error } => (DeliveryState::Dead, now, Some(now), Some(error)),
        };
        self.db.transaction(|tx| {
            if let Some(fence) = fence {
                // Only where leases are (PostgreSQL): `now()` is the
                // database's clock, as the leases' own.
                let held = tx.query_opt(
                    "SELECT 1 FROM leases WHERE consumer = $1 AND key = $2 AND holder = $3 \
                     AND expires_at > now() FOR UPDATE",
                    &[
                        Arg::Text(fence.consumer),
                        Arg::Text(subscription_urn),
                        Arg::Text(fence.holder),
                    ],
                )?;
                if held.is_none() {
                    return Err(SmnError::LeaseLost(subscription_urn.to_owned()));
                }
            }
            tx.exec(
                "UPDATE deliveries SET state = $1, attempts = attempts + 1, next_ms = $2, \
                 done_ms = $3, last_error = coalesce($4, last_error) \
                 WHERE subscription_urn = $5 AND seq = $6 AND state = 'pending'",
                &[
                    Arg::Text(state.as_str()),
                    Arg::Int(next_ms),
                    done_ms.into(),
                    error.as_deref().into(),
                    Arg::Text(subscription_urn),
                    Arg::Int(seq),
                ],
            )?;
            Ok::<_, SmnError>(())
        })
    }

    /// The project's deliveries, newest first, optionally only those of one
    /// subscription or in one state; `offset`/`limit` page through them.
    pub fn deliveries(
        &self,
        project_id: &str,
        subscription_urn: Option<&str>,
        state: Option<DeliveryState>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Delivery>, SmnError> {
        let rows = self.db.read(|sql| {
            sql.query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN messages m ON m.seq = d.seq \
                     WHERE m.project_id = $1 \
                     AND (CAST($2 AS TEXT) IS NULL OR d.subscription_urn = $2) \
                     AND (CAST($3 AS TEXT) IS NULL OR d.state = $3) \
                     ORDER BY d.seq DESC, d.subscription_urn LIMIT $4 OFFSET $5"
                ),
                &[
                    Arg::Text(project_id),
                    subscription_urn.into(),
                    state.map(DeliveryState::as_str).into(),
                    Arg::Int(limit as i64),
                    Arg::Int(offset as i64),
                ],
            )
        })?;
        rows.into_iter().map(delivery_of).collect()
    }

    /// Removes deliveries finished longer ago than `retention` says (by
    /// their state) at `now_ms`, then the messages older than the
    /// delivered retention that have no delivery left (pending ones are
    /// never touched). In batches; returns what went.
    ///
    /// A message removed cannot stop a repeat: were its trace evaluated
    /// again (only traces of the last moments are, after a crash or a rule
    /// change), it would be enqueued and delivered once more, which
    /// at-least-once allows.
    pub fn prune(&self, now_ms: i64, retention: Retention) -> Result<Pruned, SmnError> {
        let mut out = Pruned::default();
        for (state, keep, count) in [
            ("delivered", retention.delivered_ms, &mut out.delivered),
            ("dead", retention.dead_ms, &mut out.dead),
        ] {
            *count = self.prune_batches(
                "DELETE FROM deliveries WHERE (subscription_urn, seq) IN \
                 (SELECT subscription_urn, seq FROM deliveries \
                  WHERE state = $1 AND done_ms < $2 LIMIT $3)",
                &[
                    Arg::Text(state),
                    Arg::Int(now_ms.saturating_sub(keep)),
                    Arg::Int(PRUNE_BATCH),
                ],
            )?;
        }
        out.messages = self.prune_batches(
            "DELETE FROM messages WHERE seq IN (SELECT m.seq FROM messages m \
             WHERE m.created_ms < $1 \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = m.seq) LIMIT $2)",
            &[
                Arg::Int(now_ms.saturating_sub(retention.delivered_ms)),
                Arg::Int(PRUNE_BATCH),
            ],
        )?;
        Ok(out)
    }

    /// Runs `sql`, a delete of at most [`PRUNE_BATCH`] rows, until it
    /// deletes fewer; returns the rows deleted.
    fn prune_batches(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, SmnError> {
        let mut total = 0u64;
        loop {
            let n = self.db.transaction(|tx| tx.exec(sql, args))?;
            total += n;
            if (n as i64) < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Pending and dead deliveries of every project.
    pub fn backlog(&self) -> Result<Backlog, SmnError> {
        self.db.read(|sql| {
            let of = |state: &str| -> Result<u64, SmnError> {
                let n = count(
                    sql,
                    "SELECT count(*) FROM deliveries WHERE state = $1",
                    &[Arg::Text(state)],
                )?;
                Ok(n as u64)
            };
            let oldest_pending_ms = sql
                .query_opt(
                    "SELECT m.created_ms FROM deliveries d JOIN messages m ON m.seq = d.seq \
                     WHERE d.state = 'pending' ORDER BY d.seq LIMIT 1",
                    &[],
                )?
                .map(|row| row[0].int())
                .transpose()?;
            Ok(Backlog {
                pending: of("pending")?,
                dead: of("dead")?,
                oldest_pending_ms,
            })
        })
    }
}

fn delivery_of(row: Row) -> Result<Delivery, SmnError> {
    let [seq, message_id, subscription_urn, topic_urn, notification_id, notification_name, state, attempts, created_ms, next_ms, done_ms, last_error, trace]: [Val; 13] =
        row.try_into().map_err(|_| shape("delivery"))?;
    let state = state.into_text()?;
    Ok(Delivery {
        seq: seq.int()?,
        message_id: message_id.into_text()?,
        subscription_urn: subscription_urn.into_text()?,
        topic_urn: topic_urn.into_text()?,
        notification_id: notification_id.into_text()?,
        notification_name: notification_name.into_text()?,
        state: DeliveryState::parse(&state).ok_or_else(|| unknown("delivery state", &state))?,
        attempts: u32::try_from(attempts.int()?).unwrap_or(u32::MAX),
        created_ms: created_ms.int()?,
        next_ms: next_ms.int()?,
        done_ms: done_ms.opt_int()?,
        last_error: last_error.opt_text()?.map(str::to_owned),
        trace: trace.into_text()?,
    })
}
