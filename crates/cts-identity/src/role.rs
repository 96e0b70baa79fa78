//! The four built-in roles, role assignments per project, and the roles a
//! user effectively holds on a project.

use std::fmt;

use cts_db::{Arg, Sql};
use serde::{Deserialize, Serialize};

use crate::store::found;
use crate::{IdentityError, IdentityStore};

/// A built-in role. Roles are fixed: they are created when the store opens
/// and can be neither created nor deleted, so the server's authorisation
/// rules can match on this enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages the identities of its domain.
    Admin,
    /// Everything in CTS for the project.
    CtsAdmin,
    /// Read-only access to CTS for the project.
    CtsViewer,
    /// May only report traces for the project.
    CtsReporter,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Admin,
        Role::CtsAdmin,
        Role::CtsViewer,
        Role::CtsReporter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::CtsAdmin => "cts_admin",
            Role::CtsViewer => "cts_viewer",
            Role::CtsReporter => "cts_reporter",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    pub fn description(self) -> &'static str {
        match self {
            Role::Admin => {
                "Manages the users, groups, access keys and role assignments of its domain"
            }
            Role::CtsAdmin => "Full access to CTS for the project",
            Role::CtsViewer => "Read-only access to CTS for the project",
            Role::CtsReporter => "May only report traces to CTS for the project",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of roles (a bitset: checked on every request, so no allocation).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RoleSet(u8);

impl RoleSet {
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    pub fn insert(&mut self, role: Role) {
        self.0 |= role.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles in either set (e.g. held on any of several projects).
    pub fn union(self, other: RoleSet) -> RoleSet {
        RoleSet(self.0 | other.0)
    }

    /// The roles in the set, in the order of [`Role::ALL`].
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl FromIterator<Role> for RoleSet {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        let mut set = RoleSet::default();
        for role in iter {
            set.insert(role);
        }
        set
    }
}

impl fmt::Debug for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A stored role row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleRecord {
    pub id: String,
    #[serde(rename = "name")]
    pub role: Role,
    pub description: String,
}

/// Who a role is assigned to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "id")]
pub enum Actor {
    User(String),
    Group(String),
}

impl Actor {
    fn what(&self) -> &'static str {
        match self {
            Actor::User(_) => "user",
            Actor::Group(_) => "group",
        }
    }

    fn kind(&self) -> Owned {
        match self {
            Actor::User(_) => Owned::User,
            Actor::Group(_) => Owned::Group,
        }
    }

    fn id(&self) -> &str {
        match self {
            Actor::User(id) | Actor::Group(id) => id,
        }
    }
}

/// A role held by a user or group on a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    pub project_id: String,
    pub actor: Actor,
    pub role: Role,
}

/// The kinds of entity that belong to a domain.
#[derive(Clone, Copy)]
pub(crate) enum Owned {
    User,
    Group,
    Project,
}

/// The domain of an existing user, group or project.
pub(crate) fn domain_of(conn: &dyn Sql, kind: Owned, id: &str) -> Result<String, IdentityError> {
    let (sql, what) = match kind {
        Owned::User => ("SELECT domain_id FROM users WHERE id = $1", "user"),
        Owned::Group => ("SELECT domain_id FROM groups WHERE id = $1", "group"),
        Owned::Project => ("SELECT domain_id FROM projects WHERE id = $1", "project"),
    };
    Ok(found(conn.query_opt(sql, &[id.into()])?, what, id)?[0]
        .text()?
        .to_owned())
}

pub(crate) fn role_from_row(name: String) -> Result<Role, IdentityError> {
    Role::from_name(&name).ok_or_else(|| IdentityError::Storage(format!("unknown role {name:?}")))
}

