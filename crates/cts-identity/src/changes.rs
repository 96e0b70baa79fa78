//! Keeping the caches of every node true to the database.
//!
//! Every identity write that can make a cached answer wrong sets the `meta`
//! row `changes` to a new random value in its own transaction. Each store
//! reads that row at most once per [`POLL`] before answering from a cache,
//! and empties its caches when the value moved: a change made through
//! another node (or another process, like `ctsd unlock`) is seen within
//! [`POLL`]. Changes made through this store empty its caches at once.
//!
//! A fill must not put back an answer read before a change that emptied
//! the caches meanwhile: fills note the [`Changes::generation`] before
//! reading and insert only if it has not moved (checked under the cache's
//! lock, which emptying also takes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cts_db::Sql;
use parking_lot::Mutex;

use crate::{rules, IdentityError, IdentityStore};

/// How stale a node's caches may be: a key deleted or a user disabled
/// through one node stops working on every node within this.
pub(crate) const POLL: Duration = Duration::from_secs(1);

const READ: &str = "SELECT value FROM meta WHERE key = 'changes'";

#[derive(Default)]
pub(crate) struct Changes {
    /// Moves whenever the caches are emptied.
    generation: AtomicU64,
    /// When `changes` was last read, and its value then.
    seen: Mutex<Option<(Instant, String)>>,
}

impl Changes {
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

/// Creates the row (databases made before it existed lack it).
pub(crate) fn ensure_row(tx: &dyn Sql) -> Result<(), IdentityError> {
    tx.exec(
        "INSERT INTO meta (key, value) VALUES ('changes', $1) ON CONFLICT DO NOTHING",
        &[rules::new_id().as_str().into()],
    )?;
    Ok(())
}

/// Records a change, in the transaction that makes it.
pub(crate) fn record(tx: &dyn Sql) -> Result<(), IdentityError> {
    tx.exec(
        "UPDATE meta SET value = $1 WHERE key = 'changes'",
        &[rules::new_id().as_str().into()],
    )?;
    Ok(())
}

impl IdentityStore {
    /// Empties the caches when another node or process changed identities
    /// since the last look (at most one look per [`POLL`]).
    pub(crate) fn catch_up(&self) -> Result<(), IdentityError> {
        let due = |seen: &Option<(Instant, String)>| {
            seen.as_ref().is_none_or(|(at, _)| at.elapsed() >= POLL)
        };
        // Under `from_memory` a look in progress is not waited for: its
        // holder reads the database.
        let seen = match self.changes.seen.try_lock() {
            Some(seen) => seen,
            None => {
                crate::store::memory_only_refuses()?;
                self.changes.seen.lock()
            }
        };
        if !due(&seen) {
            return Ok(());
        }
        drop(seen);
        crate::store::memory_only_refuses()?;
        // One look at a time; the others wait for its answer rather than
        // answering from caches that may be stale.
        let mut seen = self.changes.seen.lock();
        if !due(&seen) {
            return Ok(());
        }
        let value = self.read(|c| {
            c.query_opt(READ, &[])?
                .map(|row| Ok(row[0].text()?.to_owned()))
                .transpose()
        })?;
        let value = value.unwrap_or_default();
        if seen.as_ref().is_some_and(|(_, v)| *v != value) {
            self.clear_caches();
        }
        *seen = Some((Instant::now(), value));
        Ok(())
    }

    /// Drops every cached answer; fills that read before this do not put
    /// theirs back.
    pub(crate) fn clear_caches(&self) {
        self.changes.generation.fetch_add(1, Ordering::SeqCst);
        // Dropped after each lock is let go: up to tens of thousands of
        // entries, and an async worker may wait for the lock (`from_memory`).
        let tokens = self.tokens.lock().clear();
        let keys = self.keys.lock().clear();
        let reads = self.reads.lock().clear();
        drop((tokens, keys, reads));
    }
}

#[cfg(test)]
mod tests {
    use std::thread::sleep;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::testdb::{pg_database, pg_store, random_key};
    use crate::testutil::*;
    use crate::{Actor, Role, TokenScope};

    const HOUR: Duration = Duration::from_secs(3600);

    /// Two nodes on one database: what one creates works on the other at
    /// once; what one deletes or revokes, the other refuses within
    /// [`POLL`] even though it had the answers cached.
    #[test]
    fn two_nodes_share_identities_and_changes_reach_the_other_within_the_poll() {
        let (url, key) = (pg_database(), random_key());
        let (a, b) = (pg_store(&url, &key), pg_store(&url, &key));
        let (domain, project) = domain_and_project(&a, "d1");
        let alice = user(&a, &domain.id, "alice");
        let actor = Actor::User(alice.id.clone());
        a.assign_role(&project.id, &actor, Role::CtsAdmin).unwrap();
        let (ak, secret) = a.create_access_key(&alice.id, "ci").unwrap();
        let now = cts_clock::now_ms();
        let scope = TokenScope::Project(project.id.clone());
        let (token, _) = a
            .issue_token(&alice.id, &scope, &["password"], HOUR, now)
            .unwrap();

        // Created on A, valid on B (and now cached there).
        assert_eq!(b.access_key_secret(&ak.access).unwrap().secret, secret);
        assert_eq!(b.validate_token(&token, now).unwrap().user_id, alice.id);
        assert!(b
            .effective_roles(&alice.id, &project.id)
            .unwrap()
            .contains(Role::CtsAdmin));
        assert!(b.get_user(&alice.id).unwrap().enabled);

        a.delete_access_key(&ak.access).unwrap();
        a.revoke_token(&token).unwrap();
        a.unassign_role(&project.id, &actor, Role::CtsAdmin)
            .unwrap();
        set_user_enabled(&a, &alice.id, false);
        let changed = Instant::now();
        loop {
            let refused = matches!(
                b.access_key_secret(&ak.access),
                Err(IdentityError::UnknownAccessKey)
            ) && matches!(
                b.validate_token(&token, now),
                Err(IdentityError::TokenRevoked)
            ) && b
                .effective_roles(&alice.id, &project.id)
                .unwrap()
                .is_empty()
                && !b.get_user(&alice.id).unwrap().enabled;
            if refused {
                break;
            }
            assert!(
                changed.elapsed() < POLL + Duration::from_millis(500),
                "node B still answers from stale caches after {:?}",
                changed.elapsed()
            );
            sleep(Duration::from_millis(50));
        }
    }
}
