//! Offline verification of one tracker's files with nothing but the digest
//! public keys: what `cts verify` runs.
//!
//! For the digests whose end time lies in the range:
//!
//! 1. Each digest is read, its recorded location (`digest_bucket`,
//!    `digest_object`) compared with where it was found, and its
//!    `meta-signature` checked over the reference's signing string with the
//!    key its `digest_public_key_fingerprint` names, which must have been
//!    valid at its `digest_end_time`.
//! 2. Per chain (service directory), in time order, each digest's
//!    `previous_digest_*` must describe the digest before it: its location,
//!    the SHA-256 of its bytes, its signature and `digest_end`. A named
//!    previous digest that is gone is a missing digest; the gap to the
//!    digest before it estimates how many are missing. A starting digest
//!    after a non-ending one, or a previous digest other than the one
//!    before in time, breaks the chain (reordering, a deleted chain head).
//! 3. Each listed trace file's bytes are hashed (SHA-256 of the object as
//!    stored: encrypted files are not decrypted, the hash is over what was
//!    uploaded) and compared with `log_hash_value`. A listed file that is
//!    gone, or holds other bytes, may have been moved: the same bytes
//!    under a key no digest lists, or under another listed key, are
//!    reported as a move.
//! 4. Trace files of the tracker that no digest lists are added files when
//!    their time lies in the span the chain covers, and part of a missing
//!    digest's finding when it lies in a gap. After the newest digest of
//!    their chain, or in a chain without digests, they are "pending" (not
//!    a finding) while their digest is not due yet
//!    ([`VerifyOptions::digest_due_secs`] after the file's time, counted
//!    back from the range end), and in a gap once it is. Before a file is
//!    called added, the validly signed digests after the range are
//!    searched for it: a file uploaded late (after a bucket outage) is
//!    listed by the digest of its upload.
//!
//! Everything of the region prefix is listed once and filtered by the
//! tracker's path, so the range costs downloads, not listings.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Deserializer, Serialize};

use crate::digest::{
    parse_digest, sha256_hex, signing_string, DigestError, DigestFile, META_SIGNATURE,
};
use crate::files::{parse_object_name, TrackerPath};
use crate::keys::{KeyError, VerifyingKey};
use crate::store::{ObjectStorage, StoreError};
use crate::time::{format_file_time, parse_rfc3339_utc};

/// One entry of `GET /v3/{project_id}/digest-public-keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicKeyInfo {
    pub fingerprint: String,
    /// PEM (`BEGIN PUBLIC KEY`).
    pub public_key: String,
    /// RFC 3339 UTC (`2026-11-01T00:00:00Z`) or Unix milliseconds.
    #[serde(default, deserialize_with = "key_time")]
    pub valid_from: Option<i64>,
    /// As `valid_from`; `null` or absent: still in use.
    #[serde(default, deserialize_with = "key_time")]
    pub valid_to: Option<i64>,
}

/// Reads a key validity time into Unix seconds.
fn key_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(i64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Millis(ms)) => Ok(Some(ms.div_euclid(1000))),
        Some(Raw::Text(s)) => parse_rfc3339_utc(&s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an RFC 3339 UTC time"))),
    }
}

/// The public keys a verification trusts, by fingerprint.
#[derive(Debug, Clone)]
pub struct PublicKeySet {
    keys: HashMap<String, (VerifyingKey, Option<i64>, Option<i64>)>,
}

impl PublicKeySet {
    /// Checks each key and that its fingerprint is its own.
    pub fn new(entries: Vec<PublicKeyInfo>) -> Result<Self, VerifyError> {
        let mut keys = HashMap::new();
        for entry in entries {
            let key = VerifyingKey::from_pem(&entry.public_key).map_err(|source| {
                VerifyError::BadKey {
                    fingerprint: entry.fingerprint.clone(),
                    source,
                }
            })?;
            if key.fingerprint() != entry.fingerprint.to_ascii_lowercase() {
                return Err(VerifyError::FingerprintMismatch {
                    listed: entry.fingerprint,
                    actual: key.fingerprint().to_string(),
                });
            }
            keys.insert(
                key.fingerprint().to_string(),
                (key, entry.valid_from, entry.valid_to),
            );
        }
        Ok(Self { keys })
    }

