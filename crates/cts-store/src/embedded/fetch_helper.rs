//! A thread that reads part of a large page beside the query's own thread:
//! a page of a rare value reads and decompresses a journal frame for each
//! of its traces (about 4 ms of CPU for 200), and on a busy machine its
//! wait for a core doubles that. At the queries' priority; one page at a
//! time, taken only when free, so concurrent pages never queue behind it.
//!
//! The two threads share a page's items by taking the next one neither has
//! taken: the query's thread never waits for a helper that has not got a
//! core yet (it then reads every item itself), only for the one item the
//! helper is reading when none is left.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use cts_priority::Tier;
use parking_lot::{Condvar, Mutex};

pub(super) struct FetchHelper {
    pool: cts_priority::Pool,
    busy: Arc<AtomicBool>,
}

impl FetchHelper {
    pub(super) fn start() -> std::io::Result<FetchHelper> {
        Ok(FetchHelper {
            pool: cts_priority::Pool::bounded("cts-fetch", Tier::Interactive, 1)?,
            busy: Arc::default(),
        })
    }

    /// Runs `work` on each of `items`, on this thread and, when it is free,
    /// on the helper: what every call pushed, in no particular order, or
    /// an error of either side. An item the helper could not finish (its
    /// job panicked) is worked here. The helper may still hold `work` (and
    /// what it captured) for a moment after this returns: its job drops it.
    pub(super) fn share<I, R, E, W>(&self, items: Vec<I>, work: W) -> Result<Vec<R>, E>
    where
        I: Send + Sync + 'static,
        R: Send + 'static,
        E: Send + 'static,
        W: Fn(&I, &mut Vec<R>) -> Result<(), E> + Send + Sync + 'static,
    {
        let shared = Arc::new(Shared {
            items,
            work,
            next: AtomicUsize::new(0),
            helper: Mutex::new(Helped {
                reading: None,
                read: Vec::new(),
                error: None,
                ended: false,
            }),
            changed: Condvar::new(),
        });
        let helped = !self.busy.swap(true, Ordering::AcqRel);
        if helped {
            // Free again however the job ends, a panic included.
            let free = Free(self.busy.clone());
            let theirs = Ended(shared.clone());
            self.pool.spawn_blocking(move || {
                theirs.0.help();
                drop(theirs);
                drop(free);
            });
        } else {
            shared.helper.lock().ended = true;
        }
        let mut out = Vec::new();
        let n = shared.items.len();
        loop {
            let i = shared.next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            if let Err(e) = (shared.work)(&shared.items[i], &mut out) {
                shared.next.store(n, Ordering::Relaxed);
                return Err(e);
            }
        }
        let mut h = shared.helper.lock();
        while h.reading.is_some() && !h.ended {
            shared.changed.wait(&mut h);
        }
        if let Some(e) = h.error.take() {
            return Err(e);
        }
        out.append(&mut h.read);
        // The helper's job failed with an item in hand.
        if let Some(i) = h.reading.take() {
            drop(h);
            (shared.work)(&shared.items[i], &mut out)?;
        }
        Ok(out)
    }
}

struct Shared<I, R, E, W> {
    items: Vec<I>,
    work: W,
    /// The next item no thread has taken.
    next: AtomicUsize,
    helper: Mutex<Helped<R, E>>,
    /// The helper finished an item or ended.
    changed: Condvar,
}

/// What the helper did with the items it took.
struct Helped<R, E> {
    /// The item it is working on: taken under this lock, so that a query
    /// that finds no item left and this empty knows the helper holds none.
    reading: Option<usize>,
    read: Vec<R>,
    error: Option<E>,
    /// Its job ended (or never ran): nothing more will come from it.
    ended: bool,
}

impl<I, R, E, W> Shared<I, R, E, W>
where
    W: Fn(&I, &mut Vec<R>) -> Result<(), E>,
{
    /// The helper's side: items until none is left or one fails.
    fn help(&self) {
        let n = self.items.len();
        let mut read = Vec::new();
        loop {
            let i = {
                let mut h = self.helper.lock();
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                h.reading = Some(i);
                i
            };
            let result = (self.work)(&self.items[i], &mut read);
            let mut h = self.helper.lock();
            h.reading = None;
            match result {
                Ok(()) => h.read.append(&mut read),
                Err(e) => {
                    h.error = Some(e);
                    self.next.store(n, Ordering::Relaxed);
                }
            }
            self.changed.notify_all();
        }
    }
}

/// Marks the helper's job ended when dropped (a panic included) and wakes
/// the query waiting for it.
struct Ended<I, R, E, W>(Arc<Shared<I, R, E, W>>);

impl<I, R, E, W> Drop for Ended<I, R, E, W> {
    fn drop(&mut self) {
        self.0.helper.lock().ended = true;
        self.0.changed.notify_all();
    }
}

/// Clears the busy flag when dropped.
struct Free(Arc<AtomicBool>);

impl Drop for Free {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread::ThreadId;
    use std::time::{Duration, Instant};

    fn sorted(mut v: Vec<u32>) -> Vec<u32> {
        v.sort_unstable();
        v
    }

