//! The server's configuration: one typed struct, layered with figment.
//!
//! Sources, later ones winning: the embedded defaults, the TOML file given
//! with `--config`, `CTS_*` environment variables, command-line flags. The
//! result is validated before anything is opened.
//!
//! Environment variables: `CTS_<KEY>` sets a top-level key (`CTS_LISTEN`,
//! `CTS_DATA_DIR`, `CTS_LOG_FORMAT`); `CTS_<SECTION>_<KEY>` sets a key of a
//! section (`CTS_STORE_RETENTION=3s` sets `store.retention`). Sections are
//! recognised from the defaults, so a new section needs no mapping code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cts_store::{OnDamage, StoreConfig};
use cts_store_pg::{PgSettings, PgUrl};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Prefix of the server's environment variables.
const ENV_PREFIX: &str = "CTS_";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The URL clients reach this server at, for token catalogs and
    /// `bootstrap.json` (e.g. `https://cts.example.com`). Unset: the
    /// scheme and `Host` of each request.
    pub public_url: Option<String>,
    /// Root of the store (`journal/`, `index/`).
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub limits: Limits,
    pub store: StoreSettings,
    pub metrics: MetricsSettings,
    pub auth: AuthSettings,
    pub tls: TlsSettings,
    pub quotas: QuotaSettings,
    pub transfer: TransferSettings,
    /// Where trace files go: an S3-compatible store, or (without
    /// `endpoint`) the local directory `DATA_DIR/obs`.
    pub obs: ObsSettings,
    /// How notification messages are delivered (see docs/notifications.md).
    pub delivery: DeliverySettings,
    /// The relay of e-mail subscriptions.
    pub smtp: SmtpSettings,
    /// Log sinks of trace analysis (trackers with `lts` on).
    pub lts: LtsSettings,
    /// How nodes sharing PostgreSQL hand the journal consumers' work
    /// (each tracker's transfer and LTS stream, the notification matcher)
    /// to one another (see docs/postgres.md).
    pub leases: LeaseConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// A node that stops renewing its leases (killed, cut off) loses them
    /// after this long, and another node takes its work over.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How often a node renews its leases: below `ttl`.
    #[serde(with = "humantime_serde")]
    pub renew_every: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Longest wait for one delivery attempt (connect, send, answer).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a failing message is retried before it is dead.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
    /// Wait after a first failure, doubled after each further one.
    #[serde(with = "humantime_serde")]
    pub first_backoff: Duration,
    /// Longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long a delivered message is kept (listed as delivered) before
    /// it is pruned.
    #[serde(with = "humantime_serde")]
    pub retain_delivered: Duration,
    /// How long a dead message is kept (listed, counted) before it is
    /// pruned; removing its subscription removes it sooner.
    #[serde(with = "humantime_serde")]
    pub retain_dead: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTlsMode {
    /// STARTTLS, required (usually port 587).
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
    /// Plain SMTP: only for a relay on this host or a trusted network.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// The relay; unset: e-mail subscriptions wait (and retry) until set.
    pub host: Option<String>,
    pub port: u16,
    pub tls: SmtpTlsMode,
    /// AUTH user and password, when the relay wants them.
    pub user: Option<String>,
    pub password: Option<cts_smn::Password>,
    /// `From:` of the messages, e.g. `CTS <cts@example.com>`.
    pub from: Option<String>,
}

/// `[lts]`: the sinks (`[[lts.sinks]]`), which one each project's
/// trackers use, and how batches go. `kind`, `endpoint` and `ca_file`
/// (`CTS_LTS_KIND`, `CTS_LTS_ENDPOINT`, `CTS_LTS_CA_FILE`) define one more
/// sink, `default`, used by every project when `default_sink` is unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LtsSettings {
    pub kind: Option<cts_lts::SinkKind>,
    pub endpoint: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// The facility of the `syslog` sink of `kind`/`endpoint`
    /// (`CTS_LTS_FACILITY`).
    pub facility: Option<cts_lts::Facility>,
    /// How the `otlp` sink of `kind`/`endpoint` compresses its requests
    /// (`CTS_LTS_COMPRESSION`: `gzip`, the default, `zstd` or `none`).
    pub compression: Option<cts_lts::Compression>,
    pub sinks: Vec<cts_lts::SinkSpec>,
    /// The sink of every project without an entry in `projects`.
    pub default_sink: Option<String>,
    /// Project id → sink name.
    pub projects: BTreeMap<String, String>,
    /// Journal entries per request at most.
    pub batch_max: usize,
    /// Batches of one tracker encoding or in flight at once (`otlp`).
    pub in_flight: usize,
    /// Batches of one tracker encoded at once (default: the cores).
    pub encode_threads: usize,
    /// Time between delivery passes: the longest a trace waits to be sent.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Longest wait between attempts on a receiver that is down.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

