"""Trackers, tags, quotas and the catalog calls through the official Huawei Cloud SDK.

``huaweicloudsdkcts.v3.CtsClient`` (AK/SK signatures, like
test_huaweicloud_sdk.py) with every tracker-related operation the SDK has:
``create_tracker``, ``update_tracker``, ``list_trackers``, ``delete_tracker``,
``batch_create_resource_tags``, ``batch_delete_resource_tags``,
``list_quotas``, ``list_operations``, ``list_trace_resources``,
``list_user_resources`` and ``check_obs_buckets``. Every response is checked
twice: the SDK's model must hold exactly what the raw JSON says for every
field the model knows (``assert_parsed``), and the values must be the ones
that were set.

Then what trackers decide (reports go over plain HTTP with a token: the SDK
has no report operation): a disabled or missing management tracker records no
management traces; a data trace is recorded only by an enabled data tracker
of its bucket and operation type; every tracker change is a ``CTS`` trace.

Each test works in projects of its own (``tenant``): the server is shared by
the whole session, and ``list_quotas``/``list_trackers`` answer per project.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

import huaweicloudsdkcts.v3.model as sdk_models
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.utils.http_utils import sanitize_for_serialization
from huaweicloudsdkcts.v3 import (
    BatchCreateResourceTagsRequest,
    BatchCreateResourceTagsRequestBody,
    BatchDeleteResourceTagsRequest,
    BatchDeleteResourceTagsRequestBody,
    CheckBucketRequest,
    CheckObsBucketsRequest,
    CheckObsBucketsRequestBody,
    CreateTrackerRequest,
    CreateTrackerRequestBody,
    CtsClient,
    DataBucket,
    DeleteTrackerRequest,
    ListOperationsRequest,
    ListQuotasRequest,
    ListTraceResourcesRequest,
    ListTracesRequest,
    ListTrackersRequest,
    ListUserResourcesRequest,
    ManagementEventSelector,
    Tags,
    TrackerObsInfo,
    UpdateTrackerRequest,
    UpdateTrackerRequestBody,
)

from conftest import make_bucket

MINUTE = 60_000
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def now_ms() -> int:
    return int(time.time() * 1000)


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


# ---------------------------------------------------------------------------
# The SDK's models against the raw JSON
# ---------------------------------------------------------------------------

PRIMITIVES = {"str": str, "int": int, "bool": bool}


def _modeled(value, type_name: str, path: str):
    """``value`` (raw JSON) reduced to what the SDK type ``type_name`` knows,
    checking the JSON types of primitives on the way."""
    if type_name.startswith("list["):
        assert isinstance(value, list), f"{path}: expected a list, got {value!r}"
        return [_modeled(v, type_name[5:-1], f"{path}[{i}]") for i, v in enumerate(value)]
    if type_name in PRIMITIVES:
        want = PRIMITIVES[type_name]
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        assert ok, f"{path}: the SDK models {type_name}, the server sent {value!r}"
        return value
    klass = getattr(sdk_models, type_name)
    assert isinstance(value, dict), f"{path}: expected an object ({type_name}), got {value!r}"
    out = {}
    for attr, sub_type in klass.openapi_types.items():
        key = klass.attribute_map[attr]
        if value.get(key) is not None:
            out[key] = _modeled(value[key], sub_type, f"{path}.{key}")
    return out


def assert_parsed(model, raw: dict | None = None) -> dict:
    """Every field the SDK's model (response or nested) knows holds what the
    server sent, with the JSON type the model declares. Returns the raw JSON."""
    if raw is None:
        raw = model.to_json_object()
    expected = _modeled(raw, type(model).__name__, type(model).__name__)
    assert sanitize_for_serialization(model) == expected
    return raw


def sdk_error(call, request) -> ClientRequestException:
    with pytest.raises(ClientRequestException) as info:
        call(request)
    return info.value


# ---------------------------------------------------------------------------
# Tenants: a project with a cts_admin key
# ---------------------------------------------------------------------------


@dataclass
class Tenant:
    server: object
    project_id: str
    user: object  # cts_admin on the project, with an access key
    client: CtsClient
    _token: str | None = None

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = self.server.token(self.user.name, self.user.password, project_id=self.project_id)
        return self._token

    def report(self, traces: list[dict]) -> dict:
        r = self.server.report(self.token, self.project_id, traces)
        assert r.status_code == 201, r.text
        return r.json()

    # SDK shorthands
    def trackers(self, **params) -> list:
        return self.client.list_trackers(ListTrackersRequest(**params)).trackers

    def raw_trackers(self, **params) -> list[dict]:
        resp = self.client.list_trackers(ListTrackersRequest(**params))
        return assert_parsed(resp)["trackers"]

    def create(self, **body):
        return self.client.create_tracker(create_request(**body))

    def update(self, **body):
        return self.client.update_tracker(update_request(**body))

    def delete(self, **params):
        return self.client.delete_tracker(DeleteTrackerRequest(**params))

    def data_tracker(self, name: str, bucket: str, events: list[str], **body):
        watched = data_bucket(bucket, events)
        return self.create(tracker_type="data", tracker_name=name, data_bucket=watched, **body)

    def quotas(self) -> dict[str, tuple[int, int]]:
        resp = self.client.list_quotas(ListQuotasRequest())
        assert_parsed(resp)
        return {q.type: (q.used, q.quota) for q in resp.resources}

    def traces(self, **params) -> list:
        return self.client.list_traces(ListTracesRequest(limit=200, **params)).traces


def bootstrap_tenant(server) -> Tenant:
    """The bootstrap project of another server, with the bootstrap admin's key."""
    b = server.bootstrap
    client = cts_client(server, b["access_key"], b["secret_key"], b["project_id"])
    return Tenant(server, b["project_id"], None, client)


