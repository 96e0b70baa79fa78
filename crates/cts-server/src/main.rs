//! `ctsd`: the Cloud Trace Service server.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand};
use cts_server::{check_listen_addr, serve, AppState, Config, LogFormat, Overrides};
use cts_store::EmbeddedStore;
use tracing_subscriber::EnvFilter;

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
struct ServeArgs {
    /// Address to listen on (overrides `listen`); port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
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
    let (common, listen) = match &cli.command {
        Command::Serve(a) => (&a.common, a.listen),
        Command::Reindex(a) => (a, None),
    };
    let overrides = Overrides {
        listen,
        data_dir: common.data_dir.clone(),
    };
    let config = Config::load(common.config.as_deref(), &overrides)?;
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
    }
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
    check_listen_addr(&config.listen).map_err(|e| anyhow!(e))?;
    tracing::warn!(
        "requests are not authenticated yet: ctsd only serves loopback addresses until authentication lands"
    );
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listen = config.listen;
        let dir = config.data_dir.display().to_string();
        // The store first: a server that answers must be able to record.
        let state = AppState::open(config)
            .await
            .with_context(|| format!("opening the store in {dir}"))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        // Tests and scripts read this line to learn the port.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "ctsd listening on http://{addr}")?;
        stdout.flush()?;
        drop(stdout);
        tracing::info!(%addr, data_dir = %dir, "serving");
        serve(state, listener, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
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
