//! The web console over plain HTTP (no browser): sign-in and its traces,
//! the cookie's flags, CSRF, a viewer's refusal, idle expiry, sign-out,
//! and that the console's cookie opens no API route. The browser tests
//! are in `console_browser.rs`.

use std::time::Duration;

use serde_json::Value;

use crate::auth::user_with_role;
use crate::selfaudit::named;
use crate::support::*;

/// A browser without JavaScript: keeps the console's cookies, never
/// follows redirects.
pub struct Console {
    base: String,
    client: reqwest::blocking::Client,
    cookies: Vec<(String, String)>,
    /// The CSRF token of the last form seen.
    pub csrf: String,
}

pub struct Page {
    pub status: u16,
    pub location: String,
    pub set_cookies: Vec<String>,
    pub body: String,
}

/// The `value` of the first `<input name="csrf_token" value="...">`.
fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf_token\" value=\"")?;
    let rest = &html[at + "name=\"csrf_token\" value=\"".len()..];
    Some(rest[..rest.find('"')?].to_string())
}

impl Console {
    pub fn new(server: &TestServer) -> Console {
        Console {
            base: server.base.clone(),
            client: reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .danger_accept_invalid_certs(true)
                .build()
                .unwrap(),
            cookies: Vec::new(),
            csrf: String::new(),
        }
    }

    fn cookie_header(&self) -> String {
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join("; ")
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn send(&mut self, req: reqwest::blocking::RequestBuilder) -> Page {
        let res = req.header("Cookie", self.cookie_header()).send().unwrap();
        let status = res.status().as_u16();
        let h = res.headers().clone();
        let location = h
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let set_cookies: Vec<String> = h
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for c in &set_cookies {
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
        let body = res.text().unwrap();
        if let Some(t) = csrf_of(&body) {
            self.csrf = t;
        }
        Page {
            status,
            location,
            set_cookies,
            body,
        }
    }

    pub fn get(&mut self, path: &str) -> Page {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req)
    }

    /// Posts `form` as is (no token added).
    pub fn post_raw(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.client.post(format!("{}{path}", self.base)).form(form);
        self.send(req)
    }

    /// Posts `form` with the CSRF token of the last page.
    pub fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone();
        let mut all = vec![("csrf_token", csrf.as_str())];
        all.extend_from_slice(form);
        self.post_raw(path, &all)
    }

    pub fn sign_in(&mut self, user: &str, password: &str, domain: &str) -> Page {
        let login = self.get("/console/login");
        assert_eq!(login.status, 200, "{}", login.body);
        self.post(
            "/console/login",
            &[
                ("username", user),
                ("password", password),
                ("domain", domain),
            ],
        )
    }
}

/// A console signed in as the bootstrap admin.
pub fn admin_console(server: &TestServer) -> Console {
    let mut c = Console::new(server);
    let a = &server.admin;
    let p = c.sign_in(&a.user_name, &a.password, &a.domain_name);
    assert_eq!(
        (p.status, p.location.as_str()),
        (303, "/console"),
        "{}",
        p.body
    );
    let home = c.get("/console");
    assert_eq!(home.status, 200, "{}", home.body);
    c
}

