"""Restores through the ledger on the real event stores, with the real local CPI and
real drain scripts. Steps are driven by hand (advance / execute / the snapshot
operations) so each test can stop between them: a second worker racing for a
step, a worker dying in the middle, a snapshot deleted before the restore call.
The e2e test (tests/e2e/test_restore_http.py) runs the same through the worker
roles and HTTP."""

from __future__ import annotations

import hashlib
import stat
import time
from datetime import datetime, UTC
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import structlog

from support.task_progress import settle_tasks
from snapledger.adapters.agent_local import LocalAgent
from snapledger.adapters.bootstrap import create_schema
from snapledger.adapters.cpi.local import LocalCpi
from snapledger.adapters.follower import ChangeSignal
from snapledger.adapters.restore_worker import RestoreWorker
from snapledger.adapters.store import ledger_env, open_database, parse_store_url
from snapledger.domain.application import Ledger
from snapledger.domain.cpi import CLOUD_ERROR, CpiError
from snapledger.domain.operations import OperationRunner
from snapledger.domain.restore import Restore, restore_id
from snapledger.domain.restore_runner import RestoreRunner
from snapledger.domain.snapshot import Snapshot
from snapledger.projections.events import iso
from snapledger.projections.projector import Projector
from snapledger.projections.queries import Queries
from snapledger.projections.restores import claimed_restores, restore_of_task


def script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class SnapshotFailures(LocalCpi):
    """The local CPI, with snapshot_disk failing on demand (a fault at the IaaS boundary)."""

    failing: set[str] = set()

    def snapshot_disk(self, disk_cid: str, metadata: dict[str, Any]) -> str:
        if disk_cid in self.failing:
            raise CpiError(CLOUD_ERROR, f"no space left for a snapshot of {disk_cid}")
        return super().snapshot_disk(disk_cid, metadata)


class Stack:
    def __init__(self, store_url: str, tmp_path: Path) -> None:
        url = parse_store_url(store_url)
        self.ledger = Ledger(env=ledger_env(url), restoring_cpis={"local"})
        self.db = open_database(url)
        self.projector = Projector(self.db)
        create_schema(self.db, self.projector)  # the root's one schema step: views, heartbeats, ...
        self.cpi = SnapshotFailures(tmp_path / "disks", tmp_path / "snapshots")
        self.cpi.failing = set()
        self.disk = self.cpi.ensure_disk("disk-0")
        (self.disk / "data.txt").write_text("v1")
        (self.disk / "dir").mkdir()
        (self.disk / "dir" / "blob").write_bytes(bytes(range(256)) * 10)
        self.jobs_dir = tmp_path / "jobs"
        script(self.jobs_dir / "db" / "bin" / "drain", "echo 0\n")
        self.agent = LocalAgent(self.jobs_dir, wait_scale=0.001)
        self.ops = OperationRunner(self.ledger, {"local": self.cpi}, worker="w1")
        self.ledger.settings.set_snapshots_enabled(True, actor="alice")
        self.ledger.deployments.record("prod", {}, [{"job": "db", "index": 0, "disks": ["disk-0"]}], actor="alice")
        task = self.ledger.snapshots.take("prod", actor="alice")
        self.run_snapshots(task.id)
        self.cid = self.ledger.snapshots.get(UUID(task.operations[0])).snapshot_cid
        self.v1 = checksums(self.disk)
        (self.disk / "data.txt").write_text("v2")
        self.v2 = checksums(self.disk)

    def runner(self, worker: str) -> RestoreRunner:
        return RestoreRunner(self.ledger, self.agent, {"local": self.cpi}, worker=worker)

    def close(self) -> None:
        self.ledger.close()
        self.db.close()

    def restore(self, task_id: Any) -> Restore:
        return self.ledger.store.repository.get(restore_id(task_id))

    def run_snapshots(self, task_id: Any) -> int:
        task = self.ledger.tasks.get(str(task_id))
        pending = [op for op in task.operations if op not in task.outcomes
                   and isinstance(self.ledger.store.load(UUID(op)), Snapshot)]
        for op in pending:
            self.ops.execute(UUID(op))
        settle_tasks(self.ledger)  # what the projector's task-progress follower does
        return len(pending)

    def drive(self, runner: RestoreRunner, task_id: Any) -> None:
        """What the workers do, until nothing moves."""
        rid = restore_id(task_id)
        while True:
            step = runner.advance(rid)
            if step is not None:
                runner.execute(rid, step)
            elif not self.run_snapshots(task_id):
                return

    def project(self) -> None:
        position = self.projector.position()
        while True:
            notes = self.ledger.store.recorder.select_notifications(start=position, limit=500, inclusive_of_start=False)
            if not notes:
                return
            self.projector.apply([(n.id, self.ledger.store.mapper.to_domain_event(n)) for n in notes])
            position = notes[-1].id

    def types(self, task_id: Any) -> list[str]:
        self.project()
        return [e["type"] for e in Queries(self.db).task_events(str(task_id)) if e["type"].startswith("Restore.")]


@pytest.fixture
def stack(store_url: str, tmp_path: Path) -> Any:
    s = Stack(store_url, tmp_path)
    yield s
    s.close()


