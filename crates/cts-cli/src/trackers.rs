//! Trackers and quotas of the project (`--project-id`): `cts trackers` and
//! `cts quotas`, over the v3 tracker API.
//!
//! A tracker is named by its name alone: the management tracker is always
//! `system` and no data tracker may be called so, so the name tells the
//! type (`--type` only spells it out). Every change is one PUT of the
//! fields given, the others keep their values.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use crate::client::enc;
use crate::ctx::{Column, Ctx};

/// The name of the management tracker, the only one of its type.
const SYSTEM: &str = "system";

const TRACKER_COLUMNS: &[Column] = &[
    ("NAME", "/tracker_name"),
    ("TYPE", "/tracker_type"),
    ("STATUS", "/status"),
    ("DETAIL", "/detail"),
    ("BUCKET", "/obs_info/bucket_name"),
    ("PREFIX", "/obs_info/file_prefix_name"),
    ("DATA_BUCKET", "/data_bucket/data_bucket_name"),
    ("EVENTS", "/data_bucket/data_event"),
    // Delivery to the log sink: enabled, or error with its detail.
    ("LTS", "/lts/status"),
    ("LTS_DETAIL", "/lts/detail"),
    ("CREATED", "/create_time"),
];

/// A new tracker, shown whole.
const NEW_TRACKER_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("NAME", "/tracker_name"),
    ("TYPE", "/tracker_type"),
    ("STATUS", "/status"),
    ("BUCKET", "/obs_info/bucket_name"),
    ("PREFIX", "/obs_info/file_prefix_name"),
    ("CREATE_BUCKET", "/obs_info/is_obs_created"),
    ("LIFECYCLE", "/obs_info/bucket_lifecycle"),
    ("COMPRESS", "/obs_info/compress_type"),
    ("LTS", "/lts/is_lts_enabled"),
    ("VALIDATE", "/is_support_validate"),
    ("DATA_BUCKET", "/data_bucket/data_bucket_name"),
    ("EVENTS", "/data_bucket/data_event"),
    (
        "EXCLUDE_SERVICE",
        "/management_event_selector/exclude_service",
    ),
    ("CREATED", "/create_time"),
];

const QUOTA_COLUMNS: &[Column] = &[("TYPE", "/type"), ("USED", "/used"), ("QUOTA", "/quota")];

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrackerType {
    /// The management tracker: traces of every service's management API.
    System,
    /// A data tracker: reads and writes of one OBS bucket.
    Data,
}

impl TrackerType {
    fn as_str(self) -> &'static str {
        match self {
            TrackerType::System => "system",
            TrackerType::Data => "data",
        }
    }
}

/// One tracker, by name.
#[derive(Args)]
pub struct TrackerRef {
    /// Tracker name (`system`: the management tracker).
    name: String,
    /// Its type [default: system for the name system, else data].
    #[arg(long = "type", value_enum)]
    kind: Option<TrackerType>,
}

impl TrackerRef {
    fn kind(&self) -> TrackerType {
        self.kind.unwrap_or(if self.name == SYSTEM {
            TrackerType::System
        } else {
            TrackerType::Data
        })
    }

    /// `tracker_name` and `tracker_type`, as the query of list and delete.
    fn query(&self) -> Vec<(&'static str, String)> {
        vec![
            ("tracker_name", self.name.clone()),
            ("tracker_type", self.kind().as_str().to_string()),
        ]
    }
}

