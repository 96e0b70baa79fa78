//! Trace files: names, contents, splitting, compression and age encryption.
//!
//! # Names
//!
//! As the reference (`querying_archived_traces.rst`) lays them out: the
//! bucket, then `CloudTraces/`; the tracker's `file_prefix_name` is part of
//! the file name only, never a directory:
//!
//! ```text
//! CloudTraces/{region}/{YYYY}/{M}/{D}/{tracker}/{service}/{prefix}_CloudTrace_{region}-{project_id}_{YYYY-MM-DDTHH-MM-SSZ}_{16 hex}.json.gz
//! CloudTraces/eu-de/2016/5/30/system/ECS/logs_CloudTrace_eu-de-0a1b…_2016-05-30T16-20-56Z_21d36ced8c8af71e.json.gz
//! ```
//!
//! * Month and day are not zero-padded (the reference's `2016/5/19`); the
//!   time in the name is.
//! * The time is the end of the transfer period (UTC), and it also picks
//!   the date directories. The reference calls it the upload time; the
//!   period end is when the upload starts, and unlike the clock at upload
//!   it is the same when an interrupted upload is retried.
//! * An empty `file_prefix_name` drops the name's `{prefix}_`:
//!   `CloudTraces/…/CloudTrace_eu-de-…json.gz`. Trackers that differ only
//!   in their prefix share directories; [`parse_object_name`] tells their
//!   files apart.
//! * Without `is_sort_by_service` the `{service}` directory is left out and
//!   one file holds every service of the period.
//! * The 16 hex digits are the first 8 bytes of SHA-256 over (region,
//!   project, tracker, period, service, part number): a retried upload of
//!   the same part rewrites the same object, so a trace lands in exactly
//!   one file even when a transfer is interrupted.
//! * Extensions: `.json.gz`, `.json` (`compress_type` `json`), and `.age`
//!   after either when the file is encrypted.
//!
//! # Contents
//!
//! The JSON array of the traces, each exactly as stored, gzip'd with a zero
//! mtime (so the same traces give the same bytes), at most 50,000 traces and
//! 50 MB of JSON per file (a single larger trace gets a file of its own).
//! Encrypted files are age files to X25519 recipients that `age -d -i
//! identity` decrypts; the server holds only recipients.

use std::io::{Read, Write};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use bytes::Bytes;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

use crate::time::{civil, format_file_time};

/// The most traces in one trace file.
pub const MAX_TRACES_PER_FILE: usize = 50_000;
/// The most bytes of JSON in one trace file (before compression).
pub const MAX_JSON_BYTES_PER_FILE: usize = 50_000_000;

/// `file_prefix_name` as the reference allows it: 0–64 letters, digits,
/// `-`, `_` and `.`, and not `.` or `..` (the names of directories, not the
/// start of a file's). The tracker API refuses what this refuses (CTS.0218).
pub fn is_valid_file_prefix(prefix: &str) -> bool {
    prefix.len() <= 64
        && prefix
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
        && prefix != "."
        && prefix != ".."
}

/// Where a tracker's files go inside its bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerPath {
    /// `obs_info.file_prefix_name`; may be empty.
    pub file_prefix: String,
    pub region: String,
    pub tracker_name: String,
}

impl TrackerPath {
    /// `CloudTraces/{region}`: everything of the region's trackers lies
    /// below it, whatever their prefix.
    pub fn region_root(&self) -> String {
        format!("CloudTraces/{}", self.region)
    }

    /// `{region_root}/{YYYY}/{M}/{D}/{tracker}` for the UTC day of `unix_secs`.
    pub fn day_dir(&self, unix_secs: i64) -> String {
        let c = civil(unix_secs);
        format!(
            "{}/{}/{}/{}/{}",
            self.region_root(),
            c.year(),
            c.month(),
            c.day(),
            self.tracker_name
        )
    }

    /// `{prefix}_` or nothing: how file names start.
    pub(crate) fn name_prefix(&self) -> String {
        if self.file_prefix.is_empty() {
            String::new()
        } else {
            format!("{}_", self.file_prefix)
        }
    }
}

