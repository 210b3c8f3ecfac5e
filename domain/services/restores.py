"""Restores: accept a restore of a snapshot, in place or into a new disk (domain/restore.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from uuid import UUID, uuid4

from eventsourcing.persistence import IntegrityError

from ..deployment import Deployment
from ..errors import Conflict, LedgerError, SnapshotNotFound, SnapshotsDisabled
from ..idempotency import Idempotency
from ..json_types import JsonObject
from ..names import SELF_DEPLOYMENT, is_valid_name
from ..ownership import JobOwnedElsewhere
from ..restore import (KIND, CpiCannotRestore, DiskExists, DiskNotInInventory, NewDisk, NotRestorable, Restore,
                       RestoreInstance, new_disk_id, restore_operation_id)
from ..snapshot import DELETE_REQUESTED, DELETED, DELETING, IN_DOUBT, TAKEN, Refusal, Snapshot
from ..task import Task
from .base import LedgerStore
from .deployments import DeploymentService
from .settings import ENABLE_HINT, SettingsService
from .snapshots import SnapshotService

# Whether a disk exists in a CPI (cpi name, disk cid), where this process can tell.
DiskExistsCheck = Callable[[str, str], bool]


class RestoreService:
    def __init__(self, store: LedgerStore, settings: SettingsService, deployments: DeploymentService,
                 snapshots: SnapshotService, restoring_cpis: Iterable[str] = (),
                 disk_exists: DiskExistsCheck | None = None) -> None:
        self.store = store
        self.settings = settings
        self.deployments = deployments
        self.snapshots = snapshots
        self.restoring_cpis = frozenset(restoring_cpis)  # the adapter has the RestoresSnapshots capability
        self.disk_exists = disk_exists

    def get(self, restore_id: UUID) -> Restore | None:
        found = self.store.load(restore_id)
        return found if isinstance(found, Restore) else None

    def request(self, deployment: str, snapshot_cid: str, actor: str, to_new_disk: str | None = None,
                idempotency: Idempotency | None = None) -> Task:
        """Accept a restore: one task, one Restore (and the new disk's claim), durable
        together before the answer. Every refusal is recorded (`Refusal.Recorded`)."""
        if to_new_disk is not None and not is_valid_name(to_new_disk):
            raise LedgerError(f"invalid disk name {to_new_disk!r}: 1-128 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit", field="to_new_disk")
        # Self snapshots (deployment `_self`) have no inventory: they are restored into a new disk only.
        dep = None if deployment == SELF_DEPLOYMENT else self.deployments.get(deployment)
        refuse = _Refuser(self.store, deployment, actor, {"snapshot_cid": snapshot_cid, "to_new_disk": to_new_disk})
        snapshot = self._restorable(snapshot_cid, deployment, refuse)
        if to_new_disk is None:
            if dep is None:
                raise refuse(Conflict("the service host's own disks are restored only into a new disk "
                                      "(to_new_disk)", field="to_new_disk"))
            target, instance = self._in_place(dep, snapshot, refuse)
        else:
            target, instance = self._into_new_disk(to_new_disk, snapshot, refuse)
        return self._accept(deployment, snapshot, target, instance, to_new_disk is not None, actor, refuse,
                            idempotency)

    def _restorable(self, snapshot_cid: str, deployment: str, refuse: _Refuser) -> Snapshot:
        """The taken snapshot of `deployment` named `snapshot_cid`, through a CPI that can restore."""
        snapshot = self.snapshots.by_cid(snapshot_cid)
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
                   DELETED: "was deleted", IN_DOUBT: "has a deletion in doubt"}.get(snapshot.state,
                                                                                   f"is {snapshot.state}")
            raise refuse(NotRestorable(f"snapshot '{snapshot_cid}' {why}; only a taken snapshot can be restored",
                                       field="cid"), state=snapshot.state)
        if snapshot.cpi not in self.restoring_cpis:
            configured = snapshot.cpi in self.deployments.cpi_names
            what = "has no restore capability" if configured else "is not configured"
            raise refuse(CpiCannotRestore(
                f"CPI '{snapshot.cpi}' cannot restore: it {what}, and BOSH's CPI protocol has no restore method "
                f"(snapledger does not know a create_disk property that creates a disk from a snapshot for it); "
                f"restore snapshot '{snapshot_cid}' through the IaaS and attach the disk with your deploy tool",
                field="cpi"), cpi=snapshot.cpi)
        return snapshot

    def _in_place(self, dep: Deployment, snapshot: Snapshot, refuse: _Refuser) -> tuple[str, RestoreInstance]:
        """The disk to overwrite (the snapshot's own) and the instance whose jobs are drained and stopped."""
        cid, name = snapshot.snapshot_cid or "", dep.name
        if not self.settings.snapshots_enabled():
            # An in-place restore overwrites the disk: never without a safety snapshot.
            raise refuse(SnapshotsDisabled(f"an in-place restore takes a safety snapshot first, and {ENABLE_HINT}; "
                                           "or restore into a new disk (to_new_disk)", field="enable_snapshots"))
        owners = [i for i in dep.instances if snapshot.disk_cid in i["disks"]]
        if not owners:
            raise refuse(DiskNotInInventory(
                f"disk '{snapshot.disk_cid}' of snapshot '{cid}' is no longer in deployment "
                f"'{name}'; restore into a new disk instead (to_new_disk)", field="cid"))
        if self.deployments.cpi_of(dep) != snapshot.cpi:
            raise refuse(Conflict(
                f"snapshot '{cid}' was taken through CPI '{snapshot.cpi}', deployment '{name}' now uses "
                f"'{self.deployments.cpi_of(dep)}'; restore into a new disk instead (to_new_disk)", field="cpi"))
        other = self.deployments.listing(snapshot.disk_cid, name)
        if other:
            raise refuse(Conflict(f"disk '{snapshot.disk_cid}' is also listed by another deployment; "
                                  "refusing to restore onto it", field="cid"), listed_by=other)
        inst = owners[0]
        instance = RestoreInstance(id=inst["id"], job=inst["job"], index=inst["index"],
                                   jobs=list(inst.get("jobs") or [inst["job"]]), agent_id=inst.get("agent_id"))
        if "persistent_disk" in inst:
            instance["persistent_disk"] = inst["persistent_disk"]
        foreign = self.deployments.foreign_jobs(name, instance["jobs"])  # their drain/stop are not ours to run
        if foreign:
            raise refuse(JobOwnedElsewhere(foreign, field="jobs"), owners=foreign)
        return snapshot.disk_cid, instance

    def _into_new_disk(self, target: str, snapshot: Snapshot, refuse: _Refuser) -> tuple[str, RestoreInstance]:
        cpi = snapshot.cpi
        exists = (self.store.contains(new_disk_id(cpi, target))
                  or self.deployments.listing(target, None)
                  or (self.disk_exists is not None and self.disk_exists(cpi, target)))
        if exists:
            raise refuse(DiskExists(f"disk '{target}' already exists; a restore into a new disk never "
                                    "overwrites one", field="to_new_disk"))
        return target, RestoreInstance(id=snapshot.instance_id, job=snapshot.job, index=snapshot.index, jobs=[])

    def _accept(self, deployment: str, snapshot: Snapshot, target: str, instance: RestoreInstance, new_disk: bool,
                actor: str, refuse: _Refuser, idempotency: Idempotency | None) -> Task:
        snapshot_cid, cpi = snapshot.snapshot_cid or "", snapshot.cpi
        task_id = uuid4()
        op = restore_operation_id(task_id)
        where = f"new disk {target}" if new_disk else f"disk {target}"
        task = Task(id=task_id, kind=KIND, description=f"restore snapshot {snapshot_cid} into {where}",  # type: ignore[call-arg]
                    deployment=deployment, operations=[op], actor=actor,
                    context={"snapshot_cid": snapshot_cid, "to_new_disk": target if new_disk else None,
                             "disk_cid": target})
        restore = Restore(task_id=str(task_id), deployment=deployment, snapshot_cid=snapshot_cid,
                          snapshot_id=str(snapshot.id), source_disk=snapshot.disk_cid, target_disk=target,
                          new_disk=new_disk, instance=instance, cpi=cpi, operation_id=op, actor=actor)
        # The new disk's name is claimed in the same transaction: two restores never write into one new disk.
        claim = NewDisk(cpi=cpi, disk_cid=target, snapshot_cid=snapshot_cid, deployment=deployment,
                        task_id=str(task_id), actor=actor) if new_disk else None
        try:
            self.store.save(task, restore, *([claim] if claim is not None else []), idempotency=idempotency)
        except IntegrityError:
            if claim is not None and self.store.contains(claim.id):  # a racing restore claimed the name first
                raise refuse(DiskExists(f"disk '{target}' is already the target of another restore",
                                        field="to_new_disk")) from None
            raise
        return task


class _Refuser:
    """Records a refusal of one restore request (`Refusal.Recorded`) and hands back its error to raise."""

    def __init__(self, store: LedgerStore, deployment: str, actor: str, details: JsonObject) -> None:
        self.store, self.deployment, self.actor, self.details = store, deployment, actor, details

    def __call__(self, error: LedgerError, **more: object) -> LedgerError:
        self.store.save(Refusal(command=KIND, reason=error.message, deployment=self.deployment,
                                details={**self.details, **more}, actor=self.actor))
        return error