/// The settings of create and update; each one given is sent, the others
/// take their defaults (create) or keep their values (update). Switches
/// take `=false` to turn them off.
#[derive(Args)]
pub struct TrackerOptions {
    /// OBS bucket the trace files are transferred to ("" stops the transfer).
    #[arg(long)]
    bucket: Option<String>,
    /// Prefix of the trace files' names in the bucket.
    #[arg(long)]
    prefix: Option<String>,
    /// Format of the trace files.
    #[arg(long, value_parser = ["gzip", "json"])]
    compress: Option<String>,
    /// Days the trace files are kept in the bucket (0: forever).
    #[arg(long, value_name = "DAYS")]
    lifecycle: Option<i64>,
    /// Create --bucket (else it must exist).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    create_bucket: Option<bool>,
    /// Stream the traces to the log sink (LTS) too: on or off.
    #[arg(long, num_args = 0..=1, default_missing_value = "on", value_name = "on|off",
          value_parser = on_off)]
    lts: Option<bool>,
    /// Write digest files to verify the trace files with.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    validate: Option<bool>,
    /// Data tracker: the bucket whose objects' reads and writes are recorded
    /// (fixed once created).
    #[arg(long)]
    data_bucket: Option<String>,
    /// Data tracker: the operations recorded, READ and/or WRITE.
    #[arg(long, value_delimiter = ',', value_name = "READ,WRITE")]
    events: Option<Vec<String>>,
    /// Management tracker: services whose traces are not transferred (KMS;
    /// "" for none).
    #[arg(long, value_delimiter = ',', value_name = "SERVICES")]
    exclude_service: Option<Vec<String>>,
}

/// `on`/`off` (or `true`/`false`).
fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{s:?}: give on or off")),
    }
}

impl TrackerOptions {
    /// The v3 body of create and update: the given fields only.
    fn body(&self, kind: TrackerType, name: &str, status: Option<&str>) -> Value {
        let exclude = self.exclude_service.as_ref().map(|services| {
            services
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
        });
        prune(json!({
            "tracker_type": kind.as_str(),
            "tracker_name": name,
            "status": status,
            "obs_info": {
                "bucket_name": self.bucket,
                "file_prefix_name": self.prefix,
                "compress_type": self.compress,
                "bucket_lifecycle": self.lifecycle,
                "is_obs_created": self.create_bucket,
            },
            "is_lts_enabled": self.lts,
            "is_support_validate": self.validate,
            "data_bucket": {"data_bucket_name": self.data_bucket, "data_event": self.events},
            "management_event_selector": {"exclude_service": exclude},
        }))
    }
}

/// `v` without its nulls and the objects left empty by them (the server
/// reads both as absent; left out, the request says only what it sets).
fn prune(v: Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, prune(v)))
                .filter(|(_, v)| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()))
                .collect::<Map<_, _>>(),
        ),
        other => other,
    }
}

#[derive(Subcommand)]
pub enum TrackersCommand {
    /// List the project's trackers.
    List {
        /// Only the tracker with this name.
        #[arg(long)]
        name: Option<String>,
        /// Only trackers of this type.
        #[arg(long = "type", value_enum)]
        kind: Option<TrackerType>,
    },
    /// Create the management tracker (system) or a data tracker.
    Create {
        #[arg(value_enum)]
        kind: TrackerType,
        /// Name of the data tracker (the management tracker's is system).
        #[arg(long, required_if_eq("kind", "data"))]
        name: Option<String>,
        #[command(flatten)]
        options: TrackerOptions,
    },
    /// Change settings of a tracker.
    Update {
        #[command(flatten)]
        tracker: TrackerRef,
        #[command(flatten)]
        options: TrackerOptions,
    },
    /// Record with a tracker again.
    Enable(TrackerRef),
    /// Stop recording with a tracker (without deleting it).
    Disable(TrackerRef),
    /// Delete a tracker, or every data tracker.
    Delete {
        /// Tracker name (`system`: the management tracker).
        #[arg(required_unless_present = "all_data")]
        name: Option<String>,
        /// Its type [default: system for the name system, else data].
        #[arg(long = "type", value_enum, requires = "name")]
        kind: Option<TrackerType>,
        /// Delete every data tracker of the project.
        #[arg(long, conflicts_with = "name")]
        all_data: bool,
    },
    /// Tag a tracker (a key given again gets the new value).
    Tag {
        #[command(flatten)]
        tracker: TrackerRef,
        /// Tags (KEY alone: an empty value).
        #[arg(required = true, value_name = "KEY=VALUE")]
        tags: Vec<String>,
    },
    /// Remove tags of a tracker.
    Untag {
        #[command(flatten)]
        tracker: TrackerRef,
        /// Tags (KEY alone: whatever its value).
        #[arg(required = true, value_name = "KEY[=VALUE]")]
        tags: Vec<String>,
    },
}

