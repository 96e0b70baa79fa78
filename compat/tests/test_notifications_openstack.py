"""Key events through openstacksdk + otcextensions: ``conn.ctsv3``.

otcextensions 0.34.8 has, in ``otcextensions/sdk/ctsv3/v3/_proxy.py``,
``create_key_event``, ``update_key_event``, ``key_events(notification_type)``
and ``delete_key_event`` over the ``KeyEvent`` resource
(``otcextensions/sdk/ctsv3/v3/key_event.py``). Each is driven here against
the server, and a key event created through it delivers a signed message to
a webhook subscribed to its topic.
"""

from __future__ import annotations

import time

import openstack.exceptions as os_exc
import pytest
from otcextensions.sdk.ctsv3.v3 import key_event as v3_key_event

from conftest import build_trace, subscribe_webhook, unique
from test_trackers_openstack import connect


@pytest.fixture(scope="module")
def project(ctsd, admin):
    """``project() -> (project_id, user, conn)``: a new project and a
    connection of a cts_admin of it."""

    def make():
        p = admin.create_project()
        user = admin.new_user({p["id"]: ["cts_admin"]})
        return p["id"], user, connect(ctsd, user, p["id"])

    return make


def names(conn, kind="smn", **query) -> list[str]:
    return [k.notification_name for k in conn.ctsv3.key_events(kind, **query)]


def test_key_event_lifecycle_and_delivery(ctsd, project, webhook):
    pid, user, conn = project()
    token = ctsd.token(user.name, user.password, project_id=pid)
    topic = subscribe_webhook(ctsd, token, pid, webhook)
    name = unique("key").replace("-", "_")

    # As otcextensions' own functional test creates one.
    created = conn.ctsv3.create_key_event(
        notification_name=name,
        operation_type="customized",
        operations=[{"service_type": "ECS", "resource_type": "ecs", "trace_names": ["deleteServer", "stopServer"]}],
        topic_id=topic,
        filter={"condition": "OR", "is_support_filter": True, "rule": ["code = 404", "trace_rating = incident"]},
    )
    assert isinstance(created, v3_key_event.KeyEvent)
    nid = created.notification_id
    assert nid and created.create_time
    assert (created.notification_type, created.status, created.project_id) == ("smn", "enabled", pid)
    assert created.operations[0]["trace_names"] == ["deleteServer", "stopServer"]
    assert created.filter.condition == "OR" and created.filter.rule == ["code = 404", "trace_rating = incident"]

    (got,) = conn.ctsv3.key_events("smn", notification_name=name)
    assert (got.notification_id, got.topic_id, got.operation_type) == (nid, topic, "customized")
    assert names(conn, "fun") == []

    now = int(time.time() * 1000)
    token_report = ctsd.report(
        token,
        pid,
        [
            build_trace(now, trace_name="stopServer", code="404", resource_id="srv-stop"),
            build_trace(now, trace_name="stopServer", code="200"),
            build_trace(now, trace_name="createServer", code="404"),
        ],
    )
    assert token_report.status_code == 201, token_report.text
    (message,) = webhook.wait_for(1)
    assert message["notification_id"] == nid
    assert message["trace"]["resource_id"] == "srv-stop"
    assert webhook.bad == 0

    updated = conn.ctsv3.update_key_event(
        notification_id=nid,
        notification_name=name,
        operation_type="complete",
        topic_id=topic,
        status="disabled",
    )
    assert (updated.notification_id, updated.status, updated.operation_type) == (nid, "disabled", "complete")
    (after,) = conn.ctsv3.key_events("smn", notification_name=name)
    assert (after.operation_type, after.status, after.operations) == ("complete", "disabled", [])
    assert after.filter is None

    conn.ctsv3.delete_key_event(after)
    assert names(conn) == []
    with pytest.raises(os_exc.NotFoundException):
        conn.ctsv3.delete_key_event(after)


def test_otcextensions_functional_sequence(project):
    """otcextensions' own functional test (tests/functional/sdk/ctsv3/v3/
    test_key_event.py), step by step: a rule without a topic, renamed and
    disabled by update, found by name, deleted."""
    pid, _, conn = project()
    name = unique("event").replace("-", "_")
    event = conn.ctsv3.create_key_event(notification_name=name, operation_type="complete")
    assert len(event["notification_id"]) > 0
    assert event.status == "disabled" and event.topic_id is None
    assert len(list(conn.ctsv3.key_events(notification_type="smn"))) > 0

    (event,) = conn.ctsv3.key_events(notification_type="smn", notification_name=name)
    event = conn.ctsv3.update_key_event(
        notification_name=f"{name}_update",
        operation_type="complete",
        status="disabled",
        notification_id=event["notification_id"],
    )
    assert len(event["notification_id"]) > 0
    assert event.notification_name == f"{name}_update"

    (event,) = conn.ctsv3.key_events(notification_type="smn", notification_name=f"{name}_update")
    conn.ctsv3.delete_key_event(event)
    assert [e for e in conn.ctsv3.key_events(notification_type="smn") if e["notification_name"] == f"{name}_update"] == []
