//! Keystone-style bearer tokens (`X-Auth-Token`). Only the SHA-256 of a
//! token is stored, so a copy of the database yields no usable token.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cts_db::{Row, Sql};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::role::effective_roles;
use crate::store::found;
use crate::{domain, project, rules, IdentityError, IdentityStore};

/// Marks the token format, so a future format can be told apart.
const TOKEN_PREFIX: &str = "cts1.";

/// Rows this long past their expiry are deleted; until then an expired or
/// revoked token is still answered as such rather than as unknown.
const PURGE_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

/// Validated tokens kept in memory.
const TOKEN_CACHE_MAX: usize = 10_000;

/// What a token is scoped to when issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    Unscoped,
    /// The user must hold at least one role on the project.
    Project(String),
    /// Only the user's own domain.
    Domain(String),
}

/// The project of a project-scoped token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenProject {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub domain_name: String,
}

/// The scope of a validated token, with the names a Keystone token shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ScopeInfo {
    Unscoped,
    Project(TokenProject),
    Domain { id: String, name: String },
}

/// A valid token: whose it is and what it is scoped to. Roles are not part
/// of it: callers ask [`IdentityStore::effective_roles`] per request, so a
/// removed assignment takes effect at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub user_id: String,
    pub user_name: String,
    pub domain_id: String,
    pub domain_name: String,
    pub scope: ScopeInfo,
    pub issued_at: i64,
    pub expires_at: i64,
    /// How the user authenticated, e.g. `["password"]`.
    pub methods: Vec<String>,
}

impl TokenInfo {
    /// The project of a project-scoped token.
    pub fn project(&self) -> Option<&TokenProject> {
        match &self.scope {
            ScopeInfo::Project(p) => Some(p),
            _ => None,
        }
    }
}

/// Validated tokens by hash: every authenticated request validates its
/// token, and this answers it without the connection lock. Entries carry
/// their expiry; writes that could invalidate one remove it (see
/// `IdentityStore`). Bounded: expired entries go first, then arbitrary ones.
pub(crate) struct TokenCache {
    entries: HashMap<[u8; 32], TokenInfo>,
    capacity: usize,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::with_capacity(TOKEN_CACHE_MAX)
    }
}

impl TokenCache {
    fn with_capacity(capacity: usize) -> Self {
        TokenCache {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// Empties the cache, returning what it held (to be dropped after
    /// the lock is let go).
    pub(crate) fn clear(&mut self) -> HashMap<[u8; 32], TokenInfo> {
        std::mem::take(&mut self.entries)
    }

    fn insert(&mut self, hash: [u8; 32], info: TokenInfo, now_ms: i64) {
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, t| t.expires_at > now_ms);
        }
        if self.entries.len() >= self.capacity {
            if let Some(victim) = self.entries.keys().next().copied() {
                self.entries.remove(&victim);
            }
        }
        self.entries.insert(hash, info);
    }
}

/// The SHA-256 of a well-formed token; `UnknownToken` for anything that is
/// not one, without touching the database.
fn token_hash(token: &str) -> Result<[u8; 32], IdentityError> {
    let body = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(IdentityError::UnknownToken)?;
    match URL_SAFE_NO_PAD.decode(body) {
        Ok(bytes) if bytes.len() == 32 => Ok(Sha256::digest(token.as_bytes()).into()),
        _ => Err(IdentityError::UnknownToken),
    }
}

fn ttl_ms(ttl: Duration) -> Result<i64, IdentityError> {
    match i64::try_from(ttl.as_millis()) {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(IdentityError::invalid("ttl", "a positive duration")),
    }
}

/// The row of a token with everything needed to judge and describe it.
fn load(conn: &dyn Sql, hash: &str) -> Result<(TokenInfo, bool, bool), IdentityError> {
    // Flags are 0 or 1: their product is "both enabled" on either backend.
    let row = conn.query_opt(
        "SELECT t.user_id, u.name, u.domain_id, d.name, \
                u.enabled * d.enabled, \
                t.project_id, p.name, p.domain_id, pd.name, \
                coalesce(p.enabled * pd.enabled, 1), \
                t.domain_id, sd.name, coalesce(sd.enabled, 1), \
                t.issued_at, t.expires_at, t.revoked, t.methods \
         FROM tokens t \
         JOIN users u ON u.id = t.user_id \
         JOIN domains d ON d.id = u.domain_id \
         LEFT JOIN projects p ON p.id = t.project_id \
         LEFT JOIN domains pd ON pd.id = p.domain_id \
         LEFT JOIN domains sd ON sd.id = t.domain_id \
         WHERE t.hash = $1",
        &[hash.into()],
    )?;
    let r = row.ok_or(IdentityError::UnknownToken)?;
    Ok((
        from_row(&r)?,
        r[15].bool()?,
        r[4].bool()? && r[9].bool()? && r[12].bool()?,
    ))
}

