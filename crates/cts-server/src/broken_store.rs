//! A store whose every operation fails, to show that the HTTP layer turns
//! storage failures into CTS errors and never panics.

use cts_model::TraceQuery;
use cts_store::{
    AppendOutcome, JournalBatch, PreparedTrace, QueryPage, RetentionReport, StoreError, StoreStats,
    TraceStore,
};

/// A store whose every operation fails, for the error paths.
pub struct BrokenStore;

impl TraceStore for BrokenStore {
    fn append_prepared(&self, _: Vec<PreparedTrace>) -> Result<AppendOutcome, StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }
    fn query(&self, _: &TraceQuery) -> Result<QueryPage, StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }
    fn enforce_retention(&self, _: i64) -> Result<RetentionReport, StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }
    fn stats(&self) -> StoreStats {
        panic!("disk on fire")
    }
    fn read_journal(&self, _: u64, _: usize) -> Result<JournalBatch, StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }
    fn hold_journal(&self, _: &str, _: u64) {}
    fn release_journal(&self, _: &str) {}
}