/// The traces named `trace_name`, once `pred` holds for them (refusals are
/// recorded in the background).
fn traces_until(server: &TestServer, name: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let pid = server.admin.project_id.clone();
    for _ in 0..100 {
        let t = named(server, &pid, name);
        if pred(&t) {
            return t;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name}: {:?}", named(server, &pid, name));
}

fn system_status(server: &TestServer) -> String {
    let pid = &server.admin.project_id;
    let a = server.get(&format!("/v3/{pid}/trackers?tracker_name=system"));
    a.body["trackers"][0]["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn sign_in_sets_a_strict_session_cookie_and_is_on_record() {
    let server = TestServer::start();
    let mut c = Console::new(&server);
    let p = c.get("/console");
    assert_eq!((p.status, p.location.as_str()), (303, "/console/login"));
    let login = c.get("/console/login");
    assert!(login.body.contains("name=\"username\"") && login.body.contains("name=\"domain\""));
    assert!(login.body.contains("type=\"password\" "), "{}", login.body);

    let a = server.admin.clone();
    let wrong = c.post(
        "/console/login",
        &[
            ("username", &a.user_name),
            ("password", "wrong-pass-1"),
            ("domain", &a.domain_name),
        ],
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong
        .body
        .contains("the user name, domain or password is wrong"));
    assert!(c.cookie("cts_console").is_none());

    let ok = c.post(
        "/console/login",
        &[
            ("username", &a.user_name),
            ("password", &a.password),
            ("domain", &a.domain_name),
        ],
    );
    assert_eq!(
        (ok.status, ok.location.as_str()),
        (303, "/console"),
        "{}",
        ok.body
    );
    let session = ok
        .set_cookies
        .iter()
        .find(|c| c.starts_with("cts_console="))
        .unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(flag), "{session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: {session}");

    let logins = traces_until(&server, "login", |t| t.len() == 2);
    // Newest first: the sign-in, then the failed one.
    for (t, code) in logins.iter().zip(["200", "401"]) {
        assert_eq!(t["trace_type"], "ConsoleAction", "{t}");
        assert_eq!(t["code"], code, "{t}");
        assert_eq!(t["user"]["name"], a.user_name.as_str(), "{t}");
        assert_eq!(
            t["user"]["invoked_by"],
            serde_json::json!(["service.console"]),
            "{t}"
        );
    }
    assert_eq!(logins[1]["trace_rating"], "warning");
}

#[test]
fn the_session_cookie_opens_no_api_route() {
    let server = TestServer::start();
    let c = admin_console(&server);
    let pid = &server.admin.project_id;
    let cookie = c.cookie_header();
    for path in [
        format!("/v3/{pid}/traces"),
        format!("/v3/{pid}/trackers"),
        "/v3/auth/projects".into(),
    ] {
        let res = c
            .client
            .get(format!("{}{path}", server.base))
            .header("Cookie", &cookie)
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 401, "{path}");
        let body: Value = res.json().unwrap();
        assert_eq!(body["error_code"], "CTS.0002", "{body}");
    }
}

#[test]
fn posts_without_the_sessions_csrf_token_are_refused() {
    let server = TestServer::start();
    let mut c = admin_console(&server);
    c.get("/console/trackers");
    let disable = [
        ("action", "disable"),
        ("name", "system"),
        ("type", "system"),
    ];
    let missing = c.post_raw("/console/trackers/confirm", &disable);
    let mut forged = vec![("csrf_token", "0".repeat(64))];
    forged.extend(disable.iter().map(|(k, v)| (*k, v.to_string())));
    let forged: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let wrong = c.post_raw("/console/trackers/confirm", &forged);
    for p in [missing, wrong] {
        assert_eq!(p.status, 403, "{}", p.body);
        let body: Value = serde_json::from_str(&p.body).unwrap();
        assert_eq!(body["error_code"], "CTS.0002");
        assert!(
            body["error_msg"]
                .as_str()
                .unwrap()
                .starts_with("csrf_token: "),
            "{body}"
        );
    }
    // The sign-in form too: no token, no sign-in.
    let mut fresh = Console::new(&server);
    let a = &server.admin;
    let p = fresh.post_raw(
        "/console/login",
        &[
            ("username", &a.user_name),
            ("password", &a.password),
            ("domain", &a.domain_name),
        ],
    );
    assert_eq!(p.status, 403, "{}", p.body);
    assert_eq!(system_status(&server), "enabled");

    // With the token, the same change is made, as a console action.
    let p = c.post("/console/trackers/confirm", &disable);
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(system_status(&server), "disabled");
    let p = c.post(
        "/console/trackers/confirm",
        &[("action", "enable"), ("name", "system"), ("type", "system")],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(system_status(&server), "enabled");
    let updates = traces_until(&server, "updateTracker", |t| t.len() == 2);
    for t in &updates {
        assert_eq!(t["trace_type"], "ConsoleAction", "{t}");
        assert_eq!(
            t["user"]["invoked_by"],
            serde_json::json!(["service.console"]),
            "{t}"
        );
        assert_eq!(t["service_type"], "CTS");
    }
}

#[test]
fn a_viewer_sees_no_change_controls_and_changes_are_refused() {
    let server = TestServer::start();
    let pid = server.admin.project_id.clone();
    user_with_role(&server, "auditor", &pid, "cts_viewer");
    let mut c = Console::new(&server);
    let p = c.sign_in("auditor", "Secret-pass-1", &server.admin.domain_name);
    assert_eq!(
        (p.status, p.location.as_str()),
        (303, "/console"),
        "{}",
        p.body
    );
    let page = c.get("/console/trackers");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("data-tracker=\"system\""),
        "{}",
        page.body
    );
    for control in ["Disable", "Delete", "Modify", "create-tracker"] {
        assert!(!page.body.contains(control), "{control} shown to a viewer");
    }
    assert_eq!(c.get("/console/traces").status, 200);
    let refused = [
        c.post(
            "/console/trackers/confirm",
            &[
                ("action", "disable"),
                ("name", "system"),
                ("type", "system"),
            ],
        ),
        c.post(
            "/console/trackers",
            &[
                ("tracker_type", "data"),
                ("tracker_name", "t1"),
                ("data_bucket_name", "b1"),
            ],
        ),
        c.get("/console/trackers/edit?name=system&type=system"),
    ];
    for p in refused {
        assert_eq!(p.status, 403, "{}", p.body);
        assert!(p.body.contains("CTS.0013"), "{}", p.body);
    }
    assert_eq!(system_status(&server), "enabled");
}

