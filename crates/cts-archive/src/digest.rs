//! Digest files: the signed, chained record of which trace files were
//! written, exactly as `digest_files.rst` and
//! `verifying_trace_file_integrity.rst` describe them, with SHA-256 where
//! the reference's example has MD5.
//!
//! # Where
//!
//! ```text
//! CloudTraces/{region}/{YYYY}/{M}/{D}/{tracker}/Digest/{service}/{prefix}_CloudTrace-Digest_{region}-{project_id}_{YYYY-MM-DDTHH-MM-SSZ}.json.gz
//! CloudTraces/eu-de/2017/3/28/system/Digest/ECS/logs_CloudTrace-Digest_eu-de-3cfb…_2017-03-28T02-09-17Z.json.gz
//! ```
//!
//! The date and the time in the name are the digest's end time. Each
//! service directory holds its own chain, listing that service's trace
//! files; without `is_sort_by_service` there is one chain directly in
//! `Digest/`. The prefix rules are those of trace files (`files` module).
//!
//! # What
//!
//! The JSON object of [`DigestFile`], gzip'd (always: the name says
//! `.json.gz`), never encrypted (verifying needs only public keys). Fields
//! in the reference's order, plus `digest_public_key_fingerprint` (SHA-256
//! of the signing key's DER public key) so a verifier can pick the key.
//! Hashes are SHA-256 hex of the objects as stored (compressed, encrypted
//! if they are), named `"SHA-256"`. A starting digest has the five
//! `previous_digest_*` strings empty (`""`, present: the reference's Java
//! verifier reads `previous_digest_signature` as a string even then) and
//! `previous_digest_end: false`; an empty digest has `log_files: []`; an
//! ending digest has `digest_end: true`, and the digest after it (when
//! validation is turned on again) links to it with `previous_digest_end:
//! true`.
//!
//! # Signature
//!
//! SHA256withRSA over the UTF-8 bytes of the reference's signing string
//!
//! ```text
//! digest_end_time + digest_object + hex(SHA-256(digest file as stored, compressed)) + previous_digest_signature
//! ```
//!
//! (empty `previous_digest_signature` for a starting digest). The lowercase
//! hex signature is the object's metadata `meta-signature`, and
//! `meta-signature-algorithm` is `SHA256withRSA` (`store` module: S3 user
//! metadata or the local sidecar).

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest as _, Sha256};

use crate::files::{gunzip, gzip, TrackerPath};
use crate::keys::{SigningKey, SIGNATURE_ALGORITHM};
use crate::time::{format_file_time, parse_file_time};

/// `log_hash_algorithm` and `previous_digest_hash_algorithm`.
pub const HASH_ALGORITHM: &str = "SHA-256";
/// Metadata key of the hex signature.
pub const META_SIGNATURE: &str = "meta-signature";
/// Metadata key of the signature algorithm.
pub const META_SIGNATURE_ALGORITHM: &str = "meta-signature-algorithm";

/// A digest file's content (`digest_files.rst`, Table 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestFile {
    pub project_id: String,
    pub digest_start_time: String,
    pub digest_end_time: String,
    pub digest_bucket: String,
    pub digest_object: String,
    pub digest_signature_algorithm: String,
    /// Not in the reference: which key signed this digest.
    pub digest_public_key_fingerprint: String,
    pub digest_end: bool,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub previous_digest_bucket: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub previous_digest_object: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub previous_digest_hash_value: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub previous_digest_hash_algorithm: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub previous_digest_signature: String,
    pub previous_digest_end: bool,
    #[serde(default)]
    pub log_files: Vec<LogFile>,
}

/// One trace file a digest vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFile {
    pub bucket: String,
    pub object: String,
    pub log_hash_value: String,
    pub log_hash_algorithm: String,
}

