"""The domain and service layer on the in-memory event store (no I/O)."""

from __future__ import annotations

import threading
from uuid import UUID

import pytest

from support.task_progress import settle_tasks
from snapledger.domain.application import Director, Ledger
from snapledger.domain.cpi import CLOUD_ERROR, NOT_IMPLEMENTED, CpiError
from snapledger.domain.errors import (DeploymentNotFound, InstanceNotFound, InvalidState, SnapshotNotFound,
                                      SnapshotsDisabled)
from snapledger.domain.operations import OperationRunner
from snapledger.domain.snapshot import Refusal
from support.fakes import FakeCpi

INSTANCES = [
    {"job": "db", "index": 0, "disks": ["d0"]},
    {"job": "db", "index": 1, "disks": ["d1a", "d1b"]},
]


@pytest.fixture
def ledger() -> Ledger:
    new_ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, director=Director("dir", "uuid-1"))
    new_ledger.deployments.record("prod", {"env": "production"}, INSTANCES, actor="alice")
    return new_ledger


@pytest.fixture
def cpi() -> FakeCpi:
    return FakeCpi({"d0", "d1a", "d1b"})


def run_all(ledger: Ledger, runner: OperationRunner, task) -> None:
    for op in ledger.tasks.get(str(task.id)).operations:
        runner.execute(UUID(op))
    settle_tasks(ledger)  # what the projector's task-progress follower does


def test_snapshots_are_off_by_default_and_refusal_is_recorded(ledger: Ledger) -> None:
    assert ledger.settings.snapshots_enabled() is False
    with pytest.raises(SnapshotsDisabled, match="enable-snapshots"):
        ledger.snapshots.take("prod", actor="alice")
    refusals = [n for n in ledger.store.recorder.select_notifications(start=1, limit=100)
                if n.topic.endswith("Refusal.Recorded")]
    assert len(refusals) == 1
    event = ledger.store.mapper.to_domain_event(refusals[0])
    assert isinstance(event, Refusal.Recorded) and event.actor == "alice" and event.deployment == "prod"


def test_take_requests_every_disk_with_bosh_metadata(ledger: Ledger) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="alice")
    task = ledger.snapshots.take("prod", actor="alice")
    assert task.kind == "snapshot_deployment" and len(task.operations) == 3
    snap = ledger.snapshots.get(UUID(task.operations[1]))
    assert snap.disk_cid == "d1a" and snap.index == 1 and snap.state == "requested"
    assert snap.metadata == {
        "deployment": "prod", "job": "db", "index": 1, "director_name": "dir", "director_uuid": "uuid-1",
        "agent_id": None, "instance_id": snap.instance_id, "env": "production",
        "snapledger_operation_id": str(snap.id),
    }


def test_instance_lookup_by_index_and_id(ledger: Ledger) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="a")
    by_index = ledger.snapshots.take("prod", actor="a", job="db", index_or_id="1")
    assert by_index.kind == "create_snapshot" and len(by_index.operations) == 2
    inst_id = ledger.deployments.get("prod").instances[0]["id"]
    by_id = ledger.snapshots.take("prod", actor="a", job="db", index_or_id=inst_id)
    assert ledger.snapshots.get(UUID(by_id.operations[0])).disk_cid == "d0"
    with pytest.raises(InstanceNotFound):
        ledger.snapshots.take("prod", actor="a", job="db", index_or_id="7")
    with pytest.raises(DeploymentNotFound):
        ledger.snapshots.take("nope", actor="a")


def test_deployment_wide_snapshot_continues_past_a_failure_and_names_it(ledger: Ledger, cpi: FakeCpi) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="a")
    cpi.failures["d1a"] = CpiError(CLOUD_ERROR, "quota exceeded")
    task = ledger.snapshots.take("prod", actor="a")
    run_all(ledger, OperationRunner(ledger, {"local": cpi}, worker="w1"), task)
    task = ledger.tasks.get(str(task.id))
    assert task.state == "error"
    assert cpi.count("snapshot_disk") == 3  # went on past the failure
    assert "db/1 disk d1a" in task.result and "quota exceeded" in task.result
    assert "created" in task.result  # the two good snapshots are reported too


def test_not_implemented_is_skipped_not_failed(ledger: Ledger, cpi: FakeCpi) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="a")
    for disk in ("d0", "d1a", "d1b"):
        cpi.failures[disk] = CpiError(NOT_IMPLEMENTED, "no snapshots here")
    task = ledger.snapshots.take("prod", actor="a")
    run_all(ledger, OperationRunner(ledger, {"local": cpi}, worker="w1"), task)
    task = ledger.tasks.get(str(task.id))
    assert task.state == "done" and "3 skipped" in task.result


