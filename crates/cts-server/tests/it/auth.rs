//! Authentication, tokens, roles and tenant isolation against the real
//! server: every negative case answers 401/403 with a CTS error and records
//! what an auditor needs.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// Creates a user with `role` on `project` and an access key; returns
/// (user id, credential signing with that key).
pub(crate) fn user_with_role(
    server: &TestServer,
    name: &str,
    project: &str,
    role: &str,
) -> (String, Cred) {
    let a = server.post_json(
        "/v3/users",
        &json!({"user": {"name": name, "password": "Secret-pass-1"}}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let uid = a.body["user"]["id"].as_str().unwrap().to_string();
    if !role.is_empty() {
        let a = server.request(
            reqwest::Method::PUT,
            &format!("/v3/projects/{project}/users/{uid}/roles/{role}"),
        );
        assert_eq!(a.status, 204, "{}", a.text);
    }
    let a = server.post_json(
        "/v3.0/OS-CREDENTIAL/credentials",
        &json!({"credential": {"user_id": uid, "description": "test"}}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let c = &a.body["credential"];
    assert_eq!(c["status"], "active");
    let cred = Cred::Key {
        ak: c["access"].as_str().unwrap().into(),
        sk: c["secret"].as_str().unwrap().into(),
    };
    (uid, cred)
}

fn token(
    server: &TestServer,
    user: &str,
    password: &str,
    scope: Value,
) -> (u16, Option<String>, Value) {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "password": password, "domain": {"name": server.admin.domain_name}}}},
        "scope": scope,
    }});
    let a = server.with(Cred::Anonymous).send(
        server.client(),
        "POST",
        "/v3/auth/tokens",
        Some(("application/json", serde_json::to_vec(&body).unwrap())),
    );
    let t = a
        .headers
        .get("x-subject-token")
        .map(|v| v.to_str().unwrap().to_string());
    (a.status, t, a.body)
}

/// The traces of `project` (as the admin) named `trace_name`.
fn traces_named(server: &TestServer, project: &str, trace_name: &str) -> Vec<Value> {
    let a = server.get(&format!(
        "/v3/{project}/traces?trace_name={trace_name}&limit=200"
    ));
    assert_eq!(a.status, 200, "{}", a.text);
    a.body["traces"].as_array().unwrap().clone()
}