/// The token of a row of [`load`].
fn from_row(r: &Row) -> Result<TokenInfo, IdentityError> {
    let scope = match (
        r[5].opt_text()?.map(str::to_owned),
        r[10].opt_text()?.map(str::to_owned),
    ) {
        (Some(id), _) => ScopeInfo::Project(TokenProject {
            id,
            name: r[6].text()?.to_owned(),
            domain_id: r[7].text()?.to_owned(),
            domain_name: r[8].text()?.to_owned(),
        }),
        (None, Some(id)) => ScopeInfo::Domain {
            id,
            name: r[11].text()?.to_owned(),
        },
        (None, None) => ScopeInfo::Unscoped,
    };
    Ok(TokenInfo {
        user_id: r[0].text()?.to_owned(),
        user_name: r[1].text()?.to_owned(),
        domain_id: r[2].text()?.to_owned(),
        domain_name: r[3].text()?.to_owned(),
        scope,
        issued_at: r[13].int()?,
        expires_at: r[14].int()?,
        methods: r[16].text()?.split(',').map(str::to_owned).collect(),
    })
}

impl IdentityStore {
    /// Issues a token for an enabled user, valid from `now_ms` for `ttl`.
    /// Returns the token (shown once; only its hash is stored) and what it
    /// stands for. A project scope needs a role on the project
    /// (`ScopeNotAllowed` otherwise); a domain scope must be the user's own
    /// domain. Also purges rows that expired more than a day ago.
    pub fn issue_token(
        &self,
        user_id: &str,
        scope: &TokenScope,
        methods: &[&str],
        ttl: Duration,
        now_ms: i64,
    ) -> Result<(String, TokenInfo), IdentityError> {
        rules::check_methods(methods)?;
        let expires_at = now_ms
            .checked_add(ttl_ms(ttl)?)
            .ok_or_else(|| IdentityError::invalid("ttl", "too long"))?;
        let token = format!(
            "{TOKEN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(rules::random_bytes::<32>())
        );
        let hash = hex::encode(token_hash(&token)?);
        // A new token makes no cached answer wrong.
        let info = self.write_quiet(|tx| {
            let row = tx.query_opt(
                "SELECT u.name, u.domain_id, d.name, u.enabled * d.enabled \
                 FROM users u JOIN domains d ON d.id = u.domain_id WHERE u.id = $1",
                &[user_id.into()],
            )?;
            let row = found(row, "user", user_id)?;
            let (user_name, domain_id, domain_name) = (
                row[0].text()?.to_owned(),
                row[1].text()?.to_owned(),
                row[2].text()?.to_owned(),
            );
            if !row[3].bool()? {
                return Err(IdentityError::InvalidCredentials);
            }
            let (scope_info, project_id, scope_domain_id) = match scope {
                TokenScope::Unscoped => (ScopeInfo::Unscoped, None, None),
                TokenScope::Project(id) => {
                    let project = project::get(tx, id)?;
                    if effective_roles(tx, user_id, id)?.is_empty() {
                        return Err(IdentityError::ScopeNotAllowed);
                    }
                    let project_domain = domain::get(tx, &project.domain_id)?;
                    let info = ScopeInfo::Project(TokenProject {
                        id: project.id,
                        name: project.name,
                        domain_id: project_domain.id,
                        domain_name: project_domain.name,
                    });
                    (info, Some(id.as_str()), None)
                }
                TokenScope::Domain(id) => {
                    let domain = domain::get(tx, id)?;
                    if domain.id != domain_id {
                        return Err(IdentityError::ScopeNotAllowed);
                    }
                    let info = ScopeInfo::Domain {
                        id: domain.id,
                        name: domain.name,
                    };
                    (info, None, Some(id.as_str()))
                }
            };
            tx.exec(
                "DELETE FROM tokens WHERE expires_at < $1",
                &[now_ms.saturating_sub(PURGE_AFTER_MS).into()],
            )?;
            tx.exec(
                "INSERT INTO tokens (hash, user_id, project_id, domain_id, issued_at, \
                     expires_at, revoked, methods) \
                 VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
                &[
                    hash.as_str().into(),
                    user_id.into(),
                    project_id.into(),
                    scope_domain_id.into(),
                    now_ms.into(),
                    expires_at.into(),
                    methods.join(",").as_str().into(),
                ],
            )?;
            Ok(TokenInfo {
                user_id: user_id.to_owned(),
                user_name,
                domain_id,
                domain_name,
                scope: scope_info,
                issued_at: now_ms,
                expires_at,
                methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            })
        })?;
        Ok((token, info))
    }

