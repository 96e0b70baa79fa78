//! Answers of the identity reads every request makes (a key owner's user
//! and domain, roles on a project and on the domain), kept in memory.
//!
//! Emptied by every committed change, on every node within
//! [`crate::changes::POLL`] (see [`IdentityStore`]). Changes are rare next
//! to signed requests.

use std::collections::HashMap;
use std::hash::Hash;

use cts_db::Sql;

use crate::{Domain, IdentityError, IdentityStore, RoleSet, User};

/// Entries per map before it is emptied (a bound, not an LRU: identities
/// in use are far fewer).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub(crate) struct ReadCache {
    pub(crate) project_roles: HashMap<(String, String), RoleSet>,
    pub(crate) domain_roles: HashMap<String, RoleSet>,
    pub(crate) users: HashMap<String, User>,
    pub(crate) domains: HashMap<String, Domain>,
}

impl ReadCache {
    /// Empties the cache, returning what it held (to be dropped after
    /// the lock is let go).
    pub(crate) fn clear(&mut self) -> ReadCache {
        std::mem::take(self)
    }
}

impl IdentityStore {
    /// The cached answer for `key` in the map `pick` chooses, else `load`'s
    /// (then cached).
    pub(crate) fn cached<K, V>(
        &self,
        pick: fn(&mut ReadCache) -> &mut HashMap<K, V>,
        key: K,
        load: impl FnOnce(&dyn Sql) -> Result<V, IdentityError>,
    ) -> Result<V, IdentityError>
    where
        K: Hash + Eq,
        V: Clone,
    {
        self.catch_up()?;
        if let Some(v) = pick(&mut self.reads.lock()).get(&key) {
            return Ok(v.clone());
        }
        let generation = self.changes.generation();
        let v = self.read(load)?;
        let mut cache = self.reads.lock();
        if self.changes.generation() == generation {
            let map = pick(&mut cache);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(key, v.clone());
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use crate::testdb::{both, temp_store};
    use crate::testutil::*;
    use crate::{Actor, Role, UserUpdate};

    both!(changes_are_seen_at_once);

    /// Every kind of change is seen by the next read, cached or not.
    fn changes_are_seen_at_once() {
        let (_tmp, store) = temp_store();
        let (domain, project) = domain_and_project(&store, "d1");
        let alice = user(&store, &domain.id, "alice");
        let ops = group(&store, &domain.id, "ops");
        let roles = || store.effective_roles(&alice.id, &project.id).unwrap();
        assert!(roles().is_empty());
        store
            .assign_role(&project.id, &Actor::Group(ops.id.clone()), Role::CtsViewer)
            .unwrap();
        assert!(roles().is_empty());
        store.add_member(&ops.id, &alice.id).unwrap();
        assert!(roles().contains(Role::CtsViewer));
        assert!(store.domain_roles(&alice.id).unwrap().is_empty());
        store
            .assign_domain_role(&domain.id, &alice.id, Role::Admin)
            .unwrap();
        assert!(store.domain_roles(&alice.id).unwrap().contains(Role::Admin));
        assert!(store.get_user(&alice.id).unwrap().enabled);
        let off = UserUpdate {
            enabled: Some(false),
            ..UserUpdate::default()
        };
        store.update_user(&alice.id, &off).unwrap();
        assert!(!store.get_user(&alice.id).unwrap().enabled);
        assert!(roles().is_empty());
        assert!(store.domain_roles(&alice.id).unwrap().is_empty());
        store.remove_member(&ops.id, &alice.id).unwrap();
        store.delete_user(&alice.id).unwrap();
        assert!(store.get_user(&alice.id).is_err());
    }
}
