//! The plain-`COPY` baseline of `--backend postgres`: the rows ctsd would
//! store for the same reports, written by this process straight into
//! `cts_traces` (the same schema, every index), one binary `COPY` per batch
//! and one transaction per batch committed with `synchronous_commit = on`,
//! from as many connections as the HTTP load has requests in flight.
//!
//! The rows go through ctsd's own `COPY` ([`cts_store_pg::copy_traces`]).
//! What the baseline leaves out is what ctsd adds on top of it: HTTP,
//! signatures, its statistics upkeep (`ANALYZE` of the partitions it
//! fills), the journal positions (`cts_trace_order`, numbered under the
//! counter's row lock), and a retried batch's second way in (`ON CONFLICT
//! DO NOTHING`); the row keys (`seq`) here come from an atomic counter in
//! this process.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cts_store::PreparedTrace;

use crate::load::{project_for_batch, Plan};
use crate::{now_ms, DAY_MS};

pub struct Copied {
    pub traces: u64,
    pub elapsed: Duration,
}

/// Creates the day partitions of the plan's timeline (before the clock
/// starts: ctsd makes each once, on the first batch that touches it).
pub fn create_partitions(client: &mut postgres::Client, plan: &Plan) -> Result<()> {
    let days: BTreeSet<i64> =
        (plan.timeline.start.div_euclid(DAY_MS)..=plan.timeline.end.div_euclid(DAY_MS)).collect();
    for day in days {
        client.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS cts_traces_d{day} PARTITION OF cts_traces \
             FOR VALUES FROM ({day}) TO ({})",
            day + 1
        ))?;
    }
    Ok(())
}

/// COPYs every trace of the plan over `connections` connections to `url`.
pub fn run(url: &str, plan: Arc<Plan>, connections: usize) -> Result<Copied> {
    let next_batch = Arc::new(AtomicU64::new(0));
    let next_seq = Arc::new(AtomicU64::new(1));
    let batches = plan.timeline.n.div_ceil(plan.batch);
    let start = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let mut client = postgres::Client::connect(url, postgres::NoTls)
                .with_context(|| format!("connecting to {url}"))?;
            client.batch_execute("SET synchronous_commit = on")?;
            let (plan, next_batch, next_seq) = (plan.clone(), next_batch.clone(), next_seq.clone());
            Ok(std::thread::spawn(move || -> Result<u64> {
                let mut copied = 0;
                loop {
                    let b = next_batch.fetch_add(1, Ordering::Relaxed);
                    if b >= batches {
                        return Ok(copied);
                    }
                    let rows = prepare(&plan, b)?;
                    let first = next_seq.fetch_add(rows.len() as u64, Ordering::Relaxed);
                    copy(&mut client, &rows, first as i64)
                        .with_context(|| format!("COPY of batch {b}"))?;
                    copied += rows.len() as u64;
                }
            }))
        })
        .collect::<Result<_>>()?;
    let mut traces = 0;
    for w in workers {
        traces += w
            .join()
            .map_err(|_| anyhow::anyhow!("a COPY worker panicked"))??;
    }
    Ok(Copied {
        traces,
        elapsed: start.elapsed(),
    })
}

/// Batch `b` of the plan as ctsd prepares it: the same request body, checked
/// and completed as a report is, in the tenant's project on the server.
fn prepare(plan: &Plan, b: u64) -> Result<Vec<PreparedTrace>> {
    let body = plan.body(b);
    let now = now_ms();
    let ctx = cts_model::ReportContext {
        project_id: plan.auth.project(project_for_batch(b)),
        now_ms: now,
        oldest_time_ms: now - 8 * DAY_MS,
        newest_time_ms: now + 60_000,
        max_traces: plan.batch as usize,
    };
    let traces = cts_model::parse_report(&body, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(traces.iter().map(PreparedTrace::of).collect())
}

/// One transaction: the rows with keys from `first` (ctsd's own `COPY`),
/// committed.
fn copy(client: &mut postgres::Client, rows: &[PreparedTrace], first: i64) -> Result<()> {
    let mut tx = client.transaction()?;
    cts_store_pg::copy_traces(
        &mut tx,
        rows.iter().enumerate().map(|(i, t)| (first + i as i64, t)),
    )?;
    tx.commit()?;
    Ok(())
}
