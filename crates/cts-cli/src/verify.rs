//! `cts verify`: checks a tracker's trace files and digest chain where they
//! lie, in a local directory or an S3 bucket, offline: nothing but the
//! digest public keys (and, for encrypted files, an age identity) is
//! needed, no CTS server. A shell over `cts_archive::verify_tracker`, plus:
//!
//! * the tracker's location: `--tracker`, the file prefix and the region
//!   (each found in the bucket when there is one, else `--prefix`,
//!   `--region`), checked to hold files of exactly one project (the layout
//!   has no project directory, so two projects sharing a bucket and prefix
//!   share a chain directory, which no verification can untangle);
//! * with `--identity`, every encrypted trace file of the range decrypted
//!   and checked to be a JSON array (of objects), gzip'd when its name says
//!   so;
//! * a range in which no digest ends is a finding of its own: nothing
//!   vouches for it.
//!
//! Exit status: 0 when there is no finding, 1 when there are findings, 2
//! when verification could not run (arguments, keys, storage).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use cts_archive::{
    format_file_time, gap_text, open_trace_file, parse_object_name, verify_tracker, AgeIdentity,
    Finding, ObjectName, ObjectStorage, PublicKeySet, S3Config, StorageConfig, StoreError,
    TrackerPath, VerifyOptions, VerifyReport,
};
use serde::Serialize;
use serde_json::{json, value::RawValue, Value};

use crate::{table, timefmt, Output};

/// The exit status of a verification that found something.
pub const EXIT_FINDINGS: u8 = 1;
/// The exit status of a verification that could not run.
pub const EXIT_ERROR: u8 = 2;

#[derive(Args)]
#[command(after_help = "Exit status: 0 no findings, 1 findings, 2 verification could not run.")]
pub struct VerifyArgs {
    /// A local object root, as the server's DATA_DIR/obs: one directory per
    /// bucket. With --bucket the bucket DIR/NAME is verified; without, DIR is
    /// the bucket's own directory.
    #[arg(long, value_name = "DIR", help_heading = "Storage")]
    local: Option<PathBuf>,
    /// The tracker's bucket (obs_info.bucket_name). Without --local, an S3
    /// bucket reached with the --s3-* settings.
    #[arg(long, value_name = "NAME", help_heading = "Storage")]
    bucket: Option<String>,
    /// S3 endpoint, e.g. https://obs.eu-de.otc.t-systems.com or
    /// http://127.0.0.1:9000 [default: AWS S3 of --s3-region].
    #[arg(
        long,
        env = "CTS_OBS_ENDPOINT",
        value_name = "URL",
        help_heading = "S3"
    )]
    s3_endpoint: Option<String>,
    /// S3 signing region.
    #[arg(
        long,
        env = "CTS_OBS_REGION",
        default_value = "us-east-1",
        help_heading = "S3"
    )]
    s3_region: String,
    /// S3 access key.
    #[arg(long, env = "CTS_OBS_ACCESS_KEY", help_heading = "S3")]
    s3_access_key: Option<String>,
    /// S3 secret key.
    #[arg(
        long,
        env = "CTS_OBS_SECRET_KEY",
        hide_env_values = true,
        help_heading = "S3"
    )]
    s3_secret_key: Option<String>,
    /// Virtual-host style requests ({bucket}.{host}/{key}) instead of path
    /// style ({endpoint}/{bucket}/{key}), as the server's
    /// obs.virtual_host_style.
    #[arg(long, env = "CTS_OBS_VIRTUAL_HOST_STYLE", help_heading = "S3")]
    s3_virtual_host_style: bool,

    /// The digest public keys: the JSON answer of GET
    /// /v3/{project_id}/digest-public-keys, {"keys": [...]}.
    #[arg(long, value_name = "FILE")]
    public_keys: PathBuf,
    /// The tracker's file_prefix_name, the start of its file names ("" for
    /// none) [default: the only one of the tracker's files in the bucket].
    #[arg(long, value_name = "FILE_PREFIX")]
    prefix: Option<String>,
    /// The region directory (the project's region) [default: the only one
    /// in the bucket].
    #[arg(long)]
    region: Option<String>,
    /// The tracker's name.
    #[arg(long, value_name = "NAME", default_value = "system")]
    tracker: String,
    /// Digests ending at or after this: ms since the epoch, RFC 3339, or a
    /// duration ago (15m, 2h, 7d) [default: the first digest].
    #[arg(long)]
    from: Option<String>,
    /// Digests ending at or before this, in the same forms [default: now].
    /// A chain whose newest digest is more than two digest periods older
    /// than this, and not an ending digest, is missing its newest digests.
    #[arg(long)]
    to: Option<String>,
    /// The server's transfer.digest_period: how long one digest covers.
    #[arg(long, default_value = "1h", value_parser = timefmt::parse_duration)]
    digest_period: Duration,
    /// An age identity file (AGE-SECRET-KEY-1…): encrypted trace files of the
    /// range are decrypted and checked too. Repeat for files encrypted to
    /// different keys.
    #[arg(long = "identity", value_name = "FILE")]
    identities: Vec<PathBuf>,
}

