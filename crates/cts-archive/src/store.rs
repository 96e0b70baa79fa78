//! Object storage: any S3-compatible store or a local directory, behind one
//! [`ObjectStorage`].
//!
//! Both go through the `object_store` crate (`AmazonS3` per bucket,
//! `LocalFileSystem` over the root), except for what it cannot do:
//!
//! * **Buckets.** `object_store` has no bucket operations, so S3 buckets are
//!   probed and created with one SigV4-signed request (`HEAD`/`PUT
//!   /{bucket}`), signed by `object_store`'s own [`AwsAuthorizer`] and sent
//!   through its HTTP client. Locally a bucket is the directory
//!   `ROOT/{bucket}`.
//! * **Local writes.** `LocalFileSystem::put` renames a staged file into
//!   place without fsync; a trace file must survive a crash complete or not
//!   at all, so local puts write `{path}#{digits}` (a name `LocalFileSystem`
//!   never lists), fsync it, rename it and fsync the directory
//!   ([`cts_fs::write_atomic`], files 0600 in directories 0700: they hold
//!   traces). An S3 `PUT` is atomic by itself.
//! * **Metadata.** On S3 it is user metadata: the pair `("meta-signature",
//!   v)` is sent as the header `x-amz-meta-meta-signature` and read back by
//!   any S3 client as the metadata key `meta-signature`, which is what the
//!   reference's verifier asks for. A local directory has no metadata, so
//!   an object with metadata gets a sidecar `{key}.metadata.json` holding
//!   the map, e.g. `{"meta-signature": "…", "meta-signature-algorithm":
//!   "SHA256withRSA"}`. The sidecar is written before the object (a reader
//!   who sees the object sees its metadata), is never listed as an object,
//!   and no key may end in `.metadata.json` on either backend, so both
//!   behave the same.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectStore, PutOptions,
    RetryConfig,
};

mod lifecycle;
mod owner;

/// Suffix of the local sidecar that holds an object's metadata.
pub const METADATA_SIDECAR_SUFFIX: &str = ".metadata.json";

/// Key of the object [`ObjectStorage::check_write`] writes and deletes.
pub const WRITE_CHECK_KEY: &str = "cts-write-check";

/// Where an S3-compatible store is and how to sign for it.
#[derive(Clone)]
pub struct S3Config {
    /// `https://obs.example.com` or `http://127.0.0.1:9000`; `None` means
    /// AWS itself (`https://s3.{region}.amazonaws.com`).
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// `{endpoint}/{bucket}/{key}` instead of `{bucket}.{host}/{key}`:
    /// what MinIO, Ceph RGW and test servers usually need.
    pub path_style: bool,
    /// Allow a plain-HTTP endpoint (tests, a store on the same host).
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Config {
    // Never print the secret key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .finish_non_exhaustive()
    }
}

/// Which store [`ObjectStorage`] talks to.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    S3(S3Config),
    /// A directory; bucket `b`, key `k` is the file `ROOT/b/k`.
    Local(PathBuf),
}

/// An object as [`ObjectStorage::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
}

/// An object's size and user metadata, from [`ObjectStorage::head`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    pub metadata: BTreeMap<String, String>,
}

/// What went wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid bucket name {0:?}: 3-63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, no '..', '.-' or '-.', not an IP address")]
    InvalidBucketName(String),
    #[error("invalid object key {0:?}: 1-1024 bytes of '/'-separated non-empty segments (not '.' or '..'), without '#', '\\\\' or control characters, not ending in {METADATA_SIDECAR_SUFFIX}")]
    InvalidKey(String),
    #[error("invalid metadata key {0:?}: 1-64 of lowercase letters, digits and '-' (values: printable ASCII)")]
    InvalidMetadata(String),
    #[error("invalid object storage settings: {0}")]
    Config(String),
    #[error("bucket {bucket} does not exist")]
    NoSuchBucket { bucket: String },
    #[error("object {bucket}/{key} does not exist")]
    NotFound { bucket: String, key: String },
    #[error("access to bucket {bucket} is denied ({status:?}): {message}")]
    AccessDenied {
        bucket: String,
        status: Option<u16>,
        message: String,
    },
    #[error("object storage error ({status:?}): {message}")]
    Other {
        status: Option<u16>,
        message: String,
    },
}

