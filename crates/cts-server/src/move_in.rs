//! `ctsd migrate-from-embedded --data-dir DIR`: copies a stopped embedded
//! node's data directory into the PostgreSQL database of the config,
//! resumably (see docs/postgres.md, "Moving an embedded node over").
//!
//! Order: the traces of the retention window (batches, each committed with
//! its ledger row), then the stores (each row copied where absent: the
//! notification rules, topics and the outbox among them), then the journal
//! consumers' cursors, translated through the ledger into positions. Every
//! step may run again: what is there stays.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use cts_consumer::{ConsumerStore, Entry};
use cts_server::backend::Backend;
use cts_server::config::StoreBackend;
use cts_server::state::{
    now_ms, open_consumers, open_digest_keys, open_identity, open_notifications, open_trackers,
    subscription_secrets_key,
};
use cts_server::Config;
use cts_store::{EmbeddedStore, PreparedTrace, StoreError};
use cts_store_pg::{ImportProgress, PgStore};

/// What the command may be told besides the directory.
pub struct Options {
    pub dir: PathBuf,
    /// Traces per batch (one transaction each).
    pub batch: usize,
    /// Tests only: abort, as `kill -9` would, after this many batches.
    pub abort_after: Option<u64>,
}

/// The journal consumers whose cursors are journal sequence numbers.
const CONSUMERS: [&str; 3] = [
    cts_transfer::CONSUMER,
    cts_lts::CONSUMER,
    cts_notification::CONSUMER,
];

pub fn run(config: &Config, options: &Options) -> Result<()> {
    if config.postgres_settings().is_none() {
        bail!(
            "store.backend is not \"postgres\" (with store.postgres_url): the config names the \
             PostgreSQL database to move {} into",
            options.dir.display()
        );
    }
    let dir = options.dir.canonicalize().with_context(|| {
        format!(
            "the embedded data directory {} does not open",
            options.dir.display()
        )
    })?;
    if !dir.join("journal").is_dir() {
        bail!(
            "{} is not an embedded ctsd data directory (it has no journal/)",
            dir.display()
        );
    }
    let mut source = config.clone();
    source.data_dir = dir.clone();
    source.store.backend = StoreBackend::Embedded;
    // The store's lock first: nothing is read while a ctsd serves it.
    let embedded = EmbeddedStore::open(source.store_config())
        .map_err(|e| match e {
            StoreError::Locked { .. } => anyhow::anyhow!(
                "{} is served by a running ctsd (its store.lock is held): stop it first, \
                 then move it",
                dir.display()
            ),
            e => anyhow::Error::new(e),
        })
        .with_context(|| format!("opening the embedded store in {}", dir.display()))?;
    let target = Backend::open(config).context("connecting to PostgreSQL")?;
    let Backend::Postgres { pool, auto_migrate } = &target else {
        unreachable!("the config names PostgreSQL")
    };
    let traces = PgStore::open(pool.clone(), *auto_migrate, config.retention_ms())
        .context("opening the trace store in PostgreSQL")?;
    let name = dir.display().to_string();
    let cutoff = now_ms() - config.retention_ms();
    copy_traces(&embedded, &traces, &name, cutoff, options)?;
    copy_stores(&source, config, &target)?;
    let from = open_consumers(&source, &Backend::Embedded)?;
    let to = open_consumers(config, &target)?;
    move_cursors(&from, &to, &traces)?;
    Ok(())
}

/// Copies the journal after the ledger's sequence number, batch by batch.
fn copy_traces(
    from: &EmbeddedStore,
    to: &PgStore,
    source: &str,
    cutoff_ms: i64,
    options: &Options,
) -> Result<()> {
    let before = to.import_begin(source)?;
    let mut now = before.clone();
    let mut batches = 0u64;
    loop {
        let read = cts_consumer::read_batch(from, now.last_seq, options.batch)
            .context("reading the embedded journal")?;
        if read.entries.is_empty() && read.cursor == now.last_seq {
            break;
        }
        let mut seqs = Vec::with_capacity(read.entries.len());
        let mut traces = Vec::with_capacity(read.entries.len());
        let mut skipped = read.gone;
        for e in read.entries {
            let trace = PreparedTrace::stored(e.doc)
                .with_context(|| format!("journal trace {} does not read as a trace", e.seq))?;
            if trace.time() < cutoff_ms {
                skipped += 1;
                continue;
            }
            seqs.push(e.seq);
            traces.push(trace);
        }
        now = to.import_batch(source, (now.last_seq, read.cursor), &seqs, &traces, skipped)?;
        batches += 1;
        if options.abort_after == Some(batches) {
            std::process::abort();
        }
    }
    let run = |f: fn(&ImportProgress) -> u64| f(&now) - f(&before);
    println!(
        "traces: {} copied ({} already there, {} older than store.retention left out), \
         journal read up to {}",
        run(|p| p.copied),
        run(|p| p.present),
        run(|p| p.skipped),
        now.last_seq
    );
    if before.last_seq > 0 {
        println!(
            "traces: {} copied by an earlier run, up to journal sequence number {}",
            before.copied, before.last_seq
        );
    }
    Ok(())
}

