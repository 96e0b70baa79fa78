//! The digest signing keys (`DATA_DIR/transfer/transfer.db`, 0600): key
//! material, not consumer state, and written by `ctsd
//! rotate-digest-key` from another process, so they keep their own file.

use cts_sqlite::{Migrations, M};
use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{params, Connection};

use crate::state::db;
use crate::TransferError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS signing_keys (
    fingerprint TEXT PRIMARY KEY,
    private_pem TEXT NOT NULL,
    public_pem TEXT NOT NULL,
    valid_from INTEGER NOT NULL,
    valid_to INTEGER
);
";

/// A digest signing key as stored.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub fingerprint: String,
    pub private_pem: String,
    pub public_pem: String,
    /// Unix seconds.
    pub valid_from: i64,
    pub valid_to: Option<i64>,
}

pub struct Keys {
    conn: Mutex<Connection>,
}

impl Keys {
    pub fn open(dir: &Path) -> Result<Keys, TransferError> {
        let conn = cts_sqlite::open(dir, "transfer.db", &Migrations::new(vec![M::up(SCHEMA)]))
            .map_err(|e| TransferError::State(e.to_string()))?;
        Ok(Keys {
            conn: Mutex::new(conn),
        })
    }

    /// Runs `f` on the connection (the move of old state, at open).
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, TransferError>,
    ) -> Result<T, TransferError> {
        f(&self.conn.lock())
    }

    pub fn all(&self) -> Result<Vec<StoredKey>, TransferError> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare(
                "SELECT fingerprint, private_pem, public_pem, valid_from, valid_to \
                 FROM signing_keys ORDER BY valid_from",
            )
            .map_err(db)?;
        let keys = stmt
            .query_map([], |r| {
                Ok(StoredKey {
                    fingerprint: r.get(0)?,
                    private_pem: r.get(1)?,
                    public_pem: r.get(2)?,
                    valid_from: r.get(3)?,
                    valid_to: r.get(4)?,
                })
            })
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        Ok(keys)
    }

    /// Ends the validity of the current key at `now` and adds `key`.
    pub fn rotate_to(&self, key: &StoredKey) -> Result<(), TransferError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(db)?;
        tx.execute(
            "UPDATE signing_keys SET valid_to = ?1 WHERE valid_to IS NULL",
            [key.valid_from],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT INTO signing_keys (fingerprint, private_pem, public_pem, valid_from) \
             VALUES (?1, ?2, ?3, ?4)",
            params![
                key.fingerprint,
                key.private_pem,
                key.public_pem,
                key.valid_from
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }
}
