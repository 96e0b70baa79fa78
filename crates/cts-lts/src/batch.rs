//! One request's worth of a tracker's traces: read from the journal after
//! a cursor, kept when the tracker records them, and encoded for the sink.

use std::sync::Arc;

use cts_store::{JournalEntry, TraceStore};
use cts_tracker::Tracker;

use crate::fields::Record;
use crate::pipeline::Source;
use crate::protocol::{Protocol, Stream};
use crate::LtsError;

/// What a delivery is about, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Journal entries passed over (gone) before this batch.
    pub gone: u64,
    /// Stored traces that did not read (left out).
    pub unreadable: u64,
    /// The cursor once this batch is delivered.
    pub upto: u64,
    /// Traces in the request.
    pub count: u64,
    /// `record_time` of its oldest trace.
    pub oldest_ms: Option<i64>,
    /// The read was full: more is waiting right away.
    pub more: bool,
}

/// A batch and its request body (None: nothing of the tracker's, only the
/// cursor moves).
pub(crate) struct Prepared {
    pub batch: Batch,
    pub body: Option<Vec<u8>>,
}

/// Reads and encodes one tracker's batches.
pub(crate) struct Reader {
    pub journal: Arc<dyn TraceStore>,
    pub tracker: Tracker,
    pub stream: Stream,
    pub protocol: Arc<dyn Protocol>,
    /// Journal entries read per batch at most.
    pub batch_max: usize,
}

/// Journal entries read after a cursor, not yet parsed.
pub(crate) struct Read {
    gone: u64,
    upto: u64,
    more: bool,
    entries: Vec<JournalEntry>,
}

impl Source for Reader {
    type Read = Read;

    /// The `batch_max` journal entries at most after `cursor`, all of them
    /// decided (the next read begins right after the last, where the
    /// journal's read position is cached).
    fn read(&self, cursor: u64) -> Result<Read, LtsError> {
        let read = cts_consumer::read_batch(self.journal.as_ref(), cursor, self.batch_max)?;
        Ok(Read {
            gone: read.gone,
            upto: read.cursor,
            more: read.entries.len() >= self.batch_max,
            entries: read.entries,
        })
    }

    fn ends(read: &Read) -> (u64, bool) {
        (read.upto, read.more)
    }

    /// The tracker's traces of `read`, each parsed once, encoded.
    fn prepare(&self, read: Read) -> Prepared {
        let (mut records, mut unreadable) = (Vec::with_capacity(read.entries.len()), 0);
        for entry in &read.entries {
            match Record::parse(&entry.doc) {
                Some(r) if self.records(&r) => records.push(r),
                Some(_) => {}
                None => unreadable += 1,
            }
        }
        let body = (!records.is_empty()).then(|| self.protocol.encode(&self.stream, &records));
        Prepared {
            batch: Batch {
                gone: read.gone,
                unreadable,
                upto: read.upto,
                count: records.len() as u64,
                oldest_ms: records.first().map(|r| r.fields.record_time),
                more: read.more,
            },
            body,
        }
    }
}

impl Reader {
    fn records(&self, r: &Record<'_>) -> bool {
        let f = &r.fields;
        self.tracker.records(
            &f.project_id,
            &f.trace_type,
            &f.tracker_name,
            &f.service_type,
        )
    }
}
