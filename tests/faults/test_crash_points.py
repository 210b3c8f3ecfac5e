"""A worker that dies at each step of a CPI call, restarted: nothing lost,
nothing doubled, nothing left `processing`, and in-doubt calls recorded.

Real processes on real PostgreSQL: `snapledger serve` with the test-only
SNAPLEDGER_CRASH_AT switch dies (os._exit, no clean-up) at the named step;
a second run without it must finish the work."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from support.fake_cpi_helpers import add_disk, make_fake_cpi, read_requests
from support.process import Server

LEASE = "1"  # seconds of worker silence before its calls are in doubt


def wait_exit(server: Server, timeout: float = 20) -> int:
    assert server.proc is not None
    return server.proc.wait(timeout)


def events(server: Server, task_id: str) -> list[str]:
    return [e["type"] for e in server.api("GET", f"/tasks/{task_id}/events")]


def start(data_dir: Path, database: str, port: int | None = None, wait: bool = True, **env: str) -> Server:
    return Server(data_dir, database, port=port, env={"SNAPLEDGER_WORKER_LEASE": LEASE, **env}).start(wait)


@pytest.mark.parametrize("point,expected", [
    # Died after claiming, before calling: the CPI has nothing; retried safely.
    ("call_started", ["Snapshot.CpiCallStarted", "Snapshot.CpiCallInDoubt", "Snapshot.InDoubtRetried",
                      "Snapshot.CpiCallStarted", "Snapshot.Taken"]),
    # Died after the CPI made the snapshot: found by its deterministic CID, not made twice.
    ("cpi_returned", ["Snapshot.CpiCallStarted", "Snapshot.CpiCallInDoubt", "Snapshot.Taken"]),
    # Died after recording the outcome: nothing in doubt.
    ("outcome_saved", ["Snapshot.CpiCallStarted", "Snapshot.Taken"]),
])
def test_local_cpi_worker_dies_at_each_step(tmp_path: Path, pg_url: str, point: str, expected: list[str]) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "disks" / "disk-0").mkdir(parents=True)
    (data_dir / "disks" / "disk-0" / "f").write_text("payload")
    server = start(data_dir, pg_url, SNAPLEDGER_CRASH_AT=point)
    try:
        server.api("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": ["disk-0"]}]})
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        task_id = server.api("POST", "/deployments/prod/snapshots")["task_id"]  # acknowledged
        assert wait_exit(server) == 86  # died at the crash point
        server = start(data_dir, pg_url, port=server.port)
        task = server.wait_task(task_id, timeout=30)
        assert task["state"] == "done", task
        snapshot_events = [t for t in events(server, task_id) if t.startswith("Snapshot.")]
        assert snapshot_events[1:] == expected
        listing = server.api("GET", "/deployments/prod/snapshots")
        assert len(listing) == 1 and listing[0]["state"] == "taken"
        on_disk = [p.name for p in (data_dir / "snapshots").iterdir() if not p.name.startswith(".")]
        assert on_disk == [listing[0]["snapshot_cid"]]  # exactly one, the one the ledger holds
        assert server.api("GET", "/tasks?in_doubt=true") == []
    finally:
        server.kill()


def write_config(tmp_path: Path, executable: Path, **cpi: Any) -> Path:
    import json

    path = tmp_path / "snapledger.yml"
    spec = {"type": "external", "executable": str(executable), **cpi}
    path.write_text(json.dumps({"cpis": {"aws": spec}}))  # JSON is YAML
    return path


@pytest.mark.parametrize("retry_in_doubt", [False, True])
def test_external_cpi_in_doubt_is_marked_for_the_operator_unless_retry_is_opted_in(
        tmp_path: Path, pg_url: str, retry_in_doubt: bool) -> None:
    executable, state = make_fake_cpi(tmp_path)
    disk = add_disk(state)
    config = write_config(tmp_path, executable, retry_in_doubt=retry_in_doubt)
    data_dir = tmp_path / "data"
    server = start(data_dir, pg_url, SNAPLEDGER_CRASH_AT="cpi_returned", SNAPLEDGER_CONFIG=str(config))
    try:
        server.api("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": [disk]}]})
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        task_id = server.api("POST", "/deployments/prod/snapshots")["task_id"]
        assert wait_exit(server) == 86
        server = start(data_dir, pg_url, port=server.port, SNAPLEDGER_CONFIG=str(config))
        task = server.wait_task(task_id, timeout=30)
        calls = [r for r in read_requests(state) if r["method_name"] == "snapshot_disk"]
        listing = server.api("GET", "/deployments/prod/snapshots")
        if retry_in_doubt:
            # Opted in: repeated, and (as the operator accepted) the first cloud snapshot leaked.
            assert task["state"] == "done" and len(calls) == 2
            assert [r["state"] for r in listing] == ["taken"]
            return
        assert len(calls) == 1  # never silently repeated
        assert task["state"] == "error" and "Snapledger::InDoubt" in task["result"]
        assert [r["state"] for r in listing] == ["in_doubt"] and listing[0]["snapshot_cid"] is None
        (doubtful,) = server.api("GET", "/tasks?in_doubt=true")
        assert doubtful["id"] == task_id and doubtful["in_doubt"][0]["disk_cid"] == disk
        # The leaked IaaS snapshot carries the operation id the operator is told to look for.
        op = doubtful["in_doubt"][0]["operation_id"]
        assert calls[0]["inputs"][1]["snapledger_operation_id"] == op
        assert op in task["result"]
    finally:
        server.kill()


def test_no_task_stays_processing_when_its_worker_dies_mid_retry_wait(tmp_path: Path, pg_url: str) -> None:
    """A worker killed while waiting to retry leaves a pending operation; another run takes it over."""
    executable, state = make_fake_cpi(tmp_path, {"snapshot_disk": {"mode": "error", "ok_to_retry": True,
                                                                   "times": 1}})
    disk = add_disk(state)
    config = write_config(tmp_path, executable, retry={"attempts": 3, "base_delay": 60, "max_delay": 60})
    data_dir = tmp_path / "data"
    server = start(data_dir, pg_url, SNAPLEDGER_CONFIG=str(config))
    try:
        server.api("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": [disk]}]})
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        task_id = server.api("POST", "/deployments/prod/snapshots")["task_id"]
        deadline = time.monotonic() + 20
        while "Snapshot.AttemptFailed" not in events(server, task_id):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.kill()  # up to 60 s of backoff left: nobody would ever finish it
        server = start(data_dir, pg_url, port=server.port, SNAPLEDGER_CONFIG=str(config))
        task = server.wait_task(task_id, timeout=30)
        assert task["state"] == "done", task
        assert len([r for r in read_requests(state) if r["method_name"] == "snapshot_disk"]) == 2
    finally:
        server.kill()


def test_recovering_worker_killed_after_recording_in_doubt_is_recovered_in_turn(
        tmp_path: Path, store_url: str) -> None:
    """Issue 16 item 1, the double kill: the worker that recovers an abandoned
    call dies too, right after it recorded `CpiCallInDoubt`. The next run must
    resume the resolution: the task ends, the copy the first run made is
    listed, and no copy exists that the ledger does not list."""
    database = store_url
    data_dir = tmp_path / "data"
    (data_dir / "disks" / "disk-0").mkdir(parents=True)
    (data_dir / "disks" / "disk-0" / "f").write_text("payload")
    server = start(data_dir, database, SNAPLEDGER_CRASH_AT="cpi_returned")  # kill 1: the copy exists
    try:
        server.api("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": ["disk-0"]}]})
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        task_id = server.api("POST", "/deployments/prod/snapshots")["task_id"]
        assert wait_exit(server) == 86
        server = start(data_dir, database, port=server.port, wait=False,
                       SNAPLEDGER_CRASH_AT="in_doubt_marked")  # kill 2: it dies while it recovers
        assert wait_exit(server, timeout=30) == 86
        server = start(data_dir, database, port=server.port)
        task = server.wait_task(task_id, timeout=30)
        assert task["state"] == "done", task
        snapshot_events = [t for t in events(server, task_id) if t.startswith("Snapshot.")]
        # Marked in doubt by the second run, resolved by the third (found by its deterministic CID).
        assert snapshot_events[1:] == ["Snapshot.CpiCallStarted", "Snapshot.CpiCallInDoubt", "Snapshot.Taken"]
        listing = server.api("GET", "/deployments/prod/snapshots")
        assert [r["state"] for r in listing] == ["taken"]
        on_disk = [p.name for p in (data_dir / "snapshots").iterdir() if not p.name.startswith(".")]
        assert on_disk == [listing[0]["snapshot_cid"]]
        assert server.api("GET", "/tasks?in_doubt=true") == []
    finally:
        server.kill()


def test_a_copy_killed_midway_leaves_no_temporary_directory_once_resolved(tmp_path: Path, sqlite_url: str) -> None:
    """Issue 16 item 10: `serve` SIGKILLed while the local CPI copies a disk; the
    next run resolves the call and removes the half copy (not an hour later)."""
    data_dir = tmp_path / "data"
    disk = data_dir / "disks" / "disk-0"
    disk.mkdir(parents=True)
    for n in range(4000):  # many files: the copy takes a while, so the kill lands in it
        (disk / f"f{n}").write_bytes(os.urandom(2048))
    server = start(data_dir, sqlite_url)
    try:
        server.api("PUT", "/deployments/prod", {"instances": [{"job": "db", "index": 0, "disks": ["disk-0"]}]})
        server.api("PUT", "/config/snapshots", {"enable_snapshots": True})
        task_id = server.api("POST", "/deployments/prod/snapshots")["task_id"]
        snapshots = data_dir / "snapshots"
        deadline = time.monotonic() + 30
        while not any(p.name.startswith(".tmp-snap-") for p in snapshots.iterdir()):
            assert time.monotonic() < deadline, "the copy never started"
            time.sleep(0.005)
        server.kill()
        assert [p.name for p in snapshots.iterdir() if p.name.startswith(".tmp-snap-")]  # the half copy
        server = start(data_dir, sqlite_url, port=server.port)
        task = server.wait_task(task_id, timeout=60)
        assert task["state"] == "done", task
        (row,) = server.api("GET", "/deployments/prod/snapshots")
        assert sorted(p.name for p in snapshots.iterdir() if p.name != ".latest") == [row["snapshot_cid"]]
    finally:
        server.kill()


def test_the_data_directory_and_the_ledger_are_the_service_users_only(tmp_path: Path) -> None:
    """Issue 16 item 10: the ledger holds drain output; an older install left it 0644."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    ledger = data_dir / "ledger.sqlite"
    ledger.touch(mode=0o644)
    os.chmod(ledger, 0o644)
    server = start(data_dir, "")
    try:
        server.api("PUT", "/deployments/prod", {"instances": []})
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        files = [p for p in data_dir.iterdir() if p.name.startswith("ledger.sqlite")]
        assert ledger in files
        for path in [*files, data_dir / "credentials.json"]:
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, (path, oct(path.stat().st_mode))
        assert stat.S_IMODE((data_dir / "snapshots").stat().st_mode) == 0o700
    finally:
        server.kill()
