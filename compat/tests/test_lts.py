"""Trace analysis (LTS, issue 16) through the official SDK and otcextensions.

A server of its own streams to a ``syslog`` sink: a TCP receiver in this
module reading RFC 6587 octet-counted RFC 5424 messages. The switch is turned
on and off through ``huaweicloudsdkcts`` (``update_tracker``) and through
otcextensions (``conn.ctsv3.update_tracker``); both still read the tracker's
``lts`` (``is_lts_enabled``, ``log_group_name``, ``log_topic_name``) with the
server's additions beside them (``lts.status``/``lts.detail``, which neither
client models: the raw JSON is checked for them, the models for the rest),
and a reported trace really arrives at the receiver with the tracker's log
group and topic.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid

import pytest

from conftest import build_trace
from test_trackers_huaweicloud import Tenant, assert_parsed, cts_client
from test_trackers_openstack import connect, system_tracker, update_v3

# The end of the structured data (an unescaped "]") and the trace JSON.
MSG_RE = re.compile(r"(?<!\\)\] (\{.*)\Z", re.S)


class SyslogReceiver:
    """Accepts TCP connections and keeps every octet-counted message."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.messages: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        buf = b""
        with conn:
            while chunk := conn.recv(65536):
                buf += chunk
                while b" " in buf:
                    length, rest = buf.split(b" ", 1)
                    if len(rest) < int(length):
                        break
                    with self.lock:
                        self.messages.append(rest[: int(length)].decode())
                    buf = rest[int(length):]

    def wait_for_trace(self, trace_id: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for m in self.messages:
                    if f' trace_id="{trace_id}"' in m:
                        return m
            time.sleep(0.1)
        raise AssertionError(f"trace {trace_id} did not arrive at the syslog receiver")


@pytest.fixture(scope="module")
def receiver():
    r = SyslogReceiver()
    yield r
    r.sock.close()


@pytest.fixture(scope="module")
def lts_server(start_ctsd, receiver):
    return start_ctsd(
        {
            "CTS_LTS_KIND": "syslog",
            "CTS_LTS_ENDPOINT": f"tcp://127.0.0.1:{receiver.port}",
            "CTS_LTS_INTERVAL": "200ms",
        }
    )


@pytest.fixture(scope="module")
def lts_admin(lts_server, admin_of):
    return admin_of(lts_server)


def wait(what: str, done, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def report_and_receive(server, user, project_id: str, receiver) -> str:
    token = server.token(user.name, user.password, project_id=project_id)
    trace_id = str(uuid.uuid4())
    trace = build_trace(int(time.time() * 1000) - 10, trace_id=trace_id)
    r = server.report(token, project_id, [trace])
    assert r.status_code == 201, r.text
    return receiver.wait_for_trace(trace_id)


def test_sdk_reads_lts_and_traces_flow(lts_server, lts_admin, receiver):
    project = lts_admin.create_project(enable_cts=True)
    user = lts_admin.new_user({project["id"]: ["cts_admin"]}, key=True)
    client = cts_client(lts_server, user.access_key, user.secret_key, project["id"])
    t = Tenant(lts_server, project["id"], user, client)

    t.update(tracker_type="system", tracker_name="system", is_lts_enabled=True)
    message = report_and_receive(lts_server, user, project["id"], receiver)
    assert ' log_group="CTS" log_topic="system-trace"' in message
    assert f' project_id="{project["id"]}"' in message
    assert MSG_RE.search(message), message

    (listed,) = t.trackers()
    assert listed.lts.is_lts_enabled is True
    assert (listed.lts.log_group_name, listed.lts.log_topic_name) == ("CTS", "system-trace")
    wait("lts.status enabled", lambda: t.raw_trackers()[0]["lts"].get("status") == "enabled")
    raw = t.raw_trackers()[0]  # assert_parsed: the SDK's model holds the rest
    assert f' log_stream_id="{raw["stream_id"]}"' in message

    t.update(tracker_type="system", tracker_name="system", is_lts_enabled=False)
    (off,) = t.trackers()
    assert off.lts.is_lts_enabled is False
    assert (off.lts.log_group_name, off.lts.log_topic_name) == ("CTS", "system-trace")
    assert "status" not in t.raw_trackers()[0]["lts"]
    assert_parsed(off, t.raw_trackers()[0])


def test_otcextensions_reads_lts(lts_server, lts_admin, receiver):
    project = lts_admin.create_project(enable_cts=True)
    user = lts_admin.new_user({project["id"]: ["cts_admin"]})
    conn = connect(lts_server, user, project["id"])

    update_v3(conn, tracker_type="system", tracker_name="system", is_lts_enabled=True)
    tracker = system_tracker(conn)
    assert tracker.lts.is_lts_enabled is True
    assert (tracker.lts.log_group_name, tracker.lts.log_topic_name) == ("CTS", "system-trace")
    assert tracker.group_id and tracker.stream_id
    message = report_and_receive(lts_server, user, project["id"], receiver)
    assert f' log_stream_id="{tracker.stream_id}"' in message

    update_v3(conn, tracker_type="system", tracker_name="system", is_lts_enabled=False)
    tracker = system_tracker(conn)
    assert tracker.lts.is_lts_enabled is False
    assert (tracker.lts.log_group_name, tracker.lts.log_topic_name) == ("CTS", "system-trace")
