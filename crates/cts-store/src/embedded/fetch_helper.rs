//! A thread that reads part of a large page beside the query's own thread:
//! a page of a rare value reads and decompresses a journal frame for each
//! of its traces (about 4 ms of CPU for 200), and on a busy machine its
//! wait for a core doubles that. At the queries' priority; one page at a
//! time, taken only when free, so concurrent pages never queue behind it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

pub(super) struct FetchHelper {
    pool: cts_priority::Pool,
    busy: Arc<AtomicBool>,
}

impl FetchHelper {
    pub(super) fn start() -> std::io::Result<FetchHelper> {
        Ok(FetchHelper {
            pool: cts_priority::Pool::bounded("cts-fetch", cts_priority::niceness(), 1)?,
            busy: Arc::default(),
        })
    }

    /// Runs the job `make` builds on the helper, unless it is busy (then
    /// `make` is not called): its answer comes on the receiver, which
    /// reports an error instead if the job could not run to its end.
    pub(super) fn try_run<T, F>(&self, make: impl FnOnce() -> F) -> Option<Receiver<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        if self.busy.swap(true, Ordering::AcqRel) {
            return None;
        }
        // Free again however the job ends, a panic included.
        let free = Free(self.busy.clone());
        let job = make();
        let (tx, rx) = mpsc::sync_channel(1);
        self.pool.spawn_blocking(move || {
            let out = job();
            drop(free);
            let _ = tx.send(out);
        });
        Some(rx)
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

    #[test]
    fn one_job_at_a_time_and_free_again_after_it() {
        let helper = FetchHelper::start().unwrap();
        let (go, wait) = mpsc::channel::<()>();
        let first = helper
            .try_run(|| move || wait.recv().map(|_| 1))
            .expect("a free helper takes a job");
        assert!(
            helper.try_run(|| || 2).is_none(),
            "a busy helper takes no second job"
        );
        go.send(()).unwrap();
        assert_eq!(first.recv().unwrap(), Ok(1));
        let again = helper.try_run(|| || 3).expect("free again after its job");
        assert_eq!(again.recv().unwrap(), 3);
        let failed = helper
            .try_run(|| || -> u8 { panic!("a job that fails") })
            .expect("free");
        assert!(failed.recv().is_err(), "no answer from a failed job");
        let after = helper
            .try_run(|| || 4)
            .expect("free again after a failed job");
        assert_eq!(after.recv().unwrap(), 4);
    }
}