/// A finding of the CLI's own checks, beside the library's.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
enum Extra {
    /// An encrypted trace file that does not decrypt with the identities,
    /// or whose content is not a (gzip'd) JSON array of objects.
    FileUnreadable { key: String, reason: String },
    /// Not one digest ends in the range: nothing vouches for it.
    NoDigest { from: String, to: String },
}

/// Where the tracker's files are.
struct Location {
    storage: ObjectStorage,
    bucket: String,
    /// What to call it in messages.
    display: String,
    /// Whether the bucket is `--local`'s last directory (no `--bucket`).
    bucket_from_dir: bool,
}

/// The tracker's objects as their names tell, from one listing.
struct Scan {
    region: String,
    file_prefix: String,
    projects: BTreeSet<String>,
    /// Encrypted trace files and the time in their names.
    encrypted: Vec<(String, i64)>,
}

/// `cts verify`: the exit status of a verification that ran.
pub fn run(args: &VerifyArgs, project: Option<&str>, output: Output) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.public_keys)
        .with_context(|| format!("reading {}", args.public_keys.display()))?;
    let keys = PublicKeySet::from_json(&text)
        .with_context(|| format!("reading {}", args.public_keys.display()))?;
    let identities = args
        .identities
        .iter()
        .map(|f| read_identity(f))
        .collect::<Result<Vec<_>>>()?;

    let now = timefmt::now_ms();
    let to_ms = match &args.to {
        Some(t) => timefmt::parse_time_arg(t, now)?,
        None => now,
    };
    // A relative --from counts back from --to.
    let from_ms = args
        .from
        .as_deref()
        .map(|f| timefmt::parse_time_arg(f, to_ms))
        .transpose()?;
    // Digests are named to the second: the whole seconds within [from, to].
    let to = to_ms.div_euclid(1000);
    let from = from_ms.map(|ms| (ms + 999).div_euclid(1000));
    if from.is_some_and(|f| f > to) {
        bail!("--from is after --to");
    }
    let digest_period = i64::try_from(args.digest_period.as_secs())
        .ok()
        .filter(|&s| s > 0)
        .context("--digest-period must be at least 1s")?;
    let prefix = args.prefix.as_deref().map(|p| p.trim_matches('/'));

    let location = open_storage(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let scan = scan(&location, prefix, args.region.as_deref(), &args.tracker).await?;
        check_projects(&scan, project, &location, &args.tracker)?;
        let path = TrackerPath {
            file_prefix: scan.file_prefix.clone(),
            region: scan.region.clone(),
            tracker_name: args.tracker.clone(),
        };
        let options = VerifyOptions {
            from,
            to: Some(to),
            digest_period_secs: digest_period,
        };
        let report = verify_tracker(&location.storage, &location.bucket, &path, &keys, &options)
            .await
            .context("verification failed")?;

        let mut extra = Vec::new();
        // Digest windows follow each other, so a digest ends in any range of
        // one period that is over (allowing for lateness); a tracker whose
        // first digests are not due yet has pending files instead.
        let settled = to.min(now.div_euclid(1000) - options.digest_lateness_secs());
        let digest_due = from.is_none_or(|f| settled - f >= digest_period);
        if report.digests_checked == 0 && report.pending_files.is_empty() && digest_due {
            extra.push(Extra::NoDigest {
                from: from.map_or_else(|| "the beginning".to_string(), format_file_time),
                to: format_file_time(to),
            });
        }
        let decrypted = if identities.is_empty() {
            None
        } else {
            let in_range = scan
                .encrypted
                .iter()
                .filter(|(_, t)| from.is_none_or(|f| *t >= f) && *t <= to)
                .map(|(k, _)| k.as_str());
            Some(decrypt_all(&location, in_range, &identities, &report, &mut extra).await?)
        };

        let summary = Summary {
            location: &location,
            path: &path,
            from,
            to,
            report: &report,
            extra: &extra,
            decrypted,
        };
        summary.print(output)?;
        let clean = report.is_clean() && extra.is_empty();
        Ok(ExitCode::from(if clean { 0 } else { EXIT_FINDINGS }))
    })
}