/// The name of the sink `CTS_LTS_KIND`/`CTS_LTS_ENDPOINT` define.
const ENV_SINK: &str = "default";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferSettings {
    /// Width of a transfer period: one trace file per period (and service).
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Width of a digest window (`is_support_validate`).
    #[serde(with = "humantime_serde")]
    pub digest_period: Duration,
    /// How long after a period ends its files are written, so that traces
    /// committed at its very end are in.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Longest wait between attempts on a failing bucket.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObsSettings {
    /// `https://obs.example.com`, `http://127.0.0.1:9000`; unset: the local
    /// directory `DATA_DIR/obs` (bucket = subdirectory).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Virtual-host style (`bucket.host`) instead of path style.
    pub virtual_host_style: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// Data trackers per project (besides the one management tracker).
    pub data_trackers: u64,
    /// Key event notifications per project.
    pub notifications: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Lifetime of tokens issued by `POST /v3/auth/tokens`.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// How far `X-Sdk-Date` of a signed request may be from the server clock.
    #[serde(with = "humantime_serde")]
    pub signature_max_skew: Duration,
    /// Failed password logins of one user from one address before that
    /// pair is refused for `login_lockout`.
    pub login_max_failures: u32,
    /// Failed password logins of one user, from any address, before the
    /// user is refused for `login_lockout`.
    pub login_user_max_failures: u32,
    /// Failed password logins from one address, for any user, before the
    /// address is refused for `login_lockout` (against password spraying).
    pub login_address_max_failures: u32,
    #[serde(with = "humantime_serde")]
    pub login_lockout: Duration,
    /// Refused credentials from one address are recorded in full once per
    /// window; the others of the window are counted in one trace.
    #[serde(with = "humantime_serde")]
    pub refusal_audit_window: Duration,
    /// Largest body of an identity request, in bytes.
    pub max_identity_body_bytes: usize,
    /// A console session unused this long is signed out.
    #[serde(with = "humantime_serde")]
    pub console_idle_timeout: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain; with `key`, the server speaks HTTPS only.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Traces one report request may carry.
    pub max_traces_per_request: usize,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Traces whose `time` is further in the future than this are refused.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Open connections; one more is answered 503 (`CTS.9009`) and closed.
    pub max_connections: usize,
    /// From when the server waits for a request (connection opened, or
    /// previous answer sent) to its complete head; slower, the connection
    /// is closed. Also bounds a TLS handshake.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest pause of a client in the middle of a body: answered 408
    /// (`CTS.9010`) and the connection closed.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// On SIGTERM, how long requests in flight may take to finish before
    /// the server exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// How long traces are kept (and queryable).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Width of an index partition; retention drops whole partitions.
    #[serde(with = "humantime_serde")]
    pub partition: Duration,
    /// How often expired partitions are looked for.
    #[serde(with = "humantime_serde")]
    pub retention_check_interval: Duration,
    pub memtable_max_traces: usize,
    pub journal_segment_bytes: u64,
    pub fsync: bool,
    /// A partition's index segments are merged in the background down to
    /// at most this many: the bound on open index files.
    pub max_segments_per_partition: usize,
    /// Bytes of index segment summaries (Bloom filters, samples) held in
    /// memory, for the segments used most; the bound on the index's memory
    /// whatever the data held.
    pub index_cache_bytes: u64,
    /// Bytes of decompressed journal frames held in memory for queries,
    /// the most recently read ones (0: none).
    pub frame_cache_bytes: u64,
    /// The niceness of ingest's threads (parsing and storing report
    /// batches, index flushes; background work runs 5 lower): on a
    /// saturated machine queries get a core first. 0: ingest at the
    /// process's priority, as queries.
    pub ingest_nice: i32,
    /// What a start does on a damaged journal: `refuse` (name it and
    /// stop) or `read-only` (quarantine a copy, serve queries, refuse
    /// every change).
    pub on_damage: OnDamage,
    /// Where traces are stored: `embedded` (this node's data directory)
    /// or `postgres` (`postgres_url`, shared by any number of nodes).
    pub backend: StoreBackend,
    /// The PostgreSQL database (`postgres://user:password@host:port/db`);
    /// needed with `backend = "postgres"`. Printed without its password.
    pub postgres_url: Option<PgUrl>,
    /// Connections to PostgreSQL this node keeps open at most.
    pub postgres_pool_size: u32,
    /// PEM CA file: TLS to PostgreSQL, the server's certificate verified
    /// against it. Unset: plain connections (loopback, a trusted network).
    pub postgres_ca_file: Option<PathBuf>,
    /// Whether a start applies pending schema migrations (`ctsd migrate`
    /// does otherwise).
    pub auto_migrate: bool,
    /// The key that encrypts the secrets a node keeps in PostgreSQL (the
    /// digest signing keys): 32 bytes in base64, the same on every node.
    /// Usually from the environment (`CTS_STORE_SECRET_KEY`); never printed.
    pub secret_key: Option<Secret>,
    /// A file holding that key (base64), instead of `secret_key`.
    pub secret_key_file: Option<PathBuf>,
}

/// A secret given in the configuration: kept out of `Debug` output (and so
/// out of logs).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Embedded,
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Whether `/metrics` is served without a credential (for a
    /// Prometheus that cannot sign); otherwise any valid credential.
    pub public: bool,
}

