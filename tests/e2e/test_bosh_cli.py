"""The real `bosh` CLI, unchanged, against a real `snapledger serve` over HTTPS
(issue 17): every command an operator runs for snapshots, on SQLite and on
PostgreSQL, and the failures they must be able to read.

One server per backend for the whole module, started as the issue's recipe
(`snapledger serve --data-dir D --port P`, no flag for the bosh CLI: the API
port answers it, decision 34; HTTPS with its own CA, three users with BOSH
scopes); the tests
share it, each on deployments of its own. Skips without the binary
(`$BOSH_CLI`, else ../shared/tools/bosh-cli/bosh beside the repository)
unless SNAPLEDGER_REQUIRE_BOSH_CLI=1 (CI), where it fails.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import pytest

from support.process import SNAPLEDGER, Server, free_port

ROOT = Path(__file__).resolve().parents[2]
BOSH_CLI = os.environ.get("BOSH_CLI") or str(ROOT.parent / "shared" / "tools" / "bosh-cli" / "bosh")
REQUIRE = os.environ.get("SNAPLEDGER_REQUIRE_BOSH_CLI") == "1"


def bosh_cli() -> str:
    if not os.access(BOSH_CLI, os.X_OK):
        if REQUIRE:
            pytest.fail(f"the bosh CLI is required (SNAPLEDGER_REQUIRE_BOSH_CLI=1) but {BOSH_CLI} is missing")
        pytest.skip(f"no bosh CLI at {BOSH_CLI} (set BOSH_CLI)")
    return BOSH_CLI


USERS = {"admin": ["bosh.admin"], "reader": ["bosh.read"], "storage-admin": ["bosh.teams.storage.admin"]}

SLOW_CPI = """#!{python}
# An external CPI that takes a while per snapshot: tasks stay running long enough to cancel.
import json, sys, time, uuid
request = json.loads(sys.stdin.read())
method = request["method"]
if method == "info":
    result = {{"api_version": 2, "stemcell_formats": ["dummy"]}}
elif method == "snapshot_disk":
    time.sleep(1.5)
    result = "slow-" + uuid.uuid4().hex[:12]
else:
    result = None
