//! Which project a bucket of the local store belongs to: the first project
//! that creates or uses it. Another project naming it is refused, so that
//! it cannot mix its files into the owner's (whose `cts verify` would then
//! fail). On S3 the operator's bucket policies decide: nothing is claimed.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path as FsPath;

use super::{blocking, check_bucket_name, map_io_error, Backend, ObjectStorage, StoreError};

/// Directory of the local store's root holding one file per claimed
/// bucket, named after it, holding the owner's project id (not a valid
/// bucket name, so no bucket can shadow it).
const OWNERS_DIR: &str = ".owners";

impl ObjectStorage {
    /// Claims `bucket` for `project` if nobody has; refuses it (access
    /// denied, the tracker's `bucketPolicyError`) if another project owns
    /// it. Always granted on S3.
    pub async fn claim_bucket(&self, bucket: &str, project: &str) -> Result<(), StoreError> {
        check_bucket_name(bucket)?;
        let Backend::Local(local) = &self.backend else {
            return Ok(());
        };
        let path = local.root.join(OWNERS_DIR).join(bucket);
        let (bucket, project) = (bucket.to_string(), project.to_string());
        blocking(move || claim(&path, &bucket, &project)).await
    }
}

fn claim(path: &FsPath, bucket: &str, project: &str) -> Result<(), StoreError> {
    let io = |e| map_io_error(bucket, "", e);
    let dir = cts_fs::parent_dir(path);
    cts_fs::create_dir_all(dir).map_err(io)?;
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            file.write_all(project.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            cts_fs::sync_dir(dir).map_err(io)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let owner = std::fs::read_to_string(path).map_err(io)?;
            // An empty file is a claim cut short by a crash: redo it.
            if owner.is_empty() {
                std::fs::write(path, project).map_err(io)?;
                return Ok(());
            }
            if owner == project {
                return Ok(());
            }
            Err(StoreError::AccessDenied {
                bucket: bucket.to_string(),
                status: Some(403),
                message: format!(
                    "bucketPolicyError: bucket {bucket} belongs to another project; \
                     use a bucket of this project's own"
                ),
            })
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StorageConfig;

    #[tokio::test]
    async fn the_first_project_owns_a_local_bucket() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ObjectStorage::new(StorageConfig::Local(tmp.path().join("obs"))).unwrap();
        store.claim_bucket("shared", "project-a").await.unwrap();
        store.claim_bucket("shared", "project-a").await.unwrap();
        let e = store.claim_bucket("shared", "project-b").await.unwrap_err();
        assert_eq!(e.status(), Some(403), "{e}");
        assert!(e.to_string().contains("bucketPolicyError"), "{e}");
        store.claim_bucket("other", "project-b").await.unwrap();
        assert!(store.claim_bucket("..", "project-b").await.is_err());
    }
}