impl LogFile {
    /// The entry for `bytes` stored as `bucket/object`.
    pub fn new(bucket: &str, object: &str, bytes: &[u8]) -> Self {
        Self {
            bucket: bucket.to_string(),
            object: object.to_string(),
            log_hash_value: sha256_hex(bytes),
            log_hash_algorithm: HASH_ALGORITHM.to_string(),
        }
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The reference's message for digital signing.
pub fn signing_string(
    digest_end_time: &str,
    digest_object: &str,
    digest_file_hash_hex: &str,
    previous_digest_signature: &str,
) -> String {
    format!("{digest_end_time}{digest_object}{digest_file_hash_hex}{previous_digest_signature}")
}

/// The object key of the digest ending at `end` (module docs).
pub fn digest_key(path: &TrackerPath, project_id: &str, service: Option<&str>, end: i64) -> String {
    let dir = match service {
        Some(service) => format!("{}/Digest/{service}", path.day_dir(end)),
        None => format!("{}/Digest", path.day_dir(end)),
    };
    format!(
        "{dir}/{}CloudTrace-Digest_{}-{project_id}_{}.json.gz",
        path.name_prefix(),
        path.region,
        format_file_time(end)
    )
}

/// What the next digest of a chain needs to know about the last one. The
/// transfer keeps it durably beside its cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    pub bucket: String,
    pub object: String,
    /// SHA-256 hex of the digest file as stored.
    pub hash_value: String,
    /// Hex signature (`meta-signature`).
    pub signature: String,
    /// Whether it was an ending digest.
    pub end: bool,
    /// Its `digest_end_time`, Unix seconds: where the next one starts.
    pub end_time: i64,
}

/// The digest to make.
#[derive(Debug, Clone)]
pub struct DigestSpec<'a> {
    pub bucket: &'a str,
    pub path: &'a TrackerPath,
    pub project_id: &'a str,
    /// The chain: a service type, or `None` without `is_sort_by_service`.
    pub service: Option<&'a str>,
    /// Unix seconds; normally the previous digest's `end_time`.
    pub start: i64,
    /// Unix seconds; the moment of signing, so the key that signs is the one
    /// valid at `end` (verifiers check the key's validity at this time).
    pub end: i64,
    /// An ending digest: validation or the tracker is being turned off.
    pub ending: bool,
    /// `None` makes a starting digest.
    pub previous: Option<&'a ChainLink>,
    /// The trace files written since the previous digest; empty for an idle
    /// period.
    pub log_files: Vec<LogFile>,
}

/// A digest file ready to upload with [`SignedDigest::metadata`].
#[derive(Debug, Clone)]
pub struct SignedDigest {
    pub key: String,
    pub body: Bytes,
    pub digest: DigestFile,
    /// SHA-256 hex of `body`.
    pub hash_value: String,
    /// Hex SHA256withRSA signature.
    pub signature: String,
}

impl SignedDigest {
    /// `meta-signature` and `meta-signature-algorithm`.
    pub fn metadata(&self) -> Vec<(String, String)> {
        vec![
            (META_SIGNATURE.to_string(), self.signature.clone()),
            (
                META_SIGNATURE_ALGORITHM.to_string(),
                SIGNATURE_ALGORITHM.to_string(),
            ),
        ]
    }

    /// What the next digest links to.
    pub fn link(&self) -> ChainLink {
        ChainLink {
            bucket: self.digest.digest_bucket.clone(),
            object: self.key.clone(),
            hash_value: self.hash_value.clone(),
            signature: self.signature.clone(),
            end: self.digest.digest_end,
            end_time: self
                .digest
                .end_time()
                .expect("build_digest formats a valid end time"),
        }
    }
}

