"""The OpenAPI document describes every route, and the server keeps to it
under schemathesis (generated and mutated requests on every operation)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from snapledger.api.openapi import OPERATIONS
from support.process import Server
from support.runtime import api_client, make_config

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
EXAMPLES = os.environ.get("SNAPLEDGER_SCHEMATHESIS_EXAMPLES", "200")
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,response_headers_conformance")


async def test_every_route_is_documented(tmp_path: Path, sqlite_url: str) -> None:
    async with api_client(make_config(tmp_path, sqlite_url), user=None) as client:
        routes = {(r.method, r.resource.canonical) for r in client.app.router.routes() if r.method != "HEAD"}
        document = await (await client.get("/openapi.json")).json()  # public
    assert routes == set(OPERATIONS)
    assert document["openapi"].startswith("3.")
    assert {(m.upper(), p) for p, ops in document["paths"].items() for m in ops} == routes
    put = document["paths"]["/deployments/{name}"]["put"]
    body = put["requestBody"]["content"]["application/json"]["schema"]
    assert "instances" in str(body) or "$ref" in body  # generated from the marshmallow schema


@pytest.mark.timeout(900)
def test_schemathesis_finds_no_server_error_and_no_violation(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "disks" / "disk-a").mkdir(parents=True)
    server = Server(data_dir).start()
    try:
        result = subprocess.run(
            [SCHEMATHESIS, "run", f"{server.url}/openapi.json", "-H", f"Authorization: {server.authorization}",
             "--checks", CHECKS, "--max-examples", EXAMPLES, "--no-shrink", "--seed", "20261125",
             "--request-timeout", "30"],
            capture_output=True, text=True, timeout=850, cwd=tmp_path)  # its cache stays out of the tree
        tail = "\n".join(result.stdout.splitlines()[-40:])
        assert result.returncode == 0, tail
        assert " passed" in tail and "failed" not in tail.split("Test cases:")[-1], tail
    finally:
        server.stop()
