//! The matcher as a journal consumer (on the `cts-consumer` seam): every
//! acknowledged trace, in journal order, evaluated against the enabled
//! rules of its project; what fires goes into the `cts-smn` outbox. It
//! runs beside ingest, reading the journal from its own durable cursor, so
//! it never slows a report down.
//!
//! * **At least once, exactly one message.** A batch's messages are
//!   enqueued (durable) before the cursor after them is committed; a crash
//!   in between enqueues them again under the same message ids
//!   (`{notification_id}/{trace_id}`), which the outbox ignores.
//! * **No start gap.** A rule applies to traces recorded at or after its
//!   `since` (picked before the change's own trace was written). The
//!   state remembers the newest `since` already applied; a rule with a
//!   newer one (enabled or changed since, even before a restart) sends the
//!   cursor back to the first trace recorded at or after it
//!   ([`cts_consumer::start_cursor`] from the journal mark before it).
//!   Traces seen again fire only rules whose `since` they reach, and the
//!   outbox drops the messages it has.
//! * **Holds.** The journal is held from the cursor (at open, before
//!   retention runs, and after each commit). Traces gone from the journal
//!   before they were read are counted ([`Notifier::take_skipped`]) and
//!   logged.
//! * **One node.** With several nodes the matcher runs where its lease is
//!   held ([`ConsumerStore::claim`]); a node that lost it fails its next
//!   commit (fenced) and evaluates nothing more until it holds it again.
//!   Messages enqueued before such a failed commit are enqueued again by
//!   the new holder under the same ids: at least once.

use std::sync::Arc;

use cts_consumer::{read_batch, start_cursor, ConsumerStore, Entry, Skips};
use cts_smn::{Outbox, OutboxMessage};
use cts_store::TraceStore;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::facts::TraceFacts;
use crate::store::NotificationStore;

/// The consumer's name in the consumer state and the journal holds.
pub const CONSUMER: &str = "notifications";
const KEY: &str = "matcher";
/// Traces read per journal read.
const BATCH: usize = 1000;

