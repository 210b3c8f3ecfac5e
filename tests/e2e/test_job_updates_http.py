"""Job updates over real HTTP with real drain scripts, the worker and projector roles running,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

from support.runtime import api_client, make_config, make_disk, wait_task

DEPLOYMENT = {"instances": [
    {"job": "db", "index": 0, "disks": ["disk-db-0"]},
    {"job": "db", "index": 1, "disks": ["disk-db-1"], "jobs": ["db", "backup"]},
]}


def script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def setup(tmp_path: Path, store_url: str, **overrides: Any) -> Any:
    jobs = tmp_path / "jobs"
    config = make_config(tmp_path, store_url, jobs_dir=jobs, drain_wait_scale=0.01, **overrides)
    for disk in ("disk-db-0", "disk-db-1"):
        make_disk(config, disk)
    return config, jobs


async def prepare(client: Any, snapshots: bool = True) -> None:
    assert (await client.put("/deployments/prod", json=DEPLOYMENT)).status == 200
    await client.put("/config/snapshots", json={"enable_snapshots": snapshots})


async def follow(client: Any, task_id: str) -> tuple[dict[str, Any], list[list[str]]]:
    """What a deploy tool does: long-poll, note each instance's state, until the task ends."""
    seen: list[list[str]] = []
    after = 0
    while True:
        resp = await client.get(f"/tasks/{task_id}", params={"wait": "10", "after": str(after)})
        assert resp.status == 200, await resp.text()
        task = await resp.json()
        after = task["last_event"]
        seen.append([i["state"] for i in task.get("instances", [])])
        if task["state"] in ("done", "error"):
            return task, seen


def position(events: list[dict[str, Any]], kind: str, **data: Any) -> int:
    return next(e["position"] for e in events
                if e["type"] == kind and all(e["data"].get(k) == v for k, v in data.items()))


async def test_drain_stop_clean_snapshot_ready_in_order(tmp_path: Path, store_url: str) -> None:
    config, jobs = setup(tmp_path, store_url)
    marks = tmp_path / "marks"
    marks.mkdir()
    # Dynamic drain: "ask me again in 1 s" once per instance, then "wait 2 s".
    script(jobs / "db" / "bin" / "drain", f"""
f={marks}/$(echo $SNAPLEDGER_INSTANCE | tr / -).calls
echo "$*" >> $f
[ $(wc -l < $f) -lt 2 ] && echo -1 || echo 2
""")
    script(jobs / "backup" / "bin" / "drain", "echo 0\n")
    script(jobs / "db" / "bin" / "stop", f"touch {marks}/stopped-$(echo $SNAPLEDGER_INSTANCE | tr / -)\n")
    async with api_client(config) as client:
        await prepare(client)
        assert await (await client.get("/deployments/prod/snapshots")).json() == []

        resp = await client.post("/deployments/prod/jobs/db/updates",
                                 json={"drain_type": "update", "next_state": {"persistent_disk": 2048}})
        assert resp.status == 202, await resp.text()
        task_id = (await resp.json())["task_id"]
        task, seen = await follow(client, task_id)
        assert task["state"] == "done", task
        assert task["kind"] == "update_job" and task["description"] == "update job db"
        assert [i["instance"] for i in task["instances"]] == ["db/0", "db/1"]
        assert all(i["ready"] for i in task["instances"]), task["instances"]
        # A deploy tool never sees instance 1 started before instance 0 was ready.
        for states in seen:
            if states and states[1] != "waiting":
                assert states[0] == "ready", seen

        events = await (await client.get(f"/tasks/{task_id}/events")).json()
        assert [e["position"] for e in events] == sorted(e["position"] for e in events)
        listing = await (await client.get("/deployments/prod/snapshots")).json()
        assert sorted(r["disk_cid"] for r in listing) == ["disk-db-0", "disk-db-1"]
        assert all(r["clean"] is True and r["trigger"] == "job_update" for r in listing)
        for index, row in enumerate(sorted(listing, key=lambda r: r["disk_cid"])):
            inst = f"db/{index}"
            steps = [position(events, "JobUpdate.DrainStarted", instance=inst),
                     position(events, "JobUpdate.DrainCompleted", instance=inst),
                     position(events, "JobUpdate.JobStopped", instance=inst),
                     position(events, "JobUpdate.CleanSnapshotsRequested", instance=inst),
                     position(events, "Snapshot.Taken", snapshot_cid=row["snapshot_cid"]),
                     position(events, "JobUpdate.ReadyForUpdate", instance=inst)]
            assert steps == sorted(steps), (inst, steps)
            assert row["cursor"] > position(events, "JobUpdate.JobStopped", instance=inst)
        assert position(events, "JobUpdate.ReadyForUpdate", instance="db/0") < \
            position(events, "JobUpdate.DrainStarted", instance="db/1")

        drained = next(e for e in events if e["type"] == "JobUpdate.DrainCompleted" and e["data"]["instance"] == "db/1")
        by_job = {j["job"]: j for j in drained["data"]["result"]["jobs"]}
        assert [c["value"] for c in by_job["db"]["calls"]] == [-1, 2]
        assert [c["argv"][-2:] for c in by_job["db"]["calls"]] == [["job_changed", "hash_changed"],
                                                                   ["job_check_status", "hash_unchanged"]]
        assert [c["value"] for c in by_job["backup"]["calls"]] == [0]
        assert (marks / "stopped-db-0").exists() and (marks / "stopped-db-1").exists()

        # The listing in the CLI's shape distinguishes clean from dirty snapshots.
        resp = await client.post("/deployments/prod/jobs/db/0/snapshots")
        assert (await wait_task(client, (await resp.json())["task_id"]))["state"] == "done"
        listing = await (await client.get("/deployments/prod/snapshots")).json()
        assert sorted((r["clean"], r["trigger"]) for r in listing) == [
            (False, "manual"), (True, "job_update"), (True, "job_update")]


