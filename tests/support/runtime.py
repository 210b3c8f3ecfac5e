"""Helpers to run a real snapledger runtime (and its HTTP API) inside a test."""

from __future__ import annotations

import asyncio
import functools
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from collections.abc import AsyncIterator, Callable

from aiohttp import encode_basic_auth
from aiohttp.test_utils import TestClient, TestServer

from snapledger.adapters.config import Config
from snapledger.adapters.bootstrap import ROLES, Runtime, bootstrap
from snapledger.api.app import create_app


# Credentials of the tests: one per kind of access (hashed once per session).
SECRETS = {"admin": "admin-secret", "reader": "reader-secret", "prod-admin": "prod-admin-secret"}
SCOPES = {"admin": ["snapledger.admin"], "reader": ["snapledger.read"],
          "prod-admin": ["snapledger.deployments.prod.admin"]}
_HASHES: dict[str, str] = {}


def test_users() -> list[dict[str, Any]]:
    from snapledger.api.auth import hash_secret

    if not _HASHES:
        _HASHES.update({name: hash_secret(secret) for name, secret in SECRETS.items()})
    return [{"name": n, "secret_hash": _HASHES[n], "scopes": SCOPES[n]} for n in SECRETS]


def auth_as(name: str) -> dict[str, str]:
    return {"Authorization": encode_basic_auth(name, SECRETS[name])}


def make_config(tmp_path: Path, database: str, **overrides: Any) -> Config:
    config = Config(data_dir=tmp_path / "data", database=database, poll_interval_s=0.05, log_format="console",
                    log_level="warning", users=test_users())
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def make_disk(config: Config, cid: str, files: dict[str, bytes] | None = None) -> Path:
    disk = config.data_dir / "disks" / cid
    disk.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {"data.bin": cid.encode() * 100}).items():
        (disk / name).write_bytes(content)
    return disk


@asynccontextmanager
async def api_client(config: Config, roles: frozenset[str] | set[str] = ROLES,
                     customise: Callable[[Runtime], None] | None = None,
                     user: str | None = "admin", **parts: Any) -> AsyncIterator[TestClient]:
    """A real aiohttp server on a loopback port over a freshly built runtime,
    with a client authenticated as `user` (None: no credentials). `parts`
    replace parts of the process (`cpis=`, `agent=`: adapters/bootstrap.py)."""
    runtime = await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(bootstrap, config, roles, **parts))
    if customise is not None:
        customise(runtime)
    client = TestClient(TestServer(create_app(runtime)), headers=auth_as(user) if user else None)
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def wait_task(client: TestClient, task_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await client.get(f"/tasks/{task_id}")
        task = await resp.json()
        if task["state"] in ("done", "error"):
            return task
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {task_id} did not finish: {task}")


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")
