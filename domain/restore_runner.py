"""Executing restores: claim a step, run it outside any transaction, record its outcome.

See domain/restore.py for what a restore is and the order of its steps.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from collections.abc import Callable, Mapping
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Recording

from .agent import SHUTDOWN, Agent, AgentInstance, AgentResult, drain_then_stop, restore_states
from .cpi import CLOUD_ERROR, NOT_IMPLEMENTED, Cpi, CpiError, RestoresSnapshots, calls_made
from .cpi_calls import record_calls
from .deployment import Deployment, deployment_id
from .disk_locks import DiskLocks
from .json_types import JsonObject, json_object
from .restore import (DRAINING, FAILED, RESTORE_METHOD, RESTORED, RESTORING, SAFETY_TRIGGER, SNAPSHOTTING, STOPPING,
                      Restore, restore_id)
from .task import Task
from .log import Log

if TYPE_CHECKING:
    from .application import Ledger
    from .services.base import Decide


class RestoreRunner:
    """Runs the steps of restores; safe with any number of workers.

    `advance` settles a finished safety snapshot and claims the next step (a
    `DrainStarted` or `CpiCallStarted` appended under optimistic concurrency:
    a worker that loses the race sees the step taken). `execute` runs a
    claimed step outside any transaction and records its outcome. The safety
    snapshot is executed by the ordinary snapshot worker; its outcome on the
    task brings the restore back here.
    """

    def __init__(self, ledger: Ledger, agent: Agent, cpis: Mapping[str, Cpi], worker: str,
                 disk_locks: DiskLocks | None = None, log: Log | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 on_call: Callable[[str, str, str, float], None] | None = None) -> None:
        self.ledger = ledger
        self.agent = agent
        self.cpis = cpis
        self.worker = worker
        self.disk_locks = disk_locks or DiskLocks()
        self.log = log
        self.sleep = sleep
        self.on_call = on_call or (lambda cpi, method, outcome, duration: None)  # metrics
        self.running: set[UUID] = set()  # restores this process executes now

    def is_restore_task(self, task_id: str) -> bool:
        return self.ledger.store.created_with_seen(restore_id(task_id))

    def _save_outcome(self, decide: Decide) -> list[Recording[UUID]]:
        return self.ledger.store.save_through_outage(decide, "a restore step", self.log, self.sleep)

    # Advance ---------------------------------------------------------------------------------

    def advance(self, rid: UUID) -> str | None:
        """Settle the safety snapshot if it has an outcome, then claim the next
        step; returns the step this worker claimed (to `execute`), or None."""
        self.ledger.store.save_with_retry(lambda: self._settle(rid))
        claimed: list[str] = []

        def claim() -> list[Aggregate]:
            claimed.clear()
            restore = self.ledger.restores.get(rid)
            step = restore.pending_step if restore is not None else None
            if restore is None or step is None:
                return []
            task = self.ledger.tasks.get(restore.task_id)
            if step == "drain":
                restore.start_drain(worker=self.worker, actor=task.actor)
            else:
                restore.start_cpi_call(worker=self.worker, actor=task.actor)
            task.start(worker=self.worker, actor=task.actor)
            claimed.append(step)
            return [restore, task]

        self.ledger.store.save_with_retry(claim)
        return claimed[0] if claimed else None

    def _settle(self, rid: UUID) -> list[Aggregate]:
        restore = self.ledger.restores.get(rid)
        if restore is None or restore.state != SNAPSHOTTING or restore.safety_snapshot_id is None:
            return []
        task = self.ledger.tasks.get(restore.task_id)
        outcome = task.outcomes.get(restore.safety_snapshot_id)
        if outcome is None:
            return []
        error = restore.settle_safety_snapshot(outcome, actor=task.actor)
        if error is None:
            return [restore]
        _finish_failed(restore, task, error)
        return [restore, task]

    # Execute --------------------------------------------------------------------------------

    def execute(self, rid: UUID, step: str) -> str | None:
        """Run a claimed step; returns the restore's state afterwards, or None
        when the step was not ours to run."""
        self.running.add(rid)
        try:
            if step == "drain":
                return self._drain_and_stop(rid)
            return self._restore_call(rid)
        finally:
            self.running.discard(rid)

    def _drain_and_stop(self, rid: UUID) -> str | None:
        restore = self.ledger.restores.get(rid)
        if restore is None or restore.state != DRAINING or restore.worker != self.worker:
            return None
        inst = restore.instance
        target = AgentInstance(deployment=restore.deployment, job=inst["job"], index=inst["index"], id=inst["id"],
                               jobs=tuple(inst.get("jobs") or ()))
        # job_shutdown: the jobs stop, the disk stays (next state = the recorded one).
        if not drain_then_stop(self.agent, target, SHUTDOWN, *restore_states(restore.instance),
                               record=lambda step, result: self._record_step(rid, step, result),
                               log_step=lambda step, result: self._log(f"restore {step}", restore, ok=result.ok,
                                                                       error=result.error)):
            return FAILED
        after = self.ledger.restores.get(rid)
        return after.state if after is not None else None

    def _record_step(self, rid: UUID, step: str, result: AgentResult) -> bool:
        """A drain's or stop's outcome; after a stop, in the same save, the safety snapshot request."""
        def decide() -> list[Aggregate]:
            restore = self.ledger.restores.get(rid)
            assert restore is not None
            if restore.state != (DRAINING if step == "drain" else STOPPING) or restore.worker != self.worker:
                return []
            task = self.ledger.tasks.get(restore.task_id)
            error = restore.record_step(step, result, actor=task.actor)
            if error is not None:
                _finish_failed(restore, task, error)
                return [restore, task]
            if step == "drain":
                return [restore]
            dep = self.ledger.deployments.get_or_history(restore.deployment)
            safety = self.ledger.snapshots.new_snapshot(UUID(restore.task_id), dep, restore.instance,
                                                        restore.target_disk, SAFETY_TRIGGER, True, task.actor)
            restore.request_safety_snapshot(str(safety.id), actor=task.actor)
            task.add_operations([str(safety.id)], actor=task.actor)
            return [restore, task, safety]

        saved = self._save_outcome(decide)
        return bool(saved) and result.ok

    def _restore_call(self, rid: UUID) -> str | None:
        restore = self.ledger.restores.get(rid)
        if restore is None or restore.state != RESTORING or restore.worker != self.worker:
            return None
        outcome, record = self._call_cpi(restore)
        duration_s = record["duration_s"]
        assert isinstance(duration_s, float)  # _call_cpi's round(seconds, 6)
        self.on_call(restore.cpi, RESTORE_METHOD, outcome, duration_s)
        self._log("restore cpi call", restore, outcome=outcome, duration_s=record["duration_s"],
                  error=record.get("error"))

        def decide() -> list[Aggregate]:
            current = self.ledger.restores.get(rid)
            assert current is not None
            if current.state != RESTORING or current.worker != self.worker:
                return []
            task = self.ledger.tasks.get(current.task_id)
            if outcome == FAILED:
                error = dict(json_object(record["error"]) or {})
                if not current.new_disk:
                    error["message"] = (f"{error['message']} (the disk's content before the restore is in "
                                        f"safety snapshot {current.safety_snapshot_cid})")
                current.fail("restore", error, call=record, actor=task.actor)
                _finish_failed(current, task, error)
                return [current, task]
            current.record_restored(call=record, actor=task.actor)
            task.operation_finished(current.operation_id, RESTORED, {
                "instance": current.label, "disk_cid": current.target_disk, "snapshot_cid": current.snapshot_cid,
                "reason": current.describe_done(), "new_disk": current.new_disk,
                "safety_snapshot_cid": current.safety_snapshot_cid, "caused_by": current.cause,
            }, actor=task.actor)
            changed: list[Aggregate] = [current]
            dep = self.ledger.store.load(deployment_id(current.deployment))
            if current.new_disk and isinstance(dep, Deployment):
                # The new disk shows in the deployment (GET /deployments/{name}: restored_disks).
                dep.record_restored_disk(disk_cid=current.target_disk, snapshot_cid=current.snapshot_cid,
                                         cpi=current.cpi, task_id=current.task_id, actor=task.actor)
                changed.append(dep)
            return [*changed, task]  # the task last: its end is the log's last word

        self._save_outcome(decide)
        return outcome

    def _call_cpi(self, restore: Restore) -> tuple[str, JsonObject]:
        """Make the restore's CPI call (under the disk's lock); its outcome and record."""
        cpi = self.cpis.get(restore.cpi)
        record: JsonObject = {"method": RESTORE_METHOD, "cpi": restore.cpi, "snapshot_cid": restore.snapshot_cid,
                                  "disk_cid": restore.target_disk, "attempts": restore.attempts}
        calls_made(cpi)  # forget calls this thread made for anything else
        started = time.monotonic()
        try:
            if not isinstance(cpi, RestoresSnapshots):
                raise CpiError(NOT_IMPLEMENTED, f"CPI '{restore.cpi}' cannot restore (no {RESTORE_METHOD})")
            # Never alongside a snapshot of the same disk (the per-disk lock of the CPI calls).
            with self.disk_locks.for_disk(restore.target_disk):
                if restore.new_disk and restore.attempts == 1 and cpi.has_disk(restore.target_disk):
                    raise CpiError(CLOUD_ERROR, f"disk {restore.target_disk} was created after the restore was "
                                                "accepted; it is not overwritten")
                cpi.restore_snapshot(restore.snapshot_cid, restore.target_disk)
            outcome = RESTORED
        except CpiError as error:
            record["error"] = error.as_dict()
            outcome = FAILED
        except Exception as error:  # a bug or an unexpected adapter failure: recorded, never lost
            record["error"] = {"type": type(error).__name__, "message": str(error), "ok_to_retry": False}
            outcome = FAILED
        record["duration_s"] = round(time.monotonic() - started, 6)
        # The restore call's own log (not the has_disk check's), clipped as every CPI call's.
        record_calls(record, [c for c in calls_made(cpi) if c.method == RESTORE_METHOD])
        return outcome, record

    # Recovery: the worker holding a step stopped -----------------------------------------------------

    def recover(self, rid: UUID, dead_worker: str) -> str | None:
        """A drain or stop whose worker died fails the restore (re-running a
        drain is not obviously safe; the disk was not touched). A CPI call whose
        worker died is repeated: a restore replaces the whole content from an
        immutable snapshot, so a second run gives the same disk."""
        result: list[str] = []

        def decide() -> list[Aggregate]:
            result.clear()
            restore = self.ledger.restores.get(rid)
            if restore is None:
                return []
            done = restore.worker_lost(dead_worker, actor=self.worker)
            if done is None:
                return []
            result.append(done)
            if done == "restore":
                return [restore]
            task = self.ledger.tasks.get(restore.task_id)
            assert restore.error is not None
            _finish_failed(restore, task, restore.error)
            return [restore, task]

        self.ledger.store.save_with_retry(decide)
        if result == ["restore"]:
            return f"retried:{self.execute(rid, 'restore')}"
        return result[0] if result else None

    def _log(self, what: str, restore: Restore, **fields: object) -> None:
        if self.log is not None:
            failed = fields.get("ok") is False or fields.get("outcome") == "failed"
            (self.log.warning if failed else self.log.info)(
                what, task_id=restore.task_id, deployment=restore.deployment, disk_cid=restore.target_disk,
                snapshot_cid=restore.snapshot_cid, **fields)


def _finish_failed(restore: Restore, task: Task, error: JsonObject) -> None:
    task.operation_finished(restore.operation_id, FAILED, {
        "instance": restore.label, "disk_cid": restore.target_disk, "snapshot_cid": restore.snapshot_cid,
        "error_type": error["type"], "message": error["message"], "caused_by": restore.cause,
    }, actor=task.actor)
