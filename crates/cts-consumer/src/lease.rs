//! Leases: each `(consumer, key)` is worked by one node at a time.
//!
//! A lease is a row `(consumer, key) → (holder, epoch, expires_at)` in
//! plain SQL (no advisory locks, so any PostgreSQL-compatible engine
//! serves). A node *claims* a lease that is free, expired or its own; a
//! claim that takes a lease over raises its epoch. The holder *renews* its
//! leases (every [`LeaseSettings::renew_every`]) to keep them for another
//! [`LeaseSettings::ttl`]; a holder that stops renewing (killed, hung, cut
//! off) is taken over once its leases expire. Times are the database's
//! (`now()`), so node clocks do not matter.
//!
//! **Fencing**: every write of a key's state checks, in the same
//! transaction and with the lease row locked, that this node still holds
//! the lease with the epoch it claimed ([`Leases::fence`]). A node that
//! lost its lease (even one that does not know it yet) can therefore never
//! move a cursor back or commit a batch twice: its commit fails with
//! [`ConsumerError::LeaseLost`] and the work of that key stops.
//!
//! The embedded (SQLite) store has one node: its leases are always held,
//! through the same calls.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

use crate::ConsumerError;
use cts_db::{columns, Arg, Sql};

/// How long a lease lasts and how often its holder renews it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// A lease not renewed for this long may be taken over.
    pub ttl: Duration,
    /// How often the holder renews: well under `ttl`, so that a late
    /// renewal or two does not lose the lease.
    pub renew_every: Duration,
}

impl Default for LeaseSettings {
    /// A killed holder is replaced within 15 s plus a claim pass.
    fn default() -> Self {
        LeaseSettings {
            ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

impl LeaseSettings {
    /// Checks that a renewal comes before the lease expires.
    pub fn check(&self) -> Result<(), ConsumerError> {
        if self.renew_every.is_zero() || self.renew_every >= self.ttl {
            return Err(ConsumerError::LeaseSettings(format!(
                "the renewal interval ({:?}) must be above zero and below the lease time ({:?})",
                self.renew_every, self.ttl
            )));
        }
        Ok(())
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis().min(i64::MAX as u128) as i64
    }
}

/// The leases of one node on the shared database.
pub(crate) struct Leases {
    node: String,
    settings: LeaseSettings,
    /// The leases this node believes it holds, with their epochs.
    held: Mutex<HashMap<(String, String), i64>>,
}

impl Leases {
    pub(crate) fn new(node: String, settings: LeaseSettings) -> Leases {
        Leases {
            node,
            settings,
            held: Mutex::default(),
        }
    }

    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    pub(crate) fn settings(&self) -> LeaseSettings {
        self.settings
    }

    /// Holds the lease of `(consumer, key)` if this node has it or can take
    /// it (free or expired). Answers whether it holds it.
    pub(crate) fn claim(
        &self,
        sql: &dyn Sql,
        consumer: &str,
        key: &str,
    ) -> Result<bool, ConsumerError> {
        let id = (consumer.to_string(), key.to_string());
        if self.held.lock().contains_key(&id) {
            return Ok(true);
        }
        let rows = sql.query(
            "INSERT INTO leases (consumer, key, holder, epoch, expires_at) \
             VALUES ($1, $2, $3, 1, now() + $4::BIGINT * INTERVAL '1 millisecond') \
             ON CONFLICT (consumer, key) DO UPDATE \
             SET holder = excluded.holder, epoch = leases.epoch + 1, \
                 expires_at = excluded.expires_at \
             WHERE leases.expires_at < now() OR leases.holder = excluded.holder \
             RETURNING epoch",
            &[
                Arg::Text(consumer),
                Arg::Text(key),
                Arg::Text(&self.node),
                Arg::Int(self.settings.ttl_ms()),
            ],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(false);
        };
        let [epoch] = columns(row)?;
        let epoch = epoch.int()?;
        tracing::info!(consumer, key, epoch, node = %self.node, "lease taken");
        self.held.lock().insert(id, epoch);
        Ok(true)
    }

    /// Renews every lease this node holds; forgets (and logs) those another
    /// node took over.
    pub(crate) fn renew(&self, sql: &dyn Sql) -> Result<(), ConsumerError> {
        let rows = sql.query(
            "UPDATE leases SET expires_at = now() + $2::BIGINT * INTERVAL '1 millisecond' \
             WHERE holder = $1 RETURNING consumer, key, epoch",
            &[Arg::Text(&self.node), Arg::Int(self.settings.ttl_ms())],
        )?;
        let mut current = HashMap::new();
        for row in rows {
            let [consumer, key, epoch] = columns(row)?;
            current.insert((consumer.into_text()?, key.into_text()?), epoch.int()?);
        }
        self.held.lock().retain(|(consumer, key), epoch| {
            let kept = current.get(&(consumer.clone(), key.clone())) == Some(epoch);
            if !kept {
                tracing::warn!(consumer, key, node = %self.node, "lease lost: its work stops here");
            }
            kept
        });
        Ok(())
    }

    /// Gives up every lease of this node (at stop), so that others take
    /// them over at once.
    pub(crate) fn release(&self, sql: &dyn Sql) -> Result<(), ConsumerError> {
        sql.exec(
            "UPDATE leases SET expires_at = now() - INTERVAL '1 second' WHERE holder = $1",
            &[Arg::Text(&self.node)],
        )?;
        self.held.lock().clear();
        Ok(())
    }

    /// Fails unless this node still holds the lease of `(consumer, key)`
    /// with the epoch it claimed; locks the lease row until the
    /// transaction ends, so that no takeover passes the write.
    pub(crate) fn fence(
        &self,
        sql: &dyn Sql,
        consumer: &str,
        key: &str,
    ) -> Result<(), ConsumerError> {
        let id = (consumer.to_string(), key.to_string());
        let lost = || ConsumerError::LeaseLost {
            consumer: consumer.into(),
            key: key.into(),
        };
        let epoch = *self.held.lock().get(&id).ok_or_else(lost)?;
        let rows = sql.query(
            "SELECT epoch FROM leases \
             WHERE consumer = $1 AND key = $2 AND holder = $3 AND epoch = $4 FOR UPDATE",
            &[
                Arg::Text(consumer),
                Arg::Text(key),
                Arg::Text(&self.node),
                Arg::Int(epoch),
            ],
        )?;
        if rows.is_empty() {
            self.held.lock().remove(&id);
            return Err(lost());
        }
        Ok(())
    }

    /// Drops the lease of `(consumer, key)` with its state.
    pub(crate) fn forget(
        &self,
        sql: &dyn Sql,
        consumer: &str,
        key: &str,
    ) -> Result<(), ConsumerError> {
        sql.exec(
            "DELETE FROM leases WHERE consumer = $1 AND key = $2",
            &[Arg::Text(consumer), Arg::Text(key)],
        )?;
        self.held
            .lock()
            .remove(&(consumer.to_string(), key.to_string()));
        Ok(())
    }
}

/// A node's identity in the leases: the host name and a random id drawn
/// once per process, so that a restarted node is a new holder.
pub fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}/{}", uuid::Uuid::new_v4().simple())
}
