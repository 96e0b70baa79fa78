//! Token semantics against the real server: Keystone's scope rule, and
//! what disabling a user does to its tokens.

use serde_json::{json, Value};

use crate::support::*;

/// A token of the bootstrap admin with `scope` (`null`: unscoped).
fn admin_token(server: &TestServer, scope: Value) -> String {
    let mut auth = json!({"identity": {"methods": ["password"], "password": {"user": {
        "name": server.admin.user_name, "password": server.admin.password,
        "domain": {"name": server.admin.domain_name}}}}});
    if !scope.is_null() {
        auth["scope"] = scope;
    }
    let a = server.with(Cred::Anonymous).send(
        server.client(),
        "POST",
        "/v3/auth/tokens",
        Some((
            "application/json",
            serde_json::to_vec(&json!({ "auth": auth })).unwrap(),
        )),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    a.headers["x-subject-token"].to_str().unwrap().to_string()
}

#[test]
fn unscoped_tokens_cannot_act_on_projects() {
    let server = TestServer::start();
    let pid = server.admin.project_id.clone();
    let traces = format!("/v3/{pid}/traces");
    let c = server.client();
    for scope in [
        Value::Null,
        json!({"domain": {"name": server.admin.domain_name}}),
    ] {
        let token = admin_token(&server, scope.clone());
        let t = server.with(Cred::Token(token));
        let a = t.get(c, &traces);
        a.assert_error(403, "CTS.0002");
        assert!(a.text.contains("scoped"), "{}", a.text);
        t.get(c, &format!("/v3/{pid}/trackers"))
            .assert_error(403, "CTS.0002");
        // What needs no project still works: the projects to scope to.
        let a = t.get(c, "/v3/auth/projects");
        assert_eq!(a.status, 200, "{scope}: {}", a.text);
    }
    let scoped = admin_token(&server, json!({"project": {"id": pid}}));
    assert_eq!(server.with(Cred::Token(scoped)).get(c, &traces).status, 200);
}

#[test]
fn enabling_a_user_again_does_not_bring_back_its_tokens() {
    let server = TestServer::start();
    let pid = server.admin.project_id.clone();
    let a = server.post_json(
        "/v3/users",
        &json!({"user": {"name": "temp", "password": "Temp-pass-123"}}),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let uid = a.body["user"]["id"].as_str().unwrap().to_string();
    let grant = format!("/v3/projects/{pid}/users/{uid}/roles/cts_viewer");
    assert_eq!(server.request(reqwest::Method::PUT, &grant).status, 204);
    let login = || {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "id": uid, "password": "Temp-pass-123"}}},
            "scope": {"project": {"id": pid}}}});
        let a = server.with(Cred::Anonymous).send(
            server.client(),
            "POST",
            "/v3/auth/tokens",
            Some(("application/json", serde_json::to_vec(&body).unwrap())),
        );
        assert_eq!(a.status, 201, "{}", a.text);
        a.headers["x-subject-token"].to_str().unwrap().to_string()
    };
    let token = server.with(Cred::Token(login()));
    let traces = format!("/v3/{pid}/traces");
    assert_eq!(token.get(server.client(), &traces).status, 200);
    let enabled = |on: bool| {
        let a = server.signer().send(
            server.client(),
            "PATCH",
            &format!("/v3/users/{uid}"),
            Some((
                "application/json",
                serde_json::to_vec(&json!({"user": {"enabled": on}})).unwrap(),
            )),
        );
        assert_eq!(a.status, 200, "{}", a.text);
    };
    enabled(false);
    token
        .get(server.client(), &traces)
        .assert_error(401, "CTS.0002");
    enabled(true);
    let a = token.get(server.client(), &traces);
    a.assert_error(401, "CTS.0002");
    assert!(a.text.contains("revoked"), "{}", a.text);
    // A new login works.
    let fresh = server.with(Cred::Token(login()));
    assert_eq!(fresh.get(server.client(), &traces).status, 200);
}
