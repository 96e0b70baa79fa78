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
        } else if let Some(mut min) = self.heap.peek_mut() {
            if c > min.0 {
                *min = Reverse(c);
            }
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

/// Docs per entry of [`Memtable::newest_up_to`].
const BLOCK: usize = 256;

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
    /// For each interned string, the docs (ascending) that have it as their
    /// project or as a field value: a probe walks the shortest list of its
    /// project and filters instead of every doc. Scanning all of a full
    /// memtable took milliseconds per query while ingest ran.
    postings: Vec<Vec<u32>>,
    /// Highest journal sequence number held.
    pub max_seq: u64,
    /// `newest_up_to[b]`: the newest time among docs `0..(b + 1) * BLOCK`.
    /// A probe walking newest first stops where no doc left can enter its
    /// page: a frequent value's page costs its 200 docs, not all of them.
    newest_up_to: Vec<i64>,
    /// Which filling of the active memtable this is: a query that read the
    /// active memtable skips the frozen one of the same generation.
    pub generation: u64,
}

impl Memtable {
    pub fn with_generation(generation: u64) -> Self {
        Memtable {
            generation,
            ..Memtable::default()
        }
    }

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
                self.postings.push(Vec::new());
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
        self.add(MemDoc {
            time: v.time,
            id: v.id,
            project,
            terms,
            frame,
            idx,
        });
        self.max_seq = self.max_seq.max(seq);
    }

    /// Adds a doc whose values are interned already.
    fn add(&mut self, d: MemDoc) {
        let n = self.docs.len() as u32;
        for id in std::iter::once(d.project).chain(d.terms.into_iter().filter(|&t| t != NONE)) {
            let list = &mut self.postings[id as usize];
            // One entry per doc, though a value may fill several fields.
            if list.last() != Some(&n) {
                list.push(n);
            }
        }
        self.by_id.insert((d.project, d.id), n);
        let block = n as usize / BLOCK;
        if block == self.newest_up_to.len() {
            let before = self.newest_up_to.last().copied().unwrap_or(i64::MIN);
            self.newest_up_to.push(before.max(d.time));
        } else {
            self.newest_up_to[block] = self.newest_up_to[block].max(d.time);
        }
        self.docs.push(d);
    }

    /// Adds what `ahead` holds beyond this memtable, which must hold what
    /// `ahead` held before its latest inserts: the same as repeating those
    /// inserts, but only new values are hashed (values are interned in the
    /// order they first came, so `ahead`'s ids are this memtable's too).
    pub fn catch_up(&mut self, ahead: &Memtable) {
        debug_assert!(self.docs.len() <= ahead.docs.len());
        debug_assert!(self.strings.len() <= ahead.strings.len());
        for s in &ahead.strings[self.strings.len()..] {
            let id = self.strings.len() as u32;
            let (hasher, strings) = (&self.hasher, &self.strings);
            self.interner
                .insert_unique(hasher.hash_one(&**s), id, |&id| {
                    hasher.hash_one(&*strings[id as usize])
                });
            self.strings.push(s.clone());
            self.postings.push(Vec::new());
        }
        for d in &ahead.docs[self.docs.len()..] {
            self.add(*d);
        }
        self.max_seq = ahead.max_seq;
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
        // Every match is in each of these lists; the shortest is walked.
        let shortest = std::iter::once(project)
            .chain(wanted.iter().map(|&(_, id)| id))
            .map(|id| &self.postings[id as usize])
            .min_by_key(|list| list.len())
            .expect("the project's list");
        // Newest first: traces mostly come in time order, so the walk ends
        // soon after `top` is full.
        for &n in shortest.iter().rev() {
            let newest = self.newest_up_to[n as usize / BLOCK];
            if newest <= probe.from || top.floor().is_some_and(|floor| newest < floor.0) {
                break;
            }
            let d = &self.docs[n as usize];
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

    /// The posting lists find exactly what a scan of every doc finds: random
    /// docs of several projects whose values repeat across fields and docs,
    /// random filters (one, two, absent values) and windows.
    #[test]
    fn probe_through_postings_equals_a_scan_of_every_doc() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let pool = ["ECS", "EVS", "VPC", "alice", "bob", "x"];
        let f = FrameRef {
            file: 1,
            offset: 0,
            len: 1,
        };
        let mut m = Memtable::default();
        // Kept level by `catch_up` instead of inserts: it must answer alike.
        let mut twin = Memtable::default();
        let mut all = Vec::new();
        for i in 0..3000u32 {
            let project = ["p1", "p2", "ECS"][next(3) as usize];
            let mut vals = [None; NF];
            for v in vals.iter_mut() {
                if next(3) > 0 {
                    *v = Some(pool[next(pool.len() as u64) as usize]);
                }
            }
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            // Mostly in time order, one in ten late: the walk's early end
            // must not lose a late trace.
            let late = if next(10) == 0 { next(60) as i64 } else { 0 };
            let time = (i / 6) as i64 - late;
            m.insert(&IndexValues::new(project, time, id, vals), f, 0, i as u64);
            all.push((project, time, id, vals));
            if next(40) == 0 {
                twin.catch_up(&m);
            }
        }
        twin.catch_up(&m);
        for _ in 0..400 {
            let project = ["p1", "p2", "ECS", "none"][next(4) as usize];
            let filters: Vec<(Field, String)> = (0..next(3))
                .map(|_| {
                    let slot = next(NF as u64) as usize;
                    let value = ["ECS", "bob", "x", "absent"][next(4) as usize];
                    (Field::ALL[slot], value.to_string())
                })
                .collect();
            let (from, upper) = (next(300) as i64, (200 + next(300) as i64, [0x80; 16]));
            let mut top = TopK::new(1 + next(50) as usize);
            let probe = Probe {
                project,
                from,
                upper,
                filters: &filters,
            };
            m.probe(&probe, &mut top);
            let mut twins = TopK::new(top.k);
            twin.probe(&probe, &mut twins);
            let mut model = TopK::new(top.k);
            for (p, time, id, vals) in &all {
                let matches = filters.iter().all(|(field, value)| {
                    let slot = Field::ALL.iter().position(|f| f == field).unwrap();
                    vals[slot] == Some(value.as_str())
                });
                if *p == project && *time > from && (*time, *id) < upper && matches {
                    model.offer(Candidate {
                        key: (*time, *id),
                        frame: f,
                        idx: 0,
                    });
                }
            }
            let top = top.into_sorted();
            assert_eq!(top, model.into_sorted(), "{project} {filters:?}");
            assert_eq!(top, twins.into_sorted(), "caught up: {project} {filters:?}");
        }
    }
}
