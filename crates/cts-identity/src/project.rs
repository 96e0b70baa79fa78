//! Projects: the unit of CTS data and of role assignments.

use cts_db::{Row, Sql};
use serde::Serialize;

use crate::domain::{self, DomainRef};
use crate::store::{found, now_ms, taken};
use crate::{rules, Filter, IdentityError, IdentityStore};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub description: String,
    /// A disabled project grants no roles and invalidates its tokens.
    pub enabled: bool,
    /// The region the project lives in, e.g. `eu-de`; fixed at creation.
    pub region: String,
}

/// A project to create; it starts enabled.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub domain_id: String,
    pub name: String,
    pub description: String,
    pub region: String,
}

/// A project named by id, or by name within a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

/// Changes to a project; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct ProjectUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

const COLUMNS: &str = "id, name, domain_id, description, enabled, region";

fn from_row(r: &Row) -> Result<Project, IdentityError> {
    Ok(Project {
        id: r[0].text()?.to_owned(),
        name: r[1].text()?.to_owned(),
        domain_id: r[2].text()?.to_owned(),
        description: r[3].text()?.to_owned(),
        enabled: r[4].bool()?,
        region: r[5].text()?.to_owned(),
    })
}

fn name_taken(conn: &dyn Sql, domain_id: &str, name: &str) -> Result<bool, IdentityError> {
    let sql = "SELECT 1 FROM projects WHERE domain_id = $1 AND name = $2";
    Ok(conn
        .query_opt(sql, &[domain_id.into(), name.into()])?
        .is_some())
}

/// Inserts a project with a caller-chosen id (bootstrap) or a new one.
pub(crate) fn insert(tx: &dyn Sql, id: &str, new: &NewProject) -> Result<Project, IdentityError> {
    rules::check_project_name(&new.name)?;
    rules::check_description(&new.description)?;
    rules::check_region(&new.region)?;
    domain::get(tx, &new.domain_id)?;
    if name_taken(tx, &new.domain_id, &new.name)? {
        return Err(IdentityError::conflict("project", &new.name));
    }
    tx.exec(
        "INSERT INTO projects (id, name, domain_id, description, enabled, region, created_at) \
         VALUES ($1, $2, $3, $4, 1, $5, $6)",
        &[
            id.into(),
            new.name.as_str().into(),
            new.domain_id.as_str().into(),
            new.description.as_str().into(),
            new.region.as_str().into(),
            now_ms().into(),
        ],
    )
    .map_err(|e| taken(e, "project", &new.name))?;
    get(tx, id)
}

pub(crate) fn get(conn: &dyn Sql, id: &str) -> Result<Project, IdentityError> {
    let sql = format!("SELECT {COLUMNS} FROM projects WHERE id = $1");
    from_row(&found(conn.query_opt(&sql, &[id.into()])?, "project", id)?)
}

impl IdentityStore {
    pub fn create_project(&self, new: &NewProject) -> Result<Project, IdentityError> {
        self.write(|tx| insert(tx, &rules::new_id(), new))
    }

    pub fn get_project(&self, id: &str) -> Result<Project, IdentityError> {
        self.read(|conn| get(conn, id))
    }

    /// Resolves a project reference, e.g. the scope of a token request.
    pub fn find_project(&self, project: &ProjectRef) -> Result<Project, IdentityError> {
        self.read(|conn| match project {
            ProjectRef::Id(id) => get(conn, id),
            ProjectRef::Name { name, domain } => {
                let domain = domain::find(conn, domain)?;
                let sql =
                    format!("SELECT {COLUMNS} FROM projects WHERE domain_id = $1 AND name = $2");
                let row =
                    conn.query_opt(&sql, &[domain.id.as_str().into(), name.as_str().into()])?;
                from_row(&found(row, "project", name)?)
            }
        })
    }

