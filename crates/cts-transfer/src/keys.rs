//! The digest signing keys: on an embedded node `DATA_DIR/transfer/transfer.db`
//! (0600; key material, not consumer state, and written by `ctsd
//! rotate-digest-key` from another process, so they keep their own file);
//! with several nodes the same table in PostgreSQL ([`PG_SCHEMA`]), the
//! private halves sealed under the store's secret key ([`SECRET_PURPOSE`]).
//!
//! One key is current (`valid_to` unset): a unique index says so, so that
//! nodes rotating at once, or making the first key at once, leave exactly
//! one; the loser of such a race retries on what the winner committed.

use std::path::Path;

use cts_db::{Db, DbError, PgMigration, PgSchema, Row, SecretKey, Sql};
use cts_sqlite::{Migrations, M};

use crate::TransferError;

/// What the digest signing keys derive from `store.secret_key`
/// ([`SecretKey::derive`]).
pub const SECRET_PURPOSE: &str = "cts-transfer digest signing keys";

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS signing_keys (
    fingerprint TEXT PRIMARY KEY,
    private_pem TEXT NOT NULL,
    public_pem TEXT NOT NULL,
    valid_from INTEGER NOT NULL,
    valid_to INTEGER
);
";

/// Version 2: one current key; the fingerprint of the secret key that
/// sealed the private halves, when one did.
const SQLITE_CURRENT: &str = "
CREATE UNIQUE INDEX signing_keys_current ON signing_keys ((valid_to IS NULL))
    WHERE valid_to IS NULL;
CREATE TABLE signing_key_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT NOT NULL
);
";

/// The digest signing keys in PostgreSQL, recorded in
/// `transfer_schema_migrations`; `ctsd migrate` applies them.
pub static PG_SCHEMA: PgSchema = PgSchema {
    ledger: "transfer_schema_migrations",
    migrations: &[PgMigration {
        version: 1,
        name: "digest signing keys, sealed",
        sql: "
CREATE TABLE signing_keys (
    fingerprint TEXT PRIMARY KEY,
    private_pem TEXT NOT NULL,
    public_pem TEXT NOT NULL,
    valid_from BIGINT NOT NULL,
    valid_to BIGINT
);
CREATE UNIQUE INDEX signing_keys_current ON signing_keys ((valid_to IS NULL))
    WHERE valid_to IS NULL;
CREATE TABLE signing_key_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT NOT NULL
);
",
    }],
};

/// How often a write that lost a race to another node is redone.
const RACE_RETRIES: usize = 5;

/// A digest signing key as stored, its private half in the clear.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub fingerprint: String,
    pub private_pem: String,
    pub public_pem: String,
    /// Unix seconds.
    pub valid_from: i64,
    pub valid_to: Option<i64>,
}

/// The signing keys of this node (SQLite) or of every node (PostgreSQL).
pub struct Keys {
    pub(crate) db: Db,
    secret: Option<SecretKey>,
}

fn db_error(e: DbError) -> TransferError {
    TransferError::State(e.to_string())
}

impl Keys {
    /// Opens (creating on first use) `dir/transfer.db`; `dir` is
    /// `DATA_DIR/transfer`. With `secret`, new keys are sealed under it.
    pub fn open(dir: &Path, secret: Option<SecretKey>) -> Result<Keys, TransferError> {
        let migrations = Migrations::new(vec![M::up(SQLITE_SCHEMA), M::up(SQLITE_CURRENT)]);
        let db = Db::sqlite(dir, "transfer.db", &migrations).map_err(db_error)?;
        Keys::on(db, secret)
    }

    /// The keys on `db` (the file of [`Keys::open`], or PostgreSQL opened
    /// with [`PG_SCHEMA`], which needs `secret`). Refuses a secret key
    /// other than the one the stored keys were sealed under, and a missing
    /// one where keys are sealed, naming the setting.
    pub fn on(db: Db, secret: Option<SecretKey>) -> Result<Keys, TransferError> {
        const SETTING: &str = "store.secret_key (CTS_STORE_SECRET_KEY) or store.secret_key_file";
        if db.is_postgres() && secret.is_none() {
            return Err(TransferError::Key(format!(
                "the digest signing keys in PostgreSQL are sealed under the store's secret key: \
                 set {SETTING}, the same on every node"
            )));
        }
        let sealed_under = db
            .transaction(|tx| {
                if let Some(s) = &secret {
                    tx.exec(
                        "INSERT INTO signing_key_secret (id, fingerprint) VALUES (1, $1) \
                         ON CONFLICT (id) DO NOTHING",
                        &[s.fingerprint().into()],
                    )?;
                }
                tx.query_opt(
                    "SELECT fingerprint FROM signing_key_secret WHERE id = 1",
                    &[],
                )?
                .map(|r| r[0].text().map(str::to_owned))
                .transpose()
            })
            .map_err(db_error)?;
        match (&secret, sealed_under) {
            (Some(s), Some(f)) if f != s.fingerprint() => Err(TransferError::Key(format!(
                "the digest signing keys are sealed under another secret key (fingerprint {f}) \
                 than {SETTING} gives (fingerprint {}): give every node the same key",
                s.fingerprint()
            ))),
            (None, Some(f)) => Err(TransferError::Key(format!(
                "the digest signing keys are sealed under a secret key (fingerprint {f}): set \
                 {SETTING}"
            ))),
            _ => Ok(Keys { db, secret }),
        }
    }

