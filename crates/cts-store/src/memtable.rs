//! The in-memory part of the trace index: metadata of the traces journaled
//! since the last segment was written. Trace bodies stay in the journal.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use cts_model::{Field, Trace};

use crate::journal::FrameRef;

pub const NF: usize = Field::ALL.len();

/// Sort key of the query order: (time, trace_id), newest first.
pub type Key = (i64, [u8; 16]);

/// A trace found by a query, before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub key: Key,
    pub frame: FrameRef,
    pub idx: u8,
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// Keeps the `k` newest candidates offered to it.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Candidate>>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }
    pub fn offer(&mut self, c: Candidate) {
        if self.heap.len() < self.k {
            self.heap.push(Reverse(c));
        } else if self.heap.peek().is_some_and(|min| c > min.0) {
            self.heap.pop();
            self.heap.push(Reverse(c));
        }
    }
    /// The oldest key kept, once `k` are kept: sources whose newest trace is
    /// older than this cannot contribute.
    pub fn floor(&self) -> Option<Key> {
        (self.heap.len() == self.k)
            .then(|| self.heap.peek().map(|c| c.0.key))
            .flatten()
    }
    pub fn into_sorted(self) -> Vec<Candidate> {
        let mut v: Vec<Candidate> = self.heap.into_iter().map(|r| r.0).collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }
}

/// What a query needs from any index source.
pub struct Probe<'a> {
    pub project: &'a str,
    /// Exclusive lower time bound.
    pub from: i64,
    /// Exclusive upper key bound (from `to` or the `next` cursor).
    pub upper: Key,
    pub filters: &'a [(Field, String)],
}

/// The index values of one trace, extracted once at ingest.
pub struct IndexValues {
    pub project: String,
    pub time: i64,
    pub id: [u8; 16],
    pub values: [Option<String>; NF],
}

impl IndexValues {
    /// Moves the values out of a trace that is no longer needed (ingest has
    /// already serialized it), saving a copy of each string.
    pub fn take(mut t: Trace) -> IndexValues {
        let kind = t.kind().as_query_value().to_string();
        let take = |s: &mut String| Some(std::mem::take(s));
        let values = Field::ALL.map(|f| match f {
            Field::ServiceType => take(&mut t.service_type),
            Field::User => t.user.name.take(),
            Field::ResourceId => t.resource_id.take(),
            Field::ResourceName => t.resource_name.take(),
            Field::ResourceType => take(&mut t.resource_type),
            Field::TraceName => take(&mut t.trace_name),
            Field::TraceRating => take(&mut t.trace_rating),
            Field::AccessKeyId => t.user.access_key_id.take(),
            Field::EnterpriseProjectId => take(&mut t.enterprise_project_id),
            Field::TrackerName => take(&mut t.tracker_name),
            Field::Kind => Some(kind.clone()),
        });
        IndexValues {
            time: t.time,
            id: cts_model::query::trace_id_bytes(&t.trace_id),
            project: t.project_id,
            values,
        }
    }
}

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy)]
pub struct MemDoc {
    pub time: i64,
    pub id: [u8; 16],
    pub project: u32,
    pub terms: [u32; NF],
    pub frame: FrameRef,
    pub idx: u8,
}

/// The traces journaled since the last flush, queryable at once.
// foldhash, not SipHash: interning every indexed value of every trace is on
// the ingest path.
#[derive(Default)]
pub struct Memtable {
    pub docs: Vec<MemDoc>,
    interner: foldhash::HashMap<Box<str>, u32>,
    strings: Vec<Box<str>>,
    by_id: foldhash::HashMap<(u32, [u8; 16]), u32>,
    /// Highest journal sequence number held.
    pub max_seq: u64,
}

impl Memtable {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(id) = self.interner.get(s) {
            return *id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(s.into());
        self.interner.insert(s.into(), id);
        id
    }

    pub fn string(&self, id: u32) -> Option<&str> {
        self.strings.get(id as usize).map(|s| &**s)
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn insert(&mut self, v: &IndexValues, frame: FrameRef, idx: u8, seq: u64) {
        let project = self.intern(&v.project);
        let mut terms = [NONE; NF];
        for (slot, value) in terms.iter_mut().zip(&v.values) {
            if let Some(value) = value {
                *slot = self.intern(value);
            }
        }
        let n = self.docs.len() as u32;
        self.by_id.insert((project, v.id), n);
        self.docs.push(MemDoc {
            time: v.time,
            id: v.id,
            project,
            terms,
            frame,
            idx,
        });
        self.max_seq = self.max_seq.max(seq);
    }

    /// The key of a trace of the project, by id.
    pub fn find(&self, project: &str, id: &[u8; 16]) -> Option<Candidate> {
        let p = *self.interner.get(project)?;
        let d = &self.docs[*self.by_id.get(&(p, *id))? as usize];
        Some(Candidate {
            key: (d.time, d.id),
            frame: d.frame,
            idx: d.idx,
        })
    }

    /// Offers every matching trace to `top`.
    pub fn probe(&self, probe: &Probe<'_>, top: &mut TopK) {
        let Some(&project) = self.interner.get(probe.project) else {
            return;
        };
        let mut wanted = Vec::with_capacity(probe.filters.len());
        for (field, value) in probe.filters {
            match self.interner.get(value.as_str()) {
                Some(id) => wanted.push((Field::ALL.iter().position(|f| f == field).unwrap(), *id)),
                None => return,
            }
        }
        for d in &self.docs {
            if d.project == project
                && d.time > probe.from
                && (d.time, d.id) < probe.upper
                && wanted.iter().all(|(slot, id)| d.terms[*slot] == *id)
            {
                top.offer(Candidate {
                    key: (d.time, d.id),
                    frame: d.frame,
                    idx: d.idx,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(project: &str, time: i64, n: u8, service: &str) -> IndexValues {
        let mut values: [Option<String>; NF] = Default::default();
        values[0] = Some(service.to_string());
        IndexValues {
            project: project.into(),
            time,
            id: [n; 16],
            values,
        }
    }

    #[test]
    fn probe_filters_and_orders() {
        let mut m = Memtable::default();
        let f = FrameRef {
            file: 1,
            offset: 0,
            len: 1,
        };
        m.insert(&values("a", 10, 1, "ECS"), f, 0, 1);
        m.insert(&values("a", 10, 2, "EVS"), f, 1, 2);
        m.insert(&values("a", 12, 3, "ECS"), f, 2, 3);
        m.insert(&values("b", 11, 4, "ECS"), f, 3, 4);
        let filters = vec![(Field::ServiceType, "ECS".to_string())];
        let mut top = TopK::new(10);
        m.probe(
            &Probe {
                project: "a",
                from: 0,
                upper: (i64::MAX, [0xff; 16]),
                filters: &filters,
            },
            &mut top,
        );
        let keys: Vec<i64> = top.into_sorted().iter().map(|c| c.key.0).collect();
        assert_eq!(keys, vec![12, 10]);
        assert!(m.find("b", &[4; 16]).is_some());
        assert!(m.find("a", &[4; 16]).is_none());
    }
}