    /// Reads `{"keys": [...]}` as the server answers it.
    pub fn from_json(json: &str) -> Result<Self, VerifyError> {
        #[derive(Deserialize)]
        struct Keys {
            keys: Vec<PublicKeyInfo>,
        }
        let keys: Keys =
            serde_json::from_str(json).map_err(|e| VerifyError::KeysJson(e.to_string()))?;
        Self::new(keys.keys)
    }

    /// The key with this fingerprint, if it was valid at `at`.
    fn key_at(&self, fingerprint: &str, at: i64) -> Result<&VerifyingKey, String> {
        let (key, from, to) = self.keys.get(fingerprint).ok_or_else(|| {
            format!(
                "signed with unknown key {fingerprint}: the public keys file may be older \
                     than the signing key (keys rotate); fetch GET \
                     /v3/{{project_id}}/digest-public-keys again"
            )
        })?;
        if from.is_some_and(|f| at < f) || to.is_some_and(|t| at > t) {
            return Err(format!(
                "key {fingerprint} was not valid at {}",
                format_file_time(at)
            ));
        }
        Ok(key)
    }
}

/// What to verify besides the tracker.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// Digests ending at or after this Unix second (default: all).
    pub from: Option<i64>,
    /// Digests ending at or before this Unix second (default: all). With
    /// it, a chain whose newest digest is older than two digest periods
    /// before `to`, and not an ending digest, is reported as missing its
    /// newest digests, and a trace file no digest lists is pending or in a
    /// gap by whether its digest was due at `to`. Without it, such files
    /// after a chain's newest digest are pending, and those of a chain
    /// without digests are in a gap.
    pub to: Option<i64>,
    /// How long a digest normally covers (`transfer.digest_period`): for
    /// estimating how many digests a gap is missing.
    pub digest_period_secs: i64,
}

/// How late a digest may be written after its window ends, at most: the
/// transfer's grace, retries after a failed write, a slow pass.
const DIGEST_LATENESS_SECS: i64 = 300;

impl VerifyOptions {
    /// How long after a trace file's time the digest listing it is due: it
    /// ends within one digest period of the file (the window holding it),
    /// and is written once that window is over, allowing for lateness (at
    /// most one period).
    pub fn digest_due_secs(&self) -> i64 {
        self.digest_period_secs + self.digest_lateness_secs()
    }

    /// How late a digest may be written after its window ends.
    pub fn digest_lateness_secs(&self) -> i64 {
        self.digest_period_secs.min(DIGEST_LATENESS_SECS)
    }

