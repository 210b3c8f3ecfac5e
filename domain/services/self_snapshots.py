"""Self snapshots: the disks of the host snapledger runs on (BOSH `SnapshotSelf`)."""

from __future__ import annotations

from uuid import uuid4

from ..json_types import JsonObject
from ..director import Director
from ..discovery import SelfDiscovery
from ..errors import SnapshotsDisabled
from ..idempotency import Idempotency
from ..names import SELF_DEPLOYMENT
from ..snapshot import Snapshot
from ..task import Task
from .base import LedgerStore
from .settings import ENABLE_HINT, SettingsService

SELF_JOB = "snapledger"


class SelfSnapshotService:
    def __init__(self, store: LedgerStore, settings: SettingsService, director: Director, cpi: str) -> None:
        self.store = store
        self.settings = settings
        self.director = director
        self.cpi = cpi  # the CPI that knows this host's VM and disks

    def take(self, actor: str, trigger: str = "manual", idempotency: Idempotency | None = None) -> Task:
        """Snapshot the host's disks, discovered through the CPI at execution time."""
        if not self.settings.snapshots_enabled():
            self.store.record_refusal("snapshot_self", ENABLE_HINT, SELF_DEPLOYMENT, {}, actor)
            raise SnapshotsDisabled(ENABLE_HINT)
        task, discovery = self.plan(actor, trigger)
        self.store.save(task, discovery, idempotency=idempotency)
        return task

    def plan(self, actor: str, trigger: str) -> tuple[Task, SelfDiscovery]:
        """The task and its discovery (unsaved)."""
        task_id = uuid4()
        discovery = SelfDiscovery(task_id=str(task_id), cpi=self.cpi, trigger=trigger, actor=actor)
        task = Task(id=task_id, kind="snapshot_self", description="snapshot self", deployment=SELF_DEPLOYMENT,  # type: ignore[call-arg]
                    operations=[str(discovery.id)], actor=actor, trigger=trigger)
        return task, discovery

    def plan_disk_snapshots(self, task: Task, discovery: SelfDiscovery, vm_cid: str,
                            disks: list[str]) -> list[Snapshot]:
        """The snapshot requests for discovered disks, with BOSH's SnapshotSelf metadata."""
        snapshots = []
        for disk in disks:
            snapshot_id = uuid4()
            metadata: JsonObject = {
                "deployment": "self", "job": "director", "index": 0, "director_name": self.director.name,
                "director_uuid": self.director.uuid, "agent_id": "self", "instance_id": vm_cid,
                "snapledger_operation_id": str(snapshot_id),
            }
            snapshots.append(Snapshot(  # type: ignore[call-arg]
                id=snapshot_id, task_id=str(task.id), deployment=SELF_DEPLOYMENT, job=SELF_JOB, index=0,
                instance_id=vm_cid, disk_cid=disk, trigger=discovery.trigger, clean=False, metadata=metadata,
                cpi=discovery.cpi, actor=task.actor,
            ))
        return snapshots
