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

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError

from .agent import SHUTDOWN, WORKER_LOST  # noqa: F401 (WORKER_LOST: a restore whose worker died in a drain or stop)
from .application import ENABLE_HINT, Ledger
from .deployment import deployment_id
from .errors import Conflict, LedgerError, SnapshotNotFound, SnapshotsDisabled
from .names import SELF_DEPLOYMENT, is_valid_name
from .ownership import JobOwnedElsewhere
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
    if cpi not in ledger.restoring_cpis:
        what = "is not configured" if cpi not in ledger.cpi_names else "has no restore capability"
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
                    "jobs": list(inst.get("jobs") or [inst["job"]]), "agent_id": inst.get("agent_id"),
                    **({"persistent_disk": inst["persistent_disk"]} if inst.get("persistent_disk") is not None
                       else {})}
        foreign = ledger.foreign_jobs(deployment, instance["jobs"])  # their drain/stop are not ours to run
        if foreign:
            raise refuse(JobOwnedElsewhere(foreign, field="jobs"), owners=foreign)
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
