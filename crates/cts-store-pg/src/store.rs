//! [`PgStore`]: the trace store of any number of nodes on one PostgreSQL
//! database.

use std::collections::{BTreeSet, HashMap};

use cts_model::TraceQuery;
use cts_store::{
    AppendOutcome, JournalBatch, PreparedTrace, QueryPage, RetentionReport, StoreError, StoreStats,
    TraceStore,
};
use parking_lot::Mutex;

use crate::analyze::Analyzer;
use crate::schema::SCHEMA;
use crate::{PgError, Pool};

/// Width of a partition: traces are partitioned by the UTC day of their time.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// The day (since 1970-01-01) of a time in ms, within the range of the
/// `day` column.
pub(crate) fn day_of(ms: i64) -> i32 {
    ms.div_euclid(DAY_MS)
        .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

pub struct PgStore {
    pub(crate) pool: Pool,
    /// Traces older than this are not answered (ms), as in the embedded
    /// store: retention drops them a partition at a time.
    pub(crate) retention_ms: i64,
    /// Days whose partition this node knows exists.
    pub(crate) partitions: Mutex<BTreeSet<i32>>,
    /// Consumer → the position it has consumed up to (in memory, per node).
    pub(crate) holds: Mutex<HashMap<String, u64>>,
    /// Keeps the statistics of the partitions this node writes fresh.
    pub(crate) analyzer: Analyzer,
}

impl PgStore {
    /// The store on the node's pool: brings the schema up to date (or,
    /// with `auto_migrate` off, checks that it is).
    pub fn open(pool: Pool, auto_migrate: bool, retention_ms: i64) -> Result<PgStore, PgError> {
        cts_db::ensure_schema(&pool, &SCHEMA, auto_migrate)?;
        Ok(PgStore {
            analyzer: Analyzer::start(pool.clone()),
            pool,
            retention_ms,
            partitions: Mutex::new(BTreeSet::new()),
            holds: Mutex::new(HashMap::new()),
        })
    }

    /// The lowest position some consumer of this node still holds.
    pub(crate) fn lowest_hold(&self) -> Option<u64> {
        self.holds.lock().values().copied().min()
    }
}

impl TraceStore for PgStore {
    fn append_prepared(&self, traces: Vec<PreparedTrace>) -> Result<AppendOutcome, StoreError> {
        Ok(self.append_batch(&traces)?)
    }

    fn query(&self, query: &TraceQuery) -> Result<QueryPage, StoreError> {
        Ok(self.query_page(query)?)
    }

    fn enforce_retention(&self, cutoff_ms: i64) -> Result<RetentionReport, StoreError> {
        Ok(self.drop_partitions_before(cutoff_ms)?)
    }

    fn stats(&self) -> StoreStats {
        self.read_stats().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the PostgreSQL store's sizes failed");
            StoreStats::default()
        })
    }

    fn read_journal(&self, after_seq: u64, max: usize) -> Result<JournalBatch, StoreError> {
        self.read_positions(after_seq, max)
    }

    fn hold_journal(&self, consumer: &str, seq: u64) {
        self.holds.lock().insert(consumer.to_string(), seq);
    }

    fn release_journal(&self, consumer: &str) {
        self.holds.lock().remove(consumer);
    }
}
