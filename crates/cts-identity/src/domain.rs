//! Domains (accounts): the top of the ownership tree. Users, groups and
//! projects belong to exactly one domain.

use cts_db::{Row, Sql};
use serde::Serialize;

use crate::store::{found, now_ms, taken};
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

fn from_row(r: &Row) -> Result<Domain, IdentityError> {
    Ok(Domain {
        id: r[0].text()?.to_owned(),
        name: r[1].text()?.to_owned(),
        enabled: r[2].bool()?,
    })
}

fn name_taken(conn: &dyn Sql, name: &str) -> Result<bool, IdentityError> {
    Ok(conn
        .query_opt("SELECT 1 FROM domains WHERE name = $1", &[name.into()])?
        .is_some())
}

/// Inserts an enabled domain with a caller-chosen id (bootstrap) or a new one.
pub(crate) fn insert(tx: &dyn Sql, id: &str, name: &str) -> Result<Domain, IdentityError> {
    rules::check_name("name", name)?;
    if name_taken(tx, name)? {
        return Err(IdentityError::conflict("domain", name));
    }
    tx.exec(
        "INSERT INTO domains (id, name, enabled, created_at) VALUES ($1, $2, 1, $3)",
        &[id.into(), name.into(), now_ms().into()],
    )
    .map_err(|e| taken(e, "domain", name))?;
    Ok(Domain {
        id: id.to_owned(),
        name: name.to_owned(),
        enabled: true,
    })
}

pub(crate) fn get(conn: &dyn Sql, id: &str) -> Result<Domain, IdentityError> {
    let sql = format!("SELECT {COLUMNS} FROM domains WHERE id = $1");
    from_row(&found(conn.query_opt(&sql, &[id.into()])?, "domain", id)?)
}

pub(crate) fn find(conn: &dyn Sql, domain: &DomainRef) -> Result<Domain, IdentityError> {
    match domain {
        DomainRef::Id(id) => get(conn, id),
        DomainRef::Name(name) => {
            let sql = format!("SELECT {COLUMNS} FROM domains WHERE name = $1");
            from_row(&found(
                conn.query_opt(&sql, &[name.as_str().into()])?,
                "domain",
                name,
            )?)
        }
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
            let sql = format!("SELECT {COLUMNS} FROM domains ORDER BY name");
            conn.query(&sql, &[])?.iter().map(from_row).collect()
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
            tx.exec(
                "UPDATE domains SET name = $1, enabled = $2 WHERE id = $3",
                &[
                    domain.name.as_str().into(),
                    domain.enabled.into(),
                    id.into(),
                ],
            )
            .map_err(|e| taken(e, "domain", &domain.name))?;
            Ok(domain)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::{both, temp_store};

    both!(
        create_get_find_list_update,
        names_are_unique_and_checked,
        unknown_domains_are_not_found
    );

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
