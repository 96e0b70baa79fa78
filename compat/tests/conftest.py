"""Fixtures of the client compatibility suite.

Every test talks to a real ``ctsd`` process (the binary named by ``$CTSD``,
default ``target/debug/ctsd``) started on a free port with a fresh data
directory. Identities are created through the server's own Keystone v3 / IAM
API with plain ``requests`` and the bootstrap admin's token, never by touching
the data directory.

Fixtures:

* ``ctsd``       - the session's server (shared by all tests: start-up is paid once).
* ``start_ctsd`` - ``start_ctsd(env={...})`` starts another server (own data
  directory, e.g. ``CTS_AUTH_TOKEN_TTL=2s``); stopped at the end of the session.
* ``admin``      - an :class:`Admin` of the session server; ``admin_of(server)``
  for another one.
* ``make_trace`` - builds a valid trace body for ``POST /v3/{project_id}/traces``.

Later suites (trackers, quotas, notifications) add a test module and, if
needed, helpers to :class:`Admin`; the server and identity plumbing stays here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------
# A clean, private process environment. This runs when pytest loads the
# conftest, i.e. before any test module imports an SDK.
# ---------------------------------------------------------------------------

# scripts/test.sh runs the suite a second time with every server on
# PostgreSQL: `cts-testpg` starts a throwaway server and names its database
# here (read before the CTS_* variables go).
POSTGRES_URL = os.environ.get("CTS_TEST_PG_URL")

# ctsd reads CTS_* (configuration, CTS_BOOTSTRAP_*); openstacksdk reads OS_*
# (OS_CLOUD, OS_AUTH_URL, ...); the Huawei SDK reads HUAWEICLOUD_SDK_*. None of
# the developer's shell settings may leak into the servers or clients.
for _name in list(os.environ):
    if _name.startswith(("CTS_", "OS_", "HUAWEICLOUD_SDK_")):
        del os.environ[_name]

# The Huawei SDK writes ~/.huaweicloud/application_id on import and
# openstacksdk looks for ~/.config/openstack/clouds.yaml: give them a
# throw-away home.
_HOME = tempfile.mkdtemp(prefix="cts-compat-home-")
os.environ["HOME"] = _HOME
for _name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
    os.environ.pop(_name, None)

# Never send loopback traffic through a proxy configured in the shell.
_no_proxy = [p for p in os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")).split(",") if p]
for _host in ("127.0.0.1", "localhost"):
    if _host not in _no_proxy:
        _no_proxy.append(_host)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(_no_proxy)

# Settings every server of the suite gets unless a test overrides them.
# The login throttle counts failures per credential *and per source address*;
# every client of the suite connects from 127.0.0.1, so with the default of 5
# the negative tests would lock the positive ones out for 15 minutes.
DEFAULT_SERVER_ENV = {
    "CTS_AUTH_LOGIN_MAX_FAILURES": "1000",
}

STARTUP_TIMEOUT = 30.0
HTTP_TIMEOUT = 30.0


def pytest_unconfigure(config):
    shutil.rmtree(_HOME, ignore_errors=True)


def make_bucket(prefix: str = "bkt") -> str:
    """A valid OBS bucket name no other test uses, existing in the local
    object store (DATA_DIR/obs) of every server: a tracker with
    is_obs_created false is refused a bucket that does not exist."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    for server in Ctsd.started:
        (server.data_dir / "obs" / name).mkdir(parents=True, exist_ok=True)
    return name


def now_ms() -> int:
    return int(time.time() * 1000)


