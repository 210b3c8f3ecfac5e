"""Retention over HTTP on both stores: dry run, run, pins, the events it leaves."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import structlog

from snapledger.adapters.store import ledger_env, open_database, parse_store_url
from snapledger.domain.application import Ledger
from snapledger.projections.queries import Queries
from snapledger.scheduler.process import Scheduler
from support.process import Server, cli
from support.runtime import api_client, make_config, wait_for, wait_task


async def take(client, n: int) -> list[str]:
    for _ in range(n):
        resp = await client.post("/deployments/prod/snapshots")
        assert (await wait_task(client, (await resp.json())["task_id"]))["state"] == "done"
    return [r["snapshot_cid"] for r in await (await client.get("/deployments/prod/snapshots")).json()]


async def test_retention_dry_run_run_and_pins(tmp_path: Path, store_url: str) -> None:
    config = make_config(tmp_path, store_url)
    (config.data_dir / "disks" / "disk-a").mkdir(parents=True)
    async with api_client(config) as client:
        await client.put("/config/snapshots", json={"enable_snapshots": True})
        await client.put("/deployments/prod", json={"instances": [{"job": "db", "index": 0, "disks": ["disk-a"]}]})
        cids = await take(client, 4)  # oldest first

        policy = await (await client.get("/deployments/prod/retention")).json()
        assert policy["source"] == "default" and policy["description"] == "keep everything"
        assert await (await client.post("/deployments/prod/retention/runs?dry_run=true")).json() == []

        resp = await client.put("/deployments/prod/retention", json={"keep_last": 2})
        assert resp.status == 200 and (await resp.json())["source"] == "deployment"
        pinned = cids[0]
        resp = await client.put(f"/deployments/prod/snapshots/{pinned}/pin", json={"reason": "legal hold 42"})
        assert resp.status == 200 and (await resp.json())["pinned"] == "legal hold 42"

        dry = await (await client.post("/deployments/prod/retention/runs?dry_run=true")).json()
        assert [d["snapshot_cid"] for d in dry] == [cids[1]]  # the pinned one stays
        resp = await client.post("/deployments/prod/retention/runs")
        task = await wait_task(client, (await resp.json())["task_id"])
        assert task["state"] == "done" and task["kind"] == "retention"
        left = [r["snapshot_cid"] for r in await (await client.get("/deployments/prod/snapshots")).json()]
        assert left == [cids[0], cids[2], cids[3]]  # exactly what the dry run said went
        events = await (await client.get(f"/tasks/{task['id']}/events")).json()
        types = [e["type"] for e in events if e["type"].startswith("Snapshot.")]
        assert types[:2] == ["Snapshot.Expired", "Snapshot.DeletionRequested"]
        expired = events[[e["type"] for e in events].index("Snapshot.Expired")]
        assert expired["data"]["policy"]["keep_last"] == 2 and "older than the last 2" in expired["data"]["reason"]

        # A pinned snapshot cannot be deleted, and delete-all leaves it.
        resp = await client.delete(f"/deployments/prod/snapshots/{pinned}")
        assert resp.status == 409 and "pinned" in (await resp.json())["error"]
        resp = await client.delete("/deployments/prod/snapshots")
        await wait_task(client, (await resp.json())["task_id"])
        assert [r["snapshot_cid"] for r in await (await client.get("/deployments/prod/snapshots")).json()] == [pinned]
        assert (await client.delete(f"/deployments/prod/snapshots/{pinned}/pin")).status == 200
        resp = await client.delete(f"/deployments/prod/snapshots/{pinned}")
        assert resp.status == 202

        bad = await client.put("/deployments/prod/retention", json={"keep_for": "7 days"})
        assert bad.status == 400 and (await bad.json())["field"] == "keep_for"
        bad = await client.put("/deployments/prod/retention", json={"keep_last": 0})
        assert bad.status == 400 and (await bad.json())["field"] == "keep_last"


async def test_retention_schedule_and_after_scheduled_snapshots(tmp_path: Path, store_url: str) -> None:
    config = make_config(tmp_path, store_url)
    (config.data_dir / "disks" / "disk-a").mkdir(parents=True)
    async with api_client(config, roles={"api", "worker", "projector"}) as client:
        await client.put("/config/snapshots", json={"enable_snapshots": True, "self_snapshot_schedule": "off"})
        await client.put("/deployments/prod", json={"instances": [{"job": "db", "index": 0, "disks": ["disk-a"]}]})
        await take(client, 3)
        await client.put("/config/retention", json={"keep_last": 1})
        # Scheduler replicas of their own, driven with a controlled clock.
        db = open_database(parse_store_url(store_url))
        ledger = Ledger(env=ledger_env(parse_store_url(store_url)), retention_candidates=Queries(db).retention_candidates)
        try:
            ledger.settings.set_schedule("retention_schedule", "0 * * * * * UTC", actor="op")
            ledger.settings.set_schedule("snapshot_schedule", None, actor="op")
            since = ledger.settings.current().since("retention_schedule")
            fire = since.replace(second=0, microsecond=0) + timedelta(minutes=1)
            replicas = [Scheduler(ledger, structlog.get_logger()) for _ in range(2)]
            for s in replicas:
                s.tick(fire + timedelta(seconds=1))
            assert sum(s.fired for s in replicas) == 1  # exactly once

            async def retention_tasks() -> list:
                tasks = await (await client.get("/tasks?deployment=prod")).json()
                return [t for t in tasks if t["kind"] == "retention"]

            retention = await wait_for(retention_tasks)
            assert len(retention) == 1
            await wait_task(client, retention[0]["id"])
            assert len(await (await client.get("/deployments/prod/snapshots")).json()) == 1
        finally:
            db.close()
            ledger.close()


def test_cli_retention(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "disks" / "disk-a").mkdir(parents=True)
    server = Server(data_dir).start()
    try:
        spec = tmp_path / "prod.yml"
        spec.write_text("name: prod\ninstances: [{job: db, index: 0, disks: [disk-a]}]\n")
        assert cli(server.url, "deploy", str(spec)).returncode == 0
        assert cli(server.url, "enable-snapshots").returncode == 0
        for _ in range(3):
            assert cli(server.url, "take-snapshot", "-d", "prod").returncode == 0
        out = cli(server.url, "retention", "-d", "prod", "--keep-last", "1").stdout
        assert "keep the last 1 (deployment policy)" in out
        dry = cli(server.url, "retention", "-d", "prod", "--dry-run")
        assert dry.returncode == 0 and "2 snapshots would be deleted (dry run)" in dry.stdout
        assert cli(server.url, "retention", "-d", "prod", "--run").returncode == 0
        assert "1 snapshots" in cli(server.url, "snapshots", "-d", "prod").stdout
        bad = cli(server.url, "retention", "-d", "prod", "--keep-for", "soon")
        assert bad.returncode == 1 and "keep_for" in bad.stderr
    finally:
        server.stop()


async def test_retention_runs_after_every_scheduled_snapshot(tmp_path: Path, sqlite_url: str) -> None:
    config = make_config(tmp_path, sqlite_url)
    (config.data_dir / "disks" / "disk-a").mkdir(parents=True)
    async with api_client(config, roles={"api", "worker", "projector"}) as client:
        await client.put("/config/snapshots", json={"enable_snapshots": True, "self_snapshot_schedule": "off",
                                                    "snapshot_schedule": "0 * * * * * UTC"})
        await client.put("/deployments/prod", json={"instances": [{"job": "db", "index": 0, "disks": ["disk-a"]}]})
        await take(client, 2)
        await client.put("/deployments/prod/retention", json={"keep_last": 1})
        db = open_database(parse_store_url(sqlite_url))
        ledger = Ledger(env=ledger_env(parse_store_url(sqlite_url)), retention_candidates=Queries(db).retention_candidates)
        try:
            scheduler = Scheduler(ledger, structlog.get_logger())
            since = ledger.settings.current().since("snapshot_schedule")
            fire = since.replace(second=0, microsecond=0) + timedelta(minutes=1)
            scheduler.tick(fire + timedelta(seconds=1))  # the scheduled snapshot
            (task_id,) = scheduler.follow_ups[0].tasks
            assert (await wait_task(client, task_id))["state"] == "done"

            async def three_listed() -> bool:
                return len(await (await client.get("/deployments/prod/snapshots")).json()) == 3

            await wait_for(three_listed)
            scheduler.tick(fire + timedelta(seconds=2))  # its tasks finished: retention follows
            assert scheduler.follow_ups == []

            async def one_left() -> bool:
                return len(await (await client.get("/deployments/prod/snapshots")).json()) == 1

            await wait_for(one_left)
            tasks = await (await client.get("/tasks?deployment=prod")).json()
            (retention,) = [t for t in tasks if t["kind"] == "retention"]
            assert retention["trigger"] == "after_scheduled_snapshot" and retention["user"] == "scheduler"
        finally:
            db.close()
            ledger.close()
