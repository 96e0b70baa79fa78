//! Project isolation: `admin` on a project is not admin of the domain.
//! Every cell of the README's role matrix, against the real server.

use reqwest::Method;
use serde_json::json;

use crate::auth::user_with_role;
use crate::support::*;

/// One request as `who`; returns the status.
fn status(server: &TestServer, who: &Cred, method: Method, path: &str) -> u16 {
    let body = (method == Method::PATCH || method == Method::POST)
        .then(|| ("application/json", b"{}".to_vec()));
    server
        .with(who.clone())
        .send(server.client(), method.as_str(), path, body)
        .status
}

fn send_json(
    server: &TestServer,
    who: &Cred,
    method: Method,
    path: &str,
    v: serde_json::Value,
) -> Answer {
    server.with(who.clone()).send(
        server.client(),
        method.as_str(),
        path,
        Some(("application/json", serde_json::to_vec(&v).unwrap())),
    )
}

#[test]
fn project_admin_manages_only_its_project() {
    let server = TestServer::start();
    let a = server.pid("a");
    let b = server.pid("b");
    let domain = server.admin.domain_id.clone();
    let root = server.admin_user_id();
    let (badmin_id, badmin) = user_with_role(&server, "badmin", &b, "admin");
    let (member, _) = user_with_role(&server, "member", &b, "cts_viewer");
    let (both, _) = user_with_role(&server, "both", &b, "cts_viewer");
    let put = server.request(
        Method::PUT,
        &format!("/v3/projects/{a}/users/{both}/roles/cts_viewer"),
    );
    assert_eq!(put.status, 204, "{}", put.text);
    let (_, viewer) = user_with_role(&server, "viewer", &b, "cts_viewer");

    // The exploit of issue 12.3: granting itself cts_admin on A, reading
    // A's traces, resetting the bootstrap admin's password.
    let grant_a = format!("/v3/projects/{a}/users/{badmin_id}/roles/cts_admin");
    let s = server.with(badmin.clone());
    s.send(server.client(), "PUT", &grant_a, None)
        .assert_error(403, "CTS.0013");
    s.get(server.client(), &format!("/v3/{a}/traces"))
        .assert_error(403, "CTS.0002");
    let reset = send_json(
        &server,
        &badmin,
        Method::PATCH,
        &format!("/v3/users/{root}"),
        json!({"user": {"password": "Stolen-pass-1"}}),
    );
    reset.assert_error(403, "CTS.0013");
    // Nor may it make itself a domain admin, or manage the domain's identities.
    let make_root = format!("/v3/domains/{domain}/users/{badmin_id}/roles/admin");
    assert_eq!(status(&server, &badmin, Method::PUT, &make_root), 403);
    for (m, path) in [
        (Method::GET, "/v3/users".to_string()),
        (Method::POST, "/v3/users".to_string()),
        (Method::POST, "/v3/projects".to_string()),
        (Method::GET, "/v3/groups".to_string()),
        (Method::DELETE, format!("/v3/users/{member}")),
        (Method::GET, "/v3/role_assignments".to_string()),
    ] {
        assert_eq!(
            status(&server, &badmin, m.clone(), &path),
            403,
            "{m} {path}"
        );
    }

    // Within B: it grants, checks, lists and revokes roles.
    let on_b = format!("/v3/projects/{b}/users/{member}/roles");
    assert_eq!(
        status(&server, &badmin, Method::PUT, &format!("{on_b}/cts_admin")),
        204
    );
    assert_eq!(
        status(&server, &badmin, Method::HEAD, &format!("{on_b}/cts_admin")),
        204
    );
    assert_eq!(status(&server, &badmin, Method::GET, &on_b), 200);
    assert_eq!(
        status(
            &server,
            &badmin,
            Method::DELETE,
            &format!("{on_b}/cts_admin")
        ),
        204
    );
    // It changes a user holding roles only on B, not one holding roles on A too.
    let disable = |user: &str| {
        send_json(
            &server,
            &badmin,
            Method::PATCH,
            &format!("/v3/users/{user}"),
            json!({"user": {"description": "seen by B's admin"}}),
        )
    };
    assert_eq!(disable(&member).status, 200, "{}", disable(&member).text);
    disable(&both).assert_error(403, "CTS.0013");

    // Others' access keys are a domain admin's only.
    let keys = format!("/v3.0/OS-CREDENTIAL/credentials?user_id={member}");
    assert_eq!(status(&server, &badmin, Method::GET, &keys), 404);
    assert_eq!(server.get(&keys).status, 200);

    // A viewer of B manages nothing.
    assert_eq!(
        status(&server, &viewer, Method::PUT, &format!("{on_b}/cts_viewer")),
        403
    );
    assert_eq!(
        status(
            &server,
            &viewer,
            Method::PATCH,
            &format!("/v3/users/{member}")
        ),
        403
    );

    // The bootstrap admin is a domain admin, listed as such.
    let roles = server.get(&format!("/v3/domains/{domain}/users/{root}/roles"));
    assert_eq!(roles.status, 200, "{}", roles.text);
    assert_eq!(roles.body["roles"][0]["name"], "admin");
    // It manages assignments anywhere in the domain and changes any user.
    assert_eq!(server.request(Method::PUT, &grant_a).status, 204);
    assert_eq!(server.request(Method::DELETE, &grant_a).status, 204);
    let a2 = send_json(
        &server,
        &Cred::Key {
            ak: server.admin.access_key.clone(),
            sk: server.admin.secret_key.clone(),
        },
        Method::PATCH,
        &format!("/v3/users/{both}"),
        json!({"user": {"description": "by the domain admin"}}),
    );
    assert_eq!(a2.status, 200, "{}", a2.text);

    // Only admin is a domain role, and only on the caller's own domain.
    server
        .request(
            Method::PUT,
            &format!("/v3/domains/{domain}/users/{badmin_id}/roles/cts_admin"),
        )
        .assert_error(400, "CTS.0003");
    server
        .request(
            Method::PUT,
            &format!("/v3/domains/other-domain/users/{badmin_id}/roles/admin"),
        )
        .assert_error(404, "CTS.9006");
    // Made a domain admin, B's admin manages the domain's identities.
    assert_eq!(server.request(Method::PUT, &make_root).status, 204);
    assert_eq!(server.request(Method::HEAD, &make_root).status, 204);
    let listed = server.get(&format!("/v3/role_assignments?user.id={badmin_id}"));
    assert!(
        listed.body["role_assignments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["scope"]["domain"]["id"] == domain.as_str()),
        "{}",
        listed.text
    );
    assert_eq!(status(&server, &badmin, Method::GET, "/v3/users"), 200);
    assert_eq!(status(&server, &badmin, Method::PUT, &grant_a), 204);
    assert_eq!(server.request(Method::DELETE, &make_root).status, 204);
    assert_eq!(status(&server, &badmin, Method::GET, "/v3/users"), 403);
    assert_eq!(server.request(Method::DELETE, &make_root).status, 404);
}

/// Issue 12.4: a local bucket is its first project's; another project's
/// tracker naming it is refused, and `checkbucket` reports a bucket that
/// holds another project's trace files.
#[test]
fn a_local_bucket_belongs_to_its_first_project() {
    let server = TestServer::start();
    let a = server.pid("a");
    let b = server.pid("b");
    let admin = Cred::Key {
        ak: server.admin.access_key.clone(),
        sk: server.admin.secret_key.clone(),
    };
    let transfer_to = |pid: &str, bucket: &str| {
        send_json(
            &server,
            &admin,
            Method::PUT,
            &format!("/v3/{pid}/tracker"),
            json!({"tracker_type": "system", "tracker_name": "system",
                   "obs_info": {"bucket_name": bucket, "file_prefix_name": "audit",
                                "is_obs_created": true}}),
        )
    };
    let ok = transfer_to(&a, "shared-bucket");
    assert_eq!(ok.status, 200, "{}", ok.text);
    let refused = transfer_to(&b, "shared-bucket");
    refused.assert_error(403, "CTS.0002");
    assert!(
        refused.text.contains("bucketPolicyError"),
        "{}",
        refused.text
    );
    assert_eq!(transfer_to(&b, "b-bucket").status, 200);
    assert_eq!(transfer_to(&a, "shared-bucket").status, 200);

    // A trace file of a project outside the domain, as another server
    // sharing the S3 bucket would leave.
    let region = &server.admin.region;
    let dir = server
        .data_dir
        .join(format!("obs/b-bucket/CloudTraces/{region}/2026/1/1/system"));
    std::fs::create_dir_all(&dir).unwrap();
    let stranger = format!("{region}-ffffffffffffffffffffffffffffffff");
    std::fs::write(
        dir.join(format!(
            "audit_CloudTrace_{stranger}_2026-01-01T00-05-00Z_0123456789abcdef.json.gz"
        )),
        b"x",
    )
    .unwrap();
    let domain = &server.admin.domain_id;
    let checked = server.post_json(
        &format!("/v3/{domain}/checkbucket"),
        &json!({"buckets": [{"bucket_name": "b-bucket"}, {"bucket_name": "shared-bucket"}]}),
    );
    assert_eq!(checked.status, 200, "{}", checked.text);
    let foreign = &checked.body["buckets"][0]["check_bucket_response"];
    assert_eq!(foreign["success"], false, "{}", checked.text);
    assert_eq!(foreign["error_code"], "bucketPolicyError");
    assert!(foreign["error_message"]
        .as_str()
        .unwrap()
        .contains("ffffffff"));
    let own = &checked.body["buckets"][1]["check_bucket_response"];
    assert_eq!(own["success"], true, "{}", checked.text);
}
