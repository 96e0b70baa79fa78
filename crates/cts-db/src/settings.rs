//! How ctsd reaches PostgreSQL: the URL (checked once, when read), the pool
//! and TLS.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use r2d2_postgres::PostgresConnectionManager;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::DbError;

/// A `postgres://` (or `postgresql://`) URL, parsed when read so that a
/// wrong one stops the start naming the setting. Printed without its
/// password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PgUrl(String);

/// Why a [`PgUrl`] was refused.
#[derive(Debug, thiserror::Error)]
pub enum PgUrlError {
    #[error("must start with postgres:// or postgresql://")]
    Scheme,
    #[error("is not a PostgreSQL URL: {0}")]
    Syntax(String),
    #[error("must name a host")]
    NoHost,
}

impl FromStr for PgUrl {
    type Err = PgUrlError;

    fn from_str(s: &str) -> Result<PgUrl, PgUrlError> {
        if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
            return Err(PgUrlError::Scheme);
        }
        // The parser's message never repeats the URL (nor its password).
        let config =
            postgres::Config::from_str(s).map_err(|e| PgUrlError::Syntax(e.to_string()))?;
        if config.get_hosts().is_empty() {
            return Err(PgUrlError::NoHost);
        }
        Ok(PgUrl(s.to_string()))
    }
}

impl TryFrom<String> for PgUrl {
    type Error = PgUrlError;

    fn try_from(s: String) -> Result<PgUrl, PgUrlError> {
        s.parse()
    }
}

impl From<PgUrl> for String {
    fn from(url: PgUrl) -> String {
        url.0
    }
}

impl PgUrl {
    fn config(&self) -> postgres::Config {
        postgres::Config::from_str(&self.0).expect("checked when the PgUrl was made")
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

/// `postgres://user@host:port/dbname`, never the password.
impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.config();
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .zip(c.get_ports().iter().chain(std::iter::repeat(&5432)))
            .map(|(h, port)| match h {
                Host::Tcp(h) => format!("{h}:{port}"),
                Host::Unix(p) => format!("{}:{port}", p.display()),
            })
            .collect();
        let user = c.get_user().map(|u| format!("{u}@")).unwrap_or_default();
        let db = c.get_dbname().unwrap_or_default();
        write!(f, "postgres://{user}{}/{db}", hosts.join(","))
    }
}

/// Everything needed to open the PostgreSQL backend.
#[derive(Debug, Clone, PartialEq)]
pub struct PgSettings {
    pub url: PgUrl,
    /// Connections this node keeps open at most.
    pub pool_size: u32,
    /// PEM file of the CA(s) the server's certificate must chain to; when
    /// set, TLS is required and verified. Unset: plain connections.
    pub ca_file: Option<PathBuf>,
    /// Whether opening the store applies pending schema migrations
    /// (otherwise it refuses a schema that is not current).
    pub auto_migrate: bool,
}

/// The pooled connections of one node.
pub type Pool = r2d2_postgres::r2d2::Pool<PostgresConnectionManager<MakeRustlsConnect>>;

/// Settings of every session (`-c name=value`, as `PGOPTIONS`).
const SESSION_OPTIONS: &str = "-c synchronous_commit=on -c jit=off";

/// How long taking a connection from the pool may wait.
const CONNECTION_WAIT: Duration = Duration::from_secs(30);

impl PgSettings {
    pub const DEFAULT_POOL_SIZE: u32 = 16;

    pub fn new(url: PgUrl) -> PgSettings {
        PgSettings {
            url,
            pool_size: PgSettings::DEFAULT_POOL_SIZE,
            ca_file: None,
            auto_migrate: true,
        }
    }

    /// Opens the pool and checks that one connection can be made.
    pub fn connect(&self) -> Result<Pool, DbError> {
        let mut config = self.url.config();
        config.application_name("ctsd");
        // Whatever the server's, database's or role's defaults: a commit
        // is answered only once durable (a 201 promises it), and no
        // statement is compiled by the JIT, which cost PostgreSQL more CPU
        // than the inserts themselves (docs/benchmark.md, On PostgreSQL).
        // Options of the URL come first, so these win.
        let options = [config.get_options().unwrap_or_default(), SESSION_OPTIONS].join(" ");
        config.options(options.trim());
        config.connect_timeout(Duration::from_secs(10));
        let tls = match &self.ca_file {
            None => {
                if config.get_ssl_mode() == SslMode::Require {
                    return Err(DbError::Setting(
                        "sslmode=require needs store.postgres_ca_file to verify the server".into(),
                    ));
                }
                config.ssl_mode(SslMode::Disable);
                rustls_config(rustls::RootCertStore::empty())?
            }
            Some(path) => {
                config.ssl_mode(SslMode::Require);
                rustls_config(read_roots(path)?)?
            }
        };
        let manager = PostgresConnectionManager::new(config, MakeRustlsConnect::new(tls));
        r2d2_postgres::r2d2::Pool::builder()
            .max_size(self.pool_size)
            .min_idle(Some(0))
            .connection_timeout(CONNECTION_WAIT)
            .build(manager)
            .map_err(|e| DbError::Connect {
                url: self.url.to_string(),
                detail: e.to_string(),
            })
    }
}

fn read_roots(path: &PathBuf) -> Result<rustls::RootCertStore, DbError> {
    let bad = |detail: String| {
        DbError::Setting(format!(
            "store.postgres_ca_file {}: {detail}",
            path.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    Ok(roots)
}

fn rustls_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, DbError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Setting(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_printed_without_password() {
        let url: PgUrl = "postgres://cts:s3cret@db.example:6432/cts".parse().unwrap();
        assert_eq!(url.to_string(), "postgres://cts@db.example:6432/cts");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(matches!(
            "mysql://x/y".parse::<PgUrl>(),
            Err(PgUrlError::Scheme)
        ));
        assert!(matches!(
            "host=x dbname=y".parse::<PgUrl>(),
            Err(PgUrlError::Scheme)
        ));
        assert!(matches!(
            "postgres://h/db?sslmode=sometimes".parse::<PgUrl>(),
            Err(PgUrlError::Syntax(_))
        ));
        assert!(matches!(
            "postgresql:///db".parse::<PgUrl>(),
            Err(PgUrlError::NoHost)
        ));
    }
}
