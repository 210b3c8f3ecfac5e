"""Restore over real HTTP with the worker and projector roles running, real drain
and stop scripts and the local CPI (directories as disks), on SQLite and PostgreSQL.
Content is compared byte for byte: the sha256 of every file."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from support.fake_cpi_helpers import add_disk, make_fake_cpi
from support.runtime import api_client, auth_as, make_config, make_disk, wait_for, wait_task

DEPLOYMENT = {"instances": [
    {"job": "db", "index": 0, "disks": ["disk-db-0"], "jobs": ["db", "backup"]},
    {"job": "db", "index": 1, "disks": ["disk-db-1"]},
]}
V1 = {"data.txt": b"orders v1\n", "blob.bin": bytes(range(256)) * 64, "sub/dir/deep.txt": b"deep v1"}


def script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path (directories included as markers)."""
    sums = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            sums[os.path.relpath(os.path.join(dirpath, name), root) + "/"] = "dir"
        for name in filenames:
            path = Path(dirpath) / name
            sums[os.path.relpath(path, root)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def write(disk: Path, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        (disk / rel).parent.mkdir(parents=True, exist_ok=True)
        (disk / rel).write_bytes(content)


def setup(tmp_path: Path, store_url: str, **overrides: Any) -> tuple[Any, Path, Path]:
    jobs = tmp_path / "jobs"
    config = make_config(tmp_path, store_url, jobs_dir=jobs, drain_wait_scale=0.01, **overrides)
    disk = make_disk(config, "disk-db-0", {})
    write(disk, V1)
    make_disk(config, "disk-db-1")
    marks = tmp_path / "marks"
    marks.mkdir()
    # The drain records what it was told and what the disk held when it ran.
    script(jobs / "db" / "bin" / "drain", f"""
echo "$*|${{BOSH_JOB_NEXT_STATE-unset}}|$(sha256sum {disk}/data.txt | cut -c1-64)" >> {marks}/drain
echo 0
""")
    script(jobs / "db" / "bin" / "stop", f"touch {marks}/stopped-db\n")
    return config, disk, marks


async def prepare(client: Any) -> None:
    assert (await client.put("/deployments/prod", json=DEPLOYMENT)).status == 200
    assert (await client.put("/config/snapshots", json={"enable_snapshots": True})).status == 200


async def snapshot_db0(client: Any) -> str:
    resp = await client.post("/deployments/prod/jobs/db/0/snapshots")
    task = await wait_task(client, (await resp.json())["task_id"])
    assert task["state"] == "done", task
    rows = await (await client.get("/deployments/prod/jobs/db/0/snapshots")).json()
    return rows[-1]["snapshot_cid"]


async def restore(client: Any, cid: str, body: Any = None, **kwargs: Any) -> Any:
    return await client.post(f"/deployments/prod/snapshots/{cid}/restore", json=body, **kwargs)


def snapshot_content(config: Any, cid: str) -> Path:
    return config.data_dir / "snapshots" / cid / "data"


async def test_restore_in_place_drains_stops_takes_a_safety_snapshot_then_restores(
        tmp_path: Path, store_url: str) -> None:
    config, disk, marks = setup(tmp_path, store_url)
    async with api_client(config) as client:
        await prepare(client)
        v1 = checksums(disk)
        cid = await snapshot_db0(client)
        assert checksums(snapshot_content(config, cid)) == v1

        # The disk moves on: a file changed, one removed, one added, a directory added.
        (disk / "data.txt").write_bytes(b"orders v2, not yet backed up\n")
        (disk / "sub" / "dir" / "deep.txt").unlink()
        write(disk, {"new.log": os.urandom(5000), "later/x.txt": b"x"})
        v2 = checksums(disk)
        assert v2 != v1

        resp = await restore(client, cid)
        assert resp.status == 202, await resp.text()
        task = await wait_task(client, (await resp.json())["task_id"])
        assert task["state"] == "done", task
        assert task["kind"] == "restore" and task["description"] == f"restore snapshot {cid} into disk disk-db-0"
        assert "stay stopped" in task["result"] and f"snapshot {cid} restored into disk disk-db-0" in task["result"]

        # Byte for byte the snapshot's content; nothing of v2 left over.
        assert checksums(disk) == v1
        # The safety snapshot: an ordinary, listed snapshot holding exactly the pre-restore content.
        restore_info = task["restore"]
        safety = restore_info["safety_snapshot_cid"]
        assert restore_info["state"] == "restored" and restore_info["disk_cid"] == "disk-db-0"
        assert restore_info["new_disk"] is False and restore_info["instance"] == "db/0"
        listing = await (await client.get("/deployments/prod/snapshots")).json()
        row = next(r for r in listing if r["snapshot_cid"] == safety)
        assert (row["trigger"], row["clean"], row["disk_cid"]) == ("restore_safety", True, "disk-db-0")
        assert checksums(snapshot_content(config, safety)) == v2
        assert checksums(snapshot_content(config, cid)) == v1  # the source is untouched

        # The drain ran before the restore: it saw v2 on the disk, was told job_shutdown, and the
        # next state is the recorded one (the disk stays; `{}`: this inventory records no size).
        drained = (marks / "drain").read_text().splitlines()
        assert drained == [f"job_shutdown hash_unchanged|{{}}|{v2['data.txt']}"]
        assert (marks / "stopped-db").exists()

        # Every step an event, in order, each following from the one before.
        events = await (await client.get("/events", params={"task_id": task["id"]})).json()
        kinds = [e["type"] for e in events if e["type"].startswith("Restore.")]
        assert kinds == ["Restore.Requested", "Restore.DrainStarted", "Restore.DrainCompleted", "Restore.JobStopped",
                         "Restore.SafetySnapshotRequested", "Restore.SafetySnapshotTaken",
                         "Restore.CpiCallStarted", "Restore.Restored"]
        at = {e["type"]: e for e in events}
        assert at["Restore.JobStopped"]["position"] < at["Snapshot.Taken"]["position"] \
            < at["Restore.CpiCallStarted"]["position"]
        assert at["Restore.Restored"]["caused_by"] == at["Restore.CpiCallStarted"]["event_id"]
        assert at["Restore.SafetySnapshotTaken"]["caused_by"] == at["Snapshot.Taken"]["event_id"]
        assert at["Restore.DrainStarted"]["caused_by"] == at["Restore.Requested"]["event_id"]
        assert at["Restore.Restored"]["data"]["jobs_left_stopped"] == ["db", "backup"]
        assert {e["actor"] for e in events} == {"admin"}

        # The audit finds the restore by the snapshot restored and by the disk written.
        by_cid = await (await client.get("/events", params={"snapshot_cid": cid})).json()
        assert {"Restore.Requested", "Restore.Restored"} <= {e["type"] for e in by_cid}
        by_disk = await (await client.get("/events", params={"disk_cid": "disk-db-0", "type": "Restore"})).json()
        assert [e["type"] for e in by_disk] == kinds
        task_events = await (await client.get(f"/tasks/{task['id']}/events")).json()
        assert [e["type"] for e in task_events if e["type"].startswith("Restore.")] == kinds
        # The task's CPI calls: the safety snapshot, then the restore.
        log = await (await client.get(f"/tasks/{task['id']}/cpi-log")).json()
        assert [(e["method"], e["cpi"], e["error"]) for e in log] == [("snapshot_disk", "local", None),
                                                                      ("restore_snapshot", "local", None)]
        assert log[1]["request_id"] and log[1]["attempt"] == 1
        metrics = await (await client.get("/metrics")).text()
        assert 'method="restore_snapshot"' in metrics


async def test_restore_into_a_new_disk_touches_nothing_running(tmp_path: Path, store_url: str) -> None:
    config, disk, marks = setup(tmp_path, store_url)
    async with api_client(config) as client:
        await prepare(client)
        v1 = checksums(disk)
        cid = await snapshot_db0(client)
        write(disk, {"data.txt": b"v2"})
        v2 = checksums(disk)

        headers = {"Idempotency-Key": "restore-1"}
        resp = await restore(client, cid, {"to_new_disk": "disk-db-0-copy"}, headers=headers)
        assert resp.status == 202, await resp.text()
        task_id = (await resp.json())["task_id"]
        again = await restore(client, cid, {"to_new_disk": "disk-db-0-copy"}, headers=headers)
        assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
        assert (await again.json())["task_id"] == task_id
        task = await wait_task(client, task_id)
        assert task["state"] == "done", task
        assert task["result"] == f"snapshot {cid} restored into new disk disk-db-0-copy"
        assert task["restore"]["new_disk"] is True and task["restore"]["safety_snapshot_cid"] is None

        new = config.data_dir / "disks" / "disk-db-0-copy"
        assert checksums(new) == v1
        assert checksums(disk) == v2  # the live disk is untouched
        assert not (marks / "drain").exists() and not (marks / "stopped-db").exists()
        listing = await (await client.get("/deployments/prod/snapshots")).json()
        assert [r["snapshot_cid"] for r in listing] == [cid]  # no safety snapshot needed
        events = await (await client.get(f"/tasks/{task_id}/events")).json()
        assert [e["type"] for e in events if e["type"].startswith(("Restore.", "Deployment."))] == [
            "Restore.Requested", "Restore.CpiCallStarted", "Restore.Restored", "Deployment.DiskRestored"]
        dep = await (await client.get("/deployments/prod")).json()
        assert dep["restored_disks"] == [{"disk_cid": "disk-db-0-copy", "snapshot_cid": cid, "cpi": "local",
                                          "task_id": task_id, "attached": False}]

        # The new disk now exists: another restore into it is refused, as into any existing disk.
        for name in ("disk-db-0-copy", "disk-db-1"):
            resp = await restore(client, cid, {"to_new_disk": name})
            assert resp.status == 409, name
            error = await resp.json()
            assert error["field"] == "to_new_disk" and error["code"] == "disk_exists" and name in error["error"]
        (config.data_dir / "disks" / "stray").mkdir()  # a directory the inventory does not know
        resp = await restore(client, cid, {"to_new_disk": "stray"})
        assert resp.status == 409 and (await resp.json())["field"] == "to_new_disk"
        for bad in ("../escape", ".hidden", "a/b", "", "x" * 129):
            resp = await restore(client, cid, {"to_new_disk": bad})
            assert resp.status == 400, bad
            assert (await resp.json())["field"] == "to_new_disk", bad
        resp = await restore(client, cid, {"to_disk": "x"})
        assert resp.status == 400 and (await resp.json())["field"] == "to_disk"
        assert not (config.data_dir.parent / "escape").exists()


async def test_refusals_name_the_field_and_touch_nothing(tmp_path: Path, sqlite_url: str) -> None:
    config, disk, marks = setup(tmp_path, sqlite_url)
    async with api_client(config) as client:
        await prepare(client)
        cid = await snapshot_db0(client)
        make_disk(config, "disk-other-0")  # its own disk: a disk belongs to one deployment at a time
        other = {"instances": [{"job": "db", "index": 0, "disks": ["disk-other-0"]}]}
        assert (await client.put("/deployments/other", json=other)).status == 200
        resp = await client.post("/deployments/other/snapshots")
        assert (await wait_task(client, (await resp.json())["task_id"]))["state"] == "done"
        other_cid = (await (await client.get("/deployments/other/snapshots")).json())[0]["snapshot_cid"]
        before = checksums(config.data_dir / "disks")

        resp = await restore(client, "snap-nope")
        assert resp.status == 404
        assert await resp.json() == {"error": "snapshot 'snap-nope' not found", "code": "snapshot_not_found",
                                     "field": "cid"}
        # Another deployment's snapshot: never restored onto this deployment's disks (nor onto its own from here).
        for body in (None, {"to_new_disk": "stolen"}):
            resp = await restore(client, other_cid, body)
            assert resp.status == 404
            error = await resp.json()
            assert error["field"] == "cid" and "not a snapshot of deployment 'prod'" in error["error"]
        resp = await client.post(f"/deployments/nope/snapshots/{cid}/restore")
        assert resp.status == 404 and (await resp.json())["field"] == "deployment"
        resp = await restore(client, cid, headers=auth_as("reader"))
        assert resp.status == 403

        # Snapshots disabled: an in-place restore would have no safety snapshot.
        await client.put("/config/snapshots", json={"enable_snapshots": False})
        resp = await restore(client, cid)
        assert resp.status == 409
        error = await resp.json()
        assert error["code"] == "snapshots_disabled" and error["field"] == "enable_snapshots"
        await client.put("/config/snapshots", json={"enable_snapshots": True})

        # The snapshot's disk left the inventory: in place is refused, a new disk is the way.
        moved = {"instances": [{"job": "db", "index": 0, "disks": ["disk-db-9"]}, DEPLOYMENT["instances"][1]]}
        assert (await client.put("/deployments/prod", json=moved)).status == 200
        resp = await restore(client, cid)
        assert resp.status == 409 and (await resp.json())["code"] == "disk_not_in_inventory"
        assert (await client.put("/deployments/prod", json=DEPLOYMENT)).status == 200

        # A deleted snapshot.
        resp = await client.delete(f"/deployments/prod/snapshots/{cid}")
        assert (await wait_task(client, (await resp.json())["task_id"]))["state"] == "done"
        resp = await restore(client, cid, {"to_new_disk": "from-deleted"})
        assert resp.status == 409
        error = await resp.json()
        assert error["code"] == "snapshot_not_restorable" and error["field"] == "cid"
        assert "was deleted" in error["error"]

        assert checksums(config.data_dir / "disks") == before
        assert not (marks / "drain").exists()
        tasks = await (await client.get("/tasks", params={"deployment": "prod"})).json()
        assert not [t for t in tasks if t["kind"] == "restore"]
        # Each refusal is on record, with the owner of a foreign snapshot for the auditors.
        # (the audit view is a projection: wait until it has caught up with the last refusal)
        async def all_refusals() -> list[dict[str, Any]] | None:
            found = await (await client.get("/events", params={"type": "Refusal"})).json()
            return found if len(found) >= 6 else None

        refusals = await wait_for(all_refusals)
        assert len(refusals) == 6
        foreign = [r for r in refusals if r["data"]["details"].get("owner")]
        assert len(foreign) == 2 and foreign[0]["data"]["details"]["owner"] == "other"


async def test_a_failed_drain_fails_the_restore_before_the_disk_is_touched(tmp_path: Path, store_url: str) -> None:
    config, disk, marks = setup(tmp_path, store_url)
    script(config.jobs_dir / "backup" / "bin" / "drain", "echo 'replica behind' >&2\nexit 3\n")
    async with api_client(config) as client:
        await prepare(client)
        cid = await snapshot_db0(client)
        write(disk, {"data.txt": b"v2"})
        v2 = checksums(disk)
        resp = await restore(client, cid)
        task = await wait_task(client, (await resp.json())["task_id"])
        assert task["state"] == "error"
        assert "DrainScriptFailed: job backup" in task["result"] and "the disk was not touched" in task["result"]
        assert task["restore"]["state"] == "failed"
        assert checksums(disk) == v2
        assert not (marks / "stopped-db").exists()
        events = await (await client.get(f"/tasks/{task['id']}/events")).json()
        assert [e["type"] for e in events if e["type"].startswith("Restore.")] == [
            "Restore.Requested", "Restore.DrainStarted", "Restore.DrainFailed"]
        listing = await (await client.get("/deployments/prod/snapshots")).json()
        assert [r["snapshot_cid"] for r in listing] == [cid]


async def test_an_external_cpi_is_refused_naming_the_cpi(tmp_path: Path, sqlite_url: str) -> None:
    executable, state = make_fake_cpi(tmp_path)
    config = make_config(tmp_path, sqlite_url, cpis={"aws": {"type": "external", "executable": str(executable)},
                                                     "local": {"type": "local"}}, default_cpi="local")
    disk = add_disk(state)
    async with api_client(config) as client:
        body = {"cpi": "aws", "instances": [{"job": "db", "index": 0, "disks": [disk]}]}
        assert (await client.put("/deployments/prod", json=body)).status == 200
        await client.put("/config/snapshots", json={"enable_snapshots": True})
        resp = await client.post("/deployments/prod/snapshots")
        assert (await wait_task(client, (await resp.json())["task_id"]))["state"] == "done"
        cid = (await (await client.get("/deployments/prod/snapshots")).json())[0]["snapshot_cid"]
        for payload in (None, {"to_new_disk": "restored"}):
            resp = await restore(client, cid, payload)
            assert resp.status == 409
            error = await resp.json()
            assert error["code"] == "cpi_cannot_restore" and error["field"] == "cpi"
            assert error["error"].startswith("CPI 'aws' cannot restore: it has no restore capability, and BOSH's CPI "
                                             "protocol has no restore method")


async def test_a_self_snapshot_is_restored_into_a_new_disk_only(tmp_path: Path, sqlite_url: str) -> None:
    config, _, _ = setup(tmp_path, sqlite_url)
    (config.data_dir / "notes.txt").write_text("host notes")
    async with api_client(config) as client:
        await prepare(client)
        resp = await client.post("/self/snapshots")
        assert (await wait_task(client, (await resp.json())["task_id"]))["state"] == "done"
        cid = (await (await client.get("/deployments/_self/snapshots")).json())[0]["snapshot_cid"]
        resp = await client.post(f"/deployments/_self/snapshots/{cid}/restore")
        assert resp.status == 409 and (await resp.json())["field"] == "to_new_disk"
        resp = await client.post(f"/deployments/_self/snapshots/{cid}/restore", json={"to_new_disk": "host-copy"})
        assert resp.status == 202, await resp.text()
        task = await wait_task(client, (await resp.json())["task_id"])
        assert task["state"] == "done", task
        assert (config.data_dir / "disks" / "host-copy" / "notes.txt").read_text() == "host notes"