def test_delete_lifecycle_and_disk_not_found_counts_as_deleted(ledger: Ledger, cpi: FakeCpi) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="a")
    runner = OperationRunner(ledger, {"local": cpi}, worker="w1")
    run_all(ledger, runner, ledger.snapshots.take("prod", actor="a", job="db", index_or_id="0"))
    cid = next(iter(cpi.snapshots))
    with pytest.raises(SnapshotNotFound, match="not found in deployment 'other'"):
        ledger.deployments.record("other", {}, [], actor="a")
        ledger.snapshots.delete("other", cid, actor="a")
    cpi.snapshots.pop(cid)  # gone in the IaaS behind our back
    task = ledger.snapshots.delete("prod", cid, actor="bob")
    with pytest.raises(InvalidState, match="already being deleted"):
        ledger.snapshots.delete("prod", cid, actor="bob")
    run_all(ledger, runner, task)
    task = ledger.tasks.get(str(task.id))
    assert task.state == "done" and task.actor == "bob"
    with pytest.raises(SnapshotNotFound):
        ledger.snapshots.find(cid)


def test_failed_deletion_keeps_the_snapshot_listed(ledger: Ledger, cpi: FakeCpi) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="a")
    runner = OperationRunner(ledger, {"local": cpi}, worker="w1")
    run_all(ledger, runner, ledger.snapshots.take("prod", actor="a", job="db", index_or_id="0"))
    cid = next(iter(cpi.snapshots))
    cpi.failures[cid] = CpiError(CLOUD_ERROR, "snapshot in use")
    task = ledger.snapshots.delete("prod", cid, actor="a")
    run_all(ledger, runner, task)
    assert ledger.tasks.get(str(task.id)).state == "error"
    assert ledger.snapshots.find(cid).state == "taken"  # still there, deletable again
    del cpi.failures[cid]
    retry = ledger.snapshots.delete("prod", cid, actor="a")
    run_all(ledger, runner, retry)
    assert ledger.tasks.get(str(retry.id)).state == "done"
    with pytest.raises(SnapshotNotFound):
        ledger.snapshots.find(cid)


def test_a_second_execution_of_a_handled_operation_does_nothing(ledger: Ledger, cpi: FakeCpi) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="a")
    runner = OperationRunner(ledger, {"local": cpi}, worker="w1")
    task = ledger.snapshots.take("prod", actor="a", job="db", index_or_id="0")
    op = UUID(task.operations[0])
    assert runner.execute(op) == "taken"
    assert runner.execute(op) is None
    assert cpi.count("snapshot_disk") == 1


def test_duplicate_cid_from_a_cpi_is_a_failure_not_a_second_listing(ledger: Ledger) -> None:
    class SameCid(FakeCpi):
        def snapshot_disk(self, disk_cid, metadata):
            super().snapshot_disk(disk_cid, metadata)
            return "snap-always-the-same"

    ledger.settings.set_snapshots_enabled(True, actor="a")
    runner = OperationRunner(ledger, {"local": SameCid({"d0", "d1a", "d1b"})}, worker="w1")
    task = ledger.snapshots.take("prod", actor="a", job="db", index_or_id="1")
    run_all(ledger, runner, task)
    task = ledger.tasks.get(str(task.id))
    assert task.state == "error" and "Snapledger::DuplicateSnapshotCid" in task.result
    assert ledger.snapshots.find("snap-always-the-same").disk_cid == "d1a"


def test_empty_deployment_task_is_done_at_once(ledger: Ledger) -> None:
    ledger.settings.set_snapshots_enabled(True, actor="a")
    ledger.deployments.record("empty", {}, [{"job": "web", "index": 0, "disks": []}], actor="a")
    task = ledger.snapshots.take("empty", actor="a")
    assert task.state == "done" and task.result == "no persistent disks to snapshot"


def test_inventory_records_attached_and_detached_disks(ledger: Ledger) -> None:
    dep = ledger.deployments.record("prod", {}, [{"job": "db", "index": 0, "disks": ["d0", "dnew"]}], actor="a")
    events = list(ledger.store.repository.event_store.get(dep.id))
    last = events[-1]
    assert last.attached == ["dnew"] and last.detached == ["d1a", "d1b"]


def test_a_second_run_that_finds_nothing_to_do_does_not_hide_a_running_call(ledger: Ledger) -> None:
    """The recovery sweep takes a claim of ours that no thread runs as abandoned.
    A second run of the same operation (the sweep's own, or a replay) ended at
    once and used to drop it from the running set while the first was still in
    its CPI call: the sweep then recorded our own live call in doubt."""
    in_call, release = threading.Event(), threading.Event()

    class Blocking(FakeCpi):
        def snapshot_disk(self, disk_cid: str, metadata: dict) -> str:
            in_call.set()
            release.wait(10)
            return super().snapshot_disk(disk_cid, metadata)

    ledger.settings.set_snapshots_enabled(True, actor="a")
    runner = OperationRunner(ledger, {"local": Blocking({"d0"})}, worker="w1")
    op = UUID(ledger.snapshots.take("prod", actor="a", job="db", index_or_id="0").operations[0])
    first = threading.Thread(target=runner.execute, args=(op,))
    first.start()
    try:
        assert in_call.wait(10)
        assert runner.execute(op) is None  # claimed already: nothing to do
        assert runner.is_running(op)
    finally:
        release.set()
        first.join(10)
    assert not runner.is_running(op)
    assert ledger.snapshots.get(op).state == "taken"
