//! `ctsd`: the Cloud Trace Service server.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use cts_identity::{BootstrapOutcome, BootstrapSeed};
use cts_server::{load_tls, serve, AppState, Config, LogFormat, Overrides};
use cts_store::{EmbeddedStore, StoreConfig};
use tracing_subscriber::EnvFilter;

mod move_in;

#[derive(Parser)]
#[command(name = "ctsd", version, about = "Cloud Trace Service server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CTS API.
    Serve(ServeArgs),
    /// Rebuild the trace index from the journal (server stopped).
    Reindex(CommonArgs),
    /// Verify every file of the store (server stopped); exits non-zero on
    /// damage, listing it and the trace sequence numbers it affects.
    Check(CommonArgs),
    /// Move damaged journal ranges into DATA_DIR/quarantine/ and rebuild the
    /// index (server stopped).
    Repair(RepairArgs),
    /// Start a new digest signing key now (the server may be running); the
    /// previous key stays valid for the digests it signed.
    RotateDigestKey(CommonArgs),
    /// Apply the pending schema migrations of the PostgreSQL store
    /// (`store.backend = "postgres"`) and say which (the server may be
    /// running).
    Migrate(CommonArgs),
    /// Copy a stopped embedded node's data directory (the traces within
    /// store.retention, identities, trackers, keys, consumer cursors) into
    /// the PostgreSQL database of the config; resumable, says what it
    /// copied.
    MigrateFromEmbedded(MoveArgs),
    /// Lift the login lockouts of a user (the server may be running:
    /// lockouts live in the identity database).
    Unlock(UnlockArgs),
}

#[derive(Args)]
struct UnlockArgs {
    /// The user's name (or id).
    #[arg(long, value_name = "NAME")]
    user: String,
    /// The user's domain (name), when its name is taken in several domains.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct MoveArgs {
    /// The embedded node's data directory (not served meanwhile).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// TOML configuration file naming the PostgreSQL database.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Traces per transaction.
    #[arg(long, default_value_t = 1000, hide = true)]
    batch_size: usize,
    /// Tests only: abort (as a kill -9 would) after this many batches.
    #[arg(long, hide = true)]
    abort_after_batches: Option<u64>,
}

