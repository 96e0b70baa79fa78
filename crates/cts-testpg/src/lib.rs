//! A throwaway PostgreSQL server for the tests of the PostgreSQL backend.
//!
//! [`TestPg::start`] runs Debian's `initdb` into a temporary directory and
//! starts `postgres` on a free loopback port with its socket in that
//! directory; dropping the [`TestPg`] stops it (`immediate`) and removes the
//! directory. Nothing on the machine is configured by hand and nothing
//! outlives the test.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the
//! server runs as the `postgres` user that the Debian package creates
//! (through `runuser`). The binaries are found in `CTS_TEST_PG_BIN`, then in
//! the newest `/usr/lib/postgresql/*/bin`, then on `PATH`; when there are
//! none, [`TestPg::start`] panics saying what to install
//! (`scripts/test-deps.sh` installs it): a test never skips silently.
//!
//! The server runs with `fsync=off`: a test's database is thrown away, and
//! the tests kill `ctsd` nodes, never the database. `synchronous_commit`
//! keeps its default (`on`), which is what the backend relies on. A
//! benchmark, which must measure durable commits, starts it with
//! [`TestPg::start_with`] and [`Options::durable`] instead.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A running throwaway PostgreSQL server. Stopped and removed on drop.
pub struct TestPg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    run_as: Option<&'static str>,
}

/// The role every test connects as (a superuser of the throwaway cluster).
pub const USER: &str = "cts";

/// How a server is started; the default is a test's.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `fsync=on` and `full_page_writes=on`, as a production server runs
    /// (a benchmark's commits must be durable); default off.
    pub durable: bool,
    /// The directory the server's temporary directory is made in (default:
    /// the system's temporary directory).
    pub parent: Option<PathBuf>,
    /// More `-c name=value` settings, applied last.
    pub settings: Vec<(String, String)>,
}

impl TestPg {
    /// Starts a new server for a test (see [`Options`]).
    pub fn start() -> TestPg {
        TestPg::start_with(&Options::default())
    }

    /// Starts a new server with one database, `cts`. Panics with what to
    /// install when PostgreSQL is missing, or with the server's log when it
    /// does not start.
    pub fn start_with(opts: &Options) -> TestPg {
        let bin = find_bin().unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed: the PostgreSQL backend's tests need initdb and \
                 postgres. Install the Debian package `postgresql` (scripts/test-deps.sh does), \
                 or set CTS_TEST_PG_BIN to the directory holding initdb"
            )
        });
        let mut dir = tempfile::Builder::new();
        dir.prefix("cts-testpg-");
        let dir = match &opts.parent {
            Some(parent) => dir.tempdir_in(parent),
            None => dir.tempdir(),
        }
        .expect("a temporary directory for PostgreSQL");
        let run_as = if is_root() { Some("postgres") } else { None };
        if let (Some(_), Some(parent)) = (run_as, &opts.parent) {
            // The server's own user must reach its directory inside.
            use std::os::unix::fs::PermissionsExt;
            let mut perms = std::fs::metadata(parent)
                .expect("the parent exists")
                .permissions();
            perms.set_mode(perms.mode() | 0o111);
            std::fs::set_permissions(parent, perms).expect("the parent made traversable");
        }
        if let Some(user) = run_as {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown {user} {}", dir.path().display());
        }
        let mut pg = TestPg {
            bin,
            dir,
            port: 0,
            run_as,
        };
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        // A free port can be taken between the probe and the start: retry.
        for attempt in 0..5 {
            pg.port = free_port();
            let sync = if opts.durable { "on" } else { "off" };
            let mut options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync={sync} \
                 -c full_page_writes={sync} -c max_connections=200",
                pg.port,
                path_str(pg.dir.path())
            );
            for (name, value) in &opts.settings {
                options.push_str(&format!(" -c {name}={value}"));
            }
            let log = pg.log_file();
            let ok = pg.try_run(
                "pg_ctl",
                &[
                    "-D",
                    path_str(&data),
                    "-l",
                    path_str(&log),
                    "-o",
                    &options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            );
            if ok {
                pg.create_database("cts");
                return pg;
            }
            if attempt == 4 {
                let log = std::fs::read_to_string(pg.log_file()).unwrap_or_default();
                panic!("PostgreSQL did not start; its log:\n{log}");
            }
        }
        unreachable!()
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `cts` database.
    pub fn url(&self) -> String {
        self.url_of("cts")
    }

    /// The URL of database `name` on this server.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates another database on this server and returns its URL, so
    /// that tests sharing one server stay apart. Names are unique per
    /// process.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.create_database(&name);
        self.url_of(&name)
    }

    /// Runs `query` with psql on the `cts` database and returns what it
    /// printed, unaligned and without headers (`-tA`), trimmed. Panics with
    /// psql's error when it fails.
    pub fn sql(&self, query: &str) -> String {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        let port = self.port.to_string();
        let out = Command::new(psql)
            .args(["-h", "127.0.0.1", "-p", &port, "-U", USER, "-d", "cts"])
            .args(["-v", "ON_ERROR_STOP=1", "-tAc", query])
            .stdin(Stdio::null())
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {query:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn create_database(&self, name: &str) {
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", USER, name],
        );
    }

    /// The cluster's data directory (for its size on disk).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn output(&self, program: &str, args: &[&str]) -> std::process::Output {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program} does not run: {e}"))
    }

    fn try_run(&self, program: &str, args: &[&str]) -> bool {
        self.output(program, args).status.success()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.output(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl")
            .args(["-D", path_str(&data), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Where a test's database lives, for tests that run on both backends: a
/// temporary directory (SQLite files) or a throwaway server. A store opened
/// on it twice is the same data (a restart, or another node).
pub enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(TestPg),
}

impl Place {
    pub fn sqlite() -> Place {
        Place::Sqlite(tempfile::tempdir().expect("a temporary directory"))
    }

    pub fn postgres() -> Place {
        Place::Postgres(TestPg::start())
    }
}

/// Runs each test `$name(&Place)` on SQLite and on PostgreSQL, as two
/// tests `$name::sqlite` and `$name::postgres`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name(&$crate::Place::sqlite());
                }

                #[test]
                fn postgres() {
                    super::$name(&$crate::Place::postgres());
                }
            }
        )*
    };
}

/// Where initdb, pg_ctl and createdb are: `CTS_TEST_PG_BIN`, the newest
/// Debian cluster version, or `PATH`.
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CTS_TEST_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_answers_and_is_gone_after_drop() {
        let pg = TestPg::start();
        let port = pg.port().to_string();
        assert_eq!(pg.sql("select 40 + 2"), "42");
        assert_eq!(pg.sql("show fsync"), "off");
        let other = pg.fresh_database();
        assert!(other.ends_with("/t0"), "{other}");
        let dir = pg.dir.path().to_path_buf();
        drop(pg);
        assert!(!dir.exists());
        assert!(TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok());
    }

    #[test]
    fn a_durable_server_fsyncs_where_it_is_told_with_its_settings() {
        let parent = tempfile::tempdir().unwrap();
        let pg = TestPg::start_with(&Options {
            durable: true,
            parent: Some(parent.path().to_path_buf()),
            settings: vec![("work_mem".into(), "7MB".into())],
        });
        assert_eq!(pg.sql("show fsync"), "on");
        assert_eq!(pg.sql("show full_page_writes"), "on");
        assert_eq!(pg.sql("show synchronous_commit"), "on");
        assert_eq!(pg.sql("show work_mem"), "7MB");
        assert!(pg.data_dir().starts_with(parent.path()));
    }
}
