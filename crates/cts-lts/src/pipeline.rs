//! Pipelined delivery of one tracker's batches. The journal is read one
//! batch after the other (in order, on a worker thread); each batch read
//! is then parsed, encoded and compressed on its own worker thread, up to
//! `encoders` at once (the workers run at background priority:
//! [`Workers`]), and sent as soon as it is encoded, up to `in_flight`
//! batches encoding or in flight at once. Their outcomes come back in
//! journal order whatever order the encoders finish and the receiver
//! answers in. The caller commits each delivered batch's cursor as it
//! comes and stops at the first failure, so the cursor never passes a
//! batch that was not acknowledged (at least once; a later batch already
//! delivered is sent again after the retry). With `in_flight` 1 a batch is
//! sent only once the one before it was answered (in order on the wire).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::batch::{Batch, Prepared};
use crate::protocol::Sending;
use crate::sink::SinkError;
use crate::LtsError;

/// The threads that read the journal for the sink and encode its batches:
/// a pool at background priority (`cts-priority`), bounded to the encoders
/// and one reader, so that while ingest runs it wins the CPU and the sink
/// falls behind, and when ingest is idle the sink drains at full speed.
pub(crate) type Workers = Arc<cts_priority::Pool>;

/// Starts the sink's pool of `threads` threads.
pub(crate) fn start_workers(threads: usize) -> std::io::Result<Workers> {
    cts_priority::Pool::bounded("cts-lts", cts_priority::Tier::Background, threads).map(Arc::new)
}

/// Runs `f` on `workers` at once; the future answers its result (a job
/// that panicked is an error). It holds the pool until then: a pool
/// dropped would cancel the jobs still queued.
fn run_on<T: Send + 'static>(
    workers: &Workers,
    f: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T, LtsError>> + Send + 'static {
    let job = workers.spawn_blocking(f);
    let workers = Arc::clone(workers);
    async move {
        let _held = workers;
        job.await
            .map_err(|e| LtsError::Task(format!("an LTS worker job: {e}")))
    }
}

/// Where a pipeline's batches come from.
pub(crate) trait Source: Send + Sync + 'static {
    /// A batch read from the journal, not yet encoded.
    type Read: Send + 'static;

    /// The batch after `cursor`. Blocking (on a worker thread); called one
    /// after the other.
    fn read(&self, cursor: u64) -> Result<Self::Read, LtsError>;

    /// Where `read` leaves the cursor, and whether it was full (more is
    /// waiting right away).
    fn ends(read: &Self::Read) -> (u64, bool);

    /// The request of a batch read. Blocking CPU work (on a worker thread);
    /// several run at once.
    fn prepare(&self, read: Self::Read) -> Prepared;
}

/// A batch being encoded.
type Encoding = Pin<Box<dyn Future<Output = Result<Prepared, LtsError>> + Send>>;

/// A batch being encoded, then sent.
type Slot = JoinHandle<Result<Done, LtsError>>;

/// Sends one encoded batch.
type Deliver = Arc<dyn Fn(Vec<u8>) -> Sending<'static> + Send + Sync>;

/// A batch whose delivery ended.
#[derive(Debug)]
pub(crate) struct Done {
    pub batch: Batch,
    pub result: Result<(), SinkError>,
}

/// The window of one tracker's batches encoding or in flight, in journal
/// order. Dropping it stops the reading and the requests still in flight
/// (their batches are not committed: they are sent again).
pub(crate) struct Pipeline {
    reads: mpsc::Receiver<Result<Encoding, LtsError>>,
    reader: JoinHandle<()>,
    window: VecDeque<Slot>,
    in_flight: usize,
    send: Deliver,
    /// Reads go on.
    open: bool,
    /// A read failed: said once the batches before it are done.
    error: Option<LtsError>,
}

/// How a pipeline runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Batches read at most (fewer when one is not full).
    pub batches: usize,
    /// Batches encoding or in flight at once.
    pub in_flight: usize,
    /// Batches encoded at once.
    pub encoders: usize,
}

