//! What every request handler shares: the configuration, the store, the
//! identity store, the login throttle and the metrics registry.

use std::ops::Deref;
use std::sync::Arc;

use cts_archive::ObjectStorage;
use cts_consumer::ConsumerStore;
use cts_db::Db;
use cts_identity::{IdentityError, IdentityStore, ServerKey};
use cts_lts::Lts;
use cts_notification::{NotificationError, NotificationStore, Notifier, NotifierError};
use cts_smn::{Outbox, SmnError, TopicStore};
use cts_store::{EmbeddedStore, StoreError, TraceStore};
use cts_store_pg::PgStore;
use cts_tracker::{Catalog, TrackerError, TrackerStore};
use cts_transfer::Transfer;

use crate::backend::Backend;
use crate::config::Config;
use crate::console::Sessions;
use crate::lockout::LoginLockout;
use crate::metrics::Metrics;
use crate::refusals::RefusalAudit;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: Arc<dyn TraceStore>,
    pub identity: Arc<IdentityStore>,
    pub trackers: Arc<TrackerStore>,
    pub catalog: Arc<Catalog>,
    pub transfer: Arc<Transfer>,
    pub consumers: Arc<ConsumerStore>,
    pub notifications: Arc<NotificationStore>,
    pub topics: Arc<TopicStore>,
    pub outbox: Arc<Outbox>,
    pub notifier: Arc<Notifier>,
    /// Signalled after every append: the notification matcher evaluates
    /// new traces at once instead of at its next poll.
    pub appended: tokio::sync::Notify,
    pub lts: Arc<Lts>,
    pub login_lockout: LoginLockout,
    pub refusals: RefusalAudit,
    pub metrics: Metrics,
    /// Web console sessions (in memory: they end at restart).
    pub console: Sessions,
    /// Why the store opened read-only (fixed for the process's life).
    pub read_only: Option<String>,
    /// The threads that parse and store report batches, at ingest
    /// priority (`cts-priority`): queries, on Tokio's blocking threads,
    /// get a core first.
    ingest: cts_priority::Pool,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        config: Config,
        store: Arc<dyn TraceStore>,
        settings: Settings,
    ) -> Result<AppState, OpenError> {
        let ingest = cts_priority::Pool::start("cts-ingest", cts_priority::Tier::Ingest)
            .map_err(OpenError::Threads)?;
        let login_lockout = LoginLockout::new(&config.auth);
        let refusals = RefusalAudit::new(config.auth.refusal_audit_window);
        let console = Sessions::new(config.auth.console_idle_timeout);
        let read_only = store.read_only();
        Ok(AppState(Arc::new(Inner {
            config,
            store,
            identity: settings.identity,
            trackers: settings.trackers,
            catalog: settings.catalog,
            transfer: settings.transfer,
            consumers: settings.consumers,
            notifications: settings.notifications,
            topics: settings.topics,
            outbox: settings.outbox,
            notifier: settings.notifier,
            appended: tokio::sync::Notify::new(),
            lts: settings.lts,
            login_lockout,
            refusals,
            metrics: Metrics::new(),
            console,
            read_only,
            ingest,
        })))
    }

    /// Opens the [`Backend`] of `store.backend` (on PostgreSQL the one
    /// pool of the process), the trace store on it (the embedded one
    /// replays its journal, which may take a while; on PostgreSQL every
    /// store migrates its schema unless told not to) and the other stores,
    /// and builds the state around them.
    pub async fn open(config: Config) -> Result<AppState, OpenError> {
        let for_settings = config.clone();
        let (store, settings) = tokio::task::spawn_blocking(move || {
            let config = for_settings;
            let backend = Backend::open(&config)?;
            let store: Arc<dyn TraceStore> = match &backend {
                Backend::Postgres { pool, auto_migrate } => Arc::new(
                    PgStore::open(pool.clone(), *auto_migrate, config.retention_ms())
                        .map_err(StoreError::from)?,
                ),
                Backend::Embedded => Arc::new(EmbeddedStore::open(config.store_config())?),
            };
            let settings = Settings::open(&config, &backend, store.clone())?;
            if let Backend::Postgres {
                pool,
                auto_migrate: true,
            } = &backend
            {
                log_distribution(crate::citus::distribute(pool)?);
            }
            Ok::<_, OpenError>((store, settings))
        })
        .await
        .map_err(|e| OpenError::Store(StoreError::Unavailable(panic_message(e))))??;
        AppState::new(config, store, settings)
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

    /// [`AppState::with_store`] for ingest: on the ingest threads, which
    /// give way to queries when both want a core.
    pub async fn ingest_with_store<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&dyn TraceStore) -> T + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        self.ingest
            .spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(panic_message)
    }
}

