"""The service layer: commands in, events out.

Every command loads the aggregates it needs, decides, and saves everything it
changed in ONE `save()` (one transaction): a task and all its snapshot
requests are durable together before the caller is answered.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from .deployment import Deployment, deployment_id
from .errors import DeploymentNotFound, SnapshotNotFound, SnapshotsDisabled, TaskNotFound
from .settings import SETTINGS_ID, Settings
from .snapshot import TAKEN, Refusal, Snapshot, SnapshotCid, snapshot_cid_id
from .task import Task

ENABLE_HINT = (
    "snapshots are disabled; enable them with `snapledger enable-snapshots` "
    'or PUT /config/snapshots {"enable_snapshots": true}'
)


@dataclass(frozen=True)
class Director:
    """Who we are in the CPI metadata (BOSH: director_name / director_uuid)."""

    name: str = "snapledger"
    uuid: str = "00000000-0000-0000-0000-000000000000"


class Ledger(Application):
    """The snapshot ledger. Thread-safe: the API calls it from an executor."""

    name = "Ledger"
    env = {"AGGREGATE_CACHE_MAXSIZE": "0"}

    def __init__(self, env: dict[str, str] | None = None, director: Director | None = None,
                 default_cpi: str = "local") -> None:
        super().__init__(env)
        self.director = director or Director()
        self.default_cpi = default_cpi
        self.on_saved: list[Callable[[], None]] = []

    def _notify(self, recordings: Any) -> None:
        # Wake in-process followers at once instead of waiting for their poll.
        super()._notify(recordings)
        for callback in self.on_saved:
            callback()

    # Persistence helper ----------------------------------------------------

    def save_with_retry(self, decide: Callable[[], Sequence[Aggregate]], attempts: int = 25) -> Any:
        """Run `decide` (which reloads and mutates aggregates) and save, retrying
        on optimistic-concurrency conflicts. `decide` must be re-runnable."""
        for attempt in range(1, attempts + 1):
            aggregates = decide()
            if not aggregates:
                return []
            try:
                return self.save(*aggregates)
            except IntegrityError:
                if attempt == attempts:
                    raise
                time.sleep(random.uniform(0, 0.002 * attempt))
        raise AssertionError("unreachable")

    def _get(self, aggregate_id: UUID) -> Any | None:
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    # Settings --------------------------------------------------------------

    def snapshots_enabled(self) -> bool:
        settings = self._get(SETTINGS_ID)
        return bool(settings and settings.enable_snapshots)

    def set_snapshots_enabled(self, enabled: bool, actor: str) -> bool:
        def decide() -> list[Aggregate]:
            settings = self._get(SETTINGS_ID) or Settings(actor=actor)
            changed = settings.set_enabled(enabled, actor=actor)
            return [settings] if changed or settings.version == 1 else []

        self.save_with_retry(decide)
        return enabled

    # Deployments -----------------------------------------------------------

    def record_deployment(self, name: str, tags: dict[str, str], instances: list[dict[str, Any]],
                          actor: str) -> Deployment:
        result: list[Deployment] = []

        def decide() -> list[Aggregate]:
            dep = self._get(deployment_id(name)) or Deployment(name=name, actor=actor)
            dep.record_inventory(tags=tags, instances=instances, actor=actor)
            result[:] = [dep]
            return [dep]

        self.save_with_retry(decide)
        return result[0]

    def get_deployment(self, name: str) -> Deployment:
        dep = self._get(deployment_id(name))
        if dep is None or dep.deleted:
            raise DeploymentNotFound(f"deployment '{name}' not found", field="deployment")
        return dep

    def delete_deployment(self, name: str, actor: str) -> None:
        def decide() -> list[Aggregate]:
            dep = self.get_deployment(name)
            dep.delete(actor=actor)
            return [dep]

        self.save_with_retry(decide)

    # Snapshots ---------------------------------------------------------------

    def take_snapshots(self, deployment: str, actor: str, job: str | None = None,
                       index_or_id: str | None = None, trigger: str = "manual",
                       clean: bool = False) -> Task:
        """Request a snapshot of every persistent disk of the selected instances."""
        dep = self.get_deployment(deployment)
        instances = dep.find_instances(job, index_or_id)
        single = job is not None and index_or_id is not None
        kind, description = (
            ("create_snapshot", "create snapshot") if single else ("snapshot_deployment", "snapshot deployment")
        )
        if not self.snapshots_enabled():
            self._refuse(kind, ENABLE_HINT, deployment, {"job": job, "index_or_id": index_or_id}, actor)
            raise SnapshotsDisabled(ENABLE_HINT)
        task_id = uuid4()
        snapshots = [
            self._new_snapshot(task_id, dep, inst, disk, trigger, clean, actor)
            for inst in instances
            for disk in inst["disks"]
        ]
        task = Task(
            id=task_id, kind=kind, description=description, deployment=deployment,
            operations=[str(s.id) for s in snapshots], actor=actor, trigger=trigger,
            context={"job": job, "index_or_id": index_or_id},
        )
        if not snapshots:
            task.finish_empty("no persistent disks to snapshot", actor=actor)
        self.save(task, *snapshots)
        return task

    def _new_snapshot(self, task_id: UUID, dep: Deployment, inst: dict[str, Any], disk_cid: str,
                      trigger: str, clean: bool, actor: str) -> Snapshot:
        snapshot_id = uuid4()
        # The metadata BOSH sends (snapshot_manager.rb), then the deployment's
        # tags, then our operation id so a leaked IaaS snapshot can be traced.
        metadata: dict[str, Any] = {
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
        return Snapshot(
            id=snapshot_id, task_id=str(task_id), deployment=dep.name, job=inst["job"],
            index=inst["index"], instance_id=inst["id"], disk_cid=disk_cid, trigger=trigger,
            clean=clean, metadata=metadata, cpi=self.default_cpi, actor=actor,
        )

    def _refuse(self, command: str, reason: str, deployment: str | None, details: dict[str, Any],
                actor: str) -> None:
        self.save(Refusal(command=command, reason=reason, deployment=deployment, details=details, actor=actor))

    def find_snapshot(self, snapshot_cid: str, deployment: str | None = None) -> Snapshot:
        index = self._get(snapshot_cid_id(snapshot_cid))
        snapshot = self._get(UUID(index.snapshot_id)) if index else None
        if snapshot is None or snapshot.state not in (TAKEN, "delete_requested", "deleting"):
            raise SnapshotNotFound(f"snapshot '{snapshot_cid}' not found", field="cid")
        if deployment is not None and snapshot.deployment != deployment:
            raise SnapshotNotFound(
                f"snapshot '{snapshot_cid}' not found in deployment '{deployment}'", field="cid"
            )
        return snapshot

    def delete_snapshot(self, deployment: str, snapshot_cid: str, actor: str) -> Task:
        return self._request_deletions(
            deployment, [snapshot_cid], actor, kind="delete_snapshot", description="delete snapshot",
            strict=True,
        )

    def delete_snapshots(self, deployment: str, snapshot_cids: Iterable[str], actor: str) -> Task:
        """Delete the given CIDs of a deployment (the caller lists them, e.g. from
        the listing view); CIDs already being deleted are left to their task."""
        self.get_deployment_or_history(deployment)
        return self._request_deletions(
            deployment, list(snapshot_cids), actor, kind="delete_deployment_snapshots",
            description="delete deployment snapshots", strict=False,
        )

    def get_deployment_or_history(self, name: str) -> Deployment:
        """Deleted deployments keep their snapshots, so deletion must still reach them."""
        dep = self._get(deployment_id(name))
        if dep is None:
            raise DeploymentNotFound(f"deployment '{name}' not found", field="deployment")
        return dep

    def _request_deletions(self, deployment: str, cids: list[str], actor: str, kind: str,
                           description: str, strict: bool) -> Task:
        task_id = uuid4()
        result: list[Task] = []

        def decide() -> list[Aggregate]:
            snapshots = []
            for cid in cids:
                try:
                    snapshot = self.find_snapshot(cid, deployment)
                except SnapshotNotFound:
                    if strict:
                        raise
                    continue
                if snapshot.state != TAKEN and not strict:
                    continue
                snapshot.request_deletion(task_id=str(task_id), actor=actor)
                snapshots.append(snapshot)
            task = Task(
                id=task_id, kind=kind, description=description, deployment=deployment,
                operations=[str(s.id) for s in snapshots], actor=actor, context={"cids": cids},
            )
            if not snapshots:
                task.finish_empty("no snapshots to delete", actor=actor)
            result[:] = [task]
            return [task, *snapshots]

        self.save_with_retry(decide)
        return result[0]

    # Tasks -------------------------------------------------------------------

    def get_task(self, task_id: str) -> Task:
        try:
            task = self._get(UUID(task_id))
        except ValueError:
            task = None
        if not isinstance(task, Task):
            raise TaskNotFound(f"task '{task_id}' not found", field="task_id")
        return task

    def get_snapshot(self, snapshot_id: UUID) -> Snapshot:
        return self.repository.get(snapshot_id)

    def snapshot_cid_taken(self, snapshot_cid: str) -> bool:
        return snapshot_cid_id(snapshot_cid) in self.repository

    @staticmethod
    def new_cid_index(snapshot_cid: str, snapshot_id: UUID) -> SnapshotCid:
        return SnapshotCid(snapshot_cid=snapshot_cid, snapshot_id=str(snapshot_id))