@pytest.fixture(scope="module")
def tenant(ctsd, admin):
    """``tenant(enable_cts=True) -> Tenant``: a new project (with its
    management tracker unless ``enable_cts=False``) and a cts_admin with a key."""

    def make(enable_cts: bool = True) -> Tenant:
        project = admin.create_project(enable_cts=enable_cts)
        user = admin.new_user({project["id"]: ["cts_admin"]}, key=True)
        client = cts_client(ctsd, user.access_key, user.secret_key, project["id"])
        return Tenant(ctsd, project["id"], user, client)

    return make


def bucket(prefix: str = "bkt") -> str:
    return make_bucket(prefix)


def create_request(**body) -> CreateTrackerRequest:
    return CreateTrackerRequest(body=CreateTrackerRequestBody(**body))


def update_request(**body) -> UpdateTrackerRequest:
    return UpdateTrackerRequest(body=UpdateTrackerRequestBody(**body))


def data_bucket(name: str, events: list[str]) -> DataBucket:
    return DataBucket(data_bucket_name=name, data_event=events)


# ---------------------------------------------------------------------------
# create / list / update / delete
# ---------------------------------------------------------------------------


def test_enabling_cts_in_a_fresh_project(tenant, admin):
    t = tenant(enable_cts=False)
    assert t.trackers() == []
    transfer = bucket("transfer")
    before = now_ms()
    created = t.create(
        tracker_type="system",
        tracker_name="system",
        is_lts_enabled=True,
        is_support_validate=True,
        is_support_trace_files_encryption=False,
        agency_name="cts_admin_trust",
        management_event_selector=ManagementEventSelector(exclude_service=["KMS"]),
        obs_info=TrackerObsInfo(
            bucket_name=transfer,
            file_prefix_name="audit_2026.logs-A",
            is_obs_created=True,
            bucket_lifecycle=30,
            compress_type="json",
            is_sort_by_service=False,
        ),
    )
    assert created.status_code == 201
    raw = assert_parsed(created)
    assert UUID_RE.match(created.id)
    assert before <= created.create_time <= now_ms()
    assert (created.tracker_type, created.tracker_name, created.status) == ("system", "system", "enabled")
    assert created.detail is None
    assert created.project_id == t.project_id
    assert created.domain_id == admin.domain_id
    assert (created.lts.is_lts_enabled, created.lts.log_group_name, created.lts.log_topic_name) == (
        True,
        "CTS",
        "system-trace",
    )
    o = created.obs_info
    assert (o.bucket_name, o.file_prefix_name, o.is_obs_created) == (transfer, "audit_2026.logs-A", True)
    assert (o.bucket_lifecycle, o.compress_type, o.is_sort_by_service) == (30, "json", False)
    assert o.is_authorized_bucket is False
    assert created.is_support_validate is True
    assert created.is_support_trace_files_encryption is False
    assert created.kms_id is None
    assert created.is_organization_tracker is False
    assert created.agency_name == "cts_admin_trust"
    assert created.management_event_selector.exclude_service == ["KMS"]
    assert created.data_bucket is None
    assert raw["tags"] == []  # not in the SDK's model; a ctsd addition

    # The query answers the same tracker, with the LTS stream it got.
    (listed,) = t.trackers()
    assert_parsed(listed, t.raw_trackers()[0])
    for field in CREATED_FIELDS:
        assert getattr(listed, field) == getattr(created, field), field
    assert UUID_RE.match(listed.group_id) and UUID_RE.match(listed.stream_id)
    assert [x.id for x in t.trackers(tracker_type="system")] == [created.id]
    assert [x.id for x in t.trackers(tracker_name="system")] == [created.id]
    assert [x.id for x in t.trackers(tracker_name="system", tracker_type="system")] == [created.id]
    assert t.trackers(tracker_type="data") == []
    assert t.trackers(tracker_name="nosuch") == []


# Fields of CreateTrackerResponse that TrackerResponseBody has too.
CREATED_FIELDS = [
    "id",
    "create_time",
    "kms_id",
    "is_support_validate",
    "is_organization_tracker",
    "management_event_selector",
    "lts",
    "tracker_type",
    "domain_id",
    "project_id",
    "tracker_name",
    "agency_name",
    "status",
    "detail",
    "is_support_trace_files_encryption",
    "obs_info",
    "data_bucket",
]


def test_management_tracker_defaults(tenant):
    t = tenant(enable_cts=False)
    created = t.create(tracker_type="system")  # tracker_name defaults to system
    assert_parsed(created)
    assert created.tracker_name == "system"
    assert created.status == "enabled"
    o = created.obs_info
    assert (o.bucket_name, o.file_prefix_name, o.is_obs_created, o.bucket_lifecycle) == ("", "", False, 0)
    assert (o.compress_type, o.is_sort_by_service) == ("gzip", True)
    assert created.lts.is_lts_enabled is False
    assert created.is_support_validate is False
    assert created.agency_name is None
    assert created.management_event_selector is None
    (listed,) = t.trackers()
    assert listed.group_id is None and listed.stream_id is None


