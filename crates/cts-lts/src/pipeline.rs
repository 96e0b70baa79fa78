//! Pipelined delivery of one tracker's batches: the next batch is read and
//! encoded (on a blocking thread) while earlier ones are in flight, up to
//! `in_flight` requests at once, and their outcomes come back in journal
//! order whatever order the receiver answers in. The caller commits each
//! delivered batch's cursor as it comes and stops at the first failure, so
//! the cursor never passes a batch that was not acknowledged (at least
//! once; a later batch already delivered is sent again after the retry).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::batch::{Batch, Prepared};
use crate::sink::{Failure, SinkError};
use crate::LtsError;

/// A request in flight.
type Request = JoinHandle<Result<(), SinkError>>;

/// Batches in journal order; None: nothing to send (only the cursor
/// moves).
type Window = VecDeque<(Batch, Option<Request>)>;

/// A batch whose delivery ended.
#[derive(Debug)]
pub(crate) struct Done {
    pub batch: Batch,
    pub result: Result<(), SinkError>,
}

/// The window of one tracker's batches in flight. Dropping it stops the
/// reading and the requests still in flight (their batches are not
/// committed: they are sent again).
pub(crate) struct Pipeline {
    reads: mpsc::Receiver<Result<Prepared, LtsError>>,
    reader: JoinHandle<()>,
    sending: Window,
    in_flight: usize,
    send: Box<dyn Fn(Vec<u8>) -> Request + Send>,
    /// Reads go on.
    open: bool,
    /// A read failed: said once the batches before it are done.
    error: Option<LtsError>,
}

impl Pipeline {
    /// Reads batches with `read` (blocking) from `cursor` on, at most
    /// `batches` of them (fewer when one is not full), and delivers each
    /// body with `send`, at most `in_flight` at once. Call it on a Tokio
    /// runtime.
    pub fn start<R, S, F>(read: R, send: S, cursor: u64, batches: usize, in_flight: usize) -> Self
    where
        R: Fn(u64) -> Result<Prepared, LtsError> + Send + Sync + 'static,
        S: Fn(Vec<u8>) -> F + Send + 'static,
        F: Future<Output = Result<(), SinkError>> + Send + 'static,
    {
        let in_flight = in_flight.max(1);
        // Reads run one batch ahead of the window.
        let (tx, reads) = mpsc::channel(1);
        let reader = tokio::spawn(read_ahead(Arc::new(read), cursor, batches, tx));
        Pipeline {
            reads,
            reader,
            sending: VecDeque::new(),
            in_flight,
            send: Box::new(move |body| tokio::spawn(send(body))),
            open: true,
            error: None,
        }
    }

    /// The next batch whose delivery ended, in journal order; then the
    /// read error, if any; then None.
    pub async fn next(&mut self) -> Option<Result<Done, LtsError>> {
        loop {
            if self.sending.is_empty() && !self.open {
                return self.error.take().map(Err);
            }
            let can_read = self.open && self.sending.len() < self.in_flight;
            let step = tokio::select! {
                // Answers first: they free the window.
                biased;
                result = first(&mut self.sending), if !self.sending.is_empty() => Step::Sent(result),
                read = self.reads.recv(), if can_read => Step::Read(read),
            };
            match step {
                Step::Sent(result) => {
                    let (batch, _) = self.sending.pop_front()?;
                    return Some(Ok(Done { batch, result }));
                }
                Step::Read(Some(Ok(p))) => {
                    let sending = p.body.map(|body| (self.send)(body));
                    self.sending.push_back((p.batch, sending));
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
        for (_, sending) in &self.sending {
            if let Some(h) = sending {
                h.abort();
            }
        }
    }
}

enum Step {
    Sent(Result<(), SinkError>),
    Read(Option<Result<Prepared, LtsError>>),
}

/// The outcome of the oldest batch in flight.
async fn first(sending: &mut Window) -> Result<(), SinkError> {
    match sending.front_mut() {
        Some((_, Some(h))) => h.await.unwrap_or_else(|e| {
            Err(SinkError {
                failure: Failure::Unreachable,
                message: format!("the request task ended: {e}"),
            })
        }),
        _ => Ok(()),
    }
}

/// Reads batch after batch into `tx` until one is not full, `batches` were
/// read, a read fails or the pipeline is dropped.
async fn read_ahead<R>(
    read: Arc<R>,
    mut cursor: u64,
    batches: usize,
    tx: mpsc::Sender<Result<Prepared, LtsError>>,
) where
    R: Fn(u64) -> Result<Prepared, LtsError> + Send + Sync + 'static,
{
    for _ in 0..batches {
        let r = Arc::clone(&read);
        let got = tokio::task::spawn_blocking(move || r(cursor))
            .await
            .unwrap_or_else(|e| Err(LtsError::Task(e.to_string())));
        let go_on = match &got {
            Ok(p) => {
                cursor = p.batch.upto;
                p.batch.more
            }
            Err(_) => false,
        };
        if tx.send(got).await.is_err() || !go_on {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Batch `n` (1-based) covers the cursor up to `n * 10`; the first
    /// `full` batches are full.
    fn batches(full: u64) -> impl Fn(u64) -> Result<Prepared, LtsError> + Send + Sync {
        move |cursor| {
            let n = cursor / 10 + 1;
            Ok(Prepared {
                batch: Batch {
                    gone: 0,
                    unreadable: 0,
                    upto: n * 10,
                    count: 10,
                    oldest_ms: None,
                    more: n < full,
                },
                body: Some(vec![n as u8]),
            })
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

    /// Early batches answer last: several are in flight at once (never
    /// more than the window), and the outcomes still come in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outcomes_come_in_journal_order_with_several_in_flight() {
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, m) = (Arc::clone(&now), Arc::clone(&most));
        let send = move |body: Vec<u8>| {
            let (now, most) = (Arc::clone(&n), Arc::clone(&m));
            async move {
                let k = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(k, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(60 - 10 * u64::from(body[0] % 5))).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        };
        let mut p = Pipeline::start(batches(6), send, 0, 100, 3);
        let got = drain(&mut p).await;
        let want: Vec<_> = (1..=6).map(|n| (n * 10, true)).collect();
        assert_eq!(got, want);
        let most = most.load(Ordering::SeqCst);
        assert!((2..=3).contains(&most), "{most} in flight at most");
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
        let mut p = Pipeline::start(batches(4), send, 0, 100, 4);
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
        let mut p = Pipeline::start(batches(100), ok, 0, 3, 2);
        assert_eq!(drain(&mut p).await.len(), 3);
        let mut p = Pipeline::start(batches(2), ok, 0, 100, 2);
        assert_eq!(drain(&mut p).await.len(), 2);
    }

    /// A read that fails after two batches: both are still delivered and
    /// said first, then the error.
    #[tokio::test]
    async fn a_read_error_comes_after_the_batches_before_it() {
        let read = |cursor: u64| {
            if cursor >= 20 {
                return Err(LtsError::Task("the journal broke".into()));
            }
            batches(100)(cursor)
        };
        let mut p = Pipeline::start(read, |_: Vec<u8>| async { Ok(()) }, 0, 100, 4);
        for upto in [10, 20] {
            assert_eq!(p.next().await.unwrap().unwrap().batch.upto, upto);
        }
        assert!(matches!(p.next().await, Some(Err(LtsError::Task(_)))));
        assert!(p.next().await.is_none());
    }
}
