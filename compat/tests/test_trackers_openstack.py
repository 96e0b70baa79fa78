"""Trackers through openstacksdk + otcextensions: ``conn.ctsv3`` (v3) and ``conn.cts`` (v1.0).

otcextensions 0.34.8 has, for v3 (``otcextensions/sdk/ctsv3/v3/_proxy.py``):
``create_tracker``, ``update_tracker``, ``trackers``, ``delete_tracker`` and
``quotas``; for v1.0 (``otcextensions/sdk/cts/v1/_proxy.py``):
``create_tracker``, ``update_tracker``, ``get_tracker``, ``delete_tracker``.
Both views show the same tracker (a project has one management tracker, the
v1.0 API sees only it), so a tracker created through one is read and changed
through the other here.

Client bugs worked around (compat/README.md lists them):

* ``conn.ctsv3.update_tracker(**attrs)`` calls ``Proxy._update`` without its
  ``value`` argument: ``TypeError``. Passing ``value=None`` makes the intended
  ``PUT /v3/{project_id}/tracker`` happen.
* ``conn.cts`` v1 ``Tracker._translate_response`` reads ``self.has_body``,
  which openstacksdk 4.x resources no longer have: ``get_tracker`` raises
  ``AttributeError``. The ``v1_has_body`` fixture gives the class the
  attribute back (``True``, what openstacksdk 1.x had).
* ``conn.ctsv3`` ``Tracker`` has no ``data_bucket`` attribute, so
  ``create_tracker`` drops it and cannot create a data tracker (the server
  rightly answers CTS.0210); data trackers are created through the adapter.
"""

from __future__ import annotations

import time
import uuid

import openstack
import openstack.exceptions as os_exc
import pytest
import requests
from otcextensions import sdk as otc_sdk
from otcextensions.sdk.cts.v1 import tracker as v1_tracker
from otcextensions.sdk.ctsv3.v3 import tracker as v3_tracker

from conftest import make_bucket

MINUTE = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


def connect(server, user, project_id):
    conn = openstack.connect(
        auth_url=server.url + "/v3",
        username=user.name,
        password=user.password,
        user_domain_name=user.domain_name,
        project_id=project_id,
        region_name=server.bootstrap["region"],
    )
    otc_sdk.register_otc_extensions(conn)
    return conn


def bucket(prefix: str = "bkt") -> str:
    return make_bucket(prefix)


@pytest.fixture(scope="module")
def project(ctsd, admin):
    """``project(enable_cts=True) -> (project_id, conn)``: a new project and a
    connection of a cts_admin of it."""

    def make(enable_cts: bool = True):
        p = admin.create_project(enable_cts=enable_cts)
        user = admin.new_user({p["id"]: ["cts_admin"]})
        return p["id"], connect(ctsd, user, p["id"])

    return make


@pytest.fixture
def v1_has_body(monkeypatch):
    """Works around otcextensions' v1 Tracker reading ``self.has_body``
    (gone from openstacksdk 4.x resources)."""
    monkeypatch.setattr(v1_tracker.Tracker, "has_body", True, raising=False)


def update_v3(conn, **attrs):
    """``conn.ctsv3.update_tracker`` with the ``value=None`` its proxy forgets."""
    return conn.ctsv3.update_tracker(value=None, **attrs)


def system_tracker(conn):
    (t,) = [t for t in conn.ctsv3.trackers() if t.tracker_type == "system"]
    return t


# ---------------------------------------------------------------------------
# v3: conn.ctsv3
# ---------------------------------------------------------------------------


