"""The OpenAPI document describes every route, and the server keeps to it
under schemathesis (generated and mutated requests on every operation)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema_rs import Draft202012Validator  # what schemathesis validates with

from snapledger.api.routing import ROUTES
from snapledger.domain.cron import CronError, CronSchedule
from support.process import Server
from support.runtime import api_client, make_config

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
# CI's short pass; the long pass (issue 16: >= 300 per operation, every phase) sets it to 300.
EXAMPLES = int(os.environ.get("SNAPLEDGER_SCHEMATHESIS_EXAMPLES", "5"))
SUPPORT = Path(__file__).resolve().parents[1] / "support"  # schemathesis_hooks.py: the bosh-cron format


async def test_every_route_is_documented(tmp_path: Path, sqlite_url: str) -> None:
    async with api_client(make_config(tmp_path, sqlite_url), user=None) as client:
        routes = {(r.method, r.resource.canonical) for r in client.app.router.routes() if r.method != "HEAD"}
        documented = {route.key for route in client.app[ROUTES].all}
        document = await (await client.get("/openapi.json")).json()  # public
    assert routes == documented
    assert document["openapi"].startswith("3.")
    assert {(m.upper(), p) for p, ops in document["paths"].items() for m in ops} == routes
    put = document["paths"]["/deployments/{name}"]["put"]
    body = put["requestBody"]["content"]["application/json"]["schema"]
    assert "instances" in str(body) or "$ref" in body  # generated from the marshmallow schema


@pytest.mark.parametrize("value,accepted", [
    ("", True), ("off", True), (None, True), ("0 30 7 * * * UTC", True), ("@daily", True),
    ("not cron", False), ("61 * * * *", False),
])
async def test_the_document_and_the_server_agree_on_schedules(tmp_path: Path, sqlite_url: str,
                                                              value: str | None, accepted: bool) -> None:
    """The long schemathesis pass found `{"retention_schedule": ""}` answered 200 while the
    document allowed only the cron format or null: "" and "off" turn a schedule off, so
    the document says so. Checked with the server's own cron parser as the format."""
    def is_cron(text: str) -> bool:
        try:
            return CronSchedule.parse(text) is not None
        except CronError:
            return False

    async with api_client(make_config(tmp_path, sqlite_url)) as client:
        document = await (await client.get("/openapi.json")).json()
        body = document["paths"]["/config/snapshots"]["put"]["requestBody"]["content"]["application/json"]["schema"]
        if "$ref" in body:
            body = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
        for field in ("snapshot_schedule", "self_snapshot_schedule", "retention_schedule"):
            valid = Draft202012Validator(body["properties"][field], formats={"bosh-cron": is_cron},
                                         validate_formats=True).is_valid(value)
            status = (await client.put("/config/snapshots", json={field: value})).status
            assert (valid, status == 200) == (accepted, accepted), (field, value, valid, status)


@pytest.mark.timeout(7200)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_schemathesis_with_every_check_finds_nothing(tmp_path: Path, request: pytest.FixtureRequest,
                                                     backend: str) -> None:
    """Every check (server errors, status codes, headers, schemas, positive
    data accepted, negative data rejected, ignored auth, unsupported methods
    ...), the coverage, fuzzing and stateful phases (the short pass: fuzzing
    and stateful only)."""
    database = request.getfixturevalue("pg_url") if backend == "postgres" else None
    data_dir = tmp_path / "data"
    (data_dir / "disks" / "disk-a").mkdir(parents=True)
    # schemathesis's ignored_auth check sends wrong credentials to every operation from one
    # address and wants 401 for each: a budget of failures it cannot exhaust (the 429 is
    # tests/e2e/test_auth_failures.py's).
    server = Server(data_dir, database=database, env={"SNAPLEDGER_AUTH_FAILURE_BURST": "1000000"}).start()
    phases = "examples,coverage,fuzzing,stateful" if EXAMPLES >= 100 else "examples,fuzzing,stateful"
    try:
        result = subprocess.run(
            [SCHEMATHESIS, "run", f"{server.url}/openapi.json", "-H", f"Authorization: {server.authorization}",
             "--checks", "all", "--phases", phases, "--max-examples", str(EXAMPLES), "--no-shrink",
             "--seed", "20261201", "--request-timeout", "30"],
            capture_output=True, text=True, timeout=7000, cwd=tmp_path,  # its cache stays out of the tree
            env={**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
                 "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")])})
        tail = "\n".join(result.stdout.splitlines()[-60:])
        # Every failure with its curl line (a long pass may find more than a tail shows).
        report = result.stdout[result.stdout.find("= FAILURES ="):] if "= FAILURES =" in result.stdout else tail
        assert result.returncode == 0, report
        summary = tail.split("Test cases:")[-1]
        assert " generated" in summary and "failure" not in summary, tail
    finally:
        server.stop()