def test_update_management_tracker(tenant):
    t = tenant()
    (original,) = t.trackers()
    transfer = bucket("transfer")

    resp = t.update(tracker_type="system", tracker_name="system", status="disabled")
    assert resp.status_code == 200
    assert resp.to_json_object() is None  # 200 with no body
    assert t.trackers()[0].status == "disabled"

    t.update(
        tracker_type="system",
        tracker_name="system",
        status="enabled",
        is_lts_enabled=True,
        is_support_validate=True,
        obs_info=TrackerObsInfo(
            bucket_name=transfer,
            file_prefix_name="pfx",
            is_obs_created=False,
            bucket_lifecycle=180,
            compress_type="json",
            is_sort_by_service=False,
        ),
        management_event_selector=ManagementEventSelector(exclude_service=["KMS"]),
    )
    (after,) = t.trackers()
    assert_parsed(after, t.raw_trackers()[0])
    assert (after.id, after.create_time) == (original.id, original.create_time)
    assert after.status == "enabled"
    assert after.lts.is_lts_enabled is True
    assert after.group_id and after.stream_id
    assert after.is_support_validate is True
    o = after.obs_info
    assert (o.bucket_name, o.file_prefix_name, o.bucket_lifecycle) == (transfer, "pfx", 180)
    assert (o.compress_type, o.is_sort_by_service) == ("json", False)
    assert after.management_event_selector.exclude_service == ["KMS"]

    # Only what a request names changes; LTS off keeps the log stream.
    t.update(tracker_type="system", tracker_name="system", is_lts_enabled=False,
             obs_info=TrackerObsInfo(file_prefix_name="other"))
    (last,) = t.trackers()
    assert last.lts.is_lts_enabled is False
    assert (last.group_id, last.stream_id) == (after.group_id, after.stream_id)
    assert (last.obs_info.bucket_name, last.obs_info.file_prefix_name) == (transfer, "other")
    assert last.obs_info.bucket_lifecycle == 180
    assert last.is_support_validate is True
    # An empty bucket name switches transfer off.
    t.update(tracker_type="system", tracker_name="system", obs_info=TrackerObsInfo(bucket_name=""))
    assert t.trackers()[0].obs_info.bucket_name == ""


def test_data_tracker_lifecycle(tenant, admin):
    t = tenant()
    tracked, transfer = bucket("tracked"), bucket("transfer")
    created = t.data_tracker(
        "reads-1",
        tracked,
        ["WRITE", "READ"],
        is_lts_enabled=True,
        obs_info=TrackerObsInfo(bucket_name=transfer, file_prefix_name="data", bucket_lifecycle=60),
    )
    raw = assert_parsed(created)
    assert created.tracker_type == "data" and created.tracker_name == "reads-1"
    assert created.status == "enabled"
    assert (created.project_id, created.domain_id) == (t.project_id, admin.domain_id)
    db = created.data_bucket
    assert (db.data_bucket_name, db.data_event, db.search_enabled) == (tracked, ["READ", "WRITE"], True)
    assert created.lts.is_lts_enabled is True
    assert created.lts.log_topic_name == "reads-1"  # a data tracker's own topic
    assert (created.obs_info.bucket_name, created.obs_info.file_prefix_name) == (transfer, "data")
    assert created.obs_info.bucket_lifecycle == 60
    # Management-only fields are absent on data trackers.
    for field in ("is_support_trace_files_encryption", "kms_id", "is_organization_tracker",
                  "management_event_selector"):
        assert field not in raw and getattr(created, field) is None, field

    # A name starting with a digit is a valid data tracker name.
    second = t.data_tracker("2nd-tracker", bucket("other"), ["READ"])
    assert second.tracker_name == "2nd-tracker"

    system = [x.id for x in t.trackers(tracker_type="system")]
    assert [x.tracker_name for x in t.trackers()] == ["system", "reads-1", "2nd-tracker"]
    assert [x.tracker_name for x in t.trackers(tracker_type="data")] == ["reads-1", "2nd-tracker"]
    (by_name,) = t.trackers(tracker_name="reads-1")
    assert_parsed(by_name, t.raw_trackers(tracker_name="reads-1")[0])
    assert by_name.id == created.id
    assert by_name.data_bucket.data_event == ["READ", "WRITE"]
    assert [x.id for x in t.trackers(tracker_name="2nd-tracker", tracker_type="data")] == [second.id]

    # Modify: status, operation types, transfer and LTS.
    t.update(tracker_type="data", tracker_name="reads-1", status="disabled",
             data_bucket=DataBucket(data_bucket_name=tracked, data_event=["READ"]),
             obs_info=TrackerObsInfo(file_prefix_name="data2", compress_type="json", bucket_lifecycle=90),
             is_lts_enabled=False)
    (after,) = t.trackers(tracker_name="reads-1")
    assert_parsed(after, t.raw_trackers(tracker_name="reads-1")[0])
    assert after.status == "disabled"
    assert after.data_bucket.data_event == ["READ"]
    assert after.data_bucket.data_bucket_name == tracked
    assert (after.obs_info.bucket_name, after.obs_info.file_prefix_name) == (transfer, "data2")
    assert (after.obs_info.compress_type, after.obs_info.bucket_lifecycle) == ("json", 90)
    assert after.lts.is_lts_enabled is False
    t.update(tracker_type="data", tracker_name="reads-1", status="enabled")
    assert t.trackers(tracker_name="reads-1")[0].status == "enabled"

    # Delete one by name, then every data tracker at once (no name).
    resp = t.delete(tracker_name="reads-1", tracker_type="data")
    assert resp.status_code == 204
    assert [x.tracker_name for x in t.trackers()] == ["system", "2nd-tracker"]
    t.data_tracker("third", bucket("third"), ["WRITE"])
    t.delete()  # tracker_type defaults to data, no name: all of them
    assert [x.id for x in t.trackers()] == system


