//! CPU priorities of ctsd's threads, in three tiers ([`Tier`]), so that on
//! a saturated machine interactive work gets a core first:
//!
//! * interactive, at the process's own niceness: queries and the other API
//!   calls, the async workers, the journal writer (it only writes, syncs
//!   and acknowledges what the ingest threads prepared);
//! * ingest, [`ingest_nice`]: parsing, checking and compressing report
//!   batches ([`Pool`]), flushing memtables, urgent merges, the transfer
//!   (it must keep pace with ingest);
//! * background, [`BACKGROUND_NICE`] below ingest: the index segment
//!   merger, the LTS sink's readers and encoders.
//!
//! Niceness only weighs threads that compete for a core: with no queries,
//! ingest has all the CPU; with no ingest, background work has it.
//!
//! Niceness sets a tier's share of the CPU, not how soon a thread that
//! wakes gets a core. For that each tier also asks for a time slice
//! (`sched_setattr`'s `sched_runtime`, heeded by Linux 6.12 and later, the
//! EEVDF scheduler; older kernels ignore it): a thread that wakes with a
//! shorter slice than the one running preempts it at once, and is picked
//! sooner (once it is owed CPU, as a thread that slept is). Interactive
//! threads ask for [`INTERACTIVE_SLICE`], the others for
//! [`THROUGHPUT_SLICE`]; with the default slice of every thread alike
//! (0.7–0.75 ms × (1 + log₂ cores, up to 8)), a query that woke waited for
//! an ingest thread's slice to end. Threads of no tier (Tokio's for small
//! maintenance jobs) keep the interactive slice they inherit.

use std::sync::atomic::{AtomicI32, Ordering};

/// How much lower than ingest background threads run: about a third of
/// ingest's CPU share when they compete (the CFQ and BFQ disk schedulers
/// follow it too). Not lower: a server busy with ingest must still leave
/// them enough to keep up eventually (an unprivileged thread cannot raise
/// its priority again once behind).
pub const BACKGROUND_NICE: libc::c_int = 5;

/// The highest niceness ingest may be given: background work must still
/// fit below it (19 is the lowest priority).
pub const MAX_INGEST_NICE: libc::c_int = 19 - BACKGROUND_NICE;

static INGEST_NICE: AtomicI32 = AtomicI32::new(0);

/// Sets the niceness of ingest threads for the process (clamped to
/// `0..=MAX_INGEST_NICE`); ctsd does so once at start, before any thread
/// of the tiers starts. Until then it is 0: ingest at the process's
/// priority, background work [`BACKGROUND_NICE`] below it.
pub fn set_ingest_nice(nice: libc::c_int) {
    INGEST_NICE.store(nice.clamp(0, MAX_INGEST_NICE), Ordering::Relaxed);
}

/// The niceness of ingest threads.
pub fn ingest_nice() -> libc::c_int {
    INGEST_NICE.load(Ordering::Relaxed)
}

/// The niceness of background threads.
pub fn background_nice() -> libc::c_int {
    ingest_nice() + BACKGROUND_NICE
}

/// Which of the three tiers a thread is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Interactive,
    Ingest,
    Background,
}

/// The time slice interactive threads ask for: a query's thread that wakes
/// takes a core from an ingest thread at once.
pub const INTERACTIVE_SLICE: std::time::Duration = std::time::Duration::from_micros(300);

/// The time slice ingest and background threads ask for: they run for long
/// stretches and yield to interactive threads anyway; a longer slice
/// switches them less among themselves.
pub const THROUGHPUT_SLICE: std::time::Duration = std::time::Duration::from_millis(3);

impl Tier {
    /// The tier's niceness; `None`: the process's own.
    pub fn nice(self) -> Option<libc::c_int> {
        match self {
            Tier::Interactive => None,
            Tier::Ingest => Some(ingest_nice()),
            Tier::Background => Some(background_nice()),
        }
    }

    pub fn slice(self) -> std::time::Duration {
        match self {
            Tier::Interactive => INTERACTIVE_SLICE,
            Tier::Ingest | Tier::Background => THROUGHPUT_SLICE,
        }
    }
}

/// Puts the calling thread (only it; threads it starts later inherit it)
/// in `tier`: lowers its niceness to the tier's (never raises it: an
/// unprivileged thread could not lower it again) and sets its time slice.
/// `what` names the thread in the warning logged when the system refuses.
pub fn enter(tier: Tier, what: &str) {
    let nice = niceness().max(tier.nice().unwrap_or(libc::c_int::MIN));
    if let Err(e) = set_nice_and_slice(nice, tier.slice()) {
        tracing::debug!(error = %e, "could not set the time slice of the {what}");
    }
    // A kernel before 5.3 (no SCHED_FLAG_KEEP_POLICY) refuses the call, and
    // under a policy without slices (SCHED_IDLE; real-time by `chrt`) it
    // sets nothing: the niceness alone, as before.
    // SAFETY: setpriority reads no memory of ours. On Linux, PRIO_PROCESS
    // with 0 names the calling thread only.
    if nice != niceness() && unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the priority of the {what}");
    }
}

