//! What CTS knows of services, resource types, trace names and users: the
//! answers of `GET /v3/{project_id}/operations`, `GET /v3/{domain_id}/resources`
//! and `GET /v3/{project_id}/user-resources`.
//!
//! Seeded with the services of the user guide's "Supported Services and
//! Operations" and with the operations CTS itself records (its trackers and
//! notifications, and IAM's identity changes); the rest is learned from
//! recorded traces. Learning happens on the ingest path, so [`Catalog::observe`]
//! costs a few hash lookups under a read lock when nothing is new; new
//! entries are kept in memory and made durable by [`Catalog::flush`], which
//! the server calls periodically and on shutdown (an entry observed after the
//! last flush before a crash is learned again from the next such trace).
//!
//! On PostgreSQL several nodes learn into the same tables: a flush inserts
//! with `ON CONFLICT` (a row another node wrote first is no error) in key
//! order (so two nodes' flushes cannot deadlock), and then takes in what
//! the other nodes learned, so that every node answers what any node
//! learned within a flush interval.
//!
//! Learned operations are kept per domain and users per project, so that
//! nothing reported in one tenant shows in another's answers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use cts_db::{Arg, Db, DbError, Sql};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::error::{codes, TrackerError};
use crate::store::open_sqlite;

/// How far back `user-resources` looks.
pub const USER_WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;
/// A user's last-seen time is moved forward at most this often, so that a
/// busy user costs a read lock, not a write, per trace.
const USER_TOUCH_MS: i64 = 3600 * 1000;
/// Rows a statement of a flush writes at most: within the parameters
/// SQLite (32,766) and PostgreSQL (65,535) take.
const FLUSH_ROWS: usize = 500;

/// `($1, $2, …), ($n+1, …), …`: `rows` rows of `width` parameters.
fn placeholders(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bounds on what reporters can make the server remember.
const MAX_OPERATIONS_PER_DOMAIN: usize = 10_000;
const MAX_USERS_PER_PROJECT: usize = 10_000;

/// `(service_type, name)` of every service in umn/source/supported_services_and_operations.rst.
/// The service type is the acronym in parentheses, upper-cased (`DeH` is
/// `DEH`); services listed without one get their name in upper case,
/// without spaces or punctuation.
pub const SUPPORTED_SERVICES: &[(&str, &str)] = &[
    ("IMS", "Image Management Service"),
    ("BMS", "Bare Metal Server"),
    ("AS", "Auto Scaling"),
    ("DEH", "Dedicated Host"),
    ("FG", "FunctionGraph"),
    ("ECS", "Elastic Cloud Server"),
    ("SFS", "Scalable File Service"),
    ("SDRS", "Storage Disaster Recovery Service"),
    ("CBR", "Cloud Backup and Recovery"),
    ("CSBS", "Cloud Server Backup Service"),
    ("EVS", "Elastic Volume Service"),
    ("OBS", "Object Storage Service"),
    ("DNS", "Domain Name Service"),
    ("ELB", "Elastic Load Balance"),
    ("DC", "Direct Connect"),
    ("PLAS", "Private Link Access Service"),
    ("ER", "Enterprise Router"),
    ("VPC", "Virtual Private Cloud"),
    ("CCE", "Cloud Container Engine"),
    ("ASM", "Application Service Mesh"),
    ("SWR", "Software Repository for Container"),
    ("CTS", "Cloud Trace Service"),
    ("IAM", "Identity and Access Management"),
    ("TMS", "Tag Management Service"),
    ("RTS", "Resource Template Service"),
    ("CES", "Cloud Eye"),
    ("CONFIG", "Config"),
    ("LTS", "Log Tank Service"),
    ("DMS", "Distributed Message Service"),
    ("DCS", "Distributed Cache Service"),
    ("SMN", "Simple Message Notification"),
    ("APM", "Application Performance Management"),
    ("APIG", "API Gateway"),
    ("AOM", "Application Operations Management"),
    ("RDS", "Relational Database Service"),
    ("DDS", "Document Database Service"),
    ("GAUSSDBFORMYSQL", "GaussDB (for MySQL)"),
    ("GAUSSDBNOSQL", "GaussDB NoSQL"),
    ("DRS", "Data Replication Service"),
    ("KMS", "Key Management Service"),
    ("AAD", "Anti DDoS"),
    ("DBSS", "Database Security Service"),
    ("HSS", "Host Security Service"),
    ("WAF", "Web Application Firewall"),
    ("MODELARTS", "ModelArts"),
    ("MRS", "MapReduce Service"),
    ("DWS", "GaussDB(DWS)"),
    ("CSS", "Cloud Search Service"),
    ("DLI", "Data Lake Insight"),
    ("DATAARTSSTUDIO", "DataArts Studio"),
    ("DIS", "Data Ingestion Service"),
];

/// `(service_type, resource_type, trace names)` CTS records itself.
const SEED_OPERATIONS: &[(&str, &str, &[&str])] = &[
    (
        "CTS",
        "tracker",
        &["createTracker", "updateTracker", "deleteTracker"],
    ),
    (
        "CTS",
        "notification",
        &[
            "createNotification",
            "updateNotification",
            "deleteNotification",
        ],
    ),
    ("IAM", "user", &["createUser", "updateUser", "deleteUser"]),
    (
        "IAM",
        "group",
        &[
            "createGroup",
            "updateGroup",
            "deleteGroup",
            "addUserToGroup",
            "removeUserFromGroup",
        ],
    ),
    (
        "IAM",
        "project",
        &["createProject", "updateProject", "deleteProject"],
    ),
    ("IAM", "role", &["grantRole", "revokeRole"]),
    (
        "IAM",
        "credential",
        &[
            "createCredential",
            "updateCredential",
            "deleteCredential",
            "authenticate",
        ],
    ),
    ("IAM", "token", &["createToken", "revokeToken"]),
];

/// One entry of `operations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperationList {
    pub service_type: String,
    pub resource_type: String,
    pub operation_list: Vec<String>,
}

