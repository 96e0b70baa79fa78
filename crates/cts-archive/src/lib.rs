//! Trace transfer of CTS, the library part: object storage (any
//! S3-compatible store or a local directory), trace files (names, JSON
//! arrays, gzip, age encryption), digest files (signed with RSA, chained)
//! and their offline verification. No HTTP server and no scheduling here:
//! the server decides when to write what and keeps the transfer state (its
//! cursor and each chain's last [`ChainLink`]); the CLI's `cts verify` is a
//! shell over [`verify_tracker`].
//!
//! Each module's documentation gives the exact layout it writes:
//! [`files`] (trace file names and contents), [`digest`] (digest files,
//! signing string, metadata), [`store`] (metadata on S3 and on disk),
//! [`verify`] (what is checked and reported).

pub mod digest;
pub mod files;
pub mod keys;
pub mod store;
mod time;
pub mod verify;

pub use digest::{
    build_digest, digest_key, parse_digest, sha256_hex, signing_string, ChainLink, DigestError,
    DigestFile, DigestSpec, LogFile, SignedDigest, HASH_ALGORITHM, META_SIGNATURE,
    META_SIGNATURE_ALGORITHM,
};
pub use files::{
    build_trace_files, file_count, generate_age_key, is_valid_file_prefix, open_trace_file,
    parse_object_name, trace_file_key, AgeIdentity, AgeKeyPair, AgeRecipient, Compression,
    FileError, FileFormat, ObjectName, Period, SplitLimits, TraceFile, TraceFileOptions,
    TrackerPath, MAX_JSON_BYTES_PER_FILE, MAX_TRACES_PER_FILE,
};
pub use keys::{KeyError, SigningKey, VerifyingKey, MIN_RSA_BITS, SIGNATURE_ALGORITHM};
pub use store::{
    classify_write_failure, is_valid_bucket_name, ListedObject, ObjectHead, ObjectStorage,
    S3Config, StorageConfig, StoreError, WriteError, WriteFailure, METADATA_SIDECAR_SUFFIX,
    WRITE_CHECK_KEY,
};
pub use time::{format_file_time, parse_file_time};
pub use verify::{
    gap_text, verify_tracker, Finding, PublicKeyInfo, PublicKeySet, VerifyError, VerifyOptions,
    VerifyReport,
};
