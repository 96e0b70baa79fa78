//! The trace store on PostgreSQL: [`cts_store::TraceStore`] for any number
//! of ctsd nodes sharing one database.

mod error;
mod settings;

pub use error::PgError;
pub use settings::{PgSettings, PgUrl, PgUrlError, Pool};