def test_deleting_the_management_tracker(tenant):
    t = tenant()
    t.data_tracker("stays", bucket(), ["READ"])
    t.delete(tracker_name="system", tracker_type="system")
    assert [x.tracker_name for x in t.trackers()] == ["stays"]
    assert t.quotas()["tracker"][0] == 1
    # ... and it can be created again. tracker_name=system without a type
    # also means the management tracker (the reference's own example).
    assert t.create(tracker_type="system").tracker_name == "system"
    t.delete(tracker_name="system")
    assert [x.tracker_name for x in t.trackers()] == ["stays"]


def test_organization_tracker(start_ctsd, admin_of):
    # Its own server: one organization tracker per domain (the organization).
    server = start_ctsd()
    b = server.bootstrap
    t = bootstrap_tenant(server)
    t.update(**SYSTEM, is_organization_tracker=True)
    (org,) = t.trackers()
    assert_parsed(org, t.raw_trackers()[0])
    assert org.is_organization_tracker is True
    # Another project of the domain cannot have one too.
    other = admin_of(server).create_project()
    o = cts_client(server, b["access_key"], b["secret_key"], other["id"])
    assert [x.tracker_name for x in o.list_trackers(ListTrackersRequest()).trackers] == ["system"]
    e = sdk_error(o.update_tracker, update_request(**SYSTEM, is_organization_tracker=True))
    assert (e.status_code, e.error_code) == (400, "CTS.0229")
    # Once the first is no organization tracker any more, it can.
    t.update(**SYSTEM, is_organization_tracker=False)
    o.update_tracker(update_request(**SYSTEM, is_organization_tracker=True))
    assert o.list_trackers(ListTrackersRequest()).trackers[0].is_organization_tracker is True


# ---------------------------------------------------------------------------
# Tags
# ---------------------------------------------------------------------------


def tags_of(t: Tenant, name: str) -> list[dict]:
    return t.raw_trackers(tracker_name=name)[0]["tags"]


def test_tags(tenant):
    t = tenant()
    data = t.data_tracker("tagged", bucket(), ["READ"])
    (system,) = t.trackers(tracker_type="system")

    def create_tags(tracker_id, *pairs):
        return t.client.batch_create_resource_tags(
            BatchCreateResourceTagsRequest(
                resource_id=tracker_id,
                resource_type="cts-tracker",
                body=BatchCreateResourceTagsRequestBody(tags=[Tags(key=k, value=v) for k, v in pairs]),
            )
        )

    def delete_tags(tracker_id, *tags):
        return t.client.batch_delete_resource_tags(
            BatchDeleteResourceTagsRequest(
                resource_id=tracker_id,
                resource_type="cts-tracker",
                body=BatchDeleteResourceTagsRequestBody(tags=list(tags)),
            )
        )

    resp = create_tags(data.id, ("env", "prod"), ("owner", "team-a"), ("empty", ""))
    assert resp.status_code == 204
    assert tags_of(t, "tagged") == [
        {"key": "empty", "value": ""},
        {"key": "env", "value": "prod"},
        {"key": "owner", "value": "team-a"},
    ]
    assert tags_of(t, "system") == []
    # The SDK's tracker model has no tags; the rest of the answer still parses.
    assert_parsed(t.client.list_trackers(ListTrackersRequest(tracker_name="tagged")))

    # A key that exists gets the new value.
    create_tags(data.id, ("env", "test"))
    assert {"key": "env", "value": "test"} in tags_of(t, "tagged")
    create_tags(system.id, ("env", "prod"))
    assert tags_of(t, "system") == [{"key": "env", "value": "prod"}]

    # Delete by key, and by key and value (a value that does not match stays).
    resp = delete_tags(data.id, Tags(key="owner"), Tags(key="env", value="prod"), Tags(key="absent"))
    assert resp.status_code == 204
    assert tags_of(t, "tagged") == [{"key": "empty", "value": ""}, {"key": "env", "value": "test"}]
    delete_tags(data.id, Tags(key="env", value="test"), Tags(key="empty"))
    assert tags_of(t, "tagged") == []
    assert tags_of(t, "system") == [{"key": "env", "value": "prod"}]

    # Refusals.
    e = sdk_error(lambda r: create_tags(str(uuid.uuid4()), ("a", "b")), None)
    assert (e.status_code, e.error_code) == (404, "CTS.0214")
    e = sdk_error(lambda r: create_tags(data.id, ("a=b", "c")), None)
    assert (e.status_code, e.error_code) == (400, "CTS.0003")
    e = sdk_error(lambda r: delete_tags(str(uuid.uuid4()), Tags(key="a")), None)
    assert (e.status_code, e.error_code) == (404, "CTS.0214")
    # Another project's tracker is not found from here.
    other = tenant()
    (foreign,) = other.trackers()
    e = sdk_error(lambda r: create_tags(foreign.id, ("a", "b")), None)
    assert (e.status_code, e.error_code) == (404, "CTS.0214")