def test_ctsv3_tracker_lifecycle(project, admin):
    pid, conn = project(enable_cts=False)
    assert list(conn.ctsv3.trackers()) == []
    quotas = {q.type: (q.used, q.quota) for q in conn.ctsv3.quotas()}
    assert quotas == {"tracker": (0, 101), "notification": (0, 100)}

    transfer = bucket("transfer")
    # As otcextensions' own functional test creates it.
    created = conn.ctsv3.create_tracker(
        tracker_type="system",
        tracker_name="system",
        obs_info={"is_obs_created": False, "bucket_name": transfer, "file_prefix_name": "test-prefix"},
        status="enabled",
        is_lts_enabled=True,
    )
    assert isinstance(created, v3_tracker.Tracker)
    assert created.id and created.create_time
    assert (created.tracker_type, created.tracker_name, created.status) == ("system", "system", "enabled")
    assert (created.project_id, created.domain_id) == (pid, admin.domain_id)
    assert created.obs_info.bucket_name == transfer
    assert created.obs_info.file_prefix_name == "test-prefix"
    assert created.obs_info.is_obs_created is False
    assert (created.obs_info.compress_type, created.obs_info.is_sort_by_service) == ("gzip", True)
    assert created.lts.is_lts_enabled is True
    assert (created.lts.log_group_name, created.lts.log_topic_name) == ("CTS", "system-trace")
    assert created.group_id and created.stream_id

    (listed,) = conn.ctsv3.trackers()
    assert (listed.id, listed.create_time, listed.status) == (created.id, created.create_time, "enabled")
    assert listed.obs_info.bucket_name == transfer
    assert (listed.group_id, listed.stream_id) == (created.group_id, created.stream_id)
    assert [t.id for t in conn.ctsv3.trackers(tracker_name="system")] == [created.id]
    assert list(conn.ctsv3.trackers(tracker_name="nosuch")) == []
    assert {q.type: q.used for q in conn.ctsv3.quotas()} == {"tracker": 1, "notification": 0}

    # The proxy's update_tracker as written fails in the client ...
    with pytest.raises(TypeError, match="value"):
        conn.ctsv3.update_tracker(tracker_type="system", tracker_name="system", status="disabled")
    # ... and with the argument it forgets, it works (as otcextensions' own
    # functional test calls it).
    assert update_v3(
        conn,
        tracker_type="system",
        tracker_name="system",
        obs_info={"is_obs_created": False, "bucket_name": transfer, "file_prefix_name": "new-prefix",
                  "compress_type": "json", "is_sort_by_service": False},
        status="disabled",
        is_lts_enabled=False,
    ) is None
    (after,) = conn.ctsv3.trackers(tracker_name="system")
    assert after.status == "disabled"
    assert after.obs_info.file_prefix_name == "new-prefix"
    assert (after.obs_info.compress_type, after.obs_info.is_sort_by_service) == ("json", False)
    assert after.lts.is_lts_enabled is False

    assert conn.ctsv3.delete_tracker(after) is None
    assert list(conn.ctsv3.trackers()) == []
    assert {q.type: q.used for q in conn.ctsv3.quotas()} == {"tracker": 0, "notification": 0}


def test_ctsv3_data_trackers(project):
    pid, conn = project()
    tracked = bucket("tracked")
    # create_tracker drops data_bucket (not an attribute of its Tracker) ...
    with pytest.raises(os_exc.BadRequestException, match="CTS.0210"):
        conn.ctsv3.create_tracker(
            tracker_type="data",
            tracker_name="reads",
            data_bucket={"data_bucket_name": tracked, "data_event": ["READ"]},
        )
    # ... the same request through the adapter creates it.
    r = conn.ctsv3.post(
        "/tracker",
        json={"tracker_type": "data", "tracker_name": "reads",
              "data_bucket": {"data_bucket_name": tracked, "data_event": ["READ"]}},
        raise_exc=False,
    )
    assert r.status_code == 201, r.text
    assert [(t.tracker_type, t.tracker_name) for t in conn.ctsv3.trackers()] == [
        ("system", "system"),
        ("data", "reads"),
    ]
    (data,) = conn.ctsv3.trackers(tracker_name="reads")
    assert data.id == r.json()["id"]
    assert data.lts.log_topic_name == "reads"
    # tracker_type is not a query parameter of the resource: openstacksdk
    # filters on the attribute client-side.
    assert [t.tracker_name for t in conn.ctsv3.trackers(tracker_type="data")] == ["reads"]

    update_v3(conn, tracker_type="data", tracker_name="reads", status="disabled")
    assert next(conn.ctsv3.trackers(tracker_name="reads")).status == "disabled"
    # delete_tracker sends only tracker_name: a data tracker by default.
    conn.ctsv3.delete_tracker(data)
    assert [t.tracker_name for t in conn.ctsv3.trackers()] == ["system"]


