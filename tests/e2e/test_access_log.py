"""The log of a real `snapledger serve` as an operator reads it: JSON lines
only (library loggers included), one access line per request with method,
route, status, duration, user and request id; refusals (401/403) name the
user tried and never the secret; a failed CPI call is an error and a failed
drain a warning, each naming deployment, instance and disk. One server for
the module."""

from __future__ import annotations

import base64
import json
import logging
import stat
import time
import urllib.error
import urllib.request
from typing import Any
from collections.abc import Iterator

import pytest
import yaml

from snapledger.adapters.logging import configure_logging
from snapledger.api.auth import hash_secret
from support.process import Server

SECRETS = {"admin": "admin-s3cret-value", "reader": "reader-s3cret-value"}
WRONG_SECRET = "not-the-s3cret-of-mallory"


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def call(server: Server, method: str, path: str, user: str, secret: str, body: Any = None,
         request_id: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": basic(user, secret), "Content-Type": "application/json"}
    if request_id:
        headers["X-Request-Id"] = request_id
    req = urllib.request.Request(server.url + path, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("access-log")
    drain = root / "jobs" / "db" / "bin" / "drain"
    drain.parent.mkdir(parents=True)
    drain.write_text("#!/bin/sh\necho 'db refuses to drain' >&2\nexit 7\n")
    drain.chmod(drain.stat().st_mode | stat.S_IXUSR)
    (root / "data" / "disks" / "disk-db-0").mkdir(parents=True)  # disk-db-1 is missing: its snapshot fails
    config = root / "snapledger.yml"
    config.write_text(yaml.safe_dump({
        "jobs_dir": str(root / "jobs"), "log": {"format": "json", "level": "info"},
        "auth": {"users": [{"name": "admin", "secret_hash": hash_secret(SECRETS["admin"]), "scopes": ["snapledger.admin"]},
                           {"name": "reader", "secret_hash": hash_secret(SECRETS["reader"]),
                            "scopes": ["snapledger.read"]}]}}))
    server = Server(root / "data", env={"SNAPLEDGER_CONFIG": str(config)}).start()
    try:
        yield server
    finally:
        server.stop()


def wait_task(server: Server, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, task = call(server, "GET", f"/tasks/{task_id}", "admin", SECRETS["admin"])
        if task["state"] in ("done", "error"):
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} unfinished: {task}")


def log_lines(server: Server) -> list[dict[str, Any]]:
    text = server.log.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        parsed.append(json.loads(line))  # every line is JSON: no plain-text line from a library
    return parsed


def access(server: Server, **match: Any) -> list[dict[str, Any]]:
    return [e for e in log_lines(server)
            if e.get("event") == "request" and all(e.get(k) == v for k, v in match.items())]


def test_an_access_line_per_request(server: Server) -> None:
    status, _ = call(server, "GET", "/info", "admin", SECRETS["admin"], request_id="req-info-1")
    assert status == 200
    line, = access(server, request_id="req-info-1")
    assert line["method"] == "GET" and line["route"] == "/info" and line["status"] == 200
    assert line["user"] == "admin" and line["level"] == "info"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["timestamp"].endswith("Z")

    call(server, "GET", "/deployments/nope/snapshots?limit=5", "admin", SECRETS["admin"], request_id="req-404")
    line, = access(server, request_id="req-404")  # the route's pattern, not the concrete path
    assert line["route"] == "/deployments/{deployment}/snapshots" and line["status"] == 404
    assert line["path"] == "/deployments/nope/snapshots" and line["level"] == "warning"


def test_refusals_name_the_user_tried_never_the_secret(server: Server) -> None:
    status, _ = call(server, "GET", "/info", "mallory", WRONG_SECRET, request_id="req-401")
    assert status == 401
    line, = access(server, request_id="req-401")
    assert line["user_tried"] == "mallory" and line["user"] is None and line["level"] == "warning"

    status, _ = call(server, "PUT", "/config/snapshots", "reader", SECRETS["reader"], {"enable_snapshots": True},
                     request_id="req-403")
    assert status == 403
    line, = access(server, request_id="req-403")
    assert line["user_tried"] == "reader" and line["route"] == "/config/snapshots" and line["method"] == "PUT"

    text = server.log.read_text()
    assert WRONG_SECRET not in text and SECRETS["reader"] not in text and SECRETS["admin"] not in text


def test_failed_cpi_call_and_failed_drain_are_logged_with_where(server: Server) -> None:
    admin = ("admin", SECRETS["admin"])
    assert call(server, "PUT", "/config/snapshots", *admin, {"enable_snapshots": True})[0] == 200
    assert call(server, "PUT", "/deployments/prod", *admin, {"instances": [
        {"job": "db", "index": 0, "disks": ["disk-db-0"]}, {"job": "db", "index": 1, "disks": ["disk-db-1"]}]})[0] == 200
    _, accepted = call(server, "POST", "/deployments/prod/snapshots", *admin)
    snapshot_task = accepted["task_id"]
    assert wait_task(server, snapshot_task)["state"] == "error"
    _, accepted = call(server, "POST", "/deployments/prod/jobs/db/0/updates", *admin, {})
    assert wait_task(server, accepted["task_id"])["state"] == "error"

    lines = log_lines(server)
    failed = [e for e in lines if e.get("event") == "cpi call" and e.get("outcome") == "failed"]
    assert len(failed) == 1 and failed[0]["level"] == "error"
    assert {k: failed[0][k] for k in ("deployment", "instance", "disk_cid", "error_type")} == {
        "deployment": "prod", "instance": "db/1", "disk_cid": "disk-db-1", "error_type": "Bosh::Clouds::DiskNotFound"}
    assert failed[0]["task_id"] == snapshot_task and failed[0]["snapshot_cid"] is None  # never taken
    taken = [e for e in lines if e.get("event") == "cpi call" and e.get("outcome") == "taken"]
    assert taken[0]["level"] == "info" and taken[0]["snapshot_cid"]
    drain, = [e for e in lines if e.get("event") == "job drain"]
    assert drain["level"] == "warning" and drain["deployment"] == "prod" and drain["instance"] == "db/0"
    assert drain["error"]["type"] == "DrainScriptFailed" and "db refuses to drain" in drain["error"]["message"]


def test_stdlib_loggers_go_through_the_structlog_pipeline(capfd: pytest.CaptureFixture[str]) -> None:
    """aiohttp's and psycopg's loggers are the standard library's: their lines
    come out as the same JSON, with level, logger and timestamp."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("json", "info")
        # (psycopg and psycopg.pool are set to ERROR by psycopg/eventsourcing at import: errors only.)
        logging.getLogger("psycopg").error("error connecting in %r: %s", "pool-1", "refused")
        logging.getLogger("aiohttp.server").debug("below the level")
        logging.getLogger("aiohttp.server").error("Error handling request")
        line, server = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.strip()]
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert line["event"] == "error connecting in 'pool-1': refused"
    assert line["level"] == "error" and line["logger"] == "psycopg" and line["timestamp"].endswith("Z")
    assert (server["event"], server["level"], server["logger"]) == ("Error handling request", "error", "aiohttp.server")