impl Pipeline {
    /// Reads the batches of `source` from `cursor` on (on `workers`) and
    /// delivers each body with `send`, within `bounds`. Call it on a Tokio
    /// runtime.
    pub fn start<S, T, F>(
        source: S,
        send: T,
        cursor: u64,
        bounds: Bounds,
        workers: &Workers,
    ) -> Self
    where
        S: Source,
        T: Fn(Vec<u8>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), SinkError>> + Send + 'static,
    {
        let encoders = bounds.encoders.max(1);
        // Encoded batches wait here while the window is full: the encoders
        // go on meanwhile.
        let (tx, reads) = mpsc::channel(encoders);
        let reader = tokio::spawn(read_ahead(
            Arc::new(source),
            cursor,
            bounds.batches,
            (workers.clone(), Arc::new(Semaphore::new(encoders))),
            tx,
        ));
        Pipeline {
            reads,
            reader,
            window: VecDeque::new(),
            in_flight: bounds.in_flight.max(1),
            send: Arc::new(move |body| Box::pin(send(body))),
            open: true,
            error: None,
        }
    }

    /// The next batch whose delivery ended, in journal order; then the
    /// read error, if any; then None.
    pub async fn next(&mut self) -> Option<Result<Done, LtsError>> {
        loop {
            if self.window.is_empty() && !self.open {
                return self.error.take().map(Err);
            }
            let can_read = self.open && self.window.len() < self.in_flight;
            let step = tokio::select! {
                // Answers first: they free the window.
                biased;
                done = first(&mut self.window), if !self.window.is_empty() => Step::Done(done),
                read = self.reads.recv(), if can_read => Step::Read(read),
            };
            match step {
                Step::Done(done) => {
                    self.window.pop_front();
                    return Some(done);
                }
                Step::Read(Some(Ok(encoding))) => {
                    let send = Arc::clone(&self.send);
                    self.window.push_back(tokio::spawn(deliver(encoding, send)));
                }
                Step::Read(Some(Err(e))) => {
                    self.error = Some(e);
                    self.open = false;
                }
                Step::Read(None) => self.open = false,
            }
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.reader.abort();
        for slot in &self.window {
            slot.abort();
        }
    }
}

enum Step {
    Done(Result<Done, LtsError>),
    Read(Option<Result<Encoding, LtsError>>),
}

/// The outcome of the oldest batch of the window (not empty).
async fn first(window: &mut VecDeque<Slot>) -> Result<Done, LtsError> {
    match window.front_mut() {
        Some(slot) => slot
            .await
            .unwrap_or_else(|e| Err(LtsError::Task(e.to_string()))),
        None => Err(LtsError::Task("an empty delivery window".into())),
    }
}

/// Sends a batch once it is encoded (a batch without any of the tracker's
/// traces only moves the cursor).
async fn deliver(encoding: Encoding, send: Deliver) -> Result<Done, LtsError> {
    let p = encoding.await?;
    let result = match p.body {
        Some(body) => send(body).await,
        None => Ok(()),
    };
    Ok(Done {
        batch: p.batch,
        result,
    })
}

/// Reads batch after batch and hands each to an encoder (at most
/// `encoders` permits at once), in journal order into `tx`, until one is
/// not full, `batches` were read, a read fails or the pipeline is dropped.
async fn read_ahead<S: Source>(
    source: Arc<S>,
    mut cursor: u64,
    batches: usize,
    (workers, encoders): (Workers, Arc<Semaphore>),
    tx: mpsc::Sender<Result<Encoding, LtsError>>,
) {
    for _ in 0..batches {
        let s = Arc::clone(&source);
        let read = run_on(&workers, move || s.read(cursor))
            .await
            .and_then(|r| r);
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let (upto, more) = S::ends(&read);
        // Never closed: dropped with this task.
        let Ok(permit) = Arc::clone(&encoders).acquire_owned().await else {
            return;
        };
        let s = Arc::clone(&source);
        let encoding: Encoding = Box::pin(run_on(&workers, move || {
            let _encoder = permit;
            s.prepare(read)
        }));
        if tx.send(Ok(encoding)).await.is_err() || !more {
            return;
        }
        cursor = upto;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::*;
    use crate::sink::Failure;

    /// Counts how many run at once, and the most.
    #[derive(Default)]
    struct Gauge {
        now: AtomicUsize,
        most: AtomicUsize,
    }

    impl Gauge {
        fn enter(&self) {
            let k = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(k, Ordering::SeqCst);
        }
        fn leave(&self) {
            self.now.fetch_sub(1, Ordering::SeqCst);
        }
        fn most(&self) -> usize {
            self.most.load(Ordering::SeqCst)
        }
    }

    /// Batch `n` (1-based) covers the cursor up to `n * 10`; the first
    /// `full` batches are full; reads from `fail_at` on fail; encoding
    /// batch `n` takes `encode_ms(n)`.
    struct Batches {
        full: u64,
        fail_at: u64,
        encode_ms: fn(u64) -> u64,
        encoding: Arc<Gauge>,
    }

    fn batches(full: u64) -> Batches {
        Batches {
            full,
            fail_at: u64::MAX,
            encode_ms: |_| 0,
            encoding: Arc::default(),
        }
    }

    impl Source for Batches {
        type Read = (u64, bool);

        fn read(&self, cursor: u64) -> Result<(u64, bool), LtsError> {
            if cursor >= self.fail_at {
                return Err(LtsError::Task("the journal broke".into()));
            }
            let n = cursor / 10 + 1;
            Ok((n, n < self.full))
        }

        fn ends(&(n, more): &(u64, bool)) -> (u64, bool) {
            (n * 10, more)
        }

        fn prepare(&self, (n, more): (u64, bool)) -> Prepared {
            self.encoding.enter();
            std::thread::sleep(Duration::from_millis((self.encode_ms)(n)));
            self.encoding.leave();
            Prepared {
                batch: Batch {
                    gone: 0,
                    unreadable: 0,
                    upto: n * 10,
                    count: 10,
                    oldest_ms: None,
                    more,
                },
                body: Some(vec![n as u8]),
            }
        }
    }

    /// A reader and `encoders` encoders at once, as `Lts` starts them.
    fn workers(encoders: usize) -> Workers {
        start_workers(encoders + 1).unwrap()
    }

    /// Jobs run on the pool's threads, at background priority; a job that
    /// panics is an error and the pool goes on.
    #[tokio::test]
    async fn jobs_run_at_background_priority_and_survive_a_panic() {
        let workers = workers(1);
        let (name, nice) = run_on(&workers, || {
            (
                std::thread::current().name().map(String::from),
                cts_priority::niceness(),
            )
        })
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("cts-lts"));
        assert!(nice >= cts_priority::BACKGROUND_NICE, "niceness {nice}");
        let panicked = run_on(&workers, || panic!("a broken batch")).await;
        assert!(matches!(panicked, Err(LtsError::Task(_))));
        assert_eq!(run_on(&workers, || 7).await.unwrap(), 7);
    }

    fn bounds(batches: usize, in_flight: usize, encoders: usize) -> Bounds {
        Bounds {
            batches,
            in_flight,
            encoders,
        }
    }

    async fn drain(p: &mut Pipeline) -> Vec<(u64, bool)> {
        let mut out = Vec::new();
        while let Some(done) = p.next().await {
            let done = done.unwrap();
            out.push((done.batch.upto, done.result.is_ok()));
        }
        out
    }

    fn in_order(n: u64) -> Vec<(u64, bool)> {
        (1..=n).map(|n| (n * 10, true)).collect()
    }

    /// Early batches answer last: several are in flight at once (never
    /// more than the window), and the outcomes still come in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outcomes_come_in_journal_order_with_several_in_flight() {
        let sending = Arc::new(Gauge::default());
        let g = Arc::clone(&sending);
        let send = move |body: Vec<u8>| {
            let g = Arc::clone(&g);
            async move {
                g.enter();
                tokio::time::sleep(Duration::from_millis(60 - 10 * u64::from(body[0] % 5))).await;
                g.leave();
                Ok(())
            }
        };
        let mut p = Pipeline::start(batches(6), send, 0, bounds(100, 3, 2), &workers(2));
        assert_eq!(drain(&mut p).await, in_order(6));
        let most = sending.most();
        assert!((2..=3).contains(&most), "{most} in flight at most");
    }