    /// Whether the digest of a trace file of `time` should exist by the
    /// range end (without one: cannot tell, `None`).
    fn digest_due(&self, time: i64) -> Option<bool> {
        self.to.map(|to| time + self.digest_due_secs() <= to)
    }
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            from: None,
            to: None,
            digest_period_secs: 3600,
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// A listed trace file holds other bytes than its digest recorded.
    FileAltered {
        key: String,
        digest: String,
        expected_hash: String,
        actual_hash: String,
    },
    /// A listed trace file is gone.
    FileDeleted { key: String, digest: String },
    /// A listed trace file's bytes are under another key.
    FileMoved {
        from: String,
        to: String,
        digest: String,
    },
    /// A trace file in the span the digests cover that none of them lists.
    FileAdded { key: String },
    /// Digests are missing from a chain. `key` is the missing digest when a
    /// later one names it; `unverified_files` are the trace files of the gap.
    DigestMissing {
        key: Option<String>,
        previous: Option<String>,
        next: Option<String>,
        gap_start: Option<String>,
        gap_end: Option<String>,
        estimated_count: i64,
        unverified_files: Vec<String>,
    },
    /// A digest's bytes are not a digest, or not the ones the next digest
    /// recorded.
    DigestAltered { key: String, reason: String },
    /// A digest's signature is missing, wrong, or by a key that was not
    /// valid then.
    DigestBadSignature { key: String, reason: String },
    /// A digest is not where it says it was written.
    DigestMoved {
        key: String,
        recorded_bucket: String,
        recorded_object: String,
    },
    /// A digest does not link to the one before it in time.
    ChainBroken { key: String, reason: String },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FileAltered { key, digest, .. } => {
                write!(f, "altered: {key} (hash differs from {digest})")
            }
            Self::FileDeleted { key, digest } => write!(f, "deleted: {key} (listed in {digest})"),
            Self::FileMoved { from, to, .. } => write!(f, "moved: {from} is now {to}"),
            Self::FileAdded { key } => write!(f, "added: {key} (in no digest)"),
            Self::DigestMissing {
                key,
                gap_start,
                gap_end,
                estimated_count,
                unverified_files,
                ..
            } => {
                write!(f, "digest missing: ")?;
                if let Some(key) = key {
                    write!(f, "{key}, ")?;
                }
                write!(
                    f,
                    "about {estimated_count} {}",
                    gap_text(gap_start.as_deref(), gap_end.as_deref())
                )?;
                if !unverified_files.is_empty() {
                    write!(f, "; {} trace files unverifiable", unverified_files.len())?;
                }
                Ok(())
            }
            Self::DigestAltered { key, reason } => write!(f, "digest altered: {key}: {reason}"),
            Self::DigestBadSignature { key, reason } => {
                write!(f, "digest signature invalid: {key}: {reason}")
            }
            Self::DigestMoved {
                key,
                recorded_bucket,
                recorded_object,
            } => write!(
                f,
                "digest moved: {key} was written as {recorded_bucket}/{recorded_object}"
            ),
            Self::ChainBroken { key, reason } => write!(f, "chain broken at {key}: {reason}"),
        }
    }
}

/// Where a gap of a chain lies, in words: `between A and B`, or what is
/// known of it when a bound is missing (a chain's first or newest digests).
pub fn gap_text(start: Option<&str>, end: Option<&str>) -> String {
    match (start, end) {
        (Some(s), Some(e)) if s != e => format!("between {s} and {e}"),
        (Some(s), Some(_)) => format!("at {s}"),
        (Some(s), None) => format!("after {s}"),
        (None, Some(e)) => format!("before {e}"),
        (None, None) => "at an unknown time".to_string(),
    }
}

