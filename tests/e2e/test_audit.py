"""The audit log: every event, filtered by what an auditor asks about."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support.process import SNAPLEDGER, Server, cli
from support.runtime import api_client, auth_as, make_config, wait_for, wait_task
from datetime import UTC


async def test_events_filters_and_cursor(tmp_path: Path, store_url: str) -> None:
    config = make_config(tmp_path, store_url)
    for disk in ("disk-a", "disk-b"):
        (config.data_dir / "disks" / disk).mkdir(parents=True)
    async with api_client(config) as client:
        await client.put("/config/snapshots", json={"enable_snapshots": True})
        await client.put("/deployments/prod", json={"instances": [
            {"job": "db", "index": 0, "disks": ["disk-a"]}, {"job": "db", "index": 1, "disks": ["disk-b"]}]})
        take = await wait_task(client, (await (await client.post("/deployments/prod/snapshots")).json())["task_id"])
        listing = await (await client.get("/deployments/prod/snapshots")).json()
        cid_a = next(r["snapshot_cid"] for r in listing if r["disk_cid"] == "disk-a")
        resp = await client.delete(f"/deployments/prod/snapshots/{cid_a}", headers=auth_as("prod-admin"))
        delete = await wait_task(client, (await resp.json())["task_id"])

        async def events(**params) -> list[dict]:
            resp = await client.get("/events", params={k: str(v) for k, v in params.items()})
            assert resp.status == 200, await resp.text()
            return await resp.json()

        async def settled() -> bool:
            return any(e["type"] == "Task.Finished" and e["task_id"] == delete["id"] for e in await events())

        await wait_for(settled)
        everything = await events()
        positions = [e["position"] for e in everything]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)

        # One snapshot's life, from its request (before its CID existed) to its deletion.
        life = [e["type"] for e in await events(snapshot_cid=cid_a)]
        assert life == ["Snapshot.Requested", "Snapshot.CpiCallStarted", "Snapshot.Taken",
                        "Snapshot.DeletionRequested", "Snapshot.CpiCallStarted", "Snapshot.Deleted"]
        # Causation: the call follows from the request, the outcome from the call, the task's
        # progress from the outcome.
        requested, started, taken = (await events(snapshot_cid=cid_a))[:3]
        assert started["caused_by"] == requested["event_id"] and taken["caused_by"] == started["event_id"]
        finished = [e for e in await events(task_id=take["id"], type="Task.OperationFinished")
                    if e["data"]["detail"]["caused_by"] == taken["event_id"]]
        assert len(finished) == 1
        assert {e["disk_cid"] for e in await events(disk_cid="disk-b")} == {"disk-b"}
        by_instance = await events(deployment="prod", job="db", index=1)
        assert by_instance and all(e["instance"] == "db/1" for e in by_instance)
        assert {e["task_id"] for e in await events(task_id=take["id"])} == {take["id"]}
        by_actor = await events(actor="prod-admin")
        assert by_actor and {e["task_id"] for e in by_actor if e["task_id"]} == {delete["id"]}
        assert {e["type"] for e in await events(type="Task.Finished")} == {"Task.Finished"}
        assert all(e["type"].startswith("Snapshot.") for e in await events(type="Snapshot"))
        settings = await events(type="Settings")
        assert settings and settings[0]["actor"] == "admin"
        # Time range: nothing before the first event, everything from it.
        first_time = everything[0]["time"]
        assert await events(until=first_time) == []
        assert len(await events(since=first_time)) == len(everything)
        # Paging with the cursor: the pages are the whole log, in order, once.
        pages, after = [], 0
        while page := await events(after=after, limit=7):
            pages.extend(page)
            after = page[-1]["position"]
        assert pages == everything
        bad = await client.get("/events", params={"since": "yesterday"})
        assert bad.status == 400 and (await bad.json())["field"] == "since"


def test_cli_audit_follow_and_history(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "disks" / "disk-a").mkdir(parents=True)
    server = Server(data_dir).start()
    follower = None
    try:
        spec = tmp_path / "prod.yml"
        spec.write_text("name: prod\ninstances: [{job: db, index: 0, disks: [disk-a]}]\n")
        assert cli(server.url, "deploy", str(spec)).returncode == 0
        env = {"SNAPLEDGER_CREDENTIALS": str(data_dir / "credentials.json")}
        follower = subprocess.Popen([SNAPLEDGER, "--url", server.url, "--json", "audit", "--follow",
                                     "--type", "Snapshot.Taken"], stdout=subprocess.PIPE, text=True,
                                    env={**__import__("os").environ, **env})
        assert cli(server.url, "enable-snapshots").returncode == 0
        assert cli(server.url, "take-snapshot", "-d", "prod").returncode == 0
        line = follower.stdout.readline()  # streamed as it happened
        taken = json.loads(line)
        assert taken["type"] == "Snapshot.Taken" and taken["deployment"] == "prod"
        cid = taken["snapshot_cid"]
        out = cli(server.url, "history", cid)
        assert out.returncode == 0, out.stderr
        assert "Snapshot.Requested" in out.stdout and "snapshot_disk request" in out.stdout
        assert "trigger manual" in out.stdout
        timeline = cli(server.url, "audit", "-d", "prod").stdout
        assert "Deployment.InventoryRecorded" in timeline and "Task.Finished" in timeline
        assert cli(server.url, "history", "snap-nope").returncode == 1
    finally:
        if follower is not None:
            follower.kill()
        server.stop()


async def test_listing_at_a_moment(tmp_path: Path, store_url: str) -> None:
    import asyncio
    from datetime import datetime

    config = make_config(tmp_path, store_url)
    (config.data_dir / "disks" / "disk-a").mkdir(parents=True)
    async with api_client(config) as client:
        await client.put("/config/snapshots", json={"enable_snapshots": True})
        await client.put("/deployments/prod", json={"instances": [{"job": "db", "index": 0, "disks": ["disk-a"]}]})

        async def take() -> str:
            task = await wait_task(client, (await (await client.post("/deployments/prod/snapshots")).json())["task_id"])
            return task["result"].split("snapshot(s) ")[1].split(" created")[0]

        async def delete(cid: str) -> None:
            await wait_task(client, (await (await client.delete(f"/deployments/prod/snapshots/{cid}")).json())["task_id"])

        def now() -> str:
            return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        before_all = now()
        await asyncio.sleep(0.01)
        a = await take()
        b = await take()
        await delete(a)  # taken and deleted before T
        await asyncio.sleep(0.01)
        t = now()
        await asyncio.sleep(0.01)
        c = await take()  # taken after T
        await delete(b)  # taken before T, deleted after it

        async def at(moment: str) -> list[str]:
            resp = await client.get("/deployments/prod/snapshots", params={"at": moment})
            assert resp.status == 200, await resp.text()
            return [r["snapshot_cid"] for r in await resp.json()]

        assert await at(before_all) == []
        assert await at(t) == [b]
        assert await at(now()) == [c]
        assert [r["snapshot_cid"] for r in await (await client.get("/deployments/prod/snapshots")).json()] == [c]
        bad = await client.get("/deployments/prod/snapshots", params={"at": "last tuesday"})
        assert bad.status == 400 and (await bad.json())["field"] == "at"
