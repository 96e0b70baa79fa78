//! Copying an embedded node's identities into another store (`ctsd
//! migrate-from-embedded`): every row the target lacks, table by table,
//! parents first. Access-key secrets are opened with the source's key and
//! sealed with the target's (never written in the clear); role ids are
//! translated by role name, since each store made its built-in roles.

use std::collections::HashMap;

use cts_db::{copy_rows, Copied, Sql, Val};

use crate::{IdentityError, IdentityStore};

/// Tables in the order their foreign keys need, with their columns.
const TABLES: [(&str, &[&str]); 11] = [
    ("domains", &["id", "name", "enabled", "created_at"]),
    (
        "projects",
        &[
            "id",
            "domain_id",
            "name",
            "description",
            "enabled",
            "region",
            "created_at",
        ],
    ),
    (
        "users",
        &[
            "id",
            "domain_id",
            "name",
            "description",
            "enabled",
            "email",
            "default_project_id",
            "password_hash",
            "created_at",
            "password_changed_at",
        ],
    ),
    (
        "groups",
        &["id", "domain_id", "name", "description", "created_at"],
    ),
    ("memberships", &["group_id", "user_id"]),
    ("user_assignments", &["project_id", "user_id", "role_id"]),
    ("group_assignments", &["project_id", "group_id", "role_id"]),
    ("domain_assignments", &["domain_id", "user_id", "role_id"]),
    (
        "access_keys",
        &[
            "access",
            "user_id",
            "secret",
            "status",
            "description",
            "created_at",
            "last_use_at",
        ],
    ),
    (
        "tokens",
        &[
            "hash",
            "user_id",
            "project_id",
            "domain_id",
            "issued_at",
            "expires_at",
            "revoked",
            "methods",
        ],
    ),
    ("login_lockouts", &["user_id", "source", "locked_until"]),
];

impl IdentityStore {
    /// Copies every identity of this store that `target` lacks into it;
    /// answers per table what it did. One transaction on the target.
    pub fn copy_into(
        &self,
        target: &IdentityStore,
    ) -> Result<Vec<(&'static str, Copied)>, IdentityError> {
        self.read(|from| {
            target.write(|to| {
                let roles = role_names(to)?;
                let source_roles = role_names(from)?;
                // Source role id → target role id, through the name.
                let role_of: HashMap<String, String> = source_roles
                    .into_iter()
                    .filter_map(|(name, id)| Some((id, roles.get(&name)?.clone())))
                    .collect();
                let mut done = Vec::with_capacity(TABLES.len());
                for (table, columns) in TABLES {
                    let copied = copy_rows(from, to, table, columns, |row| {
                        match table {
                            "access_keys" => {
                                let access = row[0].text()?.to_owned();
                                let secret = self.decrypt(row[2].bytes()?, access.as_bytes())?;
                                row[2] = Val::Bytes(target.encrypt(&secret, access.as_bytes())?);
                            }
                            t if t.ends_with("_assignments") => {
                                let id = row[2].text()?;
                                let mapped =
                                    role_of.get(id).ok_or_else(|| IdentityError::NotFound {
                                        what: "built-in role",
                                        id: id.to_owned(),
                                    })?;
                                row[2] = Val::Text(mapped.clone());
                            }
                            _ => {}
                        }
                        Ok::<_, IdentityError>(())
                    })?;
                    done.push((table, copied));
                }
                Ok(done)
            })
        })
    }
}

/// Role name → id.
fn role_names(sql: &dyn Sql) -> Result<HashMap<String, String>, IdentityError> {
    sql.query("SELECT name, id FROM roles", &[])?
        .into_iter()
        .map(|r| Ok((r[0].text()?.to_owned(), r[1].text()?.to_owned())))
        .collect()
}
