//! Background work gives way to ingest and queries: a thread that does it
//! (the index segment merger, the LTS sink's readers and encoders) runs at
//! a lower CPU priority, so it takes what ingest leaves when both compete
//! and all of the CPU when ingest is idle.

/// The niceness of background threads: about a third of the CPU share of a
/// normal thread when they compete (the CFQ and BFQ disk schedulers follow
/// it too). Not lower: a server busy with ingest must still leave them
/// enough to keep up eventually (an unprivileged thread cannot raise its
/// priority again once behind).
pub const BACKGROUND_NICE: libc::c_int = 5;

/// Lowers the calling thread (only it) to [`BACKGROUND_NICE`], unless it
/// already runs at that or lower; `what` names the thread in the warning
/// logged when the system refuses.
pub fn lower_this_thread(what: &str) {
    if niceness() >= BACKGROUND_NICE {
        return;
    }
    // SAFETY: setpriority reads no memory of ours. On Linux, PRIO_PROCESS
    // with 0 names the calling thread only.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the priority of the {what}");
    }
}

/// The calling thread's niceness (-20..=19; the call cannot fail for the
/// calling thread).
pub fn niceness() -> libc::c_int {
    // SAFETY: getpriority reads no memory of ours; PRIO_PROCESS with 0 is
    // the calling thread.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_calling_thread_is_lowered() {
        let before = niceness();
        let lowered = std::thread::spawn(|| {
            lower_this_thread("test thread");
            niceness()
        })
        .join()
        .unwrap();
        // Never raised: a thread already lower (tests run under `nice`) stays.
        assert_eq!(lowered, BACKGROUND_NICE.max(before));
        assert_eq!(niceness(), before, "the other threads keep theirs");
    }
}