/// `{"key", "value"}` of each `KEY[=VALUE]`, without `value` if no `=`.
fn tag_list(tags: &[String]) -> Value {
    tags.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) => json!({"key": k, "value": v}),
            None => json!({ "key": t }),
        })
        .collect()
}

impl Ctx<'_> {
    /// `/v3/{project_id}{rest}`.
    pub(crate) fn project_path(&self, rest: &str) -> Result<String> {
        Ok(format!("/v3/{}{rest}", enc(self.creds.project()?)))
    }

    fn trackers(&self, query: &[(&str, String)]) -> Result<Vec<Value>> {
        self.get_list(&self.project_path("/trackers")?, query, "trackers")
    }

    /// The id of tracker `t`.
    fn tracker_id(&self, t: &TrackerRef) -> Result<String> {
        let found = self.trackers(&t.query())?;
        match found.first() {
            Some(tracker) => Ok(tracker["id"]
                .as_str()
                .context("a tracker without id")?
                .to_string()),
            None => bail!("no {} tracker named {:?}", t.kind().as_str(), t.name),
        }
    }

    /// `PUT /v3/{project_id}/tracker`.
    fn put_tracker(&self, body: &Value) -> Result<()> {
        self.client
            .call("PUT", &self.project_path("/tracker")?, &[], Some(body))?;
        Ok(())
    }

    /// `POST` or `DELETE` `…/cts-tracker/{id}/tags/{action}` with `tags`.
    fn tags(&self, method: &str, action: &str, t: &TrackerRef, tags: &[String]) -> Result<()> {
        let id = self.tracker_id(t)?;
        let path = self.project_path(&format!("/cts-tracker/{}/tags/{action}", enc(&id)))?;
        let body = json!({ "tags": tag_list(tags) });
        self.client.call(method, &path, &[], Some(&body))?;
        Ok(())
    }
}

pub fn trackers(c: &Ctx, cmd: TrackersCommand) -> Result<()> {
    let set_status = |t: &TrackerRef, status: &str| -> Result<()> {
        c.put_tracker(&json!({
            "tracker_type": t.kind().as_str(), "tracker_name": t.name, "status": status
        }))?;
        c.done(format!("tracker {} is {status}", t.name))
    };
    match cmd {
        TrackersCommand::List { name, kind } => {
            let mut query = Vec::new();
            if let Some(n) = name {
                query.push(("tracker_name", n));
            }
            if let Some(k) = kind {
                query.push(("tracker_type", k.as_str().to_string()));
            }
            c.print_list(TRACKER_COLUMNS, &c.trackers(&query)?)
        }
        TrackersCommand::Create {
            kind,
            name,
            options,
        } => {
            let body = options.body(kind, name.as_deref().unwrap_or(SYSTEM), None);
            let reply = c
                .client
                .call("POST", &c.project_path("/tracker")?, &[], Some(&body))?;
            c.print_one(NEW_TRACKER_COLUMNS, &reply.body)
        }
        TrackersCommand::Update { tracker, options } => {
            c.put_tracker(&options.body(tracker.kind(), &tracker.name, None))?;
            c.done(format!("updated tracker {}", tracker.name))
        }
        TrackersCommand::Enable(t) => set_status(&t, "enabled"),
        TrackersCommand::Disable(t) => set_status(&t, "disabled"),
        TrackersCommand::Delete {
            name,
            kind,
            all_data,
        } => {
            let path = c.project_path("/trackers")?;
            if all_data {
                // Listed first only to say which went.
                let query = [("tracker_type", TrackerType::Data.as_str().to_string())];
                let doomed: Vec<String> = c
                    .trackers(&query)?
                    .iter()
                    .filter_map(|t| t["tracker_name"].as_str().map(str::to_string))
                    .collect();
                c.client.call("DELETE", &path, &query, None)?;
                return c.done(match doomed.is_empty() {
                    true => "no data trackers to delete".to_string(),
                    false => format!("deleted data trackers {}", doomed.join(", ")),
                });
            }
            let t = TrackerRef {
                name: name.context("give a tracker name or --all-data")?,
                kind,
            };
            c.client.call("DELETE", &path, &t.query(), None)?;
            c.done(format!("deleted tracker {}", t.name))
        }
        TrackersCommand::Tag { tracker, tags } => {
            c.tags("POST", "create", &tracker, &tags)?;
            c.done(format!(
                "tagged tracker {}: {}",
                tracker.name,
                tags.join(" ")
            ))
        }
        TrackersCommand::Untag { tracker, tags } => {
            c.tags("DELETE", "delete", &tracker, &tags)?;
            c.done(format!(
                "untagged tracker {}: {}",
                tracker.name,
                tags.join(" ")
            ))
        }
    }
}

