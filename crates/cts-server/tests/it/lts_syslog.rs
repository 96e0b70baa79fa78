//! Trace analysis (issue 16) through the `syslog` sink into a real
//! receiver: an `rsyslogd` of the test's own (no system configuration,
//! `imtcp` on a free loopback port, TLS through its `gtls` driver with a
//! certificate the test makes), writing what it receives, as rsyslog
//! parsed it and the whole raw message, one JSON line per message.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lts::{set_lts, system_tracker, test_certs, traces, wait_for_lts_error};
use crate::support::*;
use crate::transfer::wait_for;

/// An rsyslogd, stopped when dropped.
struct Rsyslog {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// The certificate and key of its TLS listener.
    tls: Option<(PathBuf, PathBuf)>,
}

impl Rsyslog {
    fn start(tls: Option<(PathBuf, PathBuf)>) -> Rsyslog {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Rsyslog {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            tls,
        };
        r.restart();
        r
    }

    fn conf(&self) -> String {
        let d = self.dir.path().display();
        let (global_tls, module_tls) = match &self.tls {
            Some((cert, key)) => (
                format!(
                    r#" defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="{c}"
                      defaultNetstreamDriverCertFile="{c}" defaultNetstreamDriverKeyFile="{k}""#,
                    c = cert.display(),
                    k = key.display()
                ),
                r#" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon""#,
            ),
            None => (String::new(), ""),
        };
        let fields = [
            ("raw", "rawmsg"),
            ("facility", "syslogfacility"),
            ("severity", "syslogseverity"),
            ("version", "protocol-version"),
            ("time", "timereported"),
            ("app", "app-name"),
            ("msgid", "msgid"),
            ("sd", "structured-data"),
            ("msg", "msg"),
        ]
        .map(|(out, name)| format!(r#"property(outname="{out}" name="{name}" format="jsonf")"#))
        .join("\n constant(value=\",\")\n");
        format!(
            r#"global(workDirectory="{d}" maxMessageSize="64k"{global_tls})
module(load="imtcp"{module_tls})
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="whole" type="list") {{
 constant(value="{{")
 {fields}
 constant(value="}}\n")
}}
action(type="omfile" file="{d}/received.jsonl" template="whole")
"#,
            port = self.port
        )
    }

    fn restart(&mut self) {
        let conf = self.dir.path().join("rsyslog.conf");
        std::fs::write(&conf, self.conf()).unwrap();
        let rsyslogd = ["/usr/sbin/rsyslogd", "rsyslogd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("rsyslogd");
        let child = Command::new(rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(self.dir.path().join("rsyslogd.pid"))
            .spawn()
            .unwrap_or_else(|e| panic!("{rsyslogd}: {e} (scripts/test-deps.sh installs it)"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd does not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops rsyslogd as an operator would (SIGTERM), waiting for it.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            c.wait().unwrap();
        }
    }

    fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "tcp" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Every message received so far.
    fn messages(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("received.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// trace_id (of the structured data) of every message, in arrival
    /// order.
    fn trace_ids(&self) -> Vec<String> {
        self.messages()
            .iter()
            .map(|m| sd(m)["trace_id"].clone())
            .collect()
    }

    /// Those of `ids` that arrived, in arrival order (the tracker also
    /// records ctsd's own traces, e.g. of its update).
    fn arrived_of(&self, ids: &[String]) -> Vec<String> {
        let ids: std::collections::HashSet<&String> = ids.iter().collect();
        let got = self.trace_ids();
        got.into_iter().filter(|id| ids.contains(id)).collect()
    }

    fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for id in self.trace_ids() {
            *counts.entry(id).or_default() += 1;
        }
        counts
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The SD-PARAMs of the `cts@32473` element, unescaped (RFC 5424 §6.3.3).
fn sd(message: &Value) -> HashMap<String, String> {
    let sd = message["sd"].as_str().unwrap();
    let body = sd
        .strip_prefix("[cts@32473 ")
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or_else(|| panic!("one cts@32473 element: {sd}"));
    let (mut params, mut chars) = (HashMap::new(), body.chars());
    loop {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if name.is_empty() {
            return params;
        }
        assert_eq!(chars.next(), Some('"'), "{sd}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(chars.next().unwrap()),
                '"' => break,
                c => value.push(c),
            }
        }
        params.insert(name.trim().to_string(), value);
        chars.next(); // the space between params
    }
}

fn server_for(receiver: &Rsyslog, ca: Option<&Path>, root: &Path) -> TestServer {
    let mut b = TestServer::builder()
        .root(root)
        .env("CTS_LTS_KIND", "syslog")
        .env("CTS_LTS_ENDPOINT", &receiver.endpoint())
        .env("CTS_LTS_INTERVAL", "200ms")
        .env("CTS_LTS_MAX_BACKOFF", "1s")
        .env("CTS_TRANSFER_PERIOD", "10s");
    if let Some(ca) = ca {
        b = b.env("CTS_LTS_CA_FILE", ca.to_str().unwrap());
    }
    b.start()
}

/// Issue 16: every trace of a tracker with `lts` on arrives at rsyslog
/// once, as RFC 5424 with the fields in structured data, the severity of
/// its rating (facility local0) and the trace as MSG; the tracker of a
/// project with `lts` off sends nothing.
#[test]
fn every_trace_arrives_at_rsyslog_once_with_its_fields() {
    let receiver = Rsyslog::start(None);
    let root = tempfile::tempdir().unwrap();
    let server = server_for(&receiver, None, root.path());
    let pid = server.admin.project_id.clone();
    set_lts(&server, "system", "system", true);
    let (ids, batch) = traces(30);
    server.report("main", &batch);
    let (other_ids, other) = traces(10);
    server.report("other", &other);
    wait_for("every trace at rsyslog", Duration::from_secs(30), || {
        let got = receiver.counts();
        ids.iter().all(|id| got.contains_key(id))
    });
    // What might still come in error would come within a few passes.
    std::thread::sleep(Duration::from_secs(1));
    let got = receiver.counts();
    for id in &ids {
        assert_eq!(got.get(id), Some(&1), "{id}");
    }
    for id in &other_ids {
        assert!(!got.contains_key(id), "{id} of a tracker with lts off");
    }

    let messages = receiver.messages();
    let by_id = |id: &str| {
        messages
            .iter()
            .find(|m| sd(m)["trace_id"] == id)
            .unwrap()
            .clone()
    };
    let m = by_id(&ids[3]);
    assert_eq!(m["version"], "1", "{m}");
    assert_eq!(m["app"], "cts");
    assert_eq!(m["msgid"], "createServer");
    assert_eq!(m["facility"], "16", "local0");
    assert_eq!(m["severity"], "4", "warning");
    assert_eq!(by_id(&ids[0])["severity"], "3", "incident: error");
    assert_eq!(by_id(&ids[1])["severity"], "6", "normal: informational");
    assert!(m["raw"].as_str().unwrap().starts_with("<132>1 "), "{m}");
    let body: Value = serde_json::from_str(m["msg"].as_str().unwrap()).unwrap();
    assert_eq!(body["trace_id"], ids[3].as_str());
    assert_eq!(body["resource_name"], "vm-3");
    let p = sd(&m);
    let tracker = system_tracker(&server);
    for (k, v) in [
        ("service_type", "ECS"),
        ("resource_type", "ecs"),
        ("resource_name", "vm-3"),
        ("trace_name", "createServer"),
        ("trace_rating", "warning"),
        ("user", "alice"),
        ("source_ip", "10.0.0.1"),
        ("code", "200"),
        ("project_id", pid.as_str()),
        ("log_group", "CTS"),
        ("log_topic", "system-trace"),
        ("log_stream_id", tracker["stream_id"].as_str().unwrap()),
    ] {
        assert_eq!(p.get(k).map(String::as_str), Some(v), "{k} in {p:?}");
    }
    assert_eq!(tracker["lts"]["status"], "enabled", "{tracker}");
}

/// Issue 16: rsyslog stopped for a while, then started again, gets every
/// trace once, in order; meanwhile the tracker says `error`/`unreachable`.
#[test]
fn rsyslog_stopped_then_back_gets_everything_once_in_order() {
    let mut receiver = Rsyslog::start(None);
    let root = tempfile::tempdir().unwrap();
    let server = server_for(&receiver, None, root.path());
    set_lts(&server, "system", "system", true);
    let (mut ids, batch) = traces(20);
    server.report("main", &batch);
    wait_for("the first traces", Duration::from_secs(30), || {
        receiver.arrived_of(&ids).len() >= ids.len()
    });

    receiver.stop();
    for _ in 0..4 {
        let (more, batch) = traces(40);
        server.report("main", &batch);
        ids.extend(more);
    }
    wait_for_lts_error(&server, "unreachable");
    receiver.restart();
    wait_for(
        "every trace after rsyslog is back",
        Duration::from_secs(30),
        || receiver.arrived_of(&ids).len() >= ids.len(),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.arrived_of(&ids), ids, "each once, in order");
    wait_for("the tracker to recover", Duration::from_secs(10), || {
        system_tracker(&server)["lts"]["status"] == "enabled"
    });
}

/// Issue 16: an RFC 5425 (TLS) rsyslog whose certificate the configured
/// CA does not sign is refused, and the tracker shows `error`/`tlsError`;
/// with the right CA the traces arrive over TLS.
#[test]
fn rsyslog_over_tls_with_a_wrong_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, wrong_ca) = test_certs(dir.path());
    let receiver = Rsyslog::start(Some((cert.clone(), key)));
    let root = tempfile::tempdir().unwrap();

    let mut server = server_for(&receiver, Some(&wrong_ca), root.path());
    set_lts(&server, "system", "system", true);
    let (ids, batch) = traces(5);
    server.report("main", &batch);
    wait_for_lts_error(&server, "tlsError");
    assert!(receiver.messages().is_empty());
    server.terminate();

    let server = server_for(&receiver, Some(&cert), root.path());
    wait_for(
        "the traces over TLS with the right CA",
        Duration::from_secs(20),
        || {
            let got = receiver.counts();
            ids.iter().all(|id| got.contains_key(id))
        },
    );
    assert_eq!(system_tracker(&server)["lts"]["status"], "enabled");
}
