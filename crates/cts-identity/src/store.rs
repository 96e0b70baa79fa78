//! Opening the store (SQLite in the data directory, or PostgreSQL shared
//! by any number of nodes), the server key, the built-in roles, and the
//! transaction and caching rules every operation follows.

use std::path::Path;
use std::sync::OnceLock;

use cts_db::{Db, DbError, Row, Sealer, Sql};
use parking_lot::Mutex;

use crate::access_key::KeyCache;
use crate::changes::{self, Changes};
use crate::read_cache::ReadCache;
use crate::role::Role;
use crate::server_key::{self, KeySource, ServerKey};
use crate::token::TokenCache;
use crate::{rules, schema, IdentityError};

/// The identity store. Share it as `Arc<IdentityStore>`: it is `Send + Sync`
/// and every method takes `&self`.
///
/// All methods are synchronous and some are slow on purpose (password
/// hashing, durable commits): async callers run them with `spawn_blocking`.
/// The hot read paths (access key secrets, token validation, a key owner's
/// user and domain, roles) are answered from in-memory caches.
///
/// Cache coherence: every write that can make a cached answer wrong empties
/// this store's caches after its commit and records the change in the
/// database, where every other store (node) sees it within
/// [`changes::POLL`]; a fill never puts back an answer read before such an
/// emptying (see [`crate::changes`]).
pub struct IdentityStore {
    db: Db,
    sealer: Sealer,
    /// Ids of the built-in roles, indexed by `Role as usize`.
    role_ids: [String; Role::ALL.len()],
    pub(crate) tokens: Mutex<TokenCache>,
    pub(crate) keys: Mutex<KeyCache>,
    /// Users, domains and roles read by every request.
    pub(crate) reads: Mutex<ReadCache>,
    pub(crate) changes: Changes,
    /// Hash of a random password, verified when a login names no usable user
    /// so that such a login costs as much as a real one.
    dummy_hash: OnceLock<String>,
}

impl std::fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityStore").finish_non_exhaustive()
    }
}

/// The PostgreSQL schema of the identity store, for `ctsd migrate`.
pub fn pg_schema() -> &'static cts_db::PgSchema {
    &schema::PG_SCHEMA
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
        let db = Db::sqlite(dir, "identity.db", &schema::migrations())?;
        IdentityStore::with_db(db, KeySource::Dir(dir))
    }

    /// Opens the store in the PostgreSQL database of `pool`, shared with
    /// the other nodes, applying pending migrations when `auto_migrate`
    /// (otherwise refusing a schema that is not current). `key` must be the
    /// key every other node was given: its fingerprint is checked against
    /// the database's.
    pub fn open_postgres(
        pool: cts_db::Pool,
        auto_migrate: bool,
        key: &ServerKey,
    ) -> Result<IdentityStore, IdentityError> {
        let db = Db::postgres(pool, &schema::PG_SCHEMA, auto_migrate)?;
        IdentityStore::with_db(db, KeySource::Given(key))
    }

    fn with_db(db: Db, key: KeySource<'_>) -> Result<IdentityStore, IdentityError> {
        let (key, role_ids) = db.transaction(|tx| {
            let key = server_key::load(key, tx)?;
            changes::ensure_row(tx)?;
            Ok::<_, IdentityError>((key, ensure_roles(tx)?))
        })?;
        Ok(IdentityStore {
            db,
            sealer: Sealer::new(&key),
            role_ids,
            tokens: Mutex::new(TokenCache::default()),
            keys: Mutex::new(KeyCache::default()),
            reads: Mutex::new(ReadCache::default()),
            changes: Changes::default(),
            dummy_hash: OnceLock::new(),
        })
    }

    /// Runs `f` in one transaction that changes identities: it records the
    /// change for the other nodes, and this store's caches are emptied
    /// after the commit.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, IdentityError>,
    ) -> Result<T, IdentityError> {
        let out = off_async(|| {
            self.db.transaction(|tx| {
                let out = f(tx)?;
                changes::record(tx)?;
                Ok::<_, IdentityError>(out)
            })
        })?;
        self.clear_caches();
        Ok(out)
    }

    /// Runs `f` in one transaction that makes no cached answer wrong (a new
    /// token, a key's last use, a lockout): the caches stay.
    pub(crate) fn write_quiet<T>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, IdentityError>,
    ) -> Result<T, IdentityError> {
        off_async(|| self.db.transaction(f))
    }

    /// Runs `f` with a connection (reads, and cache fills).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&dyn Sql) -> Result<T, IdentityError>,
    ) -> Result<T, IdentityError> {
        off_async(|| self.db.read(f))
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

    /// The secret sealed (`cts_db::Sealer`), bound to `aad` (the access key
    /// id) so a ciphertext moved to another row does not decrypt.
    pub(crate) fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, IdentityError> {
        Ok(self.sealer.seal(plaintext, aad))
    }

    pub(crate) fn decrypt(&self, stored: &[u8], aad: &[u8]) -> Result<Vec<u8>, IdentityError> {
        self.sealer
            .open(stored, aad)
            .map_err(|e| IdentityError::Crypto(e.to_string()))
    }
}

