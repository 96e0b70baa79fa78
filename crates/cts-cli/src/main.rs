//! `cts`: query and follow the traces of a Cloud Trace Service, manage its
//! trackers and identities, and verify a tracker's archive offline.

mod client;
mod credentials;
mod ctx;
mod identity;
mod notifications;
mod table;
mod tail;
mod timefmt;
mod topics;
mod trackers;
mod verify;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

use client::{Client, ServerError};
use credentials::{Auth, Credentials, Layer};
use ctx::Ctx;
use identity::{
    AccessKeysCommand, GroupsCommand, LoginArgs, ProjectsCommand, RolesCommand, UsersCommand,
};
use notifications::NotificationsCommand;
use topics::TopicsCommand;
use trackers::TrackersCommand;
use verify::VerifyArgs;

#[derive(Parser)]
#[command(
    name = "cts",
    version,
    about = "Client of the Cloud Trace Service",
    after_help = "Each setting comes from its flag, else its CTS_* variable, else the credentials \
file; the credential (access key and secret key, or token) is taken whole from the first of \
these that gives one."
)]
struct Cli {
    /// Base URL of the CTS server [env: CTS_ENDPOINT; default: http://127.0.0.1:8080].
    #[arg(long, global = true, help_heading = "Connection")]
    endpoint: Option<String>,
    /// Project of the traces, trackers and quotas commands, of the login
    /// scope and the default of `roles --project` [env: CTS_PROJECT_ID]; for
    /// `verify` (the flag only), the project the files must belong to.
    #[arg(long, global = true, help_heading = "Connection")]
    project_id: Option<String>,
    /// Access key to sign requests with [env: CTS_ACCESS_KEY].
    #[arg(long, global = true, help_heading = "Connection")]
    access_key: Option<String>,
    /// Secret key of --access-key [env: CTS_SECRET_KEY].
    #[arg(long, global = true, help_heading = "Connection")]
    secret_key: Option<String>,
    /// Token from `cts login`, instead of an access key [env: CTS_AUTH_TOKEN].
    #[arg(
        long,
        global = true,
        conflicts_with = "access_key",
        help_heading = "Connection"
    )]
    token: Option<String>,
    /// JSON file with endpoint, project_id, access_key and secret_key, e.g.
    /// the server's DATA_DIR/bootstrap.json [env: CTS_CREDENTIALS].
    #[arg(long, global = true, help_heading = "Connection")]
    credentials: Option<PathBuf>,
    /// Output format.
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
    Traces(Box<TracesCommand>),
    /// Manage the project's trackers: what it records, and where to.
    #[command(subcommand)]
    Trackers(TrackersCommand),
    /// Manage the project's key event notifications and dry-run them.
    #[command(subcommand)]
    Notifications(NotificationsCommand),
    /// Show the project's quotas and their use.
    Quotas,
    /// Manage notification topics, their subscriptions (webhooks, e-mail),
    /// and see the delivery of their messages.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Get a token with a password; prints it and its expiry.
    Login(LoginArgs),
    /// Manage the projects of your domain.
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Manage the users of your domain.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage groups and their members.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// List roles and grant them on projects.
    #[command(subcommand)]
    Roles(RolesCommand),
    /// Manage access keys (AK/SK).
    #[command(subcommand)]
    AccessKeys(AccessKeysCommand),
    /// Check a tracker's trace files and signed digest chain in a local
    /// directory or an S3 bucket, offline (no CTS server, no credential):
    /// reports each file altered, deleted, added or moved and each digest
    /// missing, altered or badly signed; exits 1 on any finding. The global
    /// --project-id, when given, must be the project the files belong to.
    Verify(Box<VerifyArgs>),
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
    /// Start (exclusive): RFC 3339, seconds or ms since the epoch, now, today,
    /// yesterday (midnight UTC), or a duration ago (15m, 2h ago, 7d), counted
    /// back from now. Default: one hour before --to.
    #[arg(long)]
    from: Option<String>,
    /// End (exclusive), in the same forms as --from. Default: now.
    #[arg(long)]
    to: Option<String>,
    /// Traces per page, 1 to 200 [default: 10, with --all 200].
    #[arg(long)]
    limit: Option<u32>,
    /// The marker printed with the previous page.
    #[arg(long)]
    next: Option<String>,
    /// Follow markers through every page (progress on stderr when it is a
    /// terminal).
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
    // `verify` tells "could not verify" (2) from "found something" (1).
    let failure = match cli.command {
        Command::Verify(_) => ExitCode::from(verify::EXIT_ERROR),
        _ => ExitCode::FAILURE,
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<ServerError>() {
                Some(server) => {
                    eprintln!("{server}");
                    if server.status == 401 {
                        eprintln!("hint: the server refused the credential; check the access key and secret key, or get a new token with `cts login`");
                    }
                }
                None => eprintln!("error: {e:#}"),
            }
            failure
        }
    }
}