    /// What `token` stands for at `now_ms`. Fails with `UnknownToken`
    /// (never issued, purged, or its user or project deleted),
    /// `TokenRevoked` (revoked, password changed, or its user, domain or
    /// project disabled) or `TokenExpired`. Answered from memory after the
    /// first validation.
    pub fn validate_token(&self, token: &str, now_ms: i64) -> Result<TokenInfo, IdentityError> {
        let hash = token_hash(token)?;
        self.catch_up()?;
        if let Some(info) = self.tokens.lock().entries.get(&hash) {
            return if now_ms >= info.expires_at {
                Err(IdentityError::TokenExpired)
            } else {
                Ok(info.clone())
            };
        }
        let generation = self.changes.generation();
        let (info, revoked, usable) = self.read(|conn| load(conn, &hex::encode(hash)))?;
        if revoked {
            return Err(IdentityError::TokenRevoked);
        }
        if now_ms >= info.expires_at {
            return Err(IdentityError::TokenExpired);
        }
        if !usable {
            return Err(IdentityError::TokenRevoked);
        }
        // Not if the caches were emptied since the read: see `crate::changes`.
        let mut cache = self.tokens.lock();
        if self.changes.generation() == generation {
            cache.insert(hash, info.clone(), now_ms);
        }
        Ok(info)
    }

