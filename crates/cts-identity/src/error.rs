//! The one error type of the crate.
//!
//! Messages never contain a password, a secret key or a token: they end up in
//! logs and, mapped by the server, in responses.

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The referenced entity does not exist (`what` is e.g. `"user"`).
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The name is already taken within its scope.
    #[error("{what} name {name:?} is already in use")]
    Conflict { what: &'static str, name: String },
    /// A value breaks a rule; `rule` says which, in words for the caller.
    #[error("invalid {field}: {rule}")]
    Invalid { field: &'static str, rule: String },
    /// Unknown user, wrong password or disabled user: deliberately one answer.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The user may not take a token with the requested scope.
    #[error("the user has no role on the requested scope")]
    ScopeNotAllowed,
    #[error("unknown access key")]
    UnknownAccessKey,
    /// The key is inactive, or its user or the user's domain is disabled.
    #[error("access key is inactive")]
    InactiveAccessKey,
    #[error("unknown token")]
    UnknownToken,
    #[error("token expired")]
    TokenExpired,
    /// Revoked explicitly, by a password change, or implicitly because its
    /// user, the user's domain or its scope was disabled since it was issued.
    #[error("token revoked")]
    TokenRevoked,
    #[error("at most {max} {what} allowed")]
    QuotaExceeded { what: &'static str, max: usize },
    /// Database or file system failure; the detail is for the log.
    #[error("identity storage: {0}")]
    Storage(String),
    /// Server key or ciphertext problem; the detail is for the log.
    #[error("identity crypto: {0}")]
    Crypto(String),
    /// Under [`crate::from_memory`], a call that needed the database; its
    /// caller answers again where it may block.
    #[error("identity: not in memory")]
    NotInMemory,
}

impl From<cts_db::DbError> for IdentityError {
    fn from(e: cts_db::DbError) -> Self {
        IdentityError::Storage(e.to_string())
    }
}

impl IdentityError {
    pub(crate) fn not_found(what: &'static str, id: &str) -> Self {
        IdentityError::NotFound {
            what,
            id: id.to_owned(),
        }
    }

    pub(crate) fn conflict(what: &'static str, name: &str) -> Self {
        IdentityError::Conflict {
            what,
            name: name.to_owned(),
        }
    }

    pub(crate) fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        IdentityError::Invalid {
            field,
            rule: rule.into(),
        }
    }

    /// An I/O failure on `path`, with the path for the log.
    pub(crate) fn io(path: &std::path::Path, e: std::io::Error) -> Self {
        IdentityError::Storage(format!("{}: {e}", path.display()))
    }
}
