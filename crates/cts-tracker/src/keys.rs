//! The encryption keys a tracker's `kms_id` names: the public half (an age
//! X25519 recipient, `age1…`) of a key pair, registered per project. The
//! server never holds a secret half, so it can encrypt trace files but not
//! read them. The recipient's format is checked by the caller (which has
//! the age implementation); this module keeps names, ids and the rule that
//! a key in use cannot go.

use cts_db::{DbError, Row};
use serde::Serialize;

use crate::error::{codes, TrackerError};
use crate::store::{Failure, TrackerStore};

/// A registered key; `id` is what a tracker's `kms_id` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EncryptionKey {
    pub id: String,
    pub project_id: String,
    pub name: String,
    /// The age X25519 recipient (`age1…`).
    pub recipient: String,
    pub created_at: i64,
}

/// Key names: 1–64 letters, digits, `-`, `_`, `.`.
pub fn is_valid_key_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn from_row(r: Row) -> Result<EncryptionKey, DbError> {
    let mut r = r.into_iter();
    let mut next = || {
        r.next().ok_or(DbError::Shape {
            expected: "5 columns",
            found: "fewer",
        })
    };
    Ok(EncryptionKey {
        id: next()?.into_text()?,
        project_id: next()?.into_text()?,
        name: next()?.into_text()?,
        recipient: next()?.into_text()?,
        created_at: next()?.int()?,
    })
}

const COLUMNS: &str = "id, project_id, name, recipient, created_at";

fn key_not_found(id: &str) -> TrackerError {
    TrackerError {
        code: codes::KEY_NOT_FOUND,
        status: 404,
        field: None,
        message: format!("encryption key {id} does not exist"),
    }
}

impl TrackerStore {
    /// Registers `recipient` under `name`.
    pub fn create_key(
        &self,
        project_id: &str,
        name: &str,
        recipient: &str,
        now_ms: i64,
    ) -> Result<EncryptionKey, TrackerError> {
        if !is_valid_key_name(name) {
            return Err(TrackerError::field(
                codes::INVALID_BODY,
                "name",
                "must be 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        let key = EncryptionKey {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: project_id.to_owned(),
            name: name.to_owned(),
            recipient: recipient.to_owned(),
            created_at: now_ms,
        };
        self.write(project_id, |tx| {
            let taken = tx
                .query_opt(
                    "SELECT 1 FROM encryption_keys WHERE project_id = $1 AND name = $2",
                    &[project_id.into(), name.into()],
                )?
                .is_some();
            if taken {
                return Err(Failure::Rule(TrackerError::field(
                    codes::INVALID_BODY,
                    "name",
                    format!("an encryption key named {name:?} exists already"),
                )));
            }
            tx.exec(
                "INSERT INTO encryption_keys (id, project_id, name, recipient, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    key.id.as_str().into(),
                    key.project_id.as_str().into(),
                    key.name.as_str().into(),
                    key.recipient.as_str().into(),
                    key.created_at.into(),
                ],
            )?;
            Ok(key.clone())
        })
    }

    /// The project's keys, oldest first.
    pub fn list_keys(&self, project_id: &str) -> Result<Vec<EncryptionKey>, TrackerError> {
        self.read(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {COLUMNS} FROM encryption_keys WHERE project_id = $1 \
                     ORDER BY created_at, id"
                ),
                &[project_id.into()],
            )?;
            Ok(rows
                .into_iter()
                .map(from_row)
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// The key `id` of the project.
    pub fn key(&self, project_id: &str, id: &str) -> Result<EncryptionKey, TrackerError> {
        self.read(|c| {
            c.query_opt(
                &format!("SELECT {COLUMNS} FROM encryption_keys WHERE project_id = $1 AND id = $2"),
                &[project_id.into(), id.into()],
            )?
            .map(from_row)
            .transpose()?
            .ok_or_else(|| Failure::Rule(key_not_found(id)))
        })
    }

    /// Removes a key no tracker of the project uses.
    pub fn delete_key(&self, project_id: &str, id: &str) -> Result<EncryptionKey, TrackerError> {
        let key = self.key(project_id, id)?;
        let users: Vec<String> = self
            .list(project_id, None, None)?
            .into_iter()
            .filter(|t| t.kms_id.as_deref() == Some(id))
            .map(|t| t.tracker_name)
            .collect();
        if !users.is_empty() {
            return Err(TrackerError::field(
                codes::INVALID_BODY,
                "key_id",
                format!(
                    "the key is in use by tracker(s) {}: turn their encryption off first",
                    users.join(", ")
                ),
            ));
        }
        self.write(project_id, |tx| {
            tx.exec(
                "DELETE FROM encryption_keys WHERE project_id = $1 AND id = $2",
                &[project_id.into(), id.into()],
            )?;
            Ok(key.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::trackers;
    use crate::{parse_v3_create, Limits};
    use cts_testpg::{both, Place};

    const AGE: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn keys_register_list_and_refuse_deletion_in_use(place: &Place) {
        let store = trackers(place, Limits::default());
        let key = store.create_key("p1", "archive-key", AGE, 1).unwrap();
        assert_eq!(store.list_keys("p1").unwrap(), vec![key.clone()]);
        assert!(store.list_keys("p2").unwrap().is_empty());
        let dup = store.create_key("p1", "archive-key", AGE, 2).unwrap_err();
        assert_eq!(dup.code, "CTS.0003");
        assert_eq!(
            store.create_key("p1", "bad name", AGE, 2).unwrap_err().code,
            "CTS.0003"
        );
        // Another project does not see it.
        assert_eq!(store.key("p2", &key.id).unwrap_err().status, 404);

        let body = format!(
            r#"{{"tracker_type": "system", "tracker_name": "system",
                "is_support_trace_files_encryption": true, "kms_id": "{}"}}"#,
            key.id
        );
        let spec = parse_v3_create(body.as_bytes()).unwrap();
        let ids: Vec<String> = store
            .list_keys("p1")
            .unwrap()
            .into_iter()
            .map(|k| k.id)
            .collect();
        store
            .create("p1", "d1", &spec, 3, &|id| ids.iter().any(|k| k == id))
            .unwrap();
        let in_use = store.delete_key("p1", &key.id).unwrap_err();
        assert!(in_use.message.contains("system"), "{in_use:?}");

        // Reopened (another node), it is still there.
        drop(store);
        let store = trackers(place, Limits::default());
        assert_eq!(store.key("p1", &key.id).unwrap(), key);
        store.delete("p1", Some("system"), None).unwrap();
        store.delete_key("p1", &key.id).unwrap();
        assert!(store.list_keys("p1").unwrap().is_empty());
    }

    both!(keys_register_list_and_refuse_deletion_in_use);
}