/// Everything around the trace store: identities, trackers, the catalog,
/// and the transfer of traces to object storage.
pub struct Settings {
    pub identity: Arc<IdentityStore>,
    pub trackers: Arc<TrackerStore>,
    pub catalog: Arc<Catalog>,
    pub transfer: Arc<Transfer>,
    /// The state of every journal consumer.
    pub consumers: Arc<ConsumerStore>,
    pub notifications: Arc<NotificationStore>,
    pub topics: Arc<TopicStore>,
    pub outbox: Arc<Outbox>,
    /// The matcher: a journal consumer filling the outbox.
    pub notifier: Arc<Notifier>,
    /// Streaming to the log sinks of trace analysis.
    pub lts: Arc<Lts>,
}

impl Settings {
    /// Opens them in the data directory of `config` or on `backend`'s
    /// PostgreSQL; the transfer reads `store`'s journal (and holds it
    /// against retention at once).
    pub fn open(
        config: &Config,
        backend: &Backend,
        store: Arc<dyn TraceStore>,
    ) -> Result<Settings, OpenError> {
        let identity = Arc::new(open_identity(config, backend)?);
        let (trackers, catalog) = open_trackers(config, backend)?;
        let storage = ObjectStorage::new(config.storage_config())
            .map_err(|e| OpenError::Transfer(e.to_string()))?;
        let regions = identity.clone();
        let region_of: cts_transfer::RegionOf =
            Arc::new(move |project: &str| regions.get_project(project).ok().map(|p| p.region));
        let consumers = Arc::new(open_consumers(config, backend)?);
        let (sinks, routing) = config.lts_sinks();
        let lts = Lts::open(
            store.clone(),
            trackers.clone(),
            consumers.clone(),
            &sinks,
            routing,
            config.lts_settings(),
            region_of.clone(),
        )
        .map_err(OpenError::Lts)?;
        let transfer = Transfer::open(
            open_digest_keys(config, backend)?,
            consumers.clone(),
            store.clone(),
            trackers.clone(),
            storage,
            config.transfer_settings(),
            region_of,
            now_ms() / 1000,
        )
        .map_err(|e| OpenError::Transfer(e.to_string()))?;
        let (notifications, smn) = open_notifications(config, backend)?;
        let notifications = Arc::new(notifications);
        let outbox = Arc::new(Outbox::on(smn.clone()));
        // Holds the journal at once, before retention first runs.
        let notifier = Notifier::open(
            store,
            notifications.clone(),
            consumers.clone(),
            outbox.clone(),
        );
        Ok(Settings {
            identity,
            trackers,
            catalog,
            transfer: Arc::new(transfer),
            consumers,
            notifications,
            topics: Arc::new(match subscription_secrets_key(config, backend)? {
                Some(key) => TopicStore::sealed(smn, key)?,
                None => TopicStore::on(smn),
            }),
            outbox,
            notifier: Arc::new(notifier),
            lts: Arc::new(lts),
        })
    }
}

/// The identity store: in the data directory, or with `store.backend =
/// "postgres"` in PostgreSQL, shared with the other nodes, its access-key
/// secrets encrypted under a key derived from `store.secret_key` (every
/// node must be given the same; a node with another refuses to start).
pub fn open_identity(config: &Config, backend: &Backend) -> Result<IdentityStore, OpenError> {
    let Backend::Postgres { pool, auto_migrate } = backend else {
        return Ok(IdentityStore::open(&config.identity_dir())?);
    };
    let key = shared_secret_key(
        config,
        "encrypts the access-key secrets that every node reads",
    )
    .map_err(IdentityError::Crypto)?;
    let origin = match config.store.secret_key_file {
        Some(_) => "store.secret_key_file",
        None => "store.secret_key",
    };
    let key = ServerKey::derive(&key, origin);
    Ok(IdentityStore::open_postgres(
        pool.clone(),
        *auto_migrate,
        &key,
    )?)
}

/// The trackers (with tags and encryption keys) and the operation catalog:
/// in the data directory, or with `store.backend = "postgres"` in
/// PostgreSQL, shared with the other nodes; this node's view of what each
/// project records follows their changes within about a second.
pub fn open_trackers(
    config: &Config,
    backend: &Backend,
) -> Result<(Arc<TrackerStore>, Arc<Catalog>), OpenError> {
    let limits = config.tracker_limits();
    let (trackers, catalog) = match backend {
        Backend::Embedded => {
            let dir = config.trackers_dir();
            (TrackerStore::open(&dir, limits)?, Catalog::open(&dir)?)
        }
        Backend::Postgres { pool, auto_migrate } => {
            let db = Db::postgres(pool.clone(), &cts_tracker::PG_SCHEMA, *auto_migrate)?;
            (TrackerStore::on(db.clone(), limits)?, Catalog::on(db)?)
        }
    };
    let trackers = Arc::new(trackers);
    TrackerStore::follow_other_nodes(&trackers);
    Ok((trackers, Arc::new(catalog)))
}

