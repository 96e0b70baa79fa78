//! Copying an embedded node's trackers (with their tags and encryption
//! keys) and catalog into another store (`ctsd migrate-from-embedded`):
//! every row the target lacks. Each project whose trackers arrive is
//! noted as changed, so that running nodes load them within a second.

use std::collections::BTreeSet;

use cts_db::{copy_rows, Copied, Db};

use crate::error::codes;
use crate::store::Failure;
use crate::view::bump;
use crate::{Catalog, TrackerError, TrackerStore};

const TRACKERS: [(&str, &[&str]); 3] = [
    (
        "trackers",
        &[
            "id",
            "project_id",
            "domain_id",
            "tracker_name",
            "tracker_type",
            "create_time",
            "body",
        ],
    ),
    ("tags", &["tracker_id", "key", "value"]),
    (
        "encryption_keys",
        &["id", "project_id", "name", "recipient", "created_at"],
    ),
];

const CATALOG: [(&str, &[&str]); 2] = [
    (
        "catalog_operations",
        &["domain_id", "service_type", "resource_type", "trace_name"],
    ),
    ("catalog_users", &["project_id", "user_name", "last_seen"]),
];

impl TrackerStore {
    /// Copies every tracker, tag and encryption key `target` lacks into it;
    /// answers per table what it did. One transaction on the target.
    pub fn copy_into(
        &self,
        target: &TrackerStore,
    ) -> Result<Vec<(&'static str, Copied)>, TrackerError> {
        copy_tables(&self.db, &target.db, &TRACKERS, true)
    }
}

impl Catalog {
    /// Copies the catalog rows `target` lacks into it.
    pub fn copy_into(&self, target: &Catalog) -> Result<Vec<(&'static str, Copied)>, TrackerError> {
        copy_tables(&self.db, &target.db, &CATALOG, false)
    }
}

fn copy_tables(
    from: &Db,
    to: &Db,
    tables: &[(&'static str, &[&str])],
    note_projects: bool,
) -> Result<Vec<(&'static str, Copied)>, TrackerError> {
    from.read(|from| {
        to.transaction(|to| {
            if note_projects {
                let projects: BTreeSet<String> = from
                    .query("SELECT DISTINCT project_id FROM trackers", &[])?
                    .into_iter()
                    .map(|r| Ok(r[0].text()?.to_owned()))
                    .collect::<Result<_, Failure>>()?;
                for project in &projects {
                    bump(to, project)?;
                }
            }
            tables
                .iter()
                .map(|(table, columns)| {
                    Ok((
                        *table,
                        copy_rows(from, to, table, columns, |_| Ok::<_, Failure>(()))?,
                    ))
                })
                .collect::<Result<Vec<_>, Failure>>()
        })
    })
    .map_err(|e: Failure| e.into_error(codes::WRITE_FAILED))
}