/// Whether this kernel heeds the slices threads ask for (Linux 6.12 and
/// later) and shows them (`/proc/<tid>/sched`, with `CONFIG_SCHED_DEBUG`):
/// whether a thread's slice can be checked.
pub fn slices_shown() -> bool {
    if !std::path::Path::new("/proc/thread-self/sched").exists() {
        return false;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (6, 12)
}

/// The time slice in a thread's `/proc/<tid>/sched` text, if it shows one.
pub fn slice_in(sched: &str) -> Option<std::time::Duration> {
    let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
    let ns = line.rsplit(':').next()?.trim().parse().ok()?;
    Some(std::time::Duration::from_nanos(ns))
}

/// `sched_setattr(2)` of the calling thread: its policy kept, its niceness
/// and time slice set.
fn set_nice_and_slice(nice: libc::c_int, slice: std::time::Duration) -> std::io::Result<()> {
    /// `struct sched_attr` of `sched_setattr(2)`, its first version.
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }
    const SCHED_FLAG_KEEP_POLICY: u64 = 0x08;
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: SCHED_FLAG_KEEP_POLICY,
        nice,
        priority: 0,
        runtime: slice.as_nanos() as u64,
        deadline: 0,
        period: 0,
    };
    // SAFETY: the kernel reads `attr.size` bytes of `attr`, which lives
    // across the call; pid 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The calling thread's niceness (-20..=19; the call cannot fail for the