fn read_identity(file: &Path) -> Result<AgeIdentity> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the identity {}", file.display()))?;
    text.parse()
        .with_context(|| format!("reading the identity {}", file.display()))
}

fn open_storage(args: &VerifyArgs) -> Result<Location> {
    if let Some(dir) = &args.local {
        // Verifying creates nothing: ObjectStorage would create a missing root.
        let dir = dir
            .canonicalize()
            .with_context(|| format!("--local {}", dir.display()))?;
        if !dir.is_dir() {
            bail!("--local {} is not a directory", dir.display());
        }
        let (root, bucket) = match &args.bucket {
            Some(bucket) => (dir.clone(), bucket.clone()),
            None => {
                let name = dir.file_name().and_then(|n| n.to_str()).with_context(|| {
                    format!(
                        "--local {} names no bucket directory: give --bucket",
                        dir.display()
                    )
                })?;
                let parent = dir.parent().expect("a directory with a name has a parent");
                (parent.to_path_buf(), name.to_string())
            }
        };
        let display = root.join(&bucket).display().to_string();
        let storage = ObjectStorage::new(StorageConfig::Local(root))?;
        return Ok(Location {
            storage,
            bucket,
            display,
            bucket_from_dir: args.bucket.is_none(),
        });
    }
    let Some(bucket) = args.bucket.clone() else {
        bail!("say where the files are: --local DIR, or --bucket NAME with the --s3-* settings");
    };
    let (Some(access_key), Some(secret_key)) = (&args.s3_access_key, &args.s3_secret_key) else {
        bail!(
            "an S3 bucket needs --s3-access-key and --s3-secret-key \
             (CTS_OBS_ACCESS_KEY, CTS_OBS_SECRET_KEY); for a local directory give --local DIR"
        );
    };
    let endpoint = args
        .s3_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string);
    let config = S3Config {
        allow_http: endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://")),
        endpoint,
        region: args.s3_region.clone(),
        access_key: access_key.clone(),
        secret_key: secret_key.clone(),
        path_style: !args.s3_virtual_host_style,
    };
    let display = match &config.endpoint {
        Some(e) => format!("s3 {}/{bucket}", e.trim_end_matches('/')),
        None => format!("s3://{bucket}"),
    };
    Ok(Location {
        storage: ObjectStorage::new(StorageConfig::S3(config))?,
        bucket,
        display,
        bucket_from_dir: false,
    })
}