#[derive(Args)]
struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of the store (overrides `data_dir`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct RepairArgs {
    /// Only mark the quarantined ranges as dealt with: they are no longer
    /// reported by /readyz and the metrics.
    #[arg(long)]
    acknowledge: bool,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (overrides `listen`); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

// Ingest allocates and frees many small strings per trace on several
// threads; mimalloc does that with far less contention than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole chain of causes, no backtrace.
            eprintln!("ctsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let overrides = match &cli.command {
        Command::Serve(a) => Overrides {
            listen: a.listen,
            data_dir: a.common.data_dir.clone(),
            tls_cert: a.tls_cert.clone(),
            tls_key: a.tls_key.clone(),
        },
        Command::Reindex(a)
        | Command::Check(a)
        | Command::RotateDigestKey(a)
        | Command::Migrate(a) => Overrides {
            data_dir: a.data_dir.clone(),
            ..Overrides::default()
        },
        Command::Unlock(a) => Overrides {
            data_dir: a.common.data_dir.clone(),
            ..Overrides::default()
        },
        Command::MigrateFromEmbedded(_) => Overrides::default(),
        Command::Repair(a) => Overrides {
            data_dir: a.common.data_dir.clone(),
            ..Overrides::default()
        },
    };
    let config_file = match &cli.command {
        Command::MigrateFromEmbedded(a) => a.config.as_deref(),
        Command::Serve(a) => a.common.config.as_deref(),
        Command::Repair(a) => a.common.config.as_deref(),
        Command::Reindex(a)
        | Command::Check(a)
        | Command::RotateDigestKey(a)
        | Command::Migrate(a) => a.config.as_deref(),
        Command::Unlock(a) => a.common.config.as_deref(),
    };
    let config = Config::load(config_file, &overrides)?;
    init_logging(config.log_format);
    match cli.command {
        Command::Serve(_) => run_server(config),
        Command::Reindex(_) => {
            let dir = config.data_dir.display().to_string();
            let indexed = EmbeddedStore::reindex(config.store_config())
                .with_context(|| format!("reindexing the store in {dir}"))?;
            println!("indexed {indexed} traces");
            Ok(())
        }
        Command::Check(_) => check(&config.store_config()),
        Command::Repair(a) => repair(config.store_config(), a.acknowledge),
        Command::RotateDigestKey(_) => {
            let backend = cts_server::backend::Backend::open(&config)?;
            let keys = cts_server::state::open_digest_keys(&config, &backend)?;
            let now = cts_server::state::now_ms() / 1000;
            let fingerprint =
                cts_transfer::rotate_digest_key(&keys, now).context("rotating the digest key")?;
            println!("new digest signing key {fingerprint}, valid from now on");
            Ok(())
        }
        Command::Unlock(a) => unlock(&config, &a.user, a.domain.as_deref()),
        Command::Migrate(_) => migrate(&config),
        Command::MigrateFromEmbedded(a) => move_in::run(
            &config,
            &move_in::Options {
                dir: a.data_dir,
                batch: a.batch_size.max(1),
                abort_after: a.abort_after_batches,
            },
        ),
    }
}

/// `ctsd migrate`: applies the pending migrations of every PostgreSQL
/// schema of ctsd, saying per schema what it applied.
fn migrate(config: &Config) -> Result<()> {
    use cts_server::citus::Distribution;
    let Some(pg) = config.postgres_settings() else {
        anyhow::bail!(
            "store.backend is not \"postgres\": the embedded store has no schema to migrate"
        );
    };
    let at = || format!("migrating the schema at {}", pg.url);
    let pool = pg.connect().with_context(at)?;
    let mut client = pool.get().with_context(at)?;
    for schema in cts_server::backend::pg_schemas() {
        let applied = cts_db::migrate(&mut client, schema).with_context(at)?;
        if applied.is_empty() {
            println!("{}: current (version {})", schema.ledger, schema.current());
        }
        for m in schema
            .migrations
            .iter()
            .filter(|m| applied.contains(&m.version))
        {
            println!(
                "{}: applied migration {}: {}",
                schema.ledger, m.version, m.name
            );
        }
    }
    match cts_server::citus::distribute(&pool).with_context(at)? {
        Distribution::NoCitus => println!("citus: not installed, no table distributed"),
        Distribution::Done(now) if now.is_empty() => println!("citus: current"),
        Distribution::Done(now) => println!("citus: distributed {}", now.join(", ")),
    }
    Ok(())
}

/// `ctsd unlock`: lifts the stored lockouts of one user.
fn unlock(config: &Config, user: &str, domain: Option<&str>) -> Result<()> {
    use cts_identity::{DomainRef, Filter, UserRef};
    let backend = cts_server::backend::Backend::open(config)?;
    let identity = cts_server::state::open_identity(config, &backend)?;
    let found = match domain {
        Some(d) => identity.find_user(&UserRef::Name {
            name: user.to_string(),
            domain: DomainRef::Name(d.to_string()),
        })?,
        None => match identity.find_user(&UserRef::Id(user.to_string())) {
            Ok(u) => u,
            Err(_) => {
                let filter = Filter {
                    name: Some(user.to_string()),
                    ..Filter::default()
                };
                let mut users = identity.list_users(&filter)?;
                match users.len() {
                    1 => users.remove(0),
                    0 => anyhow::bail!("no user {user:?}"),
                    n => {
                        anyhow::bail!("{n} users are named {user:?}: name the domain with --domain")
                    }
                }
            }
        },
    };
    let lifted = identity.unlock_login(&found.id)?;
    println!(
        "lifted {lifted} lockout(s) of user {} ({})",
        found.name, found.id
    );
    Ok(())
}

fn check(config: &StoreConfig) -> Result<()> {
    let dir = config.dir.display().to_string();
    let report =
        EmbeddedStore::check(config).with_context(|| format!("checking the store in {dir}"))?;
    println!(
        "checked {} journal files ({} records, {} traces) and {} index segments",
        report.journal_files, report.records, report.traces, report.segments
    );
    for path in &report.torn_tails {
        println!(
            "torn tail (a write a crash interrupted, never acknowledged; cut at the next start): {}",
            path.display()
        );
    }
    for d in &report.damage {
        let mut line = format!("DAMAGED {}", d.path.display());
        if let Some((offset, len)) = d.range {
            line.push_str(&format!(" bytes {offset}..{}", offset + len));
        }
        match d.seqs {
            Some((first, u64::MAX)) => line.push_str(&format!(" traces {first}.. (to the end)")),
            Some((first, last)) => line.push_str(&format!(" traces {first}..={last}")),
            None => {}
        }
        println!("{line}: {}", d.detail);
    }
    if !report.damage.is_empty() {
        anyhow::bail!(
            "{} damaged item(s) in {dir}; `ctsd repair` moves damaged journal ranges into quarantine and rebuilds the index",
            report.damage.len()
        );
    }
    println!("no damage");
    Ok(())
}

fn repair(config: StoreConfig, acknowledge: bool) -> Result<()> {
    let dir = config.dir.display().to_string();
    if acknowledge {
        let n = EmbeddedStore::acknowledge_quarantine(&config)
            .with_context(|| format!("acknowledging the quarantine of {dir}"))?;
        println!("acknowledged {n} quarantined journal range(s)");
        return Ok(());
    }
    let report =
        EmbeddedStore::repair(config).with_context(|| format!("repairing the store in {dir}"))?;
    for q in &report.quarantined {
        println!(
            "quarantined {} bytes {}..{} (traces {}..={}) as quarantine/{}",
            q.file,
            q.offset,
            q.offset + q.len,
            q.first_seq,
            q.last_seq,
            q.saved_as
        );
    }
    if report.summaries_dropped > 0 {
        println!(
            "dropped {} damaged journal summaries (rewritten at the next start)",
            report.summaries_dropped
        );
    }
    println!("rebuilt the index: {} traces", report.indexed);
    for d in &report.unrepaired {
        println!("NOT REPAIRED {}: {}", d.path.display(), d.detail);
    }
    if !report.quarantined.is_empty() {
        println!("the quarantine is reported until `ctsd repair --acknowledge`");
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run_server(config: Config) -> Result<()> {
    raise_open_file_limit();
    disable_transparent_huge_pages();
    // Before any thread of the store, the LTS sinks or ingest starts; every
    // thread starts interactive (it inherits this thread's slice).
    cts_priority::set_ingest_nice(config.store.ingest_nice);
    cts_priority::enter(cts_priority::Tier::Interactive, "main thread");
    // SAFETY: mi_collect frees only memory no allocation uses any more.
    cts_priority::set_after_job(|| unsafe { libmimalloc_sys::mi_collect(false) });
    // On PostgreSQL with S3 no store makes the data directory, which still
    // holds bootstrap.json: made here, private, as the stores make it.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listen = config.listen;
        let dir = config.data_dir.display().to_string();
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => Some(load_tls(cert, key).await.with_context(|| {
                format!(
                    "loading the TLS certificate {} and key {}",
                    cert.display(),
                    key.display()
                )
            })?),
            _ => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        // The store first: a server that answers must be able to record.
        let state = AppState::open(config)
            .await
            .with_context(|| format!("opening the data directory {dir}"))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let endpoint = state
            .config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", client_addr(addr)));
        let created = bootstrap(&state, &endpoint).await?;
        // Tests and scripts read this first line to learn the port.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "ctsd listening on {scheme}://{addr}")?;
        if let Some(file) = created {
            writeln!(
                stdout,
                "ctsd: first start: the admin's password and access key are in {} (mode 0600)",
                file.display()
            )?;
        }
        stdout.flush()?;
        drop(stdout);
        tracing::info!(%addr, data_dir = %dir, "serving");
        if tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "plain HTTP on a network address: tokens, passwords and traces cross the network \
                 unencrypted; set tls.cert and tls.key (or put a TLS proxy in front)"
            );
        }
        serve(state, listener, tls, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Raises the soft limit of open files to the hard limit: each connection,
/// journal file and index partition holds one, and the usual soft limit
/// (1024) is below `limits.max_connections` plus the store's files.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return tracing::warn!("cannot read the open-file limit");
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        (libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0).then_some(before)
    };
    match raised {
        Some(before) => {
            tracing::info!(before, now = limit.rlim_max, "open-file soft limit raised")
        }
        None => tracing::warn!(
            hard = limit.rlim_max,
            "cannot raise the open-file soft limit to the hard limit"
        ),
    }
}

/// Turns transparent huge pages off for this process. mimalloc asks for
/// them on its arenas, so a fresh buffer of some kilobytes (a query's read
/// of an index segment's entries, 87–400 KB) could fault in, and zero, a
/// whole 2 MiB page: in the busy-phase benchmark, the 6–10 ms reads behind
/// most ListTraces pages over 10 ms (docs/benchmark.md). The usual advice
/// for latency-bound servers (Redis, MongoDB); the kernel's own default
/// stays as it is.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE reads no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not turn transparent huge pages off");
    }
}