async def test_a_drain_that_never_finishes_is_killed_and_the_instance_never_ready(
        tmp_path: Path, store_url: str) -> None:
    config, jobs = setup(tmp_path, store_url, drain_timeout_s=1.0)
    script(jobs / "db" / "bin" / "drain", "echo 0\n")
    script(jobs / "backup" / "bin" / "drain", "echo draining... >&2\nsleep 300\necho 0\n")
    async with api_client(config) as client:
        await prepare(client)
        resp = await client.post("/deployments/prod/jobs/db/updates", json={"max_in_flight": 2})
        task, _ = await follow(client, (await resp.json())["task_id"])
        assert task["state"] == "error"
        assert "db/1: DrainTimeout: job backup" in task["result"]
        assert [(i["instance"], i["state"], i["ready"]) for i in task["instances"]] == [
            ("db/0", "ready", True), ("db/1", "failed", False)]
        events = await (await client.get(f"/tasks/{task['id']}/events")).json()
        failed = next(e for e in events if e["type"] == "JobUpdate.DrainFailed")
        assert failed["data"]["result"]["jobs"][1]["calls"][0]["stderr"] == "draining...\n"
        assert not any(e["type"] == "JobUpdate.JobStopped" and e["data"]["instance"] == "db/1" for e in events)
        listing = await (await client.get("/deployments/prod/snapshots")).json()
        assert [r["disk_cid"] for r in listing] == ["disk-db-0"]  # the half-drained instance: no snapshot


async def test_disabled_snapshots_skip_the_step_and_the_instance_is_ready(tmp_path: Path, store_url: str) -> None:
    config, jobs = setup(tmp_path, store_url)
    script(jobs / "db" / "bin" / "drain", "echo 0\n")
    async with api_client(config) as client:
        await prepare(client, snapshots=False)
        resp = await client.post("/deployments/prod/jobs/db/0/updates", json={"drain_type": "shutdown"})
        assert resp.status == 202
        task, _ = await follow(client, (await resp.json())["task_id"])
        assert task["state"] == "done" and task["instances"][0]["ready"] is True
        assert task["description"] == "update instance db/0"
        events = await (await client.get(f"/tasks/{task['id']}/events")).json()
        types = [e["type"] for e in events]
        assert types == ["Task.Queued", "JobUpdate.Announced", "JobUpdate.DrainStarted", "Task.Started",
                         "JobUpdate.DrainCompleted", "JobUpdate.JobStopped", "JobUpdate.SnapshotSkipped",
                         "JobUpdate.ReadyForUpdate", "Task.OperationFinished", "Task.Finished"]
        assert await (await client.get("/deployments/prod/snapshots")).json() == []