impl Default for Config {
    fn default() -> Self {
        // The store's own defaults, so the two cannot drift apart.
        let store = StoreConfig::new("./data");
        let ms = |v: i64| Duration::from_millis(v as u64);
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            data_dir: store.dir.clone(),
            log_format: LogFormat::Text,
            limits: Limits {
                max_traces_per_request: 1000,
                max_body_bytes: 5 << 20,
                max_clock_skew: Duration::from_secs(15 * 60),
                max_connections: 1024,
                header_read_timeout: Duration::from_secs(30),
                body_read_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(60),
                shutdown_grace: Duration::from_secs(30),
            },
            store: StoreSettings {
                retention: ms(store.retention_ms),
                partition: ms(store.partition_ms),
                retention_check_interval: Duration::from_secs(60),
                memtable_max_traces: store.memtable_max_traces,
                journal_segment_bytes: store.journal_segment_bytes,
                fsync: store.fsync,
                max_segments_per_partition: store.max_segments_per_partition,
                index_cache_bytes: store.index_cache_bytes,
                frame_cache_bytes: store.frame_cache_bytes,
                ingest_nice: 5,
                on_damage: store.on_damage,
                backend: StoreBackend::Embedded,
                postgres_url: None,
                postgres_pool_size: PgSettings::DEFAULT_POOL_SIZE,
                postgres_ca_file: None,
                auto_migrate: true,
                secret_key: None,
                secret_key_file: None,
            },
            metrics: MetricsSettings { public: true },
            auth: AuthSettings {
                token_ttl: Duration::from_secs(24 * 3600),
                signature_max_skew: Duration::from_secs(15 * 60),
                login_max_failures: 5,
                login_user_max_failures: 20,
                login_address_max_failures: 100,
                login_lockout: Duration::from_secs(15 * 60),
                refusal_audit_window: Duration::from_secs(60),
                max_identity_body_bytes: 64 << 10,
                console_idle_timeout: Duration::from_secs(15 * 60),
            },
            tls: TlsSettings::default(),
            transfer: TransferSettings {
                period: Duration::from_secs(300),
                digest_period: Duration::from_secs(3600),
                grace: Duration::from_secs(5),
                max_backoff: Duration::from_secs(300),
            },
            obs: ObsSettings::default(),
            delivery: DeliverySettings {
                timeout: Duration::from_secs(10),
                retry_for: Duration::from_secs(24 * 3600),
                first_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(15 * 60),
                // Like the traces they carry.
                retain_delivered: Duration::from_secs(7 * 86_400),
                // Long enough to be noticed (cts_notification_dead) and
                // looked into; bounded, so a dead endpoint cannot grow the
                // outbox without end.
                retain_dead: Duration::from_secs(30 * 86_400),
            },
            smtp: SmtpSettings {
                host: None,
                port: 587,
                tls: SmtpTlsMode::Starttls,
                user: None,
                password: None,
                from: None,
            },
            lts: LtsSettings {
                kind: None,
                endpoint: None,
                ca_file: None,
                facility: None,
                compression: None,
                sinks: Vec::new(),
                default_sink: None,
                projects: BTreeMap::new(),
                batch_max: cts_lts::Settings::default().batch_max,
                in_flight: cts_lts::Settings::default().in_flight,
                encode_threads: cts_lts::Settings::default().encode_threads,
                interval: cts_lts::Settings::default().interval,
                max_backoff: Duration::from_secs(
                    cts_lts::Settings::default().max_backoff_secs as u64,
                ),
            },
            quotas: QuotaSettings {
                data_trackers: cts_tracker::Limits::default().data_trackers,
                notifications: cts_tracker::Limits::default().notifications,
            },
            leases: LeaseConfig {
                ttl: cts_consumer::LeaseSettings::default().ttl,
                renew_every: cts_consumer::LeaseSettings::default().renew_every,
            },
        }
    }
}

/// Values given on the command line; they win over every other source.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The causes are in the message itself, not chained as `source()`,
    // so that a report prints each problem once.
    #[error("configuration: {}", describe(.0))]
    Load(Box<figment::Error>),
    #[error("configuration file {}: {error}", path.display())]
    File {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("configuration: {key} {rule}")]
    Invalid { key: &'static str, rule: String },
}