/// The outcome of [`verify_tracker`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub digests_checked: usize,
    pub files_checked: usize,
    pub findings: Vec<Finding>,
    /// Trace files newer than the newest digest of their chain: not a
    /// finding, their digest is yet to come.
    pub pending_files: Vec<String>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Why verification could not run at all (findings are not errors).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("public key {fingerprint}: {source}")]
    BadKey {
        fingerprint: String,
        #[source]
        source: KeyError,
    },
    #[error("public key listed as {listed} has fingerprint {actual}")]
    FingerprintMismatch { listed: String, actual: String },
    #[error("public keys: {0}")]
    KeysJson(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An object of the tracker, recognised by its key.
#[derive(Debug, Clone)]
struct Parsed {
    key: String,
    digest: bool,
    /// The chain: the service directory, if any.
    chain: Option<String>,
    /// The time in the name: period end or digest end.
    time: i64,
}

/// Recognises `{Y}/{M}/{D}/{tracker}/[Digest/][{service}/]{name}` below the
/// region root, named with the tracker's prefix: trackers differing only in
/// their prefix share the directories.
fn parse_key(root: &str, path: &TrackerPath, key: &str) -> Option<Parsed> {
    let rest = key.strip_prefix(root)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() < 5 || parts[3] != path.tracker_name {
        return None;
    }
    let after = &parts[4..];
    let (digest, chain, name) = match after {
        ["Digest", name] => (true, None, *name),
        ["Digest", service, name] => (true, Some(*service), *name),
        [name] => (false, None, *name),
        [service, name] => (false, Some(*service), *name),
        _ => return None,
    };
    let named = parse_object_name(name, &path.region)?;
    if named.digest != digest || named.file_prefix != path.file_prefix {
        return None;
    }
    Some(Parsed {
        key: key.to_string(),
        digest,
        chain: chain.map(str::to_string),
        time: named.time,
    })
}

/// A digest in range as read.
struct ReadDigest {
    parsed: Parsed,
    hash: String,
    signature: Option<String>,
    content: Option<DigestFile>,
}

/// Reads a digest: its hash, signature and content (`None` with the reason
/// when it is not a digest file).
async fn read_digest(
    storage: &ObjectStorage,
    bucket: &str,
    parsed: &Parsed,
) -> Result<(ReadDigest, Option<DigestError>), StoreError> {
    let body = storage.get(bucket, &parsed.key).await?;
    let head = storage.head(bucket, &parsed.key).await?;
    let (content, unreadable) = match parse_digest(&body) {
        Ok(d) => (Some(d), None),
        Err(e) => (None, Some(e)),
    };
    let read = ReadDigest {
        parsed: parsed.clone(),
        hash: sha256_hex(&body),
        signature: head.metadata.get(META_SIGNATURE).cloned(),
        content,
    };
    Ok((read, unreadable))
}

/// Verifies `path`'s files in `bucket` (module docs).
pub async fn verify_tracker(
    storage: &ObjectStorage,
    bucket: &str,
    path: &TrackerPath,
    keys: &PublicKeySet,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let root = path.region_root();
    let in_range =
        |t: i64| options.from.is_none_or(|f| t >= f) && options.to.is_none_or(|to| t <= to);
    let objects: Vec<Parsed> = storage
        .list(bucket, &root)
        .await?
        .into_iter()
        .filter_map(|o| parse_key(&root, path, &o.key))
        .collect();
    let existing: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let mut report = VerifyReport::default();

    // 1. Read and check each digest in range.
    let mut digests: BTreeMap<String, ReadDigest> = BTreeMap::new();
    for parsed in objects.iter().filter(|o| o.digest && in_range(o.time)) {
        let (read, unreadable) = read_digest(storage, bucket, parsed).await?;
        if let Some(e) = unreadable {
            report.findings.push(Finding::DigestAltered {
                key: parsed.key.clone(),
                reason: e.to_string(),
            });
        }
        if let Some(d) = &read.content {
            check_digest(bucket, &read, d, keys, &mut report.findings);
        }
        digests.insert(parsed.key.clone(), read);
    }
    report.digests_checked = digests.len();

    // 2. The chains.
    let mut chains: BTreeMap<Option<String>, Vec<Link>> = BTreeMap::new();
    for read in digests.values() {
        if let Some(d) = &read.content {
            let end = d.end_time().unwrap_or(read.parsed.time);
            chains
                .entry(read.parsed.chain.clone())
                .or_default()
                .push(Link {
                    read,
                    d,
                    start: d.start_time().unwrap_or(end),
                    end,
                });
        }
    }
    let mut gaps: Vec<Gap> = Vec::new();
    for (chain, links) in &mut chains {
        links.sort_by(|a, b| (a.end, &a.read.parsed.key).cmp(&(b.end, &b.read.parsed.key)));
        let mut before: Option<&Link> = None;
        for link in links.iter() {
            let (key, d) = (&link.read.parsed.key, link.d);
            let named = d.previous_digest_object.as_str();
            let foreign =
                !d.previous_digest_bucket.is_empty() && d.previous_digest_bucket != bucket;
            if named.is_empty() {
                if let Some(b) = before.filter(|b| !b.d.digest_end) {
                    report.findings.push(Finding::ChainBroken {
                        key: key.clone(),
                        reason: format!(
                            "a starting digest after {}, which was not an ending digest",
                            b.read.parsed.key
                        ),
                    });
                }
            } else if foreign {
                // The chain came from another bucket: nothing here to compare.
            } else if !existing.contains(named) {
                // Gone. Only in range (by its name's time) is it our business.
                let named_time = parse_key(&root, path, named).map(|p| p.time);
                if named_time.is_none_or(in_range) {
                    let gap_start = before.map(|b| b.end);
                    gaps.push(Gap {
                        chain: chain.clone(),
                        start: gap_start,
                        end: link.start,
                        finding: report.findings.len(),
                    });
                    report.findings.push(Finding::DigestMissing {
                        key: Some(named.to_string()),
                        previous: before.map(|b| b.read.parsed.key.clone()),
                        next: Some(key.clone()),
                        gap_start: gap_start.map(format_file_time),
                        gap_end: Some(format_file_time(link.start)),
                        estimated_count: estimate(
                            gap_start,
                            link.start,
                            options.digest_period_secs,
                        ),
                        unverified_files: Vec::new(),
                    });
                }
            } else {
                if let Some(prev) = digests.get(named) {
                    check_link(key, d, prev, &mut report.findings);
                }
                if let Some(b) = before.filter(|b| b.read.parsed.key != named) {
                    report.findings.push(Finding::ChainBroken {
                        key: key.clone(),
                        reason: format!(
                            "links to {named}, but the digest before it is {}",
                            b.read.parsed.key
                        ),
                    });
                }
            }
            before = Some(link);
        }
        // The newest digests may be what is gone.
        if let (Some(to), Some(last)) = (options.to, links.last()) {
            if !last.d.digest_end && to - last.end > 2 * options.digest_period_secs {
                gaps.push(Gap {
                    chain: chain.clone(),
                    start: Some(last.end),
                    end: to,
                    finding: report.findings.len(),
                });
                report.findings.push(Finding::DigestMissing {
                    key: None,
                    previous: Some(last.read.parsed.key.clone()),
                    next: None,
                    gap_start: Some(format_file_time(last.end)),
                    gap_end: Some(format_file_time(to)),
                    estimated_count: estimate(Some(last.end), to, options.digest_period_secs),
                    unverified_files: Vec::new(),
                });
            }
        }
    }

    // 3. The listed trace files.
    struct Listed<'a> {
        object: &'a str,
        bucket: &'a str,
        expected: &'a str,
        digest: &'a str,
    }
    let listed: Vec<Listed> = digests
        .values()
        .filter_map(|r| r.content.as_ref().map(|d| (r, d)))
        .flat_map(|(r, d)| {
            d.log_files.iter().map(move |f| Listed {
                object: &f.object,
                bucket: &f.bucket,
                expected: &f.log_hash_value,
                digest: &r.parsed.key,
            })
        })
        .collect();
    let listed_keys: HashSet<&str> = listed.iter().map(|l| l.object).collect();
    let mut actual: HashMap<&str, Option<String>> = HashMap::new();
    for l in &listed {
        let hash = match storage.get(l.bucket, l.object).await {
            Ok(bytes) => Some(sha256_hex(&bytes)),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        actual.insert(l.object, hash);
    }
    report.files_checked = listed.len();

    // Unlisted trace files of the tracker, by chain.
    let mut unlisted: Vec<&Parsed> = objects
        .iter()
        .filter(|o| !o.digest && !listed_keys.contains(o.key.as_str()))
        .collect();
    let any_missing = listed.iter().any(|l| actual[l.object].is_none());
    let mut unlisted_by_hash: HashMap<String, &str> = HashMap::new();
    if any_missing {
        for o in &unlisted {
            let bytes = storage.get(bucket, &o.key).await?;
            unlisted_by_hash.insert(sha256_hex(&bytes), &o.key);
        }
    }
    let listed_by_hash: HashMap<&str, &str> =
        listed.iter().map(|l| (l.expected, l.object)).collect();
    let mut moved_to: HashSet<&str> = HashSet::new();
    for l in &listed {
        match actual[l.object].as_deref() {
            Some(hash) if hash == l.expected => {}
            Some(hash) => match listed_by_hash.get(hash).filter(|&&k| k != l.object) {
                Some(&from) => report.findings.push(Finding::FileMoved {
                    from: from.to_string(),
                    to: l.object.to_string(),
                    digest: l.digest.to_string(),
                }),
                None => report.findings.push(Finding::FileAltered {
                    key: l.object.to_string(),
                    digest: l.digest.to_string(),
                    expected_hash: l.expected.to_string(),
                    actual_hash: hash.to_string(),
                }),
            },
            None => {
                if let Some(&to) = unlisted_by_hash.get(l.expected) {
                    moved_to.insert(to);
                    report.findings.push(Finding::FileMoved {
                        from: l.object.to_string(),
                        to: to.to_string(),
                        digest: l.digest.to_string(),
                    });
                } else if !listed.iter().any(|o| {
                    o.object != l.object && actual[o.object].as_deref() == Some(l.expected)
                }) {
                    // (Found under another listed key: reported as that move.)
                    report.findings.push(Finding::FileDeleted {
                        key: l.object.to_string(),
                        digest: l.digest.to_string(),
                    });
                }
            }
        }
    }
    unlisted.retain(|o| !moved_to.contains(o.key.as_str()));

    // 4. Unlisted files: added, in a gap, or pending.
    let mut uncovered: BTreeMap<Option<String>, Vec<&Parsed>> = BTreeMap::new();
    // After the newest digest of their chain, which should exist by now.
    let mut overdue: BTreeMap<Option<String>, Vec<&Parsed>> = BTreeMap::new();
    let mut added: Vec<&Parsed> = Vec::new();
    for o in unlisted {
        let gap = gaps
            .iter()
            .find(|g| g.chain == o.chain && g.start.is_none_or(|s| o.time > s) && o.time <= g.end);
        if let Some(gap) = gap {
            if let Finding::DigestMissing {
                unverified_files, ..
            } = &mut report.findings[gap.finding]
            {
                unverified_files.push(o.key.clone());
            }
            continue;
        }
        let due = options.digest_due(o.time);
        match chains
            .get(&o.chain)
            .and_then(|l| Some((l.first()?, l.last()?)))
        {
            // After an ending digest no digest is to come.
            Some((_, last)) if o.time > last.end && !last.d.digest_end && due == Some(true) => {
                overdue.entry(o.chain.clone()).or_default().push(o)
            }
            Some((_, last)) if o.time > last.end => report.pending_files.push(o.key.clone()),
            Some((first, _)) if o.time > first.start => added.push(o),
            Some(_) => {} // Before the range: an earlier digest's business.
            // A new chain's first digest is not due yet.
            None if in_range(o.time) && due == Some(false) => {
                report.pending_files.push(o.key.clone())
            }
            None if in_range(o.time) => uncovered.entry(o.chain.clone()).or_default().push(o),
            None => {}
        }
    }
    // A file uploaded late (after a bucket outage) is listed by a digest
    // after the range: only validly signed ones count.
    if !added.is_empty() {
        let later = objects
            .iter()
            .filter(|o| o.digest && options.to.is_some_and(|to| o.time > to));
        for parsed in later {
            let (read, _) = read_digest(storage, bucket, parsed).await?;
            let Some(d) = &read.content else { continue };
            let mut problems = Vec::new();
            check_digest(bucket, &read, d, keys, &mut problems);
            if problems.is_empty() {
                added.retain(|o| !d.log_files.iter().any(|f| f.object == o.key));
            }
            if added.is_empty() {
                break;
            }
        }
    }
    report.findings.extend(
        added
            .into_iter()
            .map(|o| Finding::FileAdded { key: o.key.clone() }),
    );
    let period = options.digest_period_secs;
    // The digests after the newest one, up to the window of the newest
    // overdue file (windows follow each other from the newest digest's end).
    for (chain, files) in overdue {
        let last = chains[&chain].last().expect("a chain with digests");
        let newest = files.iter().map(|o| o.time).max().unwrap_or(last.end);
        let count = (newest - last.end + period - 1)
            .div_euclid(period.max(1))
            .max(1);
        report.findings.push(Finding::DigestMissing {
            key: None,
            previous: Some(last.read.parsed.key.clone()),
            next: None,
            gap_start: Some(format_file_time(last.end)),
            gap_end: Some(format_file_time(last.end + count * period)),
            estimated_count: count,
            unverified_files: files.into_iter().map(|o| o.key.clone()).collect(),
        });
    }
    // Files in range of a chain without a single digest: nothing vouches
    // for them (validation off, or every digest deleted). The digests that
    // would list them cover windows of one period holding their times.
    for files in uncovered.into_values() {
        let first = files.iter().map(|o| o.time).min().unwrap_or_default();
        let last = files.iter().map(|o| o.time).max().unwrap_or_default();
        report.findings.push(Finding::DigestMissing {
            key: None,
            previous: None,
            next: None,
            gap_start: Some(format_file_time(first - period)),
            gap_end: Some(format_file_time(last + period)),
            estimated_count: (last - first).div_euclid(period.max(1)) + 1,
            unverified_files: files.into_iter().map(|o| o.key.clone()).collect(),
        });
    }
    Ok(report)
}

/// A digest of a chain, with its times.
struct Link<'a> {
    read: &'a ReadDigest,
    d: &'a DigestFile,
    start: i64,
    end: i64,
}

