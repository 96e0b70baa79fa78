//! A signed digest chain written to storage, verified clean, then tampered
//! with in every way the issue names; each run against a local directory
//! and against moto.

use std::sync::OnceLock;

use bytes::Bytes;
use cts_archive::{
    build_digest, build_trace_files, generate_age_key, verify_tracker, AgeRecipient, ChainLink,
    DigestSpec, Finding, LogFile, ObjectStorage, Period, PublicKeyInfo, PublicKeySet, SignedDigest,
    SigningKey, StorageConfig, TraceFileOptions, TrackerPath, VerifyOptions, VerifyReport,
};

use crate::support::Moto;

/// 2026-03-01T00:00:00Z.
const T0: i64 = 1_772_323_200;
const HOUR: i64 = 3600;
const HOURS: i64 = 6;
const PROJECT: &str = "0a1b2c3d4e5f";

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().unwrap())
}

fn attacker() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().unwrap())
}

fn key_set(key: &SigningKey, valid_to: Option<i64>) -> PublicKeySet {
    PublicKeySet::new(vec![PublicKeyInfo {
        fingerprint: key.fingerprint().to_string(),
        public_key: key.verifying_key().to_pem(),
        valid_from: Some(T0 - HOUR),
        valid_to,
    }])
    .unwrap()
}

fn tracker_path() -> TrackerPath {
    TrackerPath {
        file_prefix: "logs".into(),
        region: "eu-de".into(),
        tracker_name: "system".into(),
    }
}

/// What [`write_archive`] wrote: per hour, its digest and trace files.
struct Archive {
    bucket: String,
    digests: Vec<SignedDigest>,
    files: Vec<Vec<String>>,
}

/// Six hourly digests of the ECS chain: a starting digest, two trace files
/// an hour (those of hour 4 encrypted), an empty digest for idle hour 3.
async fn write_archive(storage: &ObjectStorage, bucket: &str) -> Archive {
    write_chain(storage, bucket, Some("ECS")).await
}