# ---------------------------------------------------------------------------
# Quotas, operations, resources, users
# ---------------------------------------------------------------------------


def test_quotas_count_trackers_live(tenant):
    t = tenant(enable_cts=False)
    resp = t.client.list_quotas(ListQuotasRequest())
    assert_parsed(resp)
    assert [q.type for q in resp.resources] == ["tracker", "notification"]
    assert t.quotas() == {"tracker": (0, 101), "notification": (0, 100)}
    t.create(tracker_type="system")
    assert t.quotas()["tracker"] == (1, 101)
    t.data_tracker("q1", bucket(), ["READ"])
    t.data_tracker("q2", bucket(), ["WRITE"])
    assert t.quotas()["tracker"] == (3, 101)
    t.delete(tracker_name="q1")
    assert t.quotas()["tracker"] == (2, 101)
    t.delete(tracker_name="system", tracker_type="system")
    assert t.quotas() == {"tracker": (1, 101), "notification": (0, 100)}


def test_data_tracker_quota(start_ctsd):
    server = start_ctsd({"CTS_QUOTAS_DATA_TRACKERS": "2"})
    t = bootstrap_tenant(server)
    assert t.quotas()["tracker"] == (1, 3)  # the bootstrap project's management tracker
    t.data_tracker("d1", bucket(), ["READ"])
    t.data_tracker("d2", bucket(), ["READ"])
    assert t.quotas()["tracker"] == (3, 3)
    e = sdk_error(
        t.client.create_tracker,
        create_request(tracker_type="data", tracker_name="d3", data_bucket=data_bucket(bucket(), ["READ"])),
    )
    assert (e.status_code, e.error_code) == (400, "CTS.0200")
    t.delete(tracker_name="d1")
    t.data_tracker("d3", bucket(), ["READ"])
    assert t.quotas()["tracker"] == (3, 3)


def operations(t: Tenant, **params) -> dict[tuple[str, str], list[str]]:
    resp = t.client.list_operations(ListOperationsRequest(**params))
    assert_parsed(resp)
    return {(o.service_type, o.resource_type): o.operation_list for o in resp.operations}


def test_list_operations(tenant, make_trace):
    t = tenant()
    everything = operations(t)
    # What CTS records of itself (the catalog is per domain: other tests'
    # traces, e.g. createTag, may have taught it more).
    tracker_ops = everything[("CTS", "tracker")]
    assert {"createTracker", "deleteTracker", "updateTracker"} <= set(tracker_ops)
    assert tracker_ops == sorted(tracker_ops)
    assert ("IAM", "user") in everything
    only_cts = operations(t, service_type="CTS")
    assert set(only_cts) == {k for k in everything if k[0] == "CTS"}
    assert operations(t, service_type="CTS", resource_type="tracker") == {("CTS", "tracker"): tracker_ops}
    assert operations(t, service_type="NOSUCH") == {}

    # Operations are learned from recorded traces.
    name = f"compatOp{uuid.uuid4().hex[:8]}"
    assert t.report([make_trace(now_ms() - MINUTE, service_type="RDS", resource_type="instance",
                                trace_name=name)])["recorded"] == 1
    assert name in operations(t, service_type="RDS", resource_type="instance")[("RDS", "instance")]

    e = sdk_error(t.client.list_operations, ListOperationsRequest(resource_type="tracker"))
    assert (e.status_code, e.error_code) == (400, "CTS.0300")
    assert "service_type" in e.error_msg


def test_list_trace_resources(tenant, admin, make_trace):
    t = tenant()
    resp = t.client.list_trace_resources(ListTraceResourcesRequest(domain_id=admin.domain_id))
    assert_parsed(resp)
    resources = {r.service_type: r.resource for r in resp.resources}
    assert {"ECS", "EVS", "OBS", "VPC", "CTS", "IAM", "KMS"} <= set(resources)
    assert {"tracker", "notification"} <= set(resources["CTS"])
    assert all(isinstance(r, list) for r in resources.values())

    rtype = f"compat_{uuid.uuid4().hex[:8]}"
    t.report([make_trace(now_ms() - MINUTE, service_type="DNS", resource_type=rtype, trace_name="newZone")])
    resp = t.client.list_trace_resources(ListTraceResourcesRequest(domain_id=admin.domain_id))
    assert rtype in {r.service_type: r.resource for r in resp.resources}["DNS"]

    # Only the caller's own domain.
    for other in ("0" * 32, t.project_id):
        e = sdk_error(t.client.list_trace_resources, ListTraceResourcesRequest(domain_id=other))
        assert (e.status_code, e.error_code) == (403, "CTS.0002")


