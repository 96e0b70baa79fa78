//! Key event notifications: the rules of the v3 notification API, their
//! store, and the matcher that decides which recorded traces fire them.
//! No HTTP here: the server parses bodies with [`parse_create`] and
//! [`parse_update`], calls the [`NotificationStore`], maps
//! [`NotificationError`] (which carries its CTS code and status) to a
//! response, and renders notifications with [`Notification::to_json`].
//! Delivery (topics, the outbox) is `cts-smn`'s.

mod consumer;
mod error;
mod facts;
mod filter;
mod matcher;
mod model;
mod request;
mod store;

pub use consumer::{Notifier, NotifierError, Pass, CONSUMER};
pub use error::{codes, NotificationError};
pub use facts::{TraceFacts, UserFacts};
pub use filter::{Condition, Filter, FilterField, FilterRule, MAX_FILTER_RULES};
pub use matcher::Matcher;
pub use model::{
    Notification, NotificationType, NotifyUsers, Operation, OperationType, ResolvedUser, Status,
    FUNCTION_URN_PREFIX,
};
pub use request::{
    is_valid_name, parse_create, parse_update, NotificationSpec, MAX_OPERATIONS, MAX_SERVICES,
    MAX_USERS, MAX_USER_GROUPS,
};
pub use store::{Directory, NotificationStore, PG_SCHEMA, RECHECK};
