"""Restoring a snapshot: into the disk it was taken of (in place), or into a new disk.

BOSH has no restore ("BOSH does not provide a CLI command to recover from a
snapshot"), and its CPI protocol has no method for one. snapledger restores
through CPIs that can: today the built-in local CPI (`restore_snapshot`).

In place, per the job-update order (drain -> stop -> snapshot): the instance
that owns the disk is drained (`job_shutdown`) and stopped through the agent,
a *safety snapshot* of the disk's current content is taken (an ordinary
`Snapshot`, trigger `restore_safety`, clean: its jobs are stopped, listed and
deletable like any other), then the CPI replaces the disk's content with the
snapshot's. The jobs are left stopped: the agent has no start, and starting
them belongs to whatever deploys (as in BOSH, where a deploy starts jobs).

Into a new disk: the snapshot's content goes into a new disk; nothing running
is touched, so there is no drain, no stop and no safety snapshot.

One `Restore` aggregate per command (id uuid5 of the task id) holds its
progress. Every step appends to it under optimistic concurrency, so a step is
claimed by one worker only; its events carry `task_id` (they are the task's
log) and `caused_by` (the event each follows from).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError

from .agent import AGENT_ERROR, SHUTDOWN, Agent, AgentInstance, AgentResult
from .application import ENABLE_HINT, Ledger
from .cpi import CLOUD_ERROR, NOT_IMPLEMENTED, CpiError
from .deployment import deployment_id
from .errors import Conflict, LedgerError, SnapshotNotFound, SnapshotsDisabled
from .names import SELF_DEPLOYMENT, is_valid_name
from .snapshot import DELETE_REQUESTED, DELETED, DELETING, IN_DOUBT, TAKEN, Refusal, Snapshot, snapshot_cid_id
from .task import Task

KIND = "restore"
SAFETY_TRIGGER = "restore_safety"
RESTORE_METHOD = "restore_snapshot"

# States
REQUESTED = "requested"
DRAINING, STOPPING, SNAPSHOTTING = "draining", "stopping", "snapshotting"
RESTORE_PENDING = "restore_pending"  # the CPI call may be claimed
RESTORING = "restoring"  # the CPI call is running
RESTORED, FAILED = "restored", "failed"
# States in which a worker holds the restore (the recovery sweep looks at these).
CLAIMED_STATES = frozenset({DRAINING, STOPPING, RESTORING})

WORKER_LOST = "Snapledger::WorkerLost"
CANNOT_RESTORE = "Snapledger::CannotRestore"
DISK_EXISTS = "Snapledger::DiskExists"


class NotRestorable(Conflict):
    code = "snapshot_not_restorable"


class CpiCannotRestore(Conflict):
    code = "cpi_cannot_restore"


class DiskExists(Conflict):
    code = "disk_exists"


class DiskNotInInventory(Conflict):
    code = "disk_not_in_inventory"


def restore_id(task_id: str | UUID) -> UUID:
    return uuid5(NAMESPACE_URL, f"snapledger:/restores/{task_id}")


def restore_operation_id(task_id: str | UUID) -> str:
    """The restore's own operation on the task (the safety snapshot is another one)."""
    return str(uuid5(NAMESPACE_URL, f"snapledger:/restores/{task_id}/restore"))


def new_disk_id(cpi: str, disk_cid: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"snapledger:/restored-disks/{cpi}/{disk_cid}")


def _label(inst: dict[str, Any]) -> str:
    return f"{inst['job']}/{inst['index'] if inst.get('index') is not None else inst['id']}"


class NewDisk(Aggregate):
    """A disk name a restore creates, claimed in the same transaction as the
    request: two restores can never both write into one new disk."""

    @staticmethod
    def create_id(cpi: str, disk_cid: str) -> UUID:
        return new_disk_id(cpi, disk_cid)

    @event("Claimed")
    def __init__(self, cpi: str, disk_cid: str, snapshot_cid: str, deployment: str, task_id: str,
                 actor: str) -> None:
        self.cpi = cpi
        self.disk_cid = disk_cid
        self.task_id = task_id


