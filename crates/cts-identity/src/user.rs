//! Users, their passwords (Argon2id) and password authentication.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use cts_db::{Row, Sql};
use serde::Serialize;

use crate::domain::{self, DomainRef};
use crate::store::{found, now_ms, taken};
use crate::{project, rules, Filter, IdentityError, IdentityStore};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
    pub description: String,
    pub email: Option<String>,
    pub default_project_id: Option<String>,
    pub created_at: i64,
    /// `None` when the user has no password (access keys only).
    pub password_changed_at: Option<i64>,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub domain_id: String,
    pub name: String,
    pub description: String,
    /// `None` for a user that signs requests with access keys only.
    pub password: Option<String>,
    pub email: Option<String>,
    pub default_project_id: Option<String>,
    pub enabled: bool,
}

/// Changes to a user; `None` keeps the value, `Some(None)` clears an
/// optional one.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    /// A new password; setting it revokes the user's tokens.
    pub password: Option<String>,
    pub email: Option<Option<String>>,
    pub default_project_id: Option<Option<String>>,
}

/// A user named by id, or by name within a domain (Keystone's shapes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

/// The columns of [`from_row`], with `users` aliased as `u`.
pub(crate) const COLUMNS: &str = "u.id, u.name, u.domain_id, u.enabled, u.description, u.email, \
                       u.default_project_id, u.created_at, u.password_changed_at";

pub(crate) fn from_row(r: &Row) -> Result<User, IdentityError> {
    Ok(User {
        id: r[0].text()?.to_owned(),
        name: r[1].text()?.to_owned(),
        domain_id: r[2].text()?.to_owned(),
        enabled: r[3].bool()?,
        description: r[4].text()?.to_owned(),
        email: r[5].opt_text()?.map(str::to_owned),
        default_project_id: r[6].opt_text()?.map(str::to_owned),
        created_at: r[7].int()?,
        password_changed_at: r[8].opt_int()?,
    })
}