/// A transfer period `[start, end)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

/// `compress_type` of a tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Json,
}

/// How a trace file is written, which decides its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileFormat {
    pub compression: Compression,
    pub encrypted: bool,
}

impl FileFormat {
    /// `.json.gz`, `.json`, `.json.gz.age` or `.json.age`.
    pub fn extension(&self) -> &'static str {
        match (self.compression, self.encrypted) {
            (Compression::Gzip, false) => ".json.gz",
            (Compression::Json, false) => ".json",
            (Compression::Gzip, true) => ".json.gz.age",
            (Compression::Json, true) => ".json.age",
        }
    }
}

/// The object key of part `part` of a period's trace file (module docs).
pub fn trace_file_key(
    path: &TrackerPath,
    project_id: &str,
    service: Option<&str>,
    period: Period,
    part: u32,
    format: FileFormat,
) -> String {
    let dir = match service {
        Some(service) => format!("{}/{service}", path.day_dir(period.end)),
        None => path.day_dir(period.end),
    };
    let suffix = Sha256::new()
        .chain_update(path.region.as_bytes())
        .chain_update([0])
        .chain_update(project_id.as_bytes())
        .chain_update([0])
        .chain_update(path.tracker_name.as_bytes())
        .chain_update([0])
        .chain_update(period.start.to_be_bytes())
        .chain_update(period.end.to_be_bytes())
        .chain_update(service.unwrap_or("").as_bytes())
        .chain_update([0])
        .chain_update(part.to_be_bytes())
        .finalize();
    format!(
        "{dir}/{}CloudTrace_{}-{project_id}_{}_{}{}",
        path.name_prefix(),
        path.region,
        format_file_time(period.end),
        hex::encode(&suffix[..8]),
        format.extension()
    )
}

/// What a trace or digest file's name says: the names of
/// [`trace_file_key`] and [`crate::digest_key`], read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName<'a> {
    /// `file_prefix_name`; `""` without one.
    pub file_prefix: &'a str,
    pub digest: bool,
    pub project_id: &'a str,
    /// The period end (trace file) or digest end in the name.
    pub time: i64,
}

const TRACE_MARK: &str = "CloudTrace_";
const DIGEST_MARK: &str = "CloudTrace-Digest_";
const EXTENSIONS: [&str; 4] = [".json", ".json.gz", ".json.age", ".json.gz.age"];

/// Reads a file name (the last segment of a key) of `region`; `None` when
/// it is not one of ours.
pub fn parse_object_name<'a>(name: &'a str, region: &str) -> Option<ObjectName<'a>> {
    // The last mark: a prefix may contain "CloudTrace" itself.
    let at = name.rfind("CloudTrace")?;
    let (head, tail) = name.split_at(at);
    let file_prefix = match head {
        "" => "",
        _ => head.strip_suffix('_').filter(|p| !p.is_empty())?,
    };
    let (digest, rest) = match tail.strip_prefix(DIGEST_MARK) {
        Some(rest) => (true, rest.strip_suffix(".json.gz")?),
        None => {
            let rest = tail.strip_prefix(TRACE_MARK)?;
            let dot = rest.find(".json")?;
            if !EXTENSIONS.contains(&&rest[dot..]) {
                return None;
            }
            let (stem, hex) = rest[..dot].rsplit_once('_')?;
            if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            (false, stem)
        }
    };
    let (project_id, time) = rest
        .strip_prefix(region)?
        .strip_prefix('-')?
        .split_once('_')?;
    Some(ObjectName {
        file_prefix,
        digest,
        project_id,
        time: crate::time::parse_file_time(time)?,
    })
}

/// Limits of one trace file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitLimits {
    pub max_traces: usize,
    pub max_json_bytes: usize,
}

impl Default for SplitLimits {
    fn default() -> Self {
        Self {
            max_traces: MAX_TRACES_PER_FILE,
            max_json_bytes: MAX_JSON_BYTES_PER_FILE,
        }
    }
}

