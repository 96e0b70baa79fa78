//! Login lockout against the real server: counted per user and per (user,
//! address), one user whatever form names it, lifted by an admin or by
//! `ctsd unlock` with the server running or stopped.

use std::process::Command;

use serde_json::{json, Value};

use crate::support::*;

const PASSWORD: &str = "Victim-pass-1";

/// `POST /v3/auth/tokens` for the user `user` (the `user` object of the
/// password method) with `password`, unscoped: the status.
fn login(server: &TestServer, user: Value, password: &str) -> u16 {
    let mut user = user;
    user["password"] = json!(password);
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": user}}}});
    let a = server.with(Cred::Anonymous).send(
        server.client(),
        "POST",
        "/v3/auth/tokens",
        Some(("application/json", serde_json::to_vec(&body).unwrap())),
    );
    a.status
}

/// Creates the user `victim`; returns its id.
fn victim(server: &TestServer) -> String {
    let a = server.post_json(
        "/v3/users",
        &json!({"user": {"name": "victim", "password": PASSWORD}}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    a.body["user"]["id"].as_str().unwrap().to_string()
}

fn by_name(server: &TestServer, name: &str) -> Value {
    json!({"name": name, "domain": {"name": server.admin.domain_name}})
}

fn admin_logs_in(server: &TestServer) -> u16 {
    let admin = by_name(server, &server.admin.user_name);
    login(server, admin, &server.admin.password)
}

/// Five wrong passwords lock `victim` out from this address.
fn lock_victim(server: &TestServer) {
    for _ in 0..5 {
        assert_eq!(
            login(server, by_name(server, "victim"), "Wrong-pass-1"),
            401
        );
    }
    assert_eq!(login(server, by_name(server, "victim"), PASSWORD), 429);
}

fn ctsd_unlock(server: &TestServer, user: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ctsd"))
        .args(["unlock", "--user", user, "--data-dir"])
        .arg(&server.data_dir)
        .env_remove("CTS_DATA_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn guessing_one_users_password_locks_out_only_that_user() {
    let server = TestServer::start();
    victim(&server);
    lock_victim(&server);
    // The admin, from the same address, is not locked out.
    assert_eq!(admin_logs_in(&server), 201);
    let log = server.log();
    assert!(
        log.contains("WARN") && log.contains("login lockout"),
        "{log}"
    );
}

#[test]
fn a_user_counts_once_whatever_form_names_it() {
    let server = TestServer::builder()
        .env("CTS_AUTH_LOGIN_MAX_FAILURES", "3")
        .start();
    let id = victim(&server);
    let forms = [
        json!({"id": id}),
        json!({"name": "victim", "domain": {"id": server.admin.domain_id}}),
        by_name(&server, "victim"),
    ];
    for form in &forms {
        assert_eq!(login(&server, form.clone(), "Wrong-pass-1"), 401);
    }
    for form in &forms {
        assert_eq!(login(&server, form.clone(), PASSWORD), 429, "{form}");
    }
    // The user is locked, not the address.
    assert_eq!(admin_logs_in(&server), 201);
}

#[test]
fn lockouts_are_lifted_by_an_admin_or_ctsd_unlock() {
    let root = tempfile::tempdir().unwrap();
    let mut server = TestServer::builder().root(root.path()).start();
    let id = victim(&server);

    lock_victim(&server);
    let a = server.request(reqwest::Method::POST, &format!("/v3/users/{id}/unlock"));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["user"]["lockouts_lifted"], 1, "{}", a.text);
    assert_eq!(login(&server, by_name(&server, "victim"), PASSWORD), 201);
    let pid = server.admin.project_id.clone();
    let a = server.get(&format!("/v3/{pid}/traces?trace_name=unlockUser"));
    assert_eq!(a.body["meta_data"]["count"], 1, "{}", a.text);

    // With the server running ...
    lock_victim(&server);
    let out = ctsd_unlock(&server, "victim");
    assert!(out.contains("lifted 1 lockout(s) of user victim"), "{out}");
    assert_eq!(login(&server, by_name(&server, "victim"), PASSWORD), 201);

    // ... and stopped: a lockout outlives a restart until it is lifted.
    lock_victim(&server);
    server.terminate();
    drop(server);
    let server = TestServer::builder().root(root.path()).start();
    assert_eq!(login(&server, by_name(&server, "victim"), PASSWORD), 429);
    let mut server = server;
    server.terminate();
    ctsd_unlock(&server, &id);
    drop(server);
    let server = TestServer::builder().root(root.path()).start();
    assert_eq!(login(&server, by_name(&server, "victim"), PASSWORD), 201);
}
