"""The README tour over real HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from snapledger.adapters.cpi.local import LocalCpi
from support.runtime import api_client, make_config, make_disk, wait_task

DEPLOYMENT = {
    "tags": {"team": "storage"},
    "instances": [
        {"job": "db", "index": 0, "disks": ["disk-db-0"]},
        {"job": "db", "index": 1, "disks": ["disk-db-1", "disk-db-1b"]},
        {"job": "web", "index": 0, "disks": []},
    ],
}


async def test_readme_tour(tmp_path: Path, store_url: str) -> None:
    config = make_config(tmp_path, store_url)
    for cid in ("disk-db-0", "disk-db-1", "disk-db-1b"):
        make_disk(config, cid, {"payload.txt": f"content of {cid}".encode()})
    async with api_client(config) as client:
        info = await (await client.get("/info")).json()
        assert info["features"]["snapshots"]["status"] is False  # off by default

        resp = await client.put("/deployments/prod", json=DEPLOYMENT)
        assert resp.status == 200, await resp.text()
        instances = (await resp.json())["instances"]
        assert all(i["id"] for i in instances)

        # Disabled: refused loudly (409), never a silent success.
        resp = await client.post("/deployments/prod/snapshots")
        assert resp.status == 409
        error = await resp.json()
        assert error["code"] == "snapshots_disabled" and "enable-snapshots" in error["error"]

        resp = await client.put("/config/snapshots", json={"enable_snapshots": True})
        assert (await resp.json())["enable_snapshots"] is True

        # Whole deployment: every disk of every instance.
        resp = await client.post("/deployments/prod/snapshots")
        assert resp.status == 202
        task = await wait_task(client, (await resp.json())["task_id"])
        assert task["state"] == "done", task
        assert task["description"] == "snapshot deployment" and task["deployment"] == "prod"

        listing = await (await client.get("/deployments/prod/snapshots")).json()
        assert sorted(r["disk_cid"] for r in listing) == ["disk-db-0", "disk-db-1", "disk-db-1b"]
        assert all(r["clean"] is False and r["trigger"] == "manual" for r in listing)
        assert all(r["created_at"].endswith("Z") for r in listing)
        cpi = LocalCpi(config.data_dir / "disks", config.data_dir / "snapshots")
        for row in listing:  # the local CPI really copied the disk
            copy = cpi.snapshot_path(row["snapshot_cid"]) / "payload.txt"
            assert copy.read_text() == f"content of {row['disk_cid']}"

        # One instance by index, then by id.
        resp = await client.post("/deployments/prod/jobs/db/1/snapshots")
        task = await wait_task(client, (await resp.json())["task_id"])
        assert task["state"] == "done" and task["description"] == "create snapshot"
        db0_id = next(i["id"] for i in instances if i["job"] == "db" and i["index"] == 0)
        resp = await client.post(f"/deployments/prod/jobs/db/{db0_id}/snapshots")
        assert (await wait_task(client, (await resp.json())["task_id"]))["state"] == "done"

        listing = await (await client.get("/deployments/prod/snapshots")).json()
        assert len(listing) == 6
        assert [r["cursor"] for r in listing] == sorted(r["cursor"] for r in listing)  # newest last
        one = await (await client.get("/deployments/prod/jobs/db/1/snapshots")).json()
        assert len(one) == 4 and {r["index"] for r in one} == {1}

        # Paging with ?limit=&after=
        page1 = await (await client.get("/deployments/prod/snapshots", params={"limit": 4})).json()
        page2 = await (await client.get("/deployments/prod/snapshots",
                                        params={"limit": 4, "after": page1[-1]["cursor"]})).json()
        assert [r["snapshot_cid"] for r in page1 + page2] == [r["snapshot_cid"] for r in listing]

        # Delete one by CID.
        victim = listing[0]["snapshot_cid"]
        resp = await client.delete(f"/deployments/prod/snapshots/{victim}")
        assert resp.status == 202
        task = await wait_task(client, (await resp.json())["task_id"])
        assert task["state"] == "done" and victim in task["result"]
        assert not cpi.has_snapshot(victim)
        resp = await client.delete(f"/deployments/prod/snapshots/{victim}")
        assert resp.status == 404 and (await resp.json())["code"] == "snapshot_not_found"

        # Task events: the task's own steps in order.
        events = await (await client.get(f"/tasks/{task['id']}/events")).json()
        types = [e["type"] for e in events]
        # The snapshot's steps in order, and the task's; the task's Started is written by
        # the task-progress follower (decision 39), so it may come after a fast deletion.
        assert sorted(types) == sorted(["Task.Queued", "Snapshot.DeletionRequested", "Snapshot.CpiCallStarted",
                                        "Task.Started", "Snapshot.Deleted", "Task.OperationFinished",
                                        "Task.Finished"]), types
        snapshot_steps = [t for t in types if t.startswith("Snapshot.")]
        task_steps = [t for t in types if t.startswith("Task.")]
        assert snapshot_steps == ["Snapshot.DeletionRequested", "Snapshot.CpiCallStarted", "Snapshot.Deleted"]
        assert task_steps == ["Task.Queued", "Task.Started", "Task.OperationFinished", "Task.Finished"]
        assert types.index("Snapshot.Deleted") < types.index("Task.OperationFinished"), types
        assert [e["position"] for e in events] == sorted(e["position"] for e in events)

        # Delete all.
        resp = await client.delete("/deployments/prod/snapshots")
        task = await wait_task(client, (await resp.json())["task_id"])
        assert task["state"] == "done"
        assert await (await client.get("/deployments/prod/snapshots")).json() == []
        assert not [p for p in (config.data_dir / "snapshots").iterdir() if not p.name.startswith(".")]

        tasks = await (await client.get("/tasks", params={"deployment": "prod"})).json()
        assert len(tasks) == 5 and all(t["state"] == "done" for t in tasks)
        assert tasks[0]["description"] == "delete deployment snapshots"  # newest first


async def test_deployment_inventory_lifecycle(tmp_path: Path, store_url: str) -> None:
    config = make_config(tmp_path, store_url, enable_snapshots=True)
    make_disk(config, "d1")
    make_disk(config, "d2")
    async with api_client(config) as client:
        spec = {"instances": [{"job": "db", "index": 0, "disks": ["d1"]}]}
        first = await (await client.put("/deployments/app", json=spec)).json()
        task = await wait_task(client, (await (await client.post("/deployments/app/snapshots")).json())["task_id"])
        assert task["state"] == "done"

        # Replace: d1 leaves (detached), d2 arrives; the instance keeps its id.
        spec = {"instances": [{"job": "db", "index": 0, "disks": ["d2"]}]}
        second = await (await client.put("/deployments/app", json=spec)).json()
        assert second["instances"][0]["id"] == first["instances"][0]["id"]
        listing = await (await client.get("/deployments/app/snapshots")).json()
        assert [r["disk_cid"] for r in listing] == ["d1"]  # detached disks' snapshots stay listed

        # Deleting the deployment keeps its snapshots listed (BOSH would orphan them).
        assert (await client.delete("/deployments/app")).status == 200
        assert (await client.get("/deployments/app")).status == 404
        listing = await (await client.get("/deployments/app/snapshots")).json()
        assert [r["disk_cid"] for r in listing] == ["d1"]
        resp = await client.post("/deployments/app/snapshots")
        assert resp.status == 404 and (await resp.json())["field"] == "deployment"
        # ...and they can still be deleted.
        task = await wait_task(client, (await (await client.delete("/deployments/app/snapshots")).json())["task_id"])
        assert task["state"] == "done"

        names = [d["name"] for d in await (await client.get("/deployments")).json()]
        assert "app" not in names
