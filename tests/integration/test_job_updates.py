"""Job updates through the ledger on the real event stores, with real drain scripts.

Steps are driven by hand here (advance / execute / run the snapshot
operations) so each test can look between them; the e2e test runs the same
through the worker process roles and HTTP.
"""

from __future__ import annotations

import stat
import threading
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
from snapledger.adapters.follower import ChangeSignal
from snapledger.adapters.job_update_worker import JobUpdateWorker
from snapledger.adapters.store import ledger_env, open_database, parse_store_url
from snapledger.domain.application import Ledger
from snapledger.domain.cpi import CpiError
from snapledger.domain.job_update import JobUpdate, job_update_id
from snapledger.domain.job_update_runner import JobUpdateRunner
from snapledger.domain.operations import OperationRunner
from snapledger.domain.snapshot import Snapshot
from snapledger.projections.events import iso
from snapledger.projections.job_updates import claimed_instances, instance_updates
from snapledger.projections.projector import Projector
from snapledger.projections.queries import Queries
from support.fakes import FakeCpi


def script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


class Stack:
    def __init__(self, store_url: str, tmp_path: Path) -> None:
        url = parse_store_url(store_url)
        self.ledger = Ledger(env=ledger_env(url))
        self.db = open_database(url)
        self.projector = Projector(self.db)
        create_schema(self.db, self.projector)  # the root's one schema step: views, heartbeats, ...
        self.jobs_dir = tmp_path / "jobs"
        self.cpi = FakeCpi({f"disk-{i}" for i in range(4)})
        self.agent = LocalAgent(self.jobs_dir, wait_scale=0.001)
        self.runner = JobUpdateRunner(self.ledger, self.agent, worker="w1")
        self.ops = OperationRunner(self.ledger, {"local": self.cpi}, worker="w1")
        self.ledger.settings.set_snapshots_enabled(True, actor="alice")
        self.ledger.deployments.record("prod", {}, [
            {"job": "db", "index": i, "disks": [f"disk-{i}"], **({"jobs": ["db", "flaky"]} if i == 1 else {})}
            for i in range(3)], actor="alice")
        script(self.jobs_dir / "db" / "bin" / "drain", "echo -1 >/dev/null; echo 0\n")

    def close(self) -> None:
        self.ledger.close()
        self.db.close()

    def update(self, task_id: Any) -> JobUpdate:
        return self.ledger.store.repository.get(job_update_id(task_id))

    def run_snapshots(self, task_id: Any) -> int:
        task = self.ledger.tasks.get(str(task_id))
        pending = [op for op in task.operations if op not in task.outcomes
                   and isinstance(self.ledger.store.load(UUID(op)), Snapshot)]
        for op in pending:
            self.ops.execute(UUID(op))
        settle_tasks(self.ledger)  # what the projector's task-progress follower does
        return len(pending)

    def drive(self, task_id: Any) -> None:
        """What the workers do, until nothing moves."""
        update_id = job_update_id(task_id)
        while True:
            claimed = self.runner.advance(update_id)
            for instance_id in claimed:
                self.runner.execute(update_id, instance_id)
            if not claimed and not self.run_snapshots(task_id):
                return

    def project(self) -> None:
        position = self.projector.position()
        while True:
            notes = self.ledger.store.recorder.select_notifications(start=position, limit=500, inclusive_of_start=False)
            if not notes:
                return
            self.projector.apply([(n.id, self.ledger.store.mapper.to_domain_event(n)) for n in notes])
            position = notes[-1].id


@pytest.fixture
def stack(store_url: str, tmp_path: Path) -> Any:
    s = Stack(store_url, tmp_path)
    yield s
    s.close()


def states(update: JobUpdate) -> list[str]:
    return [i["state"] for i in update.instances]


