//! Login lockouts of users, kept in the store: a restart does not lift
//! them, every node of a PostgreSQL database sees them at once, and `ctsd
//! unlock` can lift one whether the server runs or not (SQLite in WAL mode
//! lets both processes at the database). Failures are
//! counted elsewhere (the server's in-memory [`crate::LoginThrottle`]);
//! only the lockouts they lead to are stored here.

use crate::{IdentityError, IdentityStore};

/// The `source` of a lockout that holds from every address.
pub const ANY_SOURCE: &str = "";

impl IdentityStore {
    /// Locks `user_id` out of password logins from `source` (an address,
    /// or [`ANY_SOURCE`]) until `until_ms`.
    pub fn lock_login(
        &self,
        user_id: &str,
        source: &str,
        until_ms: i64,
    ) -> Result<(), IdentityError> {
        self.write_quiet(|tx| {
            tx.exec(
                "INSERT INTO login_lockouts (user_id, source, locked_until) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, source) DO UPDATE SET locked_until = CASE
                     WHEN login_lockouts.locked_until > excluded.locked_until
                     THEN login_lockouts.locked_until ELSE excluded.locked_until END",
                &[user_id.into(), source.into(), until_ms.into()],
            )?;
            Ok(())
        })
    }

    /// Until when `user_id` is locked out of logins from `source`, if it is
    /// at `now_ms` (a lockout from every address counts too).
    pub fn login_locked_until(
        &self,
        user_id: &str,
        source: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, IdentityError> {
        self.read(|c| {
            let row = c.query_opt(
                "SELECT max(locked_until) FROM login_lockouts
                 WHERE user_id = $1 AND source IN ($2, $3) AND locked_until > $4",
                &[
                    user_id.into(),
                    source.into(),
                    ANY_SOURCE.into(),
                    now_ms.into(),
                ],
            )?;
            Ok(row.map(|r| r[0].opt_int()).transpose()?.flatten())
        })
    }

    /// Lifts every lockout of `user_id`; returns how many there were
    /// (expired ones included).
    pub fn unlock_login(&self, user_id: &str) -> Result<usize, IdentityError> {
        self.write_quiet(|tx| {
            let lifted = tx.exec(
                "DELETE FROM login_lockouts WHERE user_id = $1",
                &[user_id.into()],
            )?;
            Ok(lifted as usize)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testdb::{both, temp_store};
    use crate::testutil;

    use super::*;

    both!(lockouts_hold_per_source_until_lifted);

    fn lockouts_hold_per_source_until_lifted() {
        let (_dir, store) = temp_store();
        let (domain, _) = testutil::domain_and_project(&store, "acme");
        let user = testutil::user(&store, &domain.id, "victim");
        assert_eq!(
            store.login_locked_until(&user.id, "10.0.0.1", 0).unwrap(),
            None
        );
        store.lock_login(&user.id, "10.0.0.1", 1000).unwrap();
        assert_eq!(
            store.login_locked_until(&user.id, "10.0.0.1", 10).unwrap(),
            Some(1000)
        );
        assert_eq!(
            store.login_locked_until(&user.id, "10.0.0.2", 10).unwrap(),
            None
        );
        assert_eq!(
            store
                .login_locked_until(&user.id, "10.0.0.1", 1000)
                .unwrap(),
            None
        );
        store.lock_login(&user.id, ANY_SOURCE, 2000).unwrap();
        assert_eq!(
            store.login_locked_until(&user.id, "10.0.0.2", 10).unwrap(),
            Some(2000)
        );
        assert_eq!(store.unlock_login(&user.id).unwrap(), 2);
        assert_eq!(
            store.login_locked_until(&user.id, "10.0.0.1", 10).unwrap(),
            None
        );
    }
}