def unique(prefix: str) -> str:
    """A name no other test uses (servers are shared within a session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------


def postgres_env() -> dict[str, str]:
    """The settings of a server on a fresh database of the PostgreSQL server
    of POSTGRES_URL: each server of the suite keeps identities of its own,
    as with its own data directory."""
    name = f"compat_{uuid.uuid4().hex[:12]}"
    subprocess.run(
        ["psql", POSTGRES_URL, "-v", "ON_ERROR_STOP=1", "-qc", f"CREATE DATABASE {name}"],
        check=True,
        capture_output=True,
    )
    return {
        "CTS_STORE_BACKEND": "postgres",
        "CTS_STORE_POSTGRES_URL": POSTGRES_URL.rsplit("/", 1)[0] + "/" + name,
        "CTS_STORE_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
    }


def ctsd_binary() -> Path:
    path = Path(os.environ.get("CTSD") or REPO / "target" / "debug" / "ctsd").resolve()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"ctsd binary not found at {path}: build it with "
            "`cargo build -p cts-server --bins` or point $CTSD at it "
            "(scripts/compat.sh does both)",
            pytrace=False,
        )
    return path


class Ctsd:
    """One running ``ctsd serve`` with its own data directory.

    ``url`` is the base URL from the first stdout line, ``bootstrap`` the
    parsed ``bootstrap.json`` of the first start. stderr (the log) goes to
    ``log_path``.
    """

    # Every server started, for make_bucket.
    started: list["Ctsd"] = []

    def __init__(self, binary: Path, workdir: Path, env: dict[str, str] | None = None):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        Ctsd.started.append(self)
        self.log_path = workdir / "ctsd.log"
        backend = postgres_env() if POSTGRES_URL else {}
        self.env = {**DEFAULT_SERVER_ENV, **backend, **(env or {})}
        full_env = {**os.environ, **self.env}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=full_env,
            cwd=workdir,
        )
        try:
            line = self._first_line()
            m = re.fullmatch(r"ctsd listening on (https?://127\.0\.0\.1:\d+)", line.strip())
            if not m:
                raise RuntimeError(f"unexpected first stdout line of ctsd: {line!r}")
            self.url = m.group(1)
            # Keep reading stdout so the server can never block on a full pipe.
            threading.Thread(target=self._drain, daemon=True).start()
            self.bootstrap = self._read_bootstrap()
        except BaseException:
            self.stop()
            raise

    def _first_line(self) -> str:
        lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            raw = lines.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            raise RuntimeError(
                f"ctsd printed nothing within {STARTUP_TIMEOUT:.0f}s\n{self.log_tail()}"
            ) from None
        if not raw:
            code = self.proc.wait(timeout=5)
            raise RuntimeError(f"ctsd exited with status {code} before listening\n{self.log_tail()}")
        return raw.decode("utf-8", "replace")

    def _drain(self) -> None:
        for _ in iter(self.proc.stdout.readline, b""):
            pass

    def _read_bootstrap(self) -> dict[str, Any]:
        path = self.data_dir / "bootstrap.json"
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return json.loads(path.read_text())

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no ctsd log)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- last lines of {self.log_path} ---\n{tail}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()

    # -- Keystone-compatible tokens ----------------------------------------

    def issue_token(
        self,
        user: str,
        password: str,
        *,
        project_id: str | None = None,
        project_name: str | None = None,
        domain_name: str | None = None,
    ) -> requests.Response:
        """``POST /v3/auth/tokens`` (password method); the raw response."""
        domain = {"name": domain_name or self.bootstrap["domain_name"]}
        auth: dict[str, Any] = {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "password": password, "domain": domain}},
            }
        }
        if project_id:
            auth["scope"] = {"project": {"id": project_id}}
        elif project_name:
            auth["scope"] = {"project": {"name": project_name, "domain": domain}}
        return requests.post(f"{self.url}/v3/auth/tokens", json={"auth": auth}, timeout=HTTP_TIMEOUT)

    def token(self, user: str, password: str, **scope) -> str:
        """A project-scoped token (``X-Subject-Token``); fails the test otherwise."""
        r = self.issue_token(user, password, **scope)
        assert r.status_code == 201, f"POST /v3/auth/tokens for {user}: {r.status_code} {r.text}"
        return r.headers["X-Subject-Token"]

    # -- CTS with a token ----------------------------------------------------

    def report(self, token: str, project_id: str, traces: list[dict]) -> requests.Response:
        """``POST /v3/{project_id}/traces``; the raw response."""
        return requests.post(
            f"{self.url}/v3/{project_id}/traces",
            headers={"X-Auth-Token": token},
            json={"traces": traces},
            timeout=HTTP_TIMEOUT,
        )

    def list_traces(self, token: str, project_id: str, **params) -> requests.Response:
        """``GET /v3/{project_id}/traces``; the raw response."""
        return requests.get(
            f"{self.url}/v3/{project_id}/traces",
            headers={"X-Auth-Token": token},
            params=params,
            timeout=HTTP_TIMEOUT,
        )

    def __repr__(self) -> str:
        return f"<ctsd {getattr(self, 'url', '?')} data={self.data_dir} log={self.log_path}>"


# ---------------------------------------------------------------------------
# Identities
# ---------------------------------------------------------------------------


@dataclass
class User:
    id: str
    name: str
    password: str
    domain_name: str
    access_key: str | None = None
    secret_key: str | None = None


class Admin:
    """The bootstrap admin (roles ``admin`` + ``cts_admin`` on the bootstrap
    project) managing identities over the Keystone v3 / IAM API."""

    def __init__(self, server: Ctsd):
        b = server.bootstrap
        self.server = server
        self.domain_name: str = b["domain_name"]
        self.domain_id: str = b["domain_id"]
        self.project_id: str = b["project_id"]
        self.region: str = b["region"]
        r = server.issue_token(b["user_name"], b["password"], project_id=b["project_id"])
        assert r.status_code == 201, f"admin login: {r.status_code} {r.text}"
        self.token: str = r.headers["X-Subject-Token"]
        self.user = User(
            id=r.json()["token"]["user"]["id"],
            name=b["user_name"],
            password=b["password"],
            domain_name=b["domain_name"],
            access_key=b["access_key"],
            secret_key=b["secret_key"],
        )

    def call(self, method: str, path: str, expect: int, body: Any = None) -> Any:
        r = requests.request(
            method,
            self.server.url + path,
            headers={"X-Auth-Token": self.token},
            json=body,
            timeout=HTTP_TIMEOUT,
        )
        assert r.status_code == expect, f"{method} {path}: expected {expect}, got {r.status_code} {r.text}"
        return r.json() if r.content else None

    def create_project(
        self, name: str | None = None, region: str | None = None, enable_cts: bool = True
    ) -> dict:
        """A project; the name defaults to ``<bootstrap region>_<unique>``,
        so its region (Huawei naming) is the bootstrap region. With
        ``enable_cts`` the admin gets ``cts_admin`` there and creates the
        management tracker: without it the project records no traces."""
        project: dict[str, Any] = {"name": name or unique(f"{self.region}_compat")}
        if region:
            project["region"] = region
        created = self.call("POST", "/v3/projects", 201, {"project": project})["project"]
        if enable_cts:
            self.grant(created["id"], self.user.id, "cts_admin")
            token = self.server.token(self.user.name, self.user.password, project_id=created["id"])
            r = requests.post(
                f"{self.server.url}/v3/{created['id']}/tracker",
                headers={"X-Auth-Token": token},
                json={"tracker_type": "system", "tracker_name": "system"},
                timeout=HTTP_TIMEOUT,
            )
            assert r.status_code == 201, f"creating the management tracker: {r.status_code} {r.text}"
        return created

    def create_user(self, name: str | None = None, password: str | None = None) -> User:
        name = name or unique("user")
        password = password or f"Pw-{uuid.uuid4().hex}"
        u = self.call("POST", "/v3/users", 201, {"user": {"name": name, "password": password}})["user"]
        return User(id=u["id"], name=u["name"], password=password, domain_name=self.domain_name)

    def grant(self, project_id: str, actor_id: str, role: str, actor: str = "users") -> None:
        """Role by name (``cts_viewer``) or id, to a user or (``actor="groups"``) a group."""
        self.call("PUT", f"/v3/projects/{project_id}/{actor}/{actor_id}/roles/{role}", 204)

    def create_group(self, name: str | None = None) -> dict:
        return self.call("POST", "/v3/groups", 201, {"group": {"name": name or unique("group")}})["group"]

    def add_to_group(self, group_id: str, user_id: str) -> None:
        self.call("PUT", f"/v3/groups/{group_id}/users/{user_id}", 204)

    def create_access_key(self, user: User) -> User:
        """An IAM access key for ``user`` (kept on the object, returned)."""
        c = self.call(
            "POST",
            "/v3.0/OS-CREDENTIAL/credentials",
            201,
            {"credential": {"user_id": user.id, "description": "compat suite"}},
        )["credential"]
        user.access_key, user.secret_key = c["access"], c["secret"]
        return user

    def new_user(
        self,
        roles: dict[str, Iterable[str]] | None = None,
        *,
        key: bool = False,
        name: str | None = None,
    ) -> User:
        """A user holding ``roles`` (``{project_id: [role, ...]}``), with an
        access key if ``key``."""
        user = self.create_user(name)
        for project_id, names in (roles or {}).items():
            for role in names:
                self.grant(project_id, user.id, role)
        if key:
            self.create_access_key(user)
        return user


def build_trace(time_ms: int, **fields: Any) -> dict:
    """A valid management trace at ``time_ms``; ``fields`` override or add
    (``user_name="bob"`` sets ``user.name``)."""
    user_name = fields.pop("user_name", "alice")
    trace: dict[str, Any] = {
        "time": time_ms,
        "user": {"id": f"id-{user_name}", "name": user_name, "domain": {"id": "dom-1", "name": "acme"}},
        "service_type": "ECS",
        "resource_type": "ecs",
        "resource_id": "srv-1",
        "resource_name": "web-1",
        "trace_name": "createServer",
        "trace_type": "ApiCall",
        "code": "200",
        "source_ip": "10.0.0.1",
    }
    trace.update(fields)
    return trace


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

_running: list[Ctsd] = []


@pytest.fixture(scope="session")
def start_ctsd(tmp_path_factory):
    """``start_ctsd(env=None) -> Ctsd``: a new server with its own data directory."""
    binary = ctsd_binary()
    started: list[Ctsd] = []

    def start(env: dict[str, str] | None = None) -> Ctsd:
        server = Ctsd(binary, tmp_path_factory.mktemp("ctsd"), env)
        started.append(server)
        _running.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        _running.remove(server)


@pytest.fixture(scope="session")
def ctsd(start_ctsd) -> Ctsd:
    """The session's shared server."""
    return start_ctsd()


