//! Access keys (AK/SK, Huawei IAM's permanent credentials) used to sign
//! requests. Secrets are stored encrypted under the server key; the server
//! must recover them because SDK-HMAC-SHA256 signatures are keyed with the
//! secret itself.

use std::collections::HashMap;
use std::fmt;

use cts_db::{Row, Sql};
use serde::{Deserialize, Serialize};

use crate::role::{domain_of, Owned};
use crate::store::{found, now_ms};
use crate::{rules, IdentityError, IdentityStore};

/// Huawei IAM's limit of access keys per user.
pub const MAX_ACCESS_KEYS_PER_USER: usize = 2;

/// A key's last use is written at most this often: the lookup runs on every
/// signed request, a write costs an fsync, and the field is informational.
const TOUCH_INTERVAL_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessKeyStatus {
    Active,
    Inactive,
}

impl AccessKeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessKeyStatus::Active => "active",
            AccessKeyStatus::Inactive => "inactive",
        }
    }
}

/// An access key as listed: never with its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessKey {
    pub access: String,
    pub user_id: String,
    pub status: AccessKeyStatus,
    pub description: String,
    pub created_at: i64,
    /// Coalesced: may lag the true last use by up to a minute.
    pub last_use_at: Option<i64>,
}

/// What request signing needs: the decrypted secret of an active key of an
/// enabled user. `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub access: String,
    pub user_id: String,
    pub secret: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("access", &self.access)
            .field("user_id", &self.user_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Decrypted secrets of usable keys, so that verifying a signed request
/// needs neither the connection lock nor a decryption; plus when each key's
/// last use was last written. Bounded by the number of access keys (at most
/// two per user); unknown keys are never cached.
#[derive(Default)]
pub(crate) struct KeyCache {
    secrets: HashMap<String, SigningKey>,
    touched: HashMap<String, i64>,
}

impl KeyCache {
    /// Empties the cache, returning what it held (to be dropped after
    /// the lock is let go).
    pub(crate) fn clear(&mut self) -> KeyCache {
        std::mem::take(self)
    }
}

const COLUMNS: &str = "access, user_id, status, description, created_at, last_use_at";

fn from_row(r: &Row) -> Result<AccessKey, IdentityError> {
    let status = r[2].text()?.to_owned();
    Ok(AccessKey {
        access: r[0].text()?.to_owned(),
        user_id: r[1].text()?.to_owned(),
        // The CHECK constraint admits only these two values.
        status: if status == "active" {
            AccessKeyStatus::Active
        } else {
            AccessKeyStatus::Inactive
        },
        description: r[3].text()?.to_owned(),
        created_at: r[4].int()?,
        last_use_at: r[5].opt_int()?,
    })
}

fn get(conn: &dyn Sql, access: &str) -> Result<AccessKey, IdentityError> {
    let sql = format!("SELECT {COLUMNS} FROM access_keys WHERE access = $1");
    from_row(&found(
        conn.query_opt(&sql, &[access.into()])?,
        "access key",
        access,
    )?)
}

fn exists(conn: &dyn Sql, access: &str) -> Result<bool, IdentityError> {
    let sql = "SELECT 1 FROM access_keys WHERE access = $1";
    Ok(conn.query_opt(sql, &[access.into()])?.is_some())
}

impl IdentityStore {
    /// Stores an active key for an existing user, enforcing the quota.
    pub(crate) fn insert_access_key(
        &self,
        tx: &dyn Sql,
        user_id: &str,
        access: &str,
        secret: &str,
        description: &str,
    ) -> Result<AccessKey, IdentityError> {
        rules::check_description(description)?;
        domain_of(tx, Owned::User, user_id)?;
        let count = tx.query(
            "SELECT count(*) FROM access_keys WHERE user_id = $1",
            &[user_id.into()],
        )?[0][0]
            .int()?;
        if count >= MAX_ACCESS_KEYS_PER_USER as i64 {
            return Err(IdentityError::QuotaExceeded {
                what: "access keys per user",
                max: MAX_ACCESS_KEYS_PER_USER,
            });
        }
        if exists(tx, access)? {
            return Err(IdentityError::conflict("access key", access));
        }
        let sealed = self.encrypt(secret.as_bytes(), access.as_bytes())?;
        tx.exec(
            "INSERT INTO access_keys (access, user_id, secret, status, description, created_at) \
             VALUES ($1, $2, $3, 'active', $4, $5)",
            &[
                access.into(),
                user_id.into(),
                sealed.as_slice().into(),
                description.into(),
                now_ms().into(),
            ],
        )?;
        get(tx, access)
    }

    /// Creates an active key with a random id and secret. The secret is
    /// returned only here: afterwards only request signing can recover it.
    pub fn create_access_key(
        &self,
        user_id: &str,
        description: &str,
    ) -> Result<(AccessKey, String), IdentityError> {
        let secret = rules::random_secret();
        let key = self.write(|tx| {
            // 36^20 ids make a collision all but impossible; retrying keeps
            // it from ever being an error.
            let mut access = rules::random_access_key();
            while exists(tx, &access)? {
                access = rules::random_access_key();
            }
            self.insert_access_key(tx, user_id, &access, &secret, description)
        })?;
        Ok((key, secret))
    }

    pub fn get_access_key(&self, access: &str) -> Result<AccessKey, IdentityError> {
        self.read(|conn| get(conn, access))
    }

    /// The keys of a user, oldest first, without secrets.
    pub fn list_access_keys(&self, user_id: &str) -> Result<Vec<AccessKey>, IdentityError> {
        self.read(|conn| {
            domain_of(conn, Owned::User, user_id)?;
            let sql = format!(
                "SELECT {COLUMNS} FROM access_keys WHERE user_id = $1 ORDER BY created_at, access"
            );
            let rows = conn.query(&sql, &[user_id.into()])?;
            rows.iter().map(from_row).collect()
        })
    }

    pub fn delete_access_key(&self, access: &str) -> Result<(), IdentityError> {
        self.write(|tx| {
            if tx.exec(
                "DELETE FROM access_keys WHERE access = $1",
                &[access.into()],
            )? == 0
            {
                return Err(IdentityError::not_found("access key", access));
            }
            Ok(())
        })
    }

    pub fn set_access_key_status(
        &self,
        access: &str,
        status: AccessKeyStatus,
    ) -> Result<AccessKey, IdentityError> {
        self.update_access_key(access, "status", status.as_str())
    }

    pub fn set_access_key_description(
        &self,
        access: &str,
        description: &str,
    ) -> Result<AccessKey, IdentityError> {
        rules::check_description(description)?;
        self.update_access_key(access, "description", description)
    }

    /// Sets one column (a name of this module, never caller input).
    fn update_access_key(
        &self,
        access: &str,
        column: &'static str,
        value: &str,
    ) -> Result<AccessKey, IdentityError> {
        self.write(|tx| {
            let sql = format!("UPDATE access_keys SET {column} = $1 WHERE access = $2");
            if tx.exec(&sql, &[value.into(), access.into()])? == 0 {
                return Err(IdentityError::not_found("access key", access));
            }
            get(tx, access)
        })
    }

    /// The secret of `access` for verifying a signed request:
    /// `UnknownAccessKey` when there is no such key, `InactiveAccessKey`
    /// when the key is inactive or its user or the user's domain is
    /// disabled. Answered from memory after the first use of a key.
    pub fn access_key_secret(&self, access: &str) -> Result<SigningKey, IdentityError> {
        self.catch_up()?;
        if let Some(key) = self.keys.lock().secrets.get(access) {
            return Ok(key.clone());
        }
        let generation = self.changes.generation();
        // Flags are 0 or 1: their product is "both enabled" on either backend.
        let row = self.read(|conn| {
            Ok(conn.query_opt(
                "SELECT k.user_id, k.secret, k.status, u.enabled * d.enabled \
                 FROM access_keys k JOIN users u ON u.id = k.user_id \
                 JOIN domains d ON d.id = u.domain_id WHERE k.access = $1",
                &[access.into()],
            )?)
        })?;
        let row = row.ok_or(IdentityError::UnknownAccessKey)?;
        if row[2].text()? != AccessKeyStatus::Active.as_str() || !row[3].bool()? {
            return Err(IdentityError::InactiveAccessKey);
        }
        let secret = String::from_utf8(self.decrypt(row[1].bytes()?, access.as_bytes())?)
            .map_err(|_| IdentityError::Crypto("stored secret is not UTF-8".into()))?;
        let key = SigningKey {
            access: access.to_owned(),
            user_id: row[0].text()?.to_owned(),
            secret,
        };
        // Not if the caches were emptied since the read: see `crate::changes`.
        let mut cache = self.keys.lock();
        if self.changes.generation() == generation {
            cache.secrets.insert(access.to_owned(), key.clone());
        }
        Ok(key)
    }

    /// Records that `access` signed a request at `now_ms`. Cheap when called
    /// on every request: a key's use is written at most once a minute.
    pub fn touch_access_key(&self, access: &str, now_ms: i64) -> Result<(), IdentityError> {
        let recent = |cache: &KeyCache| {
            cache
                .touched
                .get(access)
                .is_some_and(|&at| now_ms - at < TOUCH_INTERVAL_MS)
        };
        if recent(&self.keys.lock()) {
            return Ok(());
        }
        self.write_quiet(|tx| {
            // Another thread may have written it while this one waited.
            if recent(&self.keys.lock()) {
                return Ok(());
            }
            let updated = tx.exec(
                "UPDATE access_keys SET last_use_at = \
                     CASE WHEN last_use_at > $1 THEN last_use_at ELSE $1 END \
                 WHERE access = $2",
                &[now_ms.into(), access.into()],
            )?;
            if updated == 0 {
                return Err(IdentityError::UnknownAccessKey);
            }
            self.keys.lock().touched.insert(access.to_owned(), now_ms);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::{both, temp_store};
    use crate::testutil::*;

    both!(
        at_most_two_keys_per_user,
        unknown_inactive_and_deleted_keys_fail_even_when_cached,
        keys_go_with_their_user,
        touch_is_coalesced_per_minute,
        descriptions_are_checked
    );

    #[test]
    fn create_verify_list_and_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("identity");
        let store = IdentityStore::open(&dir).unwrap();
        let domain = store.create_domain("d1").unwrap();
        let alice = user(&store, &domain.id, "alice");
        let (key, secret) = store.create_access_key(&alice.id, "ci").unwrap();
        assert_eq!(key.access.len(), 20);
        assert!(key
            .access
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
        assert_eq!(secret.len(), 40);
        assert!(secret.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(
            (key.status, key.description.as_str(), key.last_use_at),
            (AccessKeyStatus::Active, "ci", None)
        );

        let signing = store.access_key_secret(&key.access).unwrap();
        assert_eq!(signing.secret, secret);
        assert_eq!(signing.user_id, alice.id);
        assert!(!format!("{signing:?}").contains(&secret));

        let listed = store.list_access_keys(&alice.id).unwrap();
        assert_eq!(listed, std::slice::from_ref(&key));
        assert!(!serde_json::to_string(&listed).unwrap().contains(&secret));
        assert_eq!(store.get_access_key(&key.access).unwrap(), key);
        drop(store);

        // The secret survives a restart, and is nowhere on disk in clear.
        let store = IdentityStore::open(&dir).unwrap();
        assert_eq!(store.access_key_secret(&key.access).unwrap().secret, secret);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }

    fn at_most_two_keys_per_user() {
        let (_tmp, store) = temp_store();
        let domain = store.create_domain("d1").unwrap();
        let alice = user(&store, &domain.id, "alice");
        let (first, _) = store.create_access_key(&alice.id, "").unwrap();
        store.create_access_key(&alice.id, "").unwrap();
        assert!(matches!(
            store.create_access_key(&alice.id, ""),
            Err(IdentityError::QuotaExceeded { max: 2, .. })
        ));
        assert_eq!(store.list_access_keys(&alice.id).unwrap().len(), 2);
        store.delete_access_key(&first.access).unwrap();
        store.create_access_key(&alice.id, "").unwrap();
        assert!(matches!(
            store.create_access_key("nope", ""),
            Err(IdentityError::NotFound { what: "user", .. })
        ));
    }

    fn unknown_inactive_and_deleted_keys_fail_even_when_cached() {
        let (_tmp, store) = temp_store();
        let domain = store.create_domain("d1").unwrap();
        let alice = user(&store, &domain.id, "alice");
        let (key, _) = store.create_access_key(&alice.id, "").unwrap();
        assert!(matches!(
            store.access_key_secret("AAAAAAAAAAAAAAAAAAAA"),
            Err(IdentityError::UnknownAccessKey)
        ));
        let inactive = |store: &IdentityStore| {
            matches!(
                store.access_key_secret(&key.access),
                Err(IdentityError::InactiveAccessKey)
            )
        };

        store.access_key_secret(&key.access).unwrap(); // cached now
        let changed = store
            .set_access_key_status(&key.access, AccessKeyStatus::Inactive)
            .unwrap();
        assert_eq!(changed.status, AccessKeyStatus::Inactive);
        assert!(inactive(&store));
        store
            .set_access_key_status(&key.access, AccessKeyStatus::Active)
            .unwrap();
        store.access_key_secret(&key.access).unwrap();

        set_user_enabled(&store, &alice.id, false);
        assert!(inactive(&store));
        set_user_enabled(&store, &alice.id, true);
        store.access_key_secret(&key.access).unwrap();

        set_domain_enabled(&store, &domain.id, false);
        assert!(inactive(&store));
        set_domain_enabled(&store, &domain.id, true);
        store.access_key_secret(&key.access).unwrap();

        store.delete_access_key(&key.access).unwrap();
        assert!(matches!(
            store.access_key_secret(&key.access),
            Err(IdentityError::UnknownAccessKey)
        ));
        assert!(matches!(
            store.delete_access_key(&key.access),
            Err(IdentityError::NotFound {
                what: "access key",
                ..
            })
        ));
        assert!(matches!(
            store.set_access_key_status(&key.access, AccessKeyStatus::Active),
            Err(IdentityError::NotFound {
                what: "access key",
                ..
            })
        ));
    }

    fn keys_go_with_their_user() {
        let (_tmp, store) = temp_store();
        let domain = store.create_domain("d1").unwrap();
        let alice = user(&store, &domain.id, "alice");
        let (key, _) = store.create_access_key(&alice.id, "").unwrap();
        store.access_key_secret(&key.access).unwrap();
        store.delete_user(&alice.id).unwrap();
        assert!(matches!(
            store.access_key_secret(&key.access),
            Err(IdentityError::UnknownAccessKey)
        ));
        assert!(matches!(
            store.get_access_key(&key.access),
            Err(IdentityError::NotFound { .. })
        ));
    }

    fn touch_is_coalesced_per_minute() {
        let (_tmp, store) = temp_store();
        let domain = store.create_domain("d1").unwrap();
        let alice = user(&store, &domain.id, "alice");
        let (key, _) = store.create_access_key(&alice.id, "").unwrap();
        let last_use = || store.get_access_key(&key.access).unwrap().last_use_at;

        store.touch_access_key(&key.access, 1_000_000).unwrap();
        assert_eq!(last_use(), Some(1_000_000));
        store.touch_access_key(&key.access, 1_030_000).unwrap();
        assert_eq!(last_use(), Some(1_000_000), "within a minute: not written");
        store.touch_access_key(&key.access, 1_060_000).unwrap();
        assert_eq!(last_use(), Some(1_060_000));
        assert!(matches!(
            store.touch_access_key("AAAAAAAAAAAAAAAAAAAA", 1_000_000),
            Err(IdentityError::UnknownAccessKey)
        ));
    }

    fn descriptions_are_checked() {
        let (_tmp, store) = temp_store();
        let domain = store.create_domain("d1").unwrap();
        let alice = user(&store, &domain.id, "alice");
        assert!(matches!(
            store.create_access_key(&alice.id, &"x".repeat(256)),
            Err(IdentityError::Invalid {
                field: "description",
                ..
            })
        ));
        assert!(store.list_access_keys(&alice.id).unwrap().is_empty());
    }
}
