"""Hostile input to a real `snapledger serve`, on SQLite and on PostgreSQL
(issue 16 items 6, 7 and 9): every input the issue found answered 500 or
slipped through is a 4xx naming the field; a fuzzed set of names, bodies and
query values sent to every documented route gets no 5xx and no hang; and
afterwards the service still serves, nothing was written outside its data
directory, and `replay --verify` finds the views equal to a rebuild.

One server per backend for the whole module: the fuzzing is many requests,
not many servers.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import socket
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest

from support.process import SNAPLEDGER, Server

DEEP = b"[" * 5000 + b"]" * 5000
SENTINEL = f"escape-{uuid.uuid4().hex[:8]}"  # a name that must never become a file anywhere
FUZZ_SEED = 20261201


class Api:
    """Raw HTTP to the server: bytes in, (status, headers, parsed body) out."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, Any, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Authorization": self.server.authorization,
                                                           "Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return resp.status, resp.headers, parsed

    def json(self, method: str, path: str, data: Any = None, **kw: Any) -> tuple[int, Any, Any]:
        return self.request(method, path, json.dumps(data).encode() if data is not None else None, **kw)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, Path]]:
    base = tmp_path_factory.mktemp(f"hostile-{request.param}")
    database = None
    if request.param == "postgres":
        database = f"{request.getfixturevalue('pg_database')}?schema=t_{uuid.uuid4().hex[:12]}"
    data_dir = base / "data"
    (data_dir / "disks" / "disk-a").mkdir(parents=True)
    (data_dir / "disks" / "disk-a" / "data.txt").write_text("orders")
    server = Server(data_dir, database=database).start()
    api = Api(server)
    assert api.json("PUT", "/config/snapshots", {"enable_snapshots": True})[0] == 200
    assert api.json("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": ["disk-a"]}]})[0] \
        == 200
    try:
        yield api, base
    finally:
        server.stop()


def _field(body: Any) -> str | None:
    return body.get("field") if isinstance(body, dict) else None


# The inputs the issue lists -------------------------------------------------------------------

@pytest.mark.parametrize("method,path,body,headers,field", [
    ("PUT", "/config/snapshots", DEEP, {}, "body"),
    ("PUT", "/config/snapshots", DEEP, {"Idempotency-Key": "deep-1"}, "body"),  # the key's fingerprint parses it
    ("PUT", "/config/snapshots", b'{"snapshot_schedule": "0 0 7 * * *\\u0000"}', {}, "snapshot_schedule"),
    ("PUT", "/deployments/prod", b'{"tags": {"a": "b\\u0000"}, "instances": []}', {}, "tags.a"),
    ("GET", "/deployments/prod/snapshots?at=0001-01-01T00:00:00%2B14:00", None, {}, "at"),
    ("GET", "/deployments/prod/snapshots?at=9999-12-31T23:59:59-14:00", None, {}, "at"),
    ("GET", "/deployments/prod/jobs/db/0/snapshots?at=0001-01-01T00:00:00%2B14:00", None, {}, "at"),
    ("GET", "/events?since=0001-01-01T00:00:00%2B14:00", None, {}, "since"),
    ("GET", "/events?until=9999-12-31T23:59:59-14:00", None, {}, "until"),
    ("GET", "/tasks/a%00b", None, {}, "task_id"),
    ("GET", "/tasks/a%00b/events", None, {}, "task_id"),
    ("GET", "/events?actor=a%00b", None, {}, "actor"),
    ("GET", "/deployments/pr%00od", None, {}, "name"),
    ("PUT", "/deployments/hostile%0A", b'{"instances": []}', {}, "name"),
    ("GET", "/deployments/prod%0A/snapshots", None, {}, "deployment"),
    ("PUT", "/deployments/nl", b'{"instances": [{"job": "db", "index": 0, "disks": ["good-0\\n"]}]}', {},
     "instances"),
    ("PUT", "/deployments/nl", b'{"instances": [{"job": "db\\n", "index": 0, "disks": []}]}', {}, "instances"),
    ("PUT", "/deployments/nl", b'{"instances": [{"job": "db", "index": 0, "jobs": ["db\\n"], "disks": []}]}', {},
     "instances"),
    ("GET", "/tasks?deployment=prod%0A", None, {}, "deployment"),
    ("PUT", "/deployments/prod/retention", b'{"keep_for": "7d\\n"}', {}, "keep_for"),
])
def test_issue_inputs_are_4xx_naming_the_field(served: tuple[Api, Path], method: str, path: str,
                                               body: bytes | None, headers: dict[str, str], field: str) -> None:
    api, _ = served
    status, _, answer = api.request(method, path, body, headers)
    assert 400 <= status < 500, (status, answer)
    assert _field(answer) == field, answer
    assert api.json("GET", "/deployments/hostile")[0] == 404  # nothing was created by the way
    assert api.json("GET", "/deployments/nl")[0] == 404


