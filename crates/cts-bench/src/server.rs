//! The `ctsd` process under test: start, wait for ready, observe, kill.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    /// Starts `ctsd serve` on `data_dir` (acks only after fsync), with
    /// `settings` as extra `CTS_*` variables, and returns it with the time
    /// from spawn to `GET /readyz` = 200.
    pub fn start(
        bin: &Path,
        data_dir: &Path,
        log: &Path,
        settings: &[(&str, String)],
    ) -> Result<(Server, Duration)> {
        let log_file = File::options().create(true).append(true).open(log)?;
        let spawned = Instant::now();
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("CTS_STORE_FSYNC", "true")
            .envs(settings.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Keep draining stdout so a chatty server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("ctsd listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let mut server = Server {
            child,
            url: String::new(),
        };
        let deadline = Duration::from_secs(600);
        server.url = loop {
            if let Ok(url) = rx.recv_timeout(Duration::from_millis(5)) {
                break url;
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "ctsd exited ({status}) before listening; see {}",
                    log.display()
                );
            }
            if spawned.elapsed() > deadline {
                bail!(
                    "ctsd did not start within {deadline:?}; see {}",
                    log.display()
                );
            }
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        let readyz = format!("{}/readyz", server.url);
        loop {
            if http
                .get(&readyz)
                .send()
                .is_ok_and(|r| r.status().as_u16() == 200)
            {
                return Ok((server, spawned.elapsed()));
            }
            if spawned.elapsed() > deadline {
                bail!("ctsd not ready within {deadline:?}; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// VmRSS and VmHWM (peak) of a process, in bytes.
pub fn memory(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Bytes allocated on disk (as `du` counts them) under `dir`.
pub fn disk_usage(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            disk_usage(&entry.path())?
        } else {
            meta.blocks() * 512
        };
    }
    Ok(total)
}

/// Bytes free for an unprivileged writer on the file system of `dir`.
pub fn free_space(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: statvfs reads the NUL-terminated path and writes only into
    // the struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statvfs {}", dir.display()));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// CPU time process `pid` has used so far (user + system), from
/// `/proc/{pid}/stat` (clock ticks: 10 ms resolution).
pub fn process_cpu(pid: u32) -> Result<Duration> {
    Ok(stat_cpu(pid)?.0)
}

/// CPU time of process `pid` and all its children so far: its own, that
/// of the children it has reaped, and that of those alive now (a
/// PostgreSQL server: the postmaster and its backends).
pub fn tree_cpu(pid: u32) -> Result<Duration> {
    let (own, reaped, _) = stat_cpu(pid)?;
    let mut total = own + reaped;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read.
        if let Ok((cpu, _, ppid)) = stat_cpu(child) {
            if ppid == pid {
                total += cpu;
            }
        }
    }
    Ok(total)
}

/// Of process `pid`: its CPU time, its reaped children's, its parent's pid.
fn stat_cpu(pid: u32) -> Result<(Duration, Duration, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, ppid 4, utime 14, stime 15, cutime 16,
    // cstime 17.
    let after = stat
        .rsplit_once(')')
        .with_context(|| format!("no command name in /proc/{pid}/stat"))?
        .1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        Ok(fields
            .get(i - 3)
            .with_context(|| format!("/proc/{pid}/stat is short"))?
            .parse()?)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let time =
        |t: u64| Duration::from_secs(t / hz) + Duration::from_nanos((t % hz) * 1_000_000_000 / hz);
    Ok((
        time(ticks(14)? + ticks(15)?),
        time(ticks(16)? + ticks(17)?),
        ticks(4)? as u32,
    ))
}

/// CPU time this process has used so far (user + system).
pub fn own_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Files process `pid` holds open (`/proc/PID/fd`).
pub fn open_files(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The value of a label-free series in Prometheus text.
pub fn gauge(metrics: &str, name: &str) -> Result<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .with_context(|| format!("no {name} in /metrics"))?
        .trim()
        .parse()
        .with_context(|| format!("{name} in /metrics"))
}

/// The value of a label-free series of the server's `/metrics`.
pub fn metric(url: &str, name: &str) -> Result<u64> {
    let text = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(format!("{url}/metrics"))
        .send()?
        .error_for_status()?
        .text()?;
    Ok(gauge(&text, name)? as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_label_free_gauges() {
        let text = "# HELP cts_index_segments Index segments on disk\n\
                    cts_index_segments_total 9\ncts_index_segments 12\n\
                    cts_transfer_backlog_all_traces 3.5e3\n";
        assert_eq!(gauge(text, "cts_index_segments").unwrap(), 12.0);
        assert_eq!(
            gauge(text, "cts_transfer_backlog_all_traces").unwrap(),
            3500.0
        );
        assert!(gauge(text, "cts_journal_seq").is_err());
    }
}
