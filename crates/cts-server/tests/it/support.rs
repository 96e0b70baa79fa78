//! Starting the real `ctsd` and talking to it over HTTP.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tempfile::TempDir;

pub const MINUTE: i64 = 60_000;
pub const HOUR: i64 = 60 * MINUTE;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A minimal valid management trace.
pub fn trace(time: i64) -> Value {
    json!({
        "time": time,
        "user": {"id": "u-1", "name": "alice", "domain": {"id": "d-1", "name": "acme"}},
        "service_type": "ECS",
        "resource_type": "ecs",
        "trace_name": "createServer",
        "trace_type": "ApiCall",
        "code": "200",
        "source_ip": "10.0.0.1"
    })
}

/// A valid trace with a trace_id of its own.
pub fn trace_with_id(time: i64) -> (String, Value) {
    let id = uuid();
    let mut t = trace(time);
    t["trace_id"] = json!(id);
    (id, t)
}

pub fn batch(traces: &[Value]) -> Value {
    json!({ "traces": traces })
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// Asserts a CTS error body with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.body["error_code"], code, "{}", self.text);
        assert!(self.body["error_msg"].is_string(), "{}", self.text);
    }

    /// The `(index, field)` pairs of a refused report.
    pub fn field_errors(&self) -> Vec<(Option<u64>, String)> {
        self.body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors in {}", self.text))
            .iter()
            .map(|e| {
                (
                    e["index"].as_u64(),
                    e["field"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

pub struct Builder {
    env: Vec<(String, String)>,
    args: Vec<String>,
    root: Option<PathBuf>,
}

impl Builder {
    /// An extra argument of `ctsd serve`.
    pub fn arg(mut self, arg: &str) -> Builder {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Builder {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Use `root/data` as the data directory (to restart on the same data).
    pub fn root(mut self, root: &Path) -> Builder {
        self.root = Some(root.to_path_buf());
        self
    }

    pub fn start(self) -> TestServer {
        let (tmp, root) = match self.root {
            Some(r) => (None, r),
            None => {
                let t = tempfile::tempdir().unwrap();
                let r = t.path().to_path_buf();
                (Some(t), r)
            }
        };
        let data_dir = root.join("data");
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let log = root.join(format!(
            "ctsd-{}.log",
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctsd"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap());
        // Only the settings of this test, whatever the developer's shell has.
        for (k, _) in std::env::vars() {
            if k.starts_with("CTS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env);
        let mut child = cmd.spawn().expect("ctsd starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send((line, reader));
        });
        let Ok((line, stdout)) = rx.recv_timeout(Duration::from_secs(120)) else {
            fail_start(&mut child, &log, "no listening line within 120 s");
        };
        let Some(addr) = line.trim().strip_prefix("ctsd listening on ") else {
            fail_start(&mut child, &log, &format!("unexpected first line {line:?}"));
        };
        TestServer {
            child,
            _stdout: stdout,
            base: addr.to_string(),
            root,
            data_dir,
            log,
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            _tmp: tmp,
        }
    }
}

fn fail_start(child: &mut Child, log: &Path, why: &str) -> ! {
    let _ = child.kill();
    let status = child.wait();
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("ctsd did not start ({why}; {status:?}); its log:\n{log}");
}

/// A running `ctsd`; killed when dropped.
pub struct TestServer {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// Directory holding `data/` and the logs.
    pub root: PathBuf,
    pub data_dir: PathBuf,
    log: PathBuf,
    client: reqwest::blocking::Client,
    _tmp: Option<TempDir>,
}

impl TestServer {
    pub fn builder() -> Builder {
        Builder {
            env: Vec::new(),
            args: Vec::new(),
            root: None,
        }
    }

    pub fn start() -> TestServer {
        TestServer::builder().start()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ctsd did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    fn answer(res: reqwest::blocking::Response) -> Answer {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().unwrap();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            headers,
        }
    }

    pub fn get(&self, path_and_query: &str) -> Answer {
        let res = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .unwrap();
        Self::answer(res)
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> Answer {
        let res = self
            .client
            .request(method, format!("{}{path}", self.base))
            .send()
            .unwrap();
        Self::answer(res)
    }

    pub fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap();
        Self::answer(res)
    }

    pub fn post_traces(&self, project: &str, body: &Value) -> Answer {
        self.post_raw(
            &format!("/v3/{project}/traces"),
            "application/json",
            serde_json::to_vec(body).unwrap(),
        )
    }

    /// Reports `traces`, asserting 201; returns the answer body.
    #[track_caller]
    pub fn report(&self, project: &str, traces: &[Value]) -> Value {
        let a = self.post_traces(project, &batch(traces));
        assert_eq!(a.status, 201, "{}", a.text);
        a.body
    }

    /// `GET /v3/{project}/traces` with `params`, asserting 200.
    #[track_caller]
    pub fn query(&self, project: &str, params: &[(&str, String)]) -> Value {
        let a = self.query_answer(&format!("/v3/{project}/traces"), params);
        assert_eq!(a.status, 200, "{}", a.text);
        a.body
    }

    pub fn query_answer(&self, path: &str, params: &[(&str, String)]) -> Answer {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .query(params)
            .send()
            .unwrap();
        Self::answer(res)
    }

    /// Every page of a v3 query, following `marker` until it is null.
    #[track_caller]
    pub fn query_all(&self, project: &str, params: &[(&str, String)]) -> Vec<Value> {
        let mut all = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut p = params.to_vec();
            if let Some(n) = &next {
                p.push(("next", n.clone()));
            }
            let page = self.query(project, &p);
            let traces = page["traces"].as_array().unwrap();
            assert_eq!(page["meta_data"]["count"], traces.len());
            all.extend(traces.iter().cloned());
            match page["meta_data"]["marker"].as_str() {
                Some(m) => next = Some(m.to_string()),
                None => return all,
            }
            assert!(all.len() < 1_000_000, "paging does not end");
        }
    }

    /// The traces found by `trace_id` (whatever the time window).
    pub fn by_id(&self, project: &str, id: &str) -> Vec<Value> {
        let page = self.query(project, &[("trace_id", id.to_string())]);
        assert_eq!(
            page["meta_data"]["count"],
            page["traces"].as_array().unwrap().len()
        );
        page["traces"].as_array().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ids of a list of traces, in order.
pub fn ids(traces: &[Value]) -> Vec<String> {
    traces
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect()
}
