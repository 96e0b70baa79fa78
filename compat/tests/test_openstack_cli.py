"""The ``openstack`` CLI (python-openstackclient) against ctsd, configured the
way README.md says: ``OS_AUTH_URL=<server>/v3`` and password auth.

It drives the Keystone v3 identity calls ctsd serves (tokens, projects,
users, groups, roles, role assignments) as an administrator would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import unique

OPENSTACK = Path(sys.executable).with_name("openstack")


def cli(server, user: str, password: str, project_id: str, *args: str, check: bool = True):
    """Runs ``openstack ARGS -f json`` as ``user`` scoped to ``project_id``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("OS_")
    } | {
        "OS_AUTH_URL": f"{server.url}/v3",
        "OS_IDENTITY_API_VERSION": "3",
        "OS_USERNAME": user,
        "OS_PASSWORD": password,
        "OS_USER_DOMAIN_NAME": server.bootstrap["domain_name"],
        "OS_PROJECT_ID": project_id,
        "OS_REGION_NAME": server.bootstrap["region"],
    }
    r = subprocess.run(
        [str(OPENSTACK), *args], env=env, capture_output=True, text=True, timeout=60
    )
    if check:
        assert r.returncode == 0, f"openstack {' '.join(args)}: {r.stderr}"
        return json.loads(r.stdout) if r.stdout.strip() else None
    return r


@pytest.fixture(scope="module")
def as_admin(ctsd):
    b = ctsd.bootstrap

    def run(*args: str, check: bool = True):
        return cli(ctsd, b["user_name"], b["password"], b["project_id"], *args, check=check)

    return run


def test_token_issue(ctsd, as_admin):
    token = as_admin("token", "issue", "-f", "json")
    assert token["project_id"] == ctsd.bootstrap["project_id"]
    assert token["id"].startswith("cts1.")
    # The token works on the CTS API.
    r = ctsd.list_traces(token["id"], ctsd.bootstrap["project_id"])
    assert r.status_code == 200, r.text


def test_identities_through_the_cli(ctsd, as_admin):
    pid = ctsd.bootstrap["project_id"]
    name = unique("cli-user")
    user = as_admin("user", "create", "--password", "Cli-pass-123", name, "-f", "json")
    assert user["name"] == name
    assert name in [u["Name"] for u in as_admin("user", "list", "-f", "json")]
    group = as_admin("group", "create", unique("cli-group"), "-f", "json")
    as_admin("group", "add", "user", group["id"], user["id"])
    assert as_admin("group", "contains", "user", group["id"], user["id"], check=False).returncode == 0
    roles = {r["Name"] for r in as_admin("role", "list", "-f", "json")}
    assert roles == {"admin", "cts_admin", "cts_viewer", "cts_reporter"}
    as_admin("role", "add", "--user", user["id"], "--project", pid, "cts_viewer")
    rows = as_admin("role", "assignment", "list", "--user", user["id"], "--names", "-f", "json")
    assert [(r["Role"], r["User"].split("@")[0], r["Project"].split("@")[0]) for r in rows] == [
        ("cts_viewer", name, "eu-de")
    ]
    # The new user logs in with the CLI and reads traces with its token.
    token = cli(ctsd, name, "Cli-pass-123", pid, "token", "issue", "-f", "json")
    assert ctsd.list_traces(token["id"], pid).status_code == 200
    # But it cannot manage identities: the CLI shows the server's refusal.
    r = cli(ctsd, name, "Cli-pass-123", pid, "user", "list", check=False)
    assert r.returncode != 0
    assert "CTS.0013" in r.stderr, r.stderr
    as_admin("role", "remove", "--user", user["id"], "--project", pid, "cts_viewer")
    as_admin("user", "delete", user["id"])
    assert name not in [u["Name"] for u in as_admin("user", "list", "-f", "json")]


def test_projects_through_the_cli(as_admin):
    name = unique("eu-de_cli")
    project = as_admin("project", "create", name, "--description", "made by the CLI", "-f", "json")
    shown = as_admin("project", "show", project["id"], "-f", "json")
    assert shown["name"] == name and shown["description"] == "made by the CLI"
    as_admin("project", "delete", project["id"])
    r = as_admin("project", "show", project["id"], check=False)
    assert r.returncode != 0


def test_wrong_password_is_refused(ctsd):
    b = ctsd.bootstrap
    r = cli(ctsd, b["user_name"], "Wrong-pass-1", b["project_id"], "token", "issue", check=False)
    assert r.returncode != 0
    assert "401" in r.stderr or "authenticate" in r.stderr.lower(), r.stderr