class Restore(Aggregate):
    @staticmethod
    def create_id(task_id: str) -> UUID:
        return restore_id(task_id)

    @event("Requested")
    def __init__(self, task_id: str, deployment: str, snapshot_cid: str, snapshot_id: str, source_disk: str,
                 target_disk: str, new_disk: bool, instance: dict[str, Any], cpi: str, operation_id: str,
                 actor: str) -> None:
        self.task_id = task_id
        self.deployment = deployment
        self.snapshot_cid = snapshot_cid
        self.snapshot_id = snapshot_id
        self.source_disk = source_disk
        self.target_disk = target_disk
        self.new_disk = new_disk
        self.instance = dict(instance)
        self.cpi = cpi
        self.operation_id = operation_id
        self.state = REQUESTED
        self.worker: str | None = None
        self.attempts = 0
        self.safety_snapshot_id: str | None = None
        self.safety_snapshot_cid: str | None = None
        self.error: dict[str, Any] | None = None

    @event("DrainStarted")
    def _drain_started(self, task_id: str, instance: str, worker: str, drain_type: str, jobs: list[str],
                       actor: str, caused_by: str) -> None:
        self.state = DRAINING
        self.worker = worker

    @event("DrainCompleted")
    def _drain_completed(self, task_id: str, instance: str, result: dict[str, Any], actor: str,
                         caused_by: str) -> None:
        self.state = STOPPING

    @event("DrainFailed")
    def _drain_failed(self, task_id: str, instance: str, error: dict[str, Any], result: dict[str, Any],
                      actor: str, caused_by: str) -> None:
        self.state = FAILED
        self.error = dict(error)

    @event("JobStopped")
    def _job_stopped(self, task_id: str, instance: str, result: dict[str, Any], actor: str,
                     caused_by: str) -> None:
        self.state = SNAPSHOTTING

    @event("StopFailed")
    def _stop_failed(self, task_id: str, instance: str, error: dict[str, Any], result: dict[str, Any],
                     actor: str, caused_by: str) -> None:
        self.state = FAILED
        self.error = dict(error)

    @event("SafetySnapshotRequested")
    def _safety_requested(self, task_id: str, snapshot_id: str, disk_cid: str, actor: str,
                          caused_by: str) -> None:
        self.safety_snapshot_id = snapshot_id

    @event("SafetySnapshotTaken")
    def _safety_taken(self, task_id: str, snapshot_id: str, snapshot_cid: str, disk_cid: str, actor: str,
                      caused_by: str | None) -> None:
        self.state = RESTORE_PENDING
        self.safety_snapshot_cid = snapshot_cid

    @event("SafetySnapshotFailed")
    def _safety_failed(self, task_id: str, snapshot_id: str, outcome: str, error: dict[str, Any], actor: str,
                       caused_by: str | None) -> None:
        self.state = FAILED
        self.error = dict(error)

    @event("CpiCallStarted")
    def _cpi_call_started(self, task_id: str, method: str, cpi: str, snapshot_cid: str, disk_cid: str,
                          worker: str, attempt: int, actor: str, caused_by: str) -> None:
        self.state = RESTORING
        self.worker = worker
        self.attempts = attempt

    @event("CpiCallInDoubt")
    def _cpi_call_in_doubt(self, task_id: str, method: str, worker: str, attempt: int, reason: str, actor: str,
                           caused_by: str) -> None:
        # Repeating a restore is safe (the whole content is replaced from an
        # immutable snapshot), so an abandoned call becomes pending again.
        self.state = RESTORE_PENDING

    @event("Restored")
    def _restored(self, task_id: str, snapshot_cid: str, disk_cid: str, new_disk: bool,
                  safety_snapshot_cid: str | None, jobs_left_stopped: list[str], call: dict[str, Any], actor: str,
                  caused_by: str) -> None:
        self.state = RESTORED

    @event("Failed")
    def _failed(self, task_id: str, step: str, error: dict[str, Any], call: dict[str, Any] | None, actor: str,
                caused_by: str) -> None:
        self.state = FAILED
        self.error = dict(error)

    # Queries -----------------------------------------------------------------------

    @property
    def cause(self) -> str:
        """The id of the latest event (`<aggregate id>/<version>`): what the next one follows from."""
        return f"{self.id}/{self.version}"

    @property
    def label(self) -> str:
        return _label(self.instance)

    @property
    def pending_step(self) -> str | None:
        """The step a worker may claim now: `drain` (in place, first), `restore` (the CPI call)."""
        if self.state == REQUESTED:
            return "restore" if self.new_disk else "drain"
        if self.state == RESTORE_PENDING:
            return "restore"
        return None

    # Commands ------------------------------------------------------------------------

    def start_drain(self, worker: str, actor: str) -> None:
        self._drain_started(task_id=self.task_id, instance=self.label, worker=worker, drain_type=SHUTDOWN,
                            jobs=list(self.instance.get("jobs") or []), actor=actor, caused_by=self.cause)

    def start_cpi_call(self, worker: str, actor: str) -> None:
        self._cpi_call_started(task_id=self.task_id, method=RESTORE_METHOD, cpi=self.cpi,
                               snapshot_cid=self.snapshot_cid, disk_cid=self.target_disk, worker=worker,
                               attempt=self.attempts + 1, actor=actor, caused_by=self.cause)

    def describe_done(self) -> str:
        if self.new_disk:
            return f"snapshot {self.snapshot_cid} restored into new disk {self.target_disk}"
        jobs = ", ".join(self.instance.get("jobs") or [])
        return (f"snapshot {self.snapshot_cid} restored into disk {self.target_disk} (safety snapshot "
                f"{self.safety_snapshot_cid}); the jobs of {self.label} ({jobs}) stay stopped: start them "
                "with your deploy tool")


