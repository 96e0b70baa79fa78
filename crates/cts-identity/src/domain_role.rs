//! Roles held on a whole domain. Only `admin` is: a domain admin manages
//! the identities of its domain, while `admin` on a project manages only
//! that project's role assignments.

use cts_db::Sql;

use crate::role::{domain_of, role_from_row, role_set, user_enabled, Owned};
use crate::{IdentityError, IdentityStore, Role, RoleSet};

/// Assigned at domain scope.
pub const DOMAIN_ROLES: [Role; 1] = [Role::Admin];

impl IdentityStore {
    /// Gives `user_id` the `role` on its own domain `domain_id`; holding it
    /// already changes nothing.
    pub fn assign_domain_role(
        &self,
        domain_id: &str,
        user_id: &str,
        role: Role,
    ) -> Result<(), IdentityError> {
        self.write(|tx| {
            check_domain_role(tx, domain_id, user_id, role)?;
            tx.exec(
                "INSERT INTO domain_assignments (domain_id, user_id, role_id) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[domain_id.into(), user_id.into(), self.role_id(role).into()],
            )?;
            Ok(())
        })
    }

    /// Removes a domain assignment; `NotFound` when it does not exist.
    pub fn unassign_domain_role(
        &self,
        domain_id: &str,
        user_id: &str,
        role: Role,
    ) -> Result<(), IdentityError> {
        self.write(|tx| {
            let removed = tx.exec(
                "DELETE FROM domain_assignments \
                 WHERE domain_id = $1 AND user_id = $2 AND role_id = $3",
                &[domain_id.into(), user_id.into(), self.role_id(role).into()],
            )?;
            match removed {
                0 => Err(IdentityError::not_found(
                    "role assignment",
                    &format!("{role} of user {user_id} on domain {domain_id}"),
                )),
                _ => Ok(()),
            }
        })
    }

    /// The domain roles of `user_id` (an enabled user of an enabled domain;
    /// empty otherwise), on its own domain.
    pub fn domain_roles(&self, user_id: &str) -> Result<RoleSet, IdentityError> {
        self.cached(
            |c| &mut c.domain_roles,
            user_id.to_string(),
            |conn| domain_roles(conn, user_id),
        )
    }

    /// The domain assignments of `domain_id`, optionally of one user, as
    /// `(user_id, role)`.
    pub fn list_domain_assignments(
        &self,
        domain_id: &str,
        user_id: Option<&str>,
    ) -> Result<Vec<(String, Role)>, IdentityError> {
        self.read(|conn| {
            let rows = conn.query(
                "SELECT a.user_id, r.name FROM domain_assignments a \
                 JOIN roles r ON r.id = a.role_id \
                 WHERE a.domain_id = $1 AND (CAST($2 AS TEXT) IS NULL OR a.user_id = $2) ORDER BY 1, 2",
                &[domain_id.into(), user_id.into()],
            )?;
            rows.iter()
                .map(|row| Ok((row[0].text()?.to_owned(), role_from_row(row[1].text()?.to_owned())?)))
                .collect()
        })
    }

    /// The projects on which `user_id` holds a role, directly or through a
    /// group.
    pub fn projects_with_roles(&self, user_id: &str) -> Result<Vec<String>, IdentityError> {
        self.read(|conn| {
            let rows = conn.query(
                "SELECT project_id FROM user_assignments WHERE user_id = $1 \
                 UNION \
                 SELECT a.project_id FROM group_assignments a \
                   JOIN memberships m ON m.group_id = a.group_id WHERE m.user_id = $1 \
                 ORDER BY 1",
                &[user_id.into()],
            )?;
            rows.iter()
                .map(|row| Ok(row[0].text()?.to_owned()))
                .collect()
        })
    }
}

fn check_domain_role(
    conn: &dyn Sql,
    domain_id: &str,
    user_id: &str,
    role: Role,
) -> Result<(), IdentityError> {
    if !DOMAIN_ROLES.contains(&role) {
        return Err(IdentityError::invalid(
            "role_id",
            format!("{role} is a project role; only admin is assigned on a domain"),
        ));
    }
    if domain_of(conn, Owned::User, user_id)? != domain_id {
        return Err(IdentityError::invalid(
            "domain_id",
            "the domain must be the user's own",
        ));
    }
    Ok(())
}