/// One entry of `resources`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceResource {
    pub service_type: String,
    pub resource: Vec<String>,
}

/// resource type → trace names.
type Resources = HashMap<String, HashSet<String>>;

#[derive(Default)]
struct DomainOps {
    count: usize,
    services: HashMap<String, Resources>,
}

impl DomainOps {
    fn contains(&self, service: &str, resource: &str, trace: &str) -> bool {
        self.services
            .get(service)
            .and_then(|r| r.get(resource))
            .is_some_and(|t| t.contains(trace))
    }

    /// Whether it was new (and room was left for it).
    fn insert(&mut self, service: &str, resource: &str, trace: &str) -> bool {
        if self.count >= MAX_OPERATIONS_PER_DOMAIN {
            return false;
        }
        let new = self
            .services
            .entry(service.to_owned())
            .or_default()
            .entry(resource.to_owned())
            .or_default()
            .insert(trace.to_owned());
        self.count += usize::from(new);
        new
    }
}

#[derive(Default)]
struct Learned {
    /// domain → learned operations.
    ops: HashMap<String, DomainOps>,
    /// project → user → last seen (ms).
    users: HashMap<String, HashMap<String, i64>>,
    /// Not yet flushed: `(domain, service, resource, trace)`.
    new_ops: Vec<[String; 4]>,
    /// Not yet flushed: `(project, user)` → last seen.
    touched_users: HashMap<(String, String), i64>,
}

impl Learned {
    /// Whether `observe` has anything to record (read-lock check).
    fn knows(&self, p: &Observation<'_>) -> bool {
        let op_known = p.service_type.is_empty()
            || p.resource_type.is_empty()
            || p.trace_name.is_empty()
            || self.ops.get(p.domain_id).is_some_and(|d| {
                d.count >= MAX_OPERATIONS_PER_DOMAIN
                    || d.contains(p.service_type, p.resource_type, p.trace_name)
            });
        let user_known = p.user_name.is_empty()
            || match self.users.get(p.project_id) {
                Some(u) => match u.get(p.user_name) {
                    Some(seen) => p.time_ms < seen + USER_TOUCH_MS,
                    None => u.len() >= MAX_USERS_PER_PROJECT,
                },
                None => false,
            };
        op_known && user_known
    }

