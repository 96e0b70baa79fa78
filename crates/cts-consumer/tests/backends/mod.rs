//! The two places consumer state lives, for tests that run on both.

use std::time::Duration;

use cts_consumer::{ConsumerStore, LeaseSettings};
use cts_model::{parse_report, ReportContext, Trace};
use cts_testpg::TestPg;
use serde_json::json;

/// Where a test's consumer state lives; [`Place::open`] opens it again as
/// a new node (a restart).
pub enum Place {
    Sqlite(tempfile::TempDir),
    Postgres { _server: TestPg, url: String },
}

/// Short leases: the lease tests wait for expiry.
pub const LEASES: LeaseSettings = LeaseSettings {
    ttl: Duration::from_millis(600),
    renew_every: Duration::from_millis(200),
};

impl Place {
    pub fn sqlite() -> Place {
        Place::Sqlite(tempfile::tempdir().unwrap())
    }

    pub fn postgres() -> Place {
        let server = TestPg::start();
        let url = server.url();
        Place::Postgres {
            _server: server,
            url,
        }
    }

    /// A store on this place, as a node of its own.
    pub fn open(&self) -> ConsumerStore {
        match self {
            Place::Sqlite(dir) => ConsumerStore::open(dir.path()).unwrap(),
            Place::Postgres { url, .. } => {
                ConsumerStore::connect(url, cts_consumer::node_id(), LEASES).unwrap()
            }
        }
    }
}

/// Runs the test `$name(&Place)` on SQLite and on PostgreSQL, as two tests.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::backends::Place::sqlite());
            }

            #[test]
            fn postgres() {
                super::$name(&super::backends::Place::postgres());
            }
        }
    };
}

/// `n` traces of project `p`, recorded at `record_ms` with `time` `time_ms`.
pub fn traces(n: usize, time_ms: i64, record_ms: i64) -> Vec<Trace> {
    let items: Vec<_> = (0..n)
        .map(|i| {
            json!({"time": time_ms + i as i64, "service_type": "ECS", "resource_type": "vm",
                   "trace_name": "createServer", "trace_type": "ApiCall", "code": "200",
                   "user": {"id": "u", "name": "alice", "domain": {"id": "d", "name": "acme"}}})
        })
        .collect();
    let ctx = ReportContext {
        project_id: "p",
        now_ms: record_ms,
        oldest_time_ms: 0,
        newest_time_ms: i64::MAX,
        max_traces: 10_000,
    };
    let raw = serde_json::to_vec(&json!({ "traces": items })).unwrap();
    parse_report(&raw, &ctx)
        .unwrap()
        .into_iter()
        .map(Trace::into_owned)
        .collect()
}

pub const HOUR: i64 = 3_600_000;

/// A journal in `dir` with index partitions of an hour, holding 250
/// traces of five hours before `now` (sequence numbers 1–250, in their own
/// journal files, so retention can remove them) and 250 of `now`, all
/// indexed.
pub fn a_journal_with_old_traces(dir: &std::path::Path, now: i64) -> cts_store::EmbeddedStore {
    use cts_store::TraceStore;
    let mut config = cts_store::StoreConfig::new(dir);
    // One journal file per append: the old traces' file can expire.
    config.journal_segment_bytes = 1024;
    config.memtable_max_traces = 100;
    config.partition_ms = HOUR;
    let journal = cts_store::EmbeddedStore::open(config).unwrap();
    journal.append(traces(250, now - 5 * HOUR, now)).unwrap();
    journal.append(traces(250, now - 1000, now)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while journal.stats().index_durable_seq < 500 {
        assert!(
            std::time::Instant::now() < deadline,
            "the index stays behind"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    journal
}
