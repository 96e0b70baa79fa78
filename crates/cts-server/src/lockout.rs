//! Login lockout: failed password logins are counted per user, per (user,
//! source address) and per address, each against its own limit, so that
//! guessing one user's password from one address locks that pair only
//! (`auth.login_max_failures`), many addresses guessing one user lock the
//! user (`auth.login_user_max_failures`), and one address spraying many
//! users is stopped (`auth.login_address_max_failures`). A user counts
//! once whatever form names it (id, name with domain id or domain name).
//!
//! Counting is in memory, per node; the lockouts of existing users are
//! stored in the identity store, so they survive a restart, hold on every
//! node sharing a PostgreSQL database, and `ctsd unlock` lifts them
//! whether the server runs or not.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cts_identity::{DomainRef, IdentityError, LoginThrottle, User, UserRef, ANY_SOURCE};

use crate::config::AuthSettings;
use crate::error::ApiError;
use crate::state::{now_ms, AppState};

/// The three counters.
#[derive(Debug)]
pub struct LoginLockout {
    pair: LoginThrottle,
    user: LoginThrottle,
    address: LoginThrottle,
}

impl LoginLockout {
    pub fn new(auth: &AuthSettings) -> LoginLockout {
        let throttle = |max| LoginThrottle::new(max, auth.login_lockout);
        LoginLockout {
            pair: throttle(auth.login_max_failures),
            user: throttle(auth.login_user_max_failures),
            address: throttle(auth.login_address_max_failures),
        }
    }
}

/// One login attempt: who it names, canonically, and from where.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The named user's id, if it exists.
    user_id: Option<String>,
    /// `user:ID`, or for a user that does not exist the name as given.
    user_key: String,
    /// The source address (empty when unknown).
    source: String,
}

impl Attempt {
    fn pair_key(&self) -> String {
        format!("{}@{}", self.user_key, self.source)
    }

    fn address_key(&self) -> Option<String> {
        (!self.source.is_empty()).then(|| format!("ip:{}", self.source))
    }
}

/// Resolves the user `user` names, so that every form counts as one.
/// Blocking (SQLite).
pub fn attempt(state: &AppState, user: &UserRef, peer: Option<SocketAddr>) -> Attempt {
    let source = peer
        .map(|p| p.ip())
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let identity = &state.identity;
    let (user_id, user_key) = match identity.find_user(user) {
        Ok(u) => (Some(u.id.clone()), format!("user:{}", u.id)),
        Err(_) => {
            let unknown = match user {
                UserRef::Id(id) => format!("unknown-id:{id}"),
                UserRef::Name { name, domain } => {
                    let domain = match identity.find_domain(domain) {
                        Ok(d) => d.id,
                        Err(_) => match domain {
                            DomainRef::Id(d) | DomainRef::Name(d) => format!("?{d}"),
                        },
                    };
                    format!("unknown:{domain}/{name}")
                }
            };
            (None, unknown)
        }
    };
    Attempt {
        user_id,
        user_key,
        source,
    }
}

fn throttled(state: &AppState, retry_after: Duration) -> ApiError {
    state.metrics.auth_throttled.inc();
    ApiError::Throttled {
        retry_after: retry_after.max(Duration::from_secs(1)),
    }
}

/// Refuses an attempt while its address, its user or the pair is locked
/// out. Blocking (SQLite).
pub fn check(state: &AppState, a: &Attempt) -> Result<(), ApiError> {
    let now = Instant::now();
    let lock = &state.login_lockout;
    if let Some(key) = a.address_key() {
        lock.address
            .check(&key, now)
            .map_err(|d| throttled(state, d))?;
    }
    match &a.user_id {
        Some(id) => {
            let now_ms = now_ms();
            if let Some(until) = state.identity.login_locked_until(id, &a.source, now_ms)? {
                let left = Duration::from_millis((until - now_ms).max(0) as u64);
                return Err(throttled(state, left));
            }
        }
        // A name that does not exist locks like one that does, so that
        // lockouts do not tell which users exist.
        None => {
            for (t, key) in [(&lock.user, a.user_key.clone()), (&lock.pair, a.pair_key())] {
                t.check(&key, now).map_err(|d| throttled(state, d))?;
            }
        }
    }
    Ok(())
}

/// Counts a failed login; a count reaching its limit locks out (stored
/// for an existing user) and is logged at WARN. Blocking (SQLite).
pub fn failed(state: &AppState, a: &Attempt, user_name: &str) {
    let now = Instant::now();
    let lock = &state.login_lockout;
    if let Some(key) = a.address_key() {
        if lock.address.record_failure(&key, now) {
            tracing::warn!(source = %a.source, limit = state.config.auth.login_address_max_failures,
                "login lockout of a source address: too many failed passwords from it");
        }
    }
    let counters = [
        (
            &lock.user,
            a.user_key.clone(),
            ANY_SOURCE,
            "login_user_max_failures",
        ),
        (
            &lock.pair,
            a.pair_key(),
            a.source.as_str(),
            "login_max_failures",
        ),
    ];
    for (t, key, source, setting) in counters {
        if !t.record_failure(&key, now) {
            continue;
        }
        tracing::warn!(user = %user_name, user_key = %a.user_key, source = %a.source,
            setting, lockout = ?t.window(), "login lockout: too many failed passwords");
        if let Some(id) = &a.user_id {
            // Stored: the count starts over, the lockout is the store's.
            let until = now_ms() + t.window().as_millis() as i64;
            match state.identity.lock_login(id, source, until) {
                Ok(()) => t.record_success(&key),
                Err(e) => {
                    tracing::error!(error = %e, "could not store a login lockout; it holds in memory")
                }
            }
        }
    }
}

/// A successful login clears the counts of its user and pair (not of its
/// address: one good login must not wipe the failures of others).
pub fn succeeded(state: &AppState, a: &Attempt) {
    let lock = &state.login_lockout;
    lock.user.record_success(&a.user_key);
    lock.pair.record_success(&a.pair_key());
}

/// Lifts every lockout of `user_id` (stored and counted). Blocking.
pub fn unlock(state: &AppState, user_id: &str) -> Result<usize, IdentityError> {
    let key = format!("user:{user_id}");
    let lock = &state.login_lockout;
    lock.user.record_success(&key);
    lock.pair.forget_prefix(&format!("{key}@"));
    state.identity.unlock_login(user_id)
}

/// Checks a user name and password behind the login throttle (the token
/// API and the console sign in the same way). `Err` is a refusal before
/// the check (locked out); `Ok(Err)` a wrong user, domain or password,
/// counted. `named` is what the request called the user, for the log.
pub async fn sign_in(
    state: &AppState,
    user: UserRef,
    password: String,
    named: String,
    peer: Option<SocketAddr>,
) -> Result<Result<User, IdentityError>, ApiError> {
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        let attempt = attempt(&st, &user, peer);
        check(&st, &attempt)?;
        let result = st.identity.authenticate_password(&user, &password);
        match &result {
            Ok(_) => succeeded(&st, &attempt),
            Err(_) => failed(&st, &attempt, &named),
        }
        Ok(result)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}