impl StoreError {
    /// The HTTP status the store answered, where there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::NoSuchBucket { .. } | Self::NotFound { .. } => Some(404),
            Self::AccessDenied { status, .. } | Self::Other { status, .. } => *status,
            _ => None,
        }
    }
}

/// How a failed write is explained to the owner of a tracker: the tracker's
/// `detail` (`noBucket`, `bucketPolicyError`) and the `checkbucket` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFailure {
    NoBucket,
    PolicyError,
    Other,
}

/// Classifies a failed write by the HTTP status and the S3 error code
/// (`<Code>` of the error body) the store answered: `NoSuchBucket`, a bare
/// 404 or a bucket name no store takes is a missing bucket; `AccessDenied`,
/// other 401/403 answers and an object name the store refuses are a
/// refusal (bucket policy, ACL, wrong credentials); anything else
/// (network, 5xx, throttling) is neither and is worth retrying.
pub fn classify_write_failure(status: Option<u16>, code: Option<&str>) -> WriteFailure {
    match (code, status) {
        (Some("NoSuchBucket" | "InvalidBucketName"), _) => WriteFailure::NoBucket,
        (Some("InvalidObjectName"), _) => WriteFailure::PolicyError,
        (Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem"), _) => {
            WriteFailure::PolicyError
        }
        (_, Some(404)) => WriteFailure::NoBucket,
        (_, Some(401 | 403)) => WriteFailure::PolicyError,
        _ => WriteFailure::Other,
    }
}

/// Why [`ObjectStorage::check_write`] could not write into a bucket.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    pub failure: WriteFailure,
    /// The HTTP status the store answered (none for a local directory or a
    /// network failure).
    pub status: Option<u16>,
    /// The S3 error code, or the nearest equivalent for a local directory.
    pub code: String,
    pub message: String,
}

impl WriteError {
    /// The tracker `detail` for this failure: `noBucket` or
    /// `bucketPolicyError`; `None` for a transient failure.
    pub fn detail(&self) -> Option<&'static str> {
        match self.failure {
            WriteFailure::NoBucket => Some("noBucket"),
            WriteFailure::PolicyError => Some("bucketPolicyError"),
            WriteFailure::Other => None,
        }
    }
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        let status = e.status();
        let code = match &e {
            StoreError::NoSuchBucket { .. } => Some("NoSuchBucket".to_string()),
            StoreError::AccessDenied { message, .. } => {
                Some(s3_error_code(message).unwrap_or_else(|| "AccessDenied".to_string()))
            }
            StoreError::Other { message, .. } => s3_error_code(message),
            // A name no store takes: the tracker's settings, not the weather.
            StoreError::InvalidBucketName(_) => Some("InvalidBucketName".to_string()),
            StoreError::InvalidKey(_) => Some("InvalidObjectName".to_string()),
            _ => None,
        };
        WriteError {
            failure: classify_write_failure(status, code.as_deref()),
            status,
            code: code.unwrap_or_default(),
            message: e.to_string(),
        }
    }
}

/// One object store: S3-compatible or a local directory.
#[derive(Debug)]
pub struct ObjectStorage {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    S3(Box<S3Backend>),
    Local(LocalBackend),
}

