//! Self-audit of refused credentials, rate-limited per source address: the
//! first refusal from an address is recorded in full, the others of the
//! following window (`auth.refusal_audit_window`, a minute) only counted,
//! and one trace then says how many there were. So a flood of bad
//! credentials cannot fill the disk with traces, and nothing goes
//! unrecorded.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use std::sync::Mutex;

use crate::audit::AuditEvent;
use crate::auth::Origin;

/// Addresses tracked at once; refusals from further addresses are recorded
/// in full (the tracked ones are the flood's).
const MAX_ADDRESSES: usize = 16_384;
/// Projects named per summary; more are only counted.
const MAX_PROJECTS: usize = 16;

/// The refusals of one address in its window, beyond the first.
#[derive(Debug)]
struct Window {
    opened: Instant,
    opened_ms: i64,
    /// Where the summary goes: the project of the first refusal.
    project: String,
    origin: Origin,
    counted: u64,
    projects: HashSet<String>,
}

/// The summary of one address's window: refusals counted, not recorded.
#[derive(Debug)]
pub struct Summary {
    window: Window,
    closed_ms: i64,
}

impl Summary {
    /// The `authenticate` trace (401) saying how many refusals there were.
    pub fn event(&self) -> AuditEvent {
        let w = &self.window;
        let mut e = AuditEvent::failed_authentication(&w.project, &w.origin, None, None, "");
        e.message = Some(format!(
            "{} more refused credential(s) from {} between {} and {} ms since the epoch \
             (for {} project(s)); recorded as one trace: at most one refusal per address \
             and auth.refusal_audit_window is recorded in full",
            w.counted,
            w.origin.source_ip,
            w.opened_ms,
            self.closed_ms,
            w.projects.len().max(1),
        ));
        e
    }
}

#[derive(Debug)]
pub struct RefusalAudit {
    window: Duration,
    windows: Mutex<HashMap<String, Window>>,
}

impl RefusalAudit {
    pub fn new(window: Duration) -> RefusalAudit {
        RefusalAudit {
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the refusal `event` is to be recorded in full (`true`), or
    /// only counted; and the summary of the address's previous window if
    /// it ended with refusals counted.
    pub fn admit(&self, event: &AuditEvent, now: Instant, now_ms: i64) -> (bool, Option<Summary>) {
        let address = &event.origin.source_ip;
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut ended = None;
        if let Some(w) = windows.get_mut(address) {
            if now.duration_since(w.opened) < self.window {
                w.counted += 1;
                if w.projects.len() < MAX_PROJECTS {
                    w.projects.insert(event.project_id.clone());
                }
                return (false, None);
            }
            ended = windows.remove(address).and_then(|w| summary(w, now_ms));
        }
        if windows.len() < MAX_ADDRESSES {
            windows.insert(
                address.clone(),
                Window {
                    opened: now,
                    opened_ms: now_ms,
                    project: event.project_id.clone(),
                    origin: event.origin.clone(),
                    counted: 0,
                    projects: HashSet::new(),
                },
            );
        }
        (true, ended)
    }

    /// Closes the windows that have ended; the summaries of those with
    /// refusals counted.
    pub fn ended(&self, now: Instant, now_ms: i64) -> Vec<Summary> {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let over: Vec<String> = windows
            .iter()
            .filter(|(_, w)| now.duration_since(w.opened) >= self.window)
            .map(|(a, _)| a.clone())
            .collect();
        over.into_iter()
            .filter_map(|a| windows.remove(&a))
            .filter_map(|w| summary(w, now_ms))
            .collect()
    }

    /// How often [`RefusalAudit::ended`] should run: a summary is written
    /// at most a fifth of a window late.
    pub fn sweep_interval(&self) -> Duration {
        (self.window / 5).max(Duration::from_millis(100))
    }
}

fn summary(window: Window, closed_ms: i64) -> Option<Summary> {
    (window.counted > 0).then_some(Summary { window, closed_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(ip: &str, project: &str) -> AuditEvent {
        let origin = Origin {
            source_ip: ip.into(),
            user_agent: None,
            console: false,
        };
        AuditEvent::failed_authentication(project, &origin, None, None, "bad signature")
    }

    #[test]
    fn one_in_full_per_address_and_window_then_a_count() {
        let r = RefusalAudit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(r.admit(&refusal("10.0.0.1", "p1"), at(0), 0).0);
        for i in 0..299 {
            let (full, ended) = r.admit(
                &refusal("10.0.0.1", if i % 2 == 0 { "p1" } else { "p2" }),
                at(1),
                1000,
            );
            assert!(!full && ended.is_none());
        }
        // Another address has its own window.
        assert!(r.admit(&refusal("10.0.0.2", "p1"), at(1), 1000).0);
        assert!(r.ended(at(59), 59_000).is_empty());
        let ended = r.ended(at(60), 60_000);
        assert_eq!(ended.len(), 1, "10.0.0.2 counted nothing");
        let e = ended[0].event();
        assert_eq!(e.project_id, "p1");
        assert_eq!(e.code, 401);
        let msg = e.message.unwrap();
        assert!(
            msg.starts_with("299 more refused credential(s) from 10.0.0.1"),
            "{msg}"
        );
        assert!(msg.contains("for 2 project(s)"), "{msg}");
        // A new window starts with a refusal in full.
        assert!(r.admit(&refusal("10.0.0.1", "p1"), at(61), 61_000).0);
    }

    #[test]
    fn a_refusal_after_the_window_brings_its_summary() {
        let r = RefusalAudit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        r.admit(&refusal("::1", "p"), t0, 0);
        r.admit(&refusal("::1", "p"), t0, 0);
        let (full, ended) = r.admit(&refusal("::1", "p"), t0 + Duration::from_secs(60), 60_000);
        assert!(full);
        assert!(ended
            .unwrap()
            .event()
            .message
            .unwrap()
            .starts_with("1 more"));
    }
}