fn credentials(cli: &Cli) -> Result<Credentials> {
    let login = match &cli.command {
        Command::Login(l) => Some(l),
        _ => None,
    };
    let mut layers = vec![
        Layer::flags(&[
            ("endpoint", cli.endpoint.as_ref()),
            ("project_id", cli.project_id.as_ref()),
            ("access_key", cli.access_key.as_ref()),
            ("secret_key", cli.secret_key.as_ref()),
            ("token", cli.token.as_ref()),
            ("user_name", login.and_then(|l| l.user.as_ref())),
            ("password", login.and_then(|l| l.password.as_ref())),
            ("domain_name", login.and_then(|l| l.domain.as_ref())),
        ]),
        Layer::env(|name| std::env::var(name).ok()),
    ];
    let file = cli.credentials.clone().or_else(|| {
        std::env::var_os("CTS_CREDENTIALS")
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
    });
    if let Some(file) = file {
        layers.push(Layer::file(&file)?);
    }
    let mut creds = Credentials::resolve(&layers)?;
    match &cli.command {
        // Logging in needs no credential but the password.
        Command::Login(_) => creds.auth = Auth::None,
        _ => creds.require_auth()?,
    }
    Ok(creds)
}

fn run(cli: Cli) -> Result<ExitCode> {
    // Offline: no server, so no credentials either.
    if let Command::Verify(args) = &cli.command {
        return verify::run(args, cli.project_id.as_deref(), cli.output);
    }
    let creds = credentials(&cli)?;
    let client = Client::new(&creds)?;
    let ctx = Ctx {
        client: &client,
        creds: &creds,
        output: cli.output,
    };
    let result = match cli.command {
        Command::Traces(cmd) => match *cmd {
            TracesCommand::List(args) => list(&client, creds.project()?, args, cli.output),
            TracesCommand::Tail(args) => tail::run(&client, creds.project()?, &args, cli.output),
        },
        Command::Trackers(cmd) => trackers::trackers(&ctx, cmd),
        Command::Notifications(cmd) => notifications::notifications(&ctx, cmd),
        Command::Quotas => trackers::quotas(&ctx),
        Command::Topics(cmd) => topics::topics(&ctx, cmd),
        Command::Login(_) => identity::login(&ctx),
        Command::Projects(cmd) => identity::projects(&ctx, cmd),
        Command::Users(cmd) => identity::users(&ctx, cmd),
        Command::Groups(cmd) => identity::groups(&ctx, cmd),
        Command::Roles(cmd) => identity::roles(&ctx, cmd),
        Command::AccessKeys(cmd) => identity::access_keys(&ctx, cmd),
        Command::Verify(_) => unreachable!("verified above"),
    };
    result.map(|()| ExitCode::SUCCESS)
}

/// The largest page the trace query serves.
const MAX_PAGE: u32 = 200;

fn list(client: &Client, project: &str, args: ListArgs, output: Output) -> Result<()> {
    let now = timefmt::now_ms();
    let mut params = args.filters.params();
    // Relative times count back from now, whichever flag they are given to.
    for (name, value) in [("from", &args.from), ("to", &args.to)] {
        if let Some(v) = value {
            params.push((name, timefmt::parse_time_arg(v, now)?.to_string()));
        }
    }
    // --all fetches everything: the largest pages mean the fewest requests.
    let limit = args.limit.or(args.all.then_some(MAX_PAGE));
    if let Some(limit) = limit {
        params.push(("limit", limit.to_string()));
    }
    if let Some(next) = args.next {
        params.push(("next", next));
    }

    let (traces, marker) = if args.all {
        let mut traces = Vec::new();
        let progress = std::io::stderr().is_terminal();
        client.list_all(project, &params, |page| {
            traces.extend(page.traces);
            if progress {
                eprint!("\r{} traces fetched", traces.len());
            }
        })?;
        if progress {
            eprintln!();
        }
        (traces, None)
    } else {
        let page = client.list(project, &params)?;
        (page.traces, page.meta_data.marker.filter(|m| !m.is_empty()))
    };

    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            // The marker is part of the answer: scripts page on without
            // reading stderr (null on the last page).
            let doc = serde_json::json!({ "traces": traces, "next": marker });
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