/// Why a pass stopped; it is retried on the next.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error("journal: {0}")]
    Journal(#[from] cts_store::StoreError),
    #[error("{0}")]
    State(#[from] cts_consumer::ConsumerError),
    #[error("outbox: {0}")]
    Outbox(#[from] cts_smn::SmnError),
}

/// What the consumer keeps beside its cursor.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct Applied {
    /// The newest rule `since` (ms) the cursor has been placed for.
    since: i64,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Traces evaluated.
    pub evaluated: u64,
    /// Messages produced (before the outbox dropped ones it had).
    pub fired: u64,
    /// Whether the cursor reached what was acknowledged: no need to poll
    /// again at once.
    pub caught_up: bool,
}

pub struct Notifier {
    journal: Arc<dyn TraceStore>,
    rules: Arc<NotificationStore>,
    consumers: Arc<ConsumerStore>,
    outbox: Arc<Outbox>,
    skips: Skips,
}

impl Notifier {
    /// Sets the consumer up: a first start begins at what is acknowledged
    /// now (earlier rules were placed for by their `since`), and the
    /// journal is held from the cursor. Blocking.
    pub fn open(
        journal: Arc<dyn TraceStore>,
        rules: Arc<NotificationStore>,
        consumers: Arc<ConsumerStore>,
        outbox: Arc<Outbox>,
    ) -> Notifier {
        let notifier = Notifier {
            journal,
            rules,
            consumers,
            outbox,
            skips: Skips::new(CONSUMER),
        };
        // A journal that cannot be read now must not keep the server from
        // starting (it answers its errors); the first pass begins instead.
        // Until then the whole journal is held.
        if let Err(e) = notifier.begin() {
            tracing::warn!(error = %e, "notifications: the matcher begins at its first pass");
            notifier.journal.hold_journal(CONSUMER, 0);
        }
        notifier
    }

    /// Places a matcher that has never run and holds the journal from its
    /// cursor.
    fn begin(&self) -> Result<(), NotifierError> {
        // Another node holding the lease has placed it (or will).
        let mine = self.consumers.claim(CONSUMER, KEY)?;
        if mine && self.consumers.get::<Applied>(CONSUMER, KEY)?.is_none() {
            self.consumers.put(CONSUMER, KEY, &self.first_entry()?)?;
        }
        self.consumers.hold(self.journal.as_ref(), CONSUMER)?;
        Ok(())
    }

    /// Nothing evaluated before the first start is owed: the rules that
    /// exist are placed for as they are.
    fn first_entry(&self) -> Result<Entry<Applied>, NotifierError> {
        let cursor = self.journal.read_journal(0, 0)?.durable_seq;
        let (newest, _) = self.rules.matcher().sinces(i64::MIN);
        Ok(Entry {
            cursor,
            body: Applied {
                since: newest.unwrap_or(i64::MIN),
            },
        })
    }

    /// Traces passed over since the last call (for a counter; there
    /// should be none).
    pub fn take_skipped(&self) -> u64 {
        self.skips.take()
    }

    /// Where the cursor must be for rules enabled or changed since the
    /// state was committed.
    fn place(
        &self,
        entry: &mut Entry<Applied>,
        newest: Option<i64>,
        pending: Option<i64>,
    ) -> Result<(), NotifierError> {
        if let Some(at) = pending {
            let mark = self.consumers.journal_mark(at.div_euclid(1000))?;
            let start = start_cursor(self.journal.as_ref(), mark.unwrap_or(0), at, BATCH)?;
            self.skips.record(
                KEY,
                start.gone,
                "journal entries removed before a new rule saw them",
            );
            entry.cursor = entry.cursor.min(start.cursor);
        }
        if let Some(n) = newest {
            entry.body.since = entry.body.since.max(n);
        }
        Ok(())
    }

    /// Evaluates at most `max_batches` batches of the journal after the
    /// cursor. Blocking (journal reads, SQLite): run it off the async
    /// workers.
    pub fn pass(&self, max_batches: usize) -> Result<Pass, NotifierError> {
        if !self.consumers.claim(CONSUMER, KEY)? {
            // Another node matches: nothing to do here but wait.
            return Ok(Pass {
                caught_up: true,
                ..Pass::default()
            });
        }
        let matcher = self.rules.matcher();
        let mut entry = match self.consumers.get::<Applied>(CONSUMER, KEY)? {
            Some(entry) => entry,
            None => self.first_entry()?,
        };
        let (newest, pending) = matcher.sinces(entry.body.since);
        self.place(&mut entry, newest, pending)?;
        let mut pass = Pass::default();
        if matcher.is_empty() {
            // Nothing can fire: skip to what is acknowledged (a rule
            // enabled later sends the cursor back by its `since`).
            entry.cursor = entry
                .cursor
                .max(self.journal.read_journal(entry.cursor, 0)?.durable_seq);
            pass.caught_up = true;
            self.commit(&entry)?;
            return Ok(pass);
        }
        let mut fired = Vec::new();
        for _ in 0..max_batches {
            let batch = read_batch(self.journal.as_ref(), entry.cursor, BATCH)?;
            self.skips.record(
                KEY,
                batch.gone,
                "journal entries removed before they were evaluated",
            );
            if batch.entries.is_empty() {
                entry.cursor = batch.cursor;
                pass.caught_up = true;
                break;
            }
            let mut messages = Vec::new();
            for e in &batch.entries {
                pass.evaluated += 1;
                let (Ok(facts), Some(trace)) = (TraceFacts::read(&e.doc), raw(&e.doc)) else {
                    self.skips
                        .record(KEY, 1, "a stored trace that does not read");
                    continue;
                };
                fired.clear();
                matcher.fire(&facts, &mut fired);
                for n in &fired {
                    messages.push(OutboxMessage {
                        message_id: format!("{}/{}", n.notification_id, facts.trace_id),
                        project_id: n.project_id.clone(),
                        topic_urn: n.topic_id.clone().unwrap_or_default(),
                        notification_id: n.notification_id.clone(),
                        notification_name: n.notification_name.clone(),
                        trace: trace.clone(),
                    });
                }
            }
            pass.fired += messages.len() as u64;
            if !messages.is_empty() {
                // Durable before the cursor passes them.
                self.outbox.enqueue(messages)?;
            }
            entry.cursor = batch.cursor;
            self.commit(&entry)?;
        }
        self.commit(&entry)?;
        Ok(pass)
    }

    fn commit(&self, entry: &Entry<Applied>) -> Result<(), NotifierError> {
        self.consumers.put(CONSUMER, KEY, entry)?;
        self.consumers.hold(self.journal.as_ref(), CONSUMER)?;
        Ok(())
    }
}

/// A stored trace as a message's raw JSON.
fn raw(doc: &[u8]) -> Option<Box<RawValue>> {
    RawValue::from_string(String::from_utf8(doc.to_vec()).ok()?).ok()
}

#[cfg(test)]
mod tests;
