//! The server key: the AES-256 key that encrypts access-key secrets.
//! On SQLite it is `identity/server.key`, created at first start; on
//! PostgreSQL no node keeps files, so it comes from the configuration
//! ([`ServerKey`]). Either way the database records its fingerprint, and a
//! different key stops the start instead of failing to decrypt later.

use std::fmt;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cts_db::Sql;
use sha2::{Digest, Sha256};

use crate::{rules, IdentityError};

/// A server key given by the configuration (PostgreSQL). Every node of one
/// database must be given the same key.
#[derive(Clone)]
pub struct ServerKey {
    bytes: [u8; 32],
    /// Where it came from (a setting or a file), for messages.
    origin: String,
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl ServerKey {
    /// The identity store's key from the store's secret key (the one key
    /// every node is given, which encrypts other secrets too): derived, so
    /// that no two uses share a key. `origin` names the setting, for
    /// messages; the value never appears in one.
    pub fn derive(store_key: &[u8; 32], origin: &str) -> ServerKey {
        let mut h = Sha256::new();
        h.update(b"cts-identity access-key secrets\0");
        h.update(store_key);
        ServerKey {
            bytes: h.finalize().into(),
            origin: origin.to_owned(),
        }
    }
}

/// Where the store takes its server key from.
pub(crate) enum KeySource<'a> {
    /// `server.key` in this directory, created when the database is new.
    Dir(&'a Path),
    Given(&'a ServerKey),
}

/// The key of `source`, checked against (or, in a new database, recorded
/// as) the fingerprint in `meta`. Runs in the transaction that opens the
/// store, so that nodes starting together record one fingerprint.
pub(crate) fn load(source: KeySource<'_>, tx: &dyn Sql) -> Result<[u8; 32], IdentityError> {
    let recorded = recorded_fingerprint(tx)?;
    let (key, origin) = match source {
        KeySource::Dir(dir) => {
            let path = dir.join("server.key");
            let key = match read_key(&path)? {
                Some(key) => key,
                None if recorded.is_some() => {
                    return Err(IdentityError::Crypto(format!(
                        "{} is missing but identity.db was written with it; restore it from backup",
                        path.display()
                    )))
                }
                None => create_key(&path)?,
            };
            (key, path.display().to_string())
        }
        KeySource::Given(key) => (key.bytes, key.origin.clone()),
    };
    let fingerprint = key_fingerprint(&key);
    let recorded = match recorded {
        Some(r) => r,
        None => {
            // A node starting at the same time may have recorded its own.
            tx.exec(
                "INSERT INTO meta (key, value) VALUES ('key_fingerprint', $1) \
                 ON CONFLICT DO NOTHING",
                &[fingerprint.as_str().into()],
            )?;
            recorded_fingerprint(tx)?.unwrap_or_default()
        }
    };
    if recorded != fingerprint {
        return Err(IdentityError::Crypto(format!(
            "{origin} is not the key the identity database was written with; \
             restore the original (every node needs the same key)"
        )));
    }
    Ok(key)
}

fn recorded_fingerprint(tx: &dyn Sql) -> Result<Option<String>, IdentityError> {
    tx.query_opt("SELECT value FROM meta WHERE key = 'key_fingerprint'", &[])?
        .map(|row| Ok(row[0].text()?.to_owned()))
        .transpose()
}

/// Identifies a key without revealing it, so the database remembers which
/// key encrypted its secrets.
fn key_fingerprint(key: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"cts-identity server.key fingerprint\0");
    h.update(key);
    hex::encode(h.finalize())
}

fn read_key(path: &Path) -> Result<Option<[u8; 32]>, IdentityError> {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(IdentityError::io(path, e)),
    };
    let mode = file
        .metadata()
        .map_err(|e| IdentityError::io(path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(IdentityError::Crypto(format!(
            "{} is accessible by group or others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        )));
    }
    let mut bytes = Vec::with_capacity(33);
    file.read_to_end(&mut bytes)
        .map_err(|e| IdentityError::io(path, e))?;
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        IdentityError::Crypto(format!(
            "{} has {} bytes, expected 32",
            path.display(),
            bytes.len()
        ))
    })?;
    Ok(Some(key))
}

/// Writes a new random key. It is written to a temporary file first and
/// hard-linked into place, so `server.key` never exists half-written and a
/// concurrent creator's key is never overwritten.
fn create_key(path: &Path) -> Result<[u8; 32], IdentityError> {
    let key = rules::random_bytes::<32>();
    let tmp = cts_fs::write_staged(path, &key, true).map_err(|e| IdentityError::io(path, e))?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            cts_fs::sync_dir(cts_fs::parent_dir(path)).map_err(|e| IdentityError::io(path, e))?;
            Ok(key)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_key(path)?
            .ok_or_else(|| IdentityError::Crypto(format!("{} vanished", path.display()))),
        Err(e) => Err(IdentityError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::{pg_database, pg_store, random_key};
    use crate::IdentityStore;

    #[test]
    fn the_key_is_derived_per_use_and_never_printed() {
        let store_key = [0xabu8; 32];
        let key = ServerKey::derive(&store_key, "store.secret_key");
        assert_ne!(key.bytes, store_key);
        assert_eq!(key.bytes, ServerKey::derive(&store_key, "other").bytes);
        assert_ne!(key.bytes, ServerKey::derive(&[0xac; 32], "k").bytes);
        assert_eq!(
            format!("{key:?}"),
            r#"ServerKey { origin: "store.secret_key", .. }"#
        );
    }

    /// Every node of one database must have the key its secrets were
    /// written with: another key stops the start, naming the setting.
    #[test]
    fn a_node_with_another_key_refuses_to_start() {
        let url = pg_database();
        let key = random_key();
        let first = pg_store(&url, &key);
        let alice = crate::testutil::user(&first, &first.create_domain("d1").unwrap().id, "a");
        let (ak, secret) = first.create_access_key(&alice.id, "").unwrap();
        let other = ServerKey::derive(&[9u8; 32], "store.secret_key");
        let pool = cts_db::PgSettings::new(url.parse().unwrap())
            .connect()
            .unwrap();
        match IdentityStore::open_postgres(pool, true, &other) {
            Err(IdentityError::Crypto(msg)) => {
                assert!(msg.contains("store.secret_key is not the key"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        let second = pg_store(&url, &key);
        assert_eq!(second.access_key_secret(&ak.access).unwrap().secret, secret);
    }
}
