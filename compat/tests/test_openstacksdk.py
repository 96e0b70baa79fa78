"""openstacksdk + otcextensions (``conn.ctsv3``) against ctsd.

openstacksdk authenticates with Keystone v3 password auth through
keystoneauth1 and sends ``X-Auth-Token``; the CTS endpoint comes from the
token's catalog (type ``ctsv3``, region = the project's region). See
docs/sdk-compat-notes.md section 4.

The module reports its own traces (20 to 15 minutes ago) into its own project
and queries a window around them: ctsd records token issues as ``IAM`` traces
of the project at the current time.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from types import SimpleNamespace

import keystoneauth1.exceptions as ks_exc
import openstack
import openstack.exceptions as os_exc
import pytest
import requests
from otcextensions import sdk as otc_sdk

MINUTE = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


def connect(
    server, user, *, project_id=None, project_name=None, region=None, register=True, auth_url=None, **extra
):
    """``openstack.connect`` the way an OTC user does, with the OTC extensions
    (registering them logs in: ``register=False`` for a connection that must
    fail to log in)."""
    domain = user.domain_name
    kwargs = dict(
        auth_url=auth_url or server.url + "/v3",
        username=user.name,
        password=user.password,
        user_domain_name=domain,
        region_name=region or server.bootstrap["region"],
        **extra,
    )
    if project_id:
        kwargs["project_id"] = project_id
    else:
        kwargs.update(project_name=project_name, project_domain_name=domain)
    conn = openstack.connect(**kwargs)
    if register:
        otc_sdk.register_otc_extensions(conn)
    return conn


# (minute offset, service_type, user, resource_id, trace_name, code)
SPECS = [
    (0, "ECS", "alice", "srv-1", "createServer", "200"),
    (1, "ECS", "bob", "srv-2", "createServer", "200"),
    (2, "EVS", "alice", "vol-1", "createVolume", "200"),
    (3, "ECS", "alice", "srv-1", "deleteServer", "404"),
    (3, "EVS", "carol", "vol-1", "deleteVolume", "500"),
    (5, "VPC", "bob", "vpc-1", "createVpc", "200"),
]
RESOURCE_TYPES = {"ECS": "ecs", "EVS": "evs", "VPC": "vpc"}


@dataclass
class Dataset:
    project: dict
    traces: list[dict]
    window: dict  # {"from": ..., "to": ...}
    viewer: object
    reporter: object

    @property
    def project_id(self) -> str:
        return self.project["id"]

    def expected(self, **match) -> list[str]:
        def field(t, k):
            return t["user"]["name"] if k == "user" else t[k]

        hits = [t for t in self.traces if all(field(t, k) == v for k, v in match.items())]
        hits.sort(key=lambda t: (t["time"], t["trace_id"]), reverse=True)
        return [t["trace_id"] for t in hits]


@pytest.fixture(scope="module")
def data(ctsd, admin, make_trace) -> Dataset:
    project = admin.create_project()
    pid = project["id"]
    reporter = admin.new_user({pid: ["cts_reporter"]})
    viewer = admin.new_user({pid: ["cts_viewer"]})
    base = now_ms() - 20 * MINUTE
    traces = [
        make_trace(
            base + at * MINUTE,
            service_type=svc,
            user_name=user,
            resource_type=RESOURCE_TYPES[svc],
            resource_id=rid,
            resource_name=f"name-{rid}",
            trace_name=tname,
            code=code,
            trace_id=str(uuid.uuid4()),
        )
        for at, svc, user, rid, tname, code in SPECS
    ]
    r = ctsd.report(ctsd.token(reporter.name, reporter.password, project_id=pid), pid, traces)
    assert r.status_code == 201, r.text
    for t in traces:
        c = int(t["code"])
        t["trace_rating"] = "incident" if c >= 500 else "warning" if c >= 400 else "normal"
    window = {"from": base - 1, "to": base + 5 * MINUTE + 1}
    return Dataset(project=project, traces=traces, window=window, viewer=viewer, reporter=reporter)


@pytest.fixture(scope="module")
def viewer_conn(ctsd, data):
    return connect(ctsd, data.viewer, project_id=data.project_id)


def trace_ids(conn, **query) -> list[str]:
    return [t.trace_id for t in conn.ctsv3.traces(trace_type="system", **query)]


# ---------------------------------------------------------------------------
# Positive
# ---------------------------------------------------------------------------


def test_catalog_endpoint_and_token(viewer_conn, ctsd, data):
    assert viewer_conn.ctsv3.get_endpoint() == f"{ctsd.url}/v3/{data.project_id}"
    assert viewer_conn.current_project_id == data.project_id
    access = viewer_conn.session.auth.get_access(viewer_conn.session)
    assert access.project_id == data.project_id
    assert access.username == data.viewer.name
    assert access.user_domain_name == data.viewer.domain_name
    assert "cts_viewer" in access.role_names
    # Default token lifetime: a day.
    assert access.expires.timestamp() - time.time() > 23 * 3600
    # The other CTS catalog types the OTC extensions know.
    for service_type, prefix in (("cts", "v1.0"), ("ctsv2", "v2.0")):
        url = viewer_conn.session.get_endpoint(
            service_type=service_type, interface="public", region_name=ctsd.bootstrap["region"]
        )
        assert url == f"{ctsd.url}/{prefix}/{data.project_id}"


def test_traces_by_project_id(viewer_conn, data):
    got = list(viewer_conn.ctsv3.traces(trace_type="system", limit=50, **data.window))
    assert [t.trace_id for t in got] == data.expected()
    sent = {t["trace_id"]: t for t in data.traces}
    for t in got:
        s = sent[t.trace_id]
        assert t.trace_name == s["trace_name"]
        assert t.resource_id == s["resource_id"]
        assert t.resource_name == s["resource_name"]
        assert t.resource_type == s["resource_type"]
        assert t.service_type == s["service_type"]
        assert t.trace_type == "ApiCall"
        assert t.trace_rating == s["trace_rating"]
        assert t.code == s["code"]
        assert t.time == s["time"]
        assert t.source_ip == s["source_ip"]
        assert t.user.name == s["user"]["name"]
        assert t.user.id == s["user"]["id"]
        assert t.user.domain.name == s["user"]["domain"]["name"]


QUERIES = [
    {"service_type": "ECS"},
    {"service_type": "EVS"},
    {"user": "alice"},
    {"resource_id": "vol-1"},
    {"resource_name": "name-srv-2"},
    {"trace_name": "createServer"},
    {"trace_rating": "warning"},
    {"trace_rating": "incident"},
    {"service_type": "ECS", "user": "alice"},
]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: ",".join(f"{k}={v}" for k, v in q.items()))
def test_traces_filtered(viewer_conn, data, query):
    expected = data.expected(**query)
    assert expected
    assert trace_ids(viewer_conn, limit=50, **data.window, **query) == expected


def test_resource_type_filter_through_the_adapter(viewer_conn, data):
    # otcextensions cannot pass resource_type to conn.ctsv3.traces(): it
    # collides with the first parameter of Proxy._list (TypeError, a client
    # bug). The same query through the ctsv3 adapter works.
    with pytest.raises(TypeError, match="resource_type"):
        list(viewer_conn.ctsv3.traces(resource_type="vpc"))
    r = viewer_conn.ctsv3.get(
        "/traces", params={"trace_type": "system", "resource_type": "vpc", **data.window}
    )
    assert r.status_code == 200
    assert [t["trace_id"] for t in r.json()["traces"]] == data.expected(resource_type="vpc")


def test_traces_by_trace_id(viewer_conn, data):
    wanted = data.traces[3]["trace_id"]
    assert trace_ids(viewer_conn, trace_id=wanted, **data.window) == [wanted]


def test_traces_limit_is_one_page(viewer_conn, data):
    # ctsv3.traces() is not paginated: exactly one GET, the first `limit`.
    assert trace_ids(viewer_conn, limit=2, **data.window) == data.expected()[:2]


def test_traces_next_marker(viewer_conn, data):
    everything = data.expected()
    second = trace_ids(viewer_conn, limit=2, next=everything[1], **data.window)
    assert second == everything[2:4]


@pytest.mark.parametrize("service", ["cts", "ctsv2"])
def test_legacy_trace_queries(viewer_conn, data, service):
    # The v1.0/v2.0 catalog entries and routes (GET /v{1.0,2.0}/{pid}/system/trace).
    proxy = getattr(viewer_conn, service)
    got = list(proxy.traces("system", service_type="ECS", limit=50, **data.window))
    assert [t.id for t in got] == data.expected(service_type="ECS")
    assert {t.name for t in got} == {"createServer", "deleteServer"}


def test_identity_discovery_from_the_root_url(ctsd, data):
    # auth_url without /v3: keystoneauth needs the version document at GET /.
    conn = connect(ctsd, data.viewer, project_id=data.project_id, auth_url=ctsd.url)
    assert trace_ids(conn, limit=50, **data.window) == data.expected()


def test_identity_management_through_openstacksdk(ctsd, admin, data):
    # The Keystone v3 shapes as openstacksdk's identity proxy uses them: the
    # admin creates a project and a user, grants cts_viewer; the user reads.
    conn = connect(ctsd, admin.user, project_id=admin.project_id)
    project = conn.identity.create_project(name=f"{admin.region}_os-{uuid.uuid4().hex[:8]}")
    password = f"Pw-{uuid.uuid4().hex}"
    user = conn.identity.create_user(name=f"os-{uuid.uuid4().hex[:8]}", password=password)
    role = conn.identity.find_role("cts_viewer")
    assert role is not None
    conn.identity.assign_project_role_to_user(project, user, role)
    assert conn.identity.validate_user_has_project_role(project, user, role)
    assert {p.id for p in conn.identity.projects()} >= {project.id, admin.project_id, data.project_id}
    assert user.id in {u.id for u in conn.identity.users()}

    member = SimpleNamespace(name=user.name, password=password, domain_name=admin.domain_name)
    mconn = connect(ctsd, member, project_id=project.id)
    assert mconn.ctsv3.get_endpoint() == f"{ctsd.url}/v3/{project.id}"
    assert trace_ids(mconn, service_type="ECS") == []


def test_project_scope_by_name_and_domain(ctsd, data):
    conn = connect(ctsd, data.viewer, project_name=data.project["name"])
    assert conn.current_project_id == data.project_id
    assert trace_ids(conn, limit=50, **data.window) == data.expected()


def test_project_of_another_region(ctsd, admin, make_trace):
    # Huawei naming: "eu-nl_<x>" is a project of region eu-nl; the catalog
    # must name that region or openstacksdk finds no ctsv3 endpoint.
    project = admin.create_project(name=f"eu-nl_compat-{uuid.uuid4().hex[:8]}")
    assert project["region"] == "eu-nl"
    user = admin.new_user({project["id"]: ["cts_admin"]})
    conn = connect(ctsd, user, project_name=project["name"], region="eu-nl")
    trace = make_trace(now_ms() - 10 * MINUTE, trace_id=str(uuid.uuid4()), service_type="RDS")
    r = conn.ctsv3.post("/traces", json={"traces": [trace]}, raise_exc=False)
    assert r.status_code == 201, r.text
    assert trace_ids(conn, service_type="RDS") == [trace["trace_id"]]


def test_group_role_grants_access(ctsd, admin, data):
    user = admin.new_user()
    group = admin.create_group()
    admin.add_to_group(group["id"], user.id)
    admin.grant(data.project_id, group["id"], "cts_viewer", actor="groups")
    conn = connect(ctsd, user, project_id=data.project_id)
    assert trace_ids(conn, limit=50, **data.window) == data.expected()


def test_reporter_reports_through_the_session(ctsd, data, make_trace):
    conn = connect(ctsd, data.reporter, project_id=data.project_id)
    trace = make_trace(now_ms() - 10 * MINUTE, trace_id=str(uuid.uuid4()), service_type="DNS")
    r = conn.session.post(conn.ctsv3.get_endpoint() + "/traces", json={"traces": [trace]})
    assert r.status_code == 201
    assert r.json()["trace_ids"] == [trace["trace_id"]]


# ---------------------------------------------------------------------------
# Negative
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["wrong password", "unknown user", "project without a role"])
def test_refused_login_is_401(ctsd, admin, data, case):
    user = admin.new_user()
    project_id = data.project_id
    if case == "wrong password":
        admin.grant(project_id, user.id, "cts_viewer")
        user.password += "-wrong"
    elif case == "unknown user":
        user.name += "-nobody"
    conn = connect(ctsd, user, project_id=project_id, register=False)
    with pytest.raises(ks_exc.Unauthorized) as info:
        conn.session.get_token()
    assert info.value.http_status == 401
    # openstacksdk's own entry points wrap it.
    with pytest.raises(os_exc.SDKException, match="HTTP 401"):
        connect(ctsd, user, project_id=project_id, register=False).authorize()
    with pytest.raises(os_exc.SDKException, match="HTTP 401"):
        connect(ctsd, user, project_id=project_id)


def test_expired_token_is_refused(start_ctsd, admin_of):
    server = start_ctsd({"CTS_AUTH_TOKEN_TTL": "2s"})
    b = server.bootstrap
    admin = admin_of(server)
    conn = connect(server, admin.user, project_id=b["project_id"])
    # keystoneauth renews a token proactively when it expires within 120 s,
    # i.e. on every use of a 2 s token; keep the first one instead.
    conn.session.auth.reauthenticate = False
    access = conn.session.auth.get_access(conn.session)
    old_token = access.auth_token
    lifetime = access.expires.timestamp() - access.issued.timestamp()
    assert 1.5 <= lifetime <= 2.5, f"token lifetime {lifetime}s, CTS_AUTH_TOKEN_TTL=2s"
    endpoint = conn.ctsv3.get_endpoint()
    assert requests.get(endpoint + "/traces", headers={"X-Auth-Token": old_token}).status_code == 200

    time.sleep(3)
    # The server refuses the expired token itself ...
    r = requests.get(endpoint + "/traces", headers={"X-Auth-Token": old_token})
    assert r.status_code == 401, r.text
    assert r.json()["error_code"] == "CTS.0002"
    assert "expired" in r.json()["error_msg"]
    # ... also when keystoneauth sends it ...
    r = conn.session.get(endpoint + "/traces", allow_reauth=False, raise_exc=False)
    assert r.request.headers["X-Auth-Token"] == old_token
    assert r.status_code == 401
    assert r.json()["error_code"] == "CTS.0002"
    # ... and keystoneauth recovers the way it does against Keystone: a 401
    # invalidates the token, it logs in again and retries.
    assert isinstance(list(conn.ctsv3.traces(trace_type="system", limit=1)), list)
    assert conn.session.get_token() != old_token


def test_revoked_token_is_refused(ctsd, data):
    conn = connect(ctsd, data.viewer, project_id=data.project_id)
    token = conn.session.get_token()
    endpoint = conn.ctsv3.get_endpoint()
    r = requests.delete(
        f"{ctsd.url}/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
    )
    assert r.status_code == 204, r.text
    r = conn.session.get(endpoint + "/traces", allow_reauth=False, raise_exc=False)
    assert r.request.headers["X-Auth-Token"] == token
    assert r.status_code == 401, r.text
    assert r.json()["error_code"] == "CTS.0002"
    # keystoneauth logs in again after the 401.
    assert isinstance(list(conn.ctsv3.traces(trace_type="system", limit=1)), list)
    assert conn.session.get_token() != token


def test_viewer_may_not_report(ctsd, data, make_trace):
    endpoint = f"{ctsd.url}/v3/{data.project_id}"
    conn = connect(ctsd, data.viewer, project_id=data.project_id)
    assert conn.ctsv3.get_endpoint() == endpoint
    body = {"traces": [make_trace(now_ms() - MINUTE, service_type="DNS")]}
    r = conn.session.post(endpoint + "/traces", json=body, raise_exc=False)
    assert r.status_code == 403, r.text
    assert r.json()["error_code"] == "CTS.0013"
    with pytest.raises(ks_exc.Forbidden) as info:
        conn.session.post(endpoint + "/traces", json=body)
    assert info.value.http_status == 403


def test_user_of_one_project_may_not_read_another(ctsd, admin, data):
    other = admin.create_project()
    conn = connect(ctsd, data.viewer, project_id=data.project_id)
    r = conn.session.get(f"{ctsd.url}/v3/{other['id']}/traces", raise_exc=False)
    assert r.status_code == 403, r.text
    assert r.json()["error_code"] == "CTS.0002"
    # The same through the ctsv3 proxy pointed at the other project.
    conn = connect(
        ctsd,
        data.viewer,
        project_id=data.project_id,
        ctsv3_endpoint_override=f"{ctsd.url}/v3/{other['id']}",
    )
    with pytest.raises(os_exc.HttpException) as info:
        list(conn.ctsv3.traces(limit=1))
    assert info.value.status_code == 403
    assert "CTS.0002" in str(info.value)


def test_repeated_wrong_passwords_are_throttled(start_ctsd):
    server = start_ctsd({"CTS_AUTH_LOGIN_MAX_FAILURES": "2", "CTS_AUTH_LOGIN_LOCKOUT": "60s"})
    b = server.bootstrap

    def login(password):
        user = SimpleNamespace(name=b["user_name"], password=password, domain_name=b["domain_name"])
        return connect(server, user, project_id=b["project_id"], register=False).session.get_token()

    for _ in range(2):
        with pytest.raises(ks_exc.Unauthorized):
            login("wrong")
    with pytest.raises(ks_exc.TooManyRequests) as info:
        login(b["password"])
    assert info.value.http_status == 429
    assert 0 < info.value.retry_after <= 60