impl Config {
    /// Layers defaults, `file`, the `CTS_*` environment and `overrides`, then
    /// validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            // figment treats a missing file as an empty layer; a file named
            // on the command line must exist.
            std::fs::metadata(file).map_err(|error| ConfigError::File {
                path: file.to_path_buf(),
                error,
            })?;
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(env_provider());
        if let Some(listen) = overrides.listen {
            figment = figment.merge(("listen", listen.to_string()));
        }
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(("data_dir", dir));
        }
        if let Some(cert) = &overrides.tls_cert {
            figment = figment.merge(("tls.cert", cert));
        }
        if let Some(key) = &overrides.tls_key {
            figment = figment.merge(("tls.key", key));
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, rule: &str| {
            Err(ConfigError::Invalid {
                key,
                rule: rule.to_string(),
            })
        };
        let positive = "must be greater than zero";
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if self.limits.max_traces_per_request == 0 {
            return invalid("limits.max_traces_per_request", positive);
        }
        if self.limits.max_body_bytes < 1024 {
            return invalid("limits.max_body_bytes", "must be at least 1024");
        }
        if self.limits.max_connections == 0 {
            return invalid("limits.max_connections", positive);
        }
        for (key, value) in [
            (
                "limits.header_read_timeout",
                self.limits.header_read_timeout,
            ),
            ("limits.body_read_timeout", self.limits.body_read_timeout),
            ("limits.idle_timeout", self.limits.idle_timeout),
            ("store.retention", self.store.retention),
            ("store.partition", self.store.partition),
            (
                "store.retention_check_interval",
                self.store.retention_check_interval,
            ),
        ] {
            if value < Duration::from_millis(1) {
                return invalid(key, "must be at least 1ms");
            }
        }
        if self.store.partition > self.store.retention {
            return invalid("store.partition", "must not be longer than store.retention");
        }
        if self.store.memtable_max_traces == 0 {
            return invalid("store.memtable_max_traces", positive);
        }
        if self.store.max_segments_per_partition < 2 {
            return invalid("store.max_segments_per_partition", "must be at least 2");
        }
        if !(0..=cts_priority::MAX_INGEST_NICE).contains(&self.store.ingest_nice) {
            let rule = format!("must be 0 to {}", cts_priority::MAX_INGEST_NICE);
            return invalid("store.ingest_nice", &rule);
        }
        if self.store.journal_segment_bytes < 4096 {
            return invalid("store.journal_segment_bytes", "must be at least 4096");
        }
        if self.store.journal_segment_bytes > cts_store::journal::MAX_FILE_BYTES {
            return invalid(
                "store.journal_segment_bytes",
                "must be at most 1073741824 (1 GiB)",
            );
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return invalid("tls", "needs both cert and key, or neither");
        }
        if self.auth.token_ttl < Duration::from_secs(1) {
            return invalid("auth.token_ttl", "must be at least 1s");
        }
        if self.transfer.period < Duration::from_secs(10) {
            return invalid("transfer.period", "must be at least 10s");
        }
        if self.transfer.digest_period < Duration::from_secs(1) {
            return invalid("transfer.digest_period", "must be at least 1s");
        }
        if self.obs.endpoint.is_some()
            && (self.obs.access_key.is_none() || self.obs.secret_key.is_none())
        {
            return invalid("obs", "needs access_key and secret_key with an endpoint");
        }
        if self.auth.console_idle_timeout < Duration::from_secs(1) {
            return invalid("auth.console_idle_timeout", "must be at least 1s");
        }
        if self.auth.refusal_audit_window < Duration::from_secs(1) {
            return invalid("auth.refusal_audit_window", "must be at least 1s");
        }
        for (key, v) in [
            ("auth.login_max_failures", self.auth.login_max_failures),
            (
                "auth.login_user_max_failures",
                self.auth.login_user_max_failures,
            ),
            (
                "auth.login_address_max_failures",
                self.auth.login_address_max_failures,
            ),
        ] {
            if v == 0 {
                return invalid(key, positive);
            }
        }
        for (key, value) in [
            ("delivery.timeout", self.delivery.timeout),
            ("delivery.retry_for", self.delivery.retry_for),
            ("delivery.first_backoff", self.delivery.first_backoff),
            ("delivery.max_backoff", self.delivery.max_backoff),
            ("delivery.retain_delivered", self.delivery.retain_delivered),
            ("delivery.retain_dead", self.delivery.retain_dead),
        ] {
            if value < Duration::from_millis(1) {
                return invalid(key, "must be at least 1ms");
            }
        }
        if self.smtp.host.is_some() && self.smtp.from.is_none() {
            return invalid("smtp.from", "is required with smtp.host");
        }
        if self.smtp.user.is_some() != self.smtp.password.is_some() {
            return invalid("smtp", "needs both user and password, or neither");
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid("public_url", "must start with http:// or https://");
            }
        }
        if let Err(e) = self.lease_settings().check() {
            return invalid("leases.renew_every", &e.to_string());
        }
        self.validate_postgres()?;
        self.validate_lts()
    }

    fn validate_postgres(&self) -> Result<(), ConfigError> {
        let invalid = |key, rule: &str| {
            Err(ConfigError::Invalid {
                key,
                rule: rule.to_string(),
            })
        };
        let store = &self.store;
        if store.backend == StoreBackend::Postgres && store.postgres_url.is_none() {
            return invalid(
                "store.postgres_url",
                "is needed with store.backend = \"postgres\"",
            );
        }
        if store.postgres_pool_size == 0 {
            return invalid("store.postgres_pool_size", "must be greater than zero");
        }
        if store.postgres_ca_file.is_some() && store.postgres_url.is_none() {
            return invalid("store.postgres_ca_file", "is for store.postgres_url");
        }
        if store.secret_key.is_some() && store.secret_key_file.is_some() {
            return invalid(
                "store.secret_key_file",
                "and store.secret_key are two ways to give one key: set one",
            );
        }
        self.store_secret_key().map(drop)
    }

    /// The store's secret key, from `store.secret_key` or the file
    /// `store.secret_key_file`; `None` when neither is set. An unreadable
    /// file or a value that is not 32 bytes in base64 is an error naming
    /// the setting.
    pub fn store_secret_key(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        use base64::Engine as _;
        let (key, env, text) = match (&self.store.secret_key, &self.store.secret_key_file) {
            (Some(Secret(text)), _) => ("store.secret_key", "CTS_STORE_SECRET_KEY", text.clone()),
            (None, Some(path)) => (
                "store.secret_key_file",
                "CTS_STORE_SECRET_KEY_FILE",
                std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                    key: "store.secret_key_file",
                    rule: format!("cannot be read ({}): {e}", path.display()),
                })?,
            ),
            (None, None) => return Ok(None),
        };
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(Some)
            .ok_or_else(|| ConfigError::Invalid {
                key,
                rule: format!(
                    "(environment {env}) must be 32 bytes in base64 (make one with \
                     `head -c 32 /dev/urandom | base64`)"
                ),
            })
    }

    /// The consumer leases between nodes.
    pub fn lease_settings(&self) -> cts_consumer::LeaseSettings {
        cts_consumer::LeaseSettings {
            ttl: self.leases.ttl,
            renew_every: self.leases.renew_every,
        }
    }

    fn validate_lts(&self) -> Result<(), ConfigError> {
        let invalid = |key, rule: String| Err(ConfigError::Invalid { key, rule });
        let lts = &self.lts;
        match (&lts.kind, &lts.endpoint) {
            (Some(_), None) => return invalid("lts.endpoint", "is needed with lts.kind".into()),
            (None, Some(_)) => return invalid("lts.kind", "is needed with lts.endpoint".into()),
            _ => {}
        }
        if lts.kind.is_none() && lts.ca_file.is_some() {
            return invalid(
                "lts.ca_file",
                "is for the sink of lts.kind/lts.endpoint".into(),
            );
        }
        if lts.kind.is_none() && lts.facility.is_some() {
            return invalid(
                "lts.facility",
                "is for the sink of lts.kind/lts.endpoint".into(),
            );
        }
        if lts.kind.is_none() && lts.compression.is_some() {
            return invalid(
                "lts.compression",
                "is for the sink of lts.kind/lts.endpoint".into(),
            );
        }
        if lts.batch_max == 0 {
            return invalid("lts.batch_max", "must be greater than zero".into());
        }
        if !(1..=64).contains(&lts.in_flight) {
            return invalid("lts.in_flight", "must be 1 to 64".into());
        }
        if !(1..=64).contains(&lts.encode_threads) {
            return invalid("lts.encode_threads", "must be 1 to 64".into());
        }
        let (sinks, routing) = self.lts_sinks();
        let mut names = std::collections::BTreeSet::new();
        for s in &sinks {
            if let Err(e) = s.check() {
                return invalid("lts.sinks", e.to_string());
            }
            if !names.insert(s.name.as_str()) {
                return invalid("lts.sinks", format!("two sinks are named {:?}", s.name));
            }
        }
        let named = routing.default_sink.iter().chain(routing.projects.values());
        if let Some(n) = named.into_iter().find(|n| !names.contains(n.as_str())) {
            return invalid("lts.default_sink", format!("no sink is named {n:?}"));
        }
        Ok(())
    }

    /// The sinks (with the one of `lts.kind`/`lts.endpoint`) and which
    /// one each project uses.
    pub fn lts_sinks(&self) -> (Vec<cts_lts::SinkSpec>, cts_lts::Routing) {
        let lts = &self.lts;
        let mut sinks = lts.sinks.clone();
        let mut default_sink = lts.default_sink.clone();
        if let (Some(kind), Some(endpoint)) = (lts.kind, &lts.endpoint) {
            sinks.push(cts_lts::SinkSpec {
                name: ENV_SINK.into(),
                kind,
                endpoint: endpoint.clone(),
                ca_file: lts.ca_file.clone(),
                headers: BTreeMap::new(),
                facility: lts.facility,
                compression: lts.compression,
            });
            default_sink.get_or_insert_with(|| ENV_SINK.into());
        }
        let routing = cts_lts::Routing {
            default_sink,
            projects: lts.projects.clone(),
        };
        (sinks, routing)
    }

    pub fn lts_settings(&self) -> cts_lts::Settings {
        cts_lts::Settings {
            period_secs: self.transfer_settings().period_secs,
            batch_max: self.lts.batch_max,
            in_flight: self.lts.in_flight,
            encode_threads: self.lts.encode_threads,
            interval: self.lts.interval.max(Duration::from_millis(10)),
            max_backoff_secs: i64::try_from(self.lts.max_backoff.as_secs())
                .unwrap_or(i64::MAX)
                .max(1),
            ..cts_lts::Settings::default()
        }
    }

    pub fn retention_ms(&self) -> i64 {
        duration_ms(self.store.retention)
    }

    pub fn max_clock_skew_ms(&self) -> i64 {
        duration_ms(self.limits.max_clock_skew)
    }

    /// Where trackers, their tags and the operation catalog live.
    pub fn trackers_dir(&self) -> PathBuf {
        self.data_dir.join("trackers")
    }

    /// Notification rules, topics and the outbox.
    pub fn notifications_dir(&self) -> PathBuf {
        self.data_dir.join("notifications")
    }

    pub fn tracker_limits(&self) -> cts_tracker::Limits {
        cts_tracker::Limits {
            data_trackers: self.quotas.data_trackers,
            notifications: self.quotas.notifications,
        }
    }

    /// The object storage of trace files.
    pub fn storage_config(&self) -> cts_archive::StorageConfig {
        match &self.obs.endpoint {
            None => cts_archive::StorageConfig::Local(self.data_dir.join("obs")),
            Some(endpoint) => cts_archive::StorageConfig::S3(cts_archive::S3Config {
                endpoint: Some(endpoint.clone()),
                region: self
                    .obs
                    .region
                    .clone()
                    .unwrap_or_else(|| "us-east-1".into()),
                access_key: self.obs.access_key.clone().unwrap_or_default(),
                secret_key: self.obs.secret_key.clone().unwrap_or_default(),
                path_style: !self.obs.virtual_host_style,
                allow_http: endpoint.starts_with("http://"),
            }),
        }
    }

    pub fn transfer_settings(&self) -> cts_transfer::Settings {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        cts_transfer::Settings {
            period_secs: secs(self.transfer.period),
            digest_period_secs: secs(self.transfer.digest_period).max(1),
            grace_secs: secs(self.transfer.grace),
            max_backoff_secs: secs(self.transfer.max_backoff).max(1),
            ..cts_transfer::Settings::default()
        }
    }

    /// How long finished notification messages are kept.
    pub fn outbox_retention(&self) -> cts_smn::Retention {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        cts_smn::Retention {
            delivered_ms: ms(self.delivery.retain_delivered),
            dead_ms: ms(self.delivery.retain_dead),
        }
    }

    /// The delivery of notification messages.
    pub fn delivery_config(&self) -> cts_smn::DeliveryConfig {
        let d = &self.delivery;
        let smtp = &self.smtp;
        cts_smn::DeliveryConfig {
            timeout: d.timeout,
            retry_for: d.retry_for,
            first_backoff: d.first_backoff,
            max_backoff: d.max_backoff,
            smtp: smtp.host.as_ref().map(|host| cts_smn::SmtpConfig {
                host: host.clone(),
                port: smtp.port,
                tls: match smtp.tls {
                    SmtpTlsMode::Starttls => cts_smn::SmtpTls::Starttls,
                    SmtpTlsMode::Tls => cts_smn::SmtpTls::Tls,
                    SmtpTlsMode::None => cts_smn::SmtpTls::None,
                },
                user: smtp.user.clone(),
                password: smtp.password.clone(),
                from: smtp.from.clone().unwrap_or_default(),
            }),
        }
    }

    /// Where the identity store lives.
    pub fn identity_dir(&self) -> PathBuf {
        self.data_dir.join("identity")
    }

    /// How to reach PostgreSQL, when `store.backend = "postgres"`.
    pub fn postgres_settings(&self) -> Option<PgSettings> {
        if self.store.backend != StoreBackend::Postgres {
            return None;
        }
        let store = &self.store;
        let mut settings = PgSettings::new(store.postgres_url.clone()?);
        settings.pool_size = store.postgres_pool_size;
        settings.ca_file = store.postgres_ca_file.clone();
        settings.auto_migrate = store.auto_migrate;
        Some(settings)
    }

    /// The settings of the embedded store engine.
    pub fn store_config(&self) -> StoreConfig {
        let mut c = StoreConfig::new(&self.data_dir);
        c.retention_ms = self.retention_ms();
        c.partition_ms = duration_ms(self.store.partition);
        c.memtable_max_traces = self.store.memtable_max_traces;
        c.journal_segment_bytes = self.store.journal_segment_bytes;
        c.fsync = self.store.fsync;
        c.max_segments_per_partition = self.store.max_segments_per_partition;
        c.index_cache_bytes = self.store.index_cache_bytes;
        c.frame_cache_bytes = self.store.frame_cache_bytes;
        c.on_damage = self.store.on_damage;
        c
    }
}

