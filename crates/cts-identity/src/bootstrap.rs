//! First start: create the operator's domain, project, admin user and access
//! key, and hand the credentials over in `DATA_DIR/bootstrap.json`.
//!
//! Ordering is what keeps a secret from being lost: the file is written and
//! fsync'd *inside* the transaction, before the commit. A crash before the
//! commit leaves no domain, so the next start bootstraps again and rewrites
//! the file with the values it then commits; a crash after the commit finds
//! the file already durable. The database therefore never holds identities
//! whose generated password or secret is not in the file. Once a domain
//! exists, nothing is created and the file is never touched again.

use std::fmt;
use std::path::Path;

use cts_db::Sql;
use serde::{Deserialize, Serialize};

use crate::project::NewProject;
use crate::store::now_ms;
use crate::user::{self, NewUser};
use crate::{domain, project, rules, Actor, IdentityError, IdentityStore, Role};

const DEFAULT_DOMAIN_NAME: &str = "cts";
const DEFAULT_REGION: &str = "eu-de";
const DEFAULT_USER_NAME: &str = "admin";
const DESCRIPTION: &str = "Created at first start";

/// Values the operator chose (from environment variables); `None` means
/// generate (ids, password, keys) or take the default (`cts` for the domain
/// name, `eu-de` for the region, `admin` for the user name).
#[derive(Clone, Default)]
pub struct BootstrapSeed {
    pub domain_id: Option<String>,
    pub domain_name: Option<String>,
    pub project_id: Option<String>,
    pub region: Option<String>,
    pub user_name: Option<String>,
    pub password: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

impl fmt::Debug for BootstrapSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("BootstrapSeed")
            .field("domain_id", &self.domain_id)
            .field("domain_name", &self.domain_name)
            .field("project_id", &self.project_id)
            .field("region", &self.region)
            .field("user_name", &self.user_name)
            .field("password", &redacted(&self.password))
            .field("access_key", &self.access_key)
            .field("secret_key", &redacted(&self.secret_key))
            .finish()
    }
}

/// What the first start created; exactly the keys of `bootstrap.json`.
/// The project's name is the region.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    pub domain_id: String,
    pub domain_name: String,
    pub project_id: String,
    pub region: String,
    pub user_name: String,
    pub password: String,
    pub access_key: String,
    pub secret_key: String,
    /// The URL clients use to reach this server.
    pub endpoint: String,
}

impl fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bootstrap")
            .field("domain_id", &self.domain_id)
            .field("domain_name", &self.domain_name)
            .field("project_id", &self.project_id)
            .field("region", &self.region)
            .field("user_name", &self.user_name)
            .field("password", &"<redacted>")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// Identities were created and written to the file.
    Created(Box<Bootstrap>),
    /// A domain existed already: nothing was changed.
    Existing,
}

impl Bootstrap {
    /// The seed's values, checked, with the missing ones generated.
    fn plan(seed: &BootstrapSeed, endpoint: &str) -> Result<Bootstrap, IdentityError> {
        let chosen =
            |v: &Option<String>, default: fn() -> String| v.clone().unwrap_or_else(default);
        let plan = Bootstrap {
            domain_id: chosen(&seed.domain_id, rules::new_id),
            domain_name: chosen(&seed.domain_name, || DEFAULT_DOMAIN_NAME.into()),
            project_id: chosen(&seed.project_id, rules::new_id),
            region: chosen(&seed.region, || DEFAULT_REGION.into()),
            user_name: chosen(&seed.user_name, || DEFAULT_USER_NAME.into()),
            password: chosen(&seed.password, rules::random_password),
            access_key: chosen(&seed.access_key, rules::random_access_key),
            secret_key: chosen(&seed.secret_key, rules::random_secret),
            endpoint: endpoint.to_owned(),
        };
        rules::check_chosen_id("domain_id", &plan.domain_id)?;
        rules::check_name("domain_name", &plan.domain_name)?;
        rules::check_chosen_id("project_id", &plan.project_id)?;
        rules::check_region(&plan.region)?;
        rules::check_name("user_name", &plan.user_name)?;
        rules::check_password(&plan.password)?;
        rules::check_chosen_access_key(&plan.access_key)?;
        rules::check_chosen_secret(&plan.secret_key)?;
        Ok(plan)
    }

    fn write(&self, file: &Path) -> Result<(), IdentityError> {
        let mut json = serde_json::to_vec_pretty(self)
            .map_err(|e| IdentityError::Storage(format!("bootstrap file: {e}")))?;
        json.push(b'\n');
        cts_fs::write_atomic(file, &json, true).map_err(|e| IdentityError::io(file, e))
    }
}