    fn record(&mut self, p: &Observation<'_>) {
        if !(p.service_type.is_empty() || p.resource_type.is_empty() || p.trace_name.is_empty())
            && self.ops.entry(p.domain_id.to_owned()).or_default().insert(
                p.service_type,
                p.resource_type,
                p.trace_name,
            )
        {
            self.new_ops.push([
                p.domain_id.to_owned(),
                p.service_type.to_owned(),
                p.resource_type.to_owned(),
                p.trace_name.to_owned(),
            ]);
        }
        if p.user_name.is_empty() {
            return;
        }
        let users = self.users.entry(p.project_id.to_owned()).or_default();
        let touch = if let Some(seen) = users.get_mut(p.user_name) {
            let due = p.time_ms >= *seen + USER_TOUCH_MS;
            if due {
                *seen = p.time_ms;
            }
            due
        } else if users.len() < MAX_USERS_PER_PROJECT {
            users.insert(p.user_name.to_owned(), p.time_ms);
            true
        } else {
            false
        };
        if touch {
            let slot = self
                .touched_users
                .entry((p.project_id.to_owned(), p.user_name.to_owned()))
                .or_insert(p.time_ms);
            *slot = (*slot).max(p.time_ms);
        }
    }
}

impl Learned {
    /// Takes in what is stored (this node's or another's): operations up
    /// to the bound, users seen since `cutoff` up to the bound, each with
    /// the later of the two last-seen times.
    fn take_in(&mut self, c: &dyn Sql, cutoff: i64) -> Result<(), DbError> {
        for row in c.query(
            "SELECT domain_id, service_type, resource_type, trace_name FROM catalog_operations",
            &[],
        )? {
            self.ops
                .entry(row[0].text()?.to_owned())
                .or_default()
                .insert(row[1].text()?, row[2].text()?, row[3].text()?);
        }
        for row in c.query(
            "SELECT project_id, user_name, last_seen FROM catalog_users WHERE last_seen >= $1",
            &[cutoff.into()],
        )? {
            let users = self.users.entry(row[0].text()?.to_owned()).or_default();
            add_user(users, row[1].text()?, row[2].int()?);
        }
        Ok(())
    }

    /// Adds what `other` knows (and this does not).
    fn merge(&mut self, other: Learned) {
        for (domain, d) in other.ops {
            let mine = self.ops.entry(domain).or_default();
            for (service, resources) in &d.services {
                for (resource, traces) in resources {
                    for trace in traces {
                        mine.insert(service, resource, trace);
                    }
                }
            }
        }
        for (project, users) in other.users {
            let mine = self.users.entry(project).or_default();
            for (name, seen) in users {
                add_user(mine, &name, seen);
            }
        }
    }
}

/// A user's later last-seen time, or the user if there is room.
fn add_user(users: &mut HashMap<String, i64>, name: &str, seen: i64) {
    let room = users.len() < MAX_USERS_PER_PROJECT;
    match users.get_mut(name) {
        Some(s) => *s = (*s).max(seen),
        None if room => {
            users.insert(name.to_owned(), seen);
        }
        None => {}
    }
}

/// The fields of a recorded trace the catalog learns from.
struct Observation<'a> {
    project_id: &'a str,
    domain_id: &'a str,
    service_type: &'a str,
    resource_type: &'a str,
    trace_name: &'a str,
    user_name: &'a str,
    time_ms: i64,
}

/// The catalog. `Send + Sync`; share it as `Arc<Catalog>`.
pub struct Catalog {
    pub(crate) db: Db,
    /// One flush at a time.
    flushing: Mutex<()>,
    learned: RwLock<Learned>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

impl Catalog {
    /// Opens (creating on first use) `dir/catalog.db` and loads what was
    /// learned before; `dir` is `DATA_DIR/trackers`.
    pub fn open(dir: &Path) -> Result<Catalog, TrackerError> {
        Catalog::on(open_sqlite(
            dir,
            "catalog.db",
            &crate::schema::sqlite_catalog(),
        )?)
    }

