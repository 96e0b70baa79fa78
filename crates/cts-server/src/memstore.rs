//! An in-memory `TraceStore` with the engine's semantics, so the HTTP layer
//! can be tested without the embedded engine.

use std::sync::Mutex;

use cts_model::query::trace_id_bytes;
use cts_model::{Trace, TraceQuery};
use cts_store::{AppendOutcome, QueryPage, RetentionReport, StoreError, StoreStats, TraceStore};

#[derive(Default)]
pub struct MemStore {
    traces: Mutex<Vec<Trace>>,
}

fn key(t: &Trace) -> (i64, [u8; 16]) {
    (t.time, trace_id_bytes(&t.trace_id))
}

impl TraceStore for MemStore {
    fn append(&self, traces: Vec<Trace>) -> Result<AppendOutcome, StoreError> {
        let mut all = self.traces.lock().unwrap();
        let mut out = AppendOutcome::default();
        for t in traces {
            let seen = all
                .iter()
                .any(|o| o.project_id == t.project_id && o.trace_id == t.trace_id);
            if seen {
                out.duplicates += 1;
            } else {
                out.stored += 1;
                all.push(t);
            }
        }
        Ok(out)
    }

    fn query(&self, q: &TraceQuery) -> Result<QueryPage, StoreError> {
        let all = self.traces.lock().unwrap();
        let mut hits: Vec<&Trace> = all.iter().filter(|t| q.matches(t)).collect();
        hits.sort_by_key(|t| std::cmp::Reverse(key(t)));
        if let Some(next) = &q.next {
            if let Some(cursor) = all.iter().find(|t| &t.trace_id == next).map(key) {
                hits.retain(|t| key(t) < cursor);
            }
        }
        let more = hits.len() > q.limit;
        hits.truncate(q.limit);
        Ok(QueryPage {
            marker: more
                .then(|| hits.last().map(|t| t.trace_id.clone()))
                .flatten(),
            traces: hits
                .into_iter()
                .map(|t| serde_json::to_vec(t).unwrap())
                .collect(),
        })
    }

    fn enforce_retention(&self, cutoff_ms: i64) -> Result<RetentionReport, StoreError> {
        self.traces.lock().unwrap().retain(|t| t.time >= cutoff_ms);
        Ok(RetentionReport::default())
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            indexed_traces: self.traces.lock().unwrap().len() as u64,
            ..StoreStats::default()
        }
    }
}

/// A store whose every operation fails, for the error paths.
pub struct BrokenStore;

impl TraceStore for BrokenStore {
    fn append(&self, _: Vec<Trace>) -> Result<AppendOutcome, StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }
    fn query(&self, _: &TraceQuery) -> Result<QueryPage, StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }
    fn enforce_retention(&self, _: i64) -> Result<RetentionReport, StoreError> {
        Err(StoreError::Unavailable("disk on fire".into()))
    }
    fn stats(&self) -> StoreStats {
        panic!("disk on fire")
    }
}
