"""Key event notifications through the official Huawei Cloud SDK.

``huaweicloudsdkcts.v3.CtsClient`` with every notification operation the SDK
has: ``create_notification``, ``update_notification``,
``list_notifications`` and ``delete_notification``. Every answer is checked
against the SDK's models (``assert_parsed``: each field the model knows holds
what the server sent, with the declared JSON type) and for its values. Then
what the rule does: a trace it matches (and only such a trace) reaches a
webhook subscribed to the rule's topic, correctly signed.

Topics have no call in ``huaweicloudsdkcts`` (they are SMN's); they are made
with plain ``requests`` (``conftest.subscribe_webhook``).
"""

from __future__ import annotations

import time

import pytest
from huaweicloudsdkcts.v3 import (
    CreateNotificationRequest,
    CreateNotificationRequestBody,
    DeleteNotificationRequest,
    Filter,
    ListNotificationsRequest,
    NotificationUsers,
    Operations,
    UpdateNotificationRequest,
    UpdateNotificationRequestBody,
)

from conftest import build_trace, subscribe_webhook, unique
from test_trackers_huaweicloud import Tenant, assert_parsed, cts_client, sdk_error


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(scope="module")
def tenant(ctsd, admin):
    """A new project (with its management tracker) and a cts_admin with a key."""

    def make() -> Tenant:
        project = admin.create_project()
        user = admin.new_user({project["id"]: ["cts_admin"]}, key=True)
        client = cts_client(ctsd, user.access_key, user.secret_key, project["id"])
        return Tenant(ctsd, project["id"], user, client)

    return make


def create(t: Tenant, **body):
    return t.client.create_notification(
        CreateNotificationRequest(body=CreateNotificationRequestBody(**body))
    )


def update(t: Tenant, **body):
    return t.client.update_notification(
        UpdateNotificationRequest(body=UpdateNotificationRequestBody(**body))
    )


def listed(t: Tenant, kind: str = "smn", **params) -> list[dict]:
    resp = t.client.list_notifications(ListNotificationsRequest(notification_type=kind, **params))
    return assert_parsed(resp)["notifications"]


def test_notification_lifecycle_and_delivery(tenant, admin, webhook):
    t = tenant()
    topic = subscribe_webhook(t.server, t.token, t.project_id, webhook)
    # notify_user_list names IAM groups and their members.
    alice = admin.create_user(unique("alice"))
    group = admin.create_group()
    admin.add_to_group(group["id"], alice.id)

    name = unique("deletes").replace("-", "_")
    created = create(
        t,
        notification_name=name,
        operation_type="customized",
        operations=[Operations(service_type="ECS", resource_type="ecs", trace_names=["deleteServer"])],
        notify_user_list=[NotificationUsers(user_group=group["name"], user_list=[alice.name])],
        topic_id=topic,
        filter=Filter(condition="AND", is_support_filter=True, rule=["code != 200", "resource_name != keep"]),
        agency_name="cts_admin_trust",
    )
    raw = assert_parsed(created)
    nid = raw["notification_id"]
    assert nid and raw["create_time"] > 0
    assert raw["notification_name"] == name
    assert (raw["notification_type"], raw["operation_type"], raw["status"]) == ("smn", "customized", "enabled")
    assert (raw["project_id"], raw["topic_id"]) == (t.project_id, topic)
    assert raw["operations"] == [{"service_type": "ECS", "resource_type": "ecs", "trace_names": ["deleteServer"]}]
    assert raw["notify_user_list"] == [{"user_group": group["name"], "user_list": [alice.name]}]
    assert raw["filter"] == {"condition": "AND", "is_support_filter": True, "rule": ["code != 200", "resource_name != keep"]}

    # Query: by type, by name; a topic URN makes an smn notification.
    assert [n["notification_id"] for n in listed(t)] == [nid]
    assert [n["notification_id"] for n in listed(t, notification_name=name)] == [nid]
    assert listed(t, notification_name="nothing_like_it") == []
    assert listed(t, "fun") == []
    assert t.quotas()["notification"] == (1, 100)

    # Only the trace matching every part of the rule fires.
    now = now_ms()
    fires = build_trace(now, user_name=alice.name, trace_name="deleteServer", code="404", resource_id="srv-9")
    t.report(
        [
            fires,
            build_trace(now, user_name=alice.name, trace_name="deleteServer", code="200"),
            build_trace(now, user_name=alice.name, trace_name="deleteServer", code="500", resource_name="keep"),
            build_trace(now, user_name="mallory", trace_name="deleteServer", code="404"),
            build_trace(now, user_name=alice.name, trace_name="createServer", code="404"),
        ]
    )
    (message,) = webhook.wait_for(1)
    assert (message["notification_id"], message["notification_name"]) == (nid, name)
    assert message["topic_urn"] == topic
    assert message["trace"]["resource_id"] == "srv-9"
    assert message["message_id"] == f"{nid}/{message['trace']['trace_id']}"
    assert webhook.bad == 0

    # Modify replaces the whole rule; the SDK's model reads the answer.
    changed = update(
        t,
        notification_id=nid,
        notification_name=name,
        operation_type="complete",
        topic_id=topic,
        status="disabled",
        filter=Filter(condition="OR", is_support_filter=True, rule=["trace_rating = incident", "code = 503"]),
    )
    raw = assert_parsed(changed)
    assert (raw["notification_id"], raw["operation_type"], raw["status"]) == (nid, "complete", "disabled")
    assert raw["operations"] == [] and raw["notify_user_list"] == []
    assert raw["filter"]["condition"] == "OR"
    (again,) = listed(t, notification_name=name)
    assert again == raw

    # Several ids at once; an unknown one deletes nothing.
    other = assert_parsed(create(t, notification_name=unique("other").replace("-", "_"), operation_type="complete"))
    assert other["status"] == "disabled" and "topic_id" not in other
    err = sdk_error(t.client.delete_notification, DeleteNotificationRequest(notification_id=f"{nid},missing"))
    assert (err.status_code, err.error_code) == (404, "CTS.9006")
    assert len(listed(t)) == 2
    t.client.delete_notification(DeleteNotificationRequest(notification_id=f"{nid},{other['notification_id']}"))
    assert listed(t) == []
    assert t.quotas()["notification"] == (0, 100)


def test_notification_errors(tenant):
    t = tenant()
    err = sdk_error(
        t.client.create_notification,
        CreateNotificationRequest(body=CreateNotificationRequestBody(notification_name="x", operation_type="some")),
    )
    assert (err.status_code, err.error_code) == (400, "CTS.0003")
    assert "operation_type" in err.error_msg
    err = sdk_error(
        t.client.create_notification,
        CreateNotificationRequest(
            body=CreateNotificationRequestBody(
                notification_name="bad_filter",
                operation_type="complete",
                filter=Filter(condition="AND", is_support_filter=True, rule=["user = alice"]),
            )
        ),
    )
    assert (err.status_code, err.error_code) == (400, "CTS.0003")
    assert "filter.rule[0]" in err.error_msg
    err = sdk_error(
        t.client.update_notification,
        UpdateNotificationRequest(
            body=UpdateNotificationRequestBody(
                notification_id="missing", notification_name="n", operation_type="complete", status="disabled"
            )
        ),
    )
    assert (err.status_code, err.error_code) == (404, "CTS.9006")
    err = sdk_error(t.client.list_notifications, ListNotificationsRequest(notification_type="sms"))
    assert (err.status_code, err.error_code) == (400, "CTS.0300")
