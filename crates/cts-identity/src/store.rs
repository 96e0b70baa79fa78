//! Opening the store: directory, SQLite schema, server key, built-in roles,
//! and the locking and caching rules every operation follows.

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use sha2::{Digest, Sha256};

use crate::access_key::KeyCache;
use crate::read_cache::ReadCache;
use crate::role::Role;
use crate::rules;
use crate::token::TokenCache;
use crate::IdentityError;

/// Length of the AES-GCM nonce stored in front of each ciphertext.
const NONCE_LEN: usize = 12;

/// Version 1.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS domains (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    enabled INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    region TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (domain_id, name)
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    email TEXT,
    default_project_id TEXT REFERENCES projects(id) ON DELETE SET NULL,
    password_hash TEXT,
    created_at INTEGER NOT NULL,
    password_changed_at INTEGER,
    UNIQUE (domain_id, name)
);
CREATE INDEX IF NOT EXISTS users_default_project ON users(default_project_id);
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (domain_id, name)
);
CREATE TABLE IF NOT EXISTS memberships (
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memberships_user ON memberships(user_id);
CREATE TABLE IF NOT EXISTS roles (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS user_assignments (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles(id),
    PRIMARY KEY (project_id, user_id, role_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS user_assignments_user ON user_assignments(user_id);
CREATE TABLE IF NOT EXISTS group_assignments (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles(id),
    PRIMARY KEY (project_id, group_id, role_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS group_assignments_group ON group_assignments(group_id);
CREATE TABLE IF NOT EXISTS access_keys (
    access TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    secret BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'inactive')),
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_use_at INTEGER
);
CREATE INDEX IF NOT EXISTS access_keys_user ON access_keys(user_id);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id TEXT REFERENCES projects(id) ON DELETE CASCADE,
    domain_id TEXT REFERENCES domains(id) ON DELETE CASCADE,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL,
    methods TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens(expires_at);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens(user_id);
";

/// Version 2: domain assignments; the login lockouts, which some databases
/// of version 1 already have.
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS domain_assignments (
    domain_id TEXT NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role_id TEXT NOT NULL REFERENCES roles(id),
    PRIMARY KEY (domain_id, user_id, role_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS domain_assignments_user ON domain_assignments(user_id);
CREATE TABLE IF NOT EXISTS login_lockouts (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    locked_until INTEGER NOT NULL,
    PRIMARY KEY (user_id, source)
) WITHOUT ROWID;
";

/// The schema's migrations, in order; `user_version` counts those applied.
fn migrations() -> cts_sqlite::Migrations<'static> {
    cts_sqlite::Migrations::new(vec![
        cts_sqlite::M::up(SCHEMA),
        cts_sqlite::M::up_with_hook(SCHEMA_V2, admins_become_domain_admins),
    ])
}

/// Before version 2, `admin` on any project managed the whole domain: those
/// users keep that power as domain admins (the README tells operators to
/// review them). A new database has no assignments yet.
fn admins_become_domain_admins(tx: &Transaction<'_>) -> cts_sqlite::HookResult {
    tx.execute(
        "INSERT OR IGNORE INTO domain_assignments (domain_id, user_id, role_id) \
         SELECT p.domain_id, a.user_id, a.role_id FROM user_assignments a \
         JOIN projects p ON p.id = a.project_id \
         JOIN roles r ON r.id = a.role_id WHERE r.name = ?1",
        [Role::Admin.name()],
    )?;
    Ok(())
}

/// The identity store. Share it as `Arc<IdentityStore>`: it is `Send + Sync`
/// and every method takes `&self`.
///
/// All methods are synchronous and some are slow on purpose (password
/// hashing, fsync'd SQLite commits): async callers run them with
/// `spawn_blocking`. One SQLite connection behind a mutex serialises all
/// database work; the hot read paths (access key secrets, token validation,
/// a key owner's user and domain, roles) are answered from in-memory caches
/// without it.
///
/// Cache coherence: caches are filled only while the connection lock is
/// held, and every write that can make a cached answer wrong clears it while
/// holding the same lock. A fill can therefore never put back an answer that
/// a concurrent write has just invalidated.
pub struct IdentityStore {
    conn: Mutex<Connection>,
    cipher: Aes256Gcm,
    /// Ids of the built-in roles, indexed by `Role as usize`.
    role_ids: [String; Role::ALL.len()],
    pub(crate) tokens: Mutex<TokenCache>,
    pub(crate) keys: Mutex<KeyCache>,
    /// Users, domains and roles read by every request.
    pub(crate) reads: Mutex<ReadCache>,
    /// Hash of a random password, verified when a login names no usable user
    /// so that such a login costs as much as a real one.
    dummy_hash: OnceLock<String>,
}

impl std::fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityStore").finish_non_exhaustive()
    }
}

impl IdentityStore {
    /// Opens (creating on first use) the store in `dir`, which is
    /// `DATA_DIR/identity`: `identity.db` and `server.key` live there.
    ///
    /// Fails with `Crypto` when `server.key` is missing, unreadable by mode
    /// (group or others may access it), of the wrong length, or not the key
    /// the database was written with: a new key would make every stored
    /// secret undecryptable, so it is never silently replaced.
    pub fn open(dir: &Path) -> Result<IdentityStore, IdentityError> {
        // It holds password hashes; cts-sqlite makes it private and durable
        // (a commit survives a power loss: revocations, new credentials).
        let mut conn = cts_sqlite::open(dir, "identity.db", &migrations())
            .map_err(|e| IdentityError::Storage(e.to_string()))?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let key = load_or_create_key(dir, &tx)?;
        let role_ids = ensure_roles(&tx)?;
        tx.commit()?;
        let cipher = Aes256Gcm::new_from_slice(&key)
            .map_err(|e| IdentityError::Crypto(format!("server.key: {e}")))?;
        Ok(IdentityStore {
            conn: Mutex::new(conn),
            cipher,
            role_ids,
            tokens: Mutex::new(TokenCache::default()),
            keys: Mutex::new(KeyCache::default()),
            reads: Mutex::new(ReadCache::default()),
            dummy_hash: OnceLock::new(),
        })
    }

    /// Runs `f` in one immediate transaction and commits when it succeeds.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, IdentityError>,
    ) -> Result<T, IdentityError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        // Under the connection lock, like every fill.
        self.reads.lock().clear();
        Ok(out)
    }

    /// Runs `f` with the connection (reads, and cache fills).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, IdentityError>,
    ) -> Result<T, IdentityError> {
        f(&self.conn.lock())
    }

    /// Drops every cached token and secret. Called, under the connection
    /// lock, by writes that change users, domains or projects: they are rare,
    /// and the caches refill on demand.
    pub(crate) fn clear_caches(&self) {
        self.tokens.lock().clear();
        self.keys.lock().clear();
    }

    pub(crate) fn role_id(&self, role: Role) -> &str {
        &self.role_ids[role as usize]
    }

    /// Made on first use: opening the store stays fast.
    pub(crate) fn dummy_hash(&self) -> Result<&str, IdentityError> {
        if let Some(hash) = self.dummy_hash.get() {
            return Ok(hash);
        }
        let hash = crate::user::hash_password(&rules::random_password())?;
        Ok(self.dummy_hash.get_or_init(|| hash))
    }

    /// `nonce || AES-256-GCM(secret)`, bound to `aad` (the access key id) so
    /// a ciphertext moved to another row does not decrypt.
    pub(crate) fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let nonce = rules::random_bytes::<NONCE_LEN>();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| IdentityError::Crypto("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub(crate) fn decrypt(&self, stored: &[u8], aad: &[u8]) -> Result<Vec<u8>, IdentityError> {
        if stored.len() < NONCE_LEN {
            return Err(IdentityError::Crypto(
                "stored ciphertext is truncated".into(),
            ));
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| IdentityError::Crypto("stored ciphertext does not authenticate".into()))
    }
}

