//! Identities on PostgreSQL with real ctsd nodes sharing one database: what
//! one node creates works through another, a deletion through one is
//! refused by the other within the documented 1 s, and a node without the
//! store's secret key refuses to start naming the setting.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use cts_testpg::TestPg;
use serde_json::json;
use tempfile::TempDir;

use crate::support::*;

const STORE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn on_postgres(builder: Builder, url: &str) -> Builder {
    builder
        .env("CTS_STORE_BACKEND", "postgres")
        .env("CTS_STORE_POSTGRES_URL", url)
        .env("CTS_STORE_SECRET_KEY", STORE_KEY)
}

/// Another node on `first`'s database. It bootstraps nothing (the
/// identities exist), so it is handed `first`'s credentials file, as an
/// operator hands the credentials around.
fn another_node(first: &TestServer, url: &str) -> (TempDir, TestServer) {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(
        first.data_dir.join("bootstrap.json"),
        data.join("bootstrap.json"),
    )
    .unwrap();
    let node = on_postgres(TestServer::builder().root(root.path()), url).start();
    (root, node)
}

#[test]
fn identities_made_through_one_node_work_through_another() {
    let pg = TestPg::start();
    let url = pg.url();
    let a = on_postgres(TestServer::builder(), &url).start();
    let (_root, b) = another_node(&a, &url);
    let project = a.admin.project_id.clone();
    let traces = format!("/v3/{project}/traces?limit=1");

    // The admin's key, bootstrapped by A, signs on B.
    assert_eq!(b.get(&traces).status, 200);

    // A user and a key made through A work through B at once.
    let made = a.post_json(
        "/v3/users",
        &json!({"user": {"name": "bob", "password": "Secret-pass-1"}}),
    );
    assert_eq!(made.status, 201, "{}", made.text);
    let uid = made.body["user"]["id"].as_str().unwrap().to_string();
    let role = a.request(
        reqwest::Method::PUT,
        &format!("/v3/projects/{project}/users/{uid}/roles/cts_viewer"),
    );
    assert_eq!(role.status, 204, "{}", role.text);
    let made = a.post_json(
        "/v3.0/OS-CREDENTIAL/credentials",
        &json!({"credential": {"user_id": uid, "description": "ci"}}),
    );
    assert_eq!(made.status, 201, "{}", made.text);
    let access = made.body["credential"]["access"]
        .as_str()
        .unwrap()
        .to_string();
    let bob = Cred::Key {
        ak: access.clone(),
        sk: made.body["credential"]["secret"].as_str().unwrap().into(),
    };
    assert_eq!(b.with(bob.clone()).get(b.client(), &traces).status, 200);

    // Deleted through A: refused by B (which has it cached) within 1 s.
    let deleted = a.request(
        reqwest::Method::DELETE,
        &format!("/v3.0/OS-CREDENTIAL/credentials/{access}"),
    );
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let since = Instant::now();
    while b.with(bob.clone()).get(b.client(), &traces).status != 401 {
        assert!(
            since.elapsed() < Duration::from_millis(1500),
            "B still accepts the deleted key after {:?}",
            since.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_without_the_store_key_refuses_to_start_and_unlock_works_on_postgres() {
    let pg = TestPg::start();
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let ctsd = |args: &[&str], key: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctsd"));
        cmd.args(args)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("CTS_DATA_DIR")
            .env_remove("CTS_STORE_SECRET_KEY")
            .env("CTS_STORE_BACKEND", "postgres")
            .env("CTS_STORE_POSTGRES_URL", &url);
        if key {
            cmd.env("CTS_STORE_SECRET_KEY", STORE_KEY);
        }
        cmd.output().unwrap()
    };
    let out = ctsd(&["serve", "--listen", "127.0.0.1:0"], false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("store.secret_key (CTS_STORE_SECRET_KEY)"),
        "{stderr}"
    );

    let out = ctsd(&["migrate"], true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("identity_schema_migrations: applied migration 1"),
        "{stdout}"
    );

    // A lockout, stored in PostgreSQL, is lifted by `ctsd unlock`.
    let node = on_postgres(TestServer::builder(), &url).start();
    let login = |password: &str| {
        let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": node.admin.user_name, "password": password,
            "domain": {"name": node.admin.domain_name}}}}}});
        let body = serde_json::to_vec(&body).unwrap();
        node.with(Cred::Anonymous)
            .send(
                node.client(),
                "POST",
                "/v3/auth/tokens",
                Some(("application/json", body)),
            )
            .status
    };
    for _ in 0..5 {
        assert_eq!(login("Wrong-pass-1"), 401);
    }
    assert_eq!(login(&node.admin.password), 429);
    let out = ctsd(&["unlock", "--user", &node.admin.user_name], true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("lifted 1 lockout(s)"), "{stdout}");
    assert_eq!(login(&node.admin.password), 201);
}