print(json.dumps({{"result": result, "error": None, "log": ""}}))
"""


@dataclass
class Director:
    server: Server
    port: int
    secrets: dict[str, str]
    tmp: Path

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    def bosh(self, *args: str, user: str = "admin", tty: bool = False,
             merge: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "BOSH_ENVIRONMENT": f"https://127.0.0.1:{self.port}",
               "BOSH_CA_CERT": str(self.data_dir / "ca.pem"), "BOSH_CLIENT": user,
               "BOSH_CLIENT_SECRET": self.secrets[user], "HOME": str(self.tmp), "BOSH_NON_INTERACTIVE": "true"}
        # What the operator sees: the CLI writes its errors to stderr, merged here as on a terminal.
        return subprocess.run([bosh_cli(), *(["--tty"] if tty else []), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merge else subprocess.PIPE, text=True, env=env, timeout=60)

    def bosh_json(self, *args: str, user: str = "admin") -> list[dict[str, Any]]:
        result = self.bosh("--json", *args, user=user, merge=False)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)["Tables"][0]["Rows"]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """The native API, as admin."""
        request = urllib.request.Request(
            self.server.url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", "Authorization": "Basic " + base64.b64encode(
                f"admin:{self.secrets['admin']}".encode()).decode()})
        with urllib.request.urlopen(request, timeout=10, context=self.server.ssl_context) as response:
            return json.loads(response.read())

    def deploy(self, name: str, disks: list[str], tags: dict[str, str] | None = None, cpi: str | None = None,
               create: bool = True) -> dict[str, Any]:
        for cid in disks:
            if create:
                (self.data_dir / "disks" / cid).mkdir(parents=True, exist_ok=True)
        instances = [{"job": "db", "index": i, "disks": [cid]} for i, cid in enumerate(disks)]
        return self.api("PUT", f"/deployments/{name}", {"tags": tags or {}, "instances": instances,
                                                         **({"cpi": cpi} if cpi else {})})


def _config(tmp: Path, database: str | None, secrets: dict[str, str]) -> Path:
    from snapledger.api.auth import hash_secret

    cpi = tmp / "slow-cpi"
    cpi.write_text(SLOW_CPI.format(python=sys.executable))
    cpi.chmod(0o755)
    users = [{"name": name, "secret_hash": hash_secret(secrets[name]), "scopes": scopes}
             for name, scopes in USERS.items()]
    # enable_snapshots is not in the file: a file-set key is the file's to change
    # (decision 24), and a test turns snapshots off and on at runtime.
    config = {"auth": {"users": users}, "default_cpi": "local",
              "cpis": {"local": {"type": "local"},
                       "slow": {"type": "external", "executable": str(cpi), "max_in_flight": 1}}}
    path = tmp / "config.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def director(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Director]:
    bosh_cli()
    tmp = tmp_path_factory.mktemp(f"bosh-{request.param}")
    database = None
    if request.param == "postgres":
        database = f"{request.getfixturevalue('pg_database')}?schema=bosh_{uuid.uuid4().hex[:10]}"
    secrets = {name: uuid.uuid4().hex for name in USERS}
    server = Server(tmp / ".snapledger", database=database, tls=True,
                    extra_args=["--config", str(_config(tmp, database, secrets))])
    server.start()
    try:
        director = Director(server, server.port, secrets, tmp)
        director.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        yield director
    finally:
        server.stop()


# The commands ---------------------------------------------------------------------------

def test_env_and_deployments(director: Director) -> None:
    director.deploy("envdep", ["disk-env-0"], tags={"team": "storage"})
    env = director.bosh("env", tty=True)
    assert env.returncode == 0, env.stdout
    assert "snapledger" in env.stdout and "snapshots: enabled" in env.stdout
    rows = director.bosh_json("deployments")
    row = next(r for r in rows if r["name"] == "envdep")
    assert row["team_s"] == "storage"


def test_take_list_and_delete_snapshots(director: Director) -> None:
    dep = director.deploy("tour", ["disk-tour-0", "disk-tour-1"])
    taken = director.bosh("-d", "tour", "take-snapshot", tty=True)
    assert taken.returncode == 0, taken.stdout
    number = int(re.search(r"^Task (\d+)$", taken.stdout, re.M).group(1))
    # Each disk as a stage line, as the Director never shows for snapshots.
    assert re.search(rf"Task {number} \| \d\d:\d\d:\d\d \| Snapshot: db/0 disk-tour-0 \(\d\d:\d\d:\d\d\)", taken.stdout)
    assert re.search(rf"Task {number} \| \d\d:\d\d:\d\d \| Snapshot: db/1 disk-tour-1 \(\d\d:\d\d:\d\d\)", taken.stdout)
    assert f"Task {number} done" in taken.stdout and "Succeeded" in taken.stdout

    rows = director.bosh_json("-d", "tour", "snapshots")
    assert sorted(r["instance"] for r in rows) == ["db/0", "db/1"]
    assert all(r["clean"] == "false" and re.fullmatch(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d UTC \d{4}", r["created_at"])
               for r in rows)
    table = director.bosh("-d", "tour", "snapshots", tty=True)
    assert re.search(r"Instance\s+CID\s+Created At\s+Clean", table.stdout) and "2 snapshots" in table.stdout

    by_index = director.bosh("-d", "tour", "take-snapshot", "db/0")
    assert by_index.returncode == 0, by_index.stdout
    instance_id = next(i["id"] for i in dep["instances"] if i["index"] == 1)
    by_id = director.bosh("-d", "tour", "take-snapshot", f"db/{instance_id}")
    assert by_id.returncode == 0, by_id.stdout
    rows = director.bosh_json("-d", "tour", "snapshots")
    assert sorted(r["instance"] for r in rows) == ["db/0", "db/0", "db/1", "db/1"]

    cid = rows[0]["cid"]
    deleted = director.bosh("-d", "tour", "delete-snapshot", cid, "-n")
    assert deleted.returncode == 0, deleted.stdout
    assert cid not in [r["cid"] for r in director.bosh_json("-d", "tour", "snapshots")]
    all_gone = director.bosh("-d", "tour", "delete-snapshots", "-n")
    assert all_gone.returncode == 0, all_gone.stdout
    assert director.bosh_json("-d", "tour", "snapshots") == []
    # The native API sees the same tasks under the same numbers.
    native = director.api("GET", f"/tasks/{number}")
    assert native["number"] == number and native["state"] == "done" and native["kind"] == "snapshot_deployment"


def test_tasks_and_task_output(director: Director) -> None:
    director.deploy("taskdep", ["disk-tasks-0"])
    taken = director.bosh("-d", "taskdep", "take-snapshot")
    assert taken.returncode == 0, taken.stdout
    rows = director.bosh_json("tasks", "--recent", "-d", "taskdep")
    assert rows and all(r["deployment"] == "taskdep" for r in rows)
    number = int(rows[0]["id"])
    assert rows[0]["state"] == "done" and rows[0]["description"] == "snapshot deployment"

    task = director.bosh("task", str(number), tty=True)
    assert task.returncode == 0, task.stdout
    assert re.search(rf"Task {number} \| .* \| Snapshot: db/0 disk-tasks-0 \(", task.stdout)
    events = director.bosh("task", str(number), "--event")
    assert events.returncode == 0
    lines = [json.loads(line) for line in events.stdout.splitlines() if line.startswith("{")]
    assert [(e["stage"], e["task"], e["state"]) for e in lines] == [
        ("Snapshot", "db/0 disk-tasks-0", "started"), ("Snapshot", "db/0 disk-tasks-0", "finished")]
    result = director.bosh("task", str(number), "--result")
    assert result.returncode == 0 and "created" in result.stdout
    cpi = director.bosh("task", str(number), "--cpi")
    assert cpi.returncode == 0 and '"outcome": "Taken"' in cpi.stdout and "request_id" in cpi.stdout
    debug = director.bosh("task", str(number), "--debug")
    assert debug.returncode == 0 and "Task.Queued" in debug.stdout and "Snapshot.Taken" in debug.stdout
    missing = director.bosh("task", "987654321")
    assert missing.returncode == 1 and '"code": 10000' in missing.stdout


def test_task_output_by_byte_ranges(director: Director) -> None:
    """What the CLI relies on: 206 from an offset, 416 past the end, 200 for the result."""
    director.deploy("ranges", ["disk-ranges-0"])
    assert director.bosh("-d", "ranges", "take-snapshot").returncode == 0
    number = int(director.bosh_json("tasks", "--recent", "-d", "ranges")[0]["id"])
    auth = "Basic " + base64.b64encode(f"admin:{director.secrets['admin']}".encode()).decode()
    context = ssl.create_default_context(cafile=str(director.data_dir / "ca.pem"))

    def get(path: str, **headers: str) -> tuple[int, bytes]:
        # Not the bosh CLI's User-Agent: the header asks for its dialect (decision 34).
        request = urllib.request.Request(f"https://127.0.0.1:{director.port}{path}",
                                         headers={"Authorization": auth, "X-Snapledger-Dialect": "director",
                                                  **headers})
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    status, whole = get(f"/tasks/{number}/output?type=event", Range="bytes=0-")
    assert status == 206 and whole.endswith(b"\n") and all(json.loads(line) for line in whole.splitlines())
    status, tail = get(f"/tasks/{number}/output?type=event", Range=f"bytes={len(whole) - 10}-")
    assert status == 206 and tail == whole[-10:]
    assert get(f"/tasks/{number}/output?type=event", Range=f"bytes={len(whole)}-")[0] == 416
    assert get(f"/tasks/{number}/output?type=result")[0] == 200
    status, body = get(f"/tasks/{number}/output?type=bogus")
    assert status == 400 and json.loads(body)["description"].startswith("'type' must be")
    # Bad input gets the Director's error shape, never a 500.
    for path, expected in (("/tasks/not-a-task", 404), ("/events?before_id=abc", 400), ("/tasks?limit=-1", 400),
                           ("/events?before_time=yesterday", 400), ("/deployments/%00/snapshots", 404)):
        status, body = get(path)
        assert status == expected and "description" in json.loads(body), (path, status, body)
    assert get(f"/tasks/{number}/output?type=event", Range="bytes=zz-")[0] == 416


def test_events(director: Director) -> None:
    dep = director.deploy("eventdep", ["disk-events-0"])
    assert director.bosh("-d", "eventdep", "take-snapshot").returncode == 0
    number = director.bosh_json("tasks", "--recent", "-d", "eventdep")[0]["id"]
    rows = director.bosh_json("events", "-d", "eventdep")
    assert rows and all(r["deployment"] == "eventdep" for r in rows)
    actions = {(r["object_type"], r["action"]) for r in rows}
    assert {("snapshot", "requested"), ("snapshot", "cpi_call_started"), ("snapshot", "taken"),
            ("task", "queued"), ("task", "finished")} <= actions
    # The CPI call's outcome points at the call it answers (`id <- parent_id`).
    taken = next(r for r in rows if r["action"] == "taken")
    assert "<-" in taken["id"]
    by_task = director.bosh_json("events", "--task", str(number))
    assert by_task and all(r["task_id"] == str(number) for r in by_task)
    instance_id = dep["instances"][0]["id"]
    by_instance = director.bosh_json("events", "--instance", f"db/{instance_id}")
    assert by_instance and all(r["instance"] == f"db/{instance_id}" for r in by_instance)
    newest = int(rows[0]["id"].split()[0])
    older = director.bosh_json("events", "-d", "eventdep", "--before-id", str(newest))
    assert older and all(int(r["id"].split()[0]) < newest for r in older)


# What goes wrong, as the operator reads it ------------------------------------------------------

def test_a_cpi_failure_on_one_of_three_disks(director: Director) -> None:
    director.deploy("three", ["disk-three-0", "disk-three-1"])
    director.deploy("three", ["disk-three-0", "disk-three-1", "disk-three-gone"], create=False)
    taken = director.bosh("-d", "three", "take-snapshot", tty=True)
    assert taken.returncode == 1
    number = re.search(r"^Task (\d+)$", taken.stdout, re.M).group(1)
    assert f"Expected task '{number}' to succeed but state is 'error'" in taken.stdout
    assert re.search(r"Snapshot: db/2 disk-three-gone .*\n\s+L Error: Bosh::Clouds::DiskNotFound", taken.stdout)
    assert sorted(r["instance"] for r in director.bosh_json("-d", "three", "snapshots")) == ["db/0", "db/1"]
    again = director.bosh("task", number, tty=True)
    assert again.returncode == 1 and "disk-three-gone" in again.stdout and "1 failed" in again.stdout
    assert director.bosh_json("tasks", "--recent", "-d", "three")[0]["state"] == "error"


def test_snapshots_disabled_fail_with_how_to_enable(director: Director) -> None:
    director.deploy("off", ["disk-off-0"])
    director.api("PUT", "/config/snapshots", {"enable_snapshots": False})
    try:
        env = director.bosh("env", tty=True)
        assert "snapshots: disabled" in env.stdout
        refused = director.bosh("-d", "off", "take-snapshot")
        assert refused.returncode == 1
        assert "snapshots are disabled" in refused.stdout and "enable-snapshots" in refused.stdout
    finally:
        director.api("PUT", "/config/snapshots", {"enable_snapshots": True})
    assert director.bosh_json("-d", "off", "snapshots") == []


def test_unknown_deployment_and_unknown_cid(director: Director) -> None:
    for args in (["snapshots"], ["take-snapshot"], ["delete-snapshots", "-n"]):
        result = director.bosh("-d", "no-such-deployment", *args)
        assert result.returncode == 1
        assert '"code": 70000' in result.stdout and "Deployment 'no-such-deployment' doesn't exist" in result.stdout
    director.deploy("cids", ["disk-cids-0"])
    missing_instance = director.bosh("-d", "cids", "take-snapshot", "db/7")
    assert missing_instance.returncode == 1 and '"code": 70001' in missing_instance.stdout
    # As against the Director: the DELETE is refused (400, "snapshot X not found"), the
    # CLI then lists the snapshots, finds the CID absent and reports success.
    unknown = director.bosh("-d", "cids", "delete-snapshot", "snap-unknown", "-n")
    assert unknown.returncode == 0, unknown.stdout


def test_scopes_read_only_and_team_admin(director: Director) -> None:
    director.deploy("team", ["disk-team-0"], tags={"team": "storage"})
    director.deploy("other", ["disk-other-0"])
    refused = director.bosh("-d", "team", "take-snapshot", user="reader")
    assert refused.returncode == 1
    assert "'401'" in refused.stdout and '"code": 600000' in refused.stdout and "bosh.admin" in refused.stdout
    assert director.bosh_json("-d", "team", "snapshots", user="reader") == []  # reading is allowed
    assert director.bosh_json("tasks", "--recent", "-d", "team", user="reader") == []  # nothing was started
    # bosh.teams.storage.admin: admin of the deployments tagged team: storage, and only those.
    assert director.bosh("-d", "team", "take-snapshot", user="storage-admin").returncode == 0
    other = director.bosh("-d", "other", "take-snapshot", user="storage-admin")
    assert other.returncode == 1 and '"code": 600000' in other.stdout
    saved, director.secrets["reader"] = director.secrets["reader"], "wrong"
    try:
        denied = director.bosh("deployments", user="reader")
        assert denied.returncode == 1 and "'401'" in denied.stdout and "Not authorized" in denied.stdout
    finally:
        director.secrets["reader"] = saved


def test_cancel_a_running_task(director: Director) -> None:
    director.deploy("slow", ["disk-slow-0", "disk-slow-1", "disk-slow-2"], cpi="slow")
    started = subprocess.Popen([bosh_cli(), "-d", "slow", "take-snapshot"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "BOSH_ENVIRONMENT": f"https://127.0.0.1:{director.port}",
                                    "BOSH_CA_CERT": str(director.data_dir / "ca.pem"), "BOSH_CLIENT": "admin",
                                    "BOSH_CLIENT_SECRET": director.secrets["admin"], "HOME": str(director.tmp)})
    deadline = time.monotonic() + 20
    rows: list[dict[str, Any]] = []
    while not rows and time.monotonic() < deadline:
        rows = [r for r in director.bosh_json("tasks", "-d", "slow") if r["state"] in ("queued", "processing")]
        time.sleep(0.1)
    assert rows, "the slow task never showed as running"
    number = rows[0]["id"]
    cancel = director.bosh("cancel-task", number)
    assert cancel.returncode == 0, cancel.stdout
    out, _ = started.communicate(timeout=30)
    assert started.returncode == 1 and f"Expected task '{number}' to succeed but state is 'cancelled'" in out
    task = director.api("GET", f"/tasks/{number}")
    assert task["state"] == "cancelled" and "task cancelled" in task["result"]
    # The call that was running ended with its outcome; the others never started.
    assert len(director.bosh_json("-d", "slow", "snapshots")) < 3
    again = director.bosh("cancel-task", number)
    assert again.returncode == 1 and "already cancelled" in again.stdout


def test_the_native_cli_trusts_the_data_directory_ca(director: Director) -> None:
    """HTTPS by default: the native CLI beside the data directory needs no --ca-cert."""
    result = subprocess.run([SNAPLEDGER, "--url", director.server.url, "--user", "admin", "--secret",
                             director.secrets["admin"], "info"], capture_output=True, text=True,
                            cwd=director.tmp, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Snapshots  enabled" in result.stdout


def test_the_readme_bosh_section_works_as_written(tmp_path: Path) -> None:
    """README "Using the bosh CLI": its commands, run by bash as written, against a fresh serve."""
    cli_dir = str(Path(bosh_cli()).parent)
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Using the bosh CLI"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    data_dir = tmp_path / ".snapledger"
    for cid in ("disk-db-0", "disk-db-1"):
        (data_dir / "disks" / cid).mkdir(parents=True)
    server = Server(data_dir, tls=True).start()  # a fresh serve, no flag for the bosh CLI
    try:
        env = {**os.environ, "PATH": f"{cli_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
               "HOME": str(tmp_path), "BOSH_ENVIRONMENT": server.url,
               "SNAPLEDGER_URL": server.url}
        (tmp_path / "prod.yml").write_text(
            "name: prod\ninstances:\n  - {job: db, index: 0, disks: [disk-db-0]}\n"
            "  - {job: db, index: 1, disks: [disk-db-1]}\n")
        setup = subprocess.run(["bash", "-euo", "pipefail", "-c",
                                "snapledger deploy prod.yml && snapledger enable-snapshots"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", blocks[0]], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "snapshots: enabled" in out and "Snapshot: db/0 disk-db-0" in out  # ("Succeeded": on a terminal)
        assert server.api("GET", "/deployments/prod/snapshots") == []  # deleted at the end, as written
        tasks = server.api("GET", "/tasks?deployment=prod")
        assert [t["kind"] for t in tasks][:4] == ["delete_deployment_snapshots", "delete_snapshot",
                                                   "create_snapshot", "snapshot_deployment"]
    finally:
        server.stop()


# Which dialect answers where (decision 34) --------------------------------------------------

def _info(port: int, data_dir: Path, **headers: str) -> dict[str, Any]:
    """`GET /info` as admin: the native body names the event store, the Director's has `user_authentication`."""
    secret = json.loads((data_dir / "credentials.json").read_text())["secret"]
    auth = "Basic " + base64.b64encode(f"admin:{secret}".encode()).decode()
    request = urllib.request.Request(f"https://127.0.0.1:{port}/info", headers={"Authorization": auth, **headers})
    context = ssl.create_default_context(cafile=str(data_dir / "ca.pem"))
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read())