def test_list_user_resources(tenant, make_trace):
    t = tenant(enable_cts=False)
    # Nothing is recorded without a management tracker: nobody is known.
    body = t.report([make_trace(now_ms() - MINUTE, user_name="ghost")])
    assert body["recorded"] == 0
    resp = t.client.list_user_resources(ListUserResourcesRequest())
    assert_parsed(resp)
    assert resp.users == []

    t.create(tracker_type="system")  # recorded as done by the cts_admin
    reporter = f"carol-{uuid.uuid4().hex[:6]}"
    assert t.report([make_trace(now_ms() - MINUTE, user_name=reporter)])["recorded"] == 1
    resp = t.client.list_user_resources(ListUserResourcesRequest())
    assert_parsed(resp)
    names = [u.name for u in resp.users]
    assert names == sorted(names)
    assert set(names) == {t.user.name, reporter}
    assert "ghost" not in names


# ---------------------------------------------------------------------------
# Not served
# ---------------------------------------------------------------------------


def test_check_obs_buckets(tenant, admin):
    t = tenant()
    name = f"check-{uuid.uuid4().hex[:10]}"  # a valid name, never created
    resp = t.client.check_obs_buckets(
        CheckObsBucketsRequest(
            domain_id=admin.domain_id,
            body=CheckObsBucketsRequestBody(
                buckets=[CheckBucketRequest(bucket_name=name, bucket_location=admin.region)]
            ),
        )
    )
    assert_parsed(resp)
    (checked,) = resp.buckets
    assert checked.bucket_name == name
    # The bucket does not exist in the server's object storage.
    answer = checked.check_bucket_response
    assert answer.success is False
    assert answer.response_code == 404
    assert answer.error_code == "noBucket"


# ---------------------------------------------------------------------------
# Refusals, as the SDK raises them
# ---------------------------------------------------------------------------

SYSTEM = {"tracker_type": "system", "tracker_name": "system"}


def system_body(**extra) -> dict:
    return {**SYSTEM, **extra}


def data_body(**extra) -> dict:
    body = {"tracker_type": "data", "tracker_name": "bad-one", "data_bucket": data_bucket(TRACKED, ["READ"])}
    return {**body, **extra}


def transfer_to(name: str, **obs) -> dict:
    return system_body(obs_info=TrackerObsInfo(bucket_name=name, **obs))


def tracking(name: str, events: list[str]) -> dict:
    return data_body(data_bucket=data_bucket(name, events))


TRACKED = "tracked-bucket"
KMS_ON = {"is_support_trace_files_encryption": True}

# (case id, the project has its management tracker, request body, status, code)
CREATE_REFUSALS = [
    ("second management tracker", True, SYSTEM, 400, "CTS.0201"),
    ("bucket name uppercase", False, transfer_to("Bad_Bucket"), 400, "CTS.0231"),
    ("bucket name too short", False, transfer_to("ab"), 400, "CTS.0231"),
    ("tracked bucket is an IP", True, tracking("192.168.1.1", ["READ"]), 400, "CTS.0231"),
    ("file prefix with a slash", False, transfer_to("good-bucket", file_prefix_name="a/b"), 400, "CTS.0218"),
    ("encryption without kms_id", False, system_body(**KMS_ON), 400, "CTS.0221"),
    ("unknown kms_id", False, system_body(**KMS_ON, kms_id=str(uuid.uuid4())), 400, "CTS.0222"),
    ("management tracker not named system", False, system_body(tracker_name="mine"), 400, "CTS.0204"),
    ("bad data tracker name", True, data_body(tracker_name="-bad"), 400, "CTS.0203"),
    ("data tracker named system", True, data_body(tracker_name="system"), 400, "CTS.0207"),
    ("data tracker without bucket", True, data_body(data_bucket=None), 400, "CTS.0210"),
    ("no operation type", True, tracking(TRACKED, []), 400, "CTS.0219"),
    ("operation type DELETE", True, tracking(TRACKED, ["DELETE"]), 400, "CTS.0225"),
    ("encryption on a data tracker", True, data_body(**KMS_ON, kms_id="k"), 400, "CTS.0220"),
    ("bad tracker_type", True, {"tracker_type": "audit"}, 400, "CTS.0202"),
    ("data bucket on the management tracker", False, system_body(data_bucket=data_bucket(TRACKED, ["READ"])), 400, "CTS.0206"),
]


@pytest.mark.parametrize(
    "has_system,body,status,code",
    [c[1:] for c in CREATE_REFUSALS],
    ids=[c[0] for c in CREATE_REFUSALS],
)
def test_create_refused(tenant, has_system, body, status, code):
    t = tenant(enable_cts=has_system)
    before = t.raw_trackers()
    e = sdk_error(t.client.create_tracker, create_request(**body))
    assert (e.status_code, e.error_code) == (status, code), e.error_msg
    assert e.error_msg and e.request_id
    assert t.raw_trackers() == before