pub(crate) use cts_clock::now_ms;

/// Maps "no row" to `NotFound { what, id }`.
pub(crate) fn found<T>(
    row: rusqlite::Result<T>,
    what: &'static str,
    id: &str,
) -> Result<T, IdentityError> {
    row.optional()?
        .ok_or_else(|| IdentityError::not_found(what, id))
}

/// Identifies a key without revealing it, so the database remembers which
/// key encrypted its secrets.
fn key_fingerprint(key: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"cts-identity server.key fingerprint\0");
    h.update(key);
    hex::encode(h.finalize())
}

fn load_or_create_key(dir: &Path, tx: &Transaction<'_>) -> Result<[u8; 32], IdentityError> {
    let path = dir.join("server.key");
    let recorded: Option<String> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'key_fingerprint'",
            [],
            |r| r.get(0),
        )
        .optional()?;
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
    let fingerprint = key_fingerprint(&key);
    match recorded {
        Some(r) if r != fingerprint => Err(IdentityError::Crypto(format!(
            "{} is not the key identity.db was written with; restore the original",
            path.display()
        ))),
        Some(_) => Ok(key),
        None => {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('key_fingerprint', ?1)",
                [&fingerprint],
            )?;
            Ok(key)
        }
    }
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

/// Inserts the built-in roles that are missing and returns all their ids.
fn ensure_roles(tx: &Transaction<'_>) -> Result<[String; Role::ALL.len()], IdentityError> {
    let mut ids: [String; Role::ALL.len()] = Default::default();
    for role in Role::ALL {
        tx.execute(
            "INSERT OR IGNORE INTO roles (id, name, description) VALUES (?1, ?2, ?3)",
            params![rules::new_id(), role.name(), role.description()],
        )?;
        ids[role as usize] =
            tx.query_row("SELECT id FROM roles WHERE name = ?1", [role.name()], |r| {
                r.get(0)
            })?;
    }
    Ok(ids)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A store in a fresh temporary directory (kept alive by the guard).
    pub(crate) fn temp_store() -> (tempfile::TempDir, IdentityStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(&dir.path().join("identity")).unwrap();
        (dir, store)
    }

    fn assert_crypto_error(r: Result<IdentityStore, IdentityError>, needle: &str) {
        match r {
            Err(IdentityError::Crypto(msg)) => assert!(msg.contains(needle), "{msg}"),
            other => panic!("expected Crypto error, got {other:?}"),
        }
    }

    #[test]
    fn open_creates_private_layout_and_reopens() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data").join("identity");
        drop(IdentityStore::open(&dir).unwrap());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("server.key")), 0o600);
        assert_eq!(mode(&dir.join("identity.db")), 0o600);
        assert_eq!(fs::read(dir.join("server.key")).unwrap().len(), 32);
        let key = fs::read(dir.join("server.key")).unwrap();
        let store = IdentityStore::open(&dir).unwrap();
        assert_eq!(fs::read(dir.join("server.key")).unwrap(), key);
        let version: i64 = store
            .read(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
            .unwrap();
        assert_eq!(version, 2);
        let (journal, sync): (String, i64) = store
            .read(|c| {
                Ok((
                    c.pragma_query_value(None, "journal_mode", |r| r.get(0))?,
                    c.pragma_query_value(None, "synchronous", |r| r.get(0))?,
                ))
            })
            .unwrap();
        assert_eq!((journal.as_str(), sync), ("wal", 2));
    }

    #[test]
    fn missing_wrong_or_exposed_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("identity");
        drop(IdentityStore::open(&dir).unwrap());
        let key_path = dir.join("server.key");
        let key = fs::read(&key_path).unwrap();

        fs::remove_file(&key_path).unwrap();
        assert_crypto_error(IdentityStore::open(&dir), "missing");
        assert!(!key_path.exists(), "a missing key must not be regenerated");

        cts_fs::write_atomic(&key_path, &[7u8; 32], false).unwrap();
        assert_crypto_error(IdentityStore::open(&dir), "not the key");

        cts_fs::write_atomic(&key_path, &key[..31], false).unwrap();
        assert_crypto_error(IdentityStore::open(&dir), "31 bytes");

        cts_fs::write_atomic(&key_path, &key, false).unwrap();
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_crypto_error(IdentityStore::open(&dir), "chmod 600");

        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
        IdentityStore::open(&dir).unwrap();
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("identity");
        drop(IdentityStore::open(&dir).unwrap());
        let conn = Connection::open(dir.join("identity.db")).unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
        drop(conn);
        match IdentityStore::open(&dir) {
            Err(IdentityError::Storage(msg)) => assert!(msg.contains("schema version"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ciphertext_is_bound_to_its_aad_and_key() {
        let (_tmp, store) = temp_store();
        let sealed = store.encrypt(b"secret", b"AK1").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 6 + 16);
        assert_eq!(store.decrypt(&sealed, b"AK1").unwrap(), b"secret");
        assert!(matches!(
            store.decrypt(&sealed, b"AK2"),
            Err(IdentityError::Crypto(_))
        ));
        assert!(matches!(
            store.decrypt(&sealed[..5], b"AK1"),
            Err(IdentityError::Crypto(_))
        ));
        let (_tmp2, other) = temp_store();
        assert!(matches!(
            other.decrypt(&sealed, b"AK1"),
            Err(IdentityError::Crypto(_))
        ));
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<IdentityStore>();
    }
}
