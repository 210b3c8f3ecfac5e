"""Idempotency-Key: a retry returns the original task and makes no second snapshot."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

from support.process import Server
from support.runtime import api_client, auth_as, make_config, wait_task


async def setup(client, config) -> None:
    (config.data_dir / "disks" / "disk-a").mkdir(parents=True, exist_ok=True)
    await client.put("/config/snapshots", json={"enable_snapshots": True})
    await client.put("/deployments/prod", json={"instances": [{"job": "db", "index": 0, "disks": ["disk-a"]}]})


async def test_retry_returns_the_original_task(tmp_path: Path, store_url: str) -> None:
    config = make_config(tmp_path, store_url)
    async with api_client(config) as client:
        await setup(client, config)
        key = {"Idempotency-Key": "take-2026-11-25"}
        first = await client.post("/deployments/prod/snapshots", headers=key)
        second = await client.post("/deployments/prod/snapshots", headers=key)
        assert first.status == second.status == 202
        assert (await first.json())["task_id"] == (await second.json())["task_id"]
        assert second.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
        await wait_task(client, (await first.json())["task_id"])
        assert len(await (await client.get("/deployments/prod/snapshots")).json()) == 1

        # The same key for another request is a client bug: refused, naming the header.
        other = await client.post("/deployments/prod/jobs/db/0/snapshots", headers=key)
        assert other.status == 409 and (await other.json())["field"] == "Idempotency-Key"
        # Keys are per user: the prod admin's same key is its own.
        resp = await client.post("/deployments/prod/snapshots", headers={**key, **auth_as("prod-admin")})
        assert resp.status == 202 and (await resp.json())["task_id"] != (await first.json())["task_id"]
        bad = await client.post("/deployments/prod/snapshots", headers={"Idempotency-Key": "no spaces allowed"})
        assert bad.status == 400 and (await bad.json())["field"] == "Idempotency-Key"


async def test_a_retry_racing_the_first_request(tmp_path: Path, store_url: str) -> None:
    config = make_config(tmp_path, store_url)
    async with api_client(config) as client:
        await setup(client, config)
        key = {"Idempotency-Key": "race-1"}
        responses = await asyncio.gather(*[client.post("/deployments/prod/snapshots", headers=key)
                                           for _ in range(8)])
        assert [r.status for r in responses] == [202] * 8
        task_ids = {(await r.json())["task_id"] for r in responses}
        assert len(task_ids) == 1
        await wait_task(client, task_ids.pop())
        assert len(await (await client.get("/deployments/prod/snapshots")).json()) == 1


async def test_put_with_a_reused_key_and_another_body_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    async with api_client(make_config(tmp_path, sqlite_url)) as client:
        key = {"Idempotency-Key": "deploy-1"}
        body = {"instances": [{"job": "db", "index": 0, "disks": []}]}
        assert (await client.put("/deployments/prod", json=body, headers=key)).status == 200
        assert (await client.put("/deployments/prod", json=body, headers=key)).status == 200
        other = await client.put("/deployments/prod", json={"instances": []}, headers=key)
        assert other.status == 409


def test_keys_hold_across_restarts(tmp_path: Path, pg_url: str) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "disks" / "disk-a").mkdir(parents=True)
    server = Server(data_dir, pg_url).start()

    def post() -> tuple[str, str | None]:
        req = urllib.request.Request(server.url + "/deployments/prod/snapshots", method="POST", data=b"{}",
                                     headers={"Authorization": server.authorization, "Idempotency-Key": "k-1",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())["task_id"], resp.headers.get("Idempotent-Replayed")

    try:
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        server.api("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": ["disk-a"]}]})
        task_id, replayed = post()
        assert replayed is None
        server.kill()
        server = Server(data_dir, pg_url, port=server.port).start()
        assert post() == (task_id, "true")
        # The kill may land after the old process claimed the call: the new one recovers it once
        # the old claim's lease (30 s by default) has passed, so wait longer than that.
        server.wait_task(task_id, timeout=60)
        assert len(server.api("GET", "/deployments/prod/snapshots")) == 1
    finally:
        server.kill()