    /// Revokes a token (Keystone's `DELETE /v3/auth/tokens`). Revoking a
    /// revoked or expired token succeeds; an unknown one is `UnknownToken`.
    pub fn revoke_token(&self, token: &str) -> Result<(), IdentityError> {
        let hash = token_hash(token)?;
        self.write(|tx| {
            let sql = "UPDATE tokens SET revoked = 1 WHERE hash = $1";
            if tx.exec(sql, &[hex::encode(hash).as_str().into()])? == 0 {
                return Err(IdentityError::UnknownToken);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb::{both, temp_store};
    use crate::testutil::*;
    use crate::{Actor, Role, UserUpdate};

    both!(
        revocation_is_immediate_and_durable,
        issue_and_validate_each_scope,
        scope_needs_a_role_or_the_own_domain,
        expiry_from_database_and_cache,
        old_rows_are_purged_on_issue,
        malformed_and_unknown_tokens,
        tokens_die_with_their_user_domain_or_project_state,
        password_change_revokes_tokens
    );

    const HOUR: Duration = Duration::from_secs(3600);
    const T0: i64 = 1_700_000_000_000;

    fn setup(store: &IdentityStore) -> (crate::Domain, crate::Project, crate::User) {
        let (domain, project) = domain_and_project(store, "d1");
        let alice = user(store, &domain.id, "alice");
        store
            .assign_role(&project.id, &Actor::User(alice.id.clone()), Role::CtsViewer)
            .unwrap();
        (domain, project, alice)
    }

    fn issue_and_validate_each_scope() {
        let (_tmp, store) = temp_store();
        let (domain, project, alice) = setup(&store);

        let scope = TokenScope::Project(project.id.clone());
        let (token, info) = store
            .issue_token(&alice.id, &scope, &["password"], HOUR, T0)
            .unwrap();
        assert!(token.starts_with("cts1.") && token.len() == 48, "{token}");
        assert_eq!(
            info.project(),
            Some(&TokenProject {
                id: project.id.clone(),
                name: project.name.clone(),
                domain_id: domain.id.clone(),
                domain_name: "d1".into(),
            })
        );
        assert_eq!(
            (info.user_name.as_str(), info.domain_name.as_str()),
            ("alice", "d1")
        );
        assert_eq!((info.issued_at, info.expires_at), (T0, T0 + 3_600_000));
        assert_eq!(info.methods, ["password"]);
        // From the database, then from the cache: the same answer.
        assert_eq!(store.validate_token(&token, T0 + 1).unwrap(), info);
        assert_eq!(store.validate_token(&token, T0 + 2).unwrap(), info);

        let (token, info) = store
            .issue_token(
                &alice.id,
                &TokenScope::Unscoped,
                &["password", "token"],
                HOUR,
                T0,
            )
            .unwrap();
        assert_eq!(info.scope, ScopeInfo::Unscoped);
        assert_eq!(store.validate_token(&token, T0).unwrap(), info);

        let (token, info) = store
            .issue_token(
                &alice.id,
                &TokenScope::Domain(domain.id.clone()),
                &["password"],
                HOUR,
                T0,
            )
            .unwrap();
        assert_eq!(
            info.scope,
            ScopeInfo::Domain {
                id: domain.id.clone(),
                name: "d1".into()
            }
        );
        assert_eq!(store.validate_token(&token, T0).unwrap(), info);
    }

    fn scope_needs_a_role_or_the_own_domain() {
        let (_tmp, store) = temp_store();
        let (_, project, alice) = setup(&store);
        let (d2, p2) = domain_and_project(&store, "d2");
        let issue =
            |scope: TokenScope| store.issue_token(&alice.id, &scope, &["password"], HOUR, T0);
        assert!(matches!(
            issue(TokenScope::Project(p2.id.clone())),
            Err(IdentityError::ScopeNotAllowed)
        ));
        assert!(matches!(
            issue(TokenScope::Domain(d2.id.clone())),
            Err(IdentityError::ScopeNotAllowed)
        ));
        assert!(matches!(
            issue(TokenScope::Project("nope".into())),
            Err(IdentityError::NotFound {
                what: "project",
                ..
            })
        ));
        set_project_enabled(&store, &project.id, false);
        assert!(matches!(
            issue(TokenScope::Project(project.id.clone())),
            Err(IdentityError::ScopeNotAllowed)
        ));
        set_user_enabled(&store, &alice.id, false);
        assert!(matches!(
            issue(TokenScope::Unscoped),
            Err(IdentityError::InvalidCredentials)
        ));
        assert!(matches!(
            store.issue_token("nope", &TokenScope::Unscoped, &["password"], HOUR, T0),
            Err(IdentityError::NotFound { what: "user", .. })
        ));
        assert!(matches!(
            store.issue_token(&alice.id, &TokenScope::Unscoped, &[], HOUR, T0),
            Err(IdentityError::Invalid {
                field: "methods",
                ..
            })
        ));
        assert!(matches!(
            store.issue_token(
                &alice.id,
                &TokenScope::Unscoped,
                &["password"],
                Duration::ZERO,
                T0
            ),
            Err(IdentityError::Invalid { field: "ttl", .. })
        ));
    }

    fn expiry_from_database_and_cache() {
        let (_tmp, store) = temp_store();
        let (_, _, alice) = setup(&store);
        let issue = || {
            store
                .issue_token(&alice.id, &TokenScope::Unscoped, &["password"], HOUR, T0)
                .unwrap()
                .0
        };
        let end = T0 + 3_600_000;
        let uncached = issue();
        assert!(matches!(
            store.validate_token(&uncached, end),
            Err(IdentityError::TokenExpired)
        ));
        let cached = issue();
        store.validate_token(&cached, end - 1).unwrap();
        assert!(matches!(
            store.validate_token(&cached, end),
            Err(IdentityError::TokenExpired)
        ));
    }

    fn old_rows_are_purged_on_issue() {
        let (_tmp, store) = temp_store();
        let (_, _, alice) = setup(&store);
        let issue = |now| {
            store
                .issue_token(&alice.id, &TokenScope::Unscoped, &["password"], HOUR, now)
                .unwrap()
                .0
        };
        let old = issue(T0);
        let recent = issue(T0 + PURGE_AFTER_MS);
        issue(T0 + 3_600_000 + PURGE_AFTER_MS + 1);
        let now = T0 + 2 * PURGE_AFTER_MS;
        assert!(matches!(
            store.validate_token(&old, now),
            Err(IdentityError::UnknownToken)
        ));
        assert!(matches!(
            store.validate_token(&recent, now),
            Err(IdentityError::TokenExpired)
        ));
    }

    fn revocation_is_immediate_and_durable() {
        let (place, store) = temp_store();
        let (_, _, alice) = setup(&store);
        let (token, _) = store
            .issue_token(&alice.id, &TokenScope::Unscoped, &["password"], HOUR, T0)
            .unwrap();
        store.validate_token(&token, T0).unwrap();
        store.revoke_token(&token).unwrap();
        store.revoke_token(&token).unwrap();
        assert!(matches!(
            store.validate_token(&token, T0),
            Err(IdentityError::TokenRevoked)
        ));
        drop(store);
        let store = place.reopen();
        assert!(matches!(
            store.validate_token(&token, T0),
            Err(IdentityError::TokenRevoked)
        ));
        let unknown = format!("cts1.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert!(matches!(
            store.revoke_token(&unknown),
            Err(IdentityError::UnknownToken)
        ));
    }

    fn malformed_and_unknown_tokens() {
        let (_tmp, store) = temp_store();
        let unknown = format!("cts1.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        let short = format!("cts1.{}", URL_SAFE_NO_PAD.encode([0u8; 31]));
        for token in ["", "cts1.", "cts2.abc", "cts1.!!!", &short, &unknown] {
            assert!(
                matches!(
                    store.validate_token(token, T0),
                    Err(IdentityError::UnknownToken)
                ),
                "{token:?}"
            );
        }
    }

    fn tokens_die_with_their_user_domain_or_project_state() {
        let (_tmp, store) = temp_store();
        let (domain, project, alice) = setup(&store);
        let scope = TokenScope::Project(project.id.clone());
        let (token, _) = store
            .issue_token(&alice.id, &scope, &["password"], HOUR, T0)
            .unwrap();
        let revoked = |store: &IdentityStore, token: &str| {
            matches!(
                store.validate_token(token, T0),
                Err(IdentityError::TokenRevoked)
            )
        };
        store.validate_token(&token, T0).unwrap(); // cached

        // Disabling a user revokes its tokens for good: enabling it again
        // does not bring them back.
        set_user_enabled(&store, &alice.id, false);
        assert!(revoked(&store, &token));
        set_user_enabled(&store, &alice.id, true);
        assert!(revoked(&store, &token));
        let (token, _) = store
            .issue_token(&alice.id, &scope, &["password"], HOUR, T0)
            .unwrap();
        store.validate_token(&token, T0).unwrap();

        set_domain_enabled(&store, &domain.id, false);
        assert!(revoked(&store, &token));
        set_domain_enabled(&store, &domain.id, true);

        set_project_enabled(&store, &project.id, false);
        assert!(revoked(&store, &token));
        set_project_enabled(&store, &project.id, true);

        // A rename shows in the next validation.
        let rename = UserUpdate {
            name: Some("alice2".into()),
            ..Default::default()
        };
        store.update_user(&alice.id, &rename).unwrap();
        assert_eq!(
            store.validate_token(&token, T0).unwrap().user_name,
            "alice2"
        );

        store.delete_project(&project.id).unwrap();
        assert!(matches!(
            store.validate_token(&token, T0),
            Err(IdentityError::UnknownToken)
        ));

        let (token, _) = store
            .issue_token(&alice.id, &TokenScope::Unscoped, &["password"], HOUR, T0)
            .unwrap();
        store.validate_token(&token, T0).unwrap();
        store.delete_user(&alice.id).unwrap();
        assert!(matches!(
            store.validate_token(&token, T0),
            Err(IdentityError::UnknownToken)
        ));
    }

    fn password_change_revokes_tokens() {
        let (_tmp, store) = temp_store();
        let (_, _, alice) = setup(&store);
        let (token, _) = store
            .issue_token(&alice.id, &TokenScope::Unscoped, &["password"], HOUR, T0)
            .unwrap();
        store.validate_token(&token, T0).unwrap();
        let change = UserUpdate {
            password: Some("New-Password-1".into()),
            ..Default::default()
        };
        store.update_user(&alice.id, &change).unwrap();
        assert!(matches!(
            store.validate_token(&token, T0),
            Err(IdentityError::TokenRevoked)
        ));
    }

    #[test]
    fn cache_is_bounded_and_drops_expired_entries_first() {
        let info = |expires_at| TokenInfo {
            user_id: String::new(),
            user_name: String::new(),
            domain_id: String::new(),
            domain_name: String::new(),
            scope: ScopeInfo::Unscoped,
            issued_at: 0,
            expires_at,
            methods: vec![],
        };
        let mut cache = TokenCache::with_capacity(3);
        cache.insert([1; 32], info(10), 0);
        cache.insert([2; 32], info(100), 0);
        cache.insert([3; 32], info(100), 0);
        cache.insert([4; 32], info(100), 50);
        assert_eq!(cache.entries.len(), 3);
        assert!(
            !cache.entries.contains_key(&[1; 32]),
            "the expired one goes"
        );
        cache.insert([5; 32], info(100), 50);
        assert_eq!(cache.entries.len(), 3);
        assert!(cache.entries.contains_key(&[5; 32]));
    }
}