def test_rules_between_trackers(tenant):
    t = tenant()
    watched = bucket("tracked")
    t.data_tracker("first", watched, ["READ"])

    def refused(call, request_) -> tuple[int, str]:
        e = sdk_error(call, request_)
        return e.status_code, e.error_code

    create, update = t.client.create_tracker, t.client.update_tracker
    # The same name again.
    elsewhere = data_bucket(bucket(), ["READ"])
    again = create_request(tracker_type="data", tracker_name="first", data_bucket=elsewhere)
    assert refused(create, again) == (400, "CTS.0208")
    # READ on that bucket is tracked already; WRITE is free.
    both = data_bucket(watched, ["READ", "WRITE"])
    assert refused(create, create_request(tracker_type="data", tracker_name="second", data_bucket=both)) == (
        400,
        "CTS.0209",
    )
    t.data_tracker("second", watched, ["WRITE"])
    # The tracked bucket cannot change, nor be a transfer bucket.
    moved = update_request(tracker_type="data", tracker_name="first", data_bucket=elsewhere)
    assert refused(update, moved) == (400, "CTS.0212")
    loop = update_request(**SYSTEM, obs_info=TrackerObsInfo(bucket_name=watched))
    assert refused(update, loop) == (400, "CTS.0213")
    assert refused(update, update_request(**SYSTEM, status="paused")) == (400, "CTS.0205")
    assert [x.tracker_name for x in t.trackers()] == ["system", "first", "second"]


@pytest.mark.parametrize(
    "request_",
    [
        update_request(tracker_type="data", tracker_name="nosuch", status="disabled"),
        DeleteTrackerRequest(tracker_name="nosuch"),
        DeleteTrackerRequest(tracker_name="nosuch", tracker_type="data"),
        update_request(tracker_type="system", tracker_name="system", status="enabled"),
        DeleteTrackerRequest(tracker_name="system", tracker_type="system"),
    ],
    ids=["update data", "delete data", "delete data typed", "update system", "delete system"],
)
def test_unknown_tracker_is_404(tenant, request_):
    # The system cases run in a project without a management tracker.
    t = tenant(enable_cts=False)
    call = t.client.update_tracker if isinstance(request_, UpdateTrackerRequest) else t.client.delete_tracker
    e = sdk_error(call, request_)
    assert (e.status_code, e.error_code) == (404, "CTS.0214")


def test_viewer_may_list_but_not_change(ctsd, admin, tenant):
    t = tenant()
    t.data_tracker("watched", bucket(), ["READ"])
    (data,) = t.trackers(tracker_type="data")
    viewer = admin.new_user({t.project_id: ["cts_viewer"]}, key=True)
    v = cts_client(ctsd, viewer.access_key, viewer.secret_key, t.project_id)
    # Reads work ...
    listed = v.list_trackers(ListTrackersRequest()).trackers
    assert [x.tracker_name for x in listed] == ["system", "watched"]
    v.list_quotas(ListQuotasRequest())
    v.list_operations(ListOperationsRequest(service_type="CTS"))
    v.list_user_resources(ListUserResourcesRequest())
    # ... writes are refused with 403 CTS.0013.
    writes = [
        (v.create_tracker, create_request(**data_body(tracker_name="viewer-made"))),
        (v.update_tracker, update_request(**SYSTEM, status="disabled")),
        (v.delete_tracker, DeleteTrackerRequest(tracker_name="watched")),
        (v.batch_create_resource_tags, BatchCreateResourceTagsRequest(
            resource_id=data.id, resource_type="cts-tracker",
            body=BatchCreateResourceTagsRequestBody(tags=[Tags(key="k", value="v")]))),
        (v.batch_delete_resource_tags, BatchDeleteResourceTagsRequest(
            resource_id=data.id, resource_type="cts-tracker",
            body=BatchDeleteResourceTagsRequestBody(tags=[Tags(key="k")]))),
    ]
    for call, request_ in writes:
        e = sdk_error(call, request_)
        assert (e.status_code, e.error_code) == (403, "CTS.0013"), call.__name__
    assert [(x.tracker_name, x.status) for x in t.trackers()] == [
        ("system", "enabled"),
        ("watched", "enabled"),
    ]


def test_another_projects_trackers_are_out_of_reach(ctsd, tenant):
    mine, theirs = tenant(), tenant()
    # My key, their project: refused before anything is looked up.
    c = cts_client(ctsd, mine.user.access_key, mine.user.secret_key, theirs.project_id)
    e = sdk_error(c.list_trackers, ListTrackersRequest())
    assert (e.status_code, e.error_code) == (403, "CTS.0002")
    e = sdk_error(c.delete_tracker, DeleteTrackerRequest(tracker_name="system", tracker_type="system"))
    assert (e.status_code, e.error_code) == (403, "CTS.0002")
    assert [x.tracker_name for x in theirs.trackers()] == ["system"]


# ---------------------------------------------------------------------------
# What trackers record
# ---------------------------------------------------------------------------


def ecs_ids(t: Tenant) -> list[str]:
    return [x.trace_id for x in t.traces(trace_type="system", service_type="ECS")]


def test_disabled_management_tracker_records_nothing(tenant, make_trace):
    t = tenant()

    def report_one():
        trace = make_trace(now_ms() - 1000, trace_id=str(uuid.uuid4()))
        return trace["trace_id"], t.report([trace])

    first, body = report_one()
    assert body["recorded"] == 1 and "not_recorded" not in body
    assert ecs_ids(t) == [first]

    t.update(tracker_type="system", tracker_name="system", status="disabled")
    lost, body = report_one()
    assert body["recorded"] == 0
    assert len(body["trace_ids"]) == 1
    assert body["not_recorded"]["count"] == 1
    (reason,) = body["not_recorded"]["reasons"]
    assert "management" in reason and t.project_id in reason
    assert ecs_ids(t) == [first]
    assert t.traces(trace_type="system", trace_id=lost) == []

    t.update(tracker_type="system", tracker_name="system", status="enabled")
    third, body = report_one()
    assert body["recorded"] == 1 and "not_recorded" not in body
    assert ecs_ids(t) == [third, first]

    # Turning recording off and on is itself on record.
    changes = t.traces(trace_type="system", service_type="CTS", resource_type="tracker")
    assert [(x.trace_name, x.resource_name) for x in changes][:2] == [
        ("updateTracker", "system"),
        ("updateTracker", "system"),
    ]
    assert [x.user.name for x in changes[:2]] == [t.user.name, t.user.name]