async def test_long_poll_returns_on_the_next_change(tmp_path: Path, sqlite_url: str) -> None:
    config, jobs = setup(tmp_path, sqlite_url)
    go = tmp_path / "go"
    script(jobs / "db" / "bin" / "drain", f"while [ ! -e {go} ]; do sleep 0.05; done\necho 0\n")
    try:
        async with api_client(config) as client:
            await prepare(client)
            resp = await client.post("/deployments/prod/jobs/db/0/updates")  # no body: the defaults
            task_id = (await resp.json())["task_id"]
            while True:  # until the drain is running (blocked on `go`)
                task = await (await client.get(f"/tasks/{task_id}", params={"wait": "5", "after": "0"})).json()
                if task["instances"] and task["instances"][0]["state"] == "draining":
                    break
            # Views are read one after another: read once more for the position of the state seen.
            task = await (await client.get(f"/tasks/{task_id}")).json()
            # Nothing changes: the poll answers at its deadline with the same state.
            same = await (await client.get(f"/tasks/{task_id}", params={"wait": "0.3"})).json()
            assert same["last_event"] == task["last_event"] and same["instances"][0]["state"] == "draining"
            poll = asyncio.ensure_future(client.get(f"/tasks/{task_id}", params={
                "wait": "30", "after": str(task["last_event"])}))
            await asyncio.sleep(0.2)
            go.touch()
            changed = await (await poll).json()
            assert changed["last_event"] > task["last_event"]
            assert changed["instances"][0]["state"] != "draining"
    finally:
        go.touch()  # never leave the drain script running, whatever happened


async def test_bad_requests_name_the_field(tmp_path: Path, sqlite_url: str) -> None:
    config, _ = setup(tmp_path, sqlite_url)
    async with api_client(config) as client:
        await prepare(client)
        cases = [
            ({"drain_type": "reboot"}, "drain_type"),
            ({"max_in_flight": 0}, "max_in_flight"),
            ({"max_in_flight": "2"}, "max_in_flight"),
            ({"next_state": {"persistent_disk": "big"}}, "next_state"),
            ({"next_state": {}}, "next_state"),
            ({"drain": "update"}, "drain"),
        ]
        for payload, field in cases:
            resp = await client.post("/deployments/prod/jobs/db/updates", json=payload)
            assert resp.status == 400, payload
            assert (await resp.json())["field"] == field, payload
        # With an Idempotency-Key (its middleware reads the body first) the body still counts.
        resp = await client.post("/deployments/prod/jobs/db/updates", json={"drain_type": "reboot"},
                                 headers={"Idempotency-Key": "bad-body"})
        assert resp.status == 400 and (await resp.json())["field"] == "drain_type"
        resp = await client.post("/deployments/prod/jobs/db/9/updates", json={})
        assert resp.status == 404 and (await resp.json())["code"] == "instance_not_found"
        resp = await client.post("/deployments/nope/jobs/db/updates", json={})
        assert resp.status == 404 and (await resp.json())["code"] == "deployment_not_found"
        resp = await client.post("/deployments/prod/jobs/web/updates", json={})
        assert resp.status == 404
        task_id = (await (await client.post("/deployments/prod/jobs/db/0/updates")).json())["task_id"]
        resp = await client.get(f"/tasks/{task_id}", params={"wait": "-1"})
        assert resp.status == 400 and (await resp.json())["field"] == "wait"


async def test_announcing_needs_the_deployments_admin(tmp_path: Path, sqlite_url: str) -> None:
    from support.runtime import auth_as

    config, jobs = setup(tmp_path, sqlite_url)
    script(jobs / "db" / "bin" / "drain", "echo 0\n")
    async with api_client(config) as client:
        await prepare(client)
        resp = await client.post("/deployments/prod/jobs/db/0/updates", json={}, headers=auth_as("reader"))
        assert resp.status == 403
        resp = await client.post("/deployments/prod/jobs/db/updates", json={}, headers=auth_as("prod-admin"))
        assert resp.status == 202
        task_id = (await resp.json())["task_id"]
        resp = await client.get(f"/tasks/{task_id}", headers=auth_as("reader"))
        assert resp.status == 200
        task = await (await client.get(f"/tasks/{task_id}", params={"wait": "10"},
                                       headers=auth_as("prod-admin"))).json()
        assert task["user"] == "prod-admin"
