//! `cts verify`, the real binary, against archives written with cts-archive
//! as the server writes them: into a local object root (DATA_DIR/obs) and,
//! once, into moto's S3 server. Each tamper case works on the files as an
//! intruder would: on disk, or with S3 calls.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use cts_archive::{
    build_digest, build_trace_files, generate_age_key, AgeRecipient, ChainLink, Compression,
    DigestSpec, LogFile, ObjectStorage, Period, S3Config, SignedDigest, SigningKey, StorageConfig,
    TraceFileOptions, TrackerPath,
};
use serde_json::{json, Value};

/// 2025-01-01T00:00:00Z.
const T0: i64 = 1_735_689_600;
const FROM: &str = "2025-01-01T00:00:00Z";
/// T0 + HOURS hours: the end of the last digest.
const TO: &str = "2025-01-01T06:00:00Z";
const HOUR: i64 = 3600;
const HOURS: i64 = 6;
const PROJECT: &str = "0a1b2c3d4e5f";
const BUCKET: &str = "cts-archive";
const PREFIX: &str = "logs";

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().unwrap())
}

fn other_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().unwrap())
}

fn tracker_path() -> TrackerPath {
    TrackerPath {
        file_prefix: PREFIX.into(),
        region: "eu-de".into(),
        tracker_name: "system".into(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What [`write_archive`] wrote, and the files `cts verify` reads.
struct Archive {
    /// The local object root (DATA_DIR/obs); `None` for S3.
    dir: Option<tempfile::TempDir>,
    digests: Vec<SignedDigest>,
    /// Per hour, the trace files' keys.
    files: Vec<Vec<String>>,
    /// The JSON of GET /v3/{project_id}/digest-public-keys.
    keys: PathBuf,
    /// The age identity the encrypted files are for.
    identity: PathBuf,
    /// Keeps `keys` and `identity`.
    work: tempfile::TempDir,
}

impl Archive {
    fn root(&self) -> &Path {
        self.dir.as_ref().expect("a local archive").path()
    }

    /// The file of object `key` in the local root.
    fn object(&self, key: &str) -> PathBuf {
        self.root().join(BUCKET).join(key)
    }
}

/// How the archive differs from the plain one.
#[derive(Default, Clone, Copy)]
struct Variant {
    /// The second encrypted file of hour 4 is plain JSON under a `.gz.age`
    /// name, listed with its true hash: a file the server wrote wrong.
    bad_encrypted_content: bool,
}

/// Six hourly digests of the ECS chain, as the transfer writes them: a
/// starting digest, two trace files an hour (those of hour 4 encrypted to
/// an age key), an empty digest for idle hour 3.
async fn write_archive(storage: &ObjectStorage, variant: Variant) -> Archive {
    storage.create_bucket(BUCKET).await.unwrap();
    let files_dir = tempfile::tempdir().unwrap();
    let pair = generate_age_key();
    let identity = files_dir.path().join("identity.txt");
    std::fs::write(
        &identity,
        format!("# public key: {}\n{}\n", pair.recipient, pair.identity),
    )
    .unwrap();
    let keys = files_dir.path().join("keys.json");
    write_keys(&keys, key());
    let recipient: AgeRecipient = pair.recipient.parse().unwrap();

    let path = tracker_path();
    let mut previous: Option<ChainLink> = None;
    let (mut digests, mut all_files) = (Vec::new(), Vec::new());
    for h in 0..HOURS {
        let (start, end) = (T0 + h * HOUR, T0 + (h + 1) * HOUR);
        let (mut log_files, mut keys) = (Vec::new(), Vec::new());
        for p in 0..(if h == 3 { 0 } else { 2 }) {
            let period = Period {
                start: start + p * 1800,
                end: start + (p + 1) * 1800,
            };
            let bad = variant.bad_encrypted_content && h == 4 && p == 1;
            let options = TraceFileOptions {
                compression: if bad {
                    Compression::Json
                } else {
                    Compression::Gzip
                },
                recipients: if h == 4 {
                    vec![recipient.clone()]
                } else {
                    vec![]
                },
                ..TraceFileOptions::default()
            };
            let traces = [
                format!(r#"{{"trace_id":"h{h}p{p}a","service_type":"ECS"}}"#),
                format!(r#"{{"trace_id":"h{h}p{p}b","service_type":"ECS"}}"#),
            ];
            let files =
                build_trace_files(&path, PROJECT, Some("ECS"), period, &traces, &options).unwrap();
            for f in files {
                let key = if bad {
                    f.key.replace(".json.age", ".json.gz.age")
                } else {
                    f.key
                };
                storage
                    .put(BUCKET, &key, f.body.clone(), &[])
                    .await
                    .unwrap();
                log_files.push(LogFile::new(BUCKET, &key, &f.body));
                keys.push(key);
            }
        }
        let digest = build_digest(
            DigestSpec {
                bucket: BUCKET,
                path: &path,
                project_id: PROJECT,
                service: Some("ECS"),
                start,
                end,
                ending: false,
                previous: previous.as_ref(),
                log_files,
            },
            key(),
        );
        storage
            .put(BUCKET, &digest.key, digest.body.clone(), &digest.metadata())
            .await
            .unwrap();
        previous = Some(digest.link());
        digests.push(digest);
        all_files.push(keys);
    }
    Archive {
        dir: None,
        digests,
        files: all_files,
        keys,
        identity,
        work: files_dir,
    }
}

/// A local archive in a fresh object root.
fn local_archive(variant: Variant) -> Archive {
    let dir = tempfile::tempdir().unwrap();
    let storage = ObjectStorage::new(StorageConfig::Local(dir.path().to_path_buf())).unwrap();
    let mut archive = runtime().block_on(write_archive(&storage, variant));
    archive.dir = Some(dir);
    archive
}

/// The public keys file as the server answers it.
fn write_keys(file: &Path, key: &SigningKey) {
    let keys = json!({"keys": [{
        "fingerprint": key.fingerprint(),
        "public_key": key.verifying_key().to_pem(),
        "valid_from": "2024-12-31T00:00:00Z",
        "valid_to": null,
    }]});
    std::fs::write(file, keys.to_string()).unwrap();
}

/// The `cts` binary with none of the developer's `CTS_*` settings.
fn cts_bare() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cts"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CTS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `cts verify --local ROOT --bucket B --public-keys K` with `args`, and
/// `--prefix logs` and the archive's range (`--from`, `--to`) unless `args`
/// give them.
fn verify_local(a: &Archive, args: &[&str]) -> Output {
    let mut cmd = cts_bare();
    cmd.arg("verify")
        .arg("--local")
        .arg(a.root())
        .args(["--bucket", BUCKET, "--public-keys"])
        .arg(&a.keys);
    for (flag, value) in [("--prefix", PREFIX), ("--from", FROM), ("--to", TO)] {
        if !args.contains(&flag) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(args).output().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("cts exited")
}

/// The JSON report, with the exit status it must come with.
fn report(out: &Output, expected_code: i32) -> Value {
    assert_eq!(
        code(out),
        expected_code,
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The report's findings as (kind, main object).
fn findings(report: &Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let object = ["key", "from"]
                .iter()
                .find_map(|k| f[k].as_str())
                .unwrap_or("-");
            (
                f["finding"].as_str().unwrap().to_string(),
                object.to_string(),
            )
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn flip_byte(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

/// The reference's layout: the prefix is part of the file names only, so
/// trackers differing in their prefix share the directories, and each one
/// verifies without the other's files as findings.
#[test]
fn prefixes_share_directories() {
    let a = local_archive(Variant::default());
    let ours = &a.files[0][0];
    assert!(
        ours.starts_with("CloudTraces/eu-de/2025/1/1/system/ECS/logs_CloudTrace_eu-de-"),
        "{ours}"
    );
    let ours = a.object(ours);
    let name = ours.file_name().unwrap().to_str().unwrap();
    std::fs::copy(
        &ours,
        ours.with_file_name(name.replacen("logs_", "audit_", 1)),
    )
    .unwrap();
    let bare = |args: &[&str]| {
        cts_bare()
            .args(["verify", "--local"])
            .arg(a.root().join(BUCKET))
            .arg("--public-keys")
            .arg(&a.keys)
            .args(["--from", FROM, "--to", TO, "--output", "json"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = bare(&[]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(
        stderr(&out).contains("several file prefixes") && stderr(&out).contains("--prefix"),
        "{}",
        stderr(&out)
    );
    let r = report(&bare(&["--prefix", "logs"]), 0);
    assert_eq!(r["findings"], json!([]), "{r}");
    assert_eq!(r["files_checked"], 10);
    // The other prefix's file has no digest: a finding about it alone.
    let r = report(&bare(&["--prefix", "audit"]), 1);
    assert!(r.to_string().contains("/audit_CloudTrace_"), "{r}");
    assert!(!r.to_string().contains("/logs_"), "{r}");
}

#[test]
fn a_clean_archive_verifies() {
    let a = local_archive(Variant::default());
    let r = report(&verify_local(&a, &["--output", "json"]), 0);
    assert_eq!(r["clean"], true);
    assert_eq!(r["findings"], json!([]));
    assert_eq!(
        (r["digests_checked"].as_u64(), r["files_checked"].as_u64()),
        (Some(6), Some(10))
    );
    assert_eq!(r["region"], "eu-de", "found in the bucket");
    assert_eq!(r["root"], "CloudTraces/eu-de");
    assert_eq!(r["prefix"], "logs");
    assert_eq!(r["files_decrypted"], Value::Null);
    assert_eq!(r["pending_files"], json!([]));

    // The table: no rows, a summary line.
    let out = verify_local(&a, &["--region", "eu-de", "--tracker", "system"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("6 digests and 10 trace files"), "{text}");
    assert!(text.trim_end().ends_with("no findings"), "{text}");
    assert!(!text.contains("FINDING"), "{text}");

    // The bucket's own directory, and the project the files must be of.
    let out = cts_bare()
        .args(["verify", "--project-id", PROJECT, "--local"])
        .arg(a.root().join(BUCKET))
        .arg("--public-keys")
        .arg(&a.keys)
        .args(["--from", "1735689600000", "--to", TO])
        .args(["--output", "json"])
        .output()
        .unwrap();
    let r = report(&out, 0);
    assert_eq!(r["bucket"], BUCKET);
    assert_eq!(r["prefix"], "logs", "the bucket's only prefix, found");
    assert_eq!(r["digests_checked"], 6);

    // Encrypted files decrypt with the identity and hold JSON arrays.
    let out = verify_local(&a, &["--output", "json", "--identity"]);
    assert_eq!(code(&out), 2, "--identity needs its file");
    let r = report(
        &verify_local(
            &a,
            &[
                "--output",
                "json",
                "--identity",
                a.identity.to_str().unwrap(),
            ],
        ),
        0,
    );
    assert_eq!(r["files_decrypted"], 2);

    // A trace file newer than the newest digest: pending, not a finding,
    // while its digest is not due (one period and some lateness after it).
    let late = put_trace_file(&a, "ECS", T0 + HOURS * HOUR + 600);
    let soon = ["--to", "2025-01-01T07:00:00Z"];
    let r = report(
        &verify_local(&a, &["--output", "json", soon[0], soon[1]]),
        0,
    );
    assert_eq!(r["pending_files"], json!([late]));
    let out = verify_local(&a, &soon);
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).contains("1 trace files pending"),
        "{}",
        stdout(&out)
    );
    // Once it is due, the digest that should list it is missing: the gap
    // is the window after the newest digest.
    let due = ["--output", "json", "--to", "2025-01-01T08:00:00Z"];
    let r = report(&verify_local(&a, &due), 1);
    assert_eq!(findings(&r), [("digest_missing".into(), "-".into())]);
    let f = &r["findings"][0];
    assert_eq!(f["previous"], a.digests[5].key.as_str());
    assert_eq!(f["gap_start"], "2025-01-01T06-00-00Z");
    assert_eq!(f["gap_end"], "2025-01-01T07-00-00Z");
    assert_eq!(f["unverified_files"], json!([late]));
}

#[test]
fn an_altered_byte_of_a_trace_file_is_reported() {
    let a = local_archive(Variant::default());
    let target = &a.files[1][0];
    flip_byte(&a.object(target), 20);
    let r = report(&verify_local(&a, &["--output", "json"]), 1);
    assert_eq!(findings(&r), [("file_altered".into(), target.clone())]);
    assert_eq!(r["findings"][0]["digest"], a.digests[1].key.as_str());
    assert_eq!(r["clean"], false);

    // The table names it, and the summary counts it.
    let out = verify_local(&a, &[]);
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(text.starts_with("FINDING"), "{text}");
    let row = text.lines().nth(1).unwrap();
    assert!(
        row.starts_with("file_altered") && row.contains(target.as_str()),
        "{text}"
    );
    assert!(text.trim_end().ends_with("1 finding"), "{text}");

    // An encrypted file altered: its hash is over the stored bytes, and with
    // the identity it is not read again.
    let a = local_archive(Variant::default());
    let target = &a.files[4][1];
    assert!(target.ends_with(".json.gz.age"));
    flip_byte(&a.object(target), 200);
    let args = [
        "--output",
        "json",
        "--identity",
        a.identity.to_str().unwrap(),
    ];
    let r = report(&verify_local(&a, &args), 1);
    assert_eq!(findings(&r), [("file_altered".into(), target.clone())]);
    assert_eq!(r["files_decrypted"], 1);
}

#[test]
fn a_deleted_trace_file_is_reported() {
    let a = local_archive(Variant::default());
    let target = &a.files[2][1];
    std::fs::remove_file(a.object(target)).unwrap();
    let r = report(&verify_local(&a, &["--output", "json"]), 1);
    assert_eq!(findings(&r), [("file_deleted".into(), target.clone())]);
}

#[test]
fn deleted_digests_are_reported() {
    // One digest: the next one names it; its files are unverifiable.
    let a = local_archive(Variant::default());
    std::fs::remove_file(a.object(&a.digests[2].key)).unwrap();
    std::fs::remove_file(a.object(&format!("{}.metadata.json", a.digests[2].key))).unwrap();
    let r = report(&verify_local(&a, &["--output", "json"]), 1);
    assert_eq!(
        findings(&r),
        [("digest_missing".into(), a.digests[2].key.clone())]
    );
    let f = &r["findings"][0];
    assert_eq!(f["estimated_count"], 1);
    assert_eq!(f["previous"], a.digests[1].key.as_str());
    assert_eq!(f["next"], a.digests[3].key.as_str());
    let mut unverified: Vec<&str> = f["unverified_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    unverified.sort();
    let mut expected: Vec<&str> = a.files[2].iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(unverified, expected);
    let out = verify_local(&a, &[]);
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("digest_missing"), "{}", stdout(&out));

    // Two in a row (hour 2 and the empty one of hour 3).
    let a = local_archive(Variant::default());
    for d in &a.digests[2..4] {
        std::fs::remove_file(a.object(&d.key)).unwrap();
    }
    let r = report(&verify_local(&a, &["--output", "json"]), 1);
    assert_eq!(
        findings(&r),
        [("digest_missing".into(), a.digests[3].key.clone())]
    );
    assert_eq!(r["findings"][0]["estimated_count"], 2);
    assert_eq!(r["findings"][0]["previous"], a.digests[1].key.as_str());
    assert_eq!(
        r["findings"][0]["unverified_files"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The newest one: only the end of the range tells (by default, now).
    let a = local_archive(Variant::default());
    std::fs::remove_file(a.object(&a.digests[5].key)).unwrap();
    let r = report(
        &verify_local(&a, &["--output", "json", "--to", "2025-01-01T09:00:00Z"]),
        1,
    );
    assert_eq!(findings(&r), [("digest_missing".into(), "-".into())]);
    assert_eq!(r["findings"][0]["previous"], a.digests[4].key.as_str());
}

#[test]
fn moved_and_reordered_files_are_reported() {
    // A trace file moved to another service's folder.
    let a = local_archive(Variant::default());
    let from = a.files[1][0].clone();
    let to = from.replace("/ECS/", "/EVS/");
    std::fs::create_dir_all(a.object(&to).parent().unwrap()).unwrap();
    std::fs::rename(a.object(&from), a.object(&to)).unwrap();
    let r = report(&verify_local(&a, &["--output", "json"]), 1);
    assert_eq!(findings(&r), [("file_moved".into(), from.clone())]);
    assert_eq!(r["findings"][0]["to"], to.as_str());

    // Two trace files of an hour swapped.
    let a = local_archive(Variant::default());
    let (x, y) = (a.object(&a.files[5][0]), a.object(&a.files[5][1]));
    let parked = x.with_extension("parked");
    std::fs::rename(&x, &parked).unwrap();
    std::fs::rename(&y, &x).unwrap();
    std::fs::rename(&parked, &y).unwrap();
    let r = report(&verify_local(&a, &["--output", "json"]), 1);
    let mut moves = findings(&r);
    moves.sort();
    let mut expected = vec![
        ("file_moved".to_string(), a.files[5][0].clone()),
        ("file_moved".to_string(), a.files[5][1].clone()),
    ];
    expected.sort();
    assert_eq!(moves, expected);

    // Two digests swapped (with their signatures): neither is where it was
    // written.
    let a = local_archive(Variant::default());
    let (x, y) = (&a.digests[1].key, &a.digests[2].key);
    for suffix in ["", ".metadata.json"] {
        let (fx, fy) = (
            a.object(&format!("{x}{suffix}")),
            a.object(&format!("{y}{suffix}")),
        );
        let (bx, by) = (std::fs::read(&fx).unwrap(), std::fs::read(&fy).unwrap());
        std::fs::write(&fx, by).unwrap();
        std::fs::write(&fy, bx).unwrap();
    }
    let r = report(&verify_local(&a, &["--output", "json"]), 1);
    let found = findings(&r);
    for k in [x, y] {
        assert!(
            found.contains(&("digest_moved".to_string(), k.clone())),
            "{found:?}"
        );
    }

    // A trace file added where a digest covers the time.
    let a = local_archive(Variant::default());
    let extra = build_trace_files(
        &tracker_path(),
        PROJECT,
        Some("ECS"),
        Period {
            start: T0 + 2 * HOUR,
            end: T0 + 2 * HOUR + 900,
        },
        &["{}"],
        &TraceFileOptions::default(),
    )
    .unwrap();
    std::fs::write(a.object(&extra[0].key), &extra[0].body).unwrap();
    let r = report(&verify_local(&a, &["--output", "json"]), 1);
    assert_eq!(findings(&r), [("file_added".into(), extra[0].key.clone())]);
}

#[test]
fn signatures_need_the_right_public_key() {
    let a = local_archive(Variant::default());
    let keys = a.work.path().join("other-keys.json");
    write_keys(&keys, other_key());
    let out = cts_bare()
        .arg("verify")
        .arg("--local")
        .arg(a.root())
        .args([
            "--bucket", BUCKET, "--prefix", PREFIX, "--from", FROM, "--to", TO,
        ])
        .arg("--public-keys")
        .arg(&keys)
        .args(["--output", "json"])
        .output()
        .unwrap();
    let r = report(&out, 1);
    let bad: Vec<&Value> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["finding"] == "digest_bad_signature")
        .collect();
    assert_eq!(bad.len(), 6, "{r:#}");
    let reason = bad[0]["reason"].as_str().unwrap();
    assert!(reason.contains("unknown key"), "{reason}");
    // Keys rotate: the likely cause, and the cure.
    assert!(
        reason.contains("may be older than the signing key")
            && reason.contains("/digest-public-keys"),
        "{reason}"
    );

    // A digest re-signed by another key that claims to be the real one.
    let a = local_archive(Variant::default());
    let d = &a.digests[2];
    let forged = hex_encode(
        &other_key().sign(
            cts_archive::signing_string(
                &d.digest.digest_end_time,
                &d.key,
                &d.hash_value,
                &d.digest.previous_digest_signature,
            )
            .as_bytes(),
        ),
    );
    let sidecar = a.object(&format!("{}.metadata.json", d.key));
    let mut metadata: Value = serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    metadata["meta-signature"] = json!(forged);
    std::fs::write(&sidecar, metadata.to_string()).unwrap();
    let r = report(&verify_local(&a, &["--output", "json"]), 1);
    let found = findings(&r);
    assert!(
        found.contains(&("digest_bad_signature".to_string(), d.key.clone())),
        "{found:?}"
    );

    // A public keys file that is not one: verification cannot run.
    std::fs::write(&keys, "{\"keys\": [{\"fingerprint\": \"00\"}]}").unwrap();
    let out = cts_bare()
        .args(["verify", "--local"])
        .arg(a.root())
        .args(["--bucket", BUCKET, "--public-keys"])
        .arg(&keys)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("public keys"), "{}", stderr(&out));
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn encrypted_files_are_decrypted_with_the_identity() {
    // The server wrote a file wrong: its hash is right, its content is not
    // what its name says. Only decrypting tells.
    let a = local_archive(Variant {
        bad_encrypted_content: true,
    });
    let bad = &a.files[4][1];
    assert!(bad.ends_with(".json.gz.age"));
    let r = report(&verify_local(&a, &["--output", "json"]), 0);
    assert_eq!(r["files_decrypted"], Value::Null, "not without --identity");
    let identity = a.identity.to_str().unwrap();
    let r = report(
        &verify_local(&a, &["--output", "json", "--identity", identity]),
        1,
    );
    assert_eq!(findings(&r), [("file_unreadable".into(), bad.clone())]);
    assert!(
        r["findings"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot decompress"),
        "{r:#}"
    );
    assert_eq!(r["files_decrypted"], 2);

    // Another identity opens nothing; a second --identity that fits does.
    let a = local_archive(Variant::default());
    let stranger = a.work.path().join("stranger.txt");
    std::fs::write(&stranger, generate_age_key().identity).unwrap();
    let stranger = stranger.to_str().unwrap();
    let r = report(
        &verify_local(&a, &["--output", "json", "--identity", stranger]),
        1,
    );
    let found = findings(&r);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|(kind, _)| kind == "file_unreadable"));
    assert!(r["findings"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("does not decrypt"));
    let identity = a.identity.to_str().unwrap();
    let args = [
        "--output",
        "json",
        "--identity",
        stranger,
        "--identity",
        identity,
    ];
    let r = report(&verify_local(&a, &args), 0);
    assert_eq!(r["files_decrypted"], 2);

    // Not an identity at all: verification cannot run.
    let out = verify_local(&a, &["--identity", a.keys.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("identity"), "{}", stderr(&out));
}

#[test]
fn ranges_and_locations() {
    let a = local_archive(Variant::default());
    // Without --to the range ends now: the chain stopped long ago.
    let out = cts_bare()
        .args(["verify", "--output", "json", "--local"])
        .arg(a.root())
        .args(["--bucket", BUCKET, "--prefix", PREFIX, "--public-keys"])
        .arg(&a.keys)
        .output()
        .unwrap();
    let r = report(&out, 1);
    assert_eq!(findings(&r), [("digest_missing".into(), "-".into())]);
    assert_eq!(r["from"], Value::Null);

    // Part of the chain: the digests ending 02:00 to 05:00, both included (a
    // relative --from counts back from --to).
    let r = report(
        &verify_local(
            &a,
            &[
                "--output",
                "json",
                "--from",
                "3h",
                "--to",
                "2025-01-01T05:00:00Z",
            ],
        ),
        0,
    );
    assert_eq!(r["digests_checked"], 4);
    assert_eq!(r["files_checked"], 6);
    assert_eq!(r["from"], "2025-01-01T02-00-00Z");

    // A range no digest ends in: nothing vouches for it.
    let r = report(
        &verify_local(
            &a,
            &[
                "--output",
                "json",
                "--from",
                "2025-01-02T00:00:00Z",
                "--to",
                "2025-01-02T01:00:00Z",
            ],
        ),
        1,
    );
    assert_eq!(
        findings(&r),
        [("no_digest".into(), "2025-01-02T00-00-00Z".into())]
    );

    // Where there is nothing of the tracker: an error, not a clean report.
    for args in [
        &["--prefix", "audit"][..],
        &["--tracker", "bucket-reads"],
        &["--region", "eu-nl"],
    ] {
        let out = verify_local(&a, args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("no trace or digest files"),
            "{}",
            stderr(&out)
        );
    }
    let out = verify_local(&a, &["--from", "2025-01-02T00:00:00Z"]);
    assert_eq!(code(&out), 2, "--from after --to");
    let out = cts_bare()
        .args([
            "verify",
            "--local",
            "/nonexistent/obs",
            "--bucket",
            BUCKET,
            "--public-keys",
        ])
        .arg(&a.keys)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(!Path::new("/nonexistent/obs").exists(), "created nothing");
    let out = cts_bare()
        .args(["verify", "--bucket", BUCKET, "--public-keys"])
        .arg(&a.keys)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--s3-access-key"), "{}", stderr(&out));
    let out = cts_bare()
        .args(["verify", "--public-keys"])
        .arg(&a.keys)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--local"), "{}", stderr(&out));

    // The files are another project's.
    let out = verify_local(&a, &["--project-id", "ffff"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("no files of project ffff"),
        "{}",
        stderr(&out)
    );

    // Two projects in one path: their chains would read as tampering.
    let other = build_trace_files(
        &tracker_path(),
        "ffff",
        Some("ECS"),
        Period {
            start: T0,
            end: T0 + 300,
        },
        &["{}"],
        &TraceFileOptions::default(),
    )
    .unwrap();
    std::fs::write(a.object(&other[0].key), &other[0].body).unwrap();
    let out = verify_local(&a, &[]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("several projects"),
        "{}",
        stderr(&out)
    );

    // Two regions: say which.
    let b = local_archive(Variant::default());
    let elsewhere = TrackerPath {
        region: "eu-nl".into(),
        ..tracker_path()
    };
    let other = build_trace_files(
        &elsewhere,
        PROJECT,
        Some("ECS"),
        Period {
            start: T0,
            end: T0 + 300,
        },
        &["{}"],
        &TraceFileOptions::default(),
    )
    .unwrap();
    let file = b.object(&other[0].key);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, &other[0].body).unwrap();
    let out = cts_bare()
        .args(["verify", "--local"])
        .arg(b.root())
        .args(["--bucket", BUCKET, "--prefix", PREFIX, "--public-keys"])
        .arg(&b.keys)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("eu-de, eu-nl"), "{}", stderr(&out));
    let r = report(
        &verify_local(&b, &["--region", "eu-de", "--output", "json"]),
        0,
    );
    assert_eq!(r["digests_checked"], 6);
}

/// moto's S3 server on a port of its own, stopped when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    /// Starts `target/s3-venv/bin/moto_server` (or `$CTS_TEST_MOTO_SERVER`).
    /// Fails, never skips, when it is missing.
    fn start() -> Moto {
        let bin = std::env::var_os("CTS_TEST_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../target/s3-venv/bin/moto_server")
            });
        assert!(
            bin.exists(),
            "moto's S3 server is not installed at {}: run scripts/s3-test-server.sh or set CTS_TEST_MOTO_SERVER",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Keeps reading: a full pipe would block moto.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("Running on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(endpoint) => Moto { child, endpoint },
            Err(_) => {
                let _ = child.kill();
                panic!("moto did not say where it listens within 60 s")
            }
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_s3_bucket_verifies_with_the_cts_obs_settings() {
    let moto = Moto::start();
    let storage = ObjectStorage::new(StorageConfig::S3(S3Config {
        endpoint: Some(moto.endpoint.clone()),
        region: "eu-west-1".into(),
        access_key: "testing".into(),
        secret_key: "testing".into(),
        path_style: true,
        allow_http: true,
    }))
    .unwrap();
    let rt = runtime();
    let a = rt.block_on(write_archive(&storage, Variant::default()));
    let verify = |extra: &[&str]| {
        cts_bare()
            .env("CTS_OBS_ENDPOINT", &moto.endpoint)
            .env("CTS_OBS_REGION", "eu-west-1")
            .env("CTS_OBS_ACCESS_KEY", "testing")
            .env("CTS_OBS_SECRET_KEY", "testing")
            .args([
                "verify", "--bucket", BUCKET, "--prefix", PREFIX, "--from", FROM, "--to", TO,
            ])
            .arg("--public-keys")
            .arg(&a.keys)
            .args(["--output", "json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let identity = a.identity.to_str().unwrap();
    let r = report(&verify(&["--identity", identity]), 0);
    assert_eq!(
        (r["digests_checked"].as_u64(), r["files_checked"].as_u64()),
        (Some(6), Some(10))
    );
    assert_eq!(r["files_decrypted"], 2);

    // Tampered through S3: a digest deleted, a trace file replaced.
    rt.block_on(async {
        storage.delete(BUCKET, &a.digests[2].key).await.unwrap();
        storage
            .put(BUCKET, &a.files[4][0], b"[]".to_vec().into(), &[])
            .await
            .unwrap();
    });
    let r = report(&verify(&[]), 1);
    let mut found = findings(&r);
    found.sort();
    assert_eq!(
        found,
        [
            ("digest_missing".to_string(), a.digests[2].key.clone()),
            ("file_altered".to_string(), a.files[4][0].clone()),
        ]
    );

    // The settings as flags; a bucket that is not there.
    let out = cts_bare()
        .args(["verify", "--bucket", "no-such-bucket"])
        .args(["--s3-endpoint", &moto.endpoint, "--s3-region", "eu-west-1"])
        .args(["--s3-access-key", "testing", "--s3-secret-key", "testing"])
        .arg("--public-keys")
        .arg(&a.keys)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(stderr(&out).contains("no bucket"), "{}", stderr(&out));
}

/// Writes one trace file of `service` for the period ending at `end` into
/// the local archive.
fn put_trace_file(a: &Archive, service: &str, end: i64) -> String {
    let period = Period {
        start: end - 600,
        end,
    };
    let files = build_trace_files(
        &tracker_path(),
        PROJECT,
        Some(service),
        period,
        &["{}"],
        &TraceFileOptions::default(),
    )
    .unwrap();
    let file = a.object(&files[0].key);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &files[0].body).unwrap();
    files[0].key.clone()
}

#[test]
fn new_chains_and_trackers_are_pending_until_their_first_digest_is_due() {
    // A new service: its chain has no digest yet.
    let a = local_archive(Variant::default());
    let new = put_trace_file(&a, "RDS", T0 + HOURS * HOUR - 600);
    let r = report(&verify_local(&a, &["--output", "json"]), 0);
    assert_eq!(r["pending_files"], json!([new]));
    assert_eq!(r["findings"], json!([]));
    // An hour and more later, the digest is overdue: a gap around the file,
    // not one instant named twice.
    let out = verify_local(&a, &["--output", "json", "--to", "2025-01-01T07:00:00Z"]);
    let r = report(&out, 1);
    assert_eq!(findings(&r), [("digest_missing".into(), "-".into())]);
    let f = &r["findings"][0];
    assert_eq!(f["unverified_files"], json!([new]));
    assert_eq!(f["gap_start"], "2025-01-01T04-50-00Z");
    assert_eq!(f["gap_end"], "2025-01-01T06-50-00Z");
    let out = verify_local(&a, &["--to", "2025-01-01T07:00:00Z"]);
    assert!(
        stdout(&out).contains("between 2025-01-01T04-50-00Z and 2025-01-01T06-50-00Z"),
        "{}",
        stdout(&out)
    );

    // A new tracker: files, no digest at all yet.
    let dir = tempfile::tempdir().unwrap();
    let fresh = Archive {
        dir: Some(dir),
        digests: Vec::new(),
        files: Vec::new(),
        keys: a.keys.clone(),
        identity: a.identity.clone(),
        work: tempfile::tempdir().unwrap(),
    };
    let first = put_trace_file(&fresh, "ECS", T0 + 600);
    let young = ["--output", "json", "--to", "2025-01-01T00:30:00Z"];
    let r = report(&verify_local(&fresh, &young), 0);
    assert_eq!(r["pending_files"], json!([first]));
    assert_eq!(r["findings"], json!([]));
    // Its first digest overdue: a finding.
    let late = ["--output", "json", "--to", "2025-01-01T02:00:00Z"];
    let r = report(&verify_local(&fresh, &late), 1);
    assert_eq!(findings(&r)[0].0, "digest_missing");
}