#[derive(Debug)]
struct S3Backend {
    config: S3Config,
    credential: AwsCredential,
    http: HttpClient,
    /// `AmazonS3` is bound to one bucket; build each once.
    buckets: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

#[derive(Debug)]
struct LocalBackend {
    root: PathBuf,
    fs: Arc<LocalFileSystem>,
}

impl ObjectStorage {
    /// Opens the store. A local root is created if missing.
    pub fn new(config: StorageConfig) -> Result<Self, StoreError> {
        let backend = match config {
            StorageConfig::S3(config) => {
                let http = ReqwestConnector::default()
                    .connect(&client_options(&config))
                    .map_err(|e| StoreError::Config(e.to_string()))?;
                let credential = AwsCredential {
                    key_id: config.access_key.clone(),
                    secret_key: config.secret_key.clone(),
                    token: None,
                };
                Backend::S3(Box::new(S3Backend {
                    config,
                    credential,
                    http,
                    buckets: Mutex::new(HashMap::new()),
                }))
            }
            StorageConfig::Local(root) => {
                cts_fs::create_dir_all(&root).map_err(|e| {
                    StoreError::Config(format!("cannot create {}: {e}", root.display()))
                })?;
                let root = root.canonicalize().map_err(|e| {
                    StoreError::Config(format!("cannot open {}: {e}", root.display()))
                })?;
                let fs = LocalFileSystem::new_with_prefix(&root)
                    .map_err(|e| StoreError::Config(e.to_string()))?;
                Backend::Local(LocalBackend {
                    root,
                    fs: Arc::new(fs),
                })
            }
        };
        Ok(Self { backend })
    }

