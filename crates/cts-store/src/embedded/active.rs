//! The active memtable, kept in two equal copies so that a query never
//! waits for the journal writer: the writer inserts a group into the copy
//! queries are not reading, turns queries to it, then brings the other copy
//! level. With one copy, a query waited for the write lock the writer held
//! over a whole group's inserts (8.5 ms, median, of a slow page's wait while
//! loading; docs/benchmark.md), and longer when the writer lost its core
//! while holding it.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::memtable::Memtable;

pub(super) struct Active {
    copies: [RwLock<Memtable>; 2],
    /// The copy queries read. The writer write-locks only the other one, or
    /// this one after turning queries away from it.
    readable: AtomicUsize,
    /// The writer's side (inserts, freezes) one at a time, with the
    /// generation the copies hold.
    writer: Mutex<u64>,
}

impl Default for Active {
    fn default() -> Self {
        let copy = || RwLock::new(Memtable::with_generation(1));
        Active {
            copies: [copy(), copy()],
            readable: AtomicUsize::new(0),
            writer: Mutex::new(1),
        }
    }
}

impl Active {
    /// A copy holding every trace inserted so far. Never waits for an
    /// insert: a copy the writer holds is one queries were turned away from.
    pub(super) fn read(&self) -> RwLockReadGuard<'_, Memtable> {
        let mut tries = 0;
        loop {
            let i = self.readable.load(Ordering::Acquire);
            #[cfg(test)]
            tests::BETWEEN.with(|hook| hook.borrow_mut().as_mut().map(|h| h()));
            // Blocking only if the writer turned again and again meanwhile.
            let copy = if tries < 8 {
                tries += 1;
                self.copies[i].try_read()
            } else {
                Some(self.copies[i].read())
            };
            // Still the copy queries read once locked, so the writer cannot
            // be mid-way through it (a freeze empties the other copy before
            // the frozen memtable is queryable; an insert fills it before
            // its traces are acknowledged).
            if let Some(copy) = copy.filter(|_| self.readable.load(Ordering::Acquire) == i) {
                return copy;
            }
            std::hint::spin_loop();
        }
    }

    /// Inserts with `fill` into one copy, turns queries to it, then brings
    /// the other copy level (a copy of the new entries, cheaper than the
    /// inserts); returns how many traces the copies hold. A query sees all
    /// of a call's traces or none of them.
    pub(super) fn insert(&self, fill: impl FnOnce(&mut Memtable)) -> usize {
        let _writer = self.writer.lock();
        let r = self.readable.load(Ordering::Acquire);
        fill(&mut self.copies[1 - r].write());
        self.readable.store(1 - r, Ordering::Release);
        let ahead = self.copies[1 - r].read();
        // Waits for queries still reading it; new ones read the other copy.
        let mut copy = self.copies[r].write();
        copy.catch_up(&ahead);
        copy.len()
    }

    /// Hands what the copies hold, if anything, to `hand_over` (which must
    /// make it queryable: the frozen memtables) and empties both copies
    /// with the next generation. A query that read the full copy finds the
    /// same generation among the frozen memtables and skips it there.
    pub(super) fn freeze(&self, hand_over: impl FnOnce(Memtable)) {
        let mut generation = self.writer.lock();
        let r = self.readable.load(Ordering::Acquire);
        let next = *generation + 1;
        let full = {
            let mut copy = self.copies[1 - r].write();
            if copy.len() == 0 {
                return;
            }
            std::mem::replace(&mut *copy, Memtable::with_generation(next))
        };
        hand_over(full);
        self.readable.store(1 - r, Ordering::Release);
        *self.copies[r].write() = Memtable::with_generation(next);
        *generation = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::FrameRef;
    use crate::memtable::{IndexValues, Probe, TopK, NF};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    thread_local! {
        /// Runs in `read` between choosing a copy and locking it.
        pub(super) static BETWEEN: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
            const { std::cell::RefCell::new(None) };
    }

    fn fill(m: &mut Memtable, first: u64, n: u64) {
        let frame = FrameRef {
            file: 1,
            offset: 0,
            len: 1,
        };
        for seq in first..first + n {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&seq.to_le_bytes());
            let v = IndexValues::new("p", seq as i64, id, [None; NF]);
            m.insert(&v, frame, 0, seq);
        }
    }

    /// The writer holding a copy (as it does through a whole insert) does
    /// not make a query wait: the query reads the other copy.
    #[test]
    fn a_query_reads_while_the_writer_holds_a_copy() {
        let active = Arc::new(Active::default());
        active.insert(|m| fill(m, 1, 3));
        let r = active.readable.load(Ordering::Acquire);
        let _held = active.copies[1 - r].write();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = active.clone();
        std::thread::spawn(move || tx.send(reader.read().len()).unwrap());
        let seen = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(seen, Ok(3), "the query waited for the writer's copy");
    }

    /// A query that chose a copy, then lost its core while the writer
    /// inserted a group and froze, does not read the copy the freeze
    /// emptied before the frozen memtable is queryable: it reads the copy
    /// queries read once it holds it.
    #[test]
    fn a_query_that_chose_a_copy_long_ago_reads_the_current_one() {
        let active = Arc::new(Active::default());
        active.insert(|m| fill(m, 1, 5));
        let (chose, chosen) = mpsc::channel();
        let (go, wait) = mpsc::channel::<()>();
        let (seen, saw) = mpsc::channel();
        let reader = {
            let active = active.clone();
            std::thread::spawn(move || {
                let mut once = Some((chose, wait));
                BETWEEN.with(|hook| {
                    *hook.borrow_mut() = Some(Box::new(move || {
                        if let Some((chose, wait)) = once.take() {
                            chose.send(()).unwrap();
                            wait.recv().unwrap();
                        }
                    }))
                });
                let copy = active.read();
                seen.send((copy.len(), copy.generation)).unwrap();
            })
        };
        chosen.recv().unwrap();
        active.insert(|m| fill(m, 6, 5));
        let mut frozen = None;
        active.freeze(|m| {
            go.send(()).unwrap();
            let read = saw
                .recv_timeout(Duration::from_secs(5))
                .expect("the query read");
            assert_eq!(read, (10, 1), "the query read the copy the freeze emptied");
            frozen = Some(m);
        });
        reader.join().unwrap();
        assert_eq!(frozen.map(|m| m.len()), Some(10));
    }

    /// Queries running beside inserts and freezes see every trace inserted
    /// before they started exactly once: in a copy, or in a frozen
    /// memtable of another generation than the copy they read.
    #[test]
    fn queries_beside_inserts_and_freezes_see_each_trace_once() {
        let active = Arc::new(Active::default());
        let frozen: Arc<RwLock<Vec<Arc<Memtable>>>> = Arc::default();
        let inserted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (active, frozen, inserted) = (active.clone(), frozen.clone(), inserted.clone());
            std::thread::spawn(move || {
                let mut next = 1;
                for round in 0..10_000u64 {
                    let n = 1 + round % 7;
                    active.insert(|m| fill(m, next, n));
                    next += n;
                    inserted.store(next - 1, Ordering::Release);
                    if round % 25 == 24 {
                        active.freeze(|m| {
                            // A slow hand-over: a query must not find the
                            // memtable in neither place meanwhile.
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            frozen.write().push(Arc::new(m))
                        });
                    }
                }
            })
        };
        // More readers than cores: some lose their core between choosing
        // a copy and locking it.
        let readers: Vec<_> = (0..6)
            .map(|_| {
                let (active, frozen) = (active.clone(), frozen.clone());
                let (inserted, stop) = (inserted.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut checks = 0;
                    while !stop.load(Ordering::Acquire) {
                        let before = inserted.load(Ordering::Acquire);
                        let probe = Probe {
                            project: "p",
                            from: i64::MIN,
                            upper: (i64::MAX, [0xff; 16]),
                            filters: &[],
                        };
                        let mut top = TopK::new(1 << 20);
                        let generation = {
                            let copy = active.read();
                            copy.probe(&probe, &mut top);
                            copy.generation
                        };
                        for m in frozen.read().iter() {
                            if m.generation != generation {
                                m.probe(&probe, &mut top);
                            }
                        }
                        let mut times: Vec<i64> =
                            top.into_sorted().iter().map(|c| c.key.0).collect();
                        times.reverse();
                        // Each trace once, and every one inserted before the
                        // query began. Not a gapless run: traces inserted
                        // while it ran may be seen in part (those that went
                        // into the copy's generation after it read the copy
                        // are skipped with it among the frozen ones, while a
                        // later generation frozen meanwhile is read).
                        assert!(times.windows(2).all(|w| w[0] < w[1]), "a trace twice");
                        assert!(
                            times
                                .iter()
                                .copied()
                                .take(before as usize)
                                .eq(1..=before as i64),
                            "a trace was missed"
                        );
                        checks += 1;
                    }
                    checks
                })
            })
            .collect();
        writer.join().unwrap();
        stop.store(true, Ordering::Release);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        assert_eq!(frozen.read().len(), 400);
    }
}