def test_405_says_what_is_allowed(served: tuple[Api, Path]) -> None:
    api, _ = served
    status, headers, body = api.request("PATCH", "/deployments/prod")
    assert status == 405 and body["code"] == "method_not_allowed", body
    assert set(re.split(r",\s*", headers["Allow"])) >= {"GET", "PUT", "DELETE"}, headers


def test_schema_valid_requests_are_accepted(served: tuple[Api, Path]) -> None:
    api, _ = served
    status, _, body = api.request("PUT", "/deployments/floaty",
                                  b'{"instances": [{"job": "db", "index": 1.0, "disks": []}]}')
    assert status == 200 and body["instances"][0]["index"] == 1, body
    status, _, body = api.json("PUT", "/deployments/floaty/retention", {"keep_for": "", "keep_last": 3.0})
    assert status == 200 and body["keep_for"] is None and body["keep_last"] == 3, body
    status, _, body = api.json("PUT", "/config/snapshots", {})
    assert status == 200 and body["enable_snapshots"] is True, body  # nothing to change, nothing changed
    assert api.json("DELETE", "/deployments/floaty")[0] == 200


def test_a_dry_run_answers_what_the_document_says(served: tuple[Api, Path]) -> None:
    api, _ = served
    status, _, body = api.request("POST", "/deployments/prod/retention/runs?dry_run=true")
    document = api.json("GET", "/openapi.json")[2]
    documented = document["paths"]["/deployments/{deployment}/retention/runs"]["post"]["responses"]
    assert status == 200 and isinstance(body, list)
    assert str(status) in documented and "202" in documented


def _metric_500s(api: Api) -> float:
    status, _, text = api.request("GET", "/metrics")
    assert status == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("snapledger_http_requests_total{") and 'status="500"' in line)


def test_a_client_leaving_mid_body_is_not_a_server_error(served: tuple[Api, Path]) -> None:
    api, _ = served
    before = _metric_500s(api)
    log_before = api.server.log.read_text().count("unhandled error")
    for path in ("/deployments/prod", "/config/snapshots"):
        with socket.create_connection(("127.0.0.1", api.server.port)) as sock:
            sock.sendall((f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {api.server.authorization}\r\n"
                          "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"instances\": [").encode())
            time.sleep(0.3)  # the handler is reading the body
    time.sleep(0.5)
    assert api.json("GET", "/health")[0] == 200
    assert _metric_500s(api) == before
    assert api.server.log.read_text().count("unhandled error") == log_before


# Fuzzing every route --------------------------------------------------------------------------

HOSTILE_NAMES = [
    "", " ", "a\n", "a\r\n", "\n", "a\x00b", "..", ".", "../..", f"../../{SENTINEL}", f"..%2F..%2F{SENTINEL}",
    f"%2e%2e%2f{SENTINEL}", "a/b", "a\\b", "x" * 129, "x" * 10_000, "😀", "é", "\u202eevil", "-lead", "_self",
    "all", "${jndi:ldap://x}", "'; DROP TABLE events; --", "%", "%00", "%ff", "?", "#", "a b", "\t", "NaN",
    "0" * 300, "-1", "1e309", "null",
]
HOSTILE_VALUES = [
    *HOSTILE_NAMES,
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-13-45T99:99:99Z", "true", "yes",
    str(2**64), str(-2**63 - 1), "1.5", "inf", "-0", ",,,", "Snapshot.", "Snapshot.Taken,",
]
JSON_VALUES: list[Any] = [
    None, True, 0, -1, 1.5, 2**64, -2**63 - 1, 1e308, "", "x" * 100_000, "a\x00b", "a\n", [], {}, [[[[[]]]]],
    {"a": {"b": {"c": {"d": {"e": {}}}}}}, ["x"] * 1000, {"\x00": 1}, "😀" * 1000,
]
RAW_BODIES = [DEEP, b"{" * 3000, b"\x00\x01\x02", b"\xff\xfe", b"{\"a\": NaN}", b"{\"a\": Infinity}",
              b"{\"a\": 1e999999}", b"[" * 900 + b"]" * 900, b"{\"instances\": [" + b"{}," * 20_000 + b"{}]}",
              b"null", b"[]", b"\"s\"", b"{\"a\": 1, \"a\": 2}", b"{\"instances\": []}" + b" " * 10]


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="%")  # '%' kept: pre-encoded escapes stay escapes


