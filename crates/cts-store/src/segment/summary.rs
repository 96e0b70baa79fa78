//! What a segment keeps in memory to answer without reading much: samples
//! of its term and doc tables and its Bloom filter. Full summaries (every
//! sample and the filter) live in one [`SummaryCache`] of bounded size,
//! shared by a store's segments and kept for the most recently used ones;
//! each open segment also keeps a thinned copy of its samples (every
//! [`RESIDENT_STRIDE`]-th), so that a segment whose summary is not cached
//! still finds a term or a time with one read (of a block that many times
//! larger) and no Bloom filter (the term table answers exactly).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::memtable::Key;

/// One in this many samples of a segment's file stays in memory while its
/// summary is not cached: about 0.07 bytes per trace instead of 4.
pub(super) const RESIDENT_STRIDE: usize = 8;

/// Samples of a segment's term and doc tables: sample `i` is the hash of
/// term `i × term_span` and the key of doc `i × doc_span`.
pub(super) struct Samples {
    pub terms: Vec<u64>,
    pub docs: Vec<Key>,
    pub term_span: usize,
    pub doc_span: usize,
}

impl Samples {
    /// Every `stride`-th sample.
    pub fn thinned(&self, stride: usize) -> Samples {
        Samples {
            terms: self.terms.iter().step_by(stride).copied().collect(),
            docs: self.docs.iter().step_by(stride).copied().collect(),
            term_span: self.term_span * stride,
            doc_span: self.doc_span * stride,
        }
    }

    pub fn bytes(&self) -> u64 {
        (self.terms.capacity() * 8 + self.docs.capacity() * 24) as u64
    }
}

/// A segment's full summary: every sample of its file and its Bloom filter
/// (empty in format 1, which has none).
pub(super) struct Summary {
    pub samples: Samples,
    pub bloom: Vec<u64>,
}

impl Summary {
    pub fn bytes(&self) -> u64 {
        self.samples.bytes() + self.bloom.capacity() as u64 * 8
    }
}

/// The summaries of the most recently used segments, within a budget of
/// bytes. A segment's summary enters when the segment is opened (flushed,
/// merged or loaded at start, so the newest are in) and leaves when the
/// segment is dropped or the budget needs its room (the least recently used
/// leaves first).
pub struct SummaryCache {
    budget: u64,
    next_key: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Segment key → (summary, last use).
    entries: HashMap<u64, (Arc<Summary>, u64)>,
    bytes: u64,
    clock: u64,
}

impl SummaryCache {
    pub fn new(budget: u64) -> Arc<SummaryCache> {
        Arc::new(SummaryCache {
            budget,
            next_key: AtomicU64::new(0),
            state: Mutex::default(),
        })
    }

    /// Bytes of the summaries held now (at most the budget).
    pub fn bytes(&self) -> u64 {
        self.state.lock().bytes
    }

    /// A key for a newly opened segment.
    pub(super) fn key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Holds `summary` for segment `key`, making room by dropping the least
    /// recently used; one larger than the whole budget is not held.
    pub(super) fn insert(&self, key: u64, summary: Summary) {
        let size = summary.bytes();
        if size > self.budget {
            return;
        }
        let mut s = self.state.lock();
        while s.bytes + size > self.budget {
            let Some(oldest) = s.entries.iter().min_by_key(|e| e.1 .1).map(|e| *e.0) else {
                break;
            };
            s.remove(oldest);
        }
        s.clock += 1;
        let now = s.clock;
        s.bytes += size;
        if let Some((old, _)) = s.entries.insert(key, (Arc::new(summary), now)) {
            s.bytes -= old.bytes();
        }
    }

    /// Segment `key`'s summary, if held; counts as a use.
    pub(super) fn get(&self, key: u64) -> Option<Arc<Summary>> {
        let mut s = self.state.lock();
        s.clock += 1;
        let now = s.clock;
        let (summary, used) = s.entries.get_mut(&key)?;
        *used = now;
        Some(Arc::clone(summary))
    }

    pub(super) fn remove(&self, key: u64) {
        self.state.lock().remove(key);
    }
}

impl State {
    fn remove(&mut self, key: u64) {
        if let Some((old, _)) = self.entries.remove(&key) {
            self.bytes -= old.bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(bloom_words: usize) -> Summary {
        Summary {
            samples: Samples {
                terms: Vec::new(),
                docs: Vec::new(),
                term_span: 1,
                doc_span: 1,
            },
            bloom: vec![0; bloom_words],
        }
    }

    #[test]
    fn the_least_recently_used_summary_leaves_first() {
        let cache = SummaryCache::new(300 * 8);
        for key in 0..3 {
            cache.insert(key, summary(100));
        }
        assert_eq!(cache.bytes(), 2400);
        assert!(cache.get(0).is_some());
        cache.insert(3, summary(100));
        assert!(cache.get(1).is_none(), "the least recently used left");
        assert!(cache.get(0).is_some() && cache.get(2).is_some());
        cache.insert(4, summary(301));
        assert!(cache.get(4).is_none(), "larger than the budget");
        cache.remove(0);
        assert_eq!(cache.bytes(), 1600);
    }
}
