/// Failures of the PostgreSQL backend.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid PostgreSQL setting: {0}")]
    Setting(String),
    #[error("cannot connect to PostgreSQL at {url}: {detail}")]
    Connect { url: String, detail: String },
}
