//! Console sessions: a table in memory, keyed by a random id that only the
//! browser's cookie holds. Sessions end at restart (users sign in again),
//! after `auth.console_idle_timeout` without a request, and at sign-out.
//! Each session has its own CSRF token for the forms it is shown.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Principal;

/// More sessions than this (only signed-in users create them) sweep the
/// oldest out, so that the table stays bounded.
const MAX_SESSIONS: usize = 10_000;

/// A project the user may choose: (id, name).
pub type ProjectChoice = (String, String);

/// What a request sees of its session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The signed-in user; its `project_scope` is the chosen project.
    pub principal: Principal,
    pub csrf_token: String,
    /// The projects the user holds a role on.
    pub projects: Vec<ProjectChoice>,
}

impl Session {
    pub fn project(&self) -> Option<&str> {
        self.principal.project_scope.as_deref()
    }

    pub fn project_name(&self) -> &str {
        let id = self.project().unwrap_or_default();
        self.projects
            .iter()
            .find(|(p, _)| p == id)
            .map_or(id, |(_, name)| name)
    }
}

struct Entry {
    session: Session,
    last_seen: Instant,
}

pub struct Sessions {
    idle: Duration,
    table: Mutex<HashMap<String, Entry>>,
}

/// 256 random bits, hex.
pub fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves a consistent map.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session; answers its id (the cookie's value).
    pub fn create(&self, principal: Principal, projects: Vec<ProjectChoice>) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut table = self.lock();
        table.retain(|_, e| now.duration_since(e.last_seen) < self.idle);
        if table.len() >= MAX_SESSIONS {
            let oldest = table
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                table.remove(&k);
            }
        }
        let session = Session {
            principal,
            csrf_token: random_token(),
            projects,
        };
        table.insert(
            id.clone(),
            Entry {
                session,
                last_seen: now,
            },
        );
        id
    }

    /// The live session `id`, which this use keeps alive; an idle one ends.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut table = self.lock();
        let entry = table.get_mut(id)?;
        if now.duration_since(entry.last_seen) >= self.idle {
            table.remove(id);
            return None;
        }
        entry.last_seen = now;
        Some(entry.session.clone())
    }

    /// Chooses the project of session `id` (one of its `projects`).
    pub fn choose_project(&self, id: &str, project: &str) -> bool {
        let mut table = self.lock();
        let Some(entry) = table.get_mut(id) else {
            return false;
        };
        let s = &mut entry.session;
        if !s.projects.iter().any(|(p, _)| p == project) {
            return false;
        }
        s.principal.project_scope = Some(project.to_string());
        true
    }

    /// Ends session `id` (sign-out).
    pub fn end(&self, id: &str) -> Option<Session> {
        self.lock().remove(id).map(|e| e.session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Via;

    fn principal() -> Principal {
        Principal {
            user_id: "u".into(),
            user_name: "alice".into(),
            domain_id: "d".into(),
            domain_name: "acme".into(),
            access_key_id: None,
            project_scope: None,
            via: Via::Console,
        }
    }

    #[test]
    fn idle_sessions_end() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let id = sessions.create(principal(), vec![("p1".into(), "one".into())]);
        assert!(sessions.get(&id).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(sessions.get(&id).is_none());
        assert!(sessions.get(&id).is_none(), "an expired session stays gone");
    }

    #[test]
    fn only_own_projects_can_be_chosen() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let id = sessions.create(principal(), vec![("p1".into(), "one".into())]);
        assert!(!sessions.choose_project(&id, "p2"));
        assert!(sessions.choose_project(&id, "p1"));
        let s = sessions.get(&id).unwrap();
        assert_eq!((s.project(), s.project_name()), (Some("p1"), "one"));
        assert!(sessions.end(&id).is_some());
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same_secret(&a, &a.clone()));
        assert!(!same_secret(&a, &b));
        assert!(!same_secret(&a, &a[..63]));
    }
}
