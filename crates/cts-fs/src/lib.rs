//! Files that hold traces or keys: private to the server's user (files 0600,
//! directories 0700, whatever the umask) and, where asked, durable.
//!
//! Every crate that writes such files creates them through here, so no
//! journal, segment, archive object, key or state file is ever readable by
//! other local users.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of every file created here.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory created here.
pub const DIR_MODE: u32 = 0o700;

/// `OpenOptions` whose `create` makes the file 0600 (an existing file keeps
/// its mode).
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Creates `dir` and its missing parents with mode 0700.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates `path` empty (0600) unless it exists: an SQLite database would be
/// created with the umask's mode, and its -wal and -shm files inherit it.
pub fn create_private(path: &Path) -> io::Result<()> {
    options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
}

/// Makes the entries of `dir` (new names, renames) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new
/// content, never a torn file: [`write_staged`], then a rename into place.
/// With `fsync`, the directory is synced too, so the new content survives a
/// power loss once this returns.
pub fn write_atomic(path: &Path, bytes: &[u8], fsync: bool) -> io::Result<()> {
    let staged = write_staged(path, bytes, fsync)?;
    if let Err(e) = std::fs::rename(&staged, path) {
        let _ = std::fs::remove_file(&staged);
        return Err(e);
    }
    if fsync {
        sync_dir(parent_dir(path))?;
    }
    Ok(())
}

/// A new sibling `{path}#{digits}` (0600) holding `bytes`, synced with
/// `fsync`, for the caller to move into place; on failure nothing is left.
///
/// The name is unique per process and call, so concurrent writers of one
/// path do not meet; it is a name the `object_store` crate's local listing
/// never shows, and that no store file name parses as.
pub fn write_staged(path: &Path, bytes: &[u8], fsync: bool) -> io::Result<PathBuf> {
    let staged = staged_name(path);
    let written = options()
        .write(true)
        .create_new(true)
        .open(&staged)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            if fsync {
                file.sync_all()?;
            }
            Ok(())
        });
    match written {
        Ok(()) => Ok(staged),
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            Err(e)
        }
    }
}

fn staged_name(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(
        "#{}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    name.into()
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn atomic_write_replaces_privately_and_leaves_no_staged_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_atomic(&path, b"one", true).unwrap();
        write_atomic(&path, b"two", false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_write_into_a_missing_directory_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("f.json");
        assert!(write_atomic(&path, b"x", true).is_err());
        assert!(!dir.path().join("missing").exists());
    }

    #[test]
    fn directories_and_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a").join("b");
        create_dir_all(&deep).unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&deep), 0o700);
        let db = deep.join("x.db");
        create_private(&db).unwrap();
        std::fs::write(&db, b"kept").unwrap();
        create_private(&db).unwrap();
        assert_eq!(std::fs::read(&db).unwrap(), b"kept");
        assert_eq!(mode(&db), 0o600);
    }
}