def test_each_step_is_claimed_by_one_worker_only(stack: Stack) -> None:
    task = stack.ledger.restores.request("prod", stack.cid, actor="alice")
    rid = restore_id(task.id)
    one, two = stack.runner("w1"), stack.runner("w2")
    assert one.advance(rid) == "drain"
    assert two.advance(rid) is None  # w1 holds the drain
    assert two.execute(rid, "drain") is None  # not w2's to run
    assert one.execute(rid, "drain") == "snapshotting"
    assert two.advance(rid) is None  # the safety snapshot is not taken yet
    assert stack.run_snapshots(task.id) == 1
    assert two.advance(rid) == "restore"  # w2 claims the restore call
    assert one.advance(rid) is None
    assert one.execute(rid, "restore") is None
    assert two.execute(rid, "restore") == "restored"
    assert checksums(stack.disk) == stack.v1
    done = stack.ledger.tasks.get(str(task.id))
    assert done.state == "done", done.result
    safety = stack.restore(task.id).safety_snapshot_cid
    assert checksums(stack.cpi.snapshot_path(safety)) == stack.v2
    assert stack.types(task.id).count("Restore.CpiCallStarted") == 1


def test_an_abandoned_restore_call_is_repeated_and_completes(stack: Stack) -> None:
    task = stack.ledger.restores.request("prod", stack.cid, actor="alice", to_new_disk="disk-new")
    rid = restore_id(task.id)
    dead = stack.runner("dead-worker")
    assert dead.advance(rid) == "restore"  # claimed, then the worker dies before the call
    stack.project()
    held = claimed_restores(stack.db, older_than="9999")
    assert [(r["state"], r["worker"]) for r in held] == [("restoring", "dead-worker")]

    live = stack.runner("w1")
    assert live.recover(rid, dead_worker="someone-else") is None  # not that worker's
    assert live.recover(rid, dead_worker="dead-worker") == "retried:restored"
    assert checksums(stack.cpi.disk_root / "disk-new") == stack.v1
    assert stack.ledger.tasks.get(str(task.id)).state == "done"
    assert stack.types(task.id) == ["Restore.Requested", "Restore.CpiCallStarted", "Restore.CpiCallInDoubt",
                                     "Restore.CpiCallStarted", "Restore.Restored"]
    assert restore_of_task(stack.db, str(task.id))["attempts"] == 2
    assert claimed_restores(stack.db, older_than="9999") == []


def test_an_abandoned_drain_fails_the_restore_and_the_disk_is_untouched(stack: Stack) -> None:
    task = stack.ledger.restores.request("prod", stack.cid, actor="alice")
    rid = restore_id(task.id)
    assert stack.runner("dead-worker").advance(rid) == "drain"
    assert stack.runner("w1").recover(rid, dead_worker="dead-worker") == "failed"
    done = stack.ledger.tasks.get(str(task.id))
    assert done.state == "error" and "Snapledger::WorkerLost" in done.result
    assert "the disk was not touched" in done.result
    assert checksums(stack.disk) == stack.v2
    assert stack.runner("w1").advance(rid) is None  # a failed restore never goes on


def test_the_sweep_recovers_restores_of_silent_workers_only(stack: Stack) -> None:
    tasks = [stack.ledger.restores.request("prod", stack.cid, actor="alice", to_new_disk=name)
             for name in ("disk-a", "disk-b")]
    stack.runner("silent").advance(restore_id(tasks[0].id))
    stack.runner("beating").advance(restore_id(tasks[1].id))
    stack.project()
    worker = RestoreWorker(stack.ledger, stack.runner("w1"), stack.db, ChangeSignal(), structlog.get_logger(),
                           lease_s=0.2)
    time.sleep(0.3)  # both claims are older than a lease; only "beating" beat since
    with stack.db.transaction() as cur:
        cur.execute("INSERT INTO worker_heartbeats (worker, beat_at) VALUES (%s, %s)",
                    ("beating", iso(datetime.now(UTC))))
    assert worker.sweep() == [(str(restore_id(tasks[0].id)), "retried:restored")]
    assert stack.ledger.tasks.get(str(tasks[0].id)).state == "done"
    assert stack.restore(tasks[1].id).state == "restoring"  # a live worker's: left alone
    assert checksums(stack.cpi.disk_root / "disk-a") == stack.v1


def test_a_failed_safety_snapshot_fails_the_restore_before_the_disk_is_touched(stack: Stack) -> None:
    stack.cpi.failing = {"disk-0"}
    task = stack.ledger.restores.request("prod", stack.cid, actor="alice")
    stack.drive(stack.runner("w1"), task.id)
    done = stack.ledger.tasks.get(str(task.id))
    assert done.state == "error"
    assert "safety snapshot of disk disk-0 was not taken" in done.result and "no space left" in done.result
    assert checksums(stack.disk) == stack.v2
    assert stack.types(task.id) == ["Restore.Requested", "Restore.DrainStarted", "Restore.DrainCompleted",
                                     "Restore.JobStopped", "Restore.SafetySnapshotRequested",
                                     "Restore.SafetySnapshotFailed"]


def test_a_snapshot_deleted_before_the_restore_call_fails_it_cleanly(stack: Stack) -> None:
    task = stack.ledger.restores.request("prod", stack.cid, actor="alice")
    rid = restore_id(task.id)
    runner = stack.runner("w1")
    runner.execute(rid, runner.advance(rid))
    stack.run_snapshots(task.id)  # the safety snapshot
    deletion = stack.ledger.snapshots.delete("prod", stack.cid, actor="bob")
    stack.run_snapshots(deletion.id)
    assert runner.advance(rid) == "restore"
    assert runner.execute(rid, "restore") == "failed"
    done = stack.ledger.tasks.get(str(task.id))
    assert done.state == "error" and "DiskNotFound" in done.result
    safety = stack.restore(task.id).safety_snapshot_cid
    assert f"safety snapshot {safety}" in done.result
    assert checksums(stack.disk) == stack.v2