    /// Every key, oldest first, private halves opened.
    pub fn all(&self) -> Result<Vec<StoredKey>, TransferError> {
        let rows = self
            .db
            .read(|c| {
                c.query(
                    "SELECT fingerprint, private_pem, public_pem, valid_from, valid_to \
                     FROM signing_keys ORDER BY valid_from, valid_to IS NULL, fingerprint",
                    &[],
                )
            })
            .map_err(db_error)?;
        rows.into_iter().map(|r| self.stored(r)).collect()
    }

    /// A stored row as a key, its private half opened.
    fn stored(&self, r: Row) -> Result<StoredKey, TransferError> {
        let [fingerprint, private, public, from, to]: [cts_db::Val; 5] = r
            .try_into()
            .map_err(|_| TransferError::State("signing_keys: not 5 columns".into()))?;
        let fingerprint = fingerprint.into_text().map_err(db_error)?;
        let private = private.into_text().map_err(db_error)?;
        let private_pem = match (&self.secret, SecretKey::is_sealed(&private)) {
            (_, false) => private,
            (Some(s), true) => {
                let opened = s.open(&private, fingerprint.as_bytes()).map_err(|e| {
                    TransferError::Key(format!("the sealed value of key {fingerprint}: {e}"))
                })?;
                String::from_utf8(opened)
                    .map_err(|_| TransferError::Key(format!("key {fingerprint}: not a PEM")))?
            }
            (None, true) => {
                return Err(TransferError::Key(format!(
                    "key {fingerprint} is sealed and no secret key is set"
                )))
            }
        };
        Ok(StoredKey {
            private_pem,
            public_pem: public.into_text().map_err(db_error)?,
            valid_from: from.int().map_err(db_error)?,
            valid_to: to.opt_int().map_err(db_error)?,
            fingerprint,
        })
    }

    /// Ends the validity of the current key at `key.valid_from` and adds
    /// `key`. A rotation racing another node's is redone after it, so one
    /// key stays current.
    pub fn rotate_to(&self, key: &StoredKey) -> Result<(), TransferError> {
        self.retrying(|tx| {
            tx.exec(
                "UPDATE signing_keys SET valid_to = $1 WHERE valid_to IS NULL",
                &[key.valid_from.into()],
            )?;
            self.insert(tx, key)
        })
        .map(drop)
    }

    /// Adds `key` if there is no key at all (the first start); answers
    /// whether it did. Several nodes starting together add one.
    pub fn add_first(&self, key: &StoredKey) -> Result<bool, TransferError> {
        self.retrying(|tx| {
            if tx.query_opt("SELECT 1 FROM signing_keys", &[])?.is_some() {
                return Ok(false);
            }
            self.insert(tx, key).map(|()| true)
        })
    }

    /// Copies every key `target` lacks (by fingerprint) into it, with its
    /// validity: private halves opened here and sealed under `target`'s
    /// secret key (an embedded node moving to PostgreSQL). The
    /// fingerprints stay, so digests already written still verify.
    pub fn copy_into(&self, target: &Keys) -> Result<cts_db::Copied, TransferError> {
        let keys = self.all()?;
        let copy = |tx: &dyn Sql| {
            let mut done = cts_db::Copied::default();
            for key in &keys {
                let n = tx.exec(
                    "INSERT INTO signing_keys \
                     (fingerprint, private_pem, public_pem, valid_from, valid_to) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[
                        key.fingerprint.as_str().into(),
                        target.private_half(key)?.as_str().into(),
                        key.public_pem.as_str().into(),
                        key.valid_from.into(),
                        key.valid_to.into(),
                    ],
                )?;
                match n {
                    0 => done.present += 1,
                    _ => done.copied += 1,
                }
            }
            Ok::<_, Failed>(done)
        };
        match target.db.transaction(copy) {
            Ok(done) => Ok(done),
            Err(Failed::Db(e)) => Err(db_error(e)),
            Err(Failed::Other(e)) => Err(e),
        }
    }

    /// The private half as this store keeps it: sealed under its secret
    /// key when it has one.
    fn private_half(&self, key: &StoredKey) -> Result<String, TransferError> {
        match &self.secret {
            Some(s) => Ok(s.seal(key.private_pem.as_bytes(), key.fingerprint.as_bytes())),
            None => Ok(key.private_pem.clone()),
        }
    }

    fn insert(&self, tx: &dyn Sql, key: &StoredKey) -> Result<(), Failed> {
        let private = self.private_half(key)?;
        tx.exec(
            "INSERT INTO signing_keys (fingerprint, private_pem, public_pem, valid_from) \
             VALUES ($1, $2, $3, $4)",
            &[
                key.fingerprint.as_str().into(),
                private.as_str().into(),
                key.public_pem.as_str().into(),
                key.valid_from.into(),
            ],
        )?;
        Ok(())
    }

    /// Runs `f` in a transaction, again when it lost a race to another
    /// node (a unique violation: the other's key committed first).
    fn retrying<T>(&self, f: impl Fn(&dyn Sql) -> Result<T, Failed>) -> Result<T, TransferError> {
        let mut attempt = 0;
        loop {
            match self.db.transaction(&f) {
                Err(Failed::Db(e)) if e.is_unique_violation() && attempt < RACE_RETRIES => {
                    attempt += 1;
                }
                Err(Failed::Db(e)) => return Err(db_error(e)),
                Err(Failed::Other(e)) => return Err(e),
                Ok(out) => return Ok(out),
            }
        }
    }
}

/// A failed key write: the database (maybe a lost race), or sealing.
enum Failed {
    Db(DbError),
    Other(TransferError),
}

impl From<DbError> for Failed {
    fn from(e: DbError) -> Self {
        Failed::Db(e)
    }
}

impl From<TransferError> for Failed {
    fn from(e: TransferError) -> Self {
        Failed::Other(e)
    }
}
