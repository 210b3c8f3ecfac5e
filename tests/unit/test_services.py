"""The service layer's seams: the idempotency key passed explicitly, aggregates that own their transitions."""

from __future__ import annotations

import pytest

from snapledger.domain.agent import AgentResult
from snapledger.domain.application import Ledger
from snapledger.domain.errors import InvalidState
from snapledger.domain.idempotency import Idempotency, KeyAlreadyUsed
from snapledger.domain.job_update import JobUpdate, job_update_id
from snapledger.domain.restore import Restore


@pytest.fixture
def ledger() -> Ledger:
    new_ledger = Ledger(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    new_ledger.settings.set_snapshots_enabled(True, actor="alice")
    new_ledger.deployments.record("prod", {}, [{"job": "db", "index": 0, "disks": ["d0"]}], actor="alice")
    return new_ledger


def test_a_key_is_saved_with_its_task_and_holds_against_a_second_command(ledger: Ledger) -> None:
    key = Idempotency(actor="alice", key="k-1", fingerprint="f", method="POST", path="/deployments/prod/snapshots")
    task = ledger.snapshots.take("prod", actor="alice", idempotency=key)
    found = ledger.store.find_idempotency_key("alice", "k-1")
    assert found is not None and found.task_id == str(task.id) and found.fingerprint == "f"
    with pytest.raises(KeyAlreadyUsed):
        ledger.snapshots.delete_many("prod", [], actor="alice", idempotency=key)
    ledger.store.record_idempotency_key(key)  # the middleware's after-the-fact record: the task's key stays
    assert ledger.store.find_idempotency_key("alice", "k-1").task_id == str(task.id)
    # Another actor's same key is its own; without a key nothing is recorded.
    ledger.snapshots.take("prod", actor="bob")
    assert ledger.store.find_idempotency_key("bob", "k-1") is None


def test_job_updates_and_restores_refuse_a_step_out_of_order(ledger: Ledger) -> None:
    task = ledger.job_updates.announce("prod", "db", "0", "update", actor="alice")
    update = ledger.store.get_aggregate(job_update_id(task.id))
    assert isinstance(update, JobUpdate)
    (inst,) = update.instances
    done = AgentResult(ok=True, jobs=[], duration_s=0.0)
    with pytest.raises(InvalidState):
        update.record_step(inst["id"], "stop", done, actor="w")  # not drained yet
    update.start_drain(inst["id"], worker="w", actor="alice")
    assert update.record_step(inst["id"], "drain", done, actor="w") is None
    with pytest.raises(InvalidState):
        update.ready(inst["id"], [], actor="w", caused_by=None)  # stopped first
    restore = Restore(task_id="t", deployment="prod", snapshot_cid="s", snapshot_id="i", source_disk="d0",
                      target_disk="d0", new_disk=False, instance={"id": "x", "job": "db", "index": 0, "jobs": ["db"]},
                      cpi="local", operation_id="o", actor="alice")
    with pytest.raises(InvalidState):
        restore.settle_safety_snapshot({"outcome": "taken", "snapshot_cid": "s2"}, actor="w")