/// An Argon2id hash (PHC string, default parameters: 19 MiB, 2 passes).
/// Deliberately slow: callers keep it off async worker threads.
pub(crate) fn hash_password(password: &str) -> Result<String, IdentityError> {
    crate::store::memory_only_refuses()?;
    let salt = SaltString::encode_b64(&rules::random_bytes::<16>())
        .map_err(|e| IdentityError::Crypto(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IdentityError::Crypto(format!("password hashing: {e}")))
}

/// Whether `password` matches `hash`. The parameters come from the hash, so
/// hashes made with older parameters keep verifying.
fn verify_password(hash: &str, password: &str) -> Result<bool, IdentityError> {
    crate::store::memory_only_refuses()?;
    let parsed = PasswordHash::new(hash)
        .map_err(|e| IdentityError::Crypto(format!("stored password hash: {e}")))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

fn name_taken(conn: &dyn Sql, domain_id: &str, name: &str) -> Result<bool, IdentityError> {
    let sql = "SELECT 1 FROM users WHERE domain_id = $1 AND name = $2";
    Ok(conn
        .query_opt(sql, &[domain_id.into(), name.into()])?
        .is_some())
}

/// A default project must exist and belong to the user's domain.
fn check_default_project(
    conn: &dyn Sql,
    domain_id: &str,
    project_id: &str,
) -> Result<(), IdentityError> {
    if project::get(conn, project_id)?.domain_id != domain_id {
        return Err(IdentityError::invalid(
            "default_project_id",
            "must be a project of the user's domain",
        ));
    }
    Ok(())
}

pub(crate) fn get(conn: &dyn Sql, id: &str) -> Result<User, IdentityError> {
    let sql = format!("SELECT {COLUMNS} FROM users u WHERE u.id = $1");
    from_row(&found(conn.query_opt(&sql, &[id.into()])?, "user", id)?)
}

/// A user, whether it may log in (it and its domain are enabled), and its
/// password hash; `None` when the reference names no user.
fn lookup(
    conn: &dyn Sql,
    user: &UserRef,
) -> Result<Option<(User, bool, Option<String>)>, IdentityError> {
    let (condition, args) = match user {
        UserRef::Id(id) => ("u.id = $1", vec![id.as_str().into()]),
        UserRef::Name {
            name,
            domain: DomainRef::Id(domain_id),
        } => (
            "d.id = $1 AND u.name = $2",
            vec![domain_id.as_str().into(), name.as_str().into()],
        ),
        UserRef::Name {
            name,
            domain: DomainRef::Name(domain_name),
        } => (
            "d.name = $1 AND u.name = $2",
            vec![domain_name.as_str().into(), name.as_str().into()],
        ),
    };
    // Flags are 0 or 1: their product is "both enabled" on either backend.
    let sql = format!(
        "SELECT {COLUMNS}, u.enabled * d.enabled, u.password_hash \
         FROM users u JOIN domains d ON d.id = u.domain_id WHERE {condition}"
    );
    conn.query_opt(&sql, &args)?
        .map(|r| {
            Ok((
                from_row(&r)?,
                r[9].bool()?,
                r[10].opt_text()?.map(str::to_owned),
            ))
        })
        .transpose()
}

/// Inserts a user with a caller-chosen id (bootstrap) or a new one;
/// `password_hash` is made by the caller, outside any lock.
pub(crate) fn insert(
    tx: &dyn Sql,
    id: &str,
    new: &NewUser,
    password_hash: Option<&str>,
) -> Result<User, IdentityError> {
    domain::get(tx, &new.domain_id)?;
    if name_taken(tx, &new.domain_id, &new.name)? {
        return Err(IdentityError::conflict("user", &new.name));
    }
    if let Some(project_id) = &new.default_project_id {
        check_default_project(tx, &new.domain_id, project_id)?;
    }
    let now = now_ms();
    tx.exec(
        "INSERT INTO users (id, name, domain_id, enabled, description, email, \
             default_project_id, password_hash, created_at, password_changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            id.into(),
            new.name.as_str().into(),
            new.domain_id.as_str().into(),
            new.enabled.into(),
            new.description.as_str().into(),
            new.email.as_deref().into(),
            new.default_project_id.as_deref().into(),
            password_hash.into(),
            now.into(),
            password_hash.map(|_| now).into(),
        ],
    )
    .map_err(|e| taken(e, "user", &new.name))?;
    get(tx, id)
}

/// The value checks of a new user that need no database.
pub(crate) fn check_new(new: &NewUser) -> Result<(), IdentityError> {
    rules::check_name("name", &new.name)?;
    rules::check_description(&new.description)?;
    if let Some(email) = &new.email {
        rules::check_email(email)?;
    }
    if let Some(password) = &new.password {
        rules::check_password(password)?;
    }
    Ok(())
}

impl IdentityStore {
    /// Creates a user. With a password this takes a password hash's time.
    pub fn create_user(&self, new: &NewUser) -> Result<User, IdentityError> {
        check_new(new)?;
        // Hash before taking the lock: it is the slow part.
        let hash = new.password.as_deref().map(hash_password).transpose()?;
        self.write(|tx| insert(tx, &rules::new_id(), new, hash.as_deref()))
    }

    pub fn get_user(&self, id: &str) -> Result<User, IdentityError> {
        self.cached(|c| &mut c.users, id.to_string(), |conn| get(conn, id))
    }

    pub fn find_user(&self, user: &UserRef) -> Result<User, IdentityError> {
        let what = match user {
            UserRef::Id(id) => id,
            UserRef::Name { name, .. } => name,
        };
        self.read(|conn| lookup(conn, user))?
            .map(|(user, _, _)| user)
            .ok_or_else(|| IdentityError::not_found("user", what))
    }

    /// Users matching `filter`, by domain and name.
    pub fn list_users(&self, filter: &Filter) -> Result<Vec<User>, IdentityError> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM users u \
                 WHERE (CAST($1 AS TEXT) IS NULL OR u.domain_id = $1) AND (CAST($2 AS TEXT) IS NULL OR u.name = $2) \
                 ORDER BY u.domain_id, u.name"
            );
            let args = [filter.domain_id.as_deref().into(), filter.name.as_deref().into()];
            conn.query(&sql, &args)?.iter().map(from_row).collect()
        })
    }

    /// Applies `update`. A new password takes a password hash's time and
    /// revokes all the user's tokens, as Keystone does.
    pub fn update_user(&self, id: &str, update: &UserUpdate) -> Result<User, IdentityError> {
        if let Some(name) = &update.name {
            rules::check_name("name", name)?;
        }
        if let Some(description) = &update.description {
            rules::check_description(description)?;
        }
        if let Some(Some(email)) = &update.email {
            rules::check_email(email)?;
        }
        if let Some(password) = &update.password {
            rules::check_password(password)?;
        }
        let hash = update.password.as_deref().map(hash_password).transpose()?;
        self.write(|tx| {
            let mut user = get(tx, id)?;
            if let Some(name) = &update.name {
                if *name != user.name && name_taken(tx, &user.domain_id, name)? {
                    return Err(IdentityError::conflict("user", name));
                }
                user.name.clone_from(name);
            }
            if let Some(Some(project_id)) = &update.default_project_id {
                check_default_project(tx, &user.domain_id, project_id)?;
            }
            if let Some(description) = &update.description {
                user.description.clone_from(description);
            }
            if let Some(enabled) = update.enabled {
                user.enabled = enabled;
            }
            if let Some(email) = &update.email {
                user.email.clone_from(email);
            }
            if let Some(project_id) = &update.default_project_id {
                user.default_project_id.clone_from(project_id);
            }
            tx.exec(
                "UPDATE users SET name = $1, description = $2, enabled = $3, email = $4, \
                     default_project_id = $5 WHERE id = $6",
                &[
                    user.name.as_str().into(),
                    user.description.as_str().into(),
                    user.enabled.into(),
                    user.email.as_deref().into(),
                    user.default_project_id.as_deref().into(),
                    id.into(),
                ],
            )
            .map_err(|e| taken(e, "user", &user.name))?;
            if let Some(hash) = &hash {
                let now = now_ms();
                tx.exec(
                    "UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3",
                    &[hash.as_str().into(), now.into(), id.into()],
                )?;
                user.password_changed_at = Some(now);
            }
            // A new password, or disabling, ends every token for good:
            // enabling the user again must not bring them back.
            if hash.is_some() || update.enabled == Some(false) {
                tx.exec(
                    "UPDATE tokens SET revoked = 1 WHERE user_id = $1",
                    &[id.into()],
                )?;
            }
            Ok(user)
        })
    }

    /// Deletes a user with its access keys, tokens, memberships and role
    /// assignments.
    pub fn delete_user(&self, id: &str) -> Result<(), IdentityError> {
        self.write(|tx| {
            if tx.exec("DELETE FROM users WHERE id = $1", &[id.into()])? == 0 {
                return Err(IdentityError::not_found("user", id));
            }
            Ok(())
        })
    }

    /// Checks a password and returns the user. Unknown user, unknown domain,
    /// disabled user or domain, user without password and wrong password all
    /// fail with the same `InvalidCredentials`, and all cost one Argon2id
    /// verification, so neither the answer nor its timing tells whether the
    /// user exists.
    ///
    /// Slow on purpose (tens of milliseconds): run it with `spawn_blocking`,
    /// and throttle failures with [`crate::LoginThrottle`].
    pub fn authenticate_password(
        &self,
        user: &UserRef,
        password: &str,
    ) -> Result<User, IdentityError> {
        match self.read(|conn| lookup(conn, user))? {
            Some((user, usable, Some(hash))) => {
                // Verify even for a disabled user: same cost as a live one.
                let matches = verify_password(&hash, password)?;
                if matches && usable {
                    Ok(user)
                } else {
                    Err(IdentityError::InvalidCredentials)
                }
            }
            _ => {
                verify_password(self.dummy_hash()?, password)?;
                Err(IdentityError::InvalidCredentials)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::{both, temp_store};
    use crate::testutil::*;

    both!(
        round_trip_and_update,
        names_are_unique_per_domain_and_listable,
        values_are_checked,
        deleting_the_default_project_clears_it,
        password_authentication,
        users_without_password_cannot_log_in_and_changes_take_effect
    );

    const PASSWORD: &str = "Correct-Horse-9";

    fn round_trip_and_update() {
        let (_tmp, store) = temp_store();
        let (domain, project) = domain_and_project(&store, "d1");
        let mut new = new_user(&domain.id, "alice");
        new.email = Some("alice@example.com".into());
        new.description = "ops".into();
        new.default_project_id = Some(project.id.clone());
        let alice = store.create_user(&new).unwrap();
        assert_eq!(alice.id.len(), 32);
        assert_eq!(alice.email.as_deref(), Some("alice@example.com"));
        assert_eq!(
            alice.default_project_id.as_deref(),
            Some(project.id.as_str())
        );
        assert_eq!(alice.password_changed_at, None);
        assert_eq!(store.get_user(&alice.id).unwrap(), alice);
        let by_name = UserRef::Name {
            name: "alice".into(),
            domain: DomainRef::Name("d1".into()),
        };
        assert_eq!(store.find_user(&by_name).unwrap(), alice);
        assert_eq!(
            store.find_user(&UserRef::Id(alice.id.clone())).unwrap(),
            alice
        );

        let update = UserUpdate {
            name: Some("alice2".into()),
            description: Some("dev".into()),
            enabled: Some(false),
            email: Some(None),
            default_project_id: Some(None),
            ..Default::default()
        };
        let changed = store.update_user(&alice.id, &update).unwrap();
        assert_eq!(
            (
                changed.name.as_str(),
                changed.description.as_str(),
                changed.enabled
            ),
            ("alice2", "dev", false)
        );
        assert_eq!((changed.email, changed.default_project_id), (None, None));
        assert_eq!(store.get_user(&alice.id).unwrap().name, "alice2");

        store.delete_user(&alice.id).unwrap();
        assert!(matches!(
            store.get_user(&alice.id),
            Err(IdentityError::NotFound { what: "user", .. })
        ));
        assert!(matches!(
            store.delete_user(&alice.id),
            Err(IdentityError::NotFound { what: "user", .. })
        ));
    }

    fn names_are_unique_per_domain_and_listable() {
        let (_tmp, store) = temp_store();
        let d1 = store.create_domain("d1").unwrap();
        let d2 = store.create_domain("d2").unwrap();
        let alice = user(&store, &d1.id, "alice");
        user(&store, &d1.id, "bob");
        user(&store, &d2.id, "alice");
        assert!(matches!(
            store.create_user(&new_user(&d1.id, "alice")),
            Err(IdentityError::Conflict { what: "user", ref name }) if name == "alice"
        ));
        let rename = UserUpdate {
            name: Some("bob".into()),
            ..Default::default()
        };
        assert!(matches!(
            store.update_user(&alice.id, &rename),
            Err(IdentityError::Conflict { what: "user", .. })
        ));
        let in_d1 = Filter {
            domain_id: Some(d1.id.clone()),
            name: None,
        };
        let names: Vec<_> = store
            .list_users(&in_d1)
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alice", "bob"]);
        let named = Filter {
            domain_id: None,
            name: Some("alice".into()),
        };
        assert_eq!(store.list_users(&named).unwrap().len(), 2);
    }

    fn values_are_checked() {
        let (_tmp, store) = temp_store();
        let (d1, _) = domain_and_project(&store, "d1");
        let (_, p2) = domain_and_project(&store, "d2");
        let invalid = |new: NewUser| match store.create_user(&new) {
            Err(IdentityError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(invalid(new_user(&d1.id, "1st")), "name");
        let mut weak = new_user(&d1.id, "weak");
        weak.password = Some("password".into());
        assert_eq!(invalid(weak), "password");
        let mut mail = new_user(&d1.id, "mail");
        mail.email = Some("nobody".into());
        assert_eq!(invalid(mail), "email");
        let mut foreign = new_user(&d1.id, "foreign");
        foreign.default_project_id = Some(p2.id.clone());
        assert_eq!(invalid(foreign), "default_project_id");
        let mut missing = new_user(&d1.id, "missing");
        missing.default_project_id = Some("nope".into());
        assert!(matches!(
            store.create_user(&missing),
            Err(IdentityError::NotFound {
                what: "project",
                ..
            })
        ));
        assert!(matches!(
            store.create_user(&new_user("nope", "x")),
            Err(IdentityError::NotFound { what: "domain", .. })
        ));
        assert!(store.list_users(&Filter::default()).unwrap().is_empty());
    }

    fn deleting_the_default_project_clears_it() {
        let (_tmp, store) = temp_store();
        let (domain, project) = domain_and_project(&store, "d1");
        let mut new = new_user(&domain.id, "alice");
        new.default_project_id = Some(project.id.clone());
        let alice = store.create_user(&new).unwrap();
        store.delete_project(&project.id).unwrap();
        assert_eq!(store.get_user(&alice.id).unwrap().default_project_id, None);
    }

    fn password_authentication() {
        let (_tmp, store) = temp_store();
        let domain = store.create_domain("d1").unwrap();
        let mut new = new_user(&domain.id, "alice");
        new.password = Some(PASSWORD.into());
        let alice = store.create_user(&new).unwrap();
        assert!(alice.password_changed_at.is_some());
        let by_name = |name: &str, domain: DomainRef| UserRef::Name {
            name: name.into(),
            domain,
        };

        let ok = store
            .authenticate_password(&by_name("alice", DomainRef::Name("d1".into())), PASSWORD)
            .unwrap();
        assert_eq!(ok.id, alice.id);
        let ok = store
            .authenticate_password(&UserRef::Id(alice.id.clone()), PASSWORD)
            .unwrap();
        assert_eq!(ok.id, alice.id);

        // Wrong password, unknown user, unknown domain: one answer.
        for (user, password) in [
            (UserRef::Id(alice.id.clone()), "Wrong-Horse-9"),
            (
                by_name("mallory", DomainRef::Id(domain.id.clone())),
                PASSWORD,
            ),
            (by_name("alice", DomainRef::Name("d2".into())), PASSWORD),
        ] {
            assert!(matches!(
                store.authenticate_password(&user, password),
                Err(IdentityError::InvalidCredentials)
            ));
        }

        // Disabled, even with the right password.
        set_user_enabled(&store, &alice.id, false);
        assert!(matches!(
            store.authenticate_password(&UserRef::Id(alice.id.clone()), PASSWORD),
            Err(IdentityError::InvalidCredentials)
        ));
        set_user_enabled(&store, &alice.id, true);
        set_domain_enabled(&store, &domain.id, false);
        assert!(matches!(
            store.authenticate_password(&UserRef::Id(alice.id.clone()), PASSWORD),
            Err(IdentityError::InvalidCredentials)
        ));
    }

    fn users_without_password_cannot_log_in_and_changes_take_effect() {
        let (_tmp, store) = temp_store();
        let domain = store.create_domain("d1").unwrap();
        let bob = user(&store, &domain.id, "bob");
        assert!(matches!(
            store.authenticate_password(&UserRef::Id(bob.id.clone()), PASSWORD),
            Err(IdentityError::InvalidCredentials)
        ));
        let set = UserUpdate {
            password: Some(PASSWORD.into()),
            ..Default::default()
        };
        let bob2 = store.update_user(&bob.id, &set).unwrap();
        assert!(bob2.password_changed_at.is_some());
        store
            .authenticate_password(&UserRef::Id(bob.id.clone()), PASSWORD)
            .unwrap();
        let weak = UserUpdate {
            password: Some("short".into()),
            ..Default::default()
        };
        assert!(matches!(
            store.update_user(&bob.id, &weak),
            Err(IdentityError::Invalid {
                field: "password",
                ..
            })
        ));
        store
            .authenticate_password(&UserRef::Id(bob.id.clone()), PASSWORD)
            .unwrap();
    }

    #[test]
    fn hashes_are_argon2id_and_salted() {
        let a = hash_password(PASSWORD).unwrap();
        let b = hash_password(PASSWORD).unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b);
        assert!(verify_password(&a, PASSWORD).unwrap());
        assert!(!verify_password(&a, "Correct-Horse-8").unwrap());
        assert!(matches!(
            verify_password("not a hash", PASSWORD),
            Err(IdentityError::Crypto(_))
        ));
    }
}