    /// Earlier batches take longer to encode: two encode at once (never
    /// more), and they are still sent and said in journal order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_encode_in_parallel_and_still_come_in_journal_order() {
        let mut source = batches(6);
        source.encode_ms = |n| 20 * (7 - n);
        let encoding = Arc::clone(&source.encoding);
        let ok = |_: Vec<u8>| async { Ok(()) };
        let mut p = Pipeline::start(source, ok, 0, bounds(100, 4, 2), &workers(2));
        assert_eq!(drain(&mut p).await, in_order(6));
        assert_eq!(encoding.most(), 2, "encoders at once");
    }

    /// One in flight (syslog): encoders run ahead, but a batch is sent
    /// only once the one before it was answered, in journal order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_in_flight_sends_one_batch_after_the_other_in_order() {
        let mut source = batches(6);
        source.encode_ms = |n| 10 * (n % 3);
        let (sent, sending) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Gauge::default()));
        let (s, g) = (Arc::clone(&sent), Arc::clone(&sending));
        let send = move |body: Vec<u8>| {
            let (s, g) = (Arc::clone(&s), Arc::clone(&g));
            async move {
                g.enter();
                s.lock().push(body[0]);
                tokio::time::sleep(Duration::from_millis(5)).await;
                g.leave();
                Ok(())
            }
        };
        let mut p = Pipeline::start(source, send, 0, bounds(100, 1, 3), &workers(3));
        assert_eq!(drain(&mut p).await, in_order(6));
        assert_eq!(*sent.lock(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(sending.most(), 1);
    }

    /// Batch 2 fails while 3 and 4 are acknowledged first: its failure
    /// comes right after batch 1, before them, so the caller's cursor
    /// stops at 10.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_batch_comes_before_the_later_ones_it_holds_back() {
        let send = |body: Vec<u8>| async move {
            if body[0] == 2 {
                tokio::time::sleep(Duration::from_millis(80)).await;
                return Err(SinkError {
                    failure: Failure::Unreachable,
                    message: "503".into(),
                });
            }
            Ok(())
        };
        let mut p = Pipeline::start(batches(4), send, 0, bounds(100, 4, 2), &workers(2));
        let first = p.next().await.unwrap().unwrap();
        assert_eq!((first.batch.upto, first.result.is_ok()), (10, true));
        let second = p.next().await.unwrap().unwrap();
        assert_eq!(second.batch.upto, 20);
        assert_eq!(second.result.unwrap_err().failure, Failure::Unreachable);
    }

    /// A pass reads at most `batches` batches, and stops at the first
    /// batch that is not full.
    #[tokio::test]
    async fn a_pass_is_bounded_and_stops_when_caught_up() {
        let ok = |_: Vec<u8>| async { Ok(()) };
        let mut p = Pipeline::start(batches(100), ok, 0, bounds(3, 2, 2), &workers(2));
        assert_eq!(drain(&mut p).await.len(), 3);
        let mut p = Pipeline::start(batches(2), ok, 0, bounds(100, 2, 2), &workers(2));
        assert_eq!(drain(&mut p).await.len(), 2);
    }

    /// A read that fails after two batches: both are still delivered and
    /// said first, then the error.
    #[tokio::test]
    async fn a_read_error_comes_after_the_batches_before_it() {
        let mut source = batches(100);
        source.fail_at = 20;
        let ok = |_: Vec<u8>| async { Ok(()) };
        let mut p = Pipeline::start(source, ok, 0, bounds(100, 4, 2), &workers(2));
        for upto in [10, 20] {
            assert_eq!(p.next().await.unwrap().unwrap().batch.upto, upto);
        }
        assert!(matches!(p.next().await, Some(Err(LtsError::Task(_)))));
        assert!(p.next().await.is_none());
    }
}