/// Lists `CloudTraces[/{region}]` once and reads the tracker's object
/// names: the region and the file prefix (when not given), the projects,
/// and the encrypted trace files.
async fn scan(
    location: &Location,
    prefix: Option<&str>,
    region: Option<&str>,
    tracker: &str,
) -> Result<Scan> {
    let base = match region {
        None => "CloudTraces".to_string(),
        Some(region) => format!("CloudTraces/{region}"),
    };
    let listed = match location.storage.list(&location.bucket, &base).await {
        Ok(listed) => listed,
        Err(StoreError::NoSuchBucket { .. }) => {
            bail!("there is no bucket {}", location.display)
        }
        Err(e) => return Err(e).with_context(|| format!("listing {}", location.display)),
    };
    // (region, file prefix) -> the tracker's objects there.
    let mut found: BTreeMap<(String, String), Vec<(String, ObjectName)>> = BTreeMap::new();
    for object in &listed {
        let Some(rest) = object
            .key
            .strip_prefix(base.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            continue;
        };
        let mut segments: Vec<&str> = rest.split('/').collect();
        let region = match region {
            Some(r) => r,
            None if segments.len() > 1 => segments.remove(0),
            None => continue,
        };
        // {Y}/{M}/{D}/{tracker}/[Digest/][{service}/]{name}
        if segments.len() < 5 || segments.len() > 7 || segments[3] != tracker {
            continue;
        }
        let Some(name) = parse_object_name(segments[segments.len() - 1], region) else {
            continue;
        };
        if prefix.is_none_or(|p| p == name.file_prefix) {
            found
                .entry((region.to_string(), name.file_prefix.to_string()))
                .or_default()
                .push((object.key.clone(), name));
        }
    }
    let regions: BTreeSet<&str> = found.keys().map(|(r, _)| r.as_str()).collect();
    let prefixes: BTreeSet<&str> = found.keys().map(|(_, p)| p.as_str()).collect();
    if found.is_empty() {
        bail!(
            "no trace or digest files of tracker {tracker}{} under {}/CloudTraces/{}: check --bucket{}, and --tracker{}",
            prefix.map_or_else(String::new, |p| format!(" with prefix {p:?}")),
            location.display,
            region.unwrap_or("*"),
            match (prefix.is_some(), region.is_some()) {
                (true, true) => ", --prefix, --region",
                (true, false) => ", --prefix",
                (false, true) => ", --region",
                (false, false) => "",
            },
            if location.bucket_from_dir {
                " (without --bucket, --local is the bucket's own directory)"
            } else {
                ""
            }
        );
    }
    if regions.len() > 1 {
        bail!(
            "tracker {tracker} has files in several regions of {}: {}; choose one with --region",
            location.display,
            regions.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    if prefixes.len() > 1 {
        bail!(
            "tracker {tracker} has files of several file prefixes in {}: {}; choose one with --prefix",
            location.display,
            prefixes
                .into_iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let ((region, file_prefix), objects) = found.into_iter().next().expect("one location");
    Ok(Scan {
        projects: objects
            .iter()
            .map(|(_, n)| n.project_id.to_string())
            .collect(),
        encrypted: objects
            .iter()
            .filter(|(key, n)| !n.digest && key.ends_with(".age"))
            .map(|(key, n)| (key.clone(), n.time))
            .collect(),
        region,
        file_prefix,
    })
}

/// One project's files only: the chain directories have no project in
/// their path, so another project's files there would read as tampering.
fn check_projects(
    scan: &Scan,
    project: Option<&str>,
    location: &Location,
    tracker: &str,
) -> Result<()> {
    let found = scan.projects.iter().cloned().collect::<Vec<_>>().join(", ");
    if let Some(p) = project {
        if !scan.projects.contains(p) {
            bail!(
                "tracker {tracker} in {} has no files of project {p}, only of {found}",
                location.display
            );
        }
    }
    if scan.projects.len() > 1 {
        bail!(
            "tracker {tracker} in {} holds the files of several projects ({found}) in the same \
             directories: their digest chains cannot be told apart; give each project its own \
             bucket or --prefix",
            location.display
        );
    }
    Ok(())
}

/// Decrypts each encrypted trace file and checks its content; files that
/// are already findings (altered) or gone are left out. Returns how many
/// were checked.
async fn decrypt_all(
    location: &Location,
    objects: impl Iterator<Item = &str>,
    identities: &[AgeIdentity],
    report: &VerifyReport,
    extra: &mut Vec<Extra>,
) -> Result<usize> {
    let altered: HashSet<&str> = report
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::FileAltered { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    let mut checked = 0;
    for key in objects.filter(|k| !altered.contains(k)) {
        let bytes = match location.storage.get(&location.bucket, key).await {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {key}")),
        };
        checked += 1;
        if let Err(reason) = check_content(key, &bytes, identities) {
            extra.push(Extra::FileUnreadable {
                key: key.to_string(),
                reason,
            });
        }
    }
    Ok(checked)
}

/// Whether one of `identities` opens the file and it holds a JSON array of
/// objects.
fn check_content(key: &str, bytes: &[u8], identities: &[AgeIdentity]) -> Result<(), String> {
    let mut last = String::new();
    for identity in identities {
        match open_trace_file(key, bytes, Some(identity)) {
            Ok(json) => {
                let traces: Vec<Box<RawValue>> =
                    serde_json::from_slice(&json).map_err(|e| format!("not a JSON array: {e}"))?;
                return match traces.iter().position(|t| !t.get().starts_with('{')) {
                    Some(i) => Err(format!("element {i} of the array is not an object")),
                    None => Ok(()),
                };
            }
            Err(cts_archive::FileError::Decrypt { message, .. }) => last = message,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!(
        "does not decrypt with the identities given: {last}"
    ))
}

struct Summary<'a> {
    location: &'a Location,
    path: &'a TrackerPath,
    from: Option<i64>,
    to: i64,
    report: &'a VerifyReport,
    extra: &'a [Extra],
    decrypted: Option<usize>,
}

impl Summary<'_> {
    fn finding_count(&self) -> usize {
        self.report.findings.len() + self.extra.len()
    }

    fn line(&self) -> String {
        let r = self.report;
        let mut line = format!(
            "{} digests and {} trace files",
            r.digests_checked, r.files_checked
        );
        if let Some(n) = self.decrypted {
            line.push_str(&format!(" ({n} encrypted files decrypted)"));
        }
        line.push_str(&format!(
            " of tracker {} in {}/{}, digests ending {} to {}: ",
            self.path.tracker_name,
            self.location.display,
            self.path.region_root(),
            self.from
                .map_or_else(|| "from the first".to_string(), format_file_time),
            format_file_time(self.to),
        ));
        match self.finding_count() {
            0 => line.push_str("no findings"),
            1 => line.push_str("1 finding"),
            n => line.push_str(&format!("{n} findings")),
        }
        line
    }

    fn print(&self, output: Output) -> Result<()> {
        let mut out = std::io::stdout().lock();
        match output {
            Output::Json => {
                let mut findings: Vec<Value> = self
                    .report
                    .findings
                    .iter()
                    .map(serde_json::to_value)
                    .collect::<serde_json::Result<_>>()?;
                for e in self.extra {
                    findings.push(serde_json::to_value(e)?);
                }
                let doc = json!({
                    "clean": self.finding_count() == 0,
                    "location": self.location.display,
                    "bucket": self.location.bucket,
                    "root": self.path.region_root(),
                    "prefix": self.path.file_prefix,
                    "region": self.path.region,
                    "tracker": self.path.tracker_name,
                    "from": self.from.map(format_file_time),
                    "to": format_file_time(self.to),
                    "digests_checked": self.report.digests_checked,
                    "files_checked": self.report.files_checked,
                    "files_decrypted": self.decrypted,
                    "findings": findings,
                    "pending_files": self.report.pending_files,
                    "summary": self.line(),
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            }
            Output::Table => {
                if self.finding_count() > 0 {
                    let mut rows = vec![[
                        "FINDING".to_string(),
                        "OBJECT".to_string(),
                        "DETAIL".to_string(),
                    ]];
                    rows.extend(self.report.findings.iter().map(finding_row));
                    rows.extend(self.extra.iter().map(extra_row));
                    out.write_all(table::render_rows(&rows).as_bytes())?;
                    writeln!(out)?;
                }
                writeln!(out, "{}", self.line())?;
                let pending = self.report.pending_files.len();
                if pending > 0 {
                    writeln!(
                        out,
                        "{pending} trace files pending: their digest is not due yet (--output json lists them)"
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// `[FINDING, OBJECT, DETAIL]` of a library finding.
fn finding_row(f: &Finding) -> [String; 3] {
    let (kind, object, detail) = match f {
        Finding::FileAltered {
            key,
            digest,
            expected_hash,
            actual_hash,
        } => (
            "file_altered",
            key.clone(),
            format!("SHA-256 {actual_hash}, {digest} recorded {expected_hash}"),
        ),
        Finding::FileDeleted { key, digest } => (
            "file_deleted",
            key.clone(),
            format!("gone; listed in {digest}"),
        ),
        Finding::FileMoved { from, to, digest } => (
            "file_moved",
            from.clone(),
            format!("its bytes are now at {to}; listed in {digest}"),
        ),
        Finding::FileAdded { key } => (
            "file_added",
            key.clone(),
            "in the time the digests cover, listed by none".to_string(),
        ),
        Finding::DigestMissing {
            key,
            previous,
            next,
            gap_start,
            gap_end,
            estimated_count,
            unverified_files,
        } => {
            let mut detail = format!(
                "about {estimated_count} missing {}",
                gap_text(gap_start.as_deref(), gap_end.as_deref())
            );
            if let Some(p) = previous {
                detail.push_str(&format!("; after {p}"));
            }
            if let Some(n) = next {
                detail.push_str(&format!("; before {n}"));
            }
            if !unverified_files.is_empty() {
                detail.push_str(&format!(
                    "; {} trace files unverifiable",
                    unverified_files.len()
                ));
            }
            (
                "digest_missing",
                key.clone().unwrap_or_else(|| "-".to_string()),
                detail,
            )
        }
        Finding::DigestAltered { key, reason } => ("digest_altered", key.clone(), reason.clone()),
        Finding::DigestBadSignature { key, reason } => {
            ("digest_bad_signature", key.clone(), reason.clone())
        }
        Finding::DigestMoved {
            key,
            recorded_bucket,
            recorded_object,
        } => (
            "digest_moved",
            key.clone(),
            format!("written as {recorded_bucket}/{recorded_object}"),
        ),
        Finding::ChainBroken { key, reason } => ("chain_broken", key.clone(), reason.clone()),
    };
    [kind.to_string(), object, detail]
}

fn extra_row(e: &Extra) -> [String; 3] {
    match e {
        Extra::FileUnreadable { key, reason } => {
            ["file_unreadable".to_string(), key.clone(), reason.clone()]
        }
        Extra::NoDigest { from, to } => [
            "no_digest".to_string(),
            "-".to_string(),
            format!("no digest ends between {from} and {to}: nothing vouches for the range"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_rows_name_the_object() {
        let row = finding_row(&Finding::FileMoved {
            from: "a".into(),
            to: "b".into(),
            digest: "d".into(),
        });
        assert_eq!(row[0], "file_moved");
        assert_eq!(row[1], "a");
        assert!(row[2].contains("now at b"));
        let row = finding_row(&Finding::DigestMissing {
            key: None,
            previous: Some("p".into()),
            next: None,
            gap_start: Some("s".into()),
            gap_end: Some("e".into()),
            estimated_count: 2,
            unverified_files: vec!["f".into()],
        });
        assert_eq!(row[1], "-");
        assert_eq!(
            row[2],
            "about 2 missing between s and e; after p; 1 trace files unverifiable"
        );
    }
}
