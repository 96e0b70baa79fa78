use cts_db::DbError;
use cts_store::StoreError;

/// Failures of the PostgreSQL backend.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Those of its database (cts-db's, which say the server's own
    /// message).
    #[error("{0}")]
    Db(#[from] DbError),
    /// A batch holding traces of a day retention is removing: it stored
    /// nothing. The message names the day.
    #[error("{0}")]
    DayRetired(String),
    /// Journal positions that do not match the rows they number (a run
    /// of `cts_trace_order` holding fewer or more traces than it says).
    #[error("journal positions do not match the stored traces: {0}")]
    Positions(String),
}

/// The SQLSTATE of retention's fence (migration 3).
pub(crate) const DAY_RETIRED: &str = "RT001";

impl From<postgres::Error> for PgError {
    fn from(e: postgres::Error) -> PgError {
        match e.as_db_error() {
            Some(db) if db.code().code() == DAY_RETIRED => PgError::DayRetired(db.message().into()),
            _ => PgError::Db(DbError::Postgres(e)),
        }
    }
}

impl From<r2d2_postgres::r2d2::Error> for PgError {
    fn from(e: r2d2_postgres::r2d2::Error) -> PgError {
        PgError::Db(DbError::Pool(e))
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> StoreError {
        match e {
            PgError::Db(DbError::Setting(s)) => StoreError::Setting(s),
            PgError::DayRetired(day) => StoreError::Retired(day),
            e => StoreError::Database(e.to_string()),
        }
    }
}