    /// Stores `bytes` under `key`, replacing what was there, completely or
    /// not at all, with `metadata` as the object's user metadata.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        bytes: Bytes,
        metadata: &[(String, String)],
    ) -> Result<(), StoreError> {
        check_bucket_name(bucket)?;
        check_key(key)?;
        for (k, v) in metadata {
            check_metadata(k, v)?;
        }
        match &self.backend {
            Backend::S3(s3) => {
                let store = s3.store(bucket)?;
                let attributes: Attributes = metadata
                    .iter()
                    .map(|(k, v)| {
                        (
                            Attribute::Metadata(k.clone().into()),
                            object_store::AttributeValue::from(v.clone()),
                        )
                    })
                    .collect();
                let opts = PutOptions {
                    attributes,
                    ..PutOptions::default()
                };
                store
                    .put_opts(&Path::from(key), bytes.into(), opts)
                    .await
                    .map_err(|e| map_error(bucket, key, e))?;
                Ok(())
            }
            Backend::Local(local) => {
                let bucket_dir = local.root.join(bucket);
                let path = bucket_dir.join(key);
                let metadata: BTreeMap<String, String> = metadata.iter().cloned().collect();
                let (bucket, key) = (bucket.to_string(), key.to_string());
                blocking(move || {
                    if !bucket_dir.is_dir() {
                        return Err(StoreError::NoSuchBucket { bucket });
                    }
                    let io = |e: std::io::Error| map_io_error(&bucket, &key, e);
                    if let Some(parent) = path.parent() {
                        cts_fs::create_dir_all(parent).map_err(io)?;
                    }
                    let sidecar = sidecar_path(&path);
                    if metadata.is_empty() {
                        // A replaced object must not keep its predecessor's metadata.
                        match std::fs::remove_file(&sidecar) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                                return Err(io(e))
                            }
                            _ => {}
                        }
                    } else {
                        let json = serde_json::to_vec(&metadata).expect("a string map serializes");
                        cts_fs::write_atomic(&sidecar, &json, true).map_err(io)?;
                    }
                    cts_fs::write_atomic(&path, &bytes, true).map_err(io)
                })
                .await
            }
        }
    }

    /// The object's bytes.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Bytes, StoreError> {
        let (store, path) = self.locate(bucket, key)?;
        let result = store.get(&path).await;
        let result = self.not_found_context(bucket, key, result).await?;
        result.bytes().await.map_err(|e| map_error(bucket, key, e))
    }

    /// The object's size and user metadata.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectHead, StoreError> {
        let (store, path) = self.locate(bucket, key)?;
        match &self.backend {
            Backend::S3(_) => {
                let opts = GetOptions {
                    head: true,
                    ..GetOptions::default()
                };
                let result = store
                    .get_opts(&path, opts)
                    .await
                    .map_err(|e| map_error(bucket, key, e))?;
                let metadata = result
                    .attributes
                    .iter()
                    .filter_map(|(k, v)| match k {
                        Attribute::Metadata(name) => Some((name.to_string(), v.to_string())),
                        _ => None,
                    })
                    .collect();
                Ok(ObjectHead {
                    size: result.meta.size,
                    metadata,
                })
            }
            Backend::Local(local) => {
                let meta = store.head(&path).await;
                let meta = self.not_found_context(bucket, key, meta).await?;
                let sidecar = sidecar_path(&local.root.join(bucket).join(key));
                let (b, k) = (bucket.to_string(), key.to_string());
                let metadata = blocking(move || match std::fs::read(&sidecar) {
                    Ok(json) => serde_json::from_slice(&json).map_err(|e| StoreError::Other {
                        status: None,
                        message: format!("unreadable metadata {}: {e}", sidecar.display()),
                    }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
                    Err(e) => Err(map_io_error(&b, &k, e)),
                })
                .await?;
                Ok(ObjectHead {
                    size: meta.size,
                    metadata,
                })
            }
        }
    }

    /// Every object whose key lies under `prefix`, sorted by key. The prefix
    /// is a "directory": it matches whole `/`-separated segments (`a/b`
    /// lists `a/b/c`, not `a/bc`); an empty prefix lists the whole bucket.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, StoreError> {
        check_bucket_name(bucket)?;
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            check_key(prefix)?;
        }
        let (store, full_prefix, strip): (Arc<dyn ObjectStore>, String, usize) = match &self.backend
        {
            Backend::S3(s3) => (s3.store(bucket)?, prefix.to_string(), 0),
            Backend::Local(local) => {
                if !self.bucket_exists(bucket).await? {
                    return Err(StoreError::NoSuchBucket {
                        bucket: bucket.to_string(),
                    });
                }
                let full = if prefix.is_empty() {
                    bucket.to_string()
                } else {
                    format!("{bucket}/{prefix}")
                };
                (local.fs.clone(), full, bucket.len() + 1)
            }
        };
        let full_prefix = (!full_prefix.is_empty()).then(|| Path::from(full_prefix));
        let metas: Vec<_> = store
            .list(full_prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| map_error(bucket, prefix, e))?;
        let mut objects: Vec<ListedObject> = metas
            .into_iter()
            .map(|m| ListedObject {
                key: m.location.as_ref()[strip..].to_string(),
                size: m.size,
            })
            .filter(|o| !o.key.ends_with(METADATA_SIDECAR_SUFFIX))
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Deletes the object (and its local metadata sidecar). Deleting a
    /// missing object succeeds, as on S3.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        let (store, path) = self.locate(bucket, key)?;
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(map_error(bucket, key, e)),
        }
        if let Backend::Local(local) = &self.backend {
            let sidecar = sidecar_path(&local.root.join(bucket).join(key));
            let (bucket, key) = (bucket.to_string(), key.to_string());
            blocking(move || match std::fs::remove_file(&sidecar) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(map_io_error(&bucket, &key, e))
                }
                _ => Ok(()),
            })
            .await?;
        }
        Ok(())
    }

    /// Whether the bucket exists. S3: `HEAD /{bucket}` (403 is an error,
    /// not an answer).
    pub async fn bucket_exists(&self, bucket: &str) -> Result<bool, StoreError> {
        check_bucket_name(bucket)?;
        match &self.backend {
            Backend::S3(s3) => {
                let (status, body) = s3
                    .bucket_request(http::Method::HEAD, bucket, "", &[], Bytes::new())
                    .await?;
                match status {
                    200..=299 => Ok(true),
                    404 => Ok(false),
                    _ => Err(status_error(bucket, status, body)),
                }
            }
            Backend::Local(local) => Ok(local.root.join(bucket).is_dir()),
        }
    }

    /// Creates the bucket; an existing bucket of ours is no error.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), StoreError> {
        check_bucket_name(bucket)?;
        match &self.backend {
            Backend::S3(s3) => {
                // us-east-1 is the one region S3 wants no location for.
                let body = if s3.config.region == "us-east-1" {
                    Bytes::new()
                } else {
                    Bytes::from(format!(
                        "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                         <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                        s3.config.region
                    ))
                };
                let (status, body) = s3
                    .bucket_request(http::Method::PUT, bucket, "", &[], body)
                    .await?;
                match status {
                    200..=299 => Ok(()),
                    409 if s3_error_code(&body).as_deref() == Some("BucketAlreadyOwnedByYou") => {
                        Ok(())
                    }
                    _ => Err(status_error(bucket, status, body)),
                }
            }
            Backend::Local(local) => {
                let dir = local.root.join(bucket);
                let b = bucket.to_string();
                blocking(move || {
                    cts_fs::create_dir_all(&dir)
                        .and_then(|()| cts_fs::sync_dir(cts_fs::parent_dir(&dir)))
                        .map_err(|e| map_io_error(&b, "", e))
                })
                .await
            }
        }
    }

    /// Whether this server can write into the bucket, found out by writing
    /// (and then deleting) the object [`WRITE_CHECK_KEY`]: a policy may
    /// allow listing but refuse writes, so only a write tells.
    pub async fn check_write(&self, bucket: &str) -> Result<(), WriteError> {
        self.put(bucket, WRITE_CHECK_KEY, Bytes::new(), &[]).await?;
        // A policy may allow PutObject but not DeleteObject; the write worked.
        let _ = self.delete(bucket, WRITE_CHECK_KEY).await;
        Ok(())
    }

    fn locate(&self, bucket: &str, key: &str) -> Result<(Arc<dyn ObjectStore>, Path), StoreError> {
        check_bucket_name(bucket)?;
        check_key(key)?;
        Ok(match &self.backend {
            Backend::S3(s3) => (s3.store(bucket)?, Path::from(key)),
            Backend::Local(local) => (local.fs.clone(), Path::from(format!("{bucket}/{key}"))),
        })
    }

    /// A local "not found" is a missing bucket when its directory is gone,
    /// as S3 would say.
    async fn not_found_context<T>(
        &self,
        bucket: &str,
        key: &str,
        result: object_store::Result<T>,
    ) -> Result<T, StoreError> {
        match result {
            Ok(v) => Ok(v),
            Err(object_store::Error::NotFound { .. })
                if matches!(self.backend, Backend::Local(_))
                    && !self.bucket_exists(bucket).await? =>
            {
                Err(StoreError::NoSuchBucket {
                    bucket: bucket.to_string(),
                })
            }
            Err(e) => Err(map_error(bucket, key, e)),
        }
    }
}

