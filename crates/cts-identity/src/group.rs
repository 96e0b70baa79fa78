//! Groups of users of one domain; roles assigned to a group reach its
//! members.

use cts_db::{Row, Sql};
use serde::Serialize;

use crate::role::{domain_of, Owned};
use crate::store::{found, now_ms, taken};
use crate::{domain, rules, user, Filter, IdentityError, IdentityStore, User};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub description: String,
}

/// A group to create.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub domain_id: String,
    pub name: String,
    pub description: String,
}

/// Changes to a group; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct GroupUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
}

const COLUMNS: &str = "g.id, g.name, g.domain_id, g.description";

fn from_row(r: &Row) -> Result<Group, IdentityError> {
    Ok(Group {
        id: r[0].text()?.to_owned(),
        name: r[1].text()?.to_owned(),
        domain_id: r[2].text()?.to_owned(),
        description: r[3].text()?.to_owned(),
    })
}

fn get(conn: &dyn Sql, id: &str) -> Result<Group, IdentityError> {
    let sql = format!("SELECT {COLUMNS} FROM groups g WHERE g.id = $1");
    from_row(&found(conn.query_opt(&sql, &[id.into()])?, "group", id)?)
}

fn name_taken(conn: &dyn Sql, domain_id: &str, name: &str) -> Result<bool, IdentityError> {
    let sql = "SELECT 1 FROM groups WHERE domain_id = $1 AND name = $2";
    Ok(conn
        .query_opt(sql, &[domain_id.into(), name.into()])?
        .is_some())
}