pub(crate) use cts_clock::now_ms;

/// Runs database work `f`. Called on an async worker of a multi-threaded
/// runtime (the server's request paths call the cached reads directly),
/// the worker hands its other tasks over while `f` blocks; PostgreSQL's
/// blocking client cannot run on a worker at all. Elsewhere `f` just runs.
/// Under [`from_memory`] it fails at once instead.
fn off_async<T>(f: impl FnOnce() -> Result<T, IdentityError>) -> Result<T, IdentityError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    memory_only_refuses()?;
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

thread_local! {
    /// Whether this thread runs [`from_memory`], and whether a call then
    /// needed the database.
    static MEMORY_ONLY: std::cell::Cell<(bool, bool)> = const { std::cell::Cell::new((false, false)) };
}

/// Runs `f` (calls of identity stores) answering only from memory, for a
/// caller that must not block (the server's async workers): `None` when
/// one of its calls would have gone to the database; that call then failed
/// at once, having read and written nothing, and the caller runs `f` again
/// where it may block. Spares the server a hop to a blocking thread per
/// call on every signed request, whose answers are nearly always cached.
pub fn from_memory<T>(f: impl FnOnce() -> T) -> Option<T> {
    /// Puts back the state before the call (a nested call's miss is the
    /// outer call's too), also when `f` panics.
    struct Reset((bool, bool));
    impl Drop for Reset {
        fn drop(&mut self) {
            let (memory_only, missed) = self.0;
            let inner_missed = MEMORY_ONLY.get().1;
            MEMORY_ONLY.set((memory_only, memory_only && (missed || inner_missed)));
        }
    }
    let _reset = Reset(MEMORY_ONLY.replace((true, false)));
    let out = f();
    let (_, missed) = MEMORY_ONLY.get();
    (!missed).then_some(out)
}

/// Under [`from_memory`]: notes that a call needed the database (or
/// Argon2's deliberately slow work), and fails.
pub(crate) fn memory_only_refuses() -> Result<(), IdentityError> {
    let (memory_only, _) = MEMORY_ONLY.get();
    if memory_only {
        MEMORY_ONLY.set((true, true));
        return Err(IdentityError::NotInMemory);
    }
    Ok(())
}

/// A name taken by a concurrent writer (another node) between the check
/// and the write: the same `Conflict` the check answers.
pub(crate) fn taken(e: DbError, what: &'static str, name: &str) -> IdentityError {
    if e.is_unique_violation() {
        IdentityError::conflict(what, name)
    } else {
        e.into()
    }
}

/// Maps "no row" to `NotFound { what, id }`.
pub(crate) fn found(row: Option<Row>, what: &'static str, id: &str) -> Result<Row, IdentityError> {
    row.ok_or_else(|| IdentityError::not_found(what, id))
}