    /// The catalog on `db`: the SQLite file of [`Catalog::open`], or
    /// PostgreSQL opened with [`crate::PG_SCHEMA`] (shared by every node).
    pub fn on(db: Db) -> Result<Catalog, TrackerError> {
        let mut learned = Learned::default();
        db.read(|c| learned.take_in(c, i64::MIN))
            .map_err(|e| TrackerError::storage(codes::READ_FAILED, e))?;
        Ok(Catalog {
            db,
            flushing: Mutex::new(()),
            learned: RwLock::new(learned),
        })
    }

    /// Learns from one recorded trace. Cheap when nothing is new: a read
    /// lock and hash lookups, no allocation. Empty fields are skipped.
    #[allow(clippy::too_many_arguments)] // the fields of one trace
    pub fn observe(
        &self,
        project_id: &str,
        domain_id: &str,
        service_type: &str,
        resource_type: &str,
        trace_name: &str,
        user_name: &str,
        time_ms: i64,
    ) {
        let p = Observation {
            project_id,
            domain_id,
            service_type,
            resource_type,
            trace_name,
            user_name,
            time_ms,
        };
        if self.learned.read().knows(&p) {
            return;
        }
        self.learned.write().record(&p);
    }

    /// Makes what was learned since the last flush durable, and forgets
    /// users not seen in the 30 days before `now_ms`. On failure nothing is
    /// lost: the entries stay pending for the next flush. On PostgreSQL it
    /// then takes in what the other nodes learned.
    pub fn flush(&self, now_ms: i64) -> Result<(), TrackerError> {
        let cutoff = now_ms - USER_WINDOW_MS;
        let _one = self.flushing.lock();
        let (mut ops, users) = {
            let mut l = self.learned.write();
            for u in l.users.values_mut() {
                u.retain(|_, seen| *seen >= cutoff);
            }
            l.users.retain(|_, u| !u.is_empty());
            (
                std::mem::take(&mut l.new_ops),
                std::mem::take(&mut l.touched_users),
            )
        };
        // Key order: concurrent flushes of several nodes lock shared rows
        // in the same order.
        ops.sort_unstable();
        let mut users: Vec<_> = users.into_iter().collect();
        users.sort_unstable();
        // Many rows a statement: a statement a row cost PostgreSQL more
        // than the traces themselves when every user's last-seen moved.
        let written = self.db.transaction(|tx| {
            for chunk in ops.chunks(FLUSH_ROWS) {
                let args: Vec<Arg<'_>> = chunk
                    .iter()
                    .flat_map(|[d, s, r, t]| [d.into(), s.into(), r.into(), t.into()])
                    .collect();
                tx.exec(
                    &format!(
                        "INSERT INTO catalog_operations \
                         (domain_id, service_type, resource_type, trace_name) VALUES {} \
                         ON CONFLICT DO NOTHING",
                        placeholders(chunk.len(), 4)
                    ),
                    &args,
                )?;
            }
            for chunk in users.chunks(FLUSH_ROWS) {
                let args: Vec<Arg<'_>> = chunk
                    .iter()
                    .flat_map(|((p, u), seen)| [p.into(), u.into(), (*seen).into()])
                    .collect();
                tx.exec(
                    &format!(
                        "INSERT INTO catalog_users (project_id, user_name, last_seen) \
                         VALUES {} ON CONFLICT (project_id, user_name) \
                         DO UPDATE SET last_seen = excluded.last_seen \
                         WHERE excluded.last_seen > catalog_users.last_seen",
                        placeholders(chunk.len(), 3)
                    ),
                    &args,
                )?;
            }
            Ok::<_, DbError>(())
        });
        if let Err(e) = written {
            let mut l = self.learned.write();
            l.new_ops.extend(ops);
            for (k, seen) in users {
                let slot = l.touched_users.entry(k).or_insert(seen);
                *slot = (*slot).max(seen);
            }
            return Err(TrackerError::storage(codes::WRITE_FAILED, e));
        }
        // Its own transaction, so that it holds no row lock a flush of
        // another node waits for.
        self.db
            .transaction(|tx| {
                tx.exec(
                    "DELETE FROM catalog_users WHERE last_seen < $1",
                    &[cutoff.into()],
                )
            })
            .map_err(|e| TrackerError::storage(codes::WRITE_FAILED, e))?;
        if self.db.is_postgres() {
            // Read without the lock `observe` takes; merged in memory.
            let mut others = Learned::default();
            self.db
                .read(|c| others.take_in(c, cutoff))
                .map_err(|e| TrackerError::storage(codes::READ_FAILED, e))?;
            self.learned.write().merge(others);
        }
        Ok(())
    }