def test_instances_go_one_after_another_and_become_ready(stack: Stack) -> None:
    script(stack.jobs_dir / "flaky" / "bin" / "drain", "echo 0\n")
    task = stack.ledger.job_updates.announce("prod", "db", None, "update", actor="deployer",
                               next_state={"persistent_disk": 2048})
    update_id = job_update_id(task.id)

    assert stack.runner.advance(update_id) == [stack.update(task.id).instances[0]["id"]]
    assert stack.runner.advance(update_id) == []  # max_in_flight 1: instance 0 is in flight
    assert stack.runner.execute(update_id, stack.update(task.id).instances[0]["id"]) == "snapshotting"
    assert states(stack.update(task.id)) == ["snapshotting", "waiting", "waiting"]
    assert stack.runner.advance(update_id) == []  # its clean snapshot is not taken yet
    assert stack.run_snapshots(task.id) == 1
    claimed = stack.runner.advance(update_id)  # settles instance 0, starts instance 1
    assert states(stack.update(task.id)) == ["ready", "draining", "waiting"]
    assert claimed == [stack.update(task.id).instances[1]["id"]]
    stack.runner.execute(update_id, claimed[0])
    stack.drive(task.id)

    assert states(stack.update(task.id)) == ["ready", "ready", "ready"]
    done = stack.ledger.tasks.get(str(task.id))
    assert done.state == "done", done.result
    assert "3 instance(s) ready for update" in done.result

    stack.project()
    queries = Queries(stack.db)
    listing = queries.snapshots("prod")
    assert sorted(r["disk_cid"] for r in listing) == ["disk-0", "disk-1", "disk-2"]
    assert all(r["clean"] is True and r["trigger"] == "job_update" for r in listing)
    assert [i["state"] for i in instance_updates(stack.db, str(task.id))] == ["ready"] * 3

    # The task's log, in order, for the first instance.
    events = [e for e in queries.task_events(str(task.id))
              if e["data"].get("instance") in ("db/0", None) or e["data"].get("disk_cid") == "disk-0"]
    kinds = [e["type"] for e in events if e["type"].startswith(("JobUpdate.", "Snapshot."))]
    assert kinds[:8] == ["JobUpdate.Announced", "JobUpdate.DrainStarted", "JobUpdate.DrainCompleted",
                         "JobUpdate.JobStopped", "JobUpdate.CleanSnapshotsRequested", "Snapshot.Requested",
                         "Snapshot.CpiCallStarted", "Snapshot.Taken"]
    assert kinds[8] == "JobUpdate.ReadyForUpdate"
    drained = next(e for e in events if e["type"] == "JobUpdate.DrainCompleted")
    assert drained["data"]["result"]["jobs"][0]["calls"][0]["value"] == 0
    assert stack.cpi.count("snapshot_disk") == 3
    metadata = stack.cpi.calls[0][1][1]
    assert metadata["job"] == "db" and metadata["index"] == 0


def test_max_in_flight_starts_several_at_once(stack: Stack) -> None:
    script(stack.jobs_dir / "flaky" / "bin" / "drain", "echo 0\n")
    task = stack.ledger.job_updates.announce("prod", "db", None, "update", actor="deployer", max_in_flight=2)
    claimed = stack.runner.advance(job_update_id(task.id))
    assert len(claimed) == 2
    assert states(stack.update(task.id)) == ["draining", "draining", "waiting"]
    for instance_id in claimed:
        stack.runner.execute(job_update_id(task.id), instance_id)
    stack.drive(task.id)
    assert stack.ledger.tasks.get(str(task.id)).state == "done"


def test_a_failed_drain_fails_the_instance_before_any_snapshot(stack: Stack) -> None:
    script(stack.jobs_dir / "flaky" / "bin" / "drain", "echo 'not today'\n")
    task = stack.ledger.job_updates.announce("prod", "db", None, "update", actor="deployer")
    stack.drive(task.id)

    update = stack.update(task.id)
    assert states(update) == ["ready", "failed", "cancelled"]
    assert update.instances[1]["snapshots"] == []
    finished = stack.ledger.tasks.get(str(task.id))
    assert finished.state == "error"
    assert "db/1: DrainInvalidOutput: job flaky: Script did not return a signed integer" in finished.result
    assert "db/2: Cancelled" in finished.result
    assert [c[1][0] for c in stack.cpi.calls] == ["disk-0"]  # no snapshot of the half-drained instance

    stack.project()
    assert [r["disk_cid"] for r in Queries(stack.db).snapshots("prod")] == ["disk-0"]
    rows = instance_updates(stack.db, str(task.id))
    assert [r["ready"] for r in rows] == [True, False, False]
    assert rows[1]["error"].startswith("DrainInvalidOutput")
    failed = next(e for e in Queries(stack.db).task_events(str(task.id)) if e["type"] == "JobUpdate.DrainFailed")
    assert failed["data"]["result"]["jobs"][1]["calls"][0]["stdout"] == "not today\n"


