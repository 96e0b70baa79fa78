//! The identity store of CTS: domains (accounts), projects, users, groups,
//! the four built-in roles and their assignments per project, access keys
//! (AK/SK) for signed requests, Keystone-style tokens, the first-start
//! bootstrap, and a failed-login throttle. No HTTP here: the server maps
//! [`IdentityError`] to responses and renders the JSON.
//!
//! # On disk
//!
//! ```text
//! DATA_DIR/
//!   bootstrap.json       first-start credentials, mode 0600, written once
//!   identity/            mode 0700
//!     identity.db        SQLite (WAL, synchronous=FULL, foreign keys), mode 0600
//!     identity.db-wal    SQLite's write-ahead log
//!     identity.db-shm
//!     server.key         32 random bytes, mode 0600, created once
//! ```
//!
//! With PostgreSQL (`IdentityStore::open_postgres`) the same tables live in
//! the database every node shares (`pg/`, migrations recorded in
//! `identity_schema_migrations`); the node keeps no file, and the server key
//! is derived from the configured store key ([`ServerKey`]).
//!
//! # Security choices
//!
//! * Passwords are stored as Argon2id hashes (default parameters, 19 MiB,
//!   2 passes). Hashing and verifying are slow on purpose; callers run them
//!   with `spawn_blocking`. Unknown users cost a verification too, so
//!   timing does not reveal which users exist.
//! * Access-key secrets must be recoverable (SDK-HMAC-SHA256 is keyed with
//!   the secret itself), so they are encrypted with AES-256-GCM under
//!   `server.key`, with a random nonce per secret and the access key id as
//!   associated data. The database records a fingerprint of the key; a
//!   missing or different key stops the start instead of being regenerated,
//!   which would orphan every secret. Back up `server.key` with the
//!   database, and apart from it.
//! * Tokens are 32 random bytes; only their SHA-256 is stored, so a copy of
//!   the database yields no usable token.
//! * Secrets never appear in error messages or `Debug` output.

mod access_key;
mod bootstrap;
mod changes;
mod copy;
mod domain;
mod domain_role;
mod error;
mod group;
mod lockout;
mod project;
mod read_cache;
mod role;
mod rules;
mod schema;
mod server_key;
mod store;
#[cfg(test)]
mod testdb;
mod throttle;
mod token;
mod user;

pub use access_key::{AccessKey, AccessKeyStatus, SigningKey, MAX_ACCESS_KEYS_PER_USER};
pub use bootstrap::{Bootstrap, BootstrapOutcome, BootstrapSeed};
pub use domain::{Domain, DomainRef, DomainUpdate};
pub use domain_role::DOMAIN_ROLES;
pub use error::IdentityError;
pub use group::{Group, GroupUpdate, NewGroup};
pub use lockout::ANY_SOURCE;
pub use project::{NewProject, Project, ProjectRef, ProjectUpdate};
pub use role::{Actor, Assignment, Role, RoleRecord, RoleSet};
pub use server_key::ServerKey;
pub use store::{from_memory, pg_schema, IdentityStore};
pub use throttle::LoginThrottle;
pub use token::{ScopeInfo, TokenInfo, TokenProject, TokenScope};
pub use user::{NewUser, User, UserRef, UserUpdate};

/// Selects projects, users or groups; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub domain_id: Option<String>,
    /// Exact name.
    pub name: Option<String>,
}

/// Builders shared by the unit tests.
#[cfg(test)]
mod testutil {
    use crate::*;

    pub(crate) fn new_project(domain_id: &str, name: &str) -> NewProject {
        NewProject {
            domain_id: domain_id.into(),
            name: name.into(),
            description: String::new(),
            region: "eu-de".into(),
        }
    }

    /// A domain `name` with a project `eu-de`.
    pub(crate) fn domain_and_project(store: &IdentityStore, name: &str) -> (Domain, Project) {
        let domain = store.create_domain(name).unwrap();
        let project = store
            .create_project(&new_project(&domain.id, "eu-de"))
            .unwrap();
        (domain, project)
    }

    /// An enabled user without password (no slow hashing).
    pub(crate) fn new_user(domain_id: &str, name: &str) -> NewUser {
        NewUser {
            domain_id: domain_id.into(),
            name: name.into(),
            description: String::new(),
            password: None,
            email: None,
            default_project_id: None,
            enabled: true,
        }
    }

    pub(crate) fn user(store: &IdentityStore, domain_id: &str, name: &str) -> User {
        store.create_user(&new_user(domain_id, name)).unwrap()
    }

    pub(crate) fn group(store: &IdentityStore, domain_id: &str, name: &str) -> Group {
        store
            .create_group(&NewGroup {
                domain_id: domain_id.into(),
                name: name.into(),
                description: String::new(),
            })
            .unwrap()
    }

    pub(crate) fn set_user_enabled(store: &IdentityStore, id: &str, enabled: bool) {
        let update = UserUpdate {
            enabled: Some(enabled),
            ..Default::default()
        };
        store.update_user(id, &update).unwrap();
    }

    pub(crate) fn set_project_enabled(store: &IdentityStore, id: &str, enabled: bool) {
        let update = ProjectUpdate {
            enabled: Some(enabled),
            ..Default::default()
        };
        store.update_project(id, &update).unwrap();
    }

    pub(crate) fn set_domain_enabled(store: &IdentityStore, id: &str, enabled: bool) {
        let update = DomainUpdate {
            name: None,
            enabled: Some(enabled),
        };
        store.update_domain(id, &update).unwrap();
    }
}