/// The address a client on this machine connects to: a wildcard listen
/// address is reached through loopback.
fn client_addr(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

/// On an empty data directory: creates the first domain, project (with its
/// management tracker), admin user and access key, and writes them to
/// `DATA_DIR/bootstrap.json`,
/// whose path it returns.
async fn bootstrap(state: &AppState, endpoint: &str) -> Result<Option<PathBuf>> {
    let seed = bootstrap_seed();
    let file = state.config.data_dir.join("bootstrap.json");
    let identity = state.identity.clone();
    let endpoint = endpoint.to_string();
    let path = file.clone();
    let outcome = tokio::task::spawn_blocking(move || identity.bootstrap(&seed, &endpoint, &path))
        .await?
        .context("creating the first identities")?;
    Ok(match outcome {
        BootstrapOutcome::Created(b) => {
            // CTS is enabled in the first project from the start.
            let (trackers, project, domain) = (
                state.trackers.clone(),
                b.project_id.clone(),
                b.domain_id.clone(),
            );
            tokio::task::spawn_blocking(move || {
                trackers.ensure_system_tracker(&project, &domain, cts_server::state::now_ms())
            })
            .await?
            .context("creating the management tracker of the first project")?;
            tracing::info!(
                domain = %b.domain_name,
                project_id = %b.project_id,
                user = %b.user_name,
                file = %file.display(),
                "first start: created the admin identities"
            );
            Some(file)
        }
        BootstrapOutcome::Existing => None,
    })
}

/// `CTS_BOOTSTRAP_<KEY>` for each key of `bootstrap.json` the operator
/// fixes in advance. Read as plain strings: a password of digits stays a
/// string.
fn bootstrap_seed() -> BootstrapSeed {
    let var = |key: &str| {
        std::env::var(format!("CTS_BOOTSTRAP_{}", key.to_ascii_uppercase()))
            .ok()
            .filter(|v| !v.is_empty())
    };
    BootstrapSeed {
        domain_id: var("domain_id"),
        domain_name: var("domain_name"),
        project_id: var("project_id"),
        region: var("region"),
        user_name: var("user_name"),
        password: var("password"),
        access_key: var("access_key"),
        secret_key: var("secret_key"),
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down: finishing the requests in flight");
}
