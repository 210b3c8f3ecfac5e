"""Every route × every kind of credential: 401 / 403 / allowed, as declared."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

from snapledger.api.auth import ROUTE_ACCESS, Access
from support.process import Server, cli
from support.runtime import SECRETS, api_client, auth_as, make_config, wait_task

# Path variables: "prod" is the deployment the prod-admin administers; "other" is not.
VALUES = {"name": "prod", "deployment": "prod", "job": "db", "index_or_id": "0", "cid": "snap-x"}

CREDENTIALS = {
    "none": {},
    "wrong secret": {"Authorization": "Basic " + base64.b64encode(b"admin:not-the-secret").decode()},
    "read": auth_as("reader"),
    "other deployment's admin": auth_as("prod-admin"),  # used on routes of deployment "other"
    "admin": auth_as("admin"),
}


def expected(access: Access, method: str, who: str, on_own_deployment: bool) -> str:
    if access is Access.PUBLIC:
        return "allowed"
    if who in ("none", "wrong secret"):
        return "401"
    if who == "admin":
        return "allowed"
    if who == "read":
        if access is Access.READ or (access in (Access.DEPLOYMENT, Access.TASK) and method == "GET"):
            return "allowed"
        return "403"
    # a deployment's admin
    if access in (Access.DEPLOYMENT, Access.TASK) and on_own_deployment:
        return "allowed"
    return "403"


def concrete(path: str, deployment: str, task_id: str) -> str:
    values = {**VALUES, "name": deployment, "deployment": deployment, "task_id": task_id}
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


async def test_every_route_declares_its_access(tmp_path: Path, sqlite_url: str) -> None:
    async with api_client(make_config(tmp_path, sqlite_url)) as client:
        routes = {(r.method, r.resource.canonical) for r in client.app.router.routes() if r.method != "HEAD"}
    assert routes - set(ROUTE_ACCESS) == set(), "routes without a declared access"
    assert set(ROUTE_ACCESS) - routes == set(), "declared routes that do not exist"


async def test_route_credential_matrix(tmp_path: Path, sqlite_url: str) -> None:
    # Every route with wrong credentials from one address: a failure budget it cannot
    # exhaust, so each answer is the route's own 401 (the 429 is test_auth_failures.py's).
    config = make_config(tmp_path, sqlite_url, auth_failure_burst=1_000_000)
    async with api_client(config, user=None) as client:
        admin = auth_as("admin")
        for dep in ("prod", "other"):
            resp = await client.put(f"/deployments/{dep}", headers=admin,
                                    json={"instances": [{"job": "db", "index": 0, "disks": []}]})
            assert resp.status == 200
        tasks = {}
        for dep in ("prod", "other"):
            await client.put("/config/snapshots", headers=admin, json={"enable_snapshots": True})
            resp = await client.post(f"/deployments/{dep}/snapshots", headers=admin)
            tasks[dep] = (await resp.json())["task_id"]
        failures = []
        for (method, path), access in sorted(ROUTE_ACCESS.items(), key=lambda kv: kv[0][1]):
            if method == "DELETE" and path == "/deployments/{name}":
                continue  # checked last: it would remove the deployments the others use
            for who, headers in CREDENTIALS.items():
                # The deployment admin is tried on the deployment it does NOT administer.
                dep = "other" if who == "other deployment's admin" else "prod"
                url = concrete(path, dep, tasks[dep])
                body = {} if method in ("PUT", "POST") else None
                resp = await client.request(method, url, headers=headers, json=body)
                got = {401: "401", 403: "403"}.get(resp.status, "allowed")
                want = expected(access, method, who, on_own_deployment=False)
                if got != want:
                    failures.append(f"{method} {url} as {who}: got {resp.status}, declared {want}")
                if resp.status in (401, 403):
                    error = await resp.json()
                    assert error["error"] and error["code"] in ("unauthorized", "forbidden")
        assert failures == []

        # A deployment's admin administers its own deployment, and follows its tasks.
        prod_admin = auth_as("prod-admin")
        resp = await client.post("/deployments/prod/snapshots", headers=prod_admin)
        assert resp.status == 202
        task_id = (await resp.json())["task_id"]
        assert (await client.get(f"/tasks/{task_id}", headers=prod_admin)).status == 200
        assert (await client.get(f"/tasks/{tasks['other']}", headers=prod_admin)).status == 403
        assert (await client.get("/tasks", headers=prod_admin)).status == 403  # all tasks need read
        assert (await client.delete("/deployments/other", headers=prod_admin)).status == 403
        assert (await client.delete("/deployments/prod", headers=prod_admin)).status == 200


async def test_the_actor_of_every_event_is_the_authenticated_name(tmp_path: Path, sqlite_url: str) -> None:
    config = make_config(tmp_path, sqlite_url)
    (config.data_dir / "disks" / "disk-a").mkdir(parents=True)
    async with api_client(config, user="prod-admin") as client:
        admin = auth_as("admin")
        await client.put("/config/snapshots", headers=admin, json={"enable_snapshots": True})
        resp = await client.put("/deployments/prod", json={"instances": [{"job": "db", "index": 0,
                                                                          "disks": ["disk-a"]}]})
        assert resp.status == 200
        resp = await client.post("/deployments/prod/snapshots")
        task = await wait_task(client, (await resp.json())["task_id"])
        assert task["user"] == "prod-admin"
        events = await (await client.get(f"/tasks/{task['id']}/events")).json()
        assert events and {e["actor"] for e in events} == {"prod-admin"}


async def test_bearer_tokens_and_bad_headers(tmp_path: Path, sqlite_url: str) -> None:
    async with api_client(make_config(tmp_path, sqlite_url), user=None) as client:
        token = f"snapledger_reader_{SECRETS['reader']}"
        assert (await client.get("/deployments", headers={"Authorization": f"Bearer {token}"})).status == 200
        assert (await client.get("/deployments", headers={"Authorization": "Bearer snapledger_reader_x"})).status == 401
        for header in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Digest abc", "Bearer x"):
            resp = await client.get("/deployments", headers={"Authorization": header})
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Basic")
        # Unknown user and wrong secret look alike.
        unknown = "Basic " + base64.b64encode(b"mallory:admin-secret").decode()
        assert (await client.get("/deployments", headers={"Authorization": unknown})).status == 401


def test_serve_creates_an_admin_credential_the_cli_uses(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = Server(data_dir).start()
    try:
        credentials = data_dir / "credentials.json"
        assert credentials.stat().st_mode & 0o777 == 0o600
        assert "users.json" in {p.name for p in data_dir.iterdir()}
        assert "argon2" in (data_dir / "users.json").read_text()  # the server keeps only the hash
        assert "credentials.json" in server.log.read_text()  # says where it is
        # Without credentials the CLI is refused with a clear message...
        result = cli(server.url, "deployments", env={"SNAPLEDGER_CREDENTIALS": str(tmp_path / "none.json")})
        assert result.returncode == 1 and "credentials required" in result.stderr
        # ...and with the file it works.
        assert cli(server.url, "deployments").returncode == 0
        server.stop()
        server = Server(data_dir, port=server.port).start()  # the same credential after a restart
        assert cli(server.url, "deployments").returncode == 0
    finally:
        server.stop()