def test_tracker_changes_are_cts_traces(tenant):
    t = tenant(enable_cts=False)
    created = t.create(tracker_type="system")
    data = t.data_tracker("audited", bucket(), ["READ"])
    t.update(tracker_type="data", tracker_name="audited", status="disabled")
    t.delete(tracker_name="audited")
    got = t.traces(trace_type="system", service_type="CTS")
    assert_parsed(t.client.list_traces(ListTracesRequest(trace_type="system", service_type="CTS")))
    mine = [(x.trace_name, x.resource_type, x.resource_id, x.resource_name) for x in got
            if x.trace_name in ("createTracker", "updateTracker", "deleteTracker")]
    # Newest first; changes within one millisecond may come in any order.
    assert sorted(mine) == sorted([
        ("deleteTracker", "tracker", data.id, "audited"),
        ("updateTracker", "tracker", data.id, "audited"),
        ("createTracker", "tracker", data.id, "audited"),
        ("createTracker", "tracker", created.id, "system"),
    ])
    times = [x.time for x in got]
    assert times == sorted(times, reverse=True)
    for x in got:
        assert x.service_type == "CTS"
        assert x.user.name == t.user.name
        assert x.trace_type == "ApiCall"
        assert x.trace_rating == "normal"
    codes = {x.trace_name: x.code for x in got}
    assert codes == {"createTracker": "201", "updateTracker": "200", "deleteTracker": "204"}
    # The same through the resource_type and trace_name filters.
    names = [x.trace_name for x in t.traces(trace_type="system", service_type="CTS",
                                            resource_type="tracker", trace_name="createTracker")]
    assert names == ["createTracker", "createTracker"]


def test_data_traces_follow_their_trackers(tenant, make_trace):
    t = tenant()
    tracked, other = bucket("tracked"), bucket("other")
    t.data_tracker("reads", tracked, ["READ"])
    t.data_tracker("writes", tracked, ["WRITE"])
    t.data_tracker("off", other, ["READ", "WRITE"])
    t.update(tracker_type="data", tracker_name="off", status="disabled")

    def data_trace(tracker, bucket_name, read_only, name):
        return make_trace(
            now_ms() - 1000,
            trace_id=str(uuid.uuid4()),
            trace_type="ObsAPI",
            tracker_name=tracker,
            service_type="OBS",
            resource_type="object",
            resource_id=f"{bucket_name}/{name}",
            resource_name=f"{bucket_name}/{name}",
            trace_name="GetObject" if read_only else "PutObject",
            read_only=read_only,
        )

    read = data_trace("reads", tracked, True, "a.txt")
    write = data_trace("writes", tracked, False, "b.txt")
    write_sdk = {**data_trace("writes", tracked, False, "c.txt"), "trace_type": "ObsSDK"}
    refused = [
        data_trace("reads", tracked, False, "x"),  # a write, the tracker records reads
        data_trace("writes", tracked, True, "x"),  # a read, the tracker records writes
        data_trace("reads", other, True, "x"),  # another bucket
        data_trace("off", other, True, "x"),  # disabled tracker
        data_trace("nosuch", tracked, True, "x"),  # no such tracker
    ]
    body = t.report([read, write, write_sdk, *refused])
    assert body["recorded"] == 3
    assert body["not_recorded"]["count"] == len(refused)
    assert len(body["not_recorded"]["reasons"]) == 2  # no tracker / not what the tracker records

    def data_ids(tracker=None):
        params = {"tracker_name": tracker} if tracker else {}
        resp = t.client.list_traces(ListTracesRequest(trace_type="data", limit=200, **params))
        assert_parsed(resp)
        return [x.trace_id for x in resp.traces], resp.traces

    ids, traces = data_ids("reads")
    assert ids == [read["trace_id"]]
    (got,) = traces
    assert (got.trace_type, got.read_only, got.resource_name) == ("ObsAPI", True, read["resource_name"])
    assert (got.service_type, got.trace_name) == ("OBS", "GetObject")
    ids, _ = data_ids("writes")
    assert set(ids) == {write["trace_id"], write_sdk["trace_id"]}
    assert data_ids("off")[0] == []
    assert set(data_ids()[0]) == {read["trace_id"], write["trace_id"], write_sdk["trace_id"]}
    # Data traces are not management traces.
    assert t.traces(trace_type="system", service_type="OBS") == []

    # Enabling the tracker records from then on.
    t.update(tracker_type="data", tracker_name="off", status="enabled")
    later = data_trace("off", other, True, "y")
    assert t.report([later])["recorded"] == 1
    assert data_ids("off")[0] == [later["trace_id"]]
