//! Where the endpoint, project and credential come from.
//!
//! Three sources, the first that gives a value wins: command-line flags,
//! `CTS_*` environment variables, then a credentials file (`--credentials`
//! or `CTS_CREDENTIALS`: a JSON object with the keys of the server's
//! `bootstrap.json`, so `cts --credentials data/bootstrap.json ...` works as
//! it is). The credential itself is taken whole from one source, never an
//! access key from one and its secret from another.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

/// A setting: its key in the credentials file, its flag, its variable.
struct Field {
    key: &'static str,
    flag: &'static str,
    env: &'static str,
}

const FIELDS: [Field; 8] = [
    Field {
        key: "endpoint",
        flag: "--endpoint",
        env: "CTS_ENDPOINT",
    },
    Field {
        key: "project_id",
        flag: "--project-id",
        env: "CTS_PROJECT_ID",
    },
    Field {
        key: "access_key",
        flag: "--access-key",
        env: "CTS_ACCESS_KEY",
    },
    Field {
        key: "secret_key",
        flag: "--secret-key",
        env: "CTS_SECRET_KEY",
    },
    Field {
        key: "token",
        flag: "--token",
        env: "CTS_AUTH_TOKEN",
    },
    Field {
        key: "user_name",
        flag: "--user",
        env: "CTS_USER_NAME",
    },
    Field {
        key: "password",
        flag: "--password",
        env: "CTS_PASSWORD",
    },
    Field {
        key: "domain_name",
        flag: "--domain",
        env: "CTS_DOMAIN_NAME",
    },
];

fn field(key: &str) -> &'static Field {
    FIELDS
        .iter()
        .find(|f| f.key == key)
        .expect("a known settings key")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Flags,
    Env,
    File(String),
}

/// The settings one source gives (empty values count as not given).
#[derive(Debug, Clone)]
pub struct Layer {
    source: Source,
    values: HashMap<&'static str, String>,
}

impl Layer {
    fn new(source: Source, get: impl Fn(&Field) -> Option<String>) -> Layer {
        let values = FIELDS
            .iter()
            .filter_map(|f| Some((f.key, get(f).filter(|v| !v.is_empty())?)))
            .collect();
        Layer { source, values }
    }

    /// The flags, by settings key (`access_key` for `--access-key`).
    pub fn flags(values: &[(&str, Option<&String>)]) -> Layer {
        Layer::new(Source::Flags, |f| {
            values
                .iter()
                .find(|(k, _)| *k == f.key)
                .and_then(|(_, v)| v.cloned())
        })
    }

    pub fn env(var: impl Fn(&str) -> Option<String>) -> Layer {
        Layer::new(Source::Env, |f| var(f.env))
    }

    /// A credentials file; keys other than the settings are ignored.
    pub fn file(path: &Path) -> Result<Layer> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the credentials file {}", path.display()))?;
        Layer::parse_file(&path.display().to_string(), &text)
    }

    fn parse_file(name: &str, text: &str) -> Result<Layer> {
        let object: HashMap<String, Value> = serde_json::from_str(text).with_context(|| {
            format!("the credentials file {name} is not a JSON object (expected the keys of bootstrap.json)")
        })?;
        Ok(Layer::new(Source::File(name.to_string()), |f| {
            object.get(f.key)?.as_str().map(str::to_string)
        }))
    }

    fn get(&self, key: &str) -> Option<&String> {
        self.values.get(key)
    }

    /// How the user sets `key` in this source, for messages.
    fn name(&self, key: &str) -> String {
        let f = field(key);
        match &self.source {
            Source::Flags => f.flag.to_string(),
            Source::Env => f.env.to_string(),
            Source::File(path) => format!("\"{}\" in {path}", f.key),
        }
    }
}

/// How requests prove who sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Every request signed with SDK-HMAC-SHA256.
    Key {
        access_key: String,
        secret_key: String,
    },
    /// `X-Auth-Token` (from `cts login`).
    Token(String),
    /// Nothing: only for `cts login`.
    None,
}

/// Everything a command needs to reach and authenticate to the server.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub endpoint: String,
    pub project_id: Option<String>,
    pub auth: Auth,
    /// For `cts login`.
    pub user_name: Option<String>,
    pub password: Option<String>,
    pub domain_name: Option<String>,
}

pub const MISSING: &str = "no credentials: give --access-key and --secret-key \
(CTS_ACCESS_KEY, CTS_SECRET_KEY), or --token (CTS_AUTH_TOKEN, as printed by `cts login`), \
or --credentials FILE (CTS_CREDENTIALS), e.g. the server's DATA_DIR/bootstrap.json";

impl Credentials {
    /// Merges `layers`, highest precedence first.
    pub fn resolve(layers: &[Layer]) -> Result<Credentials> {
        let first = |key: &str| layers.iter().find_map(|l| l.get(key).cloned());
        let mut auth = Auth::None;
        for l in layers {
            let (ak, sk, token) = (l.get("access_key"), l.get("secret_key"), l.get("token"));
            auth = match (ak, sk, token) {
                (None, None, None) => continue,
                (Some(ak), Some(sk), None) => Auth::Key {
                    access_key: ak.clone(),
                    secret_key: sk.clone(),
                },
                (None, None, Some(t)) => Auth::Token(t.clone()),
                (_, _, Some(_)) => bail!(
                    "both {} and {} are given: use an access key or a token, not both",
                    l.name("access_key"),
                    l.name("token")
                ),
                (Some(_), None, None) => {
                    bail!(
                        "{} is given without {}",
                        l.name("access_key"),
                        l.name("secret_key")
                    )
                }
                (None, Some(_), None) => {
                    bail!(
                        "{} is given without {}",
                        l.name("secret_key"),
                        l.name("access_key")
                    )
                }
            };
            break;
        }
        Ok(Credentials {
            endpoint: first("endpoint")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
                .trim_end_matches('/')
                .to_string(),
            project_id: first("project_id"),
            auth,
            user_name: first("user_name"),
            password: first("password"),
            domain_name: first("domain_name"),
        })
    }

