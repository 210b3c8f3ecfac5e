"""A hung CPI call holds up only its own disk (issue 16 item 2).

A real `snapledger serve` with two CPIs: an external CPI executable whose
`snapshot_disk` hangs, and the local CPI. Snapshots of other deployments and
CPIs go on while the hung call runs, and the worker's recorded log position
stays before the unfinished request (a crash replays it, never skips it)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from datetime import datetime
from pathlib import Path

from support.fake_cpi_helpers import add_disk, make_fake_cpi
from support.process import Server


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def kill_pids(*files: Path) -> None:
    for file in files:
        try:
            os.kill(int(file.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def test_a_hung_cpi_call_does_not_hold_up_other_snapshots(tmp_path: Path) -> None:
    executable, state = make_fake_cpi(tmp_path, {"snapshot_disk": {"mode": "hang"}})
    cloud_disk = add_disk(state)
    config = tmp_path / "snapledger.yml"
    config.write_text(json.dumps({"cpis": {"aws": {"type": "external", "executable": str(executable),
                                                   "timeout": 120},
                                           "local": {"type": "local"}},
                                  "default_cpi": "local"}))
    data_dir = tmp_path / "data"
    for disk in ("disk-a", "disk-b"):
        (data_dir / "disks" / disk).mkdir(parents=True)
        (data_dir / "disks" / disk / "f").write_text(disk)
    database = tmp_path / "ledger.sqlite"
    server = Server(data_dir, f"sqlite:///{database}", env={"SNAPLEDGER_CONFIG": str(config)}).start()
    try:
        server.api("PUT", "/deployments/cloud", {"cpi": "aws", "instances": [
            {"job": "db", "index": 0, "disks": [cloud_disk]}]})
        server.api("PUT", "/deployments/local", {"instances": [
            {"job": "db", "index": 0, "disks": ["disk-a"]}, {"job": "db", "index": 1, "disks": ["disk-b"]}]})
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        hung = server.api("POST", "/deployments/cloud/snapshots")["task_id"]
        wait_for(state / "hang_parent.pid")  # the external call is running, and will not return
        for _ in range(3):  # one after the other, each behind the hung call in the log
            task = server.wait_task(server.api("POST", "/deployments/local/snapshots")["task_id"], timeout=60)
            assert task["state"] == "done", task
        assert server.api("GET", f"/tasks/{hung}")["state"] == "processing"
        assert len(server.api("GET", "/deployments/local/snapshots")) == 6
        # The worker's recorded position is before the hung request: a crash now replays it.
        with sqlite3.connect(database) as db:
            (position,) = db.execute("SELECT position FROM projection_tracking WHERE name = 'worker'").fetchone()
            (requested,) = db.execute(
                "SELECT rowid FROM stored_events WHERE topic LIKE '%Snapshot.Requested' "
                "AND originator_id NOT IN (SELECT originator_id FROM stored_events "
                "WHERE topic LIKE '%Snapshot.Taken')").fetchone()
        assert position < requested
    finally:
        server.kill()
        kill_pids(state / "hang_child.pid", state / "hang_parent.pid")


def test_a_snapshot_queued_behind_a_hung_call_never_stops_the_heartbeat(tmp_path: Path) -> None:
    """A second snapshot of the hung call's disk waits in that disk's queue. Once
    it is older than five leases the recovery sweep used to run it itself, and so
    waited for the disk with it: the worker stopped beating, and another worker
    would have recorded this live worker's calls in doubt (issue 16, chaos run)."""
    lease_s = 1.0
    executable, state = make_fake_cpi(tmp_path, {"snapshot_disk": {"mode": "hang"}})
    cloud_disk = add_disk(state)
    config = tmp_path / "snapledger.yml"
    config.write_text(json.dumps({"cpis": {"aws": {"type": "external", "executable": str(executable),
                                                   "timeout": 120}}, "default_cpi": "aws"}))
    data_dir = tmp_path / "data"
    database = tmp_path / "ledger.sqlite"
    server = Server(data_dir, f"sqlite:///{database}", env={"SNAPLEDGER_CONFIG": str(config),
                                                           "SNAPLEDGER_WORKER_LEASE": str(lease_s)}).start()
    try:
        server.api("PUT", "/deployments/cloud", {"instances": [{"job": "db", "index": 0, "disks": [cloud_disk]}]})
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        server.api("POST", "/deployments/cloud/snapshots")
        wait_for(state / "hang_parent.pid")
        queued = server.api("POST", "/deployments/cloud/snapshots")["task_id"]
        time.sleep(5 * lease_s + 5)  # the queued request is older than the sweep's five leases
        ages = []
        for _ in range(5):
            with sqlite3.connect(database) as db:
                (beat_at,) = db.execute("SELECT max(beat_at) FROM worker_heartbeats").fetchone()
            ages.append(time.time() - datetime.fromisoformat(beat_at).timestamp())
            time.sleep(0.2)
        assert min(ages) < 2 * lease_s, ages  # a beat every third of a lease: late under load, never stopped
        assert server.api("GET", f"/tasks/{queued}")["state"] == "queued"  # still waiting for its disk
        assert server.api("GET", "/tasks?in_doubt=true") == []
    finally:
        server.kill()
        kill_pids(state / "hang_child.pid", state / "hang_parent.pid")