def test_ctsv3_disabling_stops_recording(ctsd, project, make_trace):
    pid, conn = project()
    endpoint = conn.ctsv3.get_endpoint()

    def report():
        trace = make_trace(now_ms() - MINUTE, trace_id=str(uuid.uuid4()), service_type="ECS")
        r = conn.session.post(endpoint + "/traces", json={"traces": [trace]})
        assert r.status_code == 201
        return trace["trace_id"], r.json()

    first, body = report()
    assert body["recorded"] == 1
    update_v3(conn, tracker_type="system", tracker_name="system", status="disabled")
    _, body = report()
    assert body["recorded"] == 0 and body["not_recorded"]["count"] == 1
    update_v3(conn, tracker_type="system", tracker_name="system", status="enabled")
    third, body = report()
    assert body["recorded"] == 1
    got = [t.trace_id for t in conn.ctsv3.traces(trace_type="system", service_type="ECS")]
    assert got == [third, first]
    changes = [t.trace_name for t in conn.ctsv3.traces(trace_type="system", service_type="CTS")]
    assert changes[:2] == ["updateTracker", "updateTracker"]


# ---------------------------------------------------------------------------
# One tracker, two views: v1.0 (conn.cts) and v3 (conn.ctsv3)
# ---------------------------------------------------------------------------


def test_one_tracker_through_both_apis(project, v1_has_body):
    pid, conn = project(enable_cts=False)
    with pytest.raises(os_exc.NotFoundException, match="CTS.0214"):
        conn.cts.get_tracker("system")

    # Create with v1.0 ...
    first, second = bucket("v1"), bucket("v3")
    created = conn.cts.create_tracker(bucket_name=first, file_prefix_name="v1-prefix")
    assert isinstance(created, v1_tracker.Tracker)
    assert (created.name, created.status) == ("system", "enabled")
    assert (created.bucket_name, created.file_prefix_name) == (first, "v1-prefix")
    assert created.id

    # ... read it with v3 ...
    (v3,) = conn.ctsv3.trackers()
    assert (v3.id, v3.tracker_name, v3.tracker_type, v3.status) == (created.id, "system", "system", "enabled")
    assert (v3.obs_info.bucket_name, v3.obs_info.file_prefix_name) == (first, "v1-prefix")

    # ... change it with v3 ...
    update_v3(
        conn,
        tracker_type="system",
        tracker_name="system",
        status="disabled",
        obs_info={"bucket_name": second, "file_prefix_name": "v3-prefix"},
    )

    # ... and read it with v1.0: the flat v1.0 shape of the same tracker.
    got = conn.cts.get_tracker("system")
    assert isinstance(got, v1_tracker.Tracker)
    assert (got.id, got.name, got.status) == (created.id, "system", "disabled")
    assert (got.bucket_name, got.file_prefix_name) == (second, "v3-prefix")
    assert got.detail is None

    # A second management tracker is refused through either API.
    with pytest.raises(os_exc.BadRequestException, match="CTS.0201"):
        conn.cts.create_tracker(bucket_name=first)
    with pytest.raises(os_exc.BadRequestException, match="CTS.0201"):
        conn.ctsv3.create_tracker(tracker_type="system", tracker_name="system")

    # Delete with v1.0: gone from v3 too.
    assert conn.cts.delete_tracker("system") is None
    assert list(conn.ctsv3.trackers()) == []
    with pytest.raises(os_exc.NotFoundException, match="CTS.0214"):
        conn.cts.get_tracker("system")
    # otcextensions ignores its own ignore_missing=True here: the server's
    # 404 CTS.0214 comes through.
    with pytest.raises(os_exc.NotFoundException, match="CTS.0214"):
        conn.cts.delete_tracker("system", ignore_missing=True)

    # Created again with v3, deleted with v3, seen by v1.0.
    again = conn.ctsv3.create_tracker(tracker_type="system", tracker_name="system")
    assert conn.cts.get_tracker("system").id == again.id
    conn.ctsv3.delete_tracker(again)
    with pytest.raises(os_exc.NotFoundException):
        conn.cts.get_tracker("system")