    /// Projects matching `filter`, by domain and name.
    pub fn list_projects(&self, filter: &Filter) -> Result<Vec<Project>, IdentityError> {
        self.read(|conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM projects \
                 WHERE (CAST($1 AS TEXT) IS NULL OR domain_id = $1) AND (CAST($2 AS TEXT) IS NULL OR name = $2) \
                 ORDER BY domain_id, name"
            );
            let args = [filter.domain_id.as_deref().into(), filter.name.as_deref().into()];
            conn.query(&sql, &args)?.iter().map(from_row).collect()
        })
    }

    pub fn update_project(
        &self,
        id: &str,
        update: &ProjectUpdate,
    ) -> Result<Project, IdentityError> {
        self.write(|tx| {
            let mut project = get(tx, id)?;
            if let Some(name) = &update.name {
                rules::check_project_name(name)?;
                if *name != project.name && name_taken(tx, &project.domain_id, name)? {
                    return Err(IdentityError::conflict("project", name));
                }
                project.name.clone_from(name);
            }
            if let Some(description) = &update.description {
                rules::check_description(description)?;
                project.description.clone_from(description);
            }
            if let Some(enabled) = update.enabled {
                project.enabled = enabled;
            }
            tx.exec(
                "UPDATE projects SET name = $1, description = $2, enabled = $3 WHERE id = $4",
                &[
                    project.name.as_str().into(),
                    project.description.as_str().into(),
                    project.enabled.into(),
                    id.into(),
                ],
            )
            .map_err(|e| taken(e, "project", &project.name))?;
            Ok(project)
        })
    }

    /// Deletes a project with its role assignments and the tokens scoped to
    /// it; users who had it as default project keep none.
    pub fn delete_project(&self, id: &str) -> Result<(), IdentityError> {
        self.write(|tx| {
            if tx.exec("DELETE FROM projects WHERE id = $1", &[id.into()])? == 0 {
                return Err(IdentityError::not_found("project", id));
            }
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
        round_trip_and_lookup,
        names_are_unique_per_domain,
        list_filters_by_domain_and_name,
        values_are_checked
    );

    fn round_trip_and_lookup() {
        let (_tmp, store) = temp_store();
        let d = store.create_domain("d1").unwrap();
        let p = store
            .create_project(&new_project(&d.id, "eu-de_ops"))
            .unwrap();
        assert_eq!(p.id.len(), 32);
        assert_eq!(
            (
                p.name.as_str(),
                p.domain_id.as_str(),
                p.region.as_str(),
                p.enabled
            ),
            ("eu-de_ops", d.id.as_str(), "eu-de", true)
        );
        assert_eq!(store.get_project(&p.id).unwrap(), p);
        assert_eq!(
            store.find_project(&ProjectRef::Id(p.id.clone())).unwrap(),
            p
        );
        for domain in [DomainRef::Id(d.id.clone()), DomainRef::Name("d1".into())] {
            let by_name = ProjectRef::Name {
                name: "eu-de_ops".into(),
                domain,
            };
            assert_eq!(store.find_project(&by_name).unwrap(), p);
        }
        let update = ProjectUpdate {
            name: Some("eu-de_dev".into()),
            description: Some("dev".into()),
            enabled: Some(false),
        };
        let u = store.update_project(&p.id, &update).unwrap();
        assert_eq!(
            (u.name.as_str(), u.description.as_str(), u.enabled),
            ("eu-de_dev", "dev", false)
        );
        assert_eq!(store.get_project(&p.id).unwrap(), u);
        store.delete_project(&p.id).unwrap();
        assert!(matches!(
            store.get_project(&p.id),
            Err(IdentityError::NotFound {
                what: "project",
                ..
            })
        ));
        assert!(matches!(
            store.delete_project(&p.id),
            Err(IdentityError::NotFound {
                what: "project",
                ..
            })
        ));
    }

    fn names_are_unique_per_domain() {
        let (_tmp, store) = temp_store();
        let d1 = store.create_domain("d1").unwrap();
        let d2 = store.create_domain("d2").unwrap();
        let p1 = store.create_project(&new_project(&d1.id, "eu-de")).unwrap();
        store.create_project(&new_project(&d2.id, "eu-de")).unwrap();
        assert!(matches!(
            store.create_project(&new_project(&d1.id, "eu-de")),
            Err(IdentityError::Conflict {
                what: "project",
                ..
            })
        ));
        let other = store.create_project(&new_project(&d1.id, "eu-nl")).unwrap();
        let rename = ProjectUpdate {
            name: Some("eu-de".into()),
            ..Default::default()
        };
        assert!(matches!(
            store.update_project(&other.id, &rename),
            Err(IdentityError::Conflict {
                what: "project",
                ..
            })
        ));
        assert_eq!(store.update_project(&p1.id, &rename).unwrap().name, "eu-de");
    }

    fn list_filters_by_domain_and_name() {
        let (_tmp, store) = temp_store();
        let d1 = store.create_domain("d1").unwrap();
        let d2 = store.create_domain("d2").unwrap();
        store.create_project(&new_project(&d1.id, "b")).unwrap();
        store.create_project(&new_project(&d1.id, "a")).unwrap();
        store.create_project(&new_project(&d2.id, "a")).unwrap();
        let names = |f: Filter| -> Vec<(String, String)> {
            store
                .list_projects(&f)
                .unwrap()
                .into_iter()
                .map(|p| (p.domain_id, p.name))
                .collect()
        };
        assert_eq!(names(Filter::default()).len(), 3);
        assert_eq!(
            names(Filter {
                domain_id: Some(d1.id.clone()),
                name: None
            }),
            [(d1.id.clone(), "a".into()), (d1.id.clone(), "b".into())]
        );
        assert_eq!(
            names(Filter {
                domain_id: None,
                name: Some("a".into())
            })
            .len(),
            2
        );
        assert!(names(Filter {
            domain_id: Some(d2.id.clone()),
            name: Some("b".into())
        })
        .is_empty());
    }

    fn values_are_checked() {
        let (_tmp, store) = temp_store();
        let d = store.create_domain("d1").unwrap();
        let mut bad = new_project(&d.id, "eu-de");
        bad.region = "EU".into();
        assert!(matches!(
            store.create_project(&bad),
            Err(IdentityError::Invalid {
                field: "region",
                ..
            })
        ));
        assert!(matches!(
            store.create_project(&new_project(&d.id, "a b")),
            Err(IdentityError::Invalid { field: "name", .. })
        ));
        assert!(matches!(
            store.create_project(&new_project("nope", "eu-de")),
            Err(IdentityError::NotFound { what: "domain", .. })
        ));
        assert!(matches!(
            store.find_project(&ProjectRef::Name {
                name: "eu-de".into(),
                domain: DomainRef::Id(d.id.clone())
            }),
            Err(IdentityError::NotFound {
                what: "project",
                ..
            })
        ));
    }
}