/// Inserts the built-in roles that are missing and returns all their ids.
fn ensure_roles(tx: &dyn Sql) -> Result<[String; Role::ALL.len()], IdentityError> {
    let mut ids: [String; Role::ALL.len()] = Default::default();
    for role in Role::ALL {
        let id = rules::new_id();
        tx.exec(
            "INSERT INTO roles (id, name, description) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[
                id.as_str().into(),
                role.name().into(),
                role.description().into(),
            ],
        )?;
        let row = tx.query_opt(
            "SELECT id FROM roles WHERE name = $1",
            &[role.name().into()],
        )?;
        ids[role as usize] = found(row, "role", role.name())?[0].text()?.to_owned();
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use rusqlite::Connection;

    use super::*;
    use crate::testdb::{both, temp_store};

    both!(
        ciphertext_is_bound_to_its_aad_and_key,
        a_name_taken_meanwhile_is_a_conflict,
        reads_and_writes_work_on_an_async_worker,
        from_memory_answers_what_is_cached_and_touches_no_database
    );

    /// What a signed request reads is answered from memory once cached;
    /// whatever needs the database (a miss, a write, the look for other
    /// nodes' changes once a second) is refused at once, changes nothing,
    /// and the same call then succeeds where blocking is allowed.
    fn from_memory_answers_what_is_cached_and_touches_no_database() {
        use crate::testutil::*;
        let (_tmp, store) = temp_store();
        let (domain, project) = domain_and_project(&store, "d1");
        let alice = user(&store, &domain.id, "alice");
        let (key, _) = store.create_access_key(&alice.id, "").unwrap();
        // What the middleware asks of a signed request.
        let lookups = || {
            let signing = store.access_key_secret(&key.access)?;
            let user = store.get_user(&signing.user_id)?;
            store.touch_access_key(&key.access, now_ms())?;
            store.effective_roles(&user.id, &project.id)?;
            store.get_domain(&user.domain_id)
        };
        // The look for other nodes' changes made (by an unrelated read), so
        // that what follows is refused for its cache misses alone: nothing
        // was cached or written by the attempt.
        store.get_domain(&domain.id).unwrap();
        assert!(from_memory(lookups).is_none());
        assert!(from_memory(lookups).is_none());
        assert_eq!(lookups().unwrap().id, domain.id);
        assert_eq!(from_memory(lookups).unwrap().unwrap().id, domain.id);
        // A write is refused and not made, and so is Argon2's slow work.
        assert!(from_memory(|| store.create_domain("d2")).is_none());
        assert!(
            store.create_domain("d2").is_ok(),
            "d2 was made under from_memory"
        );
        let new_user = crate::NewUser {
            domain_id: domain.id.clone(),
            name: "bob".into(),
            description: String::new(),
            password: Some("a long enough password 1".into()),
            email: None,
            default_project_id: None,
            enabled: true,
        };
        assert!(from_memory(|| crate::user::hash_password("x")).is_none());
        assert!(from_memory(|| store.create_user(&new_user)).is_none());
        // The write emptied the caches: a miss again, then cached again.
        assert!(from_memory(lookups).is_none());
        lookups().unwrap();
        assert!(from_memory(lookups).is_some());
        // A nested call's miss is the outer call's too, and the outer call
        // stays in memory after it.
        let nested = from_memory(|| {
            let inner = from_memory(|| store.create_domain("d3"));
            assert!(inner.is_none());
            store.create_domain("d3")
        });
        assert!(nested.is_none());
        assert!(from_memory(|| (from_memory(lookups), lookups())).is_some());
        // The look for other nodes' changes is due once per POLL: the first
        // call after it goes to the database.
        std::thread::sleep(crate::changes::POLL);
        assert!(from_memory(lookups).is_none());
        lookups().unwrap();
        assert!(from_memory(lookups).is_some());
        // A panic inside leaves the thread as it was: calls reach the
        // database again.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            from_memory(|| panic!("a bad lookup"))
        }));
        assert!(panicked.is_err());
        assert!(store.create_domain("d3").is_ok());
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
        drop(store);
        let conn = Connection::open(dir.join("identity.db")).unwrap();
        let pragma = |name: &str| -> rusqlite::types::Value {
            conn.pragma_query_value(None, name, |r| r.get(0)).unwrap()
        };
        assert_eq!(pragma("user_version"), 2.into());
        assert_eq!(pragma("journal_mode"), "wal".to_string().into());
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

    fn ciphertext_is_bound_to_its_aad_and_key() {
        let (_tmp, store) = temp_store();
        let sealed = store.encrypt(b"secret", b"AK1").unwrap();
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

    /// What a writer on another node meets when it inserted the same name
    /// after this one's check: the check's `Conflict`, not a storage error.
    fn a_name_taken_meanwhile_is_a_conflict() {
        let (_tmp, store) = temp_store();
        store.create_domain("alpha").unwrap();
        let twin = store.write(|tx| {
            let sql = "INSERT INTO domains (id, name, enabled, created_at) VALUES ($1, $2, 1, 0)";
            tx.exec(sql, &["x".into(), "alpha".into()])
                .map_err(|e| taken(e, "domain", "alpha"))
        });
        assert!(
            matches!(twin, Err(IdentityError::Conflict { what: "domain", ref name }) if name == "alpha"),
            "{twin:?}"
        );
    }

    /// The server calls the cached reads on its async workers, where
    /// PostgreSQL's blocking client would panic.
    fn reads_and_writes_work_on_an_async_worker() {
        let (_tmp, store) = temp_store();
        let store = std::sync::Arc::new(store);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let on_worker = runtime.spawn(async move {
            let domain = store.create_domain("alpha")?;
            store.get_domain(&domain.id)
        });
        let domain = runtime.block_on(on_worker).unwrap().unwrap();
        assert_eq!(domain.name, "alpha");
    }
}