# The service-layer command ----------------------------------------------------------------

def request_restore(ledger: Ledger, deployment: str, snapshot_cid: str, actor: str,
                    to_new_disk: str | None = None) -> Task:
    """Accept a restore: one task, one Restore (and the new disk's claim), durable
    together before the answer. Every refusal is recorded (`Refusal.Recorded`)."""
    if to_new_disk is not None and not is_valid_name(to_new_disk):
        raise LedgerError(f"invalid disk name {to_new_disk!r}: 1-128 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit", field="to_new_disk")
    # Self snapshots (deployment `_self`) have no inventory: they are restored into a new disk only.
    dep = None if deployment == SELF_DEPLOYMENT else ledger.get_deployment(deployment)
    details = {"snapshot_cid": snapshot_cid, "to_new_disk": to_new_disk}

    def refuse(error: LedgerError, **more: Any) -> LedgerError:
        ledger.save(Refusal(command=KIND, reason=error.message, deployment=deployment,
                            details={**details, **more}, actor=actor))
        return error

    index = ledger._get(snapshot_cid_id(snapshot_cid))
    snapshot: Snapshot | None = ledger._get(UUID(index.snapshot_id)) if index is not None else None
    if snapshot is None:
        raise refuse(SnapshotNotFound(f"snapshot '{snapshot_cid}' not found", field="cid"))
    if snapshot.deployment != deployment:
        # Never restore across deployments. The other deployment is named in the
        # recorded refusal (for auditors), not to the caller.
        raise refuse(SnapshotNotFound(
            f"snapshot '{snapshot_cid}' is not a snapshot of deployment '{deployment}'; a snapshot is only "
            "restored within its own deployment", field="cid"), owner=snapshot.deployment)
    if snapshot.state != TAKEN:
        why = {DELETE_REQUESTED: f"is being deleted (task {snapshot.deletion_task_id})",
               DELETING: f"is being deleted (task {snapshot.deletion_task_id})",
               DELETED: "was deleted", IN_DOUBT: "has a deletion in doubt"}.get(snapshot.state, f"is {snapshot.state}")
        raise refuse(NotRestorable(f"snapshot '{snapshot_cid}' {why}; only a taken snapshot can be restored",
                                   field="cid"), state=snapshot.state)
    cpi = snapshot.cpi
    kind = ledger.cpi_types.get(cpi)
    if kind != "local":
        what = "is not configured" if kind is None else "is an external CPI"
        raise refuse(CpiCannotRestore(
            f"CPI '{cpi}' cannot restore: it {what}, and BOSH's CPI protocol has no restore method (snapledger "
            f"does not know a create_disk property that creates a disk from a snapshot for it); restore "
            f"snapshot '{snapshot_cid}' through the IaaS and attach the disk with your deploy tool",
            field="cpi"), cpi=cpi)

    claim: NewDisk | None = None
    if to_new_disk is None and dep is None:
        raise refuse(Conflict("the service host's own disks are restored only into a new disk (to_new_disk)",
                              field="to_new_disk"))
    if to_new_disk is None and dep is not None:
        if not ledger.snapshots_enabled():
            # An in-place restore overwrites the disk: never without a safety snapshot.
            raise refuse(SnapshotsDisabled(f"an in-place restore takes a safety snapshot first, and {ENABLE_HINT}; "
                                           "or restore into a new disk (to_new_disk)", field="enable_snapshots"))
        owners = [i for i in dep.instances if snapshot.disk_cid in i["disks"]]
        if not owners:
            raise refuse(DiskNotInInventory(
                f"disk '{snapshot.disk_cid}' of snapshot '{snapshot_cid}' is no longer in deployment "
                f"'{deployment}'; restore into a new disk instead (to_new_disk)", field="cid"))
        if ledger.cpi_of(dep) != cpi:
            raise refuse(Conflict(
                f"snapshot '{snapshot_cid}' was taken through CPI '{cpi}', deployment '{deployment}' now uses "
                f"'{ledger.cpi_of(dep)}'; restore into a new disk instead (to_new_disk)", field="cpi"))
        other = _listed_elsewhere(ledger, snapshot.disk_cid, deployment)
        if other:
            raise refuse(Conflict(f"disk '{snapshot.disk_cid}' is also listed by another deployment; "
                                  "refusing to restore onto it", field="cid"), listed_by=other)
        inst = owners[0]
        instance = {"id": inst["id"], "job": inst["job"], "index": inst["index"],
                    "jobs": list(inst.get("jobs") or [inst["job"]]), "agent_id": inst.get("agent_id")}
        target = snapshot.disk_cid
    else:
        target = to_new_disk
        exists = (new_disk_id(cpi, target) in ledger.repository
                  or _listed_elsewhere(ledger, target, None)
                  or (ledger.disk_exists is not None and ledger.disk_exists(cpi, target)))
        if exists:
            raise refuse(DiskExists(f"disk '{target}' already exists; a restore into a new disk never "
                                    "overwrites one", field="to_new_disk"))
        instance = {"id": snapshot.instance_id, "job": snapshot.job, "index": snapshot.index, "jobs": []}

    task_id = uuid4()
    op = restore_operation_id(task_id)
    where = f"new disk {target}" if to_new_disk else f"disk {target}"
    task = Task(id=task_id, kind=KIND, description=f"restore snapshot {snapshot_cid} into {where}",
                deployment=deployment, operations=[op], actor=actor,
                context={"snapshot_cid": snapshot_cid, "to_new_disk": to_new_disk, "disk_cid": target})
    restore = Restore(task_id=str(task_id), deployment=deployment, snapshot_cid=snapshot_cid,
                      snapshot_id=str(snapshot.id), source_disk=snapshot.disk_cid, target_disk=target,
                      new_disk=to_new_disk is not None, instance=instance, cpi=cpi, operation_id=op, actor=actor)
    if to_new_disk is not None:
        claim = NewDisk(cpi=cpi, disk_cid=target, snapshot_cid=snapshot_cid, deployment=deployment,
                        task_id=str(task_id), actor=actor)
    try:
        ledger.save(task, restore, *([claim] if claim is not None else []))
    except IntegrityError:
        if claim is not None and claim.id in ledger.repository:  # a racing restore claimed the name first
            raise refuse(DiskExists(f"disk '{target}' is already the target of another restore",
                                    field="to_new_disk")) from None
        raise
    return task


