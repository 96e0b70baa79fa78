//! The console in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/test-deps.sh`). One browser session walks through the issue's
//! steps and saves a screenshot of each page, at desktop and phone widths,
//! under `target/console-screenshots/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::auth::user_with_role;
use crate::support::*;

const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

/// `chromedriver` on a free loopback port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start chromedriver ({e}): the console's browser tests need Debian's \
                 chromium and chromium-driver; scripts/test-deps.sh installs them"
            )
        });
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    driver
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The browser session and the server it looks at.
struct Browser {
    c: Client,
    base: String,
    shots: PathBuf,
}

impl Browser {
    async fn go(&self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn path(&self) -> String {
        let url = self.c.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    async fn find(&self, css: &str) -> Element {
        self.c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    async fn count(&self, css: &str) -> usize {
        self.c.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// Waits until an element `css` holds `text` (a click's page may
    /// still be loading, its predecessor's elements going stale).
    async fn wait_text(&self, css: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(e) = self.c.find(Locator::Css(css)).await {
                if e.text().await.is_ok_and(|t| t.contains(text)) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "no {css} with {text:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the page's path and query contain `part`.
    async fn wait_path(&self, part: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let path = self.path().await;
            if path.contains(part) {
                return;
            }
            assert!(Instant::now() < deadline, "{part} not in {path}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `count(css) == n` (htmx swaps the results in place).
    async fn wait_count(&self, css: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.count(css).await;
            if seen == n {
                return;
            }
            assert!(Instant::now() < deadline, "{css}: {seen} elements, not {n}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn fill(&self, name: &str, value: &str) {
        let input = self.find(&format!("[name='{name}']")).await;
        input.clear().await.unwrap();
        input.send_keys(value).await.unwrap();
    }

    async fn sign_in(&self, user: &str, password: &str, domain: &str) {
        self.go("/console").await;
        assert_eq!(self.path().await, "/console/login");
        self.fill("username", user).await;
        self.fill("password", password).await;
        self.fill("domain", domain).await;
        self.find("#login button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        self.find("#sign-out").await;
    }

    /// Saves the page at desktop and phone sizes as `{name}-desktop.png`
    /// and `{name}-phone.png`; the page must not scroll sideways.
    async fn shoot(&self, name: &str) {
        for (label, (w, h)) in [("desktop", DESKTOP), ("phone", PHONE)] {
            self.c.set_window_size(w, h).await.unwrap();
            let overflow = self
                .c
                .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth", vec![])
                .await
                .unwrap();
            assert!(
                overflow.as_i64().unwrap() <= 0,
                "{name} scrolls sideways at {label} width: {overflow}"
            );
            let png = self.c.screenshot().await.unwrap();
            std::fs::write(self.shots.join(format!("{name}-{label}.png")), png).unwrap();
        }
        self.c.set_window_size(DESKTOP.0, DESKTOP.1).await.unwrap();
    }

    /// Runs `fetch` in the page (with its cookies) and answers the status
    /// and the body.
    async fn fetch(&self, script: &str) -> (u16, String) {
        let js = format!(
            "const done = arguments[0]; {script}.then(async r => done([r.status, await r.text()])).catch(e => done([0, String(e)]));"
        );
        let v = self.c.execute_async(&js, vec![]).await.unwrap();
        (
            v[0].as_u64().unwrap() as u16,
            v[1].as_str().unwrap().to_string(),
        )
    }
}

#[test]
fn the_console_in_a_browser() {
    let server = TestServer::start();
    let pid = server.admin.project_id.clone();
    // 15 traces of one server, a few of others; one with a very long name.
    let now = now_ms();
    let mut traces = Vec::new();
    for i in 0..15 {
        let mut t = trace(now - 60_000 - i * 1000);
        t["resource_id"] = json!("vm-42");
        t["resource_name"] = json!(format!("web-{i}"));
        traces.push(t);
    }
    for i in 0..3 {
        let mut t = trace(now - 30_000 - i * 1000);
        t["resource_id"] = json!(format!("vm-{i}"));
        t["resource_name"] = json!(format!("database-replica-{}", "very-long-name-".repeat(12)));
        t["trace_rating"] = json!("warning");
        t["user"]["name"] = json!("bob");
        traces.push(t);
    }
    server.report("main", &traces);
    user_with_role(&server, "auditor", &pid, "cts_viewer");

    let driver = start_driver();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let caps = json!({"goog:chromeOptions": {"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
        ]}});
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        // fantoccini's client needs a TLS provider even for loopback HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = ClientBuilder::rustls()
            .expect("a TLS provider")
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a Chromium session through chromedriver");
        let b = Browser {
            c,
            base: server.base.clone(),
            shots: screenshot_dir(),
        };
        let result = walk(&b, &server).await;
        let _ = b.c.close().await;
        result
    });
    // Nothing the viewer or the forged request tried was done.
    let t = server.get(&format!("/v3/{pid}/trackers?tracker_name=system"));
    assert_eq!(t.body["trackers"][0]["status"], "enabled");
}

async fn walk(b: &Browser, server: &TestServer) {
    let a = server.admin.clone();
    // Sign-in.
    b.go("/console").await;
    assert_eq!(b.path().await, "/console/login");
    assert!(b
        .find("input[type=hidden][name^=csrf]")
        .await
        .attr("value")
        .await
        .unwrap()
        .is_some());
    b.shoot("login").await;
    b.sign_in(&a.user_name, &a.password, &a.domain_name).await;
    assert_eq!(b.path().await, "/console");

    // Overview: charts and the most active users; keyboard: the first Tab
    // reaches the skip link.
    assert_eq!(b.count("svg.chart").await, 2);
    assert!(b
        .find(".counts")
        .await
        .text()
        .await
        .unwrap()
        .contains("alice"));
    b.find("body").await.send_keys("\u{E004}").await.unwrap();
    let focused = b.c.active_element().await.unwrap().text().await.unwrap();
    assert_eq!(focused, "Skip to content");
    b.shoot("overview").await;

    // Trace List: filter to one resource, find exactly its 15 traces over
    // two pages.
    b.go("/console/traces?range=hour").await;
    b.fill("resource_id", "vm-42").await;
    b.find("#search").await.click().await.unwrap();
    // htmx swaps the results in, then puts the filters in the URL.
    b.wait_path("resource_id=vm-42").await;
    b.wait_count("#traces tbody tr", 10).await;
    let url = b.path().await;
    assert!(
        url.contains("resource_id=vm-42"),
        "the filters are in the URL: {url}"
    );
    let mut names = Vec::new();
    for cell in
        b.c.find_all(Locator::Css("#traces tbody tr td:nth-child(6)"))
            .await
            .unwrap()
    {
        assert_eq!(cell.text().await.unwrap(), "vm-42");
    }
    for cell in
        b.c.find_all(Locator::Css("#traces tbody tr td:nth-child(5)"))
            .await
            .unwrap()
    {
        names.push(cell.text().await.unwrap());
    }
    b.shoot("traces").await;
    b.find("#next-page").await.click().await.unwrap();
    b.wait_path("next=").await;
    b.wait_count("#traces tbody tr", 5).await;
    for cell in
        b.c.find_all(Locator::Css("#traces tbody tr td:nth-child(5)"))
            .await
            .unwrap()
    {
        names.push(cell.text().await.unwrap());
    }
    let expected: Vec<String> = (0..15).map(|i| format!("web-{i}")).collect();
    assert_eq!(
        names, expected,
        "newest first, no trace repeated or skipped"
    );
    assert_eq!(b.count("#next-page").await, 0);

    // Export the query as CSV (the link's URL, fetched with the session).
    let href = b
        .find("#export-csv")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let (status, csv) = b.fetch(&format!("fetch({href:?})")).await;
    assert_eq!(status, 200, "{csv}");
    assert_eq!(csv.lines().count(), 16, "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.contains(",vm-42,")), "{csv}");

    // A detail view with every field.
    b.find("#traces tbody tr a.detail")
        .await
        .click()
        .await
        .unwrap();
    let fields = b.find("#trace-fields").await.text().await.unwrap();
    for f in ["trace_id", "user.name", "resource_id", "vm-42", "source_ip"] {
        assert!(fields.contains(f), "{f} in {fields}");
    }
    b.shoot("trace-detail").await;
    // Long names wrap instead of widening the page.
    b.go("/console/traces?range=hour&trace_rating=warning")
        .await;
    b.wait_count("#traces tbody tr", 3).await;
    b.shoot("traces-long-names").await;

    // Trackers: disable (confirmed) and enable the management tracker;
    // both changes are console actions in the Trace List.
    b.go("/console/trackers").await;
    b.shoot("trackers").await;
    b.find("tr[data-tracker=system] a.disable")
        .await
        .click()
        .await
        .unwrap();
    assert!(b
        .find("#confirm")
        .await
        .text()
        .await
        .unwrap()
        .contains("Disable the system tracker"));
    b.shoot("tracker-confirm").await;
    b.find("#confirm-button").await.click().await.unwrap();
    b.wait_text("#notice", "Disabled tracker system").await;
    b.find("tr[data-tracker=system] button.enable")
        .await
        .click()
        .await
        .unwrap();
    b.wait_text("#notice", "Enabled tracker system").await;
    b.go("/console/trackers/edit?name=system&type=system").await;
    b.shoot("tracker-edit").await;
    b.go("/console/traces?range=hour&service_type=CTS&trace_name=updateTracker")
        .await;
    b.wait_count("#traces tbody tr", 2).await;
    let kinds = b.find("#traces tbody").await.text().await.unwrap();
    assert_eq!(kinds.matches("ConsoleAction").count(), 2, "{kinds}");
    // A validation message of the API, on the form.
    b.go("/console/trackers").await;
    b.fill("tracker_name", "Bad Name!").await;
    b.fill("data_bucket_name", "bucket-1").await;
    b.find("#create-tracker button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let error = b.find("#form-error").await.text().await.unwrap();
    assert!(error.contains("tracker_name"), "{error}");

    // Key event notifications: create a customized one, dry-run it over
    // the stored traces, delete it (confirmed).
    b.go("/console/notifications").await;
    b.fill("notification_name", "server_changes").await;
    b.find("select[name=operation_type] option[value=customized]")
        .await
        .click()
        .await
        .unwrap();
    b.fill("operations", "ECS ecs createServer").await;
    b.fill("rules", "resource_id = vm-42").await;
    b.find("#create-notification button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    b.wait_text("#notice", "Created notification server_changes")
        .await;
    b.shoot("notifications").await;
    b.find("tr[data-notification=server_changes] a.dry-run")
        .await
        .click()
        .await
        .unwrap();
    let summary = b.find("#dry-run-summary").await.text().await.unwrap();
    assert!(summary.contains("would have matched 15 of"), "{summary}");
    b.wait_count("#traces tbody tr", 15).await;
    b.shoot("notification-dry-run").await;
    b.go("/console/notifications").await;
    b.find("tr[data-notification=server_changes] a.delete")
        .await
        .click()
        .await
        .unwrap();
    b.find("#confirm-button").await.click().await.unwrap();
    b.wait_text("#notice", "Deleted notification").await;

    // A request without the CSRF token is refused.
    let (status, body) = b
        .fetch("fetch('/console/trackers/confirm', {method: 'POST', body: new URLSearchParams({action: 'disable', name: 'system', type: 'system'})})")
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("csrf_token"), "{body}");

    // A viewer sees no change controls, and the server refuses changes.
    b.find("#sign-out").await.click().await.unwrap();
    b.find("#login").await;
    b.sign_in("auditor", "Secret-pass-1", &a.domain_name).await;
    b.go("/console/trackers").await;
    b.find("tr[data-tracker=system]").await;
    assert_eq!(
        b.count("a.disable, a.delete, button.enable, #create-tracker")
            .await,
        0
    );
    b.find("#read-only").await;
    b.shoot("trackers-viewer").await;
    let csrf = b
        .find("input[name=csrf_token]")
        .await
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let (status, body) = b
        .fetch(&format!("fetch('/console/trackers/confirm', {{method: 'POST', body: new URLSearchParams({{csrf_token: {csrf:?}, action: 'disable', name: 'system', type: 'system'}})}})"))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("CTS.0013"), "{body}");
}
