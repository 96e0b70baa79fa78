//! Durable file operations: the server key and the bootstrap file must be
//! complete and on disk before anything depends on them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::IdentityError;

/// Makes the entries of `dir` (new names, renames) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), IdentityError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IdentityError::io(dir, e))
}

/// A fresh sibling of `path` with mode 0600 holding `bytes`, fsync'd.
/// The random suffix keeps concurrent writers apart.
pub(crate) fn write_temp_sibling(path: &Path, bytes: &[u8]) -> Result<PathBuf, IdentityError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".tmp.{}",
        hex::encode(crate::rules::random_bytes::<4>())
    ));
    let tmp = path.with_file_name(name);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(IdentityError::io(&tmp, e))
        }
    }
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes` (mode 0600) so that a crash leaves either the
/// old or the new content, never a torn file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let tmp = write_temp_sibling(path, bytes)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(IdentityError::io(path, e));
    }
    sync_dir(parent_dir(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_with_mode_0600_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_into_missing_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("f.json");
        assert!(matches!(
            write_atomic(&path, b"x"),
            Err(IdentityError::Storage(_))
        ));
    }
}