    /// Work for a page of `u32`s on the test's thread `main` that makes
    /// sure the helper takes part: the test's thread holds its first item
    /// until the helper has taken one (for at most 10 s), which sets
    /// `helped`. `on_helper` is what the helper's items answer.
    fn with_helper(
        main: ThreadId,
        helped: &Arc<AtomicBool>,
        on_helper: impl Fn(u32) -> Result<u32, u32> + Send + Sync + 'static,
    ) -> impl Fn(&u32, &mut Vec<u32>) -> Result<(), u32> + Send + Sync + 'static {
        let saw = helped.clone();
        move |&i: &u32, out: &mut Vec<u32>| {
            if std::thread::current().id() != main {
                saw.store(true, Ordering::Release);
                out.push(on_helper(i)?);
                return Ok(());
            }
            wait_for(&saw);
            out.push(i);
            Ok(())
        }
    }

    /// Waits until `flag` is set, for at most 10 s.
    fn wait_for(flag: &AtomicBool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !flag.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn every_item_is_worked_once_by_either_thread() {
        let helper = FetchHelper::start().unwrap();
        let main = std::thread::current().id();
        for n in [2u32, 7, 500] {
            let helped = Arc::default();
            let work = with_helper(main, &helped, Ok);
            let out = helper.share((0..n).collect(), work).unwrap();
            assert_eq!(sorted(out), (0..n).collect::<Vec<_>>());
            assert!(helped.load(Ordering::Acquire), "the helper took no item");
            wait_free(&helper);
        }
        for n in [0u32, 1] {
            let out = helper.share((0..n).collect(), |&i: &u32, out: &mut Vec<u32>| {
                out.push(i);
                Ok::<_, ()>(())
            });
            assert_eq!(out, Ok((0..n).collect()));
            wait_free(&helper);
        }
    }

    /// Waits (at most 10 s) until the helper is free for the next page.
    fn wait_free(helper: &FetchHelper) {
        let until = Instant::now() + Duration::from_secs(10);
        while helper.busy.load(Ordering::Acquire) {
            assert!(Instant::now() < until, "the helper stays busy");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A helper that has not got a core is not waited for: the query's
    /// thread works every item, and the helper's late start finds none.
    #[test]
    fn a_helper_that_does_not_start_is_not_waited_for() {
        let helper = FetchHelper::start().unwrap();
        let (hold, held) = mpsc::channel::<()>();
        let (started, wait_started) = mpsc::channel::<()>();
        // Occupies the helper's one thread, flag left free: the next job
        // queues behind this one as if the thread had no core.
        helper.pool.spawn_blocking(move || {
            started.send(()).unwrap();
            let _ = held.recv();
        });
        wait_started.recv().unwrap();
        // Were the query to wait for the helper, it would wait until this
        // watchdog frees the thread, 5 s on.
        let (release, watch) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _ = watch.recv_timeout(Duration::from_secs(5));
            drop(hold);
        });
        let started = Instant::now();
        let out = helper
            .share((0..100u32).collect(), |&i: &u32, out: &mut Vec<u32>| {
                out.push(i);
                Ok::<_, ()>(())
            })
            .unwrap();
        let took = started.elapsed();
        let _ = release.send(());
        assert!(
            took < Duration::from_secs(4),
            "waited {took:?} for the helper"
        );
        assert_eq!(sorted(out), (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn an_error_on_either_side_is_answered() {
        let helper = FetchHelper::start().unwrap();
        let main = std::thread::current().id();
        // On the helper's side: its first item fails.
        let helped = Arc::default();
        let work = with_helper(main, &helped, |i| Err(1000 + i));
        let got = helper.share((0..64u32).collect(), work);
        assert!(helped.load(Ordering::Acquire));
        assert!(matches!(got, Err(e) if e >= 1000), "{got:?}");
        wait_free(&helper);
        // On the query's side (the helper's items wait until the query
        // has taken one, so that it does take one).
        let took = Arc::new(AtomicBool::new(false));
        let got = helper.share((0..64u32).collect(), move |&i: &u32, out: &mut Vec<u32>| {
            if std::thread::current().id() == main {
                took.store(true, Ordering::Release);
                return Err(i);
            }
            wait_for(&took);
            out.push(i);
            Ok(())
        });
        assert!(matches!(got, Err(e) if e < 64), "{got:?}");
    }

    /// The helper's job panics with an item in hand: the query's thread
    /// works that item, and the helper is free for the next page.
    #[test]
    fn an_item_the_helper_dropped_is_worked_by_the_query() {
        let helper = FetchHelper::start().unwrap();
        let main = std::thread::current().id();
        let helped = Arc::default();
        let work = with_helper(main, &helped, |_| panic!("the helper fails"));
        let out = helper.share((0..64u32).collect(), work).unwrap();
        assert!(helped.load(Ordering::Acquire), "the helper took no item");
        assert_eq!(sorted(out), (0..64).collect::<Vec<_>>());
        // Free again: the next page is shared with it.
        wait_free(&helper);
        let helped = Arc::default();
        let work = with_helper(main, &helped, Ok);
        let out = helper.share((0..64u32).collect(), work).unwrap();
        assert!(helped.load(Ordering::Acquire), "the helper took no item");
        assert_eq!(sorted(out), (0..64).collect::<Vec<_>>());
    }
}