/// A stretch of a chain without digests, and its finding.
struct Gap {
    chain: Option<String>,
    start: Option<i64>,
    end: i64,
    finding: usize,
}

/// About how many digests of `period` fit between `start` and `end`.
fn estimate(start: Option<i64>, end: i64, period: i64) -> i64 {
    match start {
        Some(start) if period > 0 => ((end - start + period / 2) / period).max(1),
        _ => 1,
    }
}

/// Location and signature of one digest.
fn check_digest(
    bucket: &str,
    read: &ReadDigest,
    d: &DigestFile,
    keys: &PublicKeySet,
    findings: &mut Vec<Finding>,
) {
    let key = &read.parsed.key;
    if d.digest_bucket != bucket || d.digest_object != *key {
        findings.push(Finding::DigestMoved {
            key: key.clone(),
            recorded_bucket: d.digest_bucket.clone(),
            recorded_object: d.digest_object.clone(),
        });
    }
    let verdict = (|| {
        let signature = read
            .signature
            .as_deref()
            .ok_or_else(|| format!("no {META_SIGNATURE} metadata"))?;
        let signature =
            hex::decode(signature).map_err(|_| format!("{META_SIGNATURE} is not hex"))?;
        let end = d
            .end_time()
            .ok_or_else(|| format!("bad digest_end_time {:?}", d.digest_end_time))?;
        let public = keys.key_at(&d.digest_public_key_fingerprint, end)?;
        let message = signing_string(
            &d.digest_end_time,
            &d.digest_object,
            &read.hash,
            &d.previous_digest_signature,
        );
        if public.verify(message.as_bytes(), &signature) {
            Ok(())
        } else {
            Err("the signature does not match".to_string())
        }
    })();
    if let Err(reason) = verdict {
        findings.push(Finding::DigestBadSignature {
            key: key.clone(),
            reason,
        });
    }
}

/// What `d` (at `key`) records about its previous digest against `prev`.
fn check_link(key: &str, d: &DigestFile, prev: &ReadDigest, findings: &mut Vec<Finding>) {
    let prev_key = &prev.parsed.key;
    if d.previous_digest_hash_value != prev.hash {
        findings.push(Finding::DigestAltered {
            key: prev_key.clone(),
            reason: format!("its SHA-256 is not the previous_digest_hash_value of {key}"),
        });
    }
    if prev.signature.as_deref() != Some(d.previous_digest_signature.as_str()) {
        findings.push(Finding::ChainBroken {
            key: key.to_string(),
            reason: format!("previous_digest_signature is not the signature of {prev_key}"),
        });
    }
    if let Some(p) = &prev.content {
        if p.digest_end != d.previous_digest_end {
            findings.push(Finding::ChainBroken {
                key: key.to_string(),
                reason: format!("previous_digest_end is not the digest_end of {prev_key}"),
            });
        }
    }
}