/// Each problem as `key: what is wrong (where the value came from)`, with
/// the dotted key and, for the environment, the variable's own name.
fn describe(err: &figment::Error) -> String {
    let problems: Vec<String> = err
        .clone()
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = match &e.metadata {
                Some(m) if m.name.contains("environment") => format!(
                    " (environment variable {ENV_PREFIX}{})",
                    key.replace('.', "_").to_ascii_uppercase()
                ),
                Some(m) => match &m.source {
                    Some(source) => format!(" (in {source})"),
                    None => format!(" (in {})", m.name),
                },
                None => String::new(),
            };
            if key.is_empty() {
                format!("{}{origin}", e.kind)
            } else {
                format!("{key}: {}{origin}", e.kind)
            }
        })
        .collect();
    problems.join("; ")
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Top-level keys and sections (with their keys) of the configuration,
/// read off the defaults so they cannot drift from the struct.
struct KeyShape {
    top: Vec<String>,
    sections: BTreeMap<String, Vec<String>>,
}

fn key_shape() -> KeyShape {
    let value = serde_json::to_value(Config::default()).expect("Config serializes to JSON");
    let mut shape = KeyShape {
        top: Vec::new(),
        sections: BTreeMap::new(),
    };
    for (key, v) in value.as_object().expect("Config is a struct") {
        match v.as_object() {
            Some(section) => {
                shape
                    .sections
                    .insert(key.clone(), section.keys().cloned().collect());
            }
            None => shape.top.push(key.clone()),
        }
    }
    shape
}

