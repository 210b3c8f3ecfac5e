"""Every route × every kind of credential: 401 / 403 / allowed, as declared."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path


from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from snapledger.adapters.bootstrap import bootstrap
from snapledger.api.app import create_app
from snapledger.api.auth import Access
from snapledger.api.routing import ROUTES
from support.process import Server, cli
from support.runtime import SECRETS, api_client, auth_as, make_config, make_disk, wait_task
from support.runtime import test_users as hashed_users

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
        if access in (Access.READ, Access.SCOPED) or (access in (Access.DEPLOYMENT, Access.TASK) and method == "GET"):
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
        declared = set(client.app[ROUTES].access())
    assert routes - declared == set(), "routes without a declared access"
    assert declared - routes == set(), "declared routes that do not exist"


async def test_a_route_added_without_a_declaration_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    # A route put on the router directly, past the route tables: no access rule, so nobody may call it.
    async def undeclared(request: web.Request) -> web.Response:
        return web.json_response({"reached": True})

    runtime = bootstrap(make_config(tmp_path, sqlite_url), set())
    app = create_app(runtime, start_background=False)
    app.router.add_get("/undeclared", undeclared)
    async with TestClient(TestServer(app), headers=auth_as("admin")) as client:
        resp = await client.get("/undeclared")
        assert resp.status == 403 and (await resp.json())["code"] == "undeclared_route"


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
        for (method, path), access in sorted(client.app[ROUTES].access().items(), key=lambda kv: kv[0][1]):
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


async def test_a_deployment_admin_reads_its_own_tasks_audit_and_history(tmp_path: Path, sqlite_url: str) -> None:
    # The README says a deployment's admin follows its deployment's tasks; listing them,
    # its audit and its snapshots' histories needed snapledger.read (issue 18).
    config = make_config(tmp_path, sqlite_url)
    async with api_client(config) as client:  # as admin
        await client.put("/config/snapshots", json={"enable_snapshots": True})
        cids = {}
        for dep in ("prod", "other"):
            make_disk(config, f"disk-{dep}")
            await client.put(f"/deployments/{dep}", json={"instances": [{"job": "db", "index": 0,
                                                                          "disks": [f"disk-{dep}"]}]})
            accepted = await (await client.post(f"/deployments/{dep}/snapshots")).json()
            assert (await wait_task(client, accepted["task_id"]))["state"] == "done"
            cids[dep] = (await (await client.get(f"/deployments/{dep}/snapshots")).json())[0]["snapshot_cid"]
        mine = auth_as("prod-admin")

        async def status(path: str) -> int:
            return (await client.get(path, headers=mine)).status

        resp = await client.get("/tasks?deployment=prod", headers=mine)
        assert resp.status == 200 and {t["deployment"] for t in await resp.json()} == {"prod"}
        resp = await client.get("/events?deployment=prod", headers=mine)
        events = await resp.json()
        assert resp.status == 200 and events and {e["deployment"] for e in events} == {"prod"}
        assert await status(f"/snapshots/{cids['prod']}/history") == 200
        # Nothing of another deployment, nor everything at once.
        for path in ("/tasks", "/tasks?deployment=other", "/tasks?deployment=prod&in_doubt=on", "/events",
                     "/events?deployment=other", f"/snapshots/{cids['other']}/history",
                     "/snapshots/snap-unknown/history"):
            assert await status(path) == 403, path
        error = await (await client.get("/tasks", headers=mine)).json()
        assert "deployment=NAME" in error["error"] and error["code"] == "forbidden"


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


def test_a_deployment_admin_uses_the_cli_on_its_own_deployment(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for dep in ("prod", "other"):
        (data_dir / "disks" / f"disk-{dep}").mkdir(parents=True)
    users = [{"name": n, "secret_hash": u["secret_hash"], "scopes": u["scopes"]}
             for n, u in ((u["name"], u) for u in hashed_users()) if n in ("admin", "prod-admin")]
    (data_dir / "users.json").write_text(json.dumps(users))
    (data_dir / "credentials.json").write_text(json.dumps({"user": "admin", "secret": SECRETS["admin"]}))
    server = Server(data_dir).start()
    try:
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        for dep in ("prod", "other"):
            server.api("PUT", f"/deployments/{dep}", {"instances": [{"job": "db", "index": 0,
                                                                     "disks": [f"disk-{dep}"]}]})
            server.wait_task(server.api("POST", f"/deployments/{dep}/snapshots")["task_id"])
        other_cid = server.api("GET", "/deployments/other/snapshots")[0]["snapshot_cid"]
        me = {"SNAPLEDGER_USER": "prod-admin", "SNAPLEDGER_SECRET": SECRETS["prod-admin"]}

        taken = cli(server.url, "take-snapshot", "-d", "prod", "db/0", env=me)  # starts and follows it
        assert taken.returncode == 0 and " done at " in taken.stdout, taken.stderr
        listed = cli(server.url, "--json", "tasks", "-d", "prod", env=me)
        assert listed.returncode == 0 and {t["deployment"] for t in json.loads(listed.stdout)} == {"prod"}
        assert cli(server.url, "task", "-d", "prod", env=me).returncode == 0
        audit = cli(server.url, "--json", "audit", "-d", "prod", env=me)
        assert audit.returncode == 0 and {json.loads(line)["deployment"] for line in audit.stdout.splitlines()} \
            == {"prod"}
        own_cid = server.api("GET", "/deployments/prod/snapshots")[0]["snapshot_cid"]
        assert cli(server.url, "history", own_cid, env=me).returncode == 0
        # Not another deployment's, nor all at once; the refusal says what to do.
        everything = cli(server.url, "tasks", env=me)
        assert everything.returncode == 1 and "-d DEPLOYMENT" in everything.stderr
        assert cli(server.url, "history", other_cid, env=me).returncode == 1
        assert cli(server.url, "audit", "-d", "other", env=me).returncode == 1
    finally:
        server.stop()
