//! The one seam every journal consumer (transfer to object storage,
//! notifications, log streaming) stands on: where its durable state lives,
//! where it begins, and how it polls the journal.
//!
//! * [`ConsumerStore`]: the consumer state (`DATA_DIR/consumers/consumers.db`),
//!   one open path for all consumers. Per `(consumer, key)` (a key is
//!   usually a tracker id) a journal cursor and an opaque JSON body that is
//!   the consumer's own type; several of them commit in one transaction
//!   ([`ConsumerStore::transaction`]). Beside them the journal marks
//!   (period start → sequence number) that [`start_cursor`] searches from.
//!   Every call is blocking (SQLite, fsync): call it from
//!   `spawn_blocking`, never on an async worker.
//! * [`start_cursor`]: where a consumer that begins at a period (a tracker
//!   enabled in it) begins, so that it has no start gap.
//! * The poll loop contract ([`read_batch`], [`ConsumerStore::hold`],
//!   [`Skips`]): at start, before retention runs, hold the journal from
//!   the lowest durable cursor (`hold`); then repeatedly read after the
//!   cursor (`read_batch`), deliver, commit the new cursor (`put` /
//!   `transaction`), and move the hold (`hold`). A gap in the journal
//!   (retention removed traces before the consumer had them, or `ctsd
//!   repair` quarantined them) is passed over by `read_batch`, which says
//!   how many sequence numbers it passed over: the consumer counts them in
//!   its [`Skips`] (a `*_skipped_traces_total` metric) and they are logged,
//!   never skipped silently.
//!
//! * Leases ([`ConsumerStore::claim`], `renew`, `release`): on PostgreSQL,
//!   shared by many nodes, each `(consumer, key)` is worked by the one node
//!   that holds its lease, and every write of a key's state is fenced by
//!   it (see `lease`). The embedded store holds every lease itself.
//!
//! [`ConsumerStore`] is the same type on SQLite ([`ConsumerStore::open`])
//! and on PostgreSQL ([`ConsumerStore::new`] on a `Db` of the node's pool):
//! no consumer sees which backend runs. Both run the same statements,
//! through `cts-db`.

mod lease;
mod poll;
mod start;
mod store;

pub use lease::{node_id, LeaseSettings};
pub use poll::{read_batch, Batch, Skips};
pub use start::{start_cursor, Start};
pub use store::{sqlite_migrations, ConsumerStore, Entry, Tx, FILE, PG_SCHEMA};

/// Why the consumer state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("consumer state: {0}")]
    Db(#[from] cts_db::DbError),
    /// Another node took the key over (or it was forgotten): this node's
    /// work of the key stops without committing.
    #[error("consumer state of {consumer}/{key}: this node no longer holds its lease")]
    LeaseLost { consumer: String, key: String },
    #[error("consumer leases: {0}")]
    LeaseSettings(String),
    #[error("consumer state of {consumer}/{key}: the body does not read: {source}")]
    Body {
        consumer: String,
        key: String,
        source: serde_json::Error,
    },
}