fn domain_roles(conn: &dyn Sql, user_id: &str) -> Result<RoleSet, IdentityError> {
    if !user_enabled(conn, user_id)? {
        return Ok(RoleSet::default());
    }
    role_set(
        conn,
        "SELECT r.name FROM domain_assignments a JOIN roles r ON r.id = a.role_id \
         JOIN users u ON u.id = a.user_id AND u.domain_id = a.domain_id \
         WHERE a.user_id = $1",
        &[user_id.into()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::{both, temp_store};
    use crate::testutil::*;
    use crate::Actor;

    both!(only_admin_on_the_users_own_domain);

    fn only_admin_on_the_users_own_domain() {
        let (_tmp, store) = temp_store();
        let (d1, p1) = domain_and_project(&store, "d1");
        let (d2, _) = domain_and_project(&store, "d2");
        let alice = user(&store, &d1.id, "alice");
        assert!(store.domain_roles(&alice.id).unwrap().is_empty());
        // admin on a project is not admin of the domain
        store
            .assign_role(&p1.id, &Actor::User(alice.id.clone()), Role::Admin)
            .unwrap();
        assert!(store.domain_roles(&alice.id).unwrap().is_empty());
        assert!(matches!(
            store.assign_domain_role(&d1.id, &alice.id, Role::CtsAdmin),
            Err(IdentityError::Invalid {
                field: "role_id",
                ..
            })
        ));
        assert!(matches!(
            store.assign_domain_role(&d2.id, &alice.id, Role::Admin),
            Err(IdentityError::Invalid {
                field: "domain_id",
                ..
            })
        ));
        store
            .assign_domain_role(&d1.id, &alice.id, Role::Admin)
            .unwrap();
        store
            .assign_domain_role(&d1.id, &alice.id, Role::Admin)
            .unwrap();
        assert!(store.domain_roles(&alice.id).unwrap().contains(Role::Admin));
        assert_eq!(
            store.list_domain_assignments(&d1.id, None).unwrap(),
            [(alice.id.clone(), Role::Admin)]
        );
        assert_eq!(store.projects_with_roles(&alice.id).unwrap(), [p1.id]);
        store
            .unassign_domain_role(&d1.id, &alice.id, Role::Admin)
            .unwrap();
        assert!(store.domain_roles(&alice.id).unwrap().is_empty());
        assert!(matches!(
            store.unassign_domain_role(&d1.id, &alice.id, Role::Admin),
            Err(IdentityError::NotFound { .. })
        ));
    }

    /// A store of schema 1 (no domain roles, `admin` on a project managed
    /// the domain) keeps that power for those users, and only for them; one
    /// from before the login lockouts gains their table.
    #[test]
    fn schema_1_project_admins_become_domain_admins() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("identity");
        let store = IdentityStore::open(&dir).unwrap();
        let (d1, p1) = domain_and_project(&store, "d1");
        let admin = user(&store, &d1.id, "old-admin");
        let viewer = user(&store, &d1.id, "viewer");
        store
            .assign_role(&p1.id, &Actor::User(admin.id.clone()), Role::Admin)
            .unwrap();
        store
            .assign_role(&p1.id, &Actor::User(viewer.id.clone()), Role::CtsViewer)
            .unwrap();
        drop(store);
        let conn = rusqlite::Connection::open(dir.join("identity.db")).unwrap();
        conn.execute_batch(
            "DROP TABLE domain_assignments; DROP TABLE login_lockouts; PRAGMA user_version = 1;",
        )
        .unwrap();
        drop(conn);
        let store = IdentityStore::open(&dir).unwrap();
        assert!(store.domain_roles(&admin.id).unwrap().contains(Role::Admin));
        assert!(store.domain_roles(&viewer.id).unwrap().is_empty());
        let lockouts: i64 = store
            .read(|c| Ok(c.query("SELECT count(*) FROM login_lockouts", &[])?[0][0].int()?))
            .unwrap();
        assert_eq!(lockouts, 0);
    }
}
