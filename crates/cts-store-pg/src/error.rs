use cts_store::StoreError;

/// Failures of the PostgreSQL backend.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid PostgreSQL setting: {0}")]
    Setting(String),
    #[error("cannot connect to PostgreSQL at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("no PostgreSQL connection available: {0}")]
    Pool(#[from] r2d2_postgres::r2d2::Error),
    #[error("PostgreSQL: {}", describe(.0))]
    Database(#[from] postgres::Error),
    #[error("the database schema is at version {applied}, this ctsd needs {expected}: run `ctsd migrate` (or start with store.auto_migrate = true)")]
    SchemaBehind { applied: i32, expected: i32 },
    #[error("the database schema is at version {applied}, newer than this ctsd knows ({expected}): run a newer ctsd")]
    SchemaAhead { applied: i32, expected: i32 },
}

/// The server's own message (with its detail) when there is one: the
/// client library's `Display` says only "db error".
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}): {detail}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> StoreError {
        match e {
            PgError::Setting(s) => StoreError::Setting(s),
            e => StoreError::Database(e.to_string()),
        }
    }
}