GO = {"User-Agent": "Go-http-client/1.1"}  # what the bosh CLI sends


def test_the_api_port_tells_the_bosh_cli_from_other_clients(tmp_path: Path) -> None:
    server = Server(tmp_path / ".snapledger", tls=True).start()
    try:
        assert "user_authentication" in _info(server.port, server.data_dir, **GO)
        assert "event_store" in _info(server.port, server.data_dir)  # any other client: native
        assert "event_store" in _info(server.port, server.data_dir, **GO, **{"X-Snapledger-Dialect": "native"})
        assert "user_authentication" in _info(server.port, server.data_dir, **{"X-Snapledger-Dialect": "director"})
        # Routes the Director dialect has not stay native for the bosh CLI's agent too.
        health = urllib.request.Request(server.url + "/health", headers=GO)
        with urllib.request.urlopen(health, context=server.ssl_context, timeout=10) as response:
            assert json.loads(response.read()) == {"status": "ok"}
    finally:
        server.stop()


def test_a_director_port_of_its_own_or_none(tmp_path: Path) -> None:
    port = free_port()
    server = Server(tmp_path / "own", tls=True, extra_args=["--director-port", str(port)]).start()
    try:
        assert "user_authentication" in _info(port, server.data_dir, **GO)
        assert "event_store" in _info(server.port, server.data_dir, **GO)  # the API port: native only
    finally:
        server.stop()
    off = Server(tmp_path / "off", tls=True, extra_args=["--no-director"]).start()
    try:
        assert "event_store" in _info(off.port, off.data_dir, **GO)
    finally:
        off.stop()
    both = subprocess.run([SNAPLEDGER, "serve", "--data-dir", str(tmp_path / "both"), "--port", str(free_port()),
                           "--no-director", "--director-port", str(port)], capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and both.stderr.strip().count("\n") == 0, both.stderr
    assert "config key 'director.port': is set but director.enabled is false" in both.stderr


def test_the_native_cli_cancels_a_task_by_its_number(director: Director) -> None:
    """`snapledger cancel-task N`: the same number, the same cancel as `bosh cancel-task N`."""
    director.deploy("slow-native", ["disk-slown-0", "disk-slown-1", "disk-slown-2"], cpi="slow")
    number = str(director.api("POST", "/deployments/slow-native/snapshots")["number"])

    def native(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SNAPLEDGER, "--url", director.server.url, "--user", "admin", "--secret",
                               director.secrets["admin"], *args], capture_output=True, text=True,
                              cwd=director.tmp, timeout=60)

    cancelled = native("cancel-task", number)
    assert cancelled.returncode == 0 and f"Task {number} " in cancelled.stdout, cancelled.stdout + cancelled.stderr
    deadline = time.monotonic() + 30
    while (task := director.api("GET", f"/tasks/{number}"))["state"] != "cancelled":
        assert time.monotonic() < deadline, task
        time.sleep(0.1)
    assert len(director.bosh_json("-d", "slow-native", "snapshots")) < 3
    again = native("cancel-task", number)
    assert again.returncode == 1 and "already cancelled" in again.stderr, again.stderr
    audit = director.bosh_json("events", "--task", number)
    assert any(r["action"] == "cancel_requested" and r["user"] == "admin" for r in audit), audit