#[test]
fn sessions_end_when_idle_and_at_sign_out() {
    let server = TestServer::builder()
        .env("CTS_AUTH_CONSOLE_IDLE_TIMEOUT", "1s")
        .start();
    let mut c = admin_console(&server);
    std::thread::sleep(Duration::from_millis(1300));
    let p = c.get("/console/traces");
    assert_eq!((p.status, p.location.as_str()), (303, "/console/login"));

    let mut c = admin_console(&server);
    let p = c.post("/console/logout", &[]);
    assert_eq!((p.status, p.location.as_str()), (303, "/console/login"));
    assert!(p
        .set_cookies
        .iter()
        .any(|s| s.starts_with("cts_console=;") && s.contains("Max-Age=0")));
    let p = c.get("/console");
    assert_eq!(p.status, 303, "signed out: {}", p.body);
    traces_until(&server, "logout", |t| t.len() == 1);
}

#[test]
fn the_cookie_is_secure_over_tls() {
    let (_certs, server) = TestServer::tls_builder();
    let server = server.start();
    let mut c = Console::new(&server);
    let a = server.admin.clone();
    let p = c.sign_in(&a.user_name, &a.password, &a.domain_name);
    assert_eq!(p.status, 303, "{}", p.body);
    let session = p
        .set_cookies
        .iter()
        .find(|c| c.starts_with("cts_console="))
        .unwrap();
    assert!(session.contains("; Secure"), "{session}");
}

#[test]
fn the_trace_list_filters_pages_and_exports() {
    let server = TestServer::start();
    let now = now_ms();
    let mut traces = Vec::new();
    for i in 0..5 {
        let mut t = trace(now - i * 1000);
        t["resource_id"] = "vm-1".into();
        t["resource_name"] = format!("web-{i}").into();
        traces.push(t);
    }
    let mut other = trace(now);
    other["resource_id"] = "vm-2".into();
    traces.push(other);
    server.report("main", &traces);
    let mut c = admin_console(&server);
    let page = c.get("/console/traces?range=hour&service_type=ECS&resource_id=vm-1&limit=10");
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.body.matches("data-trace-id=").count(),
        5,
        "{}",
        page.body
    );
    // A filter the API refuses shows its message.
    let bad = c.get("/console/traces?service_type=ecs");
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("CTS.0300") && bad.body.contains("service_type"),
        "{}",
        bad.body
    );
    let csv = c.get("/console/traces/export?range=hour&resource_id=vm-1&format=csv");
    assert_eq!(csv.status, 200);
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines.len(), 6, "{}", csv.body);
    assert!(lines[0].starts_with("time,trace_id,trace_name"));
    assert!(
        lines[1].contains("web-0") && lines[5].contains("web-4"),
        "newest first: {}",
        csv.body
    );
    let json = c.get("/console/traces/export?range=hour&resource_id=vm-2&format=json");
    let body: Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(body["traces"].as_array().unwrap().len(), 1);
}

#[test]
fn notification_changes_are_console_actions() {
    let server = TestServer::start();
    let mut c = admin_console(&server);
    c.get("/console/notifications");
    let bad = c.post(
        "/console/notifications",
        &[
            ("notification_name", "bad name"),
            ("operation_type", "complete"),
        ],
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body.contains("notification_name"),
        "the API's message: {}",
        bad.body
    );
    let p = c.post(
        "/console/notifications",
        &[
            ("notification_name", "all_ops"),
            ("operation_type", "complete"),
        ],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let list = c.get("/console/notifications");
    assert!(
        list.body.contains("data-notification=\"all_ops\""),
        "{}",
        list.body
    );
    let created = traces_until(&server, "createNotification", |t| t.len() == 1);
    assert_eq!(created[0]["trace_type"], "ConsoleAction");
    assert_eq!(
        created[0]["user"]["invoked_by"],
        serde_json::json!(["service.console"])
    );
}
