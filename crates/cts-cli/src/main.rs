//! `cts`: query and follow the traces of a Cloud Trace Service.

mod client;
mod table;
mod tail;
mod timefmt;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use client::{Client, ServerError};

#[derive(Parser)]
#[command(name = "cts", version, about = "Client of the Cloud Trace Service")]
struct Cli {
    /// Base URL of the CTS server.
    #[arg(
        long,
        global = true,
        env = "CTS_ENDPOINT",
        default_value = "http://127.0.0.1:8080"
    )]
    endpoint: String,
    /// Project whose traces to query.
    #[arg(long, global = true, env = "CTS_PROJECT_ID")]
    project_id: Option<String>,
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Query traces.
    #[command(subcommand)]
    Traces(TracesCommand),
}

#[derive(Subcommand)]
enum TracesCommand {
    /// List traces, newest first.
    List(ListArgs),
    /// Print traces as they arrive, oldest first, until interrupted.
    Tail(TailArgs),
}

/// The equality filters of ListTraces, each passed as the query parameter of
/// the same name.
#[derive(Args)]
pub struct Filters {
    /// Service acronym, e.g. ECS.
    #[arg(long)]
    service_type: Option<String>,
    /// User name.
    #[arg(long)]
    user: Option<String>,
    /// Resource ID.
    #[arg(long)]
    resource_id: Option<String>,
    /// Resource name.
    #[arg(long)]
    resource_name: Option<String>,
    /// Resource type, e.g. ecs.
    #[arg(long)]
    resource_type: Option<String>,
    /// Operation, e.g. createServer.
    #[arg(long)]
    trace_name: Option<String>,
    /// normal, warning or incident.
    #[arg(long)]
    trace_rating: Option<String>,
    /// Access key the request was signed with.
    #[arg(long)]
    access_key_id: Option<String>,
    /// Enterprise project ID.
    #[arg(long)]
    enterprise_project_id: Option<String>,
    /// Data tracker (with --trace-type data).
    #[arg(long)]
    tracker_name: Option<String>,
    /// system (management traces, the default) or data.
    #[arg(long)]
    trace_type: Option<String>,
    /// One trace by its ID.
    #[arg(long)]
    trace_id: Option<String>,
}

impl Filters {
    pub fn params(&self) -> Vec<(&'static str, String)> {
        [
            ("service_type", &self.service_type),
            ("user", &self.user),
            ("resource_id", &self.resource_id),
            ("resource_name", &self.resource_name),
            ("resource_type", &self.resource_type),
            ("trace_name", &self.trace_name),
            ("trace_rating", &self.trace_rating),
            ("access_key_id", &self.access_key_id),
            ("enterprise_project_id", &self.enterprise_project_id),
            ("tracker_name", &self.tracker_name),
            ("trace_type", &self.trace_type),
            ("trace_id", &self.trace_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    filters: Filters,
    /// Start (exclusive): ms since the epoch, RFC 3339, or a duration ago (15m, 2h, 7d).
    /// Default: one hour before --to.
    #[arg(long)]
    from: Option<String>,
    /// End (exclusive), in the same forms as --from. Default: now.
    #[arg(long)]
    to: Option<String>,
    /// Traces per page, 1 to 200.
    #[arg(long)]
    limit: Option<u32>,
    /// The marker printed with the previous page.
    #[arg(long)]
    next: Option<String>,
    /// Follow markers through every page.
    #[arg(long)]
    all: bool,
}

#[derive(Args)]
pub struct TailArgs {
    #[command(flatten)]
    filters: Filters,
    /// How often to poll.
    #[arg(long, default_value = "2s", value_parser = timefmt::parse_duration)]
    interval: Duration,
    /// How late (by its time) a trace may arrive and still be shown.
    #[arg(long, default_value = "2m", value_parser = timefmt::parse_duration)]
    window: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<ServerError>() {
                Some(server) => eprintln!("{server}"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let Command::Traces(cmd) = cli.command;
    let project = cli
        .project_id
        .filter(|p| !p.is_empty())
        .ok_or_else(|| anyhow!("--project-id (or CTS_PROJECT_ID) is required"))?;
    let client = Client::new(&cli.endpoint, &project)?;
    match cmd {
        TracesCommand::List(args) => list(&client, args, cli.output),
        TracesCommand::Tail(args) => tail::run(&client, &args, cli.output),
    }
}

fn list(client: &Client, args: ListArgs, output: Output) -> Result<()> {
    let now = timefmt::now_ms();
    let mut params = args.filters.params();
    // A relative --from counts back from --to when both are given.
    let to = args
        .to
        .as_deref()
        .map(|t| timefmt::parse_time_arg(t, now))
        .transpose()?;
    if let Some(from) = &args.from {
        params.push((
            "from",
            timefmt::parse_time_arg(from, to.unwrap_or(now))?.to_string(),
        ));
    }
    if let Some(to) = to {
        params.push(("to", to.to_string()));
    }
    if let Some(limit) = args.limit {
        params.push(("limit", limit.to_string()));
    }
    if let Some(next) = args.next {
        params.push(("next", next));
    }

    let (traces, marker) = if args.all {
        let mut traces = Vec::new();
        client.list_all(&params, |page| traces.extend(page.traces))?;
        (traces, None)
    } else {
        let page = client.list(&params)?;
        (page.traces, page.meta_data.marker.filter(|m| !m.is_empty()))
    };

    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &Value::Array(traces))?;
            writeln!(out)?;
            // stdout stays a plain JSON array; the marker goes to stderr.
            if let Some(m) = marker {
                eprintln!("next page: --next {m}");
            }
        }
        Output::Table => {
            out.write_all(table::render(&traces).as_bytes())?;
            match marker {
                Some(m) => writeln!(out, "\n{} traces; next page: --next {m}", traces.len())?,
                None => writeln!(out, "\n{} traces", traces.len())?,
            }
        }
    }
    Ok(())
}
