//! The trace tables' versioned migrations, applied by cts-db's one runner
//! and recorded in `cts_schema_migrations`.

use cts_db::{PgMigration, PgSchema};

/// Never edit a released entry: a change is a new one.
pub const SCHEMA: PgSchema = PgSchema {
    ledger: "cts_schema_migrations",
    migrations: &[
        PgMigration {
            version: 1,
            name: "traces partitioned by day, positions counter",
            sql: include_str!("migrations/0001_traces.sql"),
        },
        PgMigration {
            version: 2,
            name: "positions in a narrow table of their own, numbered after the insert",
            sql: include_str!("migrations/0002_trace_order.sql"),
        },
        PgMigration {
            version: 3,
            name: "the fence retention puts on a day it removes",
            sql: include_str!("migrations/0003_day_retired.sql"),
        },
        PgMigration {
            version: 4,
            name: "one order row per run of a batch's traces (a stretch in one day)",
            sql: include_str!("migrations/0004_order_runs.sql"),
        },
    ],
};