/// The `cts` client's variables (after `CTS_`, lower-cased): one shell may
/// export both, and `CTS_AUTH_TOKEN` would otherwise read as the key
/// `auth.token` of the server's `[auth]` section and stop the start.
const CLIENT_VARIABLES: [&str; 9] = [
    "endpoint",
    "project_id",
    "access_key",
    "secret_key",
    "auth_token",
    "user_name",
    "password",
    "domain_name",
    "credentials",
];

/// Maps the part of a variable name after `CTS_` (lower-cased) to a dotted
/// configuration key. The client's variables and names that match no
/// top-level key and no section are left out. Within a section every other
/// name is kept, so that a misspelt key is reported instead of silently
/// ignored.
fn map_env_key(shape: &KeyShape, name: &str) -> Option<String> {
    if CLIENT_VARIABLES.contains(&name) {
        return None;
    }
    if shape.top.iter().any(|k| k == name) {
        return Some(name.to_string());
    }
    shape.sections.keys().find_map(|section| {
        let rest = name.strip_prefix(section.as_str())?.strip_prefix('_')?;
        (!rest.is_empty()).then(|| format!("{section}.{rest}"))
    })
}

fn env_provider() -> Env {
    let shape = std::sync::Arc::new(key_shape());
    Env::prefixed(ENV_PREFIX).filter_map(move |key| {
        map_env_key(&shape, &key.as_str().to_ascii_lowercase()).map(Into::into)
    })
}