/// How to write a tracker's trace files.
#[derive(Debug, Clone, Default)]
pub struct TraceFileOptions {
    pub compression: Compression,
    /// Encrypt to these recipients (`kms_id`'s key); none: not encrypted.
    pub recipients: Vec<AgeRecipient>,
    pub limits: SplitLimits,
    /// The part number of the first file: a period written in several
    /// calls (to bound memory) numbers its parts on.
    pub first_part: u32,
}

/// One trace file, ready to upload.
#[derive(Debug, Clone)]
pub struct TraceFile {
    pub key: String,
    pub part: u32,
    pub trace_count: usize,
    pub body: Bytes,
}

/// Errors of building or opening trace files.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("trace {index} is not one JSON value: {message}")]
    InvalidTrace { index: usize, message: String },
    #[error("invalid age recipient {0:?}: expected an X25519 recipient (age1…)")]
    InvalidRecipient(String),
    #[error("invalid age identity: {0}")]
    InvalidIdentity(String),
    #[error("age encryption failed: {0}")]
    Encrypt(String),
    #[error("{key} is encrypted: an age identity is needed to read it")]
    IdentityNeeded { key: String },
    #[error("cannot decrypt {key}: {message}")]
    Decrypt { key: String, message: String },
    #[error("cannot decompress {key}: {message}")]
    Decompress { key: String, message: String },
}

/// The trace files of one period (and service): `traces` are the stored
/// trace JSON documents, in the order they are to appear. Feeding the same
/// traces in the same order gives the same keys, so a retry after a crash
/// rewrites the same objects. No traces, no files.
pub fn build_trace_files<T: AsRef<[u8]>>(
    path: &TrackerPath,
    project_id: &str,
    service: Option<&str>,
    period: Period,
    traces: &[T],
    options: &TraceFileOptions,
) -> Result<Vec<TraceFile>, FileError> {
    for (index, trace) in traces.iter().enumerate() {
        serde_json::from_slice::<serde::de::IgnoredAny>(trace.as_ref()).map_err(|e| {
            FileError::InvalidTrace {
                index,
                message: e.to_string(),
            }
        })?;
    }
    let format = FileFormat {
        compression: options.compression,
        encrypted: !options.recipients.is_empty(),
    };
    split(traces, options.limits)
        .into_iter()
        .enumerate()
        .map(|(part, range)| {
            let part = options.first_part + u32::try_from(part).expect("fewer than 2^32 parts");
            let chunk = &traces[range];
            let body = match options.compression {
                Compression::Gzip => gzip_array(chunk),
                Compression::Json => json_array(chunk),
            };
            let body = if options.recipients.is_empty() {
                body
            } else {
                encrypt(&body, &options.recipients)?
            };
            Ok(TraceFile {
                key: trace_file_key(path, project_id, service, period, part, format),
                part,
                trace_count: chunk.len(),
                body: Bytes::from(body),
            })
        })
        .collect()
}

/// How many files [`build_trace_files`] makes of `traces`: a caller
/// writing a period in several calls numbers the next call's parts on.
pub fn file_count<T: AsRef<[u8]>>(traces: &[T], limits: SplitLimits) -> u32 {
    u32::try_from(split(traces, limits).len()).expect("fewer than 2^32 parts")
}

/// Cuts `traces` into consecutive runs within `limits`.
fn split<T: AsRef<[u8]>>(traces: &[T], limits: SplitLimits) -> Vec<std::ops::Range<usize>> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 2); // "[" and "]"
    for (i, trace) in traces.iter().enumerate() {
        let len = trace.as_ref().len() + usize::from(i > start); // the ","
        if i > start && (i - start == limits.max_traces || bytes + len > limits.max_json_bytes) {
            parts.push(start..i);
            (start, bytes) = (i, 2 + trace.as_ref().len());
        } else {
            bytes += len;
        }
    }
    if start < traces.len() {
        parts.push(start..traces.len());
    }
    parts
}

