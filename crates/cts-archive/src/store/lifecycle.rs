//! Expiry of a tracker's files after `bucket_lifecycle` days. On S3 a
//! lifecycle rule of the bucket does it (the store deletes them itself,
//! also while CTS is down); a local directory has no rules, so the
//! transfer calls [`ObjectStorage::expire`] now and then, which deletes by
//! the same measure (days since the object was written).

use std::io;
use std::path::Path as FsPath;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest as _, Md5};

use super::{blocking, check_bucket_name, map_io_error, status_error, Backend, ObjectStorage};
use super::{s3_error_code, StoreError};

/// The ID of CTS's rule in a bucket's lifecycle configuration.
pub const LIFECYCLE_RULE_ID: &str = "cts-trace-files";
/// What expires: every tracker's trace and digest files.
pub const EXPIRING_PREFIX: &str = "CloudTraces/";

impl ObjectStorage {
    /// Sets the bucket's lifecycle configuration to one rule expiring the
    /// objects under `CloudTraces/` `days` days after they were written.
    /// It replaces the bucket's lifecycle configuration: a bucket CTS
    /// writes its trace files to is CTS's. A local directory has no rules
    /// (see [`ObjectStorage::expire`]): nothing to set.
    pub async fn set_lifecycle(&self, bucket: &str, days: u32) -> Result<(), StoreError> {
        check_bucket_name(bucket)?;
        let Backend::S3(s3) = &self.backend else {
            return Ok(());
        };
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Rule>\
             <ID>{LIFECYCLE_RULE_ID}</ID><Filter><Prefix>{EXPIRING_PREFIX}</Prefix></Filter>\
             <Status>Enabled</Status><Expiration><Days>{days}</Days></Expiration>\
             </Rule></LifecycleConfiguration>"
        );
        // S3 and OBS refuse a lifecycle configuration without Content-MD5.
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body.as_bytes()));
        let headers = [
            ("content-md5", md5),
            ("content-type", "application/xml".to_string()),
        ];
        let (status, text) = s3
            .bucket_request(
                http::Method::PUT,
                bucket,
                "lifecycle",
                &headers,
                Bytes::from(body),
            )
            .await?;
        match status {
            200..=299 => Ok(()),
            _ => Err(status_error(bucket, status, text)),
        }
    }

    /// The days of CTS's lifecycle rule on the bucket; `None` without one
    /// (and always for a local directory).
    pub async fn lifecycle_days(&self, bucket: &str) -> Result<Option<u32>, StoreError> {
        check_bucket_name(bucket)?;
        let Backend::S3(s3) = &self.backend else {
            return Ok(None);
        };
        let (status, text) = s3
            .bucket_request(http::Method::GET, bucket, "lifecycle", &[], Bytes::new())
            .await?;
        match status {
            200..=299 => Ok(rule_days(&text)),
            404 if s3_error_code(&text).as_deref() == Some("NoSuchLifecycleConfiguration") => {
                Ok(None)
            }
            _ => Err(status_error(bucket, status, text)),
        }
    }

    /// Deletes the objects under `CloudTraces/` of a local bucket written
    /// more than `days` days before `now`, and the directories that leaves
    /// empty; returns how many objects (and metadata sidecars) went. On S3
    /// the bucket's rule does this: nothing to do.
    pub async fn expire(
        &self,
        bucket: &str,
        days: u32,
        now: SystemTime,
    ) -> Result<usize, StoreError> {
        check_bucket_name(bucket)?;
        let Backend::Local(local) = &self.backend else {
            return Ok(0);
        };
        let dir = local.root.join(bucket).join(EXPIRING_PREFIX);
        let cutoff = now - Duration::from_secs(u64::from(days) * 86_400);
        let b = bucket.to_string();
        blocking(move || expire_dir(&dir, cutoff).map_err(|e| map_io_error(&b, EXPIRING_PREFIX, e)))
            .await
    }
}

/// The `<Days>` of the rule named [`LIFECYCLE_RULE_ID`] in a lifecycle
/// configuration document.
fn rule_days(xml: &str) -> Option<u32> {
    let rule = xml
        .split("<Rule>")
        .find(|r| r.contains(&format!("<ID>{LIFECYCLE_RULE_ID}</ID>")))?;
    let start = rule.find("<Days>")? + "<Days>".len();
    let len = rule[start..].find("</Days>")?;
    rule[start..start + len].trim().parse().ok()
}

fn expire_dir(dir: &FsPath, cutoff: SystemTime) -> io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut expired = 0;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            expired += expire_dir(&path, cutoff)?;
            // Only an emptied directory goes (the call fails on any other).
            let _ = std::fs::remove_dir(&path);
        } else if entry.metadata()?.modified()? < cutoff {
            std::fs::remove_file(&path)?;
            expired += 1;
        }
    }
    Ok(expired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_is_found_among_others() {
        let xml = "<LifecycleConfiguration><Rule><ID>theirs</ID><Expiration><Days>5</Days>\
                   </Expiration></Rule><Rule><ID>cts-trace-files</ID><Filter><Prefix>\
                   CloudTraces/</Prefix></Filter><Expiration><Days>30</Days></Expiration>\
                   </Rule></LifecycleConfiguration>";
        assert_eq!(rule_days(xml), Some(30));
        assert_eq!(rule_days("<LifecycleConfiguration/>"), None);
    }
}
