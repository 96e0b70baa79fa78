//! The trace store on PostgreSQL: [`cts_store::TraceStore`] for any number
//! of ctsd nodes sharing one database (see docs/postgres.md).
//!
//! Traces live in `cts_traces`, partitioned by the UTC day of their time;
//! each carries its stored JSON. Their journal positions live beside them
//! in the narrow `cts_trace_order` (a row per day of a batch: a run of
//! positions over the rows' key range), numbered from a one-row counter after
//! the traces are inserted and locked to the commit, so they are
//! consecutive and committed in order: the invariant journal consumers
//! rely on.

mod analyze;
mod columns;
mod error;
mod import;
mod journal;
mod partitions;
mod query;
mod retention;
pub mod schema;
mod store;
mod write;

pub use analyze::FIRST_ANALYZE_ROWS;
pub use cts_db::{PgSettings, PgUrl, PgUrlError, Pool};
pub use error::PgError;
pub use import::{ImportError, ImportProgress, IMPORT_SCHEMA};
pub use store::PgStore;
pub use write::copy_traces;