/// Builds, compresses and signs a digest.
pub fn build_digest(spec: DigestSpec<'_>, key: &SigningKey) -> SignedDigest {
    let object = digest_key(spec.path, spec.project_id, spec.service, spec.end);
    let previous = spec.previous;
    let text = |f: fn(&ChainLink) -> &str| previous.map(f).unwrap_or("").to_string();
    let digest = DigestFile {
        project_id: spec.project_id.to_string(),
        digest_start_time: format_file_time(spec.start),
        digest_end_time: format_file_time(spec.end),
        digest_bucket: spec.bucket.to_string(),
        digest_object: object.clone(),
        digest_signature_algorithm: SIGNATURE_ALGORITHM.to_string(),
        digest_public_key_fingerprint: key.fingerprint().to_string(),
        digest_end: spec.ending,
        previous_digest_bucket: text(|p| &p.bucket),
        previous_digest_object: text(|p| &p.object),
        previous_digest_hash_value: text(|p| &p.hash_value),
        previous_digest_hash_algorithm: previous.map_or("", |_| HASH_ALGORITHM).to_string(),
        previous_digest_signature: text(|p| &p.signature),
        previous_digest_end: previous.is_some_and(|p| p.end),
        log_files: spec.log_files,
    };
    let body = gzip(&serde_json::to_vec(&digest).expect("a digest serializes"));
    let hash_value = sha256_hex(&body);
    let message = signing_string(
        &digest.digest_end_time,
        &digest.digest_object,
        &hash_value,
        &digest.previous_digest_signature,
    );
    let signature = hex::encode(key.sign(message.as_bytes()));
    SignedDigest {
        key: object,
        body: Bytes::from(body),
        digest,
        hash_value,
        signature,
    }
}

/// Why a digest file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("not gzip: {0}")]
    Gzip(std::io::Error),
    #[error("not a digest file: {0}")]
    Json(serde_json::Error),
}

/// Reads a digest file as stored (gzip'd JSON).
pub fn parse_digest(body: &[u8]) -> Result<DigestFile, DigestError> {
    let json = gunzip(body).map_err(DigestError::Gzip)?;
    serde_json::from_slice(&json).map_err(DigestError::Json)
}

impl DigestFile {
    /// `digest_start_time` in Unix seconds.
    pub fn start_time(&self) -> Option<i64> {
        parse_file_time(&self.digest_start_time)
    }

