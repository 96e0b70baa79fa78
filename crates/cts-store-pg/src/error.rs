use cts_db::DbError;
use cts_store::StoreError;

/// Failures of the PostgreSQL backend: those of its database (cts-db's,
/// which say the server's own message).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PgError(#[from] pub DbError);

impl From<postgres::Error> for PgError {
    fn from(e: postgres::Error) -> PgError {
        PgError(DbError::Postgres(e))
    }
}

impl From<r2d2_postgres::r2d2::Error> for PgError {
    fn from(e: r2d2_postgres::r2d2::Error) -> PgError {
        PgError(DbError::Pool(e))
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> StoreError {
        match e.0 {
            DbError::Setting(s) => StoreError::Setting(s),
            e => StoreError::Database(e.to_string()),
        }
    }
}