impl IdentityStore {
    pub fn create_group(&self, new: &NewGroup) -> Result<Group, IdentityError> {
        rules::check_name("name", &new.name)?;
        rules::check_description(&new.description)?;
        self.write(|tx| {
            domain::get(tx, &new.domain_id)?;
            if name_taken(tx, &new.domain_id, &new.name)? {
                return Err(IdentityError::conflict("group", &new.name));
            }
            let id = rules::new_id();
            tx.exec(
                "INSERT INTO groups (id, name, domain_id, description, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    id.as_str().into(),
                    new.name.as_str().into(),
                    new.domain_id.as_str().into(),
                    new.description.as_str().into(),
                    now_ms().into(),
                ],
            )
            .map_err(|e| taken(e, "group", &new.name))?;
            get(tx, &id)
        })
    }

    pub fn get_group(&self, id: &str) -> Result<Group, IdentityError> {
        self.read(|conn| get(conn, id))
    }

    /// Groups matching `filter`, by domain and name.
    pub fn list_groups(&self, filter: &Filter) -> Result<Vec<Group>, IdentityError> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM groups g \
                 WHERE (CAST($1 AS TEXT) IS NULL OR g.domain_id = $1) AND (CAST($2 AS TEXT) IS NULL OR g.name = $2) \
                 ORDER BY g.domain_id, g.name"
            );
            let args = [filter.domain_id.as_deref().into(), filter.name.as_deref().into()];
            conn.query(&sql, &args)?.iter().map(from_row).collect()
        })
    }

    pub fn update_group(&self, id: &str, update: &GroupUpdate) -> Result<Group, IdentityError> {
        if let Some(name) = &update.name {
            rules::check_name("name", name)?;
        }
        if let Some(description) = &update.description {
            rules::check_description(description)?;
        }
        self.write(|tx| {
            let mut group = get(tx, id)?;
            if let Some(name) = &update.name {
                if *name != group.name && name_taken(tx, &group.domain_id, name)? {
                    return Err(IdentityError::conflict("group", name));
                }
                group.name.clone_from(name);
            }
            if let Some(description) = &update.description {
                group.description.clone_from(description);
            }
            tx.exec(
                "UPDATE groups SET name = $1, description = $2 WHERE id = $3",
                &[
                    group.name.as_str().into(),
                    group.description.as_str().into(),
                    id.into(),
                ],
            )
            .map_err(|e| taken(e, "group", &group.name))?;
            Ok(group)
        })
    }

    /// Deletes a group with its memberships and role assignments.
    pub fn delete_group(&self, id: &str) -> Result<(), IdentityError> {
        self.write(|tx| {
            if tx.exec("DELETE FROM groups WHERE id = $1", &[id.into()])? == 0 {
                return Err(IdentityError::not_found("group", id));
            }
            Ok(())
        })
    }

    /// Adds a user of the group's domain to the group; adding a member
    /// again succeeds and changes nothing.
    pub fn add_member(&self, group_id: &str, user_id: &str) -> Result<(), IdentityError> {
        self.write(|tx| {
            if domain_of(tx, Owned::Group, group_id)? != domain_of(tx, Owned::User, user_id)? {
                return Err(IdentityError::invalid(
                    "user_id",
                    "the user must belong to the group's domain",
                ));
            }
            tx.exec(
                "INSERT INTO memberships (group_id, user_id) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[group_id.into(), user_id.into()],
            )?;
            Ok(())
        })
    }

    /// Removes a membership; `NotFound` when the user is not a member.
    pub fn remove_member(&self, group_id: &str, user_id: &str) -> Result<(), IdentityError> {
        self.write(|tx| {
            match tx.exec(
                "DELETE FROM memberships WHERE group_id = $1 AND user_id = $2",
                &[group_id.into(), user_id.into()],
            )? {
                0 => Err(IdentityError::not_found(
                    "group membership",
                    &format!("of user {user_id} in group {group_id}"),
                )),
                _ => Ok(()),
            }
        })
    }

    /// Whether the user is in the group; `NotFound` for an unknown group or
    /// user, so a typo is not answered with "no".
    pub fn is_member(&self, group_id: &str, user_id: &str) -> Result<bool, IdentityError> {
        self.read(|conn| {
            domain_of(conn, Owned::Group, group_id)?;
            domain_of(conn, Owned::User, user_id)?;
            let sql = "SELECT 1 FROM memberships WHERE group_id = $1 AND user_id = $2";
            Ok(conn
                .query_opt(sql, &[group_id.into(), user_id.into()])?
                .is_some())
        })
    }

    /// The members of a group, by name.
    pub fn list_group_users(&self, group_id: &str) -> Result<Vec<User>, IdentityError> {
        self.read(|conn| {
            domain_of(conn, Owned::Group, group_id)?;
            let sql = format!(
                "SELECT {} FROM memberships m JOIN users u ON u.id = m.user_id \
                 WHERE m.group_id = $1 ORDER BY u.name",
                user::COLUMNS
            );
            let rows = conn.query(&sql, &[group_id.into()])?;
            rows.iter().map(user::from_row).collect()
        })
    }

    /// The groups a user is in, by name.
    pub fn list_user_groups(&self, user_id: &str) -> Result<Vec<Group>, IdentityError> {
        self.read(|conn| {
            domain_of(conn, Owned::User, user_id)?;
            let sql = format!(
                "SELECT {COLUMNS} FROM memberships m JOIN groups g ON g.id = m.group_id \
                 WHERE m.user_id = $1 ORDER BY g.name"
            );
            let rows = conn.query(&sql, &[user_id.into()])?;
            rows.iter().map(from_row).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::{both, temp_store};
    use crate::testutil::*;

    both!(round_trip_uniqueness_and_listing, membership);

    fn round_trip_uniqueness_and_listing() {
        let (_tmp, store) = temp_store();
        let d1 = store.create_domain("d1").unwrap();
        let d2 = store.create_domain("d2").unwrap();
        let ops = group(&store, &d1.id, "ops");
        assert_eq!(ops.id.len(), 32);
        assert_eq!(store.get_group(&ops.id).unwrap(), ops);
        let dev = group(&store, &d1.id, "dev");
        group(&store, &d2.id, "ops");
        assert!(matches!(
            store.create_group(&NewGroup {
                domain_id: d1.id.clone(),
                name: "ops".into(),
                description: String::new()
            }),
            Err(IdentityError::Conflict { what: "group", .. })
        ));
        let in_d1 = Filter {
            domain_id: Some(d1.id.clone()),
            name: None,
        };
        let names: Vec<_> = store
            .list_groups(&in_d1)
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(names, ["dev", "ops"]);

        let rename = GroupUpdate {
            name: Some("ops".into()),
            description: None,
        };
        assert!(matches!(
            store.update_group(&dev.id, &rename),
            Err(IdentityError::Conflict { what: "group", .. })
        ));
        let update = GroupUpdate {
            name: Some("developers".into()),
            description: Some("they build".into()),
        };
        let changed = store.update_group(&dev.id, &update).unwrap();
        assert_eq!(store.get_group(&dev.id).unwrap(), changed);
        assert_eq!(changed.description, "they build");

        store.delete_group(&dev.id).unwrap();
        assert!(matches!(
            store.delete_group(&dev.id),
            Err(IdentityError::NotFound { what: "group", .. })
        ));
    }

    fn membership() {
        let (_tmp, store) = temp_store();
        let d1 = store.create_domain("d1").unwrap();
        let d2 = store.create_domain("d2").unwrap();
        let ops = group(&store, &d1.id, "ops");
        let dev = group(&store, &d1.id, "dev");
        let alice = user(&store, &d1.id, "alice");
        let bob = user(&store, &d1.id, "bob");
        let eve = user(&store, &d2.id, "eve");

        assert!(!store.is_member(&ops.id, &alice.id).unwrap());
        store.add_member(&ops.id, &alice.id).unwrap();
        store.add_member(&ops.id, &alice.id).unwrap();
        store.add_member(&ops.id, &bob.id).unwrap();
        store.add_member(&dev.id, &alice.id).unwrap();
        assert!(store.is_member(&ops.id, &alice.id).unwrap());
        let members: Vec<_> = store
            .list_group_users(&ops.id)
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(members, ["alice", "bob"]);
        let groups: Vec<_> = store
            .list_user_groups(&alice.id)
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(groups, ["dev", "ops"]);

        assert!(matches!(
            store.add_member(&ops.id, &eve.id),
            Err(IdentityError::Invalid {
                field: "user_id",
                ..
            })
        ));
        assert!(matches!(
            store.add_member(&ops.id, "nope"),
            Err(IdentityError::NotFound { what: "user", .. })
        ));
        assert!(matches!(
            store.is_member("nope", &alice.id),
            Err(IdentityError::NotFound { what: "group", .. })
        ));

        store.remove_member(&ops.id, &bob.id).unwrap();
        assert!(matches!(
            store.remove_member(&ops.id, &bob.id),
            Err(IdentityError::NotFound {
                what: "group membership",
                ..
            })
        ));

        // Memberships go with the user and with the group.
        store.delete_user(&alice.id).unwrap();
        assert!(store.list_group_users(&ops.id).unwrap().is_empty());
        store.add_member(&dev.id, &bob.id).unwrap();
        store.delete_group(&dev.id).unwrap();
        assert!(store.list_user_groups(&bob.id).unwrap().is_empty());
    }
}
