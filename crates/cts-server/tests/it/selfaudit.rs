//! What CTS records about itself: every trace the server makes is valid
//! whatever the caller sent, and a change whose trace cannot be written is
//! refused.

use serde_json::{json, Value};

use crate::support::*;

/// A request signed with the admin's key, carrying `user_agent`.
pub fn send_with_agent(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
    user_agent: &str,
) -> Answer {
    let url = format!("{}{path}", server.base);
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    cts_sign::sign_request(
        method,
        &url,
        &mut headers,
        &bytes,
        &server.admin.access_key,
        &server.admin.secret_key,
        cts_sign::unix_now(),
    )
    .unwrap();
    headers.push(("User-Agent".into(), user_agent.into()));
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = server.client().request(method, &url).body(bytes);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let res = req.send().unwrap();
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

/// The traces of `project` named `trace_name`, newest first.
pub fn named(server: &TestServer, project: &str, trace_name: &str) -> Vec<Value> {
    let a = server.get(&format!(
        "/v3/{project}/traces?trace_name={trace_name}&limit=200"
    ));
    assert_eq!(a.status, 200, "{}", a.text);
    a.body["traces"].as_array().unwrap().clone()
}

#[test]
fn hostile_user_agents_are_recorded_not_dropped() {
    let server = TestServer::start();
    let pid = server.admin.project_id.clone();
    let long = "a".repeat(1025);
    let tab = "evil\tagent";
    for (i, agent) in [long.as_str(), tab].into_iter().enumerate() {
        let a = send_with_agent(
            &server,
            "POST",
            "/v3/users",
            Some(&json!({"user": {"name": format!("ua{i}"), "password": "Secret-pass-1"}})),
            agent,
        );
        assert_eq!(a.status, 201, "{}", a.text);
    }
    // Disabling the management tracker is on record, with the same agent.
    let a = send_with_agent(
        &server,
        "PUT",
        &format!("/v3/{pid}/tracker"),
        Some(&json!({"tracker_type": "system", "tracker_name": "system", "status": "disabled"})),
        tab,
    );
    assert_eq!(a.status, 200, "{}", a.text);
    // A refused signature too.
    let a = server
        .with(Cred::Key {
            ak: server.admin.access_key.clone(),
            sk: "not-the-secret-key-0000".into(),
        })
        .get(server.client(), &format!("/v3/{pid}/traces"));
    assert_eq!(a.status, 401);
    let a = send_with_agent(&server, "GET", "/v3/no-such/traces", None, &long);
    assert_eq!(a.status, 403, "{}", a.text);

    let created = named(&server, &pid, "createUser");
    assert_eq!(created.len(), 2, "{created:?}");
    let agents: Vec<&str> = created
        .iter()
        .map(|t| t["user_agent"].as_str().unwrap())
        .collect();
    assert!(
        agents.iter().all(|a| a.chars().count() <= 1024),
        "{agents:?}"
    );
    assert!(
        agents.iter().all(|a| !a.chars().any(char::is_control)),
        "{agents:?}"
    );
    assert!(agents.iter().any(|a| a.starts_with("evil")), "{agents:?}");
    let updated = named(&server, &pid, "updateTracker");
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert!(updated[0]["request"].as_str().unwrap().contains("disabled"));
    assert!(
        !server.log().contains("could not record an audit trace"),
        "{}",
        server.log()
    );
}
