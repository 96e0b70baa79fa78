//! One storage suite, run against a local directory and against moto.

use bytes::Bytes;
use cts_archive::{ObjectStorage, StorageConfig, StoreError, WriteFailure};

use crate::support::Moto;

fn meta(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn keys(storage: &ObjectStorage, bucket: &str, prefix: &str) -> Vec<String> {
    let listed = storage.list(bucket, prefix).await.unwrap();
    listed.into_iter().map(|o| o.key).collect()
}

async fn suite(storage: &ObjectStorage) {
    let bucket = "cts-suite";
    // A missing bucket.
    assert!(!storage.bucket_exists(bucket).await.unwrap());
    let e = storage.check_write(bucket).await.unwrap_err();
    assert_eq!(e.failure, WriteFailure::NoBucket, "{e:?}");
    assert_eq!((e.detail(), e.status), (Some("noBucket"), Some(404)));
    let put = storage
        .put(bucket, "k", Bytes::from_static(b"x"), &[])
        .await;
    assert!(
        matches!(put, Err(StoreError::NoSuchBucket { .. })),
        "{put:?}"
    );
    let got = storage.get(bucket, "k").await;
    assert!(
        matches!(got, Err(StoreError::NoSuchBucket { .. })),
        "{got:?}"
    );
    let listed = storage.list(bucket, "").await;
    assert!(
        matches!(listed, Err(StoreError::NoSuchBucket { .. })),
        "{listed:?}"
    );

    // Created, twice (the second is no error), and writable.
    storage.create_bucket(bucket).await.unwrap();
    storage.create_bucket(bucket).await.unwrap();
    assert!(storage.bucket_exists(bucket).await.unwrap());
    storage.check_write(bucket).await.unwrap();
    assert!(
        keys(storage, bucket, "").await.is_empty(),
        "the write check cleans up"
    );

    // Objects with and without metadata.
    let signed = meta(&[
        ("meta-signature", "00ff"),
        ("meta-signature-algorithm", "SHA256withRSA"),
    ]);
    storage
        .put(
            bucket,
            "a/b/c.json.gz",
            Bytes::from_static(b"gzip bytes"),
            &signed,
        )
        .await
        .unwrap();
    storage
        .put(bucket, "a/b/d.json", Bytes::from_static(b"[]"), &[])
        .await
        .unwrap();
    storage
        .put(bucket, "a/bc/e.json", Bytes::from_static(b"[1]"), &[])
        .await
        .unwrap();
    assert_eq!(
        storage.get(bucket, "a/b/c.json.gz").await.unwrap(),
        Bytes::from_static(b"gzip bytes")
    );
    let head = storage.head(bucket, "a/b/c.json.gz").await.unwrap();
    assert_eq!(head.size, 10);
    assert_eq!(
        head.metadata.into_iter().collect::<Vec<_>>(),
        signed,
        "metadata round trip"
    );
    assert!(storage
        .head(bucket, "a/b/d.json")
        .await
        .unwrap()
        .metadata
        .is_empty());

    // Listing: sorted, by whole segments, no sidecars.
    assert_eq!(
        keys(storage, bucket, "a/b").await,
        ["a/b/c.json.gz", "a/b/d.json"]
    );
    assert_eq!(
        keys(storage, bucket, "a/b/").await,
        ["a/b/c.json.gz", "a/b/d.json"]
    );
    assert_eq!(
        keys(storage, bucket, "").await,
        ["a/b/c.json.gz", "a/b/d.json", "a/bc/e.json"]
    );
    let listed = storage.list(bucket, "a/bc").await.unwrap();
    assert_eq!((listed[0].key.as_str(), listed[0].size), ("a/bc/e.json", 3));

    // Replacing an object replaces its metadata.
    storage
        .put(bucket, "a/b/c.json.gz", Bytes::from_static(b"new"), &[])
        .await
        .unwrap();
    let head = storage.head(bucket, "a/b/c.json.gz").await.unwrap();
    assert_eq!((head.size, head.metadata.len()), (3, 0));

    // Missing objects, deletes.
    let got = storage.get(bucket, "a/b/none").await;
    assert!(matches!(got, Err(StoreError::NotFound { .. })), "{got:?}");
    let head = storage.head(bucket, "a/b/none").await;
    assert!(matches!(head, Err(StoreError::NotFound { .. })), "{head:?}");
    storage.delete(bucket, "a/b/c.json.gz").await.unwrap();
    storage.delete(bucket, "a/b/c.json.gz").await.unwrap();
    assert_eq!(
        keys(storage, bucket, "a").await,
        ["a/b/d.json", "a/bc/e.json"]
    );

    // Names that would mean different things on S3 and on disk.
    for key in ["../x", "a//b", "x.metadata.json", "a#1"] {
        let put = storage.put(bucket, key, Bytes::new(), &[]).await;
        assert!(
            matches!(put, Err(StoreError::InvalidKey(_))),
            "{key}: {put:?}"
        );
    }
    let put = storage.put("Bad_Bucket", "k", Bytes::new(), &[]).await;
    assert!(matches!(put, Err(StoreError::InvalidBucketName(_))));
    let put = storage
        .put(bucket, "k", Bytes::new(), &meta(&[("Meta", "x")]))
        .await;
    assert!(matches!(put, Err(StoreError::InvalidMetadata(_))));
}

#[tokio::test]
async fn local_directory() {
    let root = tempfile::tempdir().unwrap();
    let storage = ObjectStorage::new(StorageConfig::Local(root.path().join("obs"))).unwrap();
    suite(&storage).await;

    // The layout on disk: ROOT/{bucket}/{key}, metadata in a sidecar, no
    // staged files left behind.
    let bucket_dir = root.path().join("obs/cts-suite");
    storage
        .put(
            "cts-suite",
            "x/y.json.gz",
            Bytes::from_static(b"z"),
            &meta(&[
                ("meta-signature", "ab"),
                ("meta-signature-algorithm", "SHA256withRSA"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(bucket_dir.join("x/y.json.gz")).unwrap(), b"z");
    let sidecar: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bucket_dir.join("x/y.json.gz.metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        sidecar,
        serde_json::json!({"meta-signature": "ab", "meta-signature-algorithm": "SHA256withRSA"})
    );
    let names: Vec<String> = std::fs::read_dir(bucket_dir.join("x"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains('#')), "{names:?}");
    storage.delete("cts-suite", "x/y.json.gz").await.unwrap();
    assert!(!bucket_dir.join("x/y.json.gz.metadata.json").exists());
}

#[tokio::test]
async fn s3_server() {
    let moto = Moto::start();
    let storage = moto.storage();
    suite(&storage).await;

    // The metadata is S3 user metadata: header x-amz-meta-meta-signature,
    // so S3 clients read it as the key `meta-signature`.
    storage
        .put(
            "cts-suite",
            "x/y.json.gz",
            Bytes::from_static(b"z"),
            &meta(&[("meta-signature", "ab12")]),
        )
        .await
        .unwrap();
    let headers = raw_head(&moto.endpoint, "/cts-suite/x/y.json.gz");
    assert!(
        headers.contains("x-amz-meta-meta-signature: ab12"),
        "{headers}"
    );
}

/// The response headers of a HEAD, lowercased. moto checks signatures only
/// when told to, but treats a request without any as anonymous (refused).
fn raw_head(endpoint: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let host = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "HEAD {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20260301/eu-west-1/s3/aws4_request, \
         SignedHeaders=host, Signature=00\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.to_ascii_lowercase()
}

/// A real 403 from a real S3 server: moto checks credentials once its first
/// request (here: creating the bucket) is done, and ours are unknown to it.
/// moto does not enforce bucket policies, so a policy that denies PutObject
/// cannot be shown; the classification of `AccessDenied` codes is unit
/// tested in `store.rs`.
#[tokio::test]
async fn s3_refused_write_is_a_policy_error() {
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]);
    let storage = moto.storage();
    storage.create_bucket("cts-refused").await.unwrap();
    let e = storage.check_write("cts-refused").await.unwrap_err();
    assert_eq!(e.failure, WriteFailure::PolicyError, "{e:?}");
    assert_eq!(
        (e.detail(), e.status),
        (Some("bucketPolicyError"), Some(403))
    );
}

/// `bucket_lifecycle` on S3: one rule of the bucket, on `CloudTraces/`.
#[tokio::test]
async fn s3_lifecycle_rule() {
    let moto = Moto::start();
    let storage = moto.storage();
    storage.create_bucket("cts-life").await.unwrap();
    assert_eq!(storage.lifecycle_days("cts-life").await.unwrap(), None);
    storage.set_lifecycle("cts-life", 30).await.unwrap();
    assert_eq!(storage.lifecycle_days("cts-life").await.unwrap(), Some(30));
    storage.set_lifecycle("cts-life", 180).await.unwrap();
    assert_eq!(storage.lifecycle_days("cts-life").await.unwrap(), Some(180));
    let missing = storage.set_lifecycle("cts-nothing", 30).await;
    assert!(
        matches!(missing, Err(StoreError::NoSuchBucket { .. })),
        "{missing:?}"
    );
}

/// `bucket_lifecycle` in a local directory: objects under `CloudTraces/`
/// written more than the days ago go, with their sidecars; nothing else.
#[tokio::test]
async fn local_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let storage = ObjectStorage::new(StorageConfig::Local(dir.path().to_path_buf())).unwrap();
    storage.create_bucket("life").await.unwrap();
    let old = "CloudTraces/r/2026/1/1/system/ECS/a_CloudTrace_x.json.gz";
    let new = "CloudTraces/r/2026/3/1/system/ECS/a_CloudTrace_y.json.gz";
    let elsewhere = "other/old.txt";
    for key in [old, new, elsewhere] {
        storage
            .put("life", key, Bytes::from_static(b"z"), &meta(&[("m", "v")]))
            .await
            .unwrap();
    }
    let day = std::time::Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();
    for key in [old, elsewhere] {
        for f in [key.to_string(), format!("{key}.metadata.json")] {
            let file = std::fs::File::options()
                .write(true)
                .open(dir.path().join("life").join(f))
                .unwrap();
            file.set_modified(now - 40 * day).unwrap();
        }
    }
    assert_eq!(storage.expire("life", 30, now).await.unwrap(), 2);
    assert_eq!(keys(&storage, "life", "").await, [new, elsewhere]);
    assert!(!dir.path().join("life/CloudTraces/r/2026/1").exists());
    assert_eq!(storage.expire("life", 30, now).await.unwrap(), 0);
    // S3 keeps its own rule: nothing to set locally.
    storage.set_lifecycle("life", 30).await.unwrap();
}
