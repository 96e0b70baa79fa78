//! The SMN side of key event notifications: topics (and FunctionGraph
//! functions registered like topics), their subscriptions, and the durable
//! outbox the notification rules fill and the delivery empties. No HTTP
//! framework here: the server parses requests, calls these stores on
//! blocking threads, and maps [`SmnError`] to CTS error codes.
//!
//! # On disk
//!
//! ```text
//! DATA_DIR/notifications/   mode 0700
//!   smn.db                  topics, subscriptions (with their signing
//!                           secrets), messages, deliveries (SQLite through
//!                           cts-sqlite: 0600, WAL, synchronous=FULL)
//! ```
//!
//! With `store.backend = "postgres"` the same tables live in the shared
//! database ([`PG_SCHEMA`]), and every node serves them.

mod copy;
mod db;
mod delivery;
mod email;
mod error;
mod model;
mod outbox;
mod topics;
pub mod webhook;

pub use copy::copy_into;
pub use db::{open_embedded, open_postgres, PG_SCHEMA};
pub use delivery::{
    backoff, Deliverer, DeliveryConfig, OnOutcome, Outcome, CONSUMER as DELIVERY_CONSUMER,
    SHARED_POLL,
};
pub use email::{compose as compose_email, Password, SmtpConfig, SmtpTls};
pub use error::SmnError;
pub use model::{
    check_display_name, check_endpoint, check_function_urn, check_topic_name, topic_urn, Protocol,
    Subscription, Topic, TopicKind, MAX_SUBSCRIPTIONS, MAX_TOPICS,
};
pub use outbox::{
    Attempt, Backlog, Delivery, DeliveryState, Enqueued, Fence, Outbox, OutboxMessage, Pruned,
    Retention,
};
pub use topics::{TopicStore, SECRET_PURPOSE};

#[cfg(test)]
mod tests;
