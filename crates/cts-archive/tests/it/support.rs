//! Real peers for the tests: moto's S3 server and the `age` command.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cts_archive::{ObjectStorage, S3Config, StorageConfig};

/// moto's S3 server on a port of its own, stopped when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    /// Starts `target/s3-venv/bin/moto_server` (or `$CTS_TEST_MOTO_SERVER`)
    /// on a free loopback port. Fails, never skips, when it is missing.
    pub fn start() -> Moto {
        Self::start_with_env(&[])
    }

    /// As [`Moto::start`], with extra environment for moto.
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let bin = std::env::var_os("CTS_TEST_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../target/s3-venv/bin/moto_server")
            });
        assert!(
            bin.exists(),
            "moto's S3 server is not installed at {}: run scripts/s3-test-server.sh \
             (installs the PyPI package moto[server] into target/s3-venv) or set CTS_TEST_MOTO_SERVER",
            bin.display()
        );
        // Port 0: the server picks a free port and says which on stderr.
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Keeps reading after the port is known: a full pipe would block moto.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("Running on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(endpoint) => Moto { child, endpoint },
            Err(_) => {
                let _ = child.kill();
                panic!("{} did not say where it listens within 60 s", bin.display())
            }
        }
    }

    pub fn storage(&self) -> ObjectStorage {
        ObjectStorage::new(StorageConfig::S3(self.config())).expect("S3 storage")
    }

    pub fn config(&self) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint.clone()),
            region: "eu-west-1".into(),
            access_key: "testing".into(),
            secret_key: "testing".into(),
            path_style: true,
            allow_http: true,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `age` command, or a failure naming the package that provides it.
pub fn age_command() -> Command {
    let found = Command::new("age")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the `age` command is missing: install the Debian package `age` (apt-get install -y age)"
    );
    Command::new("age")
}