pub fn quotas(c: &Ctx) -> Result<()> {
    let items = c.get_list(&c.project_path("/quotas")?, &[], "resources")?;
    c.print_list(QUOTA_COLUMNS, &items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: TrackersCommand,
    }

    fn body_of(args: &[&str]) -> Value {
        let cli = Cli::try_parse_from(std::iter::once("trackers").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
        match cli.cmd {
            TrackersCommand::Create {
                kind,
                name,
                options,
            } => options.body(kind, name.as_deref().unwrap_or(SYSTEM), None),
            TrackersCommand::Update { tracker, options } => {
                options.body(tracker.kind(), &tracker.name, None)
            }
            _ => panic!("not create or update"),
        }
    }

    #[test]
    fn bodies_carry_only_the_given_settings() {
        assert_eq!(
            body_of(&[
                "create",
                "data",
                "--name",
                "d1",
                "--data-bucket",
                "logs",
                "--events",
                "READ,WRITE",
                "--bucket",
                "dump",
                "--compress",
                "json",
                "--lts",
            ]),
            json!({"tracker_type": "data", "tracker_name": "d1", "is_lts_enabled": true,
                   "obs_info": {"bucket_name": "dump", "compress_type": "json"},
                   "data_bucket": {"data_bucket_name": "logs", "data_event": ["READ", "WRITE"]}})
        );
        assert_eq!(
            body_of(&["create", "system", "--exclude-service", "KMS", "--validate"]),
            json!({"tracker_type": "system", "tracker_name": "system", "is_support_validate": true,
                   "management_event_selector": {"exclude_service": ["KMS"]}})
        );
        assert_eq!(
            body_of(&[
                "update",
                "system",
                "--lts=false",
                "--bucket",
                "",
                "--exclude-service",
                ""
            ]),
            json!({"tracker_type": "system", "tracker_name": "system", "is_lts_enabled": false,
                   "obs_info": {"bucket_name": ""},
                   "management_event_selector": {"exclude_service": []}})
        );
        // Issue 16: `--lts on|off`.
        for (arg, on) in [("on", true), ("off", false)] {
            let body = body_of(&["update", "system", "--lts", arg]);
            assert_eq!(body["is_lts_enabled"], on, "{arg}");
        }
        // The name tells the type unless --type says it.
        assert_eq!(
            body_of(&["update", "d1", "--events", "READ"]),
            json!({"tracker_type": "data", "tracker_name": "d1",
                   "data_bucket": {"data_event": ["READ"]}})
        );
        assert_eq!(
            body_of(&["update", "d1", "--type", "system"])["tracker_type"],
            "system"
        );
    }

    #[test]
    fn a_data_tracker_needs_a_name() {
        assert!(Cli::try_parse_from(["t", "create", "data"]).is_err());
        assert!(Cli::try_parse_from(["t", "delete"]).is_err());
        assert!(Cli::try_parse_from(["t", "delete", "d1", "--all-data"]).is_err());
        assert!(Cli::try_parse_from(["t", "delete", "--all-data"]).is_ok());
    }

    #[test]
    fn tags_without_a_value_leave_it_out() {
        let tags = ["env=prod".to_string(), "team".into(), "a=b=c".into()];
        assert_eq!(
            tag_list(&tags),
            json!([{"key": "env", "value": "prod"}, {"key": "team"}, {"key": "a", "value": "b=c"}])
        );
    }
}