def _fuzzed_requests(document: dict[str, Any], rng: random.Random,
                     per_route: int) -> Iterator[tuple[str, str, bytes | None]]:
    for template, operations in sorted(document["paths"].items()):
        for method, operation in sorted(operations.items()):
            queries = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            body_schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            properties = list(_properties(document, body_schema)) if body_schema else []
            for i in range(per_route):
                real = i % 3 == 0  # a third of the requests name the real deployment: the handlers' logic runs

                def fill(match: re.Match[str], real: bool = real) -> str:
                    name = match.group(1)
                    if real and name in ("deployment", "name"):
                        return "prod"
                    if real and name == "job":
                        return "db"
                    if real and name == "index_or_id":
                        return "0"
                    return _quote(rng.choice(HOSTILE_NAMES)) or "x"

                path = re.sub(r"\{(\w+)\}", fill, template)
                if queries:
                    chosen = rng.sample(queries, rng.randint(1, len(queries)))
                    path += "?" + "&".join(f"{q}={_quote(rng.choice(HOSTILE_VALUES))}" for q in chosen)
                if method in ("put", "post", "delete") and (body_schema or rng.random() < 0.3):
                    if rng.random() < 0.3:
                        body = rng.choice(RAW_BODIES)
                    else:
                        keys = rng.sample(properties, min(len(properties), rng.randint(0, 3))) if properties else []
                        obj = {k: rng.choice(JSON_VALUES) for k in keys}
                        if rng.random() < 0.2:
                            obj[rng.choice(HOSTILE_NAMES)] = rng.choice(JSON_VALUES)
                        body = json.dumps(obj).encode()
                else:
                    body = None
                yield method.upper(), path, body


def _properties(document: dict[str, Any], schema: dict[str, Any]) -> Iterator[str]:
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    yield from schema.get("properties", {})


def _files_outside(base: Path, data_dir: Path) -> set[Path]:
    """Every path under `base` but outside the data directory. The walk never enters
    the data directory: the service creates and removes its temporary copies there
    meanwhile (a directory that vanished mid-walk failed the test)."""
    found: set[Path] = set()
    for root, dirs, files in os.walk(base):
        here = Path(root)
        dirs[:] = [d for d in dirs if here / d != data_dir]
        found.update(here / name for name in (*dirs, *files))
    return found


def test_fuzzed_names_bodies_and_queries_to_every_route(served: tuple[Api, Path]) -> None:
    api, base = served
    data_dir = api.server.data_dir
    outside_before = _files_outside(base, data_dir)
    document = api.json("GET", "/openapi.json")[2]
    rng = random.Random(FUZZ_SEED)
    per_route = int(os.environ.get("SNAPLEDGER_FUZZ_PER_ROUTE", "12"))
    failures: list[tuple[Any, ...]] = []
    sent = 0
    for method, path, body in _fuzzed_requests(document, rng, per_route):
        headers = {"Idempotency-Key": f"fuzz-{sent}"} if method != "GET" and rng.random() < 0.3 else {}
        started = time.monotonic()
        try:
            status, _, answer = api.request(method, path, body, headers, timeout=30)
        except (OSError, http.client.HTTPException) as error:  # a hang or a dropped connection
            failures.append((method, path, body and body[:80], repr(error)))
            continue
        finally:
            sent += 1
        if status >= 500 or time.monotonic() - started > 20:
            failures.append((method, path, body and body[:80], status, answer))
    assert sent >= per_route * len(document["paths"])
    assert not failures, failures[:10]

    # Still serving, and serving the truth (the fuzzing may have deleted `prod`: a legitimate request).
    assert api.json("GET", "/health")[0] == 200
    status, _, deployment = api.json("PUT", "/deployments/prod",
                                     {"instances": [{"job": "db", "index": 0, "disks": ["disk-a"]}]})
    assert status == 200 and deployment["instances"][0]["disks"] == ["disk-a"], deployment
    assert api.json("PUT", "/config/snapshots", {"enable_snapshots": True})[0] == 200
    status, _, accepted = api.json("POST", "/deployments/prod/snapshots")
    assert status == 202, accepted
    assert api.server.wait_task(accepted["task_id"])["state"] == "done"

    # Nothing written outside the data directory (which holds the disk root), no sentinel anywhere.
    assert _files_outside(base, data_dir) - outside_before <= {api.server.log}
    for root in (base, Path("/tmp"), Path.cwd()):
        assert not list(root.glob(f"**/{SENTINEL}"))[:1] if root == base else not list(root.glob(f"{SENTINEL}*"))

    # The views equal a rebuild from the log.
    database = ["--database", api.server.database] if api.server.database else []
    verify = subprocess.run([SNAPLEDGER, "replay", "--data-dir", str(data_dir), *database, "--verify"],
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