def _listed_elsewhere(ledger: Ledger, disk_cid: str, except_deployment: str | None) -> list[str]:
    """Deployments (other than `except_deployment`) whose inventory lists the disk."""
    found = []
    for name in ledger.deployment_names():
        if name == except_deployment:
            continue
        dep = ledger._get(deployment_id(name))
        if dep is not None and not dep.deleted and disk_cid in dep.disk_cids():
            found.append(name)
    return found


# Execution ------------------------------------------------------------------------------------

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
                 disk_locks: Any = None, log: Any = None, sleep: Callable[[float], None] = time.sleep) -> None:
        from .operations import DiskLocks

        self.ledger = ledger
        self.agent = agent
        self.cpis = cpis
        self.worker = worker
        self.disk_locks = disk_locks or DiskLocks()
        self.log = log
        self.sleep = sleep
        self.running: set[UUID] = set()  # restores this process executes now

    def _restore(self, rid: UUID) -> Restore | None:
        found = self.ledger._get(rid)
        return found if isinstance(found, Restore) else None

    def is_restore_task(self, task_id: str) -> bool:
        return restore_id(task_id) in self.ledger.repository

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
        # job_shutdown, and no next state: the jobs stop, the disk stays (a
        # script that moves data off a disk whose next size is 0 must not).
        drained = _agent_call(lambda: self.agent.drain(target, SHUTDOWN, None, None), target)
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
                                  "disk_cid": restore.target_disk, "attempt": restore.attempts}
        started = time.monotonic()
        try:
            method = getattr(cpi, RESTORE_METHOD, None)
            if method is None:
                raise CpiError(NOT_IMPLEMENTED, f"CPI '{restore.cpi}' cannot restore (no {RESTORE_METHOD})")
            # Never alongside a snapshot of the same disk (the per-disk lock of the CPI calls).
            with self.disk_locks.for_disk(restore.target_disk):
                if restore.new_disk and restore.attempts == 1 and cpi.has_disk(restore.target_disk):
                    raise CpiError(CLOUD_ERROR, f"disk {restore.target_disk} was created after the restore was "
                                                "accepted; it is not overwritten")
                method(restore.snapshot_cid, restore.target_disk)
            outcome = RESTORED
        except CpiError as error:
            record["error"] = error.as_dict()
            outcome = FAILED
        except Exception as error:  # a bug or an unexpected adapter failure: recorded, never lost
            record["error"] = {"type": type(error).__name__, "message": str(error), "ok_to_retry": False}
            outcome = FAILED
        record["duration_s"] = round(time.monotonic() - started, 6)
        last = getattr(cpi, "last_call", None)
        if last is not None and getattr(last, "method", None) == RESTORE_METHOD:
            record.update(request_id=last.request_id, log=last.log[:16_384])
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
            changed: list[Aggregate] = [current, task]
            dep = self.ledger._get(deployment_id(current.deployment))
            if current.new_disk and dep is not None:
                # The new disk shows in the deployment (GET /deployments/{name}: restored_disks).
                dep.record_restored_disk(disk_cid=current.target_disk, snapshot_cid=current.snapshot_cid,
                                         cpi=current.cpi, task_id=current.task_id, actor=task.actor)
                changed.append(dep)
            return changed

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
            self.log.info(what, task_id=restore.task_id, deployment=restore.deployment, disk_cid=restore.target_disk,
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