fn json_array<T: AsRef<[u8]>>(traces: &[T]) -> Vec<u8> {
    let len = traces.iter().map(|t| t.as_ref().len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(len);
    write_array(&mut out, traces).expect("writing to a Vec");
    out
}

/// The JSON array of `traces`, gzip'd as it is written: a file's text (up
/// to 50 MB) is never held whole beside its documents (the transfer builds
/// two files at once).
fn gzip_array<T: AsRef<[u8]>>(traces: &[T]) -> Vec<u8> {
    let encoder = GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
    // The compressor is fed in 64 KiB runs, not a call per trace.
    let mut writer = std::io::BufWriter::with_capacity(1 << 16, encoder);
    write_array(&mut writer, traces).expect("writing to a Vec");
    let encoder = writer.into_inner().expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

fn write_array<T: AsRef<[u8]>>(out: &mut impl Write, traces: &[T]) -> std::io::Result<()> {
    out.write_all(b"[")?;
    for (i, trace) in traces.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(trace.as_ref())?;
    }
    out.write_all(b"]")
}

/// The gzip level of trace files and digests. Measured on trace files
/// (`cts-bench --transfer`, 600,000 traces): level 2 compresses 1.7 times
/// as fast as the default 6 into files 16% larger; gzip was 95% of the
/// transfer's time, which at level 6 fell behind a saturated server's
/// ingest.
const GZIP_LEVEL: u32 = 2;

/// gzip at [`GZIP_LEVEL`] with a zero mtime, so equal input gives equal
/// output.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
    encoder.write_all(data).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

pub(crate) fn gunzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
}

/// An age X25519 recipient (`age1…`): a public key files are encrypted to.
#[derive(Clone)]
pub struct AgeRecipient(age::x25519::Recipient);

impl FromStr for AgeRecipient {
    type Err = FileError;
    fn from_str(s: &str) -> Result<Self, FileError> {
        age::x25519::Recipient::from_str(s.trim())
            .map(Self)
            .map_err(|_| FileError::InvalidRecipient(s.to_string()))
    }
}

impl std::fmt::Display for AgeRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for AgeRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgeRecipient({})", self.0)
    }
}

/// An age X25519 identity (`AGE-SECRET-KEY-1…`): decrypts files.
#[derive(Clone)]
pub struct AgeIdentity(age::x25519::Identity);

impl FromStr for AgeIdentity {
    type Err = FileError;
    /// Takes the key itself or the text of an identity file as `age-keygen`
    /// writes it (`#` comment lines, then the key).
    fn from_str(s: &str) -> Result<Self, FileError> {
        let key = s
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| FileError::InvalidIdentity("no key found".into()))?;
        age::x25519::Identity::from_str(key)
            .map(Self)
            .map_err(|e| FileError::InvalidIdentity(e.to_string()))
    }
}

impl AgeIdentity {
    /// The recipient that files for this identity are encrypted to.
    pub fn recipient(&self) -> AgeRecipient {
        AgeRecipient(self.0.to_public())
    }
}

impl std::fmt::Debug for AgeIdentity {
    // The secret key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgeIdentity({})", self.0.to_public())
    }
}

/// A new age key pair, as `age-keygen` would make it.
#[derive(Clone)]
pub struct AgeKeyPair {
    /// `AGE-SECRET-KEY-1…`: shown to its owner once, never stored.
    pub identity: String,
    /// `age1…`: what the server keeps and encrypts to.
    pub recipient: String,
}

impl std::fmt::Debug for AgeKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgeKeyPair")
            .field("recipient", &self.recipient)
            .finish_non_exhaustive()
    }
}

/// Generates an X25519 identity and its recipient.
pub fn generate_age_key() -> AgeKeyPair {
    let identity = age::x25519::Identity::generate();
    AgeKeyPair {
        identity: identity.to_string().expose_secret().to_string(),
        recipient: identity.to_public().to_string(),
    }
}