def test_a_failed_stop_fails_the_instance_before_any_snapshot(stack: Stack) -> None:
    script(stack.jobs_dir / "db" / "bin" / "stop", "exit 2\n")
    task = stack.ledger.job_updates.announce("prod", "db", "0", "shutdown", actor="deployer")
    stack.drive(task.id)
    assert states(stack.update(task.id)) == ["failed"]
    assert stack.cpi.count("snapshot_disk") == 0
    finished = stack.ledger.tasks.get(str(task.id))
    assert finished.state == "error" and "StopFailed" in finished.result
    assert finished.description == "update instance db/0"


def test_disabled_snapshots_are_skipped_and_the_update_goes_on(stack: Stack) -> None:
    stack.ledger.settings.set_snapshots_enabled(False, actor="alice")
    task = stack.ledger.job_updates.announce("prod", "db", "0", "update", actor="deployer")
    stack.drive(task.id)
    assert states(stack.update(task.id)) == ["ready"]
    assert stack.ledger.tasks.get(str(task.id)).state == "done"
    assert stack.cpi.count("snapshot_disk") == 0
    stack.project()
    types = [e["type"] for e in Queries(stack.db).task_events(str(task.id))]
    assert types.index("JobUpdate.JobStopped") < types.index("JobUpdate.SnapshotSkipped") \
        < types.index("JobUpdate.ReadyForUpdate")
    skipped = next(e for e in Queries(stack.db).task_events(str(task.id)) if e["type"] == "JobUpdate.SnapshotSkipped")
    assert skipped["data"]["reason"] == "snapshots are disabled"


def test_a_failed_clean_snapshot_keeps_the_instance_from_ready(stack: Stack) -> None:
    stack.cpi.failures["disk-0"] = CpiError("Bosh::Clouds::CloudError", "quota exceeded")
    task = stack.ledger.job_updates.announce("prod", "db", None, "update", actor="deployer")
    stack.drive(task.id)
    assert states(stack.update(task.id)) == ["failed", "cancelled", "cancelled"]
    finished = stack.ledger.tasks.get(str(task.id))
    assert finished.state == "error" and "quota exceeded" in finished.result