def test_v1_tracker_queries_only_the_management_tracker(project, v1_has_body):
    pid, conn = project()
    r = conn.ctsv3.post(
        "/tracker",
        json={"tracker_type": "data", "tracker_name": "hidden",
              "data_bucket": {"data_bucket_name": bucket(), "data_event": ["WRITE"]}},
        raise_exc=False,
    )
    assert r.status_code == 201, r.text
    got = conn.cts.get_tracker("system")
    assert got.name == "system"
    assert got.id == system_tracker(conn).id
    # The v1.0 query with the name of a data tracker finds nothing.
    r = conn.cts.get("/tracker", params={"tracker_name": "hidden"}, raise_exc=False)
    assert r.status_code == 404 and r.json()["error_code"] == "CTS.0214"
    # The v1.0 update path names the management tracker only.
    r = conn.cts.put("/tracker/hidden", json={"status": "disabled"}, raise_exc=False)
    assert r.status_code == 400 and r.json()["error_code"] == "CTS.0204"


def test_v1_update_tracker(project, v1_has_body):
    pid, conn = project()
    transfer = bucket("v1")
    try:
        updated = conn.cts.update_tracker("system", bucket_name=transfer, file_prefix_name="v1-new",
                                          status="disabled")
    finally:
        # Whatever the client made of the answer, the server did change it.
        (v3,) = conn.ctsv3.trackers()
        assert (v3.status, v3.obs_info.bucket_name, v3.obs_info.file_prefix_name) == (
            "disabled", transfer, "v1-new")
    assert isinstance(updated, v1_tracker.Tracker)
    assert (updated.name, updated.status) == ("system", "disabled")
    assert (updated.bucket_name, updated.file_prefix_name) == (transfer, "v1-new")


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------


def test_viewer_may_not_change_trackers(ctsd, admin, project, v1_has_body):
    pid, _ = project()
    viewer = admin.new_user({pid: ["cts_viewer"]})
    conn = connect(ctsd, viewer, pid)
    # Reads work through both APIs.
    assert [t.tracker_name for t in conn.ctsv3.trackers()] == ["system"]
    assert conn.cts.get_tracker("system").name == "system"
    assert {q.type for q in conn.ctsv3.quotas()} == {"tracker", "notification"}
    # Writes are refused with 403 CTS.0013.
    attempts = [
        lambda: conn.ctsv3.create_tracker(tracker_type="system", tracker_name="system"),
        lambda: update_v3(conn, tracker_type="system", tracker_name="system", status="disabled"),
        lambda: conn.ctsv3.delete_tracker(system_tracker(conn)),
        lambda: conn.cts.create_tracker(bucket_name=bucket()),
        lambda: conn.cts.delete_tracker("system"),
    ]
    for attempt in attempts:
        with pytest.raises(os_exc.HttpException) as info:
            attempt()
        assert info.value.status_code == 403
        assert "CTS.0013" in str(info.value)
    assert system_tracker(conn).status == "enabled"


def test_invalid_v1_bodies(project):
    pid, conn = project(enable_cts=False)
    with pytest.raises(os_exc.BadRequestException, match="CTS.0231"):
        conn.cts.create_tracker(bucket_name="Not_A_Bucket")
    with pytest.raises(os_exc.BadRequestException, match="CTS.0218"):
        conn.cts.create_tracker(bucket_name=bucket(), file_prefix_name="a/b")
    with pytest.raises(os_exc.BadRequestException, match="bucket_name"):
        conn.cts.create_tracker(file_prefix_name="no-bucket")
    assert list(conn.ctsv3.trackers()) == []
