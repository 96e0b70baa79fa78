//! Decompressed journal frames that recent queries read, within a budget
//! of bytes (`store.frame_cache_bytes`). A page of traces decompresses a
//! whole frame (8 traces) per trace it answers; the same pages and the
//! newest traces are asked again and again (a console polling, users
//! paging back and forth, several filters matching the same recent
//! traces), and a hit costs a copy instead of a decompression.
//!
//! Only frames that passed zstd's content checksum enter, and journal
//! frames are never rewritten: a cached frame is the verified content of
//! its place in the journal. Retention forgets a file's frames when it
//! deletes the file.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::journal::FrameRef;

/// Bookkeeping per entry besides its bytes (maps, key, `Arc` header).
const ENTRY_OVERHEAD: u64 = 96;

pub(super) struct FrameCache {
    budget: u64,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Frame → (its decompressed bytes, last use).
    entries: HashMap<FrameRef, (Arc<[u8]>, u64)>,
    /// Last use → frame: the least recently used comes first.
    by_use: BTreeMap<u64, FrameRef>,
    bytes: u64,
    clock: u64,
}

fn cost(raw: &[u8]) -> u64 {
    raw.len() as u64 + ENTRY_OVERHEAD
}

impl FrameCache {
    pub fn new(budget: u64) -> FrameCache {
        FrameCache {
            budget,
            state: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Whether it holds anything at all (a budget of 0 turns it off).
    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// The decompressed bytes of `frame`, if held; counts as a use.
    pub fn get(&self, frame: FrameRef) -> Option<Arc<[u8]>> {
        if !self.enabled() {
            return None;
        }
        let mut s = self.state.lock();
        let found = s.touch(frame);
        drop(s);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Holds `raw` (verified) as `frame`'s content, making room by dropping
    /// the least recently used; a frame larger than the budget is not held.
    pub fn insert(&self, frame: FrameRef, raw: Arc<[u8]>) {
        let size = cost(&raw);
        if size > self.budget {
            return;
        }
        let mut s = self.state.lock();
        s.remove(frame);
        while s.bytes + size > self.budget {
            let Some((_, oldest)) = s.by_use.first_key_value().map(|(u, f)| (*u, *f)) else {
                break;
            };
            s.remove(oldest);
        }
        s.clock += 1;
        let now = s.clock;
        s.bytes += size;
        s.by_use.insert(now, frame);
        s.entries.insert(frame, (raw, now));
    }

    /// Drops every frame of journal file `file` (retention deleted it).
    pub fn forget_file(&self, file: u32) {
        let mut s = self.state.lock();
        let gone: Vec<FrameRef> = s
            .entries
            .keys()
            .filter(|f| f.file == file)
            .copied()
            .collect();
        for f in gone {
            s.remove(f);
        }
    }

    pub fn bytes(&self) -> u64 {
        self.state.lock().bytes
    }

    /// Lookups answered from memory, and those that were not, since the start.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

impl State {
    fn touch(&mut self, frame: FrameRef) -> Option<Arc<[u8]>> {
        self.clock += 1;
        let now = self.clock;
        let (raw, used) = self.entries.get_mut(&frame)?;
        let raw = Arc::clone(raw);
        let before = std::mem::replace(used, now);
        self.by_use.remove(&before);
        self.by_use.insert(now, frame);
        Some(raw)
    }

    fn remove(&mut self, frame: FrameRef) {
        if let Some((raw, used)) = self.entries.remove(&frame) {
            self.by_use.remove(&used);
            self.bytes -= cost(&raw);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(file: u32, offset: u32) -> FrameRef {
        FrameRef {
            file,
            offset,
            len: 10,
        }
    }

    fn raw(n: usize) -> Arc<[u8]> {
        vec![7u8; n].into()
    }

    #[test]
    fn the_least_recently_used_leave_first_within_the_budget() {
        let c = FrameCache::new(3 * (100 + ENTRY_OVERHEAD));
        for i in 0..3 {
            c.insert(frame(1, i), raw(100));
        }
        assert!(c.get(frame(1, 0)).is_some()); // 0 is now the newest use
        c.insert(frame(1, 3), raw(100));
        assert!(c.get(frame(1, 1)).is_none(), "the least recently used left");
        for i in [0, 2, 3] {
            assert!(c.get(frame(1, i)).is_some(), "frame {i}");
        }
        assert_eq!(c.bytes(), 3 * (100 + ENTRY_OVERHEAD));
        assert_eq!(c.hits_and_misses(), (4, 1));
        // Larger than the whole budget: not held, nothing dropped for it.
        c.insert(frame(1, 9), raw(1000));
        assert!(c.get(frame(1, 9)).is_none());
        assert_eq!(c.bytes(), 3 * (100 + ENTRY_OVERHEAD));
        // The same frame again replaces its entry, not adds one.
        c.insert(frame(1, 0), raw(50));
        assert_eq!(c.bytes(), 2 * (100 + ENTRY_OVERHEAD) + 50 + ENTRY_OVERHEAD);
        assert_eq!(&*c.get(frame(1, 0)).unwrap(), &[7u8; 50][..]);
    }

    #[test]
    fn a_deleted_file_is_forgotten_and_a_zero_budget_holds_nothing() {
        let c = FrameCache::new(1 << 20);
        c.insert(frame(1, 0), raw(10));
        c.insert(frame(2, 0), raw(10));
        c.forget_file(1);
        assert!(c.get(frame(1, 0)).is_none());
        assert!(c.get(frame(2, 0)).is_some());
        assert_eq!(c.bytes(), 10 + ENTRY_OVERHEAD);

        let off = FrameCache::new(0);
        assert!(!off.enabled());
        off.insert(frame(1, 0), raw(10));
        assert!(off.get(frame(1, 0)).is_none());
        assert_eq!((off.bytes(), off.hits_and_misses()), (0, (0, 0)));
    }
}