def test_racing_workers_claim_each_instance_once(stack: Stack) -> None:
    script(stack.jobs_dir / "flaky" / "bin" / "drain", "echo 0\n")
    for max_in_flight in (1, 3):
        task = stack.ledger.job_updates.announce("prod", "db", None, "update", actor="deployer",
                                   max_in_flight=max_in_flight)
        runners = [JobUpdateRunner(stack.ledger, stack.agent, worker=f"w{i}") for i in range(4)]
        barrier = threading.Barrier(len(runners))
        claims: list[str] = []

        def go(runner: JobUpdateRunner) -> None:
            barrier.wait()
            claims.extend(runner.advance(job_update_id(task.id)))

        threads = [threading.Thread(target=go, args=(r,)) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(claims) == len(set(claims)) == max_in_flight
        # Only the claimant may run it.
        update_id = job_update_id(task.id)
        owner = {i["id"]: i["worker"] for i in stack.update(task.id).instances}
        for instance_id in claims:
            others = [r for r in runners if r.worker != owner[instance_id]]
            assert others[0].execute(update_id, instance_id) is None
        stack.ledger.tasks.get(str(task.id))


def test_unknown_instance_and_bad_arguments_are_refused(stack: Stack) -> None:
    from snapledger.domain.errors import InstanceNotFound, LedgerError

    with pytest.raises(InstanceNotFound):
        stack.ledger.job_updates.announce("prod", "db", "7", "update", actor="deployer")
    with pytest.raises(LedgerError) as error:
        stack.ledger.job_updates.announce("prod", "db", None, "reboot", actor="deployer")
    assert error.value.field == "drain_type"


def audit(stack: Stack, task_id: Any) -> list[dict[str, Any]]:
    stack.project()
    return Queries(stack.db).events({"task_id": str(task_id)})


def test_each_step_follows_from_the_one_before(stack: Stack) -> None:
    script(stack.jobs_dir / "flaky" / "bin" / "drain", "echo 0\n")
    task = stack.ledger.job_updates.announce("prod", "db", "0", "update", actor="deployer")
    stack.drive(task.id)
    events = audit(stack, task.id)
    at = {e["type"]: e for e in events}
    chain = ["JobUpdate.Announced", "JobUpdate.DrainStarted", "JobUpdate.DrainCompleted", "JobUpdate.JobStopped",
             "JobUpdate.CleanSnapshotsRequested"]
    for before, after in zip(chain, chain[1:]):
        assert at[after]["caused_by"] == at[before]["event_id"], (after, at[after]["caused_by"])
    # Ready follows from its clean snapshot's outcome; the task's outcome from ready.
    assert at["JobUpdate.ReadyForUpdate"]["caused_by"] == at["Snapshot.Taken"]["event_id"]
    finished = next(e for e in events if e["type"] == "Task.OperationFinished"
                    and e["data"]["outcome"] == "ready")
    assert finished["data"]["detail"]["caused_by"] == at["JobUpdate.ReadyForUpdate"]["event_id"]


def test_a_drain_abandoned_by_a_dead_worker_fails_like_a_failed_step(stack: Stack) -> None:
    task = stack.ledger.job_updates.announce("prod", "db", None, "update", actor="deployer")
    update_id = job_update_id(task.id)
    dead = JobUpdateRunner(stack.ledger, stack.agent, worker="dead-worker")
    (first,) = dead.advance(update_id)  # claimed, then the worker dies during the drain
    stack.project()
    held = claimed_instances(stack.db, older_than="9999")
    assert [(r["instance"], r["state"], r["worker"]) for r in held] == [("db/0", "draining", "dead-worker")]

    live = JobUpdateRunner(stack.ledger, stack.agent, worker="w1")
    assert live.recover(update_id, first, dead_worker="someone-else") is None  # not that worker's
    assert live.recover(update_id, first, dead_worker="dead-worker") == "failed"
    assert live.recover(update_id, first, dead_worker="dead-worker") is None  # recorded once
    assert states(stack.update(task.id)) == ["failed", "cancelled", "cancelled"]
    done = stack.ledger.tasks.get(str(task.id))
    assert done.state == "error"
    assert ("db/0: Snapledger::WorkerLost: worker dead-worker stopped beating during the drain of db/0; "
            "the drain is not run again") in done.result
    assert "db/1: Cancelled" in done.result and "db/2: Cancelled" in done.result
    # The dead worker's drain, if it ever answered, changes nothing: the instance is not its any more.
    assert dead.execute(update_id, first) is None
    stack.drive(task.id)
    assert stack.cpi.count("snapshot_disk") == 0 and states(stack.update(task.id))[0] == "failed"

    events = audit(stack, task.id)
    lost = next(e for e in events if e["type"] == "JobUpdate.WorkerLost")
    started = next(e for e in events if e["type"] == "JobUpdate.DrainStarted")
    assert lost["data"]["worker"] == "dead-worker" and lost["data"]["step"] == "drain"
    assert lost["actor"] == "w1"  # who recorded it
    assert lost["caused_by"] == started["event_id"]
    cancelled = next(e for e in events if e["type"] == "JobUpdate.InstancesCancelled")
    assert cancelled["caused_by"] == lost["event_id"]
    rows = instance_updates(stack.db, str(task.id))
    assert [r["state"] for r in rows] == ["failed", "cancelled", "cancelled"]
    assert rows[0]["error"].startswith("Snapledger::WorkerLost: worker dead-worker")
    assert claimed_instances(stack.db, older_than="9999") == []


def test_a_stop_abandoned_by_a_dead_worker_fails_the_instance(stack: Stack) -> None:
    task = stack.ledger.job_updates.announce("prod", "db", "0", "update", actor="deployer")
    update_id = job_update_id(task.id)
    (instance_id,) = JobUpdateRunner(stack.ledger, stack.agent, worker="dead-worker").advance(update_id)
    update = stack.update(task.id)  # its drain finished; the worker dies before the stop is recorded
    update._drain_completed(task_id=str(task.id), instance_id=instance_id, instance="db/0", result={},
                            actor="deployer", caused_by=update.cause_of(instance_id))
    stack.ledger.store.save(update)
    stack.project()
    assert [r["state"] for r in claimed_instances(stack.db, older_than="9999")] == ["stopping"]
    live = JobUpdateRunner(stack.ledger, stack.agent, worker="w1")
    assert live.recover(update_id, instance_id, dead_worker="dead-worker") == "failed"
    done = stack.ledger.tasks.get(str(task.id))
    assert done.state == "error" and "stopped beating during the stop of db/0" in done.result
    assert stack.cpi.count("snapshot_disk") == 0


def test_the_sweep_fails_instances_of_silent_workers_and_of_ours_without_a_thread(stack: Stack) -> None:
    tasks = [stack.ledger.job_updates.announce("prod", "db", str(i % 3), "update", actor="deployer")
             for i in range(4)]
    ours = JobUpdateRunner(stack.ledger, stack.agent, worker="w1")
    claimants = [JobUpdateRunner(stack.ledger, stack.agent, worker="silent"),
                 JobUpdateRunner(stack.ledger, stack.agent, worker="beating"), ours, ours]
    claims = [runner.advance(job_update_id(t.id))[0] for runner, t in zip(claimants, tasks)]
    ours.running.add((job_update_id(tasks[3].id), claims[3]))  # ours, its thread running (a long drain)
    stack.project()
    worker = JobUpdateWorker(stack.ledger, ours, stack.db, ChangeSignal(), structlog.get_logger(), lease_s=0.2)
    try:
        time.sleep(0.3)  # every claim is older than a lease; only "beating" beat since
        with stack.db.transaction() as cur:
            cur.execute("INSERT INTO worker_heartbeats (worker, beat_at) VALUES (%s, %s), (%s, %s)",
                        ("beating", iso(datetime.now(UTC)), "w1", iso(datetime.now(UTC))))
        recovered = worker.sweep()
        assert sorted(recovered) == sorted([(str(tasks[0].id), claims[0], "failed"),
                                            (str(tasks[2].id), claims[2], "failed")])
        assert [stack.ledger.tasks.get(str(t.id)).state for t in tasks] == ["error", "processing", "error",
                                                                           "processing"]
        assert "worker silent stopped beating" in stack.ledger.tasks.get(str(tasks[0].id)).result
        assert "worker w1 stopped beating" in stack.ledger.tasks.get(str(tasks[2].id)).result
        stack.project()
        assert worker.sweep() == []  # the live ones are left alone, pass after pass
    finally:
        worker.pool.shutdown()


def test_version_1_events_read_and_audit_the_same(stack: Stack, tmp_path: Path) -> None:
    """A log written before job-update events carried their references (v1):
    the events read back (upcast) and the audit view stamps them from the
    announcement exactly as it stamps v2 events."""
    from eventsourcing.persistence import StoredEvent

    from snapledger.projections.audit import FILTER_COLUMNS

    task = stack.ledger.job_updates.announce("prod", "db", "1", "update", actor="deployer")
    stack.drive(task.id)
    stack.project()
    transcoder = stack.ledger.store.mapper.transcoder
    downgraded = []  # the same log, its job-update events as version 1 wrote them
    for n in stack.ledger.store.recorder.select_notifications(start=1, limit=1000):
        state = transcoder.decode(n.state)
        if n.topic.startswith("snapledger.domain.job_update:JobUpdate.") and state.get("class_version") == 2:
            for key in ("class_version", "deployment", "job", "index"):
                del state[key]
            if not n.topic.endswith("CleanSnapshotsRequested"):  # its `disks` are v1's own
                del state["disks"]
        downgraded.append(StoredEvent(originator_id=n.originator_id, originator_version=n.originator_version,
                                      topic=n.topic, state=transcoder.encode(state)))
    old_url = parse_store_url(f"sqlite:///{tmp_path / 'old-log.sqlite'}")
    old_ledger, old_db = Ledger(env=ledger_env(old_url)), open_database(old_url)
    try:
        old_ledger.store.recorder.insert_events(downgraded)
        old_notes = old_ledger.store.recorder.select_notifications(start=1, limit=1000)
        assert states(old_ledger.store.repository.get(job_update_id(task.id))) == ["ready"]
        drained = [old_ledger.store.mapper.to_domain_event(n) for n in old_notes
                   if n.topic.endswith("JobUpdate.DrainCompleted")]
        assert [(e.job, e.index, e.deployment, e.disks) for e in drained] == [("db", 1, None, None)]
        projector = Projector(old_db)
        projector.setup()
        projector.apply([(n.id, old_ledger.store.mapper.to_domain_event(n)) for n in old_notes])
        columns = ", ".join(["position", "type", *FILTER_COLUMNS.values()])
        query = f"SELECT {columns} FROM audit_events WHERE type LIKE %s ORDER BY position"
        rows = stack.db.query(query, ("JobUpdate.%",))
        assert len(rows) > 5 and all(r["deployment"] == "prod" and r["job"] == "db" for r in rows)
        assert all((r["idx"], r["disk_cid"]) == (1, "disk-1") for r in rows if r["type"] != "JobUpdate.Announced")
        assert old_db.query(query, ("JobUpdate.%",)) == rows
    finally:
        old_ledger.close()
        old_db.close()