/// calling thread).
pub fn niceness() -> libc::c_int {
    // SAFETY: getpriority reads no memory of ours; PRIO_PROCESS with 0 is
    // the calling thread.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// Threads for blocking work in a [`Tier`]: the blocking pool of a
/// Tokio runtime of its own, whose threads enter the tier as they start.
/// Like `tokio::task::spawn_blocking`, threads are started on demand (a
/// job that waits, e.g. for a journal fsync, does not hold up the others;
/// up to a bound with [`Pool::bounded`]) and end after a while idle. Not
/// Tokio's shared blocking threads: a thread's priority cannot be raised
/// again once lowered, and queries run there.
pub struct Pool {
    // `Some` until dropped: a runtime cannot be dropped (it would wait for
    // its threads) where blocking is not allowed, so `Drop` lets it go.
    runtime: Option<tokio::runtime::Runtime>,
    /// A [`Pool::for_rounds`]: its jobs end with [`set_after_job`]'s hook.
    rounds: bool,
}

/// How long a thread of a [`Pool::for_rounds`] waits for its next job
/// before it ends: longer than work that comes in rounds (the transfer's
/// passes, a minute apart) leaves it idle, so that the next round runs
/// [`set_after_job`]'s hook on the threads that hold the last round's
/// memory. Other pools keep Tokio's 10 s, so that threads a burst of
/// ingest started do not linger.
const ROUNDS_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(600);

static AFTER_JOB: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what a [`Pool::for_rounds`]'s thread runs after each of its jobs (once, at start;
/// later calls are ignored). ctsd has its allocator collect the thread's
/// heap: mimalloc gives back memory another thread freed only when the
/// owning thread runs its heap again, and a pool's thread allocates big
/// buffers that others free (a trace file's gzip, uploaded from the async
/// workers), then idles. The transfer's threads held ~350 MiB that way
/// between passes (a soak's RSS 640 against 300 MiB).
pub fn set_after_job(hook: fn()) {
    let _ = AFTER_JOB.set(hook);
}

impl Pool {
    /// A pool whose threads are named `name` and run in `tier`.
    pub fn start(name: &str, tier: Tier) -> std::io::Result<Pool> {
        Pool::build(name, tier, None, false)
    }

    /// The same with at most `threads` threads (at least one): jobs beyond
    /// them wait, so the pool's CPU is bounded.
    pub fn bounded(name: &str, tier: Tier, threads: usize) -> std::io::Result<Pool> {
        Pool::build(name, tier, Some(threads.max(1)), false)
    }

    /// [`Pool::start`] for work that comes in rounds with idle time between
    /// them: its threads wait [`ROUNDS_KEEP_ALIVE`] for the next, and run
    /// [`set_after_job`]'s hook after each job (threads busy all the time,
    /// as ingest's, run their allocator's heap anyway).
    pub fn for_rounds(name: &str, tier: Tier) -> std::io::Result<Pool> {
        Pool::build(name, tier, None, true)
    }

    fn build(
        name: &str,
        tier: Tier,
        threads: Option<usize>,
        rounds: bool,
    ) -> std::io::Result<Pool> {
        let what = format!("{name} thread");
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder
            .thread_name(name)
            .on_thread_start(move || enter(tier, &what));
        if let Some(threads) = threads {
            builder.max_blocking_threads(threads);
        }
        if rounds {
            builder.thread_keep_alive(ROUNDS_KEEP_ALIVE);
        }
        let runtime = builder.build()?;
        Ok(Pool {
            runtime: Some(runtime),
            rounds,
        })
    }

    /// Runs `f` on one of the pool's threads.
    pub fn spawn_blocking<T, F>(&self, f: F) -> tokio::task::JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let after_job = self.rounds.then(|| AFTER_JOB.get().copied()).flatten();
        self.runtime
            .as_ref()
            .expect("a pool's runtime lives until it is dropped")
            .spawn_blocking(move || {
                let out = f();
                if let Some(hook) = after_job {
                    hook();
                }
                out
            })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Jobs running finish on their own threads; nothing waits for them.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's time slice, from the scheduler's own account
    /// (`None` before Linux 6.12, whose scheduler has no slice to ask for,
    /// or on a kernel that does not show it).
    fn slice() -> Option<std::time::Duration> {
        slice_in(&std::fs::read_to_string("/proc/thread-self/sched").ok()?)
    }

    /// The tier's slice, where the kernel heeds it.
    fn assert_slice(expected: std::time::Duration) {
        if slices_shown() {
            assert_eq!(slice(), Some(expected));
        }
    }

    #[test]
    fn entering_a_tier_sets_the_calling_threads_niceness_and_slice_only() {
        let (before, before_slice) = (niceness(), slice());
        let lowered = std::thread::spawn(|| {
            enter(Tier::Background, "test thread");
            assert_slice(THROUGHPUT_SLICE);
            niceness()
        })
        .join()
        .unwrap();
        // Never raised: a thread already lower (tests run under `nice`) stays.
        assert!(lowered >= BACKGROUND_NICE.max(before), "niceness {lowered}");
        assert_eq!(niceness(), before, "the other threads keep theirs");
        assert_eq!(slice(), before_slice);
    }

    /// An interactive thread keeps its niceness and asks for the short
    /// slice, and so do the threads it starts (Tokio's, in ctsd).
    #[test]
    fn threads_started_by_an_interactive_thread_are_interactive() {
        let before = niceness();
        std::thread::spawn(move || {
            enter(Tier::Interactive, "test thread");
            assert_eq!(niceness(), before);
            assert_slice(INTERACTIVE_SLICE);
            std::thread::spawn(|| assert_slice(INTERACTIVE_SLICE))
                .join()
                .unwrap();
            // A thread once lowered cannot come back up: only its slice
            // changes.
            enter(Tier::Background, "test thread");
            enter(Tier::Interactive, "test thread");
            assert!(niceness() >= BACKGROUND_NICE.max(before));
            assert_slice(INTERACTIVE_SLICE);
        })
        .join()
        .unwrap();
    }

    /// The pool's jobs run on its named threads in its tier, also several
    /// at once (one waiting does not hold up the next); a job that panics
    /// is an error and the pool goes on.
    #[tokio::test]
    async fn pool_jobs_run_on_lowered_threads() {
        let before = niceness();
        let pool = Pool::start("test-pool", Tier::Background).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let waiting = pool.spawn_blocking(move || rx.recv());
        let (name, nice, slice) = pool
            .spawn_blocking(|| {
                let name = std::thread::current().name().map(String::from);
                (name, niceness(), slice())
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("test-pool"));
        assert!(nice >= BACKGROUND_NICE.max(before), "niceness {nice}");
        if slices_shown() {
            assert_eq!(slice, Some(THROUGHPUT_SLICE));
        }
        tx.send(()).unwrap();
        assert!(waiting.await.unwrap().is_ok());
        assert!(pool.spawn_blocking(|| panic!("a bad job")).await.is_err());
        assert_eq!(pool.spawn_blocking(|| 7).await.unwrap(), 7);
        assert_eq!(niceness(), before, "the caller keeps its own");
    }

    /// The hook set at start runs on a pool's thread after each job (ctsd
    /// has its allocator collect that thread's heap there).
    #[tokio::test]
    async fn the_after_job_hook_runs_on_the_pools_thread_after_each_job() {
        use std::sync::atomic::AtomicUsize;
        static RAN: AtomicUsize = AtomicUsize::new(0);
        thread_local!(static JOBS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });
        fn hook() {
            // On the thread of the job: it has counted the job already.
            if JOBS.with(|j| j.get()) > 0 {
                RAN.fetch_add(1, Ordering::SeqCst);
            }
        }
        set_after_job(hook);
        let pool = Pool::for_rounds("test-hook", Tier::Interactive).unwrap();
        for _ in 0..3 {
            pool.spawn_blocking(|| JOBS.with(|j| j.set(j.get() + 1)))
                .await
                .unwrap();
        }
        assert_eq!(RAN.load(Ordering::SeqCst), 3);
    }

    /// A bounded pool runs no more jobs at once than it has threads.
    #[tokio::test]
    async fn a_bounded_pool_runs_at_most_its_threads_at_once() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        let pool = Pool::bounded("test-bounded", Tier::Interactive, 2).unwrap();
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let jobs: Vec<_> = (0..8)
            .map(|_| {
                let (running, most) = (Arc::clone(&running), Arc::clone(&most));
                pool.spawn_blocking(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for j in jobs {
            j.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn ingest_nice_is_clamped_and_background_stays_below() {
        set_ingest_nice(99);
        assert_eq!(ingest_nice(), MAX_INGEST_NICE);
        assert_eq!(background_nice(), 19);
        set_ingest_nice(0);
        assert_eq!(background_nice(), BACKGROUND_NICE);
    }
}
