//! Starting the real `ctsd` and talking to it over HTTP.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use tempfile::TempDir;

pub const MINUTE: i64 = 60_000;

/// The service of every test trace: a filter that leaves out what CTS
/// records about itself (a project's `createTracker`, identity changes).
pub fn ecs() -> (&'static str, String) {
    ("service_type", "ECS".to_string())
}
pub const HOUR: i64 = 60 * MINUTE;

pub use cts_clock::now_ms;

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

/// The journal files of a data directory, oldest first.
pub fn wal_files(data_dir: &Path) -> Vec<PathBuf> {
    let files = cts_store::journal::list_files(&data_dir.join("journal")).unwrap();
    files.into_iter().map(|(_, path)| path).collect()
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
    listen: String,
    ca: Option<Vec<u8>>,
    open_files: Option<u64>,
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

    /// The `--listen` address (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: &str) -> Builder {
        self.listen = addr.into();
        self
    }

    /// Starts `ctsd` with this soft limit of open files.
    pub fn open_files(mut self, soft: u64) -> Builder {
        self.open_files = Some(soft);
        self
    }

    /// A PEM certificate the test client trusts (for a TLS server).
    pub fn ca(mut self, pem: &[u8]) -> Builder {
        self.ca = Some(pem.to_vec());
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
        cmd.args(["serve", "--listen", &self.listen, "--data-dir"])
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
        if let Some(soft) = self.open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: only getrlimit/setrlimit between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut l = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    l.rlim_cur = soft.min(l.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
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
        let mut client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60));
        if let Some(pem) = &self.ca {
            client = client.add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap());
        }
        let client = client.build().unwrap();
        let admin = match std::fs::read(data_dir.join("bootstrap.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).expect("bootstrap.json parses"),
            Err(e) => fail_start(&mut child, &log, &format!("no bootstrap.json: {e}")),
        };
        TestServer {
            child,
            _stdout: stdout,
            base: addr.to_string(),
            root,
            data_dir,
            log,
            client,
            admin,
            projects: Mutex::new(HashMap::new()),
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
    /// What the server wrote to `bootstrap.json` on its first start.
    pub admin: Bootstrap,
    projects: Mutex<HashMap<String, String>>,
    _tmp: Option<TempDir>,
}

impl TestServer {
    pub fn builder() -> Builder {
        Builder {
            env: Vec::new(),
            args: Vec::new(),
            root: None,
            listen: "127.0.0.1:0".into(),
            ca: None,
            open_files: None,
        }
    }

    pub fn start() -> TestServer {
        TestServer::builder().start()
    }

    /// A builder of an HTTPS-only server with a fresh self-signed
    /// certificate for 127.0.0.1 that its client trusts; the directory
    /// holding the certificate must outlive the start.
    pub fn tls_builder() -> (TempDir, Builder) {
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        let builder = TestServer::builder()
            .arg("--tls-cert")
            .arg(cert.to_str().unwrap())
            .arg("--tls-key")
            .arg(key.to_str().unwrap())
            .ca(certified.cert.pem().as_bytes());
        (dir, builder)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn process_id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.process_id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.wait_exit(Duration::from_secs(10));
        assert!(
            status.success(),
            "{status:?}; log:
{}",
            self.log()
        );
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

    /// The admin's access key, for signing requests.
    pub fn signer(&self) -> Signer {
        Signer {
            base: self.base.clone(),
            cred: Cred::Key {
                ak: self.admin.access_key.clone(),
                sk: self.admin.secret_key.clone(),
            },
        }
    }

    /// Requests made with another credential.
    pub fn with(&self, cred: Cred) -> Signer {
        Signer {
            base: self.base.clone(),
            cred,
        }
    }

    pub fn get(&self, path_and_query: &str) -> Answer {
        self.signer()
            .send(&self.client, "GET", path_and_query, None)
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> Answer {
        self.signer()
            .send(&self.client, method.as_str(), path, None)
    }

    pub fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        self.signer()
            .send(&self.client, "POST", path, Some((content_type, body)))
    }

    pub fn put_json(&self, path: &str, body: &Value) -> Answer {
        self.signer().send(
            self.client(),
            "PUT",
            path,
            Some(("application/json", serde_json::to_vec(body).unwrap())),
        )
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.post_raw(path, "application/json", serde_json::to_vec(body).unwrap())
    }

    /// The id of the test project `name`: the bootstrap project for
    /// `"main"`, else a project of that name created on first use, on which
    /// the admin holds `cts_admin` and CTS is enabled (management tracker).
    pub fn pid(&self, name: &str) -> String {
        if name == "main" {
            return self.admin.project_id.clone();
        }
        // Held throughout: threads reporting to a new project create it once.
        let mut projects = self.projects.lock().unwrap();
        if let Some(id) = projects.get(name) {
            return id.clone();
        }
        // A restarted server has it already.
        let found = self.get(&format!("/v3/projects?name={name}"));
        if let Some(id) = found.body["projects"][0]["id"].as_str() {
            let id = id.to_string();
            projects.insert(name.to_string(), id.clone());
            return id;
        }
        let a = self.post_json(
            "/v3/projects",
            &json!({"project": {"name": name, "region": self.admin.region}}),
        );
        assert_eq!(a.status, 201, "creating project {name}: {}", a.text);
        let id = a.body["project"]["id"].as_str().unwrap().to_string();
        let user = self.admin_user_id();
        let a = self.request(
            reqwest::Method::PUT,
            &format!("/v3/projects/{id}/users/{user}/roles/cts_admin"),
        );
        assert_eq!(a.status, 204, "{}", a.text);
        // CTS records nothing in a project until its management tracker exists.
        let a = self.post_json(
            &format!("/v3/{id}/tracker"),
            &json!({"tracker_type": "system", "tracker_name": "system"}),
        );
        assert_eq!(a.status, 201, "{}", a.text);
        projects.insert(name.to_string(), id.clone());
        id
    }

    /// Creates data tracker `name` in test project `project`, recording the
    /// reads and writes of bucket `name`.
    pub fn data_tracker(&self, project: &str, name: &str) {
        let body = json!({
            "tracker_type": "data",
            "tracker_name": name,
            "data_bucket": {"data_bucket_name": name, "data_event": ["READ", "WRITE"]},
        });
        let a = self.post_json(&format!("/v3/{}/tracker", self.pid(project)), &body);
        assert_eq!(a.status, 201, "{}", a.text);
    }

    /// The id of the bootstrap admin user.
    pub fn admin_user_id(&self) -> String {
        let a = self.get(&format!("/v3/users?name={}", self.admin.user_name));
        assert_eq!(a.status, 200, "{}", a.text);
        a.body["users"][0]["id"].as_str().unwrap().to_string()
    }

    pub fn post_traces(&self, project: &str, body: &Value) -> Answer {
        self.post_json(&format!("/v3/{}/traces", self.pid(project)), body)
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
        let a = self.query_answer(&format!("/v3/{}/traces", self.pid(project)), params);
        assert_eq!(a.status, 200, "{}", a.text);
        a.body
    }

    pub fn query_answer(&self, path: &str, params: &[(&str, String)]) -> Answer {
        let query = serde_urlencoded::to_string(params).unwrap();
        self.get(&format!("{path}?{query}"))
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

/// The keys of `DATA_DIR/bootstrap.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Bootstrap {
    pub domain_id: String,
    pub domain_name: String,
    pub project_id: String,
    pub region: String,
    pub user_name: String,
    pub password: String,
    pub access_key: String,
    pub secret_key: String,
    pub endpoint: String,
}

/// How a request proves who sends it.
#[derive(Debug, Clone)]
pub enum Cred {
    /// Signed with SDK-HMAC-SHA256, as the official SDK does.
    Key { ak: String, sk: String },
    /// `X-Auth-Token`.
    Token(String),
    /// Nothing.
    Anonymous,
}

/// Sends requests with one credential; `Send`, for writer threads.
#[derive(Debug, Clone)]
pub struct Signer {
    pub base: String,
    pub cred: Cred,
}

impl Signer {
    /// Sends `method path_and_query` with an optional (content type, body).
    pub fn send(
        &self,
        client: &reqwest::blocking::Client,
        method: &str,
        path_and_query: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Answer {
        self.try_send(client, method, path_and_query, body)
            .unwrap_or_else(|e| panic!("{method} {path_and_query}: {e}"))
    }

    pub fn try_send(
        &self,
        client: &reqwest::blocking::Client,
        method: &str,
        path_and_query: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> reqwest::Result<Answer> {
        let url = format!("{}{path_and_query}", self.base);
        let (content_type, bytes) = body.unwrap_or(("application/json", Vec::new()));
        let mut headers = vec![("Content-Type".to_string(), content_type.to_string())];
        match &self.cred {
            Cred::Key { ak, sk } => {
                cts_sign::sign_request(
                    method,
                    &url,
                    &mut headers,
                    &bytes,
                    ak,
                    sk,
                    cts_sign::unix_now(),
                )
                .expect("the request can be signed");
            }
            Cred::Token(t) => headers.push(("X-Auth-Token".into(), t.clone())),
            Cred::Anonymous => {}
        }
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client.request(method, &url).body(bytes);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        Ok(answer(req.send()?))
    }

    pub fn get(&self, client: &reqwest::blocking::Client, path_and_query: &str) -> Answer {
        self.send(client, "GET", path_and_query, None)
    }
}

/// The status, headers and body of a response.
pub fn answer(res: reqwest::blocking::Response) -> Answer {
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