impl S3Backend {
    fn store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let mut buckets = self.buckets.lock().expect("bucket cache lock");
        if let Some(store) = buckets.get(bucket) {
            return Ok(store.clone());
        }
        let c = &self.config;
        let store: Arc<dyn ObjectStore> = Arc::new(
            AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(&c.region)
                .with_endpoint(self.endpoint())
                .with_access_key_id(&c.access_key)
                .with_secret_access_key(&c.secret_key)
                .with_virtual_hosted_style_request(!c.path_style)
                .with_client_options(client_options(c))
                .with_retry(retry_config())
                .build()
                .map_err(|e| StoreError::Config(e.to_string()))?,
        );
        buckets.insert(bucket.to_string(), store.clone());
        Ok(store)
    }

    fn endpoint(&self) -> String {
        match &self.config.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://s3.{}.amazonaws.com", self.config.region),
        }
    }

    fn bucket_url(&self, bucket: &str) -> String {
        let endpoint = self.endpoint();
        if self.config.path_style {
            return format!("{endpoint}/{bucket}");
        }
        match endpoint.split_once("://") {
            Some((scheme, host)) => format!("{scheme}://{bucket}.{host}/"),
            None => format!("https://{bucket}.{endpoint}/"),
        }
    }

    /// One signed request on the bucket itself (`subresource`: `""`, or
    /// e.g. `lifecycle` for `?lifecycle`): its status and body.
    async fn bucket_request(
        &self,
        method: http::Method,
        bucket: &str,
        subresource: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<(u16, String), StoreError> {
        let mut url = self.bucket_url(bucket);
        if !subresource.is_empty() {
            url = format!("{url}?{subresource}");
        }
        let mut builder = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let mut request = builder
            .body(HttpRequestBody::from(body))
            .map_err(|e| StoreError::Config(format!("bad endpoint: {e}")))?;
        AwsAuthorizer::new(&self.credential, "s3", &self.config.region)
            .authorize(&mut request, None);
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| StoreError::Other {
                status: None,
                message: format!("bucket {bucket}: {e}"),
            })?;
        let status = response.status().as_u16();
        let body = response.into_body().bytes().await.unwrap_or_default();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn client_options(c: &S3Config) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(c.allow_http)
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120))
}