/// The digest signing keys: in `DATA_DIR/transfer`, or with
/// `store.backend = "postgres"` in PostgreSQL, their private halves sealed
/// under `store.secret_key` (needed there; also used by an embedded node
/// that sets it).
pub fn open_digest_keys(
    config: &Config,
    backend: &Backend,
) -> Result<cts_transfer::Keys, OpenError> {
    let secret = config
        .store_secret_key()
        .map_err(|e| OpenError::Transfer(e.to_string()))?
        .map(|k| cts_db::SecretKey::derive(&k, cts_transfer::SECRET_PURPOSE));
    let keys = match backend {
        Backend::Embedded => cts_transfer::Keys::open(&config.data_dir.join("transfer"), secret),
        Backend::Postgres { pool, auto_migrate } => cts_transfer::Keys::on(
            Db::postgres(pool.clone(), &cts_transfer::PG_SCHEMA, *auto_migrate)?,
            secret,
        ),
    };
    keys.map_err(|e| OpenError::Transfer(e.to_string()))
}

/// The state of every journal consumer: in the data directory, or with
/// `store.backend = "postgres"` in PostgreSQL, shared with the other nodes
/// under leases held in this process's name.
pub fn open_consumers(config: &Config, backend: &Backend) -> Result<ConsumerStore, OpenError> {
    let db = backend.db(
        &config.data_dir.join("consumers"),
        cts_consumer::FILE,
        &cts_consumer::sqlite_migrations(),
        &cts_consumer::PG_SCHEMA,
    )?;
    let node = cts_consumer::node_id();
    if db.is_postgres() {
        tracing::info!(%node, "consumer state on PostgreSQL; this node's name in the leases");
    }
    Ok(ConsumerStore::new(db, node, config.lease_settings())?)
}

/// The notification rules, and the database of the topics and the outbox:
/// in the data directory, or with `store.backend = "postgres"` in the
/// shared database.
pub fn open_notifications(
    config: &Config,
    backend: &Backend,
) -> Result<(NotificationStore, Db), OpenError> {
    let quota = config.quotas.notifications;
    let Backend::Postgres { pool, auto_migrate } = backend else {
        let dir = config.notifications_dir();
        let rules = NotificationStore::open(&dir, quota)?;
        return Ok((rules, cts_smn::open_embedded(&dir)?));
    };
    let rules = NotificationStore::open_postgres(pool.clone(), *auto_migrate, quota)?;
    Ok((rules, cts_smn::open_postgres(pool.clone(), *auto_migrate)?))
}

/// The key sealing the subscriptions' signing secrets where the nodes
/// share them (PostgreSQL: `store.secret_key`, needed there); `None` on an
/// embedded node, whose database file only ctsd's user reads.
pub fn subscription_secrets_key(
    config: &Config,
    backend: &Backend,
) -> Result<Option<cts_db::SecretKey>, OpenError> {
    if !matches!(backend, Backend::Postgres { .. }) {
        return Ok(None);
    }
    let key = shared_secret_key(config, "seals the subscriptions' signing secrets")
        .map_err(SmnError::Storage)?;
    Ok(Some(cts_db::SecretKey::derive(
        &key,
        cts_smn::SECRET_PURPOSE,
    )))
}

/// `store.secret_key`, which PostgreSQL needs: it (`what`) protects the
/// secrets every node reads.
fn shared_secret_key(config: &Config, what: &str) -> Result<[u8; 32], String> {
    config
        .store_secret_key()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "store.secret_key (CTS_STORE_SECRET_KEY) or store.secret_key_file is needed \
                 with store.backend = \"postgres\": it {what}"
            )
        })
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("opening the trace store: {0}")]
    Store(#[from] StoreError),
    #[error("opening the identity store: {0}")]
    Identity(#[from] IdentityError),
    #[error("opening the tracker store: {0}")]
    Trackers(#[from] TrackerError),
    #[error("opening the transfer: {0}")]
    Transfer(String),
    #[error("opening the consumer state: {0}")]
    Consumers(#[from] cts_consumer::ConsumerError),
    #[error("opening the notification store: {0}")]
    Notifications(#[from] NotificationError),
    #[error("opening the notification matcher: {0}")]
    Notifier(#[from] NotifierError),
    #[error("opening the topics and outbox: {0}")]
    Smn(#[from] SmnError),
    #[error("opening the LTS sinks: {0}")]
    Lts(String),
    #[error("opening a store in PostgreSQL: {0}")]
    Db(#[from] cts_db::DbError),
    #[error("starting the ingest threads: {0}")]
    Threads(std::io::Error),
}

/// Says once, at start, what the Citus step did.
fn log_distribution(d: crate::citus::Distribution) {
    match d {
        crate::citus::Distribution::NoCitus => {
            tracing::info!("the citus extension is not installed: no table distributed")
        }
        crate::citus::Distribution::Done(now) => {
            tracing::info!(newly = ?now, "citus: per-project tables distributed, shared ones reference tables")
        }
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

pub use cts_clock::now_ms;