#[test]
fn bootstrap_creates_the_admin_once() {
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::builder()
        .root(root.path())
        .env("CTS_BOOTSTRAP_PASSWORD", "12345678Ab")
        .env("CTS_BOOTSTRAP_REGION", "eu-nl")
        .start();
    let file = server.data_dir.join("bootstrap.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let first = std::fs::read(&file).unwrap();
    let b: Value = serde_json::from_slice(&first).unwrap();
    for key in [
        "domain_id",
        "domain_name",
        "project_id",
        "region",
        "user_name",
        "password",
        "access_key",
        "secret_key",
        "endpoint",
    ] {
        assert!(b[key].is_string(), "{key} missing in {b}");
    }
    assert_eq!(b["password"], "12345678Ab");
    assert_eq!(b["region"], "eu-nl");
    assert_eq!(b["endpoint"], server.base);
    // The admin works at once, with the key and with the password.
    let pid = server.admin.project_id.clone();
    assert_eq!(server.get(&format!("/v3/{pid}/traces")).status, 200);
    let (status, t, body) = token(
        &server,
        &server.admin.user_name,
        "12345678Ab",
        json!({"project": {"id": pid}}),
    );
    assert_eq!(status, 201, "{body}");
    assert!(t.is_some());
    drop(server);

    // A restart (even with other seed values) changes nothing.
    let again = TestServer::builder()
        .root(root.path())
        .env("CTS_BOOTSTRAP_PASSWORD", "Other-pass-99")
        .start();
    assert_eq!(std::fs::read(&file).unwrap(), first);
    assert_eq!(again.admin.project_id, pid);
    assert_eq!(again.get(&format!("/v3/{pid}/traces")).status, 200);
}

#[test]
fn signatures_are_checked() {
    let server = TestServer::builder()
        .env("CTS_AUTH_REFUSAL_AUDIT_WINDOW", "1s")
        .start();
    let pid = server.admin.project_id.clone();
    let path = format!("/v3/{pid}/traces");
    let c = server.client();

    let a = server.with(Cred::Anonymous).get(c, &path);
    a.assert_error(401, "CTS.0002");
    assert!(a.text.contains("X-Auth-Token"), "{}", a.text);

    let wrong = Cred::Key {
        ak: server.admin.access_key.clone(),
        sk: "not-the-secret-key-0000".into(),
    };
    let a = server.with(wrong.clone()).get(c, &path);
    a.assert_error(401, "CTS.0002");
    assert!(a.text.contains("signature"), "{}", a.text);
    // Without a project in the path, the refusal is recorded in the home
    // project of the key's owner.
    server
        .with(wrong)
        .get(c, "/v3/users")
        .assert_error(401, "CTS.0002");

    let unknown = Cred::Key {
        ak: "NOSUCHKEY00000000000".into(),
        sk: server.admin.secret_key.clone(),
    };
    server
        .with(unknown)
        .get(c, &path)
        .assert_error(401, "CTS.0002");

    // A correctly signed request from 20 minutes ago is refused.
    let url = format!("{}{path}", server.base);
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    cts_sign::sign_request(
        "GET",
        &url,
        &mut headers,
        b"",
        &server.admin.access_key,
        &server.admin.secret_key,
        cts_sign::unix_now() - 20 * 60,
    )
    .unwrap();
    let mut req = c.get(&url);
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    let res = req.send().unwrap();
    assert_eq!(res.status().as_u16(), 401);
    assert!(res.text().unwrap().contains("X-Sdk-Date"));

    // A signed body that was changed on the way is refused.
    let body = serde_json::to_vec(&batch(&[trace(now_ms())])).unwrap();
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    cts_sign::sign_request(
        "POST",
        &url,
        &mut headers,
        &body,
        &server.admin.access_key,
        &server.admin.secret_key,
        cts_sign::unix_now(),
    )
    .unwrap();
    let mut tampered = body.clone();
    tampered[20] ^= 1;
    let mut req = c.post(&url).body(tampered);
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    assert_eq!(req.send().unwrap().status().as_u16(), 401);

    // Failures are counted and recorded as traces of the project.
    let metrics = server.get("/metrics").text;
    assert!(
        metrics.contains("cts_auth_failures_total{reason=\"bad_signature\"} 3"),
        "{metrics}"
    );
    // Anonymous, 2 bad signatures, unknown key, stale date, changed body:
    // the first in full, the others counted in one trace when the
    // address's window (1 s here) ends.
    let mut failed = Vec::new();
    for _ in 0..50 {
        failed = traces_named(&server, &pid, "authenticate");
        if failed.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(failed.len(), 2, "{failed:?}");
    let summary = failed[0]["message"].as_str().unwrap();
    assert!(
        summary.starts_with("5 more refused credential(s) from 127.0.0.1"),
        "{summary}"
    );
    let refused =
        "cts_http_requests_total{method=\"GET\",route=\"/v3/{project_id}/traces\",code=\"401\"}";
    assert!(metrics.contains(refused), "{metrics}");
    // A new window: a known key's bad signature is recorded with its owner.
    let wrong = server.with(Cred::Key {
        ak: server.admin.access_key.clone(),
        sk: "not-the-secret-key-0000".into(),
    });
    assert_eq!(wrong.get(c, &path).status, 401);
    for _ in 0..50 {
        failed = traces_named(&server, &pid, "authenticate");
        if failed.len() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert_eq!(failed[0]["user"]["access_key_id"], server.admin.access_key);
    assert_eq!(failed[0]["user"]["name"], server.admin.user_name);
    assert!(failed
        .iter()
        .all(|t| t["code"] == "401" && t["service_type"] == "IAM"));
}

#[test]
fn tokens_issue_check_revoke_and_expire() {
    let server = TestServer::builder()
        .env("CTS_AUTH_TOKEN_TTL", "3s")
        .start();
    let pid = server.admin.project_id.clone();
    let admin = server.admin.user_name.clone();
    let password = server.admin.password.clone();

    let (status, t, body) = token(&server, &admin, &password, json!({"project": {"id": pid}}));
    assert_eq!(status, 201, "{body}");
    let t = t.unwrap();
    let tok = &body["token"];
    assert!(tok["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(tok["project"]["id"], pid);
    assert_eq!(tok["user"]["name"], admin);
    assert_eq!(tok["user"]["domain"]["id"], server.admin.domain_id);
    let roles: Vec<&str> = tok["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        roles.contains(&"cts_admin") && roles.contains(&"admin"),
        "{roles:?}"
    );
    let catalog = tok["catalog"].as_array().unwrap();
    let url_of = |kind: &str| {
        catalog.iter().find(|s| s["type"] == kind).unwrap()["endpoints"][0]["url"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(url_of("ctsv3"), format!("{}/v3/{pid}", server.base));
    assert_eq!(url_of("cts"), format!("{}/v1.0/{pid}", server.base));

    // Scope by project name and domain name works as well.
    let (status, _, body) = token(
        &server,
        &admin,
        &password,
        json!({"project": {"name": server.admin.region, "domain": {"name": server.admin.domain_name}}}),
    );
    assert_eq!(status, 201, "{body}");

    let with_token = server.with(Cred::Token(t.clone()));
    let c = server.client();
    assert_eq!(with_token.get(c, &format!("/v3/{pid}/traces")).status, 200);
    // The token was recorded.
    assert!(!traces_named(&server, &pid, "createToken").is_empty());

    // Check, then revoke.
    let res = c
        .get(format!("{}/v3/auth/tokens", server.base))
        .header("X-Auth-Token", &t)
        .header("X-Subject-Token", &t)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let res = c
        .delete(format!("{}/v3/auth/tokens", server.base))
        .header("X-Auth-Token", &t)
        .header("X-Subject-Token", &t)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    let a = with_token.get(c, &format!("/v3/{pid}/traces"));
    a.assert_error(401, "CTS.0002");
    assert!(a.text.contains("revoked"), "{}", a.text);

    // Wrong passwords: 401, the same answer for an unknown user.
    let (status, _, wrong) = token(
        &server,
        &admin,
        "Wrong-pass-1",
        json!({"project": {"id": pid}}),
    );
    assert_eq!(status, 401);
    let (status, _, unknown) = token(
        &server,
        "nobody",
        "Wrong-pass-1",
        json!({"project": {"id": pid}}),
    );
    assert_eq!(status, 401);
    assert_eq!(wrong["error_msg"], unknown["error_msg"]);

    // A token expires.
    let (_, t, _) = token(&server, &admin, &password, json!({"project": {"id": pid}}));
    std::thread::sleep(Duration::from_millis(3500));
    let a = server
        .with(Cred::Token(t.unwrap()))
        .get(c, &format!("/v3/{pid}/traces"));
    a.assert_error(401, "CTS.0002");
    assert!(a.text.contains("expired"), "{}", a.text);
}

#[test]
fn failed_logins_are_throttled() {
    let server = TestServer::builder()
        .env("CTS_AUTH_LOGIN_MAX_FAILURES", "3")
        .env("CTS_AUTH_LOGIN_LOCKOUT", "1h")
        .start();
    let pid = server.admin.project_id.clone();
    let admin = server.admin.user_name.clone();
    for _ in 0..3 {
        let (status, _, _) = token(
            &server,
            &admin,
            "Wrong-pass-1",
            json!({"project": {"id": pid}}),
        );
        assert_eq!(status, 401);
    }
    // Locked out now, even with the right password.
    let password = server.admin.password.clone();
    let (status, _, body) = token(&server, &admin, &password, json!({"project": {"id": pid}}));
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error_code"], "CTS.9005");
    let metrics = server.get("/metrics").text;
    assert!(!metrics.contains("cts_auth_throttled_total 0"), "{metrics}");
}

#[test]
fn roles_confine_each_credential() {
    let server = TestServer::start();
    let main = server.admin.project_id.clone();
    let other = server.pid("other");
    let (_, viewer) = user_with_role(&server, "viewer", &main, "cts_viewer");
    let (_, reporter) = user_with_role(&server, "reporter", &main, "cts_reporter");
    let (_, nobody) = user_with_role(&server, "nobody", &main, "");
    let c = server.client();
    let traces = format!("/v3/{main}/traces");
    let body = || {
        Some((
            "application/json",
            serde_json::to_vec(&batch(&[trace(now_ms())])).unwrap(),
        ))
    };

    // The reporter reports but cannot read.
    let r = server.with(reporter.clone());
    assert_eq!(r.send(c, "POST", &traces, body()).status, 201);
    r.get(c, &traces).assert_error(403, "CTS.0013");
    // The viewer reads but cannot report.
    let v = server.with(viewer.clone());
    assert_eq!(v.get(c, &traces).status, 200);
    v.send(c, "POST", &traces, body())
        .assert_error(403, "CTS.0013");
    assert_eq!(v.get(c, &format!("/v1.0/{main}/system/trace")).status, 200);
    // Neither may touch another project, existing or not: the same 403.
    let there = v.get(c, &format!("/v3/{other}/traces"));
    there.assert_error(403, "CTS.0002");
    let nowhere = v.get(c, "/v3/no-such-project/traces");
    nowhere.assert_error(403, "CTS.0002");
    assert_eq!(
        there.body["error_msg"]
            .as_str()
            .unwrap()
            .replace(&other, "X"),
        nowhere.body["error_msg"]
            .as_str()
            .unwrap()
            .replace("no-such-project", "X")
    );
    r.send(c, "POST", &format!("/v3/{other}/traces"), body())
        .assert_error(403, "CTS.0002");
    // No role at all.
    server
        .with(nobody)
        .get(c, &traces)
        .assert_error(403, "CTS.0002");
    // Nor may they manage identities.
    v.get(c, "/v3/users").assert_error(403, "CTS.0013");

    // A key names its project with X-Project-Id; another project in the
    // path is refused even for the admin.
    let admin = server.signer();
    let url = format!("{}/v3/{other}/traces", server.base);
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("X-Project-Id".to_string(), main.clone()),
    ];
    let Cred::Key { ak, sk } = &admin.cred else {
        unreachable!()
    };
    cts_sign::sign_request("GET", &url, &mut headers, b"", ak, sk, cts_sign::unix_now()).unwrap();
    let mut req = c.get(&url);
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    assert_eq!(req.send().unwrap().status().as_u16(), 403);
}

#[test]
fn identity_changes_are_audited_without_secrets() {
    let server = TestServer::start();
    let pid = server.admin.project_id.clone();
    let (uid, _) = user_with_role(&server, "audited", &pid, "cts_viewer");
    let created = traces_named(&server, &pid, "createUser");
    assert_eq!(created.len(), 1, "{created:?}");
    let t = &created[0];
    assert_eq!(t["service_type"], "IAM");
    assert_eq!(t["resource_type"], "user");
    assert_eq!(t["resource_id"], uid);
    assert_eq!(t["resource_name"], "audited");
    assert_eq!(t["user"]["name"], server.admin.user_name);
    assert_eq!(t["user"]["access_key_id"], server.admin.access_key);
    assert_eq!(t["code"], "201");
    assert_eq!(t["source_ip"], "127.0.0.1");
    let text = t.to_string();
    assert!(!text.contains("Secret-pass-1"), "{text}");
    let keys = traces_named(&server, &pid, "createCredential");
    assert_eq!(keys.len(), 1);
    let secret_free = keys[0]["response"].as_str().unwrap();
    assert!(secret_free.contains("******"), "{secret_free}");
    assert_eq!(traces_named(&server, &pid, "grantRole").len(), 1);

    // Groups carry roles to their members.
    let g = server.post_json("/v3/groups", &json!({"group": {"name": "auditors"}}));
    assert_eq!(g.status, 201, "{}", g.text);
    let gid = g.body["group"]["id"].as_str().unwrap().to_string();
    let (member, cred) = user_with_role(&server, "member", &pid, "");
    let c = server.client();
    let traces = format!("/v3/{pid}/traces");
    server
        .with(cred.clone())
        .get(c, &traces)
        .assert_error(403, "CTS.0002");
    let put = |p: &str| server.request(reqwest::Method::PUT, p).status;
    assert_eq!(put(&format!("/v3/groups/{gid}/users/{member}")), 204);
    assert_eq!(
        put(&format!("/v3/projects/{pid}/groups/{gid}/roles/cts_viewer")),
        204
    );
    assert_eq!(server.with(cred.clone()).get(c, &traces).status, 200);
    let a = server.request(
        reqwest::Method::DELETE,
        &format!("/v3/groups/{gid}/users/{member}"),
    );
    assert_eq!(a.status, 204, "{}", a.text);
    server
        .with(cred)
        .get(c, &traces)
        .assert_error(403, "CTS.0002");
    assert_eq!(traces_named(&server, &pid, "addUserToGroup").len(), 1);
    assert_eq!(traces_named(&server, &pid, "removeUserFromGroup").len(), 1);
}

#[test]
fn public_routes_need_no_credential() {
    let server = TestServer::start();
    let anon = server.with(Cred::Anonymous);
    let c = server.client();
    for path in [
        "/healthz",
        "/readyz",
        "/",
        "/v3",
        "/openapi.json",
        "/metrics",
    ] {
        assert_eq!(anon.get(c, path).status, 200, "{path}");
    }
    let v3 = anon.get(c, "/v3");
    assert_eq!(v3.body["version"]["id"], "v3");
    // The document links to itself with a trailing slash: that answers too.
    let link = v3.body["version"]["links"][0]["href"].as_str().unwrap();
    let path = &link[link.find("/v3").unwrap()..];
    assert_eq!(path, "/v3/");
    let slash = anon.get(c, path);
    assert_eq!(slash.status, 200, "{}", slash.text);
    assert_eq!(slash.body, v3.body);
    anon.get(c, "/v9").assert_error(404, "CTS.0100");
    anon.get(c, "/v9/").assert_error(404, "CTS.0100");
    anon.get(c, "/v3/users").assert_error(401, "CTS.0002");

    let closed = TestServer::builder()
        .env("CTS_METRICS_PUBLIC", "false")
        .start();
    closed
        .with(Cred::Anonymous)
        .get(closed.client(), "/metrics")
        .assert_error(401, "CTS.0002");
    assert_eq!(closed.get("/metrics").status, 200);
}
