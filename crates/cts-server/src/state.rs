//! What every request handler shares: the configuration, the store and the
//! metrics registry.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cts_store::{EmbeddedStore, StoreError, TraceStore};

use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: Arc<dyn TraceStore>,
    pub metrics: Metrics,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config, store: Arc<dyn TraceStore>) -> AppState {
        AppState(Arc::new(Inner {
            config,
            store,
            metrics: Metrics::new(),
        }))
    }

    /// Opens the embedded store described by `config` (replaying its journal,
    /// which may take a while) and builds the state around it.
    pub async fn open(config: Config) -> Result<AppState, StoreError> {
        let store_config = config.store_config();
        let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(store_config))
            .await
            .map_err(|e| StoreError::Unavailable(panic_message(e)))??;
        Ok(AppState::new(config, Arc::new(store)))
    }

    /// Runs a blocking store call off the async workers. `Err` carries the
    /// message of a panic inside the store.
    pub async fn with_store<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&dyn TraceStore) -> T + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(panic_message)
    }
}

/// What a failed blocking task said, for the log.
fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            format!("store panicked: {msg}")
        }
        Err(e) => format!("store task failed: {e}"),
    }
}

/// The server clock in ms since the epoch.
pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}
