//! Failed-login throttle: after `max_failures` failures within `window`, a
//! key is locked out until `window` has passed since its last failure.
//! In memory only: a restart forgets it, which is acceptable for slowing
//! down password guessing (Argon2id makes each guess costly anyway).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Longer windows are cut to this, so instant arithmetic cannot overflow.
const MAX_WINDOW: Duration = Duration::from_secs(365 * 24 * 3600);

/// Keys tracked at most; beyond this the entry closest to being forgotten
/// anyway is evicted, so a flood of distinct keys cannot exhaust memory.
const DEFAULT_CAPACITY: usize = 65_536;

/// Throttles by arbitrary keys; callers use `user:<domain>/<name>` and
/// `ip:<addr>` and check both. Time is passed in, so it is testable.
#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures since `window_start`.
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
}

impl Entry {
    /// When this entry stops mattering: its lockout or its window ends.
    fn forgotten_at(&self, window: Duration) -> Instant {
        self.locked_until.unwrap_or(self.window_start + window)
    }
}

impl LoginThrottle {
    /// `max_failures` below 1 is treated as 1; `window` is capped at a year.
    pub fn new(max_failures: u32, window: Duration) -> LoginThrottle {
        LoginThrottle::with_capacity(max_failures, window, DEFAULT_CAPACITY)
    }

    /// Like [`LoginThrottle::new`], tracking at most `capacity` keys.
    pub fn with_capacity(max_failures: u32, window: Duration, capacity: usize) -> LoginThrottle {
        LoginThrottle {
            max_failures: max_failures.max(1),
            window: window.min(MAX_WINDOW),
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` while `key` is locked out.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        match self.entries.lock().get(key).and_then(|e| e.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failed login; the `max_failures`-th failure within the
    /// window locks the key out for `window`. A failure during a lockout
    /// (callers normally refuse before trying) extends it. Returns whether
    /// this failure locked the key.
    pub fn record_failure(&self, key: &str, now: Instant) -> bool {
        let mut entries = self.entries.lock();
        if !entries.contains_key(key) && entries.len() >= self.capacity {
            self.evict(&mut entries, now);
        }
        let entry = entries.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            window_start: now,
            locked_until: None,
        });
        // A window (or lockout) that has passed starts over.
        if now >= entry.forgotten_at(self.window) {
            *entry = Entry {
                failures: 0,
                window_start: now,
                locked_until: None,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures >= self.max_failures {
            entry.locked_until = Some(now + self.window);
        }
        entry.failures == self.max_failures
    }

    /// How long a lockout lasts.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// A successful login clears the key's failures.
    pub fn record_success(&self, key: &str) {
        self.entries.lock().remove(key);
    }

    /// Forgets every key starting with `prefix` (an unlocked user's
    /// per-address counts).
    pub fn forget_prefix(&self, prefix: &str) {
        self.entries.lock().retain(|k, _| !k.starts_with(prefix));
    }

    /// Drops entries that no longer matter; when all still do, the one that
    /// would be forgotten first.
    fn evict(&self, entries: &mut HashMap<String, Entry>, now: Instant) {
        entries.retain(|_, e| e.forgotten_at(self.window) > now);
        if entries.len() >= self.capacity {
            let victim = entries
                .iter()
                .min_by_key(|(_, e)| e.forgotten_at(self.window))
                .map(|(k, _)| k.clone());
            if let Some(victim) = victim {
                entries.remove(&victim);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn locks_after_max_failures_until_the_window_passes() {
        let t = LoginThrottle::new(3, MIN);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        t.record_failure("user:d/alice", at(0));
        t.record_failure("user:d/alice", at(10));
        assert_eq!(t.check("user:d/alice", at(10)), Ok(()));
        t.record_failure("user:d/alice", at(20));
        assert_eq!(t.check("user:d/alice", at(20)), Err(MIN));
        assert_eq!(
            t.check("user:d/alice", at(50)),
            Err(Duration::from_secs(30))
        );
        assert_eq!(
            t.check("ip:10.0.0.1", at(50)),
            Ok(()),
            "other keys are free"
        );
        assert_eq!(t.check("user:d/alice", at(80)), Ok(()));
        // After the lockout, counting starts over.
        t.record_failure("user:d/alice", at(80));
        assert_eq!(t.check("user:d/alice", at(80)), Ok(()));
    }

    #[test]
    fn failures_spread_over_more_than_a_window_do_not_lock() {
        let t = LoginThrottle::new(3, MIN);
        let t0 = Instant::now();
        for s in [0, 30, 61, 90] {
            t.record_failure("k", t0 + Duration::from_secs(s));
        }
        // 0 and 30 are in one window; 61 starts a new one with 90.
        assert_eq!(t.check("k", t0 + Duration::from_secs(90)), Ok(()));
        t.record_failure("k", t0 + Duration::from_secs(100));
        assert!(t.check("k", t0 + Duration::from_secs(100)).is_err());
    }

    #[test]
    fn success_clears_failures() {
        let t = LoginThrottle::new(2, MIN);
        let t0 = Instant::now();
        t.record_failure("k", t0);
        t.record_success("k");
        t.record_failure("k", t0);
        assert_eq!(t.check("k", t0), Ok(()));
        t.record_failure("k", t0);
        assert!(t.check("k", t0).is_err());
    }

    #[test]
    fn huge_windows_do_not_overflow() {
        let t = LoginThrottle::new(1, Duration::MAX);
        let t0 = Instant::now();
        t.record_failure("k", t0);
        assert_eq!(t.check("k", t0), Err(MAX_WINDOW));
    }

    #[test]
    fn zero_max_failures_means_one() {
        let t = LoginThrottle::new(0, MIN);
        let t0 = Instant::now();
        assert_eq!(t.check("k", t0), Ok(()));
        t.record_failure("k", t0);
        assert!(t.check("k", t0).is_err());
    }

    #[test]
    fn memory_is_bounded_and_evicts_what_is_forgotten_first() {
        let t = LoginThrottle::with_capacity(2, MIN, 3);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        t.record_failure("old", at(0)); // forgotten at 60
        t.record_failure("locked", at(10));
        t.record_failure("locked", at(10)); // locked until 70
        t.record_failure("new", at(30)); // forgotten at 90
        t.record_failure("newest", at(59));
        {
            let entries = t.entries.lock();
            assert_eq!(entries.len(), 3);
            assert!(!entries.contains_key("old"));
        }
        assert!(t.check("locked", at(59)).is_err(), "the lockout survived");
        // Past every window, all stale entries make room at once.
        for i in 0..3 {
            t.record_failure(&format!("later{i}"), at(200));
        }
        let entries = t.entries.lock();
        assert_eq!(entries.len(), 3);
        assert!((0..3).all(|i| entries.contains_key(&format!("later{i}"))));
    }
}