fn has_domain(conn: &dyn Sql) -> Result<bool, IdentityError> {
    Ok(conn
        .query_opt("SELECT 1 FROM domains LIMIT 1", &[])?
        .is_some())
}

/// Makes nodes starting together on an empty database bootstrap one after
/// the other: this row's lock is held until the commit, so the next one
/// then finds the domain (each PostgreSQL statement sees what committed
/// before it; SQLite writers are serialised anyway).
fn take_turn(tx: &dyn Sql) -> Result<(), IdentityError> {
    tx.exec(
        "INSERT INTO meta (key, value) VALUES ('bootstrap', $1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[now_ms().to_string().as_str().into()],
    )?;
    Ok(())
}

impl IdentityStore {
    /// Creates the first identities when the store has no domain yet, and
    /// writes them (mode 0600, atomically) to `file`, which is
    /// `DATA_DIR/bootstrap.json`: a domain, a project named after the region,
    /// a user holding `admin` and `cts_admin` on it (its default project),
    /// and an access key. `endpoint` is recorded in the file for clients.
    ///
    /// When a domain exists, returns `Existing` and changes nothing, not
    /// even the file, whatever the seed says. Otherwise seed values that
    /// break a rule fail with `Invalid` before anything is written.
    pub fn bootstrap(
        &self,
        seed: &BootstrapSeed,
        endpoint: &str,
        file: &Path,
    ) -> Result<BootstrapOutcome, IdentityError> {
        // Checked first: an ordinary start neither pays a password hash nor
        // fails on seed values that no longer matter.
        if self.read(has_domain)? {
            return Ok(BootstrapOutcome::Existing);
        }
        let plan = Bootstrap::plan(seed, endpoint)?;
        let hash = user::hash_password(&plan.password)?;
        self.write(|tx| {
            take_turn(tx)?;
            if has_domain(tx)? {
                return Ok(BootstrapOutcome::Existing);
            }
            let domain = domain::insert(tx, &plan.domain_id, &plan.domain_name)?;
            let project = project::insert(
                tx,
                &plan.project_id,
                &NewProject {
                    domain_id: domain.id.clone(),
                    name: plan.region.clone(),
                    description: DESCRIPTION.into(),
                    region: plan.region.clone(),
                },
            )?;
            let admin = NewUser {
                domain_id: domain.id,
                name: plan.user_name.clone(),
                description: DESCRIPTION.into(),
                password: Some(plan.password.clone()),
                email: None,
                default_project_id: Some(project.id.clone()),
                enabled: true,
            };
            let admin = user::insert(tx, &rules::new_id(), &admin, Some(&hash))?;
            for role in [Role::Admin, Role::CtsAdmin] {
                self.assign(tx, &project.id, &Actor::User(admin.id.clone()), role)?;
            }
            // The first admin manages the whole domain.
            tx.exec(
                "INSERT INTO domain_assignments (domain_id, user_id, role_id) VALUES ($1, $2, $3)",
                &[
                    admin.domain_id.as_str().into(),
                    admin.id.as_str().into(),
                    self.role_id(Role::Admin).into(),
                ],
            )?;
            self.insert_access_key(
                tx,
                &admin.id,
                &plan.access_key,
                &plan.secret_key,
                DESCRIPTION,
            )?;
            // Durable before the commit: see the module comment.
            plan.write(file)?;
            Ok(BootstrapOutcome::Created(Box::new(plan.clone())))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::domain::DomainRef;
    use crate::testdb::{both, temp_store};
    use crate::{ProjectRef, UserRef};

    both!(
        nodes_starting_together_bootstrap_once,
        first_start_generates_and_writes_once,
        seed_values_are_honoured,
        bad_seed_values_change_nothing,
        failed_file_write_commits_nothing_and_the_next_start_recovers,
        crash_after_the_file_before_the_commit_is_redone
    );

    const ENDPOINT: &str = "https://cts.example.com:8443";

    fn created(outcome: BootstrapOutcome) -> Bootstrap {
        match outcome {
            BootstrapOutcome::Created(b) => *b,
            BootstrapOutcome::Existing => panic!("expected Created"),
        }
    }

    /// Everything in `b` works against `store`.
    fn assert_usable(store: &IdentityStore, b: &Bootstrap) {
        let user = store
            .authenticate_password(
                &UserRef::Name {
                    name: b.user_name.clone(),
                    domain: DomainRef::Name(b.domain_name.clone()),
                },
                &b.password,
            )
            .unwrap();
        assert_eq!(user.domain_id, b.domain_id);
        let project = store
            .find_project(&ProjectRef::Name {
                name: b.region.clone(),
                domain: DomainRef::Id(b.domain_id.clone()),
            })
            .unwrap();
        assert_eq!(
            (project.id.as_str(), project.region.as_str()),
            (b.project_id.as_str(), b.region.as_str())
        );
        assert_eq!(
            user.default_project_id.as_deref(),
            Some(b.project_id.as_str())
        );
        let roles = store.effective_roles(&user.id, &project.id).unwrap();
        assert_eq!(
            roles.iter().collect::<Vec<_>>(),
            [Role::Admin, Role::CtsAdmin]
        );
        let key = store.access_key_secret(&b.access_key).unwrap();
        assert_eq!(
            (key.user_id.as_str(), key.secret.as_str()),
            (user.id.as_str(), b.secret_key.as_str())
        );
    }

    fn read_file(path: &Path) -> Bootstrap {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    fn first_start_generates_and_writes_once() {
        let (tmp, store) = temp_store();
        let file = tmp.path().join("bootstrap.json");
        let b = created(
            store
                .bootstrap(&BootstrapSeed::default(), ENDPOINT, &file)
                .unwrap(),
        );
        assert_eq!(
            (
                b.domain_name.as_str(),
                b.region.as_str(),
                b.user_name.as_str(),
                b.endpoint.as_str()
            ),
            ("cts", "eu-de", "admin", ENDPOINT)
        );
        assert_eq!((b.domain_id.len(), b.project_id.len()), (32, 32));
        assert_eq!(
            (b.password.len(), b.access_key.len(), b.secret_key.len()),
            (20, 20, 40)
        );
        assert_eq!(read_file(&file), b);
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "access_key",
                "domain_id",
                "domain_name",
                "endpoint",
                "password",
                "project_id",
                "region",
                "secret_key",
                "user_name"
            ]
        );
        assert_usable(&store, &b);
        assert!(!format!("{b:?}").contains(&b.password));
        assert!(!format!("{b:?}").contains(&b.secret_key));

        // Second start, even with other or invalid seed values: nothing
        // changes.
        let before = fs::read(&file).unwrap();
        let seed = BootstrapSeed {
            user_name: Some("root".into()),
            access_key: Some("not valid!".into()),
            ..Default::default()
        };
        assert_eq!(
            store.bootstrap(&seed, ENDPOINT, &file).unwrap(),
            BootstrapOutcome::Existing
        );
        assert_eq!(fs::read(&file).unwrap(), before);
        assert_eq!(store.list_domains().unwrap().len(), 1);
        // Not even a lost file is rewritten: the secrets are not recoverable
        // from hashes, and re-generating them would change live credentials.
        fs::remove_file(&file).unwrap();
        assert_eq!(
            store.bootstrap(&seed, ENDPOINT, &file).unwrap(),
            BootstrapOutcome::Existing
        );
        assert!(!file.exists());
    }

    fn seed_values_are_honoured() {
        let (tmp, store) = temp_store();
        let file = tmp.path().join("bootstrap.json");
        let seed = BootstrapSeed {
            domain_id: Some("my-domain_1".into()),
            domain_name: Some("acme".into()),
            project_id: Some("0123456789abcdef0123456789abcdef".into()),
            region: Some("eu-nl".into()),
            user_name: Some("root".into()),
            password: Some("Sup3r-Secret".into()),
            access_key: Some("MYACCESSKEY".into()),
            secret_key: Some("my/secret+key=".into()),
        };
        assert!(!format!("{seed:?}").contains("Sup3r-Secret"));
        let b = created(store.bootstrap(&seed, ENDPOINT, &file).unwrap());
        assert_eq!(
            b,
            Bootstrap {
                domain_id: "my-domain_1".into(),
                domain_name: "acme".into(),
                project_id: "0123456789abcdef0123456789abcdef".into(),
                region: "eu-nl".into(),
                user_name: "root".into(),
                password: "Sup3r-Secret".into(),
                access_key: "MYACCESSKEY".into(),
                secret_key: "my/secret+key=".into(),
                endpoint: ENDPOINT.into(),
            }
        );
        assert_eq!(read_file(&file), b);
        assert_usable(&store, &b);
    }

    fn bad_seed_values_change_nothing() {
        let (tmp, store) = temp_store();
        let file = tmp.path().join("bootstrap.json");
        let cases: [(&str, BootstrapSeed); 5] = [
            (
                "access_key",
                BootstrapSeed {
                    access_key: Some("AK-1".into()),
                    ..Default::default()
                },
            ),
            (
                "secret_key",
                BootstrapSeed {
                    secret_key: Some("short".into()),
                    ..Default::default()
                },
            ),
            (
                "domain_id",
                BootstrapSeed {
                    domain_id: Some("a/b".into()),
                    ..Default::default()
                },
            ),
            (
                "password",
                BootstrapSeed {
                    password: Some("password".into()),
                    ..Default::default()
                },
            ),
            (
                "region",
                BootstrapSeed {
                    region: Some("EU".into()),
                    ..Default::default()
                },
            ),
        ];
        for (field, seed) in cases {
            match store.bootstrap(&seed, ENDPOINT, &file) {
                Err(IdentityError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(store.list_domains().unwrap().is_empty());
        assert!(!file.exists());
    }

    fn failed_file_write_commits_nothing_and_the_next_start_recovers() {
        let (tmp, store) = temp_store();
        let unwritable = tmp.path().join("missing-dir").join("bootstrap.json");
        assert!(matches!(
            store.bootstrap(&BootstrapSeed::default(), ENDPOINT, &unwritable),
            Err(IdentityError::Storage(_))
        ));
        assert!(
            store.list_domains().unwrap().is_empty(),
            "no identities without the file"
        );

        let file = tmp.path().join("bootstrap.json");
        let b = created(
            store
                .bootstrap(&BootstrapSeed::default(), ENDPOINT, &file)
                .unwrap(),
        );
        assert_eq!(read_file(&file), b);
        assert_usable(&store, &b);
    }

    fn crash_after_the_file_before_the_commit_is_redone() {
        // The state such a crash leaves: a file with values the database
        // never committed.
        let (tmp, store) = temp_store();
        let file = tmp.path().join("bootstrap.json");
        let lost = Bootstrap::plan(&BootstrapSeed::default(), ENDPOINT).unwrap();
        lost.write(&file).unwrap();

        let b = created(
            store
                .bootstrap(&BootstrapSeed::default(), ENDPOINT, &file)
                .unwrap(),
        );
        assert_ne!(b.password, lost.password);
        assert_eq!(read_file(&file), b, "the file holds what was committed");
        assert_usable(&store, &b);
        drop(store);

        // After a restart the identities and the file still agree.
        let store = tmp.reopen();
        assert_eq!(
            store
                .bootstrap(&BootstrapSeed::default(), ENDPOINT, &file)
                .unwrap(),
            BootstrapOutcome::Existing
        );
        assert_usable(&store, &read_file(&file));
    }

    #[test]
    fn file_format_rejects_unknown_keys() {
        let b = Bootstrap::plan(&BootstrapSeed::default(), ENDPOINT).unwrap();
        let mut json = serde_json::to_value(&b).unwrap();
        json["extra"] = serde_json::Value::Bool(true);
        assert!(serde_json::from_value::<Bootstrap>(json).is_err());
    }

    /// Several nodes starting at once on an empty database: one creates
    /// the first identities (and writes its file), the others find them.
    fn nodes_starting_together_bootstrap_once() {
        const NODES: usize = 4;
        let (place, first) = temp_store();
        drop(first);
        let barrier = std::sync::Barrier::new(NODES);
        let outcomes: Vec<_> = std::thread::scope(|s| {
            let starts: Vec<_> = (0..NODES)
                .map(|i| {
                    let (place, barrier) = (&place, &barrier);
                    s.spawn(move || {
                        let store = place.reopen();
                        let file = place.path().join(format!("bootstrap-{i}.json"));
                        barrier.wait();
                        let outcome = store.bootstrap(&BootstrapSeed::default(), ENDPOINT, &file);
                        (outcome.unwrap(), file)
                    })
                })
                .collect();
            starts.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let created: Vec<_> = outcomes
            .iter()
            .filter_map(|(o, file)| match o {
                BootstrapOutcome::Created(b) => Some((b, file)),
                BootstrapOutcome::Existing => {
                    assert!(
                        !file.exists(),
                        "only the node that bootstrapped writes its file"
                    );
                    None
                }
            })
            .collect();
        assert_eq!(created.len(), 1, "{outcomes:?}");
        let (b, file) = created[0];
        assert_eq!(read_file(file), **b);
        let store = place.reopen();
        assert_eq!(store.list_domains().unwrap().len(), 1);
        assert_eq!(
            store.list_users(&crate::Filter::default()).unwrap().len(),
            1
        );
        assert_usable(&store, b);
    }
}
