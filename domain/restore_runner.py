"""Executing restores: claim a step, run it outside any transaction, record its outcome.

See domain/restore.py for what a restore is and the order of its steps.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import InterfaceError, OperationalError

from .agent import AGENT_ERROR, SHUTDOWN, Agent, AgentInstance, AgentResult, restore_states
from .application import Ledger
from .cpi import CLOUD_ERROR, NOT_IMPLEMENTED, CpiError, RecordsCalls, RestoresSnapshots
from .deployment import deployment_id
from .operations import DiskLocks
from .restore import (CLAIMED_STATES, DRAINING, FAILED, RESTORE_METHOD, RESTORED, RESTORING, SAFETY_TRIGGER,
                      SNAPSHOTTING, STOPPING, WORKER_LOST, Restore, restore_id)
from .task import Task


class RestoreRunner:
    """Runs the steps of restores; safe with any number of workers.

    `advance` settles a finished safety snapshot and claims the next step (a
    `DrainStarted` or `CpiCallStarted` appended under optimistic concurrency:
    a worker that loses the race sees the step taken). `execute` runs a
    claimed step outside any transaction and records its outcome. The safety
    snapshot is executed by the ordinary snapshot worker; its outcome on the
    task brings the restore back here.
    """

    def __init__(self, ledger: Ledger, agent: Agent, cpis: Mapping[str, Any], worker: str,
                 disk_locks: Any = None, log: Any = None, sleep: Callable[[float], None] = time.sleep,
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

    def _restore(self, rid: UUID) -> Restore | None:
        found = self.ledger._get(rid)
        return found if isinstance(found, Restore) else None

    def is_restore_task(self, task_id: str) -> bool:
        return self.ledger.created_with_seen(restore_id(task_id))

    # Advance ---------------------------------------------------------------------------------

    def advance(self, rid: UUID) -> str | None:
        """Settle the safety snapshot if it has an outcome, then claim the next
        step; returns the step this worker claimed (to `execute`), or None."""
        self.ledger.save_with_retry(lambda: self._settle(rid))
        claimed: list[str] = []

        def claim() -> list[Aggregate]:
            claimed.clear()
            restore = self._restore(rid)
            step = restore.pending_step if restore is not None else None
            if step is None:
                return []
            task = self.ledger.get_task(restore.task_id)
            if step == "drain":
                restore.start_drain(worker=self.worker, actor=task.actor)
            else:
                restore.start_cpi_call(worker=self.worker, actor=task.actor)
            task.start(worker=self.worker, actor=task.actor)
            claimed.append(step)
            return [restore, task]

        self.ledger.save_with_retry(claim)
        return claimed[0] if claimed else None

    def _settle(self, rid: UUID) -> list[Aggregate]:
        restore = self._restore(rid)
        if restore is None or restore.state != SNAPSHOTTING or restore.safety_snapshot_id is None:
            return []
        task = self.ledger.get_task(restore.task_id)
        outcome = task.outcomes.get(restore.safety_snapshot_id)
        if outcome is None:
            return []
        if outcome["outcome"] == "taken":
            restore._safety_taken(task_id=restore.task_id, snapshot_id=restore.safety_snapshot_id,
                                  snapshot_cid=outcome["snapshot_cid"], disk_cid=restore.target_disk,
                                  actor=task.actor, caused_by=outcome.get("caused_by"))
            return [restore]
        error = {"type": outcome.get("error_type") or outcome["outcome"],
                 "message": f"the safety snapshot of disk {restore.target_disk} was not taken "
                            f"({outcome['outcome']}: {outcome.get('message') or outcome.get('reason', '')}); "
                            "the disk was not touched"}
        restore._safety_failed(task_id=restore.task_id, snapshot_id=restore.safety_snapshot_id,
                               outcome=outcome["outcome"], error=error, actor=task.actor,
                               caused_by=outcome.get("caused_by"))
        self._finish_failed(restore, task, error)
        return [restore, task]

    def _finish_failed(self, restore: Restore, task: Task, error: dict[str, Any]) -> None:
        task.operation_finished(restore.operation_id, FAILED, {
            "instance": restore.label, "disk_cid": restore.target_disk, "snapshot_cid": restore.snapshot_cid,
            "error_type": error["type"], "message": error["message"], "caused_by": restore.cause,
        }, actor=task.actor)

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
        restore = self._restore(rid)
        if restore is None or restore.state != DRAINING or restore.worker != self.worker:
            return None
        inst = restore.instance
        target = AgentInstance(deployment=restore.deployment, job=inst["job"], index=inst["index"], id=inst["id"],
                               jobs=tuple(inst.get("jobs") or ()))
        # job_shutdown: the jobs stop, the disk stays (next state = the recorded one).
        drained = _agent_call(lambda: self.agent.drain(target, SHUTDOWN, *restore_states(restore.instance)), target)
        self._log("restore drain", restore, ok=drained.ok, error=drained.error)
        if not self._record_step(rid, DRAINING, "drain", drained):
            return FAILED
        stopped = _agent_call(lambda: self.agent.stop(target), target)
        self._log("restore stop", restore, ok=stopped.ok, error=stopped.error)
        if not self._record_step(rid, STOPPING, "stop", stopped):
            return FAILED
        after = self._restore(rid)
        return after.state if after is not None else None

    def _record_step(self, rid: UUID, expected: str, step: str, result: AgentResult) -> bool:
        """A drain's or stop's outcome; after a stop, in the same save, the safety snapshot request."""
        def decide() -> list[Aggregate]:
            restore = self._restore(rid)
            assert restore is not None
            if restore.state != expected or restore.worker != self.worker:
                return []
            task = self.ledger.get_task(restore.task_id)
            data = result.as_dict()
            if not result.ok:
                error = result.error or {"type": AGENT_ERROR, "message": "failed"}
                error = {**error, "message": f"{error['message']}; the disk was not touched"}
                failed = restore._drain_failed if step == "drain" else restore._stop_failed
                failed(task_id=restore.task_id, instance=restore.label, error=error, result=data, actor=task.actor,
                       caused_by=restore.cause)
                self._finish_failed(restore, task, error)
                return [restore, task]
            if step == "drain":
                restore._drain_completed(task_id=restore.task_id, instance=restore.label, result=data,
                                         actor=task.actor, caused_by=restore.cause)
                return [restore]
            restore._job_stopped(task_id=restore.task_id, instance=restore.label, result=data, actor=task.actor,
                                 caused_by=restore.cause)
            dep = self.ledger.get_deployment_or_history(restore.deployment)
            safety = self.ledger._new_snapshot(UUID(restore.task_id), dep, restore.instance, restore.target_disk,
                                               SAFETY_TRIGGER, True, task.actor)
            restore._safety_requested(task_id=restore.task_id, snapshot_id=str(safety.id),
                                      disk_cid=restore.target_disk, actor=task.actor, caused_by=restore.cause)
            task.add_operations([str(safety.id)], actor=task.actor)
            return [restore, task, safety]

        saved = _persist(self.ledger, decide, self.log, self.sleep)
        return bool(saved) and result.ok

    def _restore_call(self, rid: UUID) -> str | None:
        restore = self._restore(rid)
        if restore is None or restore.state != RESTORING or restore.worker != self.worker:
            return None
        cpi = self.cpis.get(restore.cpi)
        record: dict[str, Any] = {"method": RESTORE_METHOD, "cpi": restore.cpi, "snapshot_cid": restore.snapshot_cid,
                                  "disk_cid": restore.target_disk, "attempts": restore.attempts}
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
        last = cpi.last_call if isinstance(cpi, RecordsCalls) else None
        if last is not None and last.method == RESTORE_METHOD:
            record.update(request_id=last.request_id, log=last.log[:16_384])
        self.on_call(restore.cpi, RESTORE_METHOD, outcome, record["duration_s"])
        self._log("restore cpi call", restore, outcome=outcome, duration_s=record["duration_s"],
                  error=record.get("error"))

        def decide() -> list[Aggregate]:
            current = self._restore(rid)
            assert current is not None
            if current.state != RESTORING or current.worker != self.worker:
                return []
            task = self.ledger.get_task(current.task_id)
            if outcome == FAILED:
                error = dict(record["error"])
                if not current.new_disk:
                    error["message"] += (f" (the disk's content before the restore is in safety snapshot "
                                         f"{current.safety_snapshot_cid})")
                current._failed(task_id=current.task_id, step="restore", error=error, call=record, actor=task.actor,
                                caused_by=current.cause)
                self._finish_failed(current, task, error)
                return [current, task]
            jobs = [] if current.new_disk else list(current.instance.get("jobs") or [])
            current._restored(task_id=current.task_id, snapshot_cid=current.snapshot_cid,
                              disk_cid=current.target_disk, new_disk=current.new_disk,
                              safety_snapshot_cid=current.safety_snapshot_cid, jobs_left_stopped=jobs, call=record,
                              actor=task.actor, caused_by=current.cause)
            task.operation_finished(current.operation_id, RESTORED, {
                "instance": current.label, "disk_cid": current.target_disk, "snapshot_cid": current.snapshot_cid,
                "reason": current.describe_done(), "new_disk": current.new_disk,
                "safety_snapshot_cid": current.safety_snapshot_cid, "caused_by": current.cause,
            }, actor=task.actor)
            changed: list[Aggregate] = [current]
            dep = self.ledger._get(deployment_id(current.deployment))
            if current.new_disk and dep is not None:
                # The new disk shows in the deployment (GET /deployments/{name}: restored_disks).
                dep.record_restored_disk(disk_cid=current.target_disk, snapshot_cid=current.snapshot_cid,
                                         cpi=current.cpi, task_id=current.task_id, actor=task.actor)
                changed.append(dep)
            return [*changed, task]  # the task last: its end is the log's last word

        _persist(self.ledger, decide, self.log, self.sleep)
        return outcome

    # Recovery: the worker holding a step stopped -----------------------------------------------------

    def recover(self, rid: UUID, dead_worker: str) -> str | None:
        """A drain or stop whose worker died fails the restore (re-running a
        drain is not obviously safe; the disk was not touched). A CPI call whose
        worker died is repeated: a restore replaces the whole content from an
        immutable snapshot, so a second run gives the same disk."""
        result: list[str] = []

        def decide() -> list[Aggregate]:
            result.clear()
            restore = self._restore(rid)
            if restore is None or restore.state not in CLAIMED_STATES or restore.worker != dead_worker:
                return []
            task = self.ledger.get_task(restore.task_id)
            if restore.state == RESTORING:
                restore._cpi_call_in_doubt(task_id=restore.task_id, method=RESTORE_METHOD, worker=dead_worker,
                                           attempt=restore.attempts,
                                           reason=f"worker {dead_worker} stopped during the restore call; "
                                                  "repeating it is safe", actor=self.worker, caused_by=restore.cause)
                restore.start_cpi_call(worker=self.worker, actor=self.worker)
                result.append("restore")
                return [restore]
            step = "drain" if restore.state == DRAINING else "stop"
            error = {"type": WORKER_LOST, "message": f"worker {dead_worker} stopped during the {step} of "
                     f"{restore.label}; the disk was not touched; its jobs may be drained or stopped"}
            restore._failed(task_id=restore.task_id, step=step, error=error, call=None, actor=self.worker,
                            caused_by=restore.cause)
            self._finish_failed(restore, task, error)
            result.append(FAILED)
            return [restore, task]

        self.ledger.save_with_retry(decide)
        if result == ["restore"]:
            return f"retried:{self.execute(rid, 'restore')}"
        return result[0] if result else None

    def _log(self, what: str, restore: Restore, **fields: Any) -> None:
        if self.log is not None:
            failed = fields.get("ok") is False or fields.get("outcome") == "failed"
            (self.log.warning if failed else self.log.info)(
                what, task_id=restore.task_id, deployment=restore.deployment, disk_cid=restore.target_disk,
                snapshot_cid=restore.snapshot_cid, **fields)


def _agent_call(step: Callable[[], AgentResult], target: AgentInstance) -> AgentResult:
    try:
        return step()
    except Exception as error:  # the adapter broke: a failed step, recorded, never lost
        return AgentResult.failure(target.jobs, AGENT_ERROR, f"{type(error).__name__}: {error}")


def _persist(ledger: Ledger, decide: Callable[[], list[Aggregate]], log: Any,
             sleep: Callable[[float], None]) -> Any:
    """Save a step's outcome whatever it takes: only this process knows it. While
    the database is away keep trying (if the process dies meanwhile, the
    recovery sweep finds the step abandoned)."""
    delay = 0.2
    while True:
        try:
            return ledger.save_with_retry(decide)
        except (OperationalError, InterfaceError) as error:
            if log is not None:
                log.warning("cannot record a restore step yet; retrying", error=str(error), retry_in_s=delay)
            sleep(delay)
            delay = min(delay * 2, 5.0)
