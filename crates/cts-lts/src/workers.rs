//! The threads that read the journal for the sink and encode its batches:
//! a fixed pool at background priority (`cts-priority`), so that while
//! ingest runs it wins the CPU and the sink falls behind, and when ingest
//! is idle the sink drains at full speed. Not Tokio's blocking threads:
//! they are shared with other work, and a thread's priority cannot be
//! raised again once lowered.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::LtsError;

type Job = Box<dyn FnOnce() + Send>;

/// A handle on the pool; its threads end once every handle is dropped.
#[derive(Clone)]
pub(crate) struct Workers {
    jobs: mpsc::Sender<Job>,
}

impl Workers {
    /// Starts `threads` threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<Workers> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("cts-lts-{i}"))
                .spawn(move || {
                    cts_priority::lower_this_thread("LTS worker thread");
                    loop {
                        let job = queue.lock().recv();
                        let Ok(job) = job else { return };
                        // A job that panics drops its answer (the caller
                        // sees an error); the thread goes on.
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Workers { jobs })
    }

    /// Queues `f` at once; the future answers its result.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Result<T, LtsError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let queued = self.jobs.send(Box::new(move || {
            let _ = tx.send(f());
        }));
        async move {
            queued.map_err(|_| LtsError::Task("the LTS worker threads stopped".into()))?;
            rx.await
                .map_err(|_| LtsError::Task("an LTS worker job panicked".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs run on the pool's threads, at background priority; a job that
    /// panics is an error and the pool goes on.
    #[tokio::test]
    async fn jobs_run_at_background_priority_and_survive_a_panic() {
        let workers = Workers::start(1).unwrap();
        let (name, nice) = workers
            .spawn(|| {
                (
                    std::thread::current().name().map(String::from),
                    cts_priority::niceness(),
                )
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("cts-lts-0"));
        assert!(nice >= cts_priority::BACKGROUND_NICE, "niceness {nice}");
        let panicked = workers.spawn(|| panic!("a broken batch")).await;
        assert!(matches!(panicked, Err(LtsError::Task(_))));
        assert_eq!(workers.spawn(|| 7).await.unwrap(), 7);
    }
}
