//! Citus (issue 17.7): when the database has the `citus` extension, the
//! per-project tables are distributed by `project_id`, the small shared
//! tables become reference tables (a copy on every worker), and the rest
//! stays on the coordinator. Without the extension nothing is done.
//!
//! Citus accepts a distributed table only if each of its unique indexes
//! and primary keys contains the distribution column, and a foreign key
//! only between tables it can check on one node: the lists below keep to
//! that (it::postgres checks the schema against them on plain
//! PostgreSQL). Every table ctsd creates is in exactly one list.

use cts_db::{DbError, Pool};

/// Distributed by `project_id`: the traces (and their day partitions,
/// which Citus distributes as they are created) and the catalog's users.
pub const DISTRIBUTED: &[&str] = &["cts_traces", "catalog_users"];

/// Small tables every node reads and joins: the identities, the trackers
/// with their tags and keys, the catalog's operations, the notification
/// rules.
pub const REFERENCE: &[&str] = &[
    "meta",
    "domains",
    "projects",
    "users",
    "groups",
    "memberships",
    "roles",
    "user_assignments",
    "group_assignments",
    "domain_assignments",
    "access_keys",
    "tokens",
    "login_lockouts",
    "trackers",
    "tags",
    "encryption_keys",
    "catalog_operations",
    "notifications",
];

/// On the coordinator: the one-row counters every write of their kind
/// locks (the positions counter serialises trace commits) and the trace
/// positions numbered under it (`cts_trace_order`), the state of
/// the consumers and their leases, the digest signing keys, the SMN
/// topics and outbox (keyed by URN and sequence, not by project), and
/// the migration ledgers (see [`coordinator_tables`]).
pub const COORDINATOR: &[&str] = &[
    "cts_trace_positions",
    "cts_trace_order",
    "tracker_version",
    "tracker_projects",
    "rules_version",
    "cursors",
    "journal_marks",
    "leases",
    "signing_keys",
    "signing_key_secret",
    "topics",
    "subscriptions",
    "messages",
    "deliveries",
];

/// [`COORDINATOR`] and the ledger of every schema.
pub fn coordinator_tables() -> Vec<&'static str> {
    let ledgers = crate::backend::pg_schemas().into_iter().map(|s| s.ledger);
    COORDINATOR.iter().copied().chain(ledgers).collect()
}

/// What [`distribute`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Distribution {
    /// The `citus` extension is not installed: every table is a plain one.
    NoCitus,
    /// These tables were handed to Citus now; the others listed were
    /// already (a later start finds nothing to do).
    Done(Vec<&'static str>),
}

/// Distributes the tables of [`DISTRIBUTED`] and [`REFERENCE`] that Citus
/// does not know yet, when the extension is installed; run after every
/// schema's migrations. Nodes starting together take turns on the traces'
/// ledger lock, so one distributes and the others find it done.
pub fn distribute(pool: &Pool) -> Result<Distribution, DbError> {
    let mut client = pool.get()?;
    let citus = client.query_opt("SELECT 1 FROM pg_extension WHERE extname = 'citus'", &[])?;
    if citus.is_none() {
        return Ok(Distribution::NoCitus);
    }
    let mut tx = client.transaction()?;
    let ledger = cts_store_pg::schema::SCHEMA.ledger;
    tx.batch_execute(&format!("LOCK TABLE {ledger} IN EXCLUSIVE MODE"))?;
    // Reference tables first: a foreign key may point at one, never from
    // one to a distributed table.
    let calls = REFERENCE
        .iter()
        .map(|t| (*t, "create_reference_table($1::text::regclass)"))
        .chain(DISTRIBUTED.iter().map(|t| {
            (
                *t,
                "create_distributed_table($1::text::regclass, 'project_id')",
            )
        }));
    let mut done = Vec::new();
    for (table, call) in calls {
        let known = tx.query_opt(
            "SELECT 1 FROM pg_dist_partition WHERE logicalrelid = $1::text::regclass",
            &[&table],
        )?;
        if known.is_none() {
            tx.query(&format!("SELECT {call}"), &[&table])?;
            done.push(table);
        }
    }
    tx.commit()?;
    Ok(Distribution::Done(done))
}