    /// `digest_end_time` in Unix seconds.
    pub fn end_time(&self) -> Option<i64> {
        parse_file_time(&self.digest_end_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> TrackerPath {
        TrackerPath {
            file_prefix: "mylog".into(),
            region: "eu-de-01".into(),
            tracker_name: "system".into(),
        }
    }

    // 2017-03-28T02:09:17Z, the reference's digest_end_time.
    const END: i64 = 1_490_666_957;

    #[test]
    fn digest_names() {
        assert_eq!(
            digest_key(&path(), "3cfb", Some("EVS"), END),
            "CloudTraces/eu-de-01/2017/3/28/system/Digest/EVS/mylog_CloudTrace-Digest_eu-de-01-3cfb_2017-03-28T02-09-17Z.json.gz"
        );
        let bare = TrackerPath {
            file_prefix: String::new(),
            ..path()
        };
        assert_eq!(
            digest_key(&bare, "3cfb", None, END),
            "CloudTraces/eu-de-01/2017/3/28/system/Digest/CloudTrace-Digest_eu-de-01-3cfb_2017-03-28T02-09-17Z.json.gz"
        );
    }

    #[test]
    fn reference_signing_string() {
        // verifying_trace_file_integrity.rst: the example message is the
        // plain concatenation of the four values.
        let s = signing_string(
            "2017-03-28T02-09-17Z",
            "CloudTraces/eu-de-01/2017/3/28/Digest/EVS/mylog_CloudTrace-Digest_eu-de-01/_2017-03-28T02-09-17Z.json.gz",
            "e280d203da44015e0eda3faa7a2ec961",
            "2221cc0d",
        );
        assert_eq!(s, "2017-03-28T02-09-17ZCloudTraces/eu-de-01/2017/3/28/Digest/EVS/mylog_CloudTrace-Digest_eu-de-01/_2017-03-28T02-09-17Z.json.gze280d203da44015e0eda3faa7a2ec9612221cc0d");
    }

    #[test]
    fn starting_chained_empty_and_ending_digests() {
        let key = SigningKey::generate().unwrap();
        let p = path();
        let log = LogFile::new("bucket", "some/file.json.gz", b"bytes");
        assert_eq!(log.log_hash_value, sha256_hex(b"bytes"));
        assert_eq!(log.log_hash_algorithm, "SHA-256");
        let spec = |start, end, previous, log_files, ending| DigestSpec {
            bucket: "bucket",
            path: &p,
            project_id: "3cfb",
            service: Some("EVS"),
            start,
            end,
            ending,
            previous,
            log_files,
        };

        let first = build_digest(spec(END - 3600, END, None, vec![log.clone()], false), &key);
        let d = &first.digest;
        assert_eq!(first.key, d.digest_object);
        assert_eq!(d.digest_start_time, "2017-03-28T01-09-17Z");
        assert_eq!(d.digest_end_time, "2017-03-28T02-09-17Z");
        assert_eq!(d.digest_signature_algorithm, "SHA256withRSA");
        assert_eq!(d.digest_public_key_fingerprint, key.fingerprint());
        assert_eq!(d.previous_digest_object, "");
        assert_eq!(d.previous_digest_signature, "");
        assert!(!d.previous_digest_end && !d.digest_end);
        assert_eq!(parse_digest(&first.body).unwrap(), *d);
        assert_eq!(first.hash_value, sha256_hex(&first.body));
        // Every field is present, the empty previous_* ones as "".
        let json: serde_json::Value =
            serde_json::from_slice(&gunzip(&first.body).unwrap()).unwrap();
        let fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for f in [
            "project_id",
            "digest_start_time",
            "digest_end_time",
            "digest_bucket",
            "digest_object",
            "digest_signature_algorithm",
            "digest_end",
            "previous_digest_bucket",
            "previous_digest_object",
            "previous_digest_hash_value",
            "previous_digest_hash_algorithm",
            "previous_digest_signature",
            "previous_digest_end",
            "log_files",
        ] {
            assert!(fields.contains(&f), "{f} missing");
        }
        assert_eq!(json["log_files"][0]["log_hash_algorithm"], "SHA-256");
        let message = signing_string(&d.digest_end_time, &d.digest_object, &first.hash_value, "");
        let signature = hex::decode(&first.signature).unwrap();
        assert!(key.verifying_key().verify(message.as_bytes(), &signature));
        assert_eq!(
            first.metadata(),
            vec![
                ("meta-signature".to_string(), first.signature.clone()),
                (
                    "meta-signature-algorithm".to_string(),
                    "SHA256withRSA".to_string()
                ),
            ]
        );

        let link = first.link();
        let empty = build_digest(spec(END, END + 3600, Some(&link), vec![], false), &key);
        let e = &empty.digest;
        assert!(e.log_files.is_empty());
        assert_eq!(e.previous_digest_object, first.key);
        assert_eq!(e.previous_digest_bucket, "bucket");
        assert_eq!(e.previous_digest_hash_value, first.hash_value);
        assert_eq!(e.previous_digest_hash_algorithm, "SHA-256");
        assert_eq!(e.previous_digest_signature, first.signature);
        let message = signing_string(
            &e.digest_end_time,
            &e.digest_object,
            &empty.hash_value,
            &first.signature,
        );
        assert!(key
            .verifying_key()
            .verify(message.as_bytes(), &hex::decode(&empty.signature).unwrap()));

        let empty_link = empty.link();
        let ending = build_digest(
            spec(END + 3600, END + 4000, Some(&empty_link), vec![], true),
            &key,
        );
        assert!(ending.digest.digest_end);
        let ending_link = ending.link();
        let after = build_digest(
            spec(END + 9000, END + 9600, Some(&ending_link), vec![], false),
            &key,
        );
        assert!(after.digest.previous_digest_end);

        // Readers accept null or missing previous_* fields as empty.
        let mut loose = json.clone();
        loose["previous_digest_signature"] = serde_json::Value::Null;
        loose
            .as_object_mut()
            .unwrap()
            .remove("previous_digest_object");
        let parsed = parse_digest(&gzip(loose.to_string().as_bytes())).unwrap();
        assert_eq!(parsed.previous_digest_signature, "");
        assert_eq!(parsed.previous_digest_object, "");
        assert!(matches!(parse_digest(b"junk"), Err(DigestError::Gzip(_))));
    }
}
