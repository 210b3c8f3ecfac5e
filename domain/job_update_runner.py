"""Executing job updates: claim an instance, drain and stop it outside any transaction, record each outcome.

See domain/job_update.py for what a job update is and the order of its steps.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from collections.abc import Callable
from uuid import UUID

from eventsourcing.domain import Aggregate

from .agent import Agent, AgentInstance, AgentResult, drain_then_stop
from .job_update import (CANCELLED, DRAINING, FAILED, READY, SNAPSHOT_OK, SNAPSHOTTING, STOPPING, TRIGGER, JobUpdate,
                         UpdateInstance, job_update_id, label_of)
from .json_types import JsonObject, text
from .snapshot import Snapshot
from .task import Task
from .log import Log

if TYPE_CHECKING:
    from .application import Ledger


class JobUpdateRunner:
    """Runs the steps of job updates; safe with any number of workers.

    `advance` settles instances whose snapshots all have outcomes and claims
    the instances that may start now (a `DrainStarted` appended under
    optimistic concurrency: a worker that loses the race simply sees the
    instance taken). `execute` runs one claimed instance's drain and stop
    (outside any transaction) and records each outcome; the clean snapshots it
    requests are executed by the ordinary snapshot worker. `recover` fails an
    instance whose worker died during its drain or stop.
    """

    def __init__(self, ledger: Ledger, agent: Agent, worker: str, log: Log | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.ledger = ledger
        self.agent = agent
        self.worker = worker
        self.log = log
        self.sleep = sleep
        # (update id, instance id) this process runs now, from the claim on (the
        # recovery sweep never takes these for abandoned).
        self.running: set[tuple[UUID, str]] = set()

    def is_job_update_task(self, task_id: str) -> bool:
        return self.ledger.store.created_with_seen(job_update_id(task_id))

    # Advance -------------------------------------------------------------------------

    def advance(self, update_id: UUID) -> list[str]:
        """Settle finished snapshot steps, then claim what may start; returns the
        ids of the instances this worker claimed (to `execute`)."""
        self.ledger.store.save_with_retry(lambda: self._settle(update_id))
        claimed: list[str] = []
        picked: list[str] = []

        def claim() -> list[Aggregate]:
            picked.clear()
            update = self.ledger.job_updates.get(update_id)
            inst = update.next_startable() if update is not None else None
            if update is None or inst is None:
                return []
            task = self.ledger.tasks.get(update.task_id)
            update.start_drain(inst["id"], worker=self.worker, actor=task.actor)
            task.start(worker=self.worker, actor=task.actor)
            picked.append(inst["id"])
            return [update, task]

        while True:
            picked.clear()
            self.ledger.store.save_with_retry(claim)
            if not picked:
                return claimed
            claimed.append(picked[0])

    def _settle(self, update_id: UUID) -> list[Aggregate]:
        update = self.ledger.job_updates.get(update_id)
        if update is None:
            return []
        task = self.ledger.tasks.get(update.task_id)
        changed = False
        for inst in update.instances:
            if inst["state"] != SNAPSHOTTING or not inst["snapshots"]:
                continue
            outcomes: list[JsonObject] = [task.outcomes[s] for s in inst["snapshots"] if task.outcomes.get(s)]
            if len(outcomes) < len(inst["snapshots"]):
                continue
            changed = True
            failures = [o for o in outcomes if o["outcome"] not in SNAPSHOT_OK]
            if failures:
                error = update.fail_snapshots(inst["id"], failures, actor=task.actor)
                self._fail_rest(update, task, inst, error)
            else:
                snapshots = [{"disk_cid": o.get("disk_cid"), "snapshot_cid": o.get("snapshot_cid"),
                              "outcome": o["outcome"], **({"reason": o["reason"]} if o.get("reason") else {})}
                             for o in outcomes]
                # Ready follows from the last of its snapshots to finish.
                last = [o for op, o in task.outcomes.items() if op in inst["snapshots"]][-1]
                self._ready(update, task, inst, snapshots, caused_by=text(last.get("caused_by")))
        return [update, task] if changed else []

    @staticmethod
    def _ready(update: JobUpdate, task: Task, inst: UpdateInstance, snapshots: list[JsonObject],
               caused_by: str | None) -> None:
        update.ready(inst["id"], snapshots, actor=task.actor, caused_by=caused_by)
        task.operation_finished(inst["operation_id"], READY, {
            "instance": label_of(inst), "instance_id": inst["id"], "disk_cid": None, "snapshot_cid": None,
            "reason": "ready for update", "caused_by": update.cause_of(inst["id"])}, actor=task.actor)

    @staticmethod
    def _fail_rest(update: JobUpdate, task: Task, inst: UpdateInstance, error: dict[str, str]) -> None:
        """The failed instance's outcome, and every instance not started yet is cancelled
        (both follow from the failure, the instance's latest event)."""
        failure = update.cause_of(inst["id"])
        task.operation_finished(inst["operation_id"], FAILED, {
            "instance": label_of(inst), "instance_id": inst["id"], "disk_cid": None, "snapshot_cid": None,
            "error_type": error["type"], "message": error["message"], "caused_by": failure}, actor=task.actor)
        reason = f"instance {label_of(inst)} failed; the update does not go on"
        for waiting in update.cancel_waiting(reason, actor=task.actor, caused_by=failure):
            task.operation_finished(waiting["operation_id"], CANCELLED, {
                "instance": label_of(waiting), "instance_id": waiting["id"], "disk_cid": None,
                "snapshot_cid": None, "error_type": "Cancelled", "message": reason,
                "caused_by": update.cause_of(waiting["id"])}, actor=task.actor)

    # Execute one claimed instance -----------------------------------------------------------

    def execute(self, update_id: UUID, instance_id: str) -> str | None:
        """Drain, stop, then request the clean snapshots (or skip them). Returns
        the instance's state afterwards, or None if it was not ours to run."""
        self.running.add((update_id, instance_id))
        try:
            return self._drain_and_stop(update_id, instance_id)
        finally:
            self.running.discard((update_id, instance_id))

    def _drain_and_stop(self, update_id: UUID, instance_id: str) -> str | None:
        update = self.ledger.job_updates.get(update_id)
        if update is None:
            return None
        inst = update.instance(instance_id)
        if inst["state"] != DRAINING or inst["worker"] != self.worker:
            return None
        task_id = update.task_id
        target = AgentInstance(deployment=update.deployment, job=inst["job"], index=inst["index"], id=inst["id"],
                               jobs=tuple(inst["jobs"]))
        # Updates announced before instances carried their own states used the update's.
        current = inst.get("current_state", update.current_state)
        nxt = inst.get("next_state", update.next_state)
        if not drain_then_stop(self.agent, target, update.drain_type, current, nxt,
                               record=lambda step, result: self._record(update_id, instance_id, step, result),
                               log_step=lambda step, result: self._log(step, target, result, task_id)):
            return FAILED
        update = self.ledger.job_updates.get(update_id)
        return update.instance(instance_id)["state"] if update is not None else None

    def _record(self, update_id: UUID, instance_id: str, step: str, result: AgentResult) -> bool:
        """Record a step's outcome; after a successful stop, in the same save,
        the clean snapshot requests (or the skip and readiness)."""
        def decide() -> list[Aggregate]:
            update = self.ledger.job_updates.get(update_id)
            assert update is not None
            inst = update.instance(instance_id)
            if inst["state"] != (DRAINING if step == "drain" else STOPPING) or inst["worker"] != self.worker:
                return []
            task = self.ledger.tasks.get(update.task_id)
            error = update.record_step(instance_id, step, result, actor=task.actor)
            if error is not None:
                self._fail_rest(update, task, inst, error)
                return [update, task]
            if step == "drain":
                return [update]
            return [update, task, *self._clean_snapshots(update, task, inst)]

        saved = self.ledger.store.save_through_outage(decide, "a job update step", self.log, self.sleep)
        return bool(saved) and result.ok

    def _clean_snapshots(self, update: JobUpdate, task: Task, inst: UpdateInstance) -> list[Snapshot]:
        if not self.ledger.settings.snapshots_enabled():
            reason = "snapshots are disabled"
        elif not inst["disks"]:
            reason = "no persistent disks"
        else:
            reason = ""
        if reason:
            update.skip_snapshots(inst["id"], reason, actor=task.actor)
            self._ready(update, task, inst, [], caused_by=update.cause_of(inst["id"]))
            return []
        dep = self.ledger.deployments.get_or_history(update.deployment)
        snapshots = [self.ledger.snapshots.new_snapshot(UUID(update.task_id), dep, inst, disk, TRIGGER, True,
                                                        task.actor)
                     for disk in inst["disks"]]
        ids = [str(s.id) for s in snapshots]
        update.request_clean_snapshots(inst["id"], ids, actor=task.actor)
        task.add_operations(ids, actor=task.actor)
        return snapshots

    # Recovery: the worker holding a drain or stop died -------------------------------------------

    def recover(self, update_id: UUID, instance_id: str, dead_worker: str) -> str | None:
        """Fail an instance whose drain or stop was held by `dead_worker` (found
        silent by the recovery sweep), exactly like a failed step: its outcome on
        the task, the instances not started yet cancelled. The drain is not run
        again (not obviously safe). Returns `failed`, or None when the instance
        was no longer that worker's (it finished, or another recovery won)."""
        lost: list[dict[str, str]] = []

        def decide() -> list[Aggregate]:
            lost.clear()
            update = self.ledger.job_updates.get(update_id)
            if update is None:
                return []
            task = self.ledger.tasks.get(update.task_id)
            error = update.worker_lost(instance_id, dead_worker, actor=self.worker)
            if error is None:
                return []
            self._fail_rest(update, task, update.instance(instance_id), error)
            lost.append(error)
            return [update, task]

        self.ledger.store.save_with_retry(decide)
        return FAILED if lost else None

    def _log(self, step: str, target: AgentInstance, result: AgentResult, task_id: str) -> None:
        if self.log is not None:
            # A failed drain or stop fails the instance: a warning, with where it happened.
            emit = self.log.info if result.ok else self.log.warning
            emit(f"job {step}", instance=target.label, instance_id=target.id, jobs=list(target.jobs),
                 deployment=target.deployment, task_id=task_id, ok=result.ok, duration_s=round(result.duration_s, 3),
                 error=result.error)
