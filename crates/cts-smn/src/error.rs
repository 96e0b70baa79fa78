//! The one error type of the crate. The server maps each variant to a CTS
//! error code (cts-server/src/error.rs); messages are safe to return.

#[derive(Debug, thiserror::Error)]
pub enum SmnError {
    /// A request value breaks a rule: `field` names it, `rule` says which.
    #[error("{field}: {rule}")]
    Invalid { field: &'static str, rule: String },
    #[error("the topic does not exist: {0}")]
    TopicNotFound(String),
    #[error("the subscription does not exist: {0}")]
    SubscriptionNotFound(String),
    #[error("the topic already exists: {0}")]
    TopicExists(String),
    #[error("the topic {topic} already has a {protocol} subscription to {endpoint}")]
    SubscriptionExists {
        topic: String,
        protocol: &'static str,
        endpoint: String,
    },
    /// A per-project or per-topic limit (`what`) is reached.
    #[error("at most {limit} {what}")]
    Quota { what: &'static str, limit: usize },
    /// Another node took the subscription's delivery over: this node's
    /// record of an attempt is refused.
    #[error("this node no longer holds the delivery lease of {0}")]
    LeaseLost(String),
    /// The database failed; the detail is for the log.
    #[error("notification storage: {0}")]
    Storage(String),
}

impl SmnError {
    pub(crate) fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        SmnError::Invalid {
            field,
            rule: rule.into(),
        }
    }
}

impl From<cts_consumer::ConsumerError> for SmnError {
    fn from(e: cts_consumer::ConsumerError) -> Self {
        SmnError::Storage(e.to_string())
    }
}

impl From<cts_db::DbError> for SmnError {
    fn from(e: cts_db::DbError) -> Self {
        SmnError::Storage(e.to_string())
    }
}