    /// `GET /v3/{project_id}/operations`: the seeded operations and those
    /// learned in `domain_id`, by service and resource type, names sorted.
    /// `resource_type` requires `service_type` (CTS.0300).
    pub fn operations(
        &self,
        domain_id: &str,
        service_type: Option<&str>,
        resource_type: Option<&str>,
    ) -> Result<Vec<OperationList>, TrackerError> {
        if resource_type.is_some() && service_type.is_none() {
            return Err(TrackerError::param(
                "resource_type",
                "resource_type requires service_type",
            ));
        }
        let mut all: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for (s, r, names) in SEED_OPERATIONS {
            all.entry((s.to_string(), r.to_string()))
                .or_default()
                .extend(names.iter().map(|n| n.to_string()));
        }
        if let Some(d) = self.learned.read().ops.get(domain_id) {
            for (s, resources) in &d.services {
                for (r, names) in resources {
                    all.entry((s.clone(), r.clone()))
                        .or_default()
                        .extend(names.iter().cloned());
                }
            }
        }
        Ok(all
            .into_iter()
            .filter(|((s, r), _)| {
                service_type.is_none_or(|x| x == s) && resource_type.is_none_or(|x| x == r)
            })
            .map(|((service_type, resource_type), names)| OperationList {
                service_type,
                resource_type,
                operation_list: names.into_iter().collect(),
            })
            .collect())
    }

    /// `GET /v3/{domain_id}/resources`: every supported service with the
    /// resource types known for it, and the services learned in the domain.
    pub fn resources(&self, domain_id: &str) -> Vec<TraceResource> {
        let mut all: BTreeMap<String, BTreeSet<String>> = SUPPORTED_SERVICES
            .iter()
            .map(|(s, _)| (s.to_string(), BTreeSet::new()))
            .collect();
        for (s, r, _) in SEED_OPERATIONS {
            all.entry(s.to_string()).or_default().insert(r.to_string());
        }
        if let Some(d) = self.learned.read().ops.get(domain_id) {
            for (s, resources) in &d.services {
                all.entry(s.clone())
                    .or_default()
                    .extend(resources.keys().cloned());
            }
        }
        all.into_iter()
            .map(|(service_type, r)| TraceResource {
                service_type,
                resource: r.into_iter().collect(),
            })
            .collect()
    }