@pytest.fixture(scope="session")
def admin(ctsd) -> Admin:
    return Admin(ctsd)


@pytest.fixture(scope="session")
def admin_of():
    """``admin_of(server) -> Admin`` for a server from ``start_ctsd``."""
    return Admin


@pytest.fixture(scope="session")
def make_trace():
    return build_trace


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the log tail of every running server (and say
    which ones died)."""
    report = yield
    if report.failed and _running:
        for server in _running:
            state = "running" if server.alive() else f"EXITED with {server.proc.returncode}"
            report.sections.append((f"ctsd {server.url} ({state})", server.log_tail()))
    return report


# ---------------------------------------------------------------------------
# Key event notifications: an SMN topic with a webhook, and the webhook
# ---------------------------------------------------------------------------


class Webhook:
    """A loopback HTTP receiver of notification messages. Every POST is
    checked against the subscription's secret as docs/notifications.md
    tells receivers to (HMAC-SHA256 over ``timestamp.body``); ``messages``
    holds the parsed bodies of the correctly signed ones, ``bad`` counts
    the others."""

    def __init__(self):
        hook = self
        self.secret: str | None = None
        self.messages: list[dict] = []
        self.bad = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                stamp = self.headers.get("X-CTS-Timestamp", "")
                mac = hmac.new((hook.secret or "").encode(), stamp.encode() + b"." + body, hashlib.sha256)
                good = hmac.compare_digest("sha256=" + mac.hexdigest(), self.headers.get("X-CTS-Signature", ""))
                with hook._lock:
                    if good and self.headers.get("X-CTS-Message-Id"):
                        hook.messages.append(json.loads(body))
                    else:
                        hook.bad += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/cts"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict]:
        """The first ``count`` messages, once they are there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.messages)} of {count} messages arrived ({self.bad} badly signed)")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def subscribe_webhook(server: Ctsd, token: str, project_id: str, hook: Webhook) -> str:
    """A new topic of ``project_id`` with ``hook`` subscribed (its secret set
    on ``hook``); returns the topic URN."""
    base = f"{server.url}/v2/{project_id}/notifications/topics"
    headers = {"X-Auth-Token": token}
    r = requests.post(base, headers=headers, json={"name": unique("alerts")}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 201, r.text
    topic = r.json()["topic_urn"]
    r = requests.post(
        f"{base}/{topic}/subscriptions",
        headers=headers,
        json={"protocol": "http", "endpoint": hook.url},
        timeout=HTTP_TIMEOUT,
    )
    assert r.status_code == 201, r.text
    hook.secret = r.json()["secret"]
    return topic


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()