/// Few, short retries: the transfer has its own backoff and a bucket check
/// must answer while someone waits for it.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 2,
        retry_timeout: Duration::from_secs(20),
    }
}

fn status_error(bucket: &str, status: u16, body: String) -> StoreError {
    let message = if body.is_empty() {
        format!("HTTP {status}")
    } else {
        body
    };
    match status {
        404 => StoreError::NoSuchBucket {
            bucket: bucket.to_string(),
        },
        401 | 403 => StoreError::AccessDenied {
            bucket: bucket.to_string(),
            status: Some(status),
            message,
        },
        _ => StoreError::Other {
            status: Some(status),
            message,
        },
    }
}

fn map_error(bucket: &str, key: &str, e: object_store::Error) -> StoreError {
    let message = e.to_string();
    let code = s3_error_code(&message);
    // Listing wraps every answer in a generic error; the status and the S3
    // code are only in its message.
    let status = match &e {
        object_store::Error::NotFound { .. } => Some(404),
        object_store::Error::PermissionDenied { .. } => Some(403),
        object_store::Error::Unauthenticated { .. } => Some(401),
        _ => http_status(&message),
    };
    match (code.as_deref(), status) {
        (Some("NoSuchBucket"), _) => StoreError::NoSuchBucket {
            bucket: bucket.to_string(),
        },
        (_, Some(404)) => StoreError::NotFound {
            bucket: bucket.to_string(),
            key: key.to_string(),
        },
        (_, Some(401 | 403)) => StoreError::AccessDenied {
            bucket: bucket.to_string(),
            status,
            message,
        },
        _ => StoreError::Other { status, message },
    }
}

/// The status in object_store's "Server returned non-2xx status code: 404 …".
fn http_status(message: &str) -> Option<u16> {
    let rest = message.split("status code: ").nth(1)?;
    rest.get(..3)?.parse().ok()
}

fn map_io_error(bucket: &str, key: &str, e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => StoreError::AccessDenied {
            bucket: bucket.to_string(),
            status: None,
            message: format!("{bucket}/{key}: {e}"),
        },
        _ => StoreError::Other {
            status: None,
            message: format!("{bucket}/{key}: {e}"),
        },
    }
}

/// The `<Code>` of an S3 XML error body (or of a message quoting one).
fn s3_error_code(text: &str) -> Option<String> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    Some(text[start..start + len].to_string())
}

/// Bucket names as S3 and OBS allow them (and safe as a directory name):
/// 3–63 lowercase letters, digits, `-` and `.`, starting and ending with a
/// letter or digit, no `..`, no `.` next to `-`, not an IPv4 address. The
/// tracker API refuses what this refuses (CTS.0231), so a tracker never
/// names a bucket the store cannot write.
pub fn is_valid_bucket_name(bucket: &str) -> bool {
    let b = bucket.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !bucket.contains("..")
        && !bucket.contains(".-")
        && !bucket.contains("-.")
        && bucket.parse::<std::net::Ipv4Addr>().is_err()
}

fn check_bucket_name(bucket: &str) -> Result<(), StoreError> {
    if is_valid_bucket_name(bucket) {
        Ok(())
    } else {
        Err(StoreError::InvalidBucketName(bucket.to_string()))
    }
}

/// Keys that mean the same object on S3 and on disk: no `.`/`..` or empty
/// segments (no escaping the bucket directory), no `#` (local staging
/// files), no sidecar names.
fn check_key(key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && !key.ends_with(METADATA_SIDECAR_SUFFIX)
        && !key.chars().any(|c| c.is_control() || c == '#' || c == '\\')
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_string()))
    }
}