    /// `GET /v3/{project_id}/user-resources`: users seen in the project's
    /// traces in the 30 days before `now_ms`, sorted.
    pub fn users(&self, project_id: &str, now_ms: i64) -> Vec<String> {
        let cutoff = now_ms - USER_WINDOW_MS;
        let mut names: Vec<String> = self
            .learned
            .read()
            .users
            .get(project_id)
            .map(|u| {
                u.iter()
                    .filter(|(_, seen)| **seen >= cutoff)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600 * 1000;
    const NOW: i64 = 1_700_000_000_000;

    use crate::testing::{catalog, pg_db};
    use cts_testpg::{both, Place};

    fn open() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        (dir, c)
    }

    fn names(ops: &[OperationList]) -> Vec<(&str, &str, Vec<&str>)> {
        ops.iter()
            .map(|o| {
                (
                    o.service_type.as_str(),
                    o.resource_type.as_str(),
                    o.operation_list.iter().map(String::as_str).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn seeded_operations_and_filters() {
        let (_d, c) = open();
        let cts = c.operations("d1", Some("CTS"), None).unwrap();
        assert_eq!(
            names(&cts),
            [
                (
                    "CTS",
                    "notification",
                    vec![
                        "createNotification",
                        "deleteNotification",
                        "updateNotification"
                    ]
                ),
                (
                    "CTS",
                    "tracker",
                    vec!["createTracker", "deleteTracker", "updateTracker"]
                ),
            ]
        );
        let group = c.operations("d1", Some("IAM"), Some("group")).unwrap();
        assert_eq!(
            group[0].operation_list,
            [
                "addUserToGroup",
                "createGroup",
                "deleteGroup",
                "removeUserFromGroup",
                "updateGroup"
            ]
        );
        assert_eq!(
            c.operations("d1", None, None).unwrap().len(),
            SEED_OPERATIONS.len()
        );
        assert!(c.operations("d1", Some("ECS"), None).unwrap().is_empty());
        let e = c.operations("d1", None, Some("tracker")).unwrap_err();
        assert_eq!(
            (e.code, e.status, e.field.as_deref()),
            ("CTS.0300", 400, Some("resource_type"))
        );
    }

    #[test]
    fn resources_list_every_supported_service() {
        let (_d, c) = open();
        let r = c.resources("d1");
        assert_eq!(r.len(), SUPPORTED_SERVICES.len());
        let find = |s: &str| r.iter().find(|x| x.service_type == s).unwrap();
        assert_eq!(find("DEH").resource, Vec::<String>::new());
        assert_eq!(find("CTS").resource, ["notification", "tracker"]);
        assert_eq!(
            find("IAM").resource,
            ["credential", "group", "project", "role", "token", "user"]
        );
        assert!(SUPPORTED_SERVICES
            .iter()
            .all(|(s, _)| s.chars().all(|c| c.is_ascii_uppercase())));
    }

    #[test]
    fn observed_operations_are_learned_per_domain() {
        let (_d, c) = open();
        c.observe("p1", "d1", "ECS", "server", "createServer", "alice", NOW);
        c.observe("p1", "d1", "ECS", "server", "createServer", "alice", NOW);
        c.observe("p1", "d1", "ECS", "server", "deleteServer", "", NOW);
        c.observe("p1", "d1", "MYAPP", "widget", "spin", "bob", NOW);
        c.observe("p1", "d1", "CTS", "tracker", "createTracker", "", NOW);
        assert_eq!(
            names(&c.operations("d1", Some("ECS"), None).unwrap()),
            [("ECS", "server", vec!["createServer", "deleteServer"])]
        );
        assert_eq!(
            c.operations("d1", Some("CTS"), Some("tracker")).unwrap()[0]
                .operation_list
                .len(),
            3
        );
        let r = c.resources("d1");
        assert!(r
            .iter()
            .any(|x| x.service_type == "MYAPP" && x.resource == ["widget"]));
        assert!(r
            .iter()
            .any(|x| x.service_type == "ECS" && x.resource == ["server"]));
        // Another domain learns nothing from d1's traces.
        assert!(c.operations("d2", Some("ECS"), None).unwrap().is_empty());
        assert!(!c.resources("d2").iter().any(|x| x.service_type == "MYAPP"));
    }

    #[test]
    fn users_of_the_last_30_days_per_project() {
        let (_d, c) = open();
        c.observe(
            "p1",
            "d1",
            "ECS",
            "server",
            "createServer",
            "old",
            NOW - 31 * DAY,
        );
        c.observe(
            "p1",
            "d1",
            "ECS",
            "server",
            "createServer",
            "edge",
            NOW - 30 * DAY,
        );
        c.observe(
            "p1",
            "d1",
            "ECS",
            "server",
            "createServer",
            "bob",
            NOW - DAY,
        );
        c.observe("p1", "d1", "ECS", "server", "createServer", "alice", NOW);
        c.observe("p2", "d1", "ECS", "server", "createServer", "carol", NOW);
        assert_eq!(c.users("p1", NOW), ["alice", "bob", "edge"]);
        assert_eq!(c.users("p2", NOW), ["carol"]);
        assert!(c.users("p3", NOW).is_empty());
        // A later trace of "old" brings it back.
        c.observe("p1", "d1", "ECS", "server", "createServer", "old", NOW);
        assert_eq!(c.users("p1", NOW), ["alice", "bob", "edge", "old"]);
    }

    #[test]
    fn last_seen_moves_forward_hourly() {
        let (_d, c) = open();
        c.observe("p1", "d1", "", "", "", "alice", NOW - 40 * DAY);
        assert!(c.users("p1", NOW).is_empty());
        c.observe(
            "p1",
            "d1",
            "",
            "",
            "",
            "alice",
            NOW - 40 * DAY + USER_TOUCH_MS - 1,
        );
        assert!(c.users("p1", NOW - 10 * DAY + 1).is_empty());
        c.observe("p1", "d1", "", "", "", "alice", NOW);
        assert_eq!(c.users("p1", NOW), ["alice"]);
        // An older trace never moves it back.
        c.observe("p1", "d1", "", "", "", "alice", NOW - 40 * DAY);
        assert_eq!(c.users("p1", NOW + 29 * DAY), ["alice"]);
    }

    fn flush_survives_reopen_and_prunes_expired_users(place: &Place) {
        {
            let c = catalog(place);
            c.observe("p1", "d1", "ECS", "server", "createServer", "alice", NOW);
            c.observe(
                "p1",
                "d1",
                "ECS",
                "server",
                "createServer",
                "old",
                NOW - 29 * DAY,
            );
            c.flush(NOW).unwrap();
            c.observe(
                "p1",
                "d1",
                "ECS",
                "server",
                "rebootServer",
                "alice",
                NOW + 2 * USER_TOUCH_MS,
            );
            c.flush(NOW + 2 * DAY).unwrap();
            // Not flushed: lost on "crash", relearned from the next trace.
            c.observe("p1", "d1", "ECS", "server", "stopServer", "", NOW);
        }
        let c = catalog(place);
        assert_eq!(
            c.operations("d1", Some("ECS"), None).unwrap()[0].operation_list,
            ["createServer", "rebootServer"]
        );
        // "old" was pruned by the second flush (29 + 2 days ago).
        assert_eq!(c.users("p1", NOW + 2 * DAY), ["alice"]);
        let n =
            c.db.read(|s| s.query("SELECT COUNT(*) FROM catalog_users", &[])?[0][0].int())
                .unwrap();
        assert_eq!(n, 1);
        // alice's last seen moved forward in the database too.
        assert_eq!(c.users("p1", NOW + 30 * DAY + USER_TOUCH_MS), ["alice"]);
    }

    #[test]
    fn what_is_remembered_is_bounded() {
        let (_d, c) = open();
        for i in 0..MAX_OPERATIONS_PER_DOMAIN + 5 {
            c.observe("p1", "d1", "ECS", "server", &format!("op{i}"), "", NOW);
        }
        let ops = c.operations("d1", Some("ECS"), None).unwrap();
        assert_eq!(ops[0].operation_list.len(), MAX_OPERATIONS_PER_DOMAIN);
        for i in 0..MAX_USERS_PER_PROJECT + 5 {
            c.observe("p1", "d1", "", "", "", &format!("u{i}"), NOW);
        }
        assert_eq!(c.users("p1", NOW).len(), MAX_USERS_PER_PROJECT);
        assert_eq!(c.learned.read().new_ops.len(), MAX_OPERATIONS_PER_DOMAIN);
    }

    #[test]
    fn observe_of_known_entries_is_cheap() {
        let (_d, c) = open();
        c.observe("p1", "d1", "ECS", "server", "createServer", "alice", NOW);
        let start = std::time::Instant::now();
        let n = 200_000;
        for i in 0..n {
            c.observe(
                "p1",
                "d1",
                "ECS",
                "server",
                "createServer",
                "alice",
                NOW + i,
            );
        }
        let per = start.elapsed() / n as u32;
        // Generous for unoptimised test builds on a slow machine; the
        // release build is well under a microsecond.
        assert!(
            per < std::time::Duration::from_micros(50),
            "{per:?} per observe"
        );
        assert_eq!(c.learned.read().new_ops.len(), 1);
    }

    /// Two nodes learning into one database: each answers what the other
    /// learned once both flushed, and flushing the same entries at once is
    /// no error.
    #[test]
    fn nodes_learn_from_each_other() {
        let pg = cts_testpg::TestPg::start();
        let a = std::sync::Arc::new(Catalog::on(pg_db(&pg)).unwrap());
        let b = std::sync::Arc::new(Catalog::on(pg_db(&pg)).unwrap());
        a.observe("p1", "d1", "ECS", "server", "createServer", "alice", NOW);
        b.observe("p1", "d1", "EVS", "volume", "createVolume", "bob", NOW);
        for i in 0..200 {
            let op = format!("op{i}");
            a.observe("p1", "d1", "VPC", "vpc", &op, &format!("u{i}"), NOW);
            b.observe("p1", "d1", "VPC", "vpc", &op, &format!("u{i}"), NOW + 1);
        }
        let flushes: Vec<_> = [&a, &b]
            .into_iter()
            .map(|c| {
                let c = std::sync::Arc::clone(c);
                std::thread::spawn(move || c.flush(NOW))
            })
            .collect();
        for f in flushes {
            f.join().unwrap().unwrap();
        }
        // Each node's next flush takes in what the other had committed.
        for c in [&a, &b] {
            c.flush(NOW).unwrap();
        }
        for c in [&a, &b] {
            assert_eq!(
                names(&c.operations("d1", Some("ECS"), None).unwrap()),
                [("ECS", "server", vec!["createServer"])]
            );
            assert_eq!(c.operations("d1", Some("EVS"), None).unwrap().len(), 1);
            assert_eq!(
                c.operations("d1", Some("VPC"), None).unwrap()[0]
                    .operation_list
                    .len(),
                200
            );
            let users = c.users("p1", NOW);
            assert!(users.contains(&"alice".to_string()) && users.contains(&"bob".to_string()));
            assert_eq!(users.len(), 202);
        }
    }

    both!(flush_survives_reopen_and_prunes_expired_users);

    /// A flush of more rows than one statement writes keeps every one, and
    /// a later flush moves every last-seen forward.
    fn a_flush_of_many_rows_keeps_them_all(place: &Place) {
        let n = 2 * FLUSH_ROWS + 7;
        {
            let c = catalog(place);
            for i in 0..n {
                c.observe(
                    "p1",
                    "d1",
                    "VPC",
                    "vpc",
                    &format!("op{i}"),
                    &format!("u{i}"),
                    NOW,
                );
            }
            c.flush(NOW).unwrap();
            for i in 0..n {
                let later = NOW + 2 * USER_TOUCH_MS;
                c.observe("p1", "d1", "", "", "", &format!("u{i}"), later);
            }
            c.flush(NOW + 2 * USER_TOUCH_MS).unwrap();
        }
        let c = catalog(place);
        let ops = c.operations("d1", Some("VPC"), None).unwrap();
        assert_eq!(ops[0].operation_list.len(), n);
        // Seen 30 days before this only if the second flush stored them all.
        let users = c.users("p1", NOW + 30 * DAY + USER_TOUCH_MS);
        assert_eq!(users.len(), n);
    }

    both!(a_flush_of_many_rows_keeps_them_all);

    /// A catalog.db of the previous version (tables `operations` and
    /// `users`) opens with what it learned.
    #[test]
    fn a_catalog_of_version_1_opens_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let v1 =
                cts_sqlite::Migrations::new(vec![cts_sqlite::M::up(crate::schema::SQLITE_CATALOG)]);
            let conn = cts_sqlite::open(dir.path(), "catalog.db", &v1).unwrap();
            conn.execute_batch(&format!(
                "INSERT INTO operations VALUES ('d1', 'ECS', 'server', 'createServer');
                 INSERT INTO users VALUES ('p1', 'alice', {NOW});"
            ))
            .unwrap();
        }
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(
            names(&c.operations("d1", Some("ECS"), None).unwrap()),
            [("ECS", "server", vec!["createServer"])]
        );
        assert_eq!(c.users("p1", NOW), ["alice"]);
    }
}
