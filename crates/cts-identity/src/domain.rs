//! Domains (accounts): the top of the ownership tree. Users, groups and
//! projects belong to exactly one domain.

use rusqlite::{params, Connection, Row, Transaction};
use serde::Serialize;

use crate::store::{found, now_ms};
use crate::{rules, IdentityError, IdentityStore};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Domain {
    pub id: String,
    pub name: String,
    /// A disabled domain disables all its users: no login, no token, no
    /// signed request.
    pub enabled: bool,
}

/// A domain named by id or by its (globally unique) name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    Id(String),
    Name(String),
}

/// Changes to a domain; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct DomainUpdate {
    pub name: Option<String>,
    pub enabled: Option<bool>,
}

const COLUMNS: &str = "id, name, enabled";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Domain> {
    Ok(Domain {
        id: r.get(0)?,
        name: r.get(1)?,
        enabled: r.get(2)?,
    })
}

fn name_taken(conn: &Connection, name: &str) -> Result<bool, IdentityError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM domains WHERE name = ?1)",
        [name],
        |r| r.get(0),
    )?)
}

/// Inserts an enabled domain with a caller-chosen id (bootstrap) or a new one.
pub(crate) fn insert(tx: &Transaction<'_>, id: &str, name: &str) -> Result<Domain, IdentityError> {
    rules::check_name("name", name)?;
    if name_taken(tx, name)? {
        return Err(IdentityError::conflict("domain", name));
    }
    tx.execute(
        "INSERT INTO domains (id, name, enabled, created_at) VALUES (?1, ?2, 1, ?3)",
        params![id, name, now_ms()],
    )?;
    Ok(Domain {
        id: id.to_owned(),
        name: name.to_owned(),
        enabled: true,
    })
}

pub(crate) fn get(conn: &Connection, id: &str) -> Result<Domain, IdentityError> {
    found(
        conn.query_row(
            &format!("SELECT {COLUMNS} FROM domains WHERE id = ?1"),
            [id],
            from_row,
        ),
        "domain",
        id,
    )
}

pub(crate) fn find(conn: &Connection, domain: &DomainRef) -> Result<Domain, IdentityError> {
    match domain {
        DomainRef::Id(id) => get(conn, id),
        DomainRef::Name(name) => found(
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM domains WHERE name = ?1"),
                [name],
                from_row,
            ),
            "domain",
            name,
        ),
    }
}

impl IdentityStore {
    pub fn create_domain(&self, name: &str) -> Result<Domain, IdentityError> {
        self.write(|tx| insert(tx, &rules::new_id(), name))
    }

    pub fn get_domain(&self, id: &str) -> Result<Domain, IdentityError> {
        self.cached(|c| &mut c.domains, id.to_string(), |conn| get(conn, id))
    }

    pub fn find_domain(&self, domain: &DomainRef) -> Result<Domain, IdentityError> {
        self.read(|conn| find(conn, domain))
    }

    /// All domains, by name.
    pub fn list_domains(&self) -> Result<Vec<Domain>, IdentityError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM domains ORDER BY name"))?;
            let rows = stmt.query_map([], from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Renames or enables/disables a domain. There is no domain deletion:
    /// the first start creates the domain when none exists, so deleting the
    /// last one would re-run the bootstrap on the next start.
    pub fn update_domain(&self, id: &str, update: &DomainUpdate) -> Result<Domain, IdentityError> {
        self.write(|tx| {
            let mut domain = get(tx, id)?;
            if let Some(name) = &update.name {
                rules::check_name("name", name)?;
                if *name != domain.name && name_taken(tx, name)? {
                    return Err(IdentityError::conflict("domain", name));
                }
                domain.name.clone_from(name);
            }
            if let Some(enabled) = update.enabled {
                domain.enabled = enabled;
            }
            tx.execute(
                "UPDATE domains SET name = ?2, enabled = ?3 WHERE id = ?1",
                params![id, domain.name, domain.enabled],
            )?;
            // Tokens carry the domain name, and a disabled domain disables
            // its users' tokens and keys.
            self.clear_caches();
            Ok(domain)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    #[test]
    fn create_get_find_list_update() {
        let (_tmp, store) = temp_store();
        let b = store.create_domain("beta").unwrap();
        let a = store.create_domain("alpha").unwrap();
        assert_eq!(b.id.len(), 32);
        assert!(b.enabled);
        assert_eq!(store.get_domain(&b.id).unwrap(), b);
        assert_eq!(
            store.find_domain(&DomainRef::Name("alpha".into())).unwrap(),
            a
        );
        assert_eq!(store.find_domain(&DomainRef::Id(a.id.clone())).unwrap(), a);
        assert_eq!(store.list_domains().unwrap(), [a.clone(), b.clone()]);

        let update = DomainUpdate {
            name: Some("gamma".into()),
            enabled: Some(false),
        };
        let g = store.update_domain(&b.id, &update).unwrap();
        assert_eq!((g.name.as_str(), g.enabled), ("gamma", false));
        assert_eq!(store.get_domain(&b.id).unwrap(), g);
        // Keeping the own name is not a conflict.
        let same = DomainUpdate {
            name: Some("gamma".into()),
            enabled: None,
        };
        assert_eq!(store.update_domain(&b.id, &same).unwrap(), g);
    }

    #[test]
    fn names_are_unique_and_checked() {
        let (_tmp, store) = temp_store();
        let a = store.create_domain("alpha").unwrap();
        store.create_domain("beta").unwrap();
        assert!(matches!(
            store.create_domain("alpha"),
            Err(IdentityError::Conflict { what: "domain", ref name }) if name == "alpha"
        ));
        let rename = DomainUpdate {
            name: Some("beta".into()),
            enabled: None,
        };
        assert!(matches!(
            store.update_domain(&a.id, &rename),
            Err(IdentityError::Conflict { what: "domain", .. })
        ));
        assert!(matches!(
            store.create_domain("9lives"),
            Err(IdentityError::Invalid { field: "name", .. })
        ));
        assert_eq!(store.list_domains().unwrap().len(), 2);
    }

    #[test]
    fn unknown_domains_are_not_found() {
        let (_tmp, store) = temp_store();
        assert!(matches!(
            store.get_domain("nope"),
            Err(IdentityError::NotFound { what: "domain", .. })
        ));
        assert!(matches!(
            store.find_domain(&DomainRef::Name("nope".into())),
            Err(IdentityError::NotFound { what: "domain", .. })
        ));
        assert!(matches!(
            store.update_domain("nope", &DomainUpdate::default()),
            Err(IdentityError::NotFound { what: "domain", .. })
        ));
    }
}