fn encrypt(plain: &[u8], recipients: &[AgeRecipient]) -> Result<Vec<u8>, FileError> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| &r.0 as &dyn age::Recipient))
            .map_err(|e| FileError::Encrypt(e.to_string()))?;
    let mut out = Vec::with_capacity(plain.len() + plain.len() / 4096 + 512);
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| FileError::Encrypt(e.to_string()))?;
    writer
        .write_all(plain)
        .and_then(|()| writer.finish().map(drop))
        .map_err(|e| FileError::Encrypt(e.to_string()))?;
    Ok(out)
}

/// The JSON array inside a trace file as stored under `key`: decrypted
/// (`.age`, with `identity`) and decompressed (`.gz`) as its name says.
pub fn open_trace_file(
    key: &str,
    bytes: &[u8],
    identity: Option<&AgeIdentity>,
) -> Result<Vec<u8>, FileError> {
    let (name, plain) = match key.strip_suffix(".age") {
        Some(name) => {
            let identity = identity.ok_or_else(|| FileError::IdentityNeeded {
                key: key.to_string(),
            })?;
            let plain = age::decrypt(&identity.0, bytes).map_err(|e| FileError::Decrypt {
                key: key.to_string(),
                message: e.to_string(),
            })?;
            (name, plain)
        }
        None => (key, bytes.to_vec()),
    };
    if name.ends_with(".gz") {
        gunzip(&plain).map_err(|e| FileError::Decompress {
            key: key.to_string(),
            message: e.to_string(),
        })
    } else {
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(prefix: &str) -> TrackerPath {
        TrackerPath {
            file_prefix: prefix.into(),
            region: "eu-de".into(),
            tracker_name: "system".into(),
        }
    }

    // 2016-05-30T16:20:56Z, the reference's example, as the period end.
    const END: i64 = 1_464_625_256;
    const PERIOD: Period = Period {
        start: END - 300,
        end: END,
    };

    #[test]
    fn names_follow_the_reference() {
        let key = trace_file_key(
            &path("logs"),
            "p1",
            Some("ECS"),
            PERIOD,
            0,
            FileFormat::default(),
        );
        let (dir, name) = key.rsplit_once('/').unwrap();
        assert_eq!(dir, "CloudTraces/eu-de/2016/5/30/system/ECS");
        let hex = name
            .strip_prefix("logs_CloudTrace_eu-de-p1_2016-05-30T16-20-56Z_")
            .and_then(|n| n.strip_suffix(".json.gz"))
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(hex.len(), 16);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));

        // The suffix is fixed by (tracker, period, service, part)…
        let again = trace_file_key(
            &path("logs"),
            "p1",
            Some("ECS"),
            PERIOD,
            0,
            FileFormat::default(),
        );
        assert_eq!(key, again);
        // …and differs when any of them does.
        let other_part = trace_file_key(
            &path("logs"),
            "p1",
            Some("ECS"),
            PERIOD,
            1,
            FileFormat::default(),
        );
        let other_service = trace_file_key(
            &path("logs"),
            "p1",
            Some("EVS"),
            PERIOD,
            0,
            FileFormat::default(),
        );
        let other_period = trace_file_key(
            &path("logs"),
            "p1",
            Some("ECS"),
            Period {
                start: END,
                end: END + 300,
            },
            0,
            FileFormat::default(),
        );
        let suffix = |k: &str| k[k.len() - 24..k.len() - 8].to_string();
        for other in [other_part, other_service, other_period] {
            assert_ne!(suffix(&key), suffix(&other));
        }
    }

    #[test]
    fn names_without_prefix_service_or_compression() {
        let key = trace_file_key(
            &path(""),
            "p1",
            None,
            Period {
                start: 0,
                end: 1_704_067_200 + 9 * 3600 + 5,
            }, // 2024-01-01T09:00:05Z
            0,
            FileFormat {
                compression: Compression::Json,
                encrypted: true,
            },
        );
        let (dir, name) = key.rsplit_once('/').unwrap();
        assert_eq!(dir, "CloudTraces/eu-de/2024/1/1/system");
        assert!(
            name.starts_with("CloudTrace_eu-de-p1_2024-01-01T09-00-05Z_"),
            "{name}"
        );
        assert!(name.ends_with(".json.age"), "{name}");
        assert_eq!(FileFormat::default().extension(), ".json.gz");
        let gz_age = FileFormat {
            compression: Compression::Gzip,
            encrypted: true,
        };
        assert_eq!(gz_age.extension(), ".json.gz.age");
    }

    #[test]
    fn names_read_back() {
        let formats = [false, true].into_iter().flat_map(|encrypted| {
            [Compression::Gzip, Compression::Json].map(|compression| FileFormat {
                compression,
                encrypted,
            })
        });
        for (prefix, format) in ["", "logs", "a_b", "x_CloudTrace"]
            .into_iter()
            .flat_map(|p| formats.clone().map(move |f| (p, f)))
        {
            let trace = trace_file_key(&path(prefix), "p1", Some("ECS"), PERIOD, 3, format);
            let digest = crate::digest_key(&path(prefix), "p1", None, END);
            for (key, is_digest) in [(trace, false), (digest, true)] {
                let name = key.rsplit_once('/').unwrap().1;
                let expected = ObjectName {
                    file_prefix: prefix,
                    digest: is_digest,
                    project_id: "p1",
                    time: END,
                };
                assert_eq!(parse_object_name(name, "eu-de"), Some(expected), "{name}");
            }
        }
        for other in [
            "logs_CloudTrace_eu-nl-p1_2016-05-30T16-20-56Z_21d36ced8c8af71e.json.gz",
            "_CloudTrace_eu-de-p1_2016-05-30T16-20-56Z_21d36ced8c8af71e.json.gz",
            "logs_CloudTrace_eu-de-p1_2016-05-30T16-20-56Z_21d36ced8c8af71e.json.zip",
            "logs_CloudTrace_eu-de-p1_2016-05-30T16-20-56Z_21d36c.json.gz",
            "logs_CloudTrace-Digest_eu-de-p1_2016-05-30T16-20-56Z.json",
            "logs_CloudTrace_eu-de-p1_yesterday_21d36ced8c8af71e.json.gz",
            "notes.txt",
        ] {
            assert_eq!(parse_object_name(other, "eu-de"), None, "{other}");
        }
    }

    #[test]
    fn split_by_count_and_size() {
        let traces: Vec<String> = (0..10).map(|i| format!("{{\"n\":{i}}}")).collect(); // 7 bytes each
        let by_count = SplitLimits {
            max_traces: 4,
            max_json_bytes: usize::MAX,
        };
        assert_eq!(split(&traces, by_count), vec![0..4, 4..8, 8..10]);
        // "[" + 3 * 7 + 2 commas + "]" = 25 bytes fit; a fourth does not.
        let by_size = SplitLimits {
            max_traces: 100,
            max_json_bytes: 25,
        };
        assert_eq!(split(&traces, by_size), vec![0..3, 3..6, 6..9, 9..10]);
        assert_eq!(json_array(&traces[0..3]).len(), 25);
        // A trace above the limit still gets a file of its own.
        let big = vec!["1".to_string(), "x".repeat(100), "2".to_string()];
        let tiny = SplitLimits {
            max_traces: 100,
            max_json_bytes: 10,
        };
        assert_eq!(split(&big, tiny), vec![0..1, 1..2, 2..3]);
        assert!(split::<String>(&[], SplitLimits::default()).is_empty());
        let defaults = SplitLimits::default();
        assert_eq!(
            (defaults.max_traces, defaults.max_json_bytes),
            (50_000, 50_000_000)
        );
    }

    #[test]
    fn gzip_round_trip_and_parts() {
        let traces: Vec<String> = (0..5)
            .map(|i| format!("{{\"trace_id\":\"t{i}\",\"service_type\":\"ECS\"}}"))
            .collect();
        let options = TraceFileOptions {
            limits: SplitLimits {
                max_traces: 2,
                max_json_bytes: usize::MAX,
            },
            ..TraceFileOptions::default()
        };
        let files =
            build_trace_files(&path("logs"), "p1", Some("ECS"), PERIOD, &traces, &options).unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(
            files
                .iter()
                .map(|f| (f.part, f.trace_count))
                .collect::<Vec<_>>(),
            vec![(0, 2), (1, 2), (2, 1)]
        );
        let mut all = Vec::new();
        for f in &files {
            assert_eq!(&f.body[..2], &[0x1f, 0x8b], "gzip magic");
            let json = open_trace_file(&f.key, &f.body, None).unwrap();
            let values: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
            all.extend(values);
        }
        let expected: Vec<serde_json::Value> = traces
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        assert_eq!(all, expected);
        // Files larger than the compressor's 64 KiB runs hold the same text.
        let big: Vec<String> = (0..500)
            .map(|i| format!("{{\"trace_id\":\"t{i}\",\"detail\":\"{}\"}}", "x".repeat(i)))
            .collect();
        let big_files = build_trace_files(
            &path("logs"),
            "p1",
            None,
            PERIOD,
            &big,
            &TraceFileOptions::default(),
        )
        .unwrap();
        assert_eq!(big_files.len(), 1);
        let json = open_trace_file(&big_files[0].key, &big_files[0].body, None).unwrap();
        assert!(json.len() > 1 << 16, "{}", json.len());
        assert_eq!(json, json_array(&big));
        // Deterministic bytes: the same traces, the same file.
        let again =
            build_trace_files(&path("logs"), "p1", Some("ECS"), PERIOD, &traces, &options).unwrap();
        assert_eq!(again[0].body, files[0].body);

        let plain = TraceFileOptions {
            compression: Compression::Json,
            ..TraceFileOptions::default()
        };
        let files = build_trace_files(&path("logs"), "p1", None, PERIOD, &traces, &plain).unwrap();
        assert_eq!(files.len(), 1);
        assert!(files[0].key.ends_with(".json"));
        assert_eq!(files[0].body[0], b'[');

        let none = build_trace_files::<String>(&path("logs"), "p1", None, PERIOD, &[], &plain);
        assert!(none.unwrap().is_empty());
        let bad = build_trace_files(&path("logs"), "p1", None, PERIOD, &["{}", "{"], &plain);
        assert!(matches!(bad, Err(FileError::InvalidTrace { index: 1, .. })));
    }

    #[test]
    fn age_round_trip() {
        let pair = generate_age_key();
        assert!(pair.identity.starts_with("AGE-SECRET-KEY-1"));
        assert!(pair.recipient.starts_with("age1"));
        let identity: AgeIdentity = format!(
            "# created: now\n# public key: {}\n{}\n",
            pair.recipient, pair.identity
        )
        .parse()
        .unwrap();
        assert_eq!(identity.recipient().to_string(), pair.recipient);
        assert!(!format!("{identity:?}{pair:?}").contains("SECRET"));

        let options = TraceFileOptions {
            recipients: vec![pair.recipient.parse().unwrap()],
            ..TraceFileOptions::default()
        };
        let traces = ["{\"a\":1}", "{\"b\":2}"];
        let files =
            build_trace_files(&path("logs"), "p1", Some("ECS"), PERIOD, &traces, &options).unwrap();
        let file = &files[0];
        assert!(file.key.ends_with(".json.gz.age"));
        assert!(file.body.starts_with(b"age-encryption.org/v1\n"));
        assert_eq!(
            open_trace_file(&file.key, &file.body, Some(&identity)).unwrap(),
            b"[{\"a\":1},{\"b\":2}]"
        );
        assert!(matches!(
            open_trace_file(&file.key, &file.body, None),
            Err(FileError::IdentityNeeded { .. })
        ));
        let stranger: AgeIdentity = generate_age_key().identity.parse().unwrap();
        assert!(matches!(
            open_trace_file(&file.key, &file.body, Some(&stranger)),
            Err(FileError::Decrypt { .. })
        ));

        assert!("age1notakey".parse::<AgeRecipient>().is_err());
        assert!("ssh-ed25519 AAAA".parse::<AgeRecipient>().is_err());
        assert!("AGE-SECRET-KEY-1XYZ".parse::<AgeIdentity>().is_err());
    }
}