#[cfg(test)]
// figment's `Jail` closures return its (large) error type; not ours to change.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn env_names_map_to_keys() {
        let shape = key_shape();
        let cases = [
            ("listen", Some("listen")),
            ("data_dir", Some("data_dir")),
            ("log_format", Some("log_format")),
            (
                "limits_max_traces_per_request",
                Some("limits.max_traces_per_request"),
            ),
            ("store_retention", Some("store.retention")),
            (
                "store_retention_check_interval",
                Some("store.retention_check_interval"),
            ),
            ("metrics_public", Some("metrics.public")),
            // Kept so that the typo is reported.
            ("store_retentoin", Some("store.retentoin")),
            // The client's variables are not the server's.
            ("endpoint", None),
            ("project_id", None),
            ("auth_token", None),
            ("credentials", None),
            ("store", None),
            ("store_", None),
        ];
        for (name, want) in cases {
            assert_eq!(map_env_key(&shape, name).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn new_sections_map_without_code() {
        let mut shape = key_shape();
        shape
            .sections
            .insert("transfer".into(), vec!["period".into()]);
        assert_eq!(
            map_env_key(&shape, "transfer_period").as_deref(),
            Some("transfer.period")
        );
    }

    #[test]
    fn defaults() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c, Config::default());
            assert_eq!(c.limits.max_body_bytes, 5_242_880);
            assert_eq!(c.store.retention, Duration::from_secs(7 * 86_400));
            assert_eq!(c.store_config().retention_ms, 7 * 86_400_000);
            Ok(())
        });
    }

    #[test]
    fn file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "cts.toml",
                r#"
                listen = "127.0.0.1:9000"
                data_dir = "/from/file"
                log_format = "json"
                [limits]
                max_traces_per_request = 10
                max_clock_skew = "1m"
                [store]
                retention = "2d"
                partition = "1h"
                fsync = false
                "#,
            )?;
            let file = Some(Path::new("cts.toml"));

            let c = Config::load(file, &Overrides::default()).unwrap();
            assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
            assert_eq!(c.data_dir, PathBuf::from("/from/file"));
            assert_eq!(c.log_format, LogFormat::Json);
            assert_eq!(c.limits.max_traces_per_request, 10);
            assert_eq!(c.limits.max_clock_skew, Duration::from_secs(60));
            assert_eq!(c.store.retention, Duration::from_secs(2 * 86_400));
            assert!(!c.store.fsync);
            // Untouched keys keep their defaults.
            assert_eq!(c.limits.max_body_bytes, 5 << 20);

            jail.set_env("CTS_LISTEN", "127.0.0.1:9001");
            jail.set_env("CTS_LIMITS_MAX_TRACES_PER_REQUEST", "20");
            jail.set_env("CTS_STORE_RETENTION", "3s");
            jail.set_env("CTS_STORE_PARTITION", "1s");
            jail.set_env("CTS_STORE_RETENTION_CHECK_INTERVAL", "500ms");
            jail.set_env("CTS_ENDPOINT", "http://elsewhere");
            jail.set_env("CTS_AUTH_TOKEN", "a token of the cts client");
            let c = Config::load(file, &Overrides::default()).unwrap();
            assert_eq!(c.listen, "127.0.0.1:9001".parse().unwrap());
            assert_eq!(c.data_dir, PathBuf::from("/from/file"));
            assert_eq!(c.limits.max_traces_per_request, 20);
            assert_eq!(c.store.retention, Duration::from_secs(3));
            assert_eq!(c.store.retention_check_interval, Duration::from_millis(500));
            assert_eq!(c.store_config().partition_ms, 1000);

            let flags = Overrides {
                tls_cert: None,
                tls_key: None,
                listen: Some("127.0.0.1:0".parse().unwrap()),
                data_dir: Some(PathBuf::from("/from/flag")),
            };
            let c = Config::load(file, &flags).unwrap();
            assert_eq!(c.listen, "127.0.0.1:0".parse().unwrap());
            assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
            assert_eq!(c.limits.max_traces_per_request, 20);
            Ok(())
        });
    }

    #[test]
    fn lts_sinks_from_file_and_environment() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "cts.toml",
                r#"
                [lts]
                batch_max = 100
                in_flight = 8
                encode_threads = 3
                [lts.projects]
                p9 = "siem"
                [[lts.sinks]]
                name = "siem"
                kind = "otlp"
                endpoint = "https://siem.example:4318"
                headers = { "x-api-key" = "k" }
                "#,
            )?;
            jail.set_env("CTS_LTS_KIND", "otlp");
            jail.set_env("CTS_LTS_ENDPOINT", "http://127.0.0.1:4318");
            let c = Config::load(Some(Path::new("cts.toml")), &Overrides::default()).unwrap();
            let (sinks, routing) = c.lts_sinks();
            let names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["siem", "default"]);
            assert_eq!(routing.sink_of("p9"), Some("siem"));
            assert_eq!(routing.sink_of("p1"), Some("default"));
            assert_eq!(c.lts_settings().batch_max, 100);
            assert_eq!(c.lts_settings().in_flight, 8);
            assert_eq!(c.lts_settings().encode_threads, 3);

            jail.set_env("CTS_LTS_IN_FLIGHT", "0");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("lts.in_flight"), "{e}");
            jail.set_env("CTS_LTS_IN_FLIGHT", "2");
            jail.set_env("CTS_LTS_ENCODE_THREADS", "0");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("lts.encode_threads"), "{e}");
            jail.set_env("CTS_LTS_ENCODE_THREADS", "2");
            jail.set_env("CTS_LTS_COMPRESSION", "zstd");
            let c = Config::load(None, &Overrides::default()).unwrap();
            let default = c.lts_sinks().0.pop().unwrap();
            assert_eq!(default.compression, Some(cts_lts::Compression::Zstd));
            jail.set_env("CTS_LTS_COMPRESSION", "brotli");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("compression"), "{e}");
            jail.set_env("CTS_LTS_COMPRESSION", "none");
            jail.set_env("CTS_LTS_ENDPOINT", "tcp://127.0.0.1:514");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("lts.sinks[default].endpoint"), "{e}");
            jail.clear_env();
            jail.set_env("CTS_LTS_KIND", "otlp");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("lts.endpoint"), "{e}");
            jail.clear_env();
            jail.set_env("CTS_LTS_DEFAULT_SINK", "nowhere");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(
                e.to_string().contains("no sink is named \"nowhere\""),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn postgres_backend_settings() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            assert_eq!(
                Config::load(None, &Overrides::default())
                    .unwrap()
                    .postgres_settings(),
                None
            );

            jail.set_env("CTS_STORE_BACKEND", "postgres");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(
                e.to_string().contains("store.postgres_url is needed"),
                "{e}"
            );

            jail.set_env("CTS_STORE_POSTGRES_URL", "mysql://db/cts");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            let e = e.to_string();
            assert!(
                e.contains("store.postgres_url: ") && e.contains("postgres://"),
                "{e}"
            );
            assert!(e.contains("CTS_STORE_POSTGRES_URL"), "{e}");

            jail.set_env("CTS_STORE_POSTGRES_URL", "postgres://cts:pw@db.example/cts");
            jail.set_env("CTS_STORE_POSTGRES_POOL_SIZE", "4");
            jail.set_env("CTS_STORE_AUTO_MIGRATE", "false");
            let c = Config::load(None, &Overrides::default()).unwrap();
            let pg = c.postgres_settings().unwrap();
            assert_eq!(pg.url.to_string(), "postgres://cts@db.example:5432/cts");
            assert_eq!(pg.pool_size, 4);
            assert!(!pg.auto_migrate);
            assert!(
                !format!("{c:?}").contains("pw@"),
                "the password is never printed"
            );

            jail.set_env("CTS_STORE_POSTGRES_POOL_SIZE", "0");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("store.postgres_pool_size"), "{e}");

            jail.clear_env();
            jail.set_env("CTS_STORE_POSTGRES_CA_FILE", "/etc/ca.pem");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("store.postgres_ca_file"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn the_store_secret_key_comes_from_the_environment_or_a_file() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.store_secret_key().unwrap(), None);
            let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
            jail.set_env("CTS_STORE_SECRET_KEY", key);
            let c = Config::load(None, &Overrides::default()).unwrap();
            let want: [u8; 32] = std::array::from_fn(|i| i as u8);
            assert_eq!(c.store_secret_key().unwrap(), Some(want));
            assert!(!format!("{c:?}").contains(key), "the key is never printed");

            jail.set_env("CTS_STORE_SECRET_KEY", "c2hvcnQ=");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(
                e.to_string().contains(
                    "store.secret_key (environment CTS_STORE_SECRET_KEY) must be 32 bytes"
                ),
                "{e}"
            );

            jail.clear_env();
            jail.create_file("key.b64", &format!("{key}\n"))?;
            jail.set_env("CTS_STORE_SECRET_KEY_FILE", "key.b64");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.store_secret_key().unwrap(), Some(want));
            jail.set_env("CTS_STORE_SECRET_KEY", key);
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("set one"), "{e}");

            jail.clear_env();
            jail.set_env("CTS_STORE_SECRET_KEY_FILE", "missing.b64");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(
                e.to_string()
                    .contains("store.secret_key_file cannot be read"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn lease_times_come_from_the_environment_and_a_renewal_precedes_expiry() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.lease_settings(), cts_consumer::LeaseSettings::default());
            jail.set_env("CTS_LEASES_TTL", "30s");
            jail.set_env("CTS_LEASES_RENEW_EVERY", "10s");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.lease_settings().ttl, Duration::from_secs(30));
            assert_eq!(c.lease_settings().renew_every, Duration::from_secs(10));
            jail.set_env("CTS_LEASES_RENEW_EVERY", "30s");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("leases.renew_every"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("CTS_STORE_RETENTION", "soon");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("store.retention: "), "{e}");
            assert!(e.to_string().contains("CTS_STORE_RETENTION"), "{e}");

            jail.set_env("CTS_STORE_RETENTION", "1d");
            jail.set_env("CTS_STORE_RETENTOIN", "2d");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("retentoin"), "{e}");

            jail.clear_env();
            jail.set_env("CTS_LIMITS_MAX_TRACES_PER_REQUEST", "0");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(
                e.to_string().contains("limits.max_traces_per_request"),
                "{e}"
            );

            // Frame offsets are 32-bit: a journal file is at most 1 GiB.
            jail.clear_env();
            jail.set_env("CTS_STORE_JOURNAL_SEGMENT_BYTES", "2147483648");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(
                e.to_string()
                    .contains("store.journal_segment_bytes must be at most 1073741824"),
                "{e}"
            );

            jail.clear_env();
            jail.set_env("CTS_STORE_MAX_SEGMENTS_PER_PARTITION", "1");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(
                e.to_string()
                    .contains("store.max_segments_per_partition must be at least 2"),
                "{e}"
            );
            jail.set_env("CTS_STORE_MAX_SEGMENTS_PER_PARTITION", "12");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.store_config().max_segments_per_partition, 12);
            assert_eq!(c.store_config().index_cache_bytes, 64 << 20);
            jail.set_env("CTS_STORE_INDEX_CACHE_BYTES", "1048576");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.store_config().index_cache_bytes, 1 << 20);
            assert_eq!(c.store_config().frame_cache_bytes, 32 << 20);
            jail.set_env("CTS_STORE_FRAME_CACHE_BYTES", "0");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.store_config().frame_cache_bytes, 0);
            assert_eq!(c.store.ingest_nice, 5);
            for bad in ["-1", "15"] {
                jail.set_env("CTS_STORE_INGEST_NICE", bad);
                let e = Config::load(None, &Overrides::default()).unwrap_err();
                assert!(
                    e.to_string().contains("store.ingest_nice must be 0 to 14"),
                    "{e}"
                );
            }
            jail.set_env("CTS_STORE_INGEST_NICE", "0");
            assert_eq!(
                Config::load(None, &Overrides::default())
                    .unwrap()
                    .store
                    .ingest_nice,
                0
            );

            jail.clear_env();
            jail.create_file("bad.toml", "[store]\nretention = \"1h\"\nbogus = 1\n")?;
            let e = Config::load(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("bogus"), "{e}");

            let e =
                Config::load(Some(Path::new("missing.toml")), &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("missing.toml"), "{e}");
            Ok(())
        });
    }
}