/// Metadata that survives the trip through HTTP headers unchanged.
fn check_metadata(key: &str, value: &str) -> Result<(), StoreError> {
    let key_ok = (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    let value_ok = value.bytes().all(|c| (0x20..0x7f).contains(&c));
    if key_ok && value_ok {
        Ok(())
    } else {
        Err(StoreError::InvalidMetadata(key.to_string()))
    }
}

fn sidecar_path(object: &FsPath) -> PathBuf {
    let mut s = object.as_os_str().to_owned();
    s.push(METADATA_SIDECAR_SUFFIX);
    s.into()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Other {
            status: None,
            message: format!("blocking task failed: {e}"),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_by_status_and_code() {
        use WriteFailure::*;
        assert_eq!(
            classify_write_failure(Some(404), Some("NoSuchBucket")),
            NoBucket
        );
        assert_eq!(classify_write_failure(Some(404), None), NoBucket);
        assert_eq!(
            classify_write_failure(Some(403), Some("AccessDenied")),
            PolicyError
        );
        assert_eq!(classify_write_failure(Some(403), None), PolicyError);
        assert_eq!(classify_write_failure(Some(401), None), PolicyError);
        assert_eq!(
            classify_write_failure(None, Some("AccessDenied")),
            PolicyError
        );
        assert_eq!(classify_write_failure(Some(503), Some("SlowDown")), Other);
        assert_eq!(classify_write_failure(None, None), Other);
    }

    #[test]
    fn write_error_from_store_error() {
        let denied = StoreError::AccessDenied {
            bucket: "b".into(),
            status: Some(403),
            message: "<Error><Code>AccessDenied</Code><Message>no</Message></Error>".into(),
        };
        let e = WriteError::from(denied);
        assert_eq!(e.failure, WriteFailure::PolicyError);
        assert_eq!(e.detail(), Some("bucketPolicyError"));
        assert_eq!((e.status, e.code.as_str()), (Some(403), "AccessDenied"));

        let e = WriteError::from(StoreError::NoSuchBucket { bucket: "b".into() });
        assert_eq!(e.detail(), Some("noBucket"));
        assert_eq!((e.status, e.code.as_str()), (Some(404), "NoSuchBucket"));

        let e = WriteError::from(StoreError::Other {
            status: None,
            message: "connection refused".into(),
        });
        assert_eq!((e.failure, e.detail()), (WriteFailure::Other, None));

        // Names the tracker's settings chose: never a silent retry.
        let e = WriteError::from(StoreError::InvalidBucketName("end-".into()));
        assert_eq!(e.detail(), Some("noBucket"));
        let e = WriteError::from(StoreError::InvalidKey("a/../b".into()));
        assert_eq!(e.detail(), Some("bucketPolicyError"));
    }

    #[test]
    fn names_and_keys() {
        assert!(check_bucket_name("my-bucket.1").is_ok());
        for bad in [
            "ab",
            "Upper",
            "-start",
            "end-",
            "end.",
            "a..b",
            "a.-b",
            "a-.b",
            "192.168.1.1",
            "../etc",
            "a/b",
        ] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
        assert!(check_key("CloudTraces/r/2016/5/19/system/ECS/x.json.gz").is_ok());
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/../b",
            "a/./b",
            "a#1",
            "x.metadata.json",
            "a\nb",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_metadata("meta-signature", "abc123").is_ok());
        assert!(check_metadata("Meta", "x").is_err());
        assert!(check_metadata("k", "line\nbreak").is_err());
        assert_eq!(
            s3_error_code("<Error><Code>NoSuchBucket</Code></Error>").as_deref(),
            Some("NoSuchBucket")
        );
        let listing = "Generic S3 error: Error performing list request: Server returned non-2xx status code: 403 Forbidden: <Error><Code>AccessDenied</Code></Error>";
        assert_eq!(http_status(listing), Some(403));
        assert_eq!(http_status("connection refused"), None);
    }
}