/// Copies identities, trackers, the catalog, the digest signing keys, the
/// notification rules, topics, subscriptions and the outbox, each row where
/// PostgreSQL lacks it; secrets re-sealed.
fn copy_stores(source: &Config, config: &Config, target: &Backend) -> Result<()> {
    let identity = open_identity(source, &Backend::Embedded)?
        .copy_into(&open_identity(config, target)?)
        .context("copying the identities")?;
    say(&identity);
    let (trackers, catalog) = open_trackers(source, &Backend::Embedded)?;
    let (to_trackers, to_catalog) = open_trackers(config, target)?;
    say(&trackers
        .copy_into(&to_trackers)
        .context("copying the trackers")?);
    say(&catalog
        .copy_into(&to_catalog)
        .context("copying the catalog")?);
    let keys = source_digest_keys(source)?
        .copy_into(&open_digest_keys(config, target)?)
        .context("copying the digest signing keys")?;
    say(&[("digest signing keys", keys)]);
    let (rules, smn) = open_notifications(source, &Backend::Embedded)?;
    let (to_rules, to_smn) = open_notifications(config, target)?;
    let rules = rules
        .copy_into(&to_rules)
        .context("copying the notification rules")?;
    say(&[("notifications", rules)]);
    let key = subscription_secrets_key(config, target)?;
    say(&cts_smn::copy_into(&smn, &to_smn, key.as_ref())
        .context("copying the topics, subscriptions and the outbox")?);
    Ok(())
}

/// The embedded node's digest signing keys, opened as that node opens
/// them: unsealed unless it had a secret key (then the config's must be
/// it). Opening never records a secret key in its file.
fn source_digest_keys(source: &Config) -> Result<cts_transfer::Keys> {
    let dir = source.data_dir.join("transfer");
    match cts_transfer::Keys::open(&dir, None) {
        Ok(keys) => Ok(keys),
        Err(unsealed) => {
            let secret = source.store_secret_key()?.ok_or(unsealed)?;
            Ok(cts_transfer::Keys::open(
                &dir,
                Some(cts_db::SecretKey::derive(
                    &secret,
                    cts_transfer::SECRET_PURPOSE,
                )),
            )?)
        }
    }
}

/// One line per table: `users: 3 copied (1 already there)`.
fn say(tables: &[(&str, cts_db::Copied)]) {
    for (table, c) in tables {
        println!(
            "{}: {} copied ({} already there)",
            table.replace('_', " "),
            c.copied,
            c.present
        );
    }
}

/// Moves every consumer's cursor (and the journal marks), each sequence
/// number translated into the position its trace became; a cursor already
/// in PostgreSQL stays.
fn move_cursors(from: &ConsumerStore, to: &ConsumerStore, traces: &PgStore) -> Result<()> {
    let (mut moved, mut there) = (0, 0);
    for consumer in CONSUMERS {
        for (key, entry) in from.all::<serde_json::Value>(consumer)? {
            let cursor = traces.import_position(entry.cursor)?;
            let entry = Entry {
                cursor,
                body: entry.body,
            };
            if to.transaction(|tx| tx.put_new(consumer, &key, &entry))? {
                moved += 1;
            } else {
                there += 1;
            }
        }
    }
    let marks = from
        .marks()?
        .into_iter()
        .map(|(start, seq)| Ok((start, traces.import_position(seq)?)))
        .collect::<Result<Vec<_>, cts_store_pg::PgError>>()?;
    to.transaction(|tx| {
        marks
            .iter()
            .try_for_each(|(start, pos)| tx.mark_journal(*start, *pos))
    })?;
    println!("cursors: {moved} moved, {there} already there");
    Ok(())
}
