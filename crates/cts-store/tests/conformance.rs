//! The conformance suite of every `TraceStore`, on the embedded engine.

use cts_store::conformance::{self, RETENTION_MS};
use cts_store::{EmbeddedStore, StoreConfig};

/// A store in a temporary directory, removed after the store is closed.
struct Opened {
    store: EmbeddedStore,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Opened {
    type Target = EmbeddedStore;
    fn deref(&self) -> &EmbeddedStore {
        &self.store
    }
}

#[test]
fn conformance_on_embedded() {
    conformance::run_all(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = StoreConfig::new(dir.path());
        config.retention_ms = RETENTION_MS;
        // Appends reach index segments (what retention drops) at once.
        config.memtable_max_traces = 1;
        Opened {
            store: EmbeddedStore::open(config).expect("open the store"),
            _dir: dir,
        }
    });
}
