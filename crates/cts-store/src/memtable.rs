//! The in-memory part of the trace index: metadata of the traces journaled
//! since the last segment was written. Trace bodies stay in the journal.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;

use cts_model::{Field, IndexedFields};

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

/// The index values of one trace, extracted once at ingest: the project
/// and the value of each [`Field`], copied into one allocation.
pub struct IndexValues {
    pub time: i64,
    pub id: [u8; 16],
    text: String,
    /// Where the project (first) and each field's value lie in `text`;
    /// `None` for a field the trace does not have.
    spans: [Option<(u32, u32)>; NF + 1],
}

impl IndexValues {
    pub fn new(project: &str, time: i64, id: [u8; 16], values: [Option<&str>; NF]) -> Self {
        let len = project.len() + values.iter().flatten().map(|v| v.len()).sum::<usize>();
        let mut text = String::with_capacity(len);
        let mut spans = [None; NF + 1];
        for (span, value) in spans
            .iter_mut()
            .zip(std::iter::once(Some(project)).chain(values))
        {
            if let Some(v) = value {
                *span = Some((text.len() as u32, (text.len() + v.len()) as u32));
                text.push_str(v);
            }
        }
        IndexValues {
            time,
            id,
            text,
            spans,
        }
    }

    /// The values of a trace's indexed fields.
    pub fn of(t: &IndexedFields<'_>) -> IndexValues {
        IndexValues::new(
            &t.project_id,
            t.time,
            cts_model::query::trace_id_bytes(&t.trace_id),
            Field::ALL.map(|f| t.value(f)),
        )
    }

    fn span(&self, i: usize) -> Option<&str> {
        self.spans[i].map(|(a, b)| &self.text[a as usize..b as usize])
    }

    pub fn project(&self) -> &str {
        self.span(0).unwrap_or_default()
    }

    /// The value of the field in slot `i` of [`Field::ALL`].
    pub fn value(&self, i: usize) -> Option<&str> {
        self.span(i + 1)
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
    /// Ids into `strings`, found by the string's hash: a value is hashed
    /// once and stored once.
    interner: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    strings: Vec<Box<str>>,
    by_id: foldhash::HashMap<(u32, [u8; 16]), u32>,
    /// Highest journal sequence number held.
    pub max_seq: u64,
}

impl Memtable {
    fn intern(&mut self, s: &str) -> u32 {
        let strings = &self.strings;
        let hasher = &self.hasher;
        let entry = self.interner.entry(
            hasher.hash_one(s),
            |&id| &*strings[id as usize] == s,
            |&id| hasher.hash_one(&*strings[id as usize]),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(e) => *e.get(),
            hashbrown::hash_table::Entry::Vacant(e) => {
                let id = strings.len() as u32;
                e.insert(id);
                self.strings.push(s.into());
                id
            }
        }
    }

    /// The id of a value, if any trace here has it.
    fn lookup(&self, s: &str) -> Option<u32> {
        self.interner
            .find(self.hasher.hash_one(s), |&id| {
                &*self.strings[id as usize] == s
            })
            .copied()
    }

    pub fn string(&self, id: u32) -> Option<&str> {
        self.strings.get(id as usize).map(|s| &**s)
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn insert(&mut self, v: &IndexValues, frame: FrameRef, idx: u8, seq: u64) {
        let project = self.intern(v.project());
        let mut terms = [NONE; NF];
        for (i, slot) in terms.iter_mut().enumerate() {
            if let Some(value) = v.value(i) {
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
        let p = self.lookup(project)?;
        let d = &self.docs[*self.by_id.get(&(p, *id))? as usize];
        Some(Candidate {
            key: (d.time, d.id),
            frame: d.frame,
            idx: d.idx,
        })
    }

    /// Offers every matching trace to `top`.
    pub fn probe(&self, probe: &Probe<'_>, top: &mut TopK) {
        let Some(project) = self.lookup(probe.project) else {
            return;
        };
        let mut wanted = Vec::with_capacity(probe.filters.len());
        for (field, value) in probe.filters {
            match self.lookup(value) {
                Some(id) => wanted.push((Field::ALL.iter().position(|f| f == field).unwrap(), id)),
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
        let mut values = [None; NF];
        values[0] = Some(service);
        IndexValues::new(project, time, [n; 16], values)
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
