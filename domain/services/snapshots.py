"""Snapshots of deployments' persistent disks: requested, deleted, pinned."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate

from ..deployment import Deployment, InventoryInstance
from ..director import Director
from ..errors import SnapshotNotFound, SnapshotsDisabled
from ..idempotency import Idempotency
from ..job_update import UpdateInstance
from ..json_types import JsonObject
from ..names import SELF_DEPLOYMENT
from ..restore import RestoreInstance
from ..snapshot import LISTED_STATES, TAKEN, Snapshot, SnapshotCid, snapshot_cid_id
from ..task import Task
from .base import LedgerStore
from .deployments import DeploymentService
from .settings import ENABLE_HINT, SettingsService


class SnapshotService:
    def __init__(self, store: LedgerStore, settings: SettingsService, deployments: DeploymentService,
                 director: Director) -> None:
        self.store = store
        self.settings = settings
        self.deployments = deployments
        self.director = director

    def take(self, deployment: str, actor: str, job: str | None = None, index_or_id: str | None = None,
             trigger: str = "manual", clean: bool = False, idempotency: Idempotency | None = None) -> Task:
        """Request a snapshot of every persistent disk of the selected instances."""
        dep = self.deployments.get(deployment, for_reading=True)
        instances = dep.find_instances(job, index_or_id)
        single = job is not None and index_or_id is not None
        kind, description = (
            ("create_snapshot", "create snapshot") if single else ("snapshot_deployment", "snapshot deployment")
        )
        if not self.settings.snapshots_enabled():
            self.store.record_refusal(kind, ENABLE_HINT, deployment, {"job": job, "index_or_id": index_or_id}, actor)
            raise SnapshotsDisabled(ENABLE_HINT)
        task, snapshots = self.plan(dep, instances, kind, description, trigger, clean, actor,
                                    context={"job": job, "index_or_id": index_or_id})
        self.store.save(task, *snapshots, idempotency=idempotency)
        return task

    def plan(self, dep: Deployment, instances: list[InventoryInstance], kind: str, description: str,
             trigger: str, clean: bool, actor: str,
             context: JsonObject | None = None) -> tuple[Task, list[Snapshot]]:
        """A task and one snapshot request per disk of the instances (unsaved)."""
        task_id = uuid4()
        snapshots = [
            self.new_snapshot(task_id, dep, inst, disk, trigger, clean, actor)
            for inst in instances
            for disk in inst["disks"]
        ]
        task = Task(  # type: ignore[call-arg]
            id=task_id, kind=kind, description=description, deployment=dep.name,
            operations=[str(s.id) for s in snapshots], actor=actor, trigger=trigger, context=context or {},
        )
        if not snapshots:
            task.finish_empty("no persistent disks to snapshot", actor=actor)
        return task, snapshots

    def new_snapshot(self, task_id: UUID, dep: Deployment, inst: InventoryInstance | UpdateInstance | RestoreInstance,
                     disk_cid: str, trigger: str, clean: bool, actor: str) -> Snapshot:
        """One snapshot request (unsaved) of an instance's disk, for the task `task_id`."""
        snapshot_id = uuid4()
        # The metadata BOSH sends (snapshot_manager.rb), then the deployment's
        # tags, then our operation id so a leaked IaaS snapshot can be traced.
        metadata: JsonObject = {
            "deployment": dep.name,
            "job": inst["job"],
            "index": inst["index"],
            "director_name": self.director.name,
            "director_uuid": self.director.uuid,
            "agent_id": inst.get("agent_id"),
            "instance_id": inst["id"],
        }
        metadata.update(dep.tags)
        metadata["snapledger_operation_id"] = str(snapshot_id)
        return Snapshot(  # type: ignore[call-arg]
            id=snapshot_id, task_id=str(task_id), deployment=dep.name, job=inst["job"],
            index=inst["index"], instance_id=inst["id"], disk_cid=disk_cid, trigger=trigger,
            clean=clean, metadata=metadata, cpi=self.deployments.cpi_of(dep), actor=actor,
        )

    # Reads -------------------------------------------------------------------

    def get(self, snapshot_id: UUID) -> Snapshot:
        found: Snapshot = self.store.get_aggregate(snapshot_id)
        return found

    def by_cid(self, snapshot_cid: str) -> Snapshot | None:
        """The snapshot a CID names, in whatever state (None: the ledger holds no such CID)."""
        index = self.store.load(snapshot_cid_id(snapshot_cid))
        found = self.store.load(UUID(index.snapshot_id)) if isinstance(index, SnapshotCid) else None
        return found if isinstance(found, Snapshot) else None

    def find(self, snapshot_cid: str, deployment: str | None = None) -> Snapshot:
        """A listed snapshot (taken or being deleted), of `deployment` when given."""
        snapshot = self.by_cid(snapshot_cid)
        if snapshot is None or snapshot.state not in LISTED_STATES:
            raise SnapshotNotFound(f"snapshot '{snapshot_cid}' not found", field="cid")
        if deployment is not None and snapshot.deployment != deployment:
            raise SnapshotNotFound(
                f"snapshot '{snapshot_cid}' not found in deployment '{deployment}'", field="cid"
            )
        return snapshot

    def cid_taken(self, snapshot_cid: str) -> bool:
        return self.store.contains(snapshot_cid_id(snapshot_cid))

    @staticmethod
    def new_cid_index(snapshot_cid: str, snapshot_id: UUID) -> SnapshotCid:
        return SnapshotCid(snapshot_cid=snapshot_cid, snapshot_id=str(snapshot_id))

    # Deleting and pinning ----------------------------------------------------

    def delete(self, deployment: str, snapshot_cid: str, actor: str, idempotency: Idempotency | None = None) -> Task:
        return self._request_deletions(deployment, [snapshot_cid], actor, kind="delete_snapshot",
                                       description="delete snapshot", strict=True, idempotency=idempotency)

    def delete_many(self, deployment: str, snapshot_cids: Iterable[str], actor: str,
                    idempotency: Idempotency | None = None) -> Task:
        """Delete the given CIDs of a deployment (the caller lists them, e.g. from
        the listing view); CIDs already being deleted are left to their task."""
        if deployment != SELF_DEPLOYMENT:
            self.deployments.get_or_history(deployment)
        return self._request_deletions(deployment, list(snapshot_cids), actor, kind="delete_deployment_snapshots",
                                       description="delete deployment snapshots", strict=False,
                                       idempotency=idempotency)

    def _request_deletions(self, deployment: str, cids: list[str], actor: str, kind: str, description: str,
                           strict: bool, idempotency: Idempotency | None) -> Task:
        task_id = uuid4()
        result: list[Task] = []

        def decide() -> list[Aggregate]:
            snapshots = []
            for cid in cids:
                try:
                    snapshot = self.find(cid, deployment)
                except SnapshotNotFound:
                    if strict:
                        raise
                    continue
                if not strict and (snapshot.state != TAKEN or snapshot.pinned is not None):
                    continue  # delete-all leaves pinned snapshots and those already going
                snapshot.request_deletion(task_id=str(task_id), actor=actor)
                snapshots.append(snapshot)
            task = Task(  # type: ignore[call-arg]
                id=task_id, kind=kind, description=description, deployment=deployment,
                operations=[str(s.id) for s in snapshots], actor=actor, context={"cids": [cid for cid in cids]},
            )
            if not snapshots:
                task.finish_empty("no snapshots to delete", actor=actor)
            result[:] = [task]
            return [task, *snapshots]

        self.store.save_with_retry(decide, idempotency=idempotency)
        return result[0]

    def pin(self, deployment: str, snapshot_cid: str, reason: str, actor: str, pin: bool = True) -> Snapshot:
        """Pin (or, `pin=False`, unpin) a snapshot: retention never expires a pinned one."""
        result: list[Snapshot] = []

        def decide() -> list[Aggregate]:
            snapshot = self.find(snapshot_cid, deployment)
            if pin:
                snapshot.pin(reason, actor=actor)
            else:
                snapshot.unpin(reason, actor=actor)
            result[:] = [snapshot]
            return [snapshot]

        self.store.save_with_retry(decide)
        return result[0]