    /// The project of the traces commands.
    pub fn project(&self) -> Result<&str> {
        self.project_id.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "no project: give --project-id (CTS_PROJECT_ID, or project_id in the credentials file)"
            )
        })
    }

    /// Fails unless a credential was given.
    pub fn require_auth(&self) -> Result<()> {
        if self.auth == Auth::None {
            bail!("{MISSING}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&str, &str)]) -> Layer {
        let owned: Vec<(&str, Option<String>)> = pairs
            .iter()
            .map(|(k, v)| (*k, Some(v.to_string())))
            .collect();
        let refs: Vec<(&str, Option<&String>)> =
            owned.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        Layer::flags(&refs)
    }

    fn env(pairs: &[(&str, &str)]) -> Layer {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Layer::env(|name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    const BOOTSTRAP: &str = r#"{"domain_id": "d", "domain_name": "cts", "project_id": "p-file",
        "region": "eu-de", "user_name": "admin", "password": "pw", "access_key": "AKFILE",
        "secret_key": "SKFILE", "endpoint": "http://127.0.0.1:9000/"}"#;

    fn file() -> Layer {
        Layer::parse_file("boot.json", BOOTSTRAP).unwrap()
    }

    #[test]
    fn bootstrap_file_alone_is_enough() {
        let c = Credentials::resolve(&[flags(&[]), env(&[]), file()]).unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:9000");
        assert_eq!(c.project_id.as_deref(), Some("p-file"));
        assert_eq!(
            c.auth,
            Auth::Key {
                access_key: "AKFILE".into(),
                secret_key: "SKFILE".into()
            }
        );
        assert_eq!(c.user_name.as_deref(), Some("admin"));
        assert_eq!(c.domain_name.as_deref(), Some("cts"));
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let c = Credentials::resolve(&[
            flags(&[("project_id", "p-flag")]),
            env(&[
                ("CTS_PROJECT_ID", "p-env"),
                ("CTS_ENDPOINT", "http://env:1"),
            ]),
            file(),
        ])
        .unwrap();
        assert_eq!(c.project_id.as_deref(), Some("p-flag"));
        assert_eq!(c.endpoint, "http://env:1");
        // A token from the environment beats the file's key, a flag's key
        // beats the environment's token; the credential is never mixed.
        let c =
            Credentials::resolve(&[flags(&[]), env(&[("CTS_AUTH_TOKEN", "tok")]), file()]).unwrap();
        assert_eq!(c.auth, Auth::Token("tok".into()));
        let c = Credentials::resolve(&[
            flags(&[("access_key", "AK"), ("secret_key", "SK")]),
            env(&[("CTS_AUTH_TOKEN", "tok")]),
            file(),
        ])
        .unwrap();
        assert_eq!(
            c.auth,
            Auth::Key {
                access_key: "AK".into(),
                secret_key: "SK".into()
            }
        );
        // Empty values are not given.
        let c =
            Credentials::resolve(&[flags(&[]), env(&[("CTS_AUTH_TOKEN", "")]), file()]).unwrap();
        assert!(matches!(c.auth, Auth::Key { .. }));
    }

    #[test]
    fn incomplete_or_ambiguous_credentials_say_what_to_set() {
        let e = Credentials::resolve(&[flags(&[("access_key", "AK")]), file()]).unwrap_err();
        assert_eq!(e.to_string(), "--access-key is given without --secret-key");
        let e = Credentials::resolve(&[env(&[("CTS_SECRET_KEY", "SK")])]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CTS_SECRET_KEY is given without CTS_ACCESS_KEY"
        );
        let e = Credentials::resolve(&[env(&[
            ("CTS_ACCESS_KEY", "AK"),
            ("CTS_SECRET_KEY", "SK"),
            ("CTS_AUTH_TOKEN", "t"),
        ])])
        .unwrap_err();
        assert!(
            e.to_string().contains("CTS_ACCESS_KEY and CTS_AUTH_TOKEN"),
            "{e}"
        );
        let broken = Layer::parse_file("x.json", r#"{"access_key": "AK"}"#).unwrap();
        let e = Credentials::resolve(&[broken]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"access_key\" in x.json is given without \"secret_key\" in x.json"
        );

        let none = Credentials::resolve(&[flags(&[]), env(&[])]).unwrap();
        assert_eq!(none.endpoint, DEFAULT_ENDPOINT);
        let e = none.require_auth().unwrap_err().to_string();
        assert!(
            e.contains("--access-key") && e.contains("CTS_CREDENTIALS"),
            "{e}"
        );
        assert!(none
            .project()
            .unwrap_err()
            .to_string()
            .contains("--project-id"));
        assert!(Layer::parse_file("x.json", "[1]").is_err());
    }
}
