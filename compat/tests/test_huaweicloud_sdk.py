"""The official Huawei Cloud SDK against ctsd.

``huaweicloudsdkcts.v3.CtsClient`` with ``BasicCredentials(ak, sk, project_id)``
and ``.with_endpoint(url)`` (docs/sdk-compat-notes.md section 3): every request
is signed with SDK-HMAC-SHA256 by huaweicloudsdkcore, so these tests prove the
server verifies the real SDK's signatures (query encoding included: some
filter values need percent-encoding) and that its answers deserialise into the
SDK's models.

The module reports a known set of traces into its own project first (with a
``cts_reporter`` token over plain HTTP: the SDK has no report operation), at
times 30 to 20 minutes ago. Every query names a window around them, because
ctsd records its own identity operations (token issues, refused signatures) as
``IAM`` traces of the project at the current time.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.region.region import Region
from huaweicloudsdkcts.v3 import CtsClient, ListTracesRequest

MINUTE = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


# (minute offset, service_type, user, resource_type, resource_id, resource_name,
#  trace_name, code, extra fields). Three traces share one millisecond (minute 4)
# so ordering and paging must break the tie by trace_id. Some values need
# percent-encoding in a query (space, '/', '+', '@', non-ASCII).
SPECS = [
    (0, "ECS", "alice", "ecs", "srv-1", "web-1", "createServer", "200", {}),
    (1, "ECS", "alice", "ecs", "srv-1", "web-1", "updateServer", "200", {}),
    (2, "ECS", "bob", "ecs", "srv-2", "web-2", "createServer", "202", {}),
    (3, "ECS", "bob", "ecs", "srv-2", "web-2", "deleteServer", "500", {}),
    (4, "EVS", "carol@example.com", "evs", "vol-1", "data 1/α+β", "createVolume", "200", {}),
    (4, "EVS", "alice", "evs", "vol-1", "data 1/α+β", "attachVolume", "409", {}),
    (4, "EVS", "alice", "evs", "vol-2", "data-2", "createVolume", "200", {}),
    (6, "VPC", "bob", "vpc", "vpc-1", "net-1", "createVpc", "200", {}),
    (7, "VPC", "carol@example.com", "security_group", "sg-1", "web-1", "createSecurityGroup", "201", {}),
    (8, "VPC", "carol@example.com", "vpc", "vpc-1", "net-1", "deleteVpc", "403", {}),
    (9, "ECS", "alice", "ecs", "srv-1", "web-1", "rebootServer", "200", {"trace_rating": "warning"}),
    (10, "OBS", "bob", "bucket", "bkt-1", "logs+archive", "createBucket", "200", {}),
]


def rating_of(code: str, extra: dict) -> str:
    if "trace_rating" in extra:
        return extra["trace_rating"]
    c = int(code)
    return "incident" if c >= 500 else "warning" if c >= 400 else "normal"


@dataclass
class Dataset:
    project_id: str
    other_project_id: str
    traces: list[dict]  # as reported, plus "trace_rating" as the server derives it
    start: int  # exclusive window around all reported traces
    end: int
    viewer: object
    reporter: object
    outsider: object  # roles only on other_project_id

    def expected(self, **match) -> list[str]:
        """trace_ids of the reported traces whose top-level fields (or
        ``user`` = user.name) equal ``match``, newest first."""

        def field(t, k):
            return t["user"]["name"] if k == "user" else t[k]

        hits = [t for t in self.traces if all(field(t, k) == v for k, v in match.items())]
        hits.sort(key=lambda t: (t["time"], t["trace_id"]), reverse=True)
        return [t["trace_id"] for t in hits]

    def by_id(self, trace_id: str) -> dict:
        return next(t for t in self.traces if t["trace_id"] == trace_id)


def cts_client(server, ak: str, sk: str, project_id: str) -> CtsClient:
    config = HttpConfig.get_default_config()
    config.timeout = (5, 30)
    return (
        CtsClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(ak, sk, project_id))
        .with_endpoint(server.url)
        .build()
    )


@pytest.fixture(scope="module")
def data(ctsd, admin, make_trace) -> Dataset:
    project = admin.create_project()
    other = admin.create_project()
    pid = project["id"]
    reporter = admin.new_user({pid: ["cts_reporter"]}, key=True)
    viewer = admin.new_user({pid: ["cts_viewer"]}, key=True)
    outsider = admin.new_user({other["id"]: ["cts_admin"]}, key=True)

    base = now_ms() - 30 * MINUTE
    traces = []
    for at, svc, user, rtype, rid, rname, tname, code, extra in SPECS:
        t = make_trace(
            base + at * MINUTE,
            user_name=user,
            service_type=svc,
            resource_type=rtype,
            resource_id=rid,
            resource_name=rname,
            trace_name=tname,
            code=code,
            trace_id=str(uuid.uuid4()),
            **extra,
        )
        traces.append(t)

    token = ctsd.token(reporter.name, reporter.password, project_id=pid)
    r = ctsd.report(token, pid, traces)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["recorded"] == len(traces) and body["duplicates"] == 0, body
    assert body["trace_ids"] == [t["trace_id"] for t in traces], body

    for t, spec in zip(traces, SPECS):
        t["trace_rating"] = rating_of(spec[7], spec[8])
    return Dataset(
        project_id=pid,
        other_project_id=other["id"],
        traces=traces,
        start=base - 1,
        end=base + 10 * MINUTE + 1,
        viewer=viewer,
        reporter=reporter,
        outsider=outsider,
    )


@pytest.fixture(scope="module")
def viewer_client(ctsd, data) -> CtsClient:
    return cts_client(ctsd, data.viewer.access_key, data.viewer.secret_key, data.project_id)


def list_ids(client: CtsClient, **params) -> tuple[list[str], object]:
    resp = client.list_traces(ListTracesRequest(trace_type="system", **params))
    return [t.trace_id for t in resp.traces], resp


def in_window(data: Dataset, limit: int = 200, **params) -> dict:
    return dict(limit=limit, _from=data.start, to=data.end, **params)


# ---------------------------------------------------------------------------
# Positive: signatures accepted, models filled
# ---------------------------------------------------------------------------


def test_bootstrap_admin_key_lists_own_project(ctsd, admin):
    assert ctsd.bootstrap["endpoint"] == ctsd.url
    client = cts_client(ctsd, admin.user.access_key, admin.user.secret_key, admin.project_id)
    resp = client.list_traces(ListTracesRequest(trace_type="system", limit=10))
    assert resp.traces is not None
    assert resp.meta_data.count == len(resp.traces)


def test_project_id_found_through_iam(ctsd, admin):
    # BasicCredentials without a project id and with_region(): the SDK asks
    # IAM first (signed GET /v3/projects?name=<region>) and signs with the
    # project it finds. (ctsd lets only identity admins list projects, so
    # this needs the admin's key; a CTS-only key gets 403 CTS.0013 there.)
    credentials = BasicCredentials(admin.user.access_key, admin.user.secret_key).with_iam_endpoint(ctsd.url)
    client = (
        CtsClient.new_builder()
        .with_credentials(credentials)
        .with_region(Region(admin.region, ctsd.url))
        .build()
    )
    client.list_traces(ListTracesRequest(trace_type="system", limit=1))
    assert credentials.project_id == admin.project_id


def test_all_reported_traces_come_back_newest_first(viewer_client, data):
    ids, resp = list_ids(viewer_client, **in_window(data))
    assert ids == data.expected()
    assert resp.meta_data.count == len(data.traces)
    assert resp.meta_data.marker is None


def test_trace_fields_deserialise_into_sdk_model(viewer_client, data):
    sent = data.traces[4]  # carol@example.com, "data 1/α+β"
    ids, resp = list_ids(viewer_client, trace_id=sent["trace_id"])
    assert ids == [sent["trace_id"]]
    t = resp.traces[0]
    assert t.time == sent["time"]
    assert isinstance(t.record_time, int) and t.record_time >= sent["time"]
    assert t.user.id == sent["user"]["id"]
    assert t.user.name == sent["user"]["name"]
    assert t.user.domain.id == sent["user"]["domain"]["id"]
    assert t.user.domain.name == sent["user"]["domain"]["name"]
    for field in (
        "service_type",
        "resource_type",
        "resource_id",
        "resource_name",
        "trace_name",
        "trace_type",
        "code",
        "source_ip",
        "trace_rating",
    ):
        assert getattr(t, field) == sent[field], field
    assert t.enterprise_project_id == "0"
    assert t.operation_id == sent["trace_name"]


FILTERS = [
    ("service_type", "ECS"),
    ("service_type", "EVS"),
    ("service_type", "OBS"),
    ("user", "alice"),
    ("user", "carol@example.com"),
    ("resource_id", "srv-1"),
    ("resource_id", "vol-1"),
    ("resource_name", "web-1"),
    ("resource_name", "data 1/α+β"),
    ("resource_name", "logs+archive"),
    ("resource_type", "ecs"),
    ("resource_type", "security_group"),
    ("trace_name", "createServer"),
    ("trace_name", "createVolume"),
    ("trace_rating", "normal"),
    ("trace_rating", "warning"),
    ("trace_rating", "incident"),
]


@pytest.mark.parametrize("name,value", FILTERS, ids=[f"{n}={v}" for n, v in FILTERS])
def test_filter(viewer_client, data, name, value):
    expected = data.expected(**{name: value})
    assert expected, "the dataset must contain a match"
    ids, resp = list_ids(viewer_client, **in_window(data, **{name: value}))
    assert ids == expected
    assert resp.meta_data.count == len(expected)
    assert resp.meta_data.marker is None


def test_filters_combine(viewer_client, data):
    ids, _ = list_ids(viewer_client, **in_window(data, service_type="EVS", user="alice"))
    assert ids == data.expected(service_type="EVS", user="alice")
    assert len(ids) == 2


def test_filter_without_match(viewer_client, data):
    ids, resp = list_ids(viewer_client, **in_window(data, service_type="RDS"))
    assert ids == []
    assert resp.meta_data.count == 0
    assert resp.meta_data.marker is None


@pytest.mark.parametrize("index", [0, 4, 5, 6, 11])
def test_filter_trace_id(viewer_client, data, index):
    wanted = data.traces[index]["trace_id"]
    ids, _ = list_ids(viewer_client, **in_window(data, trace_id=wanted))
    assert ids == [wanted]


def test_filter_unknown_trace_id(viewer_client, data):
    ids, _ = list_ids(viewer_client, **in_window(data, trace_id=str(uuid.uuid4())))
    assert ids == []


def test_time_window(viewer_client, data):
    base = data.start + 1
    # Half-minute boundaries: minutes 3 .. 7 inclusive, whatever the
    # inclusivity of from/to.
    start, end = base + 2 * MINUTE + MINUTE // 2, base + 7 * MINUTE + MINUTE // 2
    ids, _ = list_ids(viewer_client, limit=200, _from=start, to=end)
    expected = [i for i in data.expected() if start < data.by_id(i)["time"] < end]
    assert len(expected) == 6
    assert ids == expected


def test_window_before_the_traces_is_empty(viewer_client, data):
    ids, _ = list_ids(viewer_client, limit=200, _from=data.start - 10 * MINUTE, to=data.start - MINUTE)
    assert ids == []


def test_default_window_is_the_last_hour(viewer_client, data):
    # No from/to: the traces of 20-30 minutes ago are inside the default hour.
    ids, _ = list_ids(viewer_client, limit=200, service_type="ECS")
    assert ids == data.expected(service_type="ECS")


def page_through(client: CtsClient, limit: int, **params) -> list[list[str]]:
    pages, marker = [], None
    for _ in range(100):
        kwargs = dict(limit=limit, **params)
        if marker is not None:
            kwargs["next"] = marker
        ids, resp = list_ids(client, **kwargs)
        pages.append(ids)
        assert resp.meta_data.count == len(ids)
        marker = resp.meta_data.marker
        if marker is None:
            return pages
        # The marker is the last trace of the page (CTS API: "ID of the last
        # record in the query").
        assert marker == ids[-1]
    raise AssertionError("paging did not end after 100 pages")


@pytest.mark.parametrize("limit", [1, 4, 5, 12, 200])
def test_paging_visits_every_trace_once(viewer_client, data, limit):
    pages = page_through(viewer_client, limit, _from=data.start, to=data.end)
    expected = data.expected()
    assert [i for page in pages for i in page] == expected
    assert len(pages) == max(1, math.ceil(len(expected) / limit))
    assert all(len(p) == limit for p in pages[:-1])


def test_paging_with_a_filter(viewer_client, data):
    pages = page_through(viewer_client, 2, _from=data.start, to=data.end, service_type="ECS")
    expected = data.expected(service_type="ECS")
    assert [i for page in pages for i in page] == expected
    assert [len(p) for p in pages] == [2, 2, 1]


def test_group_role_grants_access(ctsd, admin, data):
    user = admin.new_user(key=True)
    group = admin.create_group()
    admin.add_to_group(group["id"], user.id)
    admin.grant(data.project_id, group["id"], "cts_viewer", actor="groups")
    client = cts_client(ctsd, user.access_key, user.secret_key, data.project_id)
    ids, _ = list_ids(client, **in_window(data, service_type="VPC"))
    assert ids == data.expected(service_type="VPC")


def test_string_fields_stay_strings(ctsd, admin, make_trace):
    project = admin.create_project()
    admin.grant(project["id"], admin.user.id, "cts_admin")
    token = ctsd.token(admin.user.name, admin.user.password, project_id=project["id"])
    request_body = {"server": {"name": "web-1", "flavorRef": "s3.large.2"}}
    response_body = {"server": {"id": "srv-1"}}
    trace = make_trace(
        now_ms() - 5 * MINUTE,
        code=202,
        request=request_body,
        response=response_body,
        message={"detail": "accepted"},
    )
    r = ctsd.report(token, project["id"], [trace])
    assert r.status_code == 201, r.text
    raw = ctsd.list_traces(token, project["id"], service_type="ECS").json()["traces"][0]
    client = cts_client(ctsd, admin.user.access_key, admin.user.secret_key, project["id"])
    t = client.list_traces(ListTracesRequest(trace_type="system", service_type="ECS")).traces[0]
    problems = []
    for field in ("request", "response", "message", "code"):
        if not isinstance(raw[field], str):
            problems.append(f"raw {field} is {type(raw[field]).__name__}: {raw[field]!r}")
    if t.request != json.dumps(request_body, separators=(",", ":")) and _loads(t.request) != request_body:
        problems.append(f"SDK request is not the JSON text of the body: {t.request!r}")
    assert not problems, problems


def _loads(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------
# Negative: what the SDK raises
# ---------------------------------------------------------------------------


def sdk_error(client: CtsClient, **params) -> ClientRequestException:
    with pytest.raises(ClientRequestException) as info:
        client.list_traces(ListTracesRequest(trace_type="system", **params))
    return info.value


def test_wrong_secret_key_is_401(ctsd, data):
    client = cts_client(ctsd, data.viewer.access_key, data.viewer.secret_key[::-1], data.project_id)
    e = sdk_error(client, limit=1)
    assert e.status_code == 401
    assert e.error_code == "CTS.0002"
    assert e.request_id  # from X-Request-Id


def test_unknown_access_key_is_401(ctsd, data):
    client = cts_client(ctsd, "NOSUCHACCESSKEY00000", data.viewer.secret_key, data.project_id)
    e = sdk_error(client, limit=1)
    assert e.status_code == 401
    assert e.error_code == "CTS.0002"


def test_key_of_another_project_is_403(ctsd, data):
    # The outsider holds cts_admin, but only on the other project.
    client = cts_client(ctsd, data.outsider.access_key, data.outsider.secret_key, data.project_id)
    e = sdk_error(client, limit=1)
    assert e.status_code == 403
    assert e.error_code == "CTS.0002"
    # ... and the same key works on its own project.
    own = cts_client(ctsd, data.outsider.access_key, data.outsider.secret_key, data.other_project_id)
    own.list_traces(ListTracesRequest(trace_type="system", limit=1))


def test_user_without_any_role_is_403(ctsd, admin, data):
    nobody = admin.new_user(key=True)
    client = cts_client(ctsd, nobody.access_key, nobody.secret_key, data.project_id)
    e = sdk_error(client, limit=1)
    assert e.status_code == 403
    assert e.error_code == "CTS.0002"


def test_reporter_may_not_list_traces(ctsd, data):
    client = cts_client(ctsd, data.reporter.access_key, data.reporter.secret_key, data.project_id)
    e = sdk_error(client, limit=1)
    assert e.status_code == 403
    assert e.error_code == "CTS.0013"


def test_invalid_query_parameter_is_400(viewer_client):
    e = sdk_error(viewer_client, limit=201)
    assert e.status_code == 400
    assert e.error_code == "CTS.0300"
    assert "limit" in e.error_msg


def test_bad_signatures_do_not_lock_the_key_out(start_ctsd):
    # Access key ids are not secret (traces show them): refused signatures must
    # not lock a reporter's key out, whatever the login throttle says.
    server = start_ctsd({"CTS_AUTH_LOGIN_MAX_FAILURES": "2", "CTS_AUTH_LOGIN_LOCKOUT": "60s"})
    b = server.bootstrap
    wrong = cts_client(server, b["access_key"], "x" + b["secret_key"], b["project_id"])
    for _ in range(3):
        e = sdk_error(wrong, limit=1)
        assert (e.status_code, e.error_code) == (401, "CTS.0002")
    right = cts_client(server, b["access_key"], b["secret_key"], b["project_id"])
    right.list_traces(ListTracesRequest(trace_type="system", limit=1))