/// As [`write_archive`], for one service's chain or (`None`, without
/// `is_sort_by_service`) the tracker's only chain.
async fn write_chain(storage: &ObjectStorage, bucket: &str, service: Option<&str>) -> Archive {
    storage.create_bucket(bucket).await.unwrap();
    let path = tracker_path();
    let recipient: AgeRecipient = generate_age_key().recipient.parse().unwrap();
    let mut previous: Option<ChainLink> = None;
    let mut archive = Archive {
        bucket: bucket.to_string(),
        digests: Vec::new(),
        files: Vec::new(),
    };
    for h in 0..HOURS {
        let (start, end) = (T0 + h * HOUR, T0 + (h + 1) * HOUR);
        let mut log_files = Vec::new();
        let mut keys = Vec::new();
        let options = TraceFileOptions {
            recipients: if h == 4 {
                vec![recipient.clone()]
            } else {
                vec![]
            },
            ..TraceFileOptions::default()
        };
        for p in 0..(if h == 3 { 0 } else { 2 }) {
            let period = Period {
                start: start + p * 1800,
                end: start + (p + 1) * 1800,
            };
            let traces = [format!(r#"{{"trace_id":"h{h}p{p}","service_type":"ECS"}}"#)];
            let files =
                build_trace_files(&path, PROJECT, service, period, &traces, &options).unwrap();
            for f in files {
                storage
                    .put(bucket, &f.key, f.body.clone(), &[])
                    .await
                    .unwrap();
                log_files.push(LogFile::new(bucket, &f.key, &f.body));
                keys.push(f.key);
            }
        }
        let digest = build_digest(
            DigestSpec {
                bucket,
                path: &path,
                project_id: PROJECT,
                service,
                start,
                end,
                ending: false,
                previous: previous.as_ref(),
                log_files,
            },
            key(),
        );
        storage
            .put(bucket, &digest.key, digest.body.clone(), &digest.metadata())
            .await
            .unwrap();
        previous = Some(digest.link());
        archive.digests.push(digest);
        archive.files.push(keys);
    }
    archive
}

fn options(to: i64) -> VerifyOptions {
    VerifyOptions {
        from: Some(T0),
        to: Some(to),
        digest_period_secs: HOUR,
    }
}

async fn verify_with(
    storage: &ObjectStorage,
    a: &Archive,
    keys: &PublicKeySet,
    to: i64,
) -> VerifyReport {
    verify_tracker(storage, &a.bucket, &tracker_path(), keys, &options(to))
        .await
        .unwrap()
}

async fn verify(storage: &ObjectStorage, a: &Archive) -> VerifyReport {
    verify_with(storage, a, &key_set(key(), None), T0 + HOURS * HOUR).await
}

/// Replaces an object's bytes, keeping its metadata.
async fn overwrite(storage: &ObjectStorage, bucket: &str, key: &str, bytes: Bytes) {
    let metadata: Vec<(String, String)> = storage
        .head(bucket, key)
        .await
        .unwrap()
        .metadata
        .into_iter()
        .collect();
    storage.put(bucket, key, bytes, &metadata).await.unwrap();
}

async fn flip_byte(storage: &ObjectStorage, bucket: &str, key: &str, at: usize) {
    let mut bytes = storage.get(bucket, key).await.unwrap().to_vec();
    bytes[at] ^= 0x01;
    overwrite(storage, bucket, key, bytes.into()).await;
}

async fn suite(storage: &ObjectStorage) {
    // Clean: every digest and file checks out.
    let a = write_archive(storage, "case-clean").await;
    let r = verify(storage, &a).await;
    assert!(r.is_clean(), "{:#?}", r.findings);
    assert_eq!((r.digests_checked, r.files_checked), (6, 10));
    assert!(r.pending_files.is_empty());
    // A file newer than the newest digest waits for its digest.
    let late = Period {
        start: T0 + HOURS * HOUR,
        end: T0 + HOURS * HOUR + 600,
    };
    let files = build_trace_files(
        &tracker_path(),
        PROJECT,
        Some("ECS"),
        late,
        &["{}"],
        &TraceFileOptions::default(),
    )
    .unwrap();
    storage
        .put(&a.bucket, &files[0].key, files[0].body.clone(), &[])
        .await
        .unwrap();
    let r = verify(storage, &a).await;
    assert!(r.is_clean(), "{:#?}", r.findings);
    assert_eq!(r.pending_files, [files[0].key.clone()]);

    // Without a service directory: one chain directly in Digest/.
    let a = write_chain(storage, "case-no-service", None).await;
    assert!(a.digests[0]
        .key
        .contains("/system/Digest/logs_CloudTrace-Digest_"));
    assert!(a.files[0][0].contains("/system/logs_CloudTrace_"));
    let r = verify(storage, &a).await;
    assert!(r.is_clean(), "{:#?}", r.findings);
    assert_eq!((r.digests_checked, r.files_checked), (6, 10));
    storage.delete(&a.bucket, &a.files[0][0]).await.unwrap();
    let r = verify(storage, &a).await;
    assert!(
        matches!(&r.findings[..], [Finding::FileDeleted { key, .. }] if *key == a.files[0][0]),
        "{:#?}",
        r.findings
    );

    // A byte of a trace file altered.
    let a = write_archive(storage, "case-alter").await;
    let target = a.files[1][0].clone();
    flip_byte(storage, &a.bucket, &target, 20).await;
    let r = verify(storage, &a).await;
    assert!(
        matches!(&r.findings[..], [Finding::FileAltered { key, digest, .. }] if *key == target && *digest == a.digests[1].key),
        "{:#?}",
        r.findings
    );

    // An encrypted trace file altered: the hash is over the stored bytes.
    let a = write_archive(storage, "case-alter-age").await;
    let target = a.files[4][1].clone();
    assert!(target.ends_with(".json.gz.age"));
    flip_byte(storage, &a.bucket, &target, 200).await;
    let r = verify(storage, &a).await;
    assert!(
        matches!(&r.findings[..], [Finding::FileAltered { key, .. }] if *key == target),
        "{:#?}",
        r.findings
    );

    // A trace file deleted.
    let a = write_archive(storage, "case-delete").await;
    let target = a.files[2][1].clone();
    storage.delete(&a.bucket, &target).await.unwrap();
    let r = verify(storage, &a).await;
    assert!(
        matches!(&r.findings[..], [Finding::FileDeleted { key, .. }] if *key == target),
        "{:#?}",
        r.findings
    );

    // A trace file moved to another folder.
    let a = write_archive(storage, "case-move").await;
    let from = a.files[1][0].clone();
    let to = from.replace("/ECS/", "/EVS/");
    let bytes = storage.get(&a.bucket, &from).await.unwrap();
    storage.put(&a.bucket, &to, bytes, &[]).await.unwrap();
    storage.delete(&a.bucket, &from).await.unwrap();
    let r = verify(storage, &a).await;
    assert_eq!(
        r.findings,
        [Finding::FileMoved {
            from: from.clone(),
            to,
            digest: a.digests[1].key.clone()
        }]
    );

    // Two trace files swapped (reordered).
    let a = write_archive(storage, "case-swap").await;
    let (x, y) = (a.files[5][0].clone(), a.files[5][1].clone());
    let (bx, by) = (
        storage.get(&a.bucket, &x).await.unwrap(),
        storage.get(&a.bucket, &y).await.unwrap(),
    );
    storage.put(&a.bucket, &x, by, &[]).await.unwrap();
    storage.put(&a.bucket, &y, bx, &[]).await.unwrap();
    let r = verify(storage, &a).await;
    let mut moves: Vec<(String, String)> = r
        .findings
        .iter()
        .map(|f| match f {
            Finding::FileMoved { from, to, .. } => (from.clone(), to.clone()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    moves.sort();
    let mut expected = vec![(x.clone(), y.clone()), (y, x)];
    expected.sort();
    assert_eq!(moves, expected);

    // A trace file added where a digest covers the time.
    let a = write_archive(storage, "case-add").await;
    let extra = Period {
        start: T0 + 2 * HOUR,
        end: T0 + 2 * HOUR + 900,
    };
    let files = build_trace_files(
        &tracker_path(),
        PROJECT,
        Some("ECS"),
        extra,
        &["{}"],
        &TraceFileOptions::default(),
    )
    .unwrap();
    storage
        .put(&a.bucket, &files[0].key, files[0].body.clone(), &[])
        .await
        .unwrap();
    let r = verify(storage, &a).await;
    assert_eq!(
        r.findings,
        [Finding::FileAdded {
            key: files[0].key.clone()
        }]
    );

    // A file uploaded late (after an outage) is listed by a digest after the
    // range: not an added file.
    let a = write_archive(storage, "case-late").await;
    let hour1 = Period {
        start: T0 + HOUR,
        end: T0 + HOUR + 900,
    };
    let late = build_trace_files(
        &tracker_path(),
        PROJECT,
        Some("ECS"),
        hour1,
        &["{}"],
        &TraceFileOptions::default(),
    )
    .unwrap();
    storage
        .put(&a.bucket, &late[0].key, late[0].body.clone(), &[])
        .await
        .unwrap();
    let last = a.digests[5].link();
    let next = build_digest(
        DigestSpec {
            bucket: &a.bucket,
            path: &tracker_path(),
            project_id: PROJECT,
            service: Some("ECS"),
            start: last.end_time,
            end: last.end_time + HOUR,
            ending: false,
            previous: Some(&last),
            log_files: vec![LogFile::new(&a.bucket, &late[0].key, &late[0].body)],
        },
        key(),
    );
    storage
        .put(&a.bucket, &next.key, next.body.clone(), &next.metadata())
        .await
        .unwrap();
    let r = verify(storage, &a).await;
    assert!(r.is_clean(), "{:#?}", r.findings);
    // Without that digest it would be.
    storage.delete(&a.bucket, &next.key).await.unwrap();
    let r = verify(storage, &a).await;
    assert_eq!(
        r.findings,
        [Finding::FileAdded {
            key: late[0].key.clone()
        }]
    );

    // One digest deleted: named by the next one, its files unverifiable.
    let a = write_archive(storage, "case-digest-1").await;
    storage.delete(&a.bucket, &a.digests[2].key).await.unwrap();
    let r = verify(storage, &a).await;
    match &r.findings[..] {
        [Finding::DigestMissing {
            key,
            previous,
            next,
            estimated_count,
            unverified_files,
            ..
        }] => {
            assert_eq!(key.as_deref(), Some(a.digests[2].key.as_str()));
            assert_eq!(previous.as_deref(), Some(a.digests[1].key.as_str()));
            assert_eq!(next.as_deref(), Some(a.digests[3].key.as_str()));
            assert_eq!(*estimated_count, 1);
            let mut files = unverified_files.clone();
            files.sort();
            let mut expected = a.files[2].clone();
            expected.sort();
            assert_eq!(files, expected);
        }
        other => panic!("{other:#?}"),
    }

    // Two digests in a row deleted (hour 2 and the empty one of hour 3).
    let a = write_archive(storage, "case-digest-2").await;
    storage.delete(&a.bucket, &a.digests[2].key).await.unwrap();
    storage.delete(&a.bucket, &a.digests[3].key).await.unwrap();
    let r = verify(storage, &a).await;
    match &r.findings[..] {
        [Finding::DigestMissing {
            key,
            previous,
            estimated_count,
            unverified_files,
            ..
        }] => {
            assert_eq!(key.as_deref(), Some(a.digests[3].key.as_str()));
            assert_eq!(previous.as_deref(), Some(a.digests[1].key.as_str()));
            assert_eq!(*estimated_count, 2);
            assert_eq!(unverified_files.len(), 2);
        }
        other => panic!("{other:#?}"),
    }

    // The newest digest deleted: only the range end can tell.
    let a = write_archive(storage, "case-digest-tail").await;
    storage.delete(&a.bucket, &a.digests[5].key).await.unwrap();
    let r = verify_with(storage, &a, &key_set(key(), None), T0 + 9 * HOUR).await;
    match &r.findings[..] {
        [Finding::DigestMissing {
            key: None,
            previous,
            unverified_files,
            ..
        }] => {
            assert_eq!(previous.as_deref(), Some(a.digests[4].key.as_str()));
            assert_eq!(unverified_files.len(), 2);
        }
        other => panic!("{other:#?}"),
    }

    // A byte of a digest altered: unreadable or badly signed, and its
    // successor's link no longer matches.
    let a = write_archive(storage, "case-digest-alter").await;
    flip_byte(storage, &a.bucket, &a.digests[2].key, 30).await;
    let r = verify(storage, &a).await;
    let about = |k: &str| {
        r.findings.iter().any(|f| match f {
            Finding::DigestAltered { key, .. } | Finding::DigestBadSignature { key, .. } => {
                key == k
            }
            _ => false,
        })
    };
    assert!(about(&a.digests[2].key), "{:#?}", r.findings);

    // Two digests swapped (reordered): neither is where it was written.
    let a = write_archive(storage, "case-digest-swap").await;
    let (x, y) = (&a.digests[1], &a.digests[2]);
    storage
        .put(&a.bucket, &x.key, y.body.clone(), &y.metadata())
        .await
        .unwrap();
    storage
        .put(&a.bucket, &y.key, x.body.clone(), &x.metadata())
        .await
        .unwrap();
    let r = verify(storage, &a).await;
    for d in [x, y] {
        assert!(
            r.findings.iter().any(
                |f| matches!(f, Finding::DigestMoved { key, recorded_object, .. }
                if *key != d.key && *recorded_object == d.key)
            ),
            "{:#?}",
            r.findings
        );
    }

    // Signatures by the wrong key.
    let a = write_archive(storage, "case-wrong-key").await;
    let d = &a.digests[2];
    // (a) the digest claims the real key, but another key signed it.
    let forged = hex::encode(
        attacker().sign(
            cts_archive::signing_string(
                &d.digest.digest_end_time,
                &d.key,
                &d.hash_value,
                &d.digest.previous_digest_signature,
            )
            .as_bytes(),
        ),
    );
    let metadata = vec![
        ("meta-signature".to_string(), forged),
        (
            "meta-signature-algorithm".to_string(),
            "SHA256withRSA".to_string(),
        ),
    ];
    storage
        .put(&a.bucket, &d.key, d.body.clone(), &metadata)
        .await
        .unwrap();
    let r = verify(storage, &a).await;
    assert!(
        r.findings
            .iter()
            .any(|f| matches!(f, Finding::DigestBadSignature { key, reason }
            if *key == d.key && reason.contains("does not match"))),
        "{:#?}",
        r.findings
    );
    // (b) the verifier trusts only another key.
    let r = verify_with(storage, &a, &key_set(attacker(), None), T0 + HOURS * HOUR).await;
    let unknown = r
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::DigestBadSignature { reason, .. } if reason.contains("unknown key")))
        .count();
    assert_eq!(unknown, 6, "{:#?}", r.findings);
    // (c) the key was retired before the last digests were signed.
    let a = write_archive(storage, "case-key-expired").await;
    let r = verify_with(
        storage,
        &a,
        &key_set(key(), Some(T0 + 4 * HOUR)),
        T0 + HOURS * HOUR,
    )
    .await;
    let expired: Vec<&str> = r
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::DigestBadSignature { key, reason } if reason.contains("not valid") => {
                Some(key.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        expired,
        [a.digests[4].key.as_str(), a.digests[5].key.as_str()]
    );
}

#[tokio::test]
async fn local_directory() {
    let root = tempfile::tempdir().unwrap();
    let storage = ObjectStorage::new(StorageConfig::Local(root.path().to_path_buf())).unwrap();
    suite(&storage).await;
}

#[tokio::test]
async fn s3_server() {
    let moto = Moto::start();
    suite(&moto.storage()).await;
}

#[test]
fn public_keys_json() {
    let k = key();
    let json = serde_json::json!({"keys": [{
        "fingerprint": k.fingerprint(),
        "public_key": k.verifying_key().to_pem(),
        "valid_from": "2026-03-01T00:00:00Z",
        "valid_to": null,
    }, {
        "fingerprint": attacker().fingerprint(),
        "public_key": attacker().verifying_key().to_pem(),
        "valid_from": 1_772_323_200_000_i64,
        "valid_to": "2026-03-02T00:00:00.000Z",
    }]});
    PublicKeySet::from_json(&json.to_string()).unwrap();
    let wrong = serde_json::json!({"keys": [{
        "fingerprint": attacker().fingerprint(),
        "public_key": k.verifying_key().to_pem(),
        "valid_from": "2026-03-01T00:00:00Z",
    }]});
    assert!(PublicKeySet::from_json(&wrong.to_string()).is_err());
    let bad_time = serde_json::json!({"keys": [{
        "fingerprint": k.fingerprint(),
        "public_key": k.verifying_key().to_pem(),
        "valid_from": "yesterday",
    }]});
    assert!(PublicKeySet::from_json(&bad_time.to_string()).is_err());
}