/// The roles named by the rows of a query selecting role names.
pub(crate) fn role_set(
    conn: &dyn Sql,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<RoleSet, IdentityError> {
    let mut set = RoleSet::default();
    for row in conn.query(sql, args)? {
        set.insert(role_from_row(row[0].text()?.to_owned())?);
    }
    Ok(set)
}

impl IdentityStore {
    /// The built-in roles with their stored ids, in the order of [`Role::ALL`].
    pub fn list_roles(&self) -> Result<Vec<RoleRecord>, IdentityError> {
        self.read(|conn| {
            Role::ALL
                .into_iter()
                .map(|role| {
                    let sql = "SELECT id, description FROM roles WHERE name = $1";
                    let row = found(
                        conn.query_opt(sql, &[role.name().into()])?,
                        "role",
                        role.name(),
                    )?;
                    Ok(RoleRecord {
                        id: row[0].text()?.to_owned(),
                        role,
                        description: row[1].text()?.to_owned(),
                    })
                })
                .collect()
        })
    }

    /// Gives `actor` the `role` on a project of its own domain. Assigning a
    /// role that is already held succeeds and changes nothing.
    pub fn assign_role(
        &self,
        project_id: &str,
        actor: &Actor,
        role: Role,
    ) -> Result<(), IdentityError> {
        self.write(|tx| self.assign(tx, project_id, actor, role))
    }

    /// [`Self::assign_role`] inside a caller's transaction.
    pub(crate) fn assign(
        &self,
        tx: &dyn Sql,
        project_id: &str,
        actor: &Actor,
        role: Role,
    ) -> Result<(), IdentityError> {
        let project_domain = domain_of(tx, Owned::Project, project_id)?;
        if domain_of(tx, actor.kind(), actor.id())? != project_domain {
            return Err(IdentityError::invalid(
                "project_id",
                format!("the project must belong to the {}'s domain", actor.what()),
            ));
        }
        let sql = match actor {
            Actor::User(_) => {
                "INSERT INTO user_assignments (project_id, user_id, role_id) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            }
            Actor::Group(_) => {
                "INSERT INTO group_assignments (project_id, group_id, role_id) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            }
        };
        let args = [
            project_id.into(),
            actor.id().into(),
            self.role_id(role).into(),
        ];
        tx.exec(sql, &args)?;
        Ok(())
    }

    /// Removes an assignment; `NotFound` when it does not exist.
    pub fn unassign_role(
        &self,
        project_id: &str,
        actor: &Actor,
        role: Role,
    ) -> Result<(), IdentityError> {
        self.write(|tx| {
            let sql = match actor {
                Actor::User(_) => {
                    "DELETE FROM user_assignments \
                     WHERE project_id = $1 AND user_id = $2 AND role_id = $3"
                }
                Actor::Group(_) => {
                    "DELETE FROM group_assignments \
                     WHERE project_id = $1 AND group_id = $2 AND role_id = $3"
                }
            };
            let args = [
                project_id.into(),
                actor.id().into(),
                self.role_id(role).into(),
            ];
            match tx.exec(sql, &args)? {
                0 => Err(IdentityError::not_found(
                    "role assignment",
                    &format!(
                        "{role} of {} {} on project {project_id}",
                        actor.what(),
                        actor.id()
                    ),
                )),
                _ => Ok(()),
            }
        })
    }

    /// The direct assignments on a project (group assignments are listed as
    /// such, not expanded), optionally only those of one actor.
    pub fn list_assignments(
        &self,
        project_id: &str,
        actor: Option<&Actor>,
    ) -> Result<Vec<Assignment>, IdentityError> {
        self.read(|conn| {
            domain_of(conn, Owned::Project, project_id)?;
            let rows = conn.query(
                "SELECT 'user', a.user_id, r.name FROM user_assignments a \
                   JOIN roles r ON r.id = a.role_id WHERE a.project_id = $1 \
                 UNION ALL \
                 SELECT 'group', a.group_id, r.name FROM group_assignments a \
                   JOIN roles r ON r.id = a.role_id WHERE a.project_id = $1 \
                 ORDER BY 1 DESC, 2, 3",
                &[project_id.into()],
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (id, role) = (row[1].text()?.to_owned(), row[2].text()?.to_owned());
                let row_actor = match row[0].text()? {
                    "user" => Actor::User(id),
                    _ => Actor::Group(id),
                };
                if actor.is_none_or(|a| *a == row_actor) {
                    out.push(Assignment {
                        project_id: project_id.to_owned(),
                        actor: row_actor,
                        role: role_from_row(role)?,
                    });
                }
            }
            Ok(out)
        })
    }

    /// The roles `user_id` holds on `project_id`, directly or through its
    /// groups. Empty when the user, its domain or the project is disabled.
    pub fn effective_roles(
        &self,
        user_id: &str,
        project_id: &str,
    ) -> Result<RoleSet, IdentityError> {
        let key = (user_id.to_string(), project_id.to_string());
        self.cached(
            |c| &mut c.project_roles,
            key,
            |conn| effective_roles(conn, user_id, project_id),
        )
    }
}

/// Whether the user and its domain are enabled (`NotFound` for no user).
pub(crate) fn user_enabled(conn: &dyn Sql, user_id: &str) -> Result<bool, IdentityError> {
    // Flags are 0 or 1: their product is "both enabled" on either backend.
    let sql = "SELECT u.enabled * d.enabled FROM users u JOIN domains d ON d.id = u.domain_id \
               WHERE u.id = $1";
    Ok(found(conn.query_opt(sql, &[user_id.into()])?, "user", user_id)?[0].bool()?)
}

pub(crate) fn effective_roles(
    conn: &dyn Sql,
    user_id: &str,
    project_id: &str,
) -> Result<RoleSet, IdentityError> {
    let user_enabled = user_enabled(conn, user_id)?;
    let sql = "SELECT enabled FROM projects WHERE id = $1";
    let project_enabled = found(
        conn.query_opt(sql, &[project_id.into()])?,
        "project",
        project_id,
    )?[0]
        .bool()?;
    if !user_enabled || !project_enabled {
        return Ok(RoleSet::default());
    }
    role_set(
        conn,
        "SELECT name FROM roles WHERE id IN ( \
           SELECT role_id FROM user_assignments WHERE project_id = $1 AND user_id = $2 \
           UNION \
           SELECT a.role_id FROM group_assignments a \
             JOIN memberships m ON m.group_id = a.group_id \
             WHERE a.project_id = $1 AND m.user_id = $2)",
        &[project_id.into(), user_id.into()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::{both, temp_store};
    use crate::testutil::*;

    both!(
        exactly_the_builtin_roles_exist_with_stable_ids,
        direct_and_group_roles_combine,
        disabled_user_domain_or_project_has_no_roles,
        cross_domain_and_unknown_references_are_refused,
        deleting_a_project_or_actor_cascades_its_assignments
    );

    /// How many assignment rows exist (for tests of cascades).
    fn assignment_count(conn: &dyn Sql) -> i64 {
        let sql = "SELECT (SELECT count(*) FROM user_assignments) \
                   + (SELECT count(*) FROM group_assignments)";
        conn.query(sql, &[]).unwrap()[0][0].int().unwrap()
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::from_name(role.name()), Some(role));
            assert_eq!(role.to_string(), role.name());
            assert_eq!(
                serde_json::to_string(&role).unwrap(),
                format!("\"{}\"", role.name())
            );
        }
        assert_eq!(Role::from_name("Admin"), None);
        assert_eq!(Role::from_name("owner"), None);
    }

    #[test]
    fn role_set_behaves_like_a_set() {
        let mut set = RoleSet::default();
        assert!(set.is_empty());
        set.insert(Role::CtsViewer);
        set.insert(Role::Admin);
        set.insert(Role::CtsViewer);
        assert!(set.contains(Role::Admin) && set.contains(Role::CtsViewer));
        assert!(!set.contains(Role::CtsAdmin));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Role::Admin, Role::CtsViewer]
        );
        assert_eq!(format!("{set:?}"), "{Admin, CtsViewer}");
        assert_eq!(set, [Role::CtsViewer, Role::Admin].into_iter().collect());
        let other: RoleSet = [Role::CtsReporter, Role::Admin].into_iter().collect();
        assert_eq!(
            set.union(other).iter().collect::<Vec<_>>(),
            [Role::Admin, Role::CtsViewer, Role::CtsReporter]
        );
        assert_eq!(set.union(RoleSet::default()), set);
    }

    fn exactly_the_builtin_roles_exist_with_stable_ids() {
        let (place, store) = temp_store();
        let roles = store.list_roles().unwrap();
        assert_eq!(roles.iter().map(|r| r.role).collect::<Vec<_>>(), Role::ALL);
        assert!(roles
            .iter()
            .all(|r| r.id.len() == 32 && !r.description.is_empty()));
        let again = place.reopen().list_roles().unwrap();
        assert_eq!(roles, again);
    }

    fn direct_and_group_roles_combine() {
        let (_tmp, store) = temp_store();
        let (domain, project) = domain_and_project(&store, "d1");
        let alice = user(&store, &domain.id, "alice");
        let ops = group(&store, &domain.id, "ops");
        let user_actor = Actor::User(alice.id.clone());
        let group_actor = Actor::Group(ops.id.clone());

        assert!(store
            .effective_roles(&alice.id, &project.id)
            .unwrap()
            .is_empty());
        store
            .assign_role(&project.id, &user_actor, Role::CtsViewer)
            .unwrap();
        store
            .assign_role(&project.id, &user_actor, Role::CtsViewer)
            .unwrap();
        store
            .assign_role(&project.id, &group_actor, Role::CtsAdmin)
            .unwrap();
        let roles = store.effective_roles(&alice.id, &project.id).unwrap();
        assert_eq!(roles.iter().collect::<Vec<_>>(), [Role::CtsViewer]);

        store.add_member(&ops.id, &alice.id).unwrap();
        let roles = store.effective_roles(&alice.id, &project.id).unwrap();
        assert_eq!(
            roles.iter().collect::<Vec<_>>(),
            [Role::CtsAdmin, Role::CtsViewer]
        );

        assert_eq!(
            store.list_assignments(&project.id, None).unwrap(),
            [
                Assignment {
                    project_id: project.id.clone(),
                    actor: user_actor.clone(),
                    role: Role::CtsViewer
                },
                Assignment {
                    project_id: project.id.clone(),
                    actor: group_actor.clone(),
                    role: Role::CtsAdmin
                },
            ]
        );
        let only_group = store
            .list_assignments(&project.id, Some(&group_actor))
            .unwrap();
        assert_eq!(only_group.len(), 1);
        assert_eq!(only_group[0].role, Role::CtsAdmin);

        store.remove_member(&ops.id, &alice.id).unwrap();
        let roles = store.effective_roles(&alice.id, &project.id).unwrap();
        assert_eq!(roles.iter().collect::<Vec<_>>(), [Role::CtsViewer]);
        store
            .unassign_role(&project.id, &user_actor, Role::CtsViewer)
            .unwrap();
        assert!(store
            .effective_roles(&alice.id, &project.id)
            .unwrap()
            .is_empty());
        assert!(matches!(
            store.unassign_role(&project.id, &user_actor, Role::CtsViewer),
            Err(IdentityError::NotFound {
                what: "role assignment",
                ..
            })
        ));
    }

    fn disabled_user_domain_or_project_has_no_roles() {
        let (_tmp, store) = temp_store();
        let (domain, project) = domain_and_project(&store, "d1");
        let alice = user(&store, &domain.id, "alice");
        let actor = Actor::User(alice.id.clone());
        store
            .assign_role(&project.id, &actor, Role::CtsAdmin)
            .unwrap();
        let has_roles = || {
            !store
                .effective_roles(&alice.id, &project.id)
                .unwrap()
                .is_empty()
        };
        assert!(has_roles());

        set_user_enabled(&store, &alice.id, false);
        assert!(!has_roles());
        set_user_enabled(&store, &alice.id, true);

        set_project_enabled(&store, &project.id, false);
        assert!(!has_roles());
        set_project_enabled(&store, &project.id, true);

        set_domain_enabled(&store, &domain.id, false);
        assert!(!has_roles());
        set_domain_enabled(&store, &domain.id, true);
        assert!(has_roles());
    }

    fn cross_domain_and_unknown_references_are_refused() {
        let (_tmp, store) = temp_store();
        let (d1, p1) = domain_and_project(&store, "d1");
        let (d2, _p2) = domain_and_project(&store, "d2");
        let alice = user(&store, &d1.id, "alice");
        let bob = user(&store, &d2.id, "bob");
        let g2 = group(&store, &d2.id, "ops");
        for actor in [Actor::User(bob.id.clone()), Actor::Group(g2.id.clone())] {
            assert!(matches!(
                store.assign_role(&p1.id, &actor, Role::CtsViewer),
                Err(IdentityError::Invalid {
                    field: "project_id",
                    ..
                })
            ));
        }
        assert!(store.list_assignments(&p1.id, None).unwrap().is_empty());
        assert!(matches!(
            store.assign_role(&p1.id, &Actor::User("nope".into()), Role::Admin),
            Err(IdentityError::NotFound { what: "user", .. })
        ));
        assert!(matches!(
            store.assign_role("nope", &Actor::User(alice.id.clone()), Role::Admin),
            Err(IdentityError::NotFound {
                what: "project",
                ..
            })
        ));
        assert!(matches!(
            store.effective_roles(&alice.id, "nope"),
            Err(IdentityError::NotFound {
                what: "project",
                ..
            })
        ));
        assert!(matches!(
            store.list_assignments("nope", None),
            Err(IdentityError::NotFound {
                what: "project",
                ..
            })
        ));
    }

    fn deleting_a_project_or_actor_cascades_its_assignments() {
        let (_tmp, store) = temp_store();
        let (domain, project) = domain_and_project(&store, "d1");
        let alice = user(&store, &domain.id, "alice");
        let bob = user(&store, &domain.id, "bob");
        let ops = group(&store, &domain.id, "ops");
        let count = || store.read(|c| Ok(assignment_count(c))).unwrap();
        for actor in [
            Actor::User(alice.id.clone()),
            Actor::User(bob.id.clone()),
            Actor::Group(ops.id.clone()),
        ] {
            store.assign_role(&project.id, &actor, Role::Admin).unwrap();
        }
        assert_eq!(count(), 3);
        store.delete_group(&ops.id).unwrap();
        assert_eq!(count(), 2);
        store.delete_user(&alice.id).unwrap();
        assert_eq!(count(), 1);
        store.delete_project(&project.id).unwrap();
        assert_eq!(count(), 0);
        assert!(store.effective_roles(&bob.id, &project.id).is_err());
    }
}
