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
log) and `caused_by` (the event each follows from). The steps are run by
`RestoreRunner` (domain/restore_runner.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NotRequired, TypedDict
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from .agent import AGENT_ERROR, SHUTDOWN, WORKER_LOST, AgentResult
from .errors import Conflict, InvalidState
from .json_types import JsonObject

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


class RestoreInstance(TypedDict):
    """The instance whose disk a restore writes (in place: from the inventory;
    into a new disk: what the snapshot says, no jobs to drain)."""

    id: str
    job: str
    index: int | None
    jobs: list[str]
    agent_id: NotRequired[str | None]
    persistent_disk: NotRequired[int]


def label_of(inst: Mapping[str, object]) -> str:
    return f"{inst['job']}/{inst['index'] if inst.get('index') is not None else inst['id']}"


def _text(value: object) -> str | None:
    """A text field of a JSON value (an outcome's `caused_by`), None when absent."""
    return value if isinstance(value, str) else None


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
                 target_disk: str, new_disk: bool, instance: RestoreInstance, cpi: str, operation_id: str,
                 actor: str) -> None:
        self.task_id = task_id
        self.deployment = deployment
        self.snapshot_cid = snapshot_cid
        self.snapshot_id = snapshot_id
        self.source_disk = source_disk
        self.target_disk = target_disk
        self.new_disk = new_disk
        self.instance = RestoreInstance(**instance)
        self.cpi = cpi
        self.operation_id = operation_id
        self.state = REQUESTED
        self.worker: str | None = None
        self.attempts = 0
        self.safety_snapshot_id: str | None = None
        self.safety_snapshot_cid: str | None = None
        self.error: JsonObject | None = None

    @event("DrainStarted")
    def _drain_started(self, task_id: str, instance: str, worker: str, drain_type: str, jobs: list[str],
                       actor: str, caused_by: str) -> None:
        self.state = DRAINING
        self.worker = worker

    @event("DrainCompleted")
    def _drain_completed(self, task_id: str, instance: str, result: JsonObject, actor: str,
                         caused_by: str) -> None:
        self.state = STOPPING

    @event("DrainFailed")
    def _drain_failed(self, task_id: str, instance: str, error: JsonObject, result: JsonObject,
                      actor: str, caused_by: str) -> None:
        self.state = FAILED
        self.error = dict(error)

    @event("JobStopped")
    def _job_stopped(self, task_id: str, instance: str, result: JsonObject, actor: str,
                     caused_by: str) -> None:
        self.state = SNAPSHOTTING

    @event("StopFailed")
    def _stop_failed(self, task_id: str, instance: str, error: JsonObject, result: JsonObject,
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
    def _safety_failed(self, task_id: str, snapshot_id: str, outcome: str, error: JsonObject, actor: str,
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
                  safety_snapshot_cid: str | None, jobs_left_stopped: list[str], call: JsonObject, actor: str,
                  caused_by: str) -> None:
        self.state = RESTORED

    @event("Failed")
    def _failed(self, task_id: str, step: str, error: JsonObject, call: JsonObject | None, actor: str,
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
        return label_of(self.instance)

    @property
    def pending_step(self) -> str | None:
        """The step a worker may claim now: `drain` (in place, first), `restore` (the CPI call)."""
        if self.state == REQUESTED:
            return "restore" if self.new_disk else "drain"
        if self.state == RESTORE_PENDING:
            return "restore"
        return None

    # Commands ------------------------------------------------------------------------

    def _expect(self, *states: str) -> None:
        if self.state not in states:
            raise InvalidState(f"restore {self.task_id} is {self.state}, not {' or '.join(states)}")

    def start_drain(self, worker: str, actor: str) -> None:
        self._expect(REQUESTED)
        self._drain_started(task_id=self.task_id, instance=self.label, worker=worker, drain_type=SHUTDOWN,
                            jobs=list(self.instance.get("jobs") or []), actor=actor, caused_by=self.cause)

    def record_step(self, step: str, result: AgentResult, actor: str) -> JsonObject | None:
        """A drain's or stop's outcome (`step`: "drain" or "stop"); returns the
        error that failed the restore, or None when the step succeeded."""
        self._expect(DRAINING if step == "drain" else STOPPING)
        if not result.ok:
            failed = result.error or {"type": AGENT_ERROR, "message": "failed"}
            error: JsonObject = {**failed, "message": f"{failed['message']}; the disk was not touched"}
            (self._drain_failed if step == "drain" else self._stop_failed)(
                task_id=self.task_id, instance=self.label, error=error, result=result.as_dict(), actor=actor,
                caused_by=self.cause)
            return error
        (self._drain_completed if step == "drain" else self._job_stopped)(
            task_id=self.task_id, instance=self.label, result=result.as_dict(), actor=actor, caused_by=self.cause)
        return None

    def request_safety_snapshot(self, snapshot_id: str, actor: str) -> None:
        self._expect(SNAPSHOTTING)
        self._safety_requested(task_id=self.task_id, snapshot_id=snapshot_id, disk_cid=self.target_disk,
                               actor=actor, caused_by=self.cause)

    def settle_safety_snapshot(self, outcome: JsonObject, actor: str) -> JsonObject | None:
        """The safety snapshot's outcome on the task; returns the error that
        failed the restore, or None when it was taken (the CPI call may start)."""
        self._expect(SNAPSHOTTING)
        assert self.safety_snapshot_id is not None
        if outcome["outcome"] == "taken":
            self._safety_taken(task_id=self.task_id, snapshot_id=self.safety_snapshot_id,
                               snapshot_cid=str(outcome["snapshot_cid"]), disk_cid=self.target_disk, actor=actor,
                               caused_by=_text(outcome.get("caused_by")))
            return None
        error: JsonObject = {"type": outcome.get("error_type") or outcome["outcome"],
                 "message": f"the safety snapshot of disk {self.target_disk} was not taken "
                            f"({outcome['outcome']}: {outcome.get('message') or outcome.get('reason', '')}); "
                            "the disk was not touched"}
        self._safety_failed(task_id=self.task_id, snapshot_id=self.safety_snapshot_id, outcome=str(outcome["outcome"]),
                            error=error, actor=actor, caused_by=_text(outcome.get("caused_by")))
        return error

    def start_cpi_call(self, worker: str, actor: str) -> None:
        self._expect(REQUESTED, RESTORE_PENDING)
        self._cpi_call_started(task_id=self.task_id, method=RESTORE_METHOD, cpi=self.cpi,
                               snapshot_cid=self.snapshot_cid, disk_cid=self.target_disk, worker=worker,
                               attempt=self.attempts + 1, actor=actor, caused_by=self.cause)

    def record_restored(self, call: JsonObject, actor: str) -> None:
        self._expect(RESTORING)
        jobs = [] if self.new_disk else list(self.instance.get("jobs") or [])
        self._restored(task_id=self.task_id, snapshot_cid=self.snapshot_cid, disk_cid=self.target_disk,
                       new_disk=self.new_disk, safety_snapshot_cid=self.safety_snapshot_cid, jobs_left_stopped=jobs,
                       call=call, actor=actor, caused_by=self.cause)

    def fail(self, step: str, error: JsonObject, call: JsonObject | None, actor: str) -> None:
        """A step failed for good (the CPI call, or a worker lost in a drain or stop)."""
        self._expect(RESTORING, DRAINING, STOPPING)
        self._failed(task_id=self.task_id, step=step, error=error, call=call, actor=actor, caused_by=self.cause)

    def worker_lost(self, dead_worker: str, actor: str) -> str | None:
        """The worker holding a step died: a CPI call is repeated (returns "restore":
        a restore replaces the whole content from an immutable snapshot, so a
        second run gives the same disk); a drain or stop fails the restore
        (returns "failed": re-running a drain is not obviously safe). None: the
        restore is not (or no longer) that worker's."""
        if self.state not in CLAIMED_STATES or self.worker != dead_worker:
            return None
        if self.state == RESTORING:
            self._cpi_call_in_doubt(task_id=self.task_id, method=RESTORE_METHOD, worker=dead_worker,
                                    attempt=self.attempts, reason=f"worker {dead_worker} stopped during the restore "
                                                                  "call; repeating it is safe",
                                    actor=actor, caused_by=self.cause)
            self.start_cpi_call(worker=actor, actor=actor)
            return "restore"
        step = "drain" if self.state == DRAINING else "stop"
        error: JsonObject = {"type": WORKER_LOST, "message": f"worker {dead_worker} stopped during the {step} of "
                 f"{self.label}; the disk was not touched; its jobs may be drained or stopped"}
        self.fail(step, error, call=None, actor=actor)
        return FAILED

    def describe_done(self) -> str:
        if self.new_disk:
            return f"snapshot {self.snapshot_cid} restored into new disk {self.target_disk}"
        jobs = ", ".join(self.instance.get("jobs") or [])
        return (f"snapshot {self.snapshot_cid} restored into disk {self.target_disk} (safety snapshot "
                f"{self.safety_snapshot_cid}); the jobs of {self.label} ({jobs}) stay stopped: start them "
                "with your deploy tool")
