"""The service layer: commands in, events out.

Every command loads the aggregates it needs, decides, and saves everything it
changed in ONE `save()` (one transaction): a task and all its snapshot
requests are durable together before the caller is answered.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate, BaseAggregate
from eventsourcing.persistence import IntegrityError

from .combining import SharedReads
from .deployment import Deployment, check_unique, deployment_id
from .discovery import SelfDiscovery
from .idempotency import IdempotencyKey, KeyAlreadyUsed, idempotency_key_id
from .errors import (DeploymentNotFound, InvalidState, ManagedByConfig, SnapshotNotFound, SnapshotsDisabled,
                     TaskNotFound, UnknownCpi)
from .names import SELF_DEPLOYMENT
from .ownership import OWNERSHIP_ID, DiskOwnedElsewhere, JobOwnedElsewhere, Ownership
from .retention import Candidate, Expiry, RetentionPolicy, plan_expiry
from .schedule import REGISTRY_ID, DeploymentRegistry, ScheduleFire, fire_id
from .settings import SCHEDULE_NAMES, SETTINGS_ID, Settings
from .snapshot import TAKEN, Refusal, Snapshot, SnapshotCid, snapshot_cid_id
from .task import Task

SELF_JOB = "snapledger"

# The idempotency key of the command this thread (or task) runs, if any:
# {"actor", "key", "fingerprint", "method", "path", "saved"}.
IDEMPOTENCY: ContextVar[dict[str, Any] | None] = ContextVar("idempotency", default=None)

ENABLE_HINT = (
    "snapshots are disabled; enable them with `snapledger enable-snapshots` "
    'or PUT /config/snapshots {"enable_snapshots": true}'
)


@dataclass(frozen=True)
class Director:
    """Who we are in the CPI metadata (BOSH: director_name / director_uuid)."""

    name: str = "snapledger"
    uuid: str = "00000000-0000-0000-0000-000000000000"


AGGREGATE_CACHE_SIZE = 500
COPY_ATTEMPTS = 20  # see get_aggregate
EXISTENCE_MEMO_SIZE = 10_000


class _Collected(ProcessingEvent):
    """The library's ProcessingEvent without its runtime-Protocol isinstance checks.

    On Python 3.11 each `isinstance(obj, SomeProtocol)` walks the protocol's
    attributes: two per aggregate, 0.6 s of a 10,000-instance fire's 3.3 s
    (profiled, docs/performance.md). Our aggregates are `BaseAggregate`s, so a
    plain class check says the same; anything else takes the library's path."""

    def collect_events(self, *objs: Any, **kwargs: Any) -> None:
        for obj in objs:
            if isinstance(obj, BaseAggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            elif obj is not None:
                super().collect_events(obj)
        self.saved_kwargs.update(kwargs)


class Ledger(Application):
    """The snapshot ledger. Thread-safe: the API calls it from an executor."""

    name = "Ledger"
    # A bounded cache of aggregates, fast-forwarded from the store on every
    # read (so never stale): a deployment or task with a long history is read
    # as its new events only, not replayed. Bounded because the library reads
    # "0" as *unbounded*: every aggregate a process ever read stayed in memory
    # (a worker held every snapshot it took). docs/performance.md.
    env = {"AGGREGATE_CACHE_MAXSIZE": str(AGGREGATE_CACHE_SIZE), "AGGREGATE_CACHE_FASTFORWARD": "y"}

    def __init__(self, env: dict[str, str] | None = None, director: Director | None = None,
                 default_cpi: str = "local", self_cpi: str | None = None,
                 cpi_names: Iterable[str] | None = None) -> None:
        super().__init__(env)
        self.director = director or Director()
        self.default_cpi = default_cpi
        self.self_cpi = self_cpi or default_cpi
        self.cpi_names = frozenset(cpi_names) if cpi_names is not None else frozenset({default_cpi})
        self.on_saved: list[Callable[[], None]] = []
        self._existence: OrderedDict[UUID, bool] = OrderedDict()  # created_with_seen
        self._existence_lock = threading.Lock()
        self._shared_reads = SharedReads()  # _read: decision 19

    # Idempotency: a command running under `with ledger.idempotent(...)` saves
    # the key with its first task, in the same transaction.

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        pending = IDEMPOTENCY.get()
        if pending is not None and not pending.get("saved"):
            task = next((o for o in objs if isinstance(o, Task)), None)
            if task is not None:
                key_id = idempotency_key_id(pending["actor"], pending["key"])
                if key_id in self.repository:
                    raise KeyAlreadyUsed(pending["key"])
                record = IdempotencyKey(actor=pending["actor"], key=pending["key"],
                                        fingerprint=pending["fingerprint"], method=pending["method"],
                                        path=pending["path"], task_id=str(task.id))
                try:
                    result = self._save(*objs, record, **kwargs)
                except IntegrityError:
                    if key_id in self.repository:  # a racing request with this key committed first
                        raise KeyAlreadyUsed(pending["key"]) from None
                    raise
                pending["saved"] = str(task.id)
                return result
        return self._save(*objs, **kwargs)

    def _save(self, *objs: Any, **kwargs: Any) -> Any:
        # `Application.save` (eventsourcing 9.5.6) step for step, collecting with _Collected.
        processing_event = _Collected()
        processing_event.collect_events(*objs, **kwargs)
        recordings = self._record(processing_event)
        _number_new_tasks(objs, recordings)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # the library's deprecated hook, kept for fidelity
        return recordings

    def find_idempotency_key(self, actor: str, key: str) -> IdempotencyKey | None:
        return self._get(idempotency_key_id(actor, key))

    def record_idempotency_key(self, actor: str, key: str, fingerprint: str, method: str, path: str) -> None:
        """For commands without a task (PUTs): recorded after the command."""
        self.save(IdempotencyKey(actor=actor, key=key, fingerprint=fingerprint, method=method, path=path,
                                 task_id=None))

    # Set by the composition root: how one save's events become durable. None:
    # in a transaction of their own. adapters/group_commit.py shares one
    # transaction among concurrent saves; each save still returns only after
    # its events committed, all of them or none (docs/decisions.md #16).
    record_events: Callable[[list[Any]], list[Any]] | None = None

    def _record(self, processing_event: Any) -> Any:
        if self.record_events is None or processing_event.tracking is not None or processing_event.saved_kwargs:
            return super()._record(processing_event)
        return self.record_events(processing_event.events)

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
            return self.get_aggregate(aggregate_id)
        except AggregateNotFoundError:
            return None

    # Settings --------------------------------------------------------------

    def _read(self, aggregate_id: UUID) -> Any | None:
        """For reading only (the object may be shared with concurrent callers;
        commands that change an aggregate load it with `_get`)."""
        return self._shared_reads.read(aggregate_id, lambda: self._get(aggregate_id))

    def settings(self) -> Settings:
        """The recorded settings, or the defaults when nothing was recorded yet (read only)."""
        return self._read(SETTINGS_ID) or Settings(actor="defaults")

    def snapshots_enabled(self) -> bool:
        return self.settings().enable_snapshots

    # Set by the composition root from the configuration (docs/decisions.md #24):
    # runtime-settable key -> the file or SNAPLEDGER_* variable that manages it
    # (a runtime change is refused), and the declared per-deployment retention
    # policies (None: inherit), applied when such a deployment is first recorded.
    managed: dict[str, str] = {}
    declared_retention: dict[str, dict[str, Any] | None] = {}

    def refuse_managed_changes(self, changes: dict[str, Any], actor: str) -> None:
        """Refuse (409, naming the file and key) a runtime change of a managed
        setting, before anything is saved; setting the managed value again is no change."""
        if not self.managed:
            return
        settings = self.settings()
        current = {"enable_snapshots": settings.enable_snapshots, **settings.schedules}
        for key, value in changes.items():
            if key in SCHEDULE_NAMES:
                value = (value or "").strip() or None
            if key in self.managed and current.get(key) != value:
                self._refuse_managed(key, actor)

    def _refuse_managed(self, key: str, actor: str, deployment: str | None = None) -> None:
        source = self.managed[key]
        reason = f"'{key}' is managed by the configuration ({source}): change it there and restart"
        self._refuse("change_setting", reason, deployment, {"key": key, "managed_by": source}, actor)
        raise ManagedByConfig(reason, field=key)

    def set_schedule(self, name: str, expression: str | None, actor: str, declared: bool = False) -> str | None:
        """`declared`: the configuration applies its own value (at start)."""
        if not declared:
            self.refuse_managed_changes({name: expression}, actor)

        def decide() -> list[Aggregate]:
            settings = self._get(SETTINGS_ID) or Settings(actor=actor)
            changed = settings.set_schedule(name, expression, actor=actor)
            return [settings] if changed or settings.version == 1 else []

        self.save_with_retry(decide)
        return self.settings().schedules[name]

    def set_snapshots_enabled(self, enabled: bool, actor: str, declared: bool = False) -> bool:
        if not declared:
            self.refuse_managed_changes({"enable_snapshots": enabled}, actor)

        def decide() -> list[Aggregate]:
            settings = self._get(SETTINGS_ID) or Settings(actor=actor)
            changed = settings.set_enabled(enabled, actor=actor)
            return [settings] if changed or settings.version == 1 else []

        self.save_with_retry(decide)
        return enabled

    # Deployments -----------------------------------------------------------

    def record_deployment(self, name: str, tags: dict[str, str], instances: list[dict[str, Any]],
                          actor: str, cpi: str | None = None, move_disks: Iterable[str] = (),
                          move_jobs: Iterable[str] = (),
                          may_move_from: Callable[[str], bool] = lambda owner: False) -> Deployment:
        """Record the inventory (domain/ownership.py). A disk another deployment
        owns is refused (DiskOwnedElsewhere) unless it is in `move_disks` and
        `may_move_from(owner)`: then it moves, recorded, and leaves the owner's
        inventory. Release jobs are claimed when free; `move_jobs` takes them over."""
        if cpi is not None and cpi not in self.cpi_names:
            raise UnknownCpi(f"no CPI named '{cpi}' is configured (configured: {', '.join(sorted(self.cpi_names))})",
                             field="cpi")
        check_unique(instances)
        moving_disks, moving_jobs = set(move_disks), set(move_jobs)
        result: list[Deployment] = []

        def decide() -> list[Aggregate]:
            dep = self._get(deployment_id(name)) or Deployment(name=name, actor=actor)
            before_disks = set(dep.disk_cids()) if not dep.deleted else set()
            before_jobs = dep.release_jobs() if not dep.deleted else set()
            owners = self._ownership()
            disks = {d for i in instances for d in i["disks"]}
            foreign = owners.foreign_disks(name, disks)
            taken_jobs = owners.foreign_jobs(name, moving_jobs)
            refused = {d: o for d, o in foreign.items() if d not in moving_disks or not may_move_from(o)}
            if refused:
                raise DiskOwnedElsewhere(refused, field="instances")
            refused = {j: o for j, o in taken_jobs.items() if not may_move_from(o)}
            if refused:
                raise JobOwnedElsewhere(refused, field="move_jobs")
            changed: list[Aggregate] = []
            for source_name in sorted(set(foreign.values()) | set(taken_jobs.values())):
                moved_disks = [d for d, o in foreign.items() if o == source_name]
                source = self._get(deployment_id(source_name))
                if moved_disks and source is not None and not source.deleted:
                    source.record_inventory(tags=source.tags, instances=source.without_disks(set(moved_disks)),
                                            actor=actor, cpi=source.cpi)
                    changed.append(source)
                owners.move(name, source_name, moved_disks, [j for j, o in taken_jobs.items() if o == source_name],
                            actor=actor)
            dep.record_inventory(tags=tags, instances=instances, actor=actor, cpi=cpi)
            if name in self.declared_retention and dep.retention != self.declared_retention[name]:
                dep.set_retention(self.declared_retention[name], actor="config")
            jobs = dep.release_jobs()
            owners.claim(name, disks, jobs, actor=actor)
            owners.release(name, before_disks - disks, before_jobs - jobs, actor=actor)
            registry = self._registry()
            result[:] = [dep]
            return [dep, *changed, owners, *([registry] if registry.add(name) else [])]

        self.save_with_retry(decide)
        return result[0]

    def _ownership(self) -> Ownership:
        """Who owns each disk and release job; on a ledger from before it
        existed, seeded with the deployments recorded then (first listed wins)."""
        owners = self._get(OWNERSHIP_ID)
        if owners is not None:
            return owners
        disks: dict[str, str] = {}
        jobs: dict[str, str] = {}
        for dep_name in self._registry().names:
            dep = self._get(deployment_id(dep_name))
            if dep is not None and not dep.deleted:
                for disk in dep.disk_cids():
                    disks.setdefault(disk, dep_name)
                for job in sorted(dep.release_jobs()):
                    jobs.setdefault(job, dep_name)
        return Ownership(disks=disks, jobs=jobs)

    def foreign_jobs(self, deployment: str, jobs: Iterable[str]) -> dict[str, str]:
        """Of `jobs`, the release jobs another deployment owns (its scripts are not ours to run)."""
        owners = self._get(OWNERSHIP_ID)
        return owners.foreign_jobs(deployment, jobs) if owners is not None else {}

    def _registry(self) -> DeploymentRegistry:
        return self._get(REGISTRY_ID) or DeploymentRegistry()

    def deployment_names(self) -> list[str]:
        return list(self._registry().names)

    def get_deployment(self, name: str, for_reading: bool = False) -> Deployment:
        """`for_reading`: the caller will not change it (a shared read, decision 19)."""
        dep = self._read(deployment_id(name)) if for_reading else self._get(deployment_id(name))
        if dep is None or dep.deleted:
            raise DeploymentNotFound(f"deployment '{name}' not found", field="deployment")
        return dep

    def delete_deployment(self, name: str, actor: str) -> None:
        def decide() -> list[Aggregate]:
            dep = self.get_deployment(name)
            owners = self._ownership()
            owners.release(name, dep.disk_cids(), dep.release_jobs(), actor=actor)  # free for other deployments
            dep.delete(actor=actor)
            registry = self._registry()
            registry.remove(name)
            return [dep, registry, owners]

        self.save_with_retry(decide)

    # Snapshots ---------------------------------------------------------------

    def take_snapshots(self, deployment: str, actor: str, job: str | None = None,
                       index_or_id: str | None = None, trigger: str = "manual",
                       clean: bool = False) -> Task:
        """Request a snapshot of every persistent disk of the selected instances."""
        dep = self.get_deployment(deployment, for_reading=True)
        instances = dep.find_instances(job, index_or_id)
        single = job is not None and index_or_id is not None
        kind, description = (
            ("create_snapshot", "create snapshot") if single else ("snapshot_deployment", "snapshot deployment")
        )
        if not self.snapshots_enabled():
            self._refuse(kind, ENABLE_HINT, deployment, {"job": job, "index_or_id": index_or_id}, actor)
            raise SnapshotsDisabled(ENABLE_HINT)
        task, snapshots = self._plan_snapshots(dep, instances, kind, description, trigger, clean, actor,
                                               context={"job": job, "index_or_id": index_or_id})
        self.save(task, *snapshots)
        return task

    def _plan_snapshots(self, dep: Deployment, instances: list[dict[str, Any]], kind: str, description: str,
                        trigger: str, clean: bool, actor: str,
                        context: dict[str, Any] | None = None) -> tuple[Task, list[Snapshot]]:
        """A task and one snapshot request per disk of the instances (unsaved)."""
        task_id = uuid4()
        snapshots = [
            self._new_snapshot(task_id, dep, inst, disk, trigger, clean, actor)
            for inst in instances
            for disk in inst["disks"]
        ]
        task = Task(
            id=task_id, kind=kind, description=description, deployment=dep.name,
            operations=[str(s.id) for s in snapshots], actor=actor, trigger=trigger, context=context or {},
        )
        if not snapshots:
            task.finish_empty("no persistent disks to snapshot", actor=actor)
        return task, snapshots

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
            clean=clean, metadata=metadata, cpi=self.cpi_of(dep), actor=actor,
        )

    # Set by the composition root: each configured CPI's type ("local" or
    # "external"), and whether a disk exists in a CPI (None: not known here).
    # Restores need both (domain/restore.py).
    cpi_types: dict[str, str] = {}
    disk_exists: Callable[[str, str], bool] | None = None

    def cpi_of(self, dep: Deployment) -> str:
        """The CPI a deployment's snapshots go through: its own, else the default."""
        return dep.cpi or self.default_cpi

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
        if deployment != SELF_DEPLOYMENT:
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
                if not strict and (snapshot.state != TAKEN or snapshot.pinned is not None):
                    continue  # delete-all leaves pinned snapshots and those already going
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

    # Self snapshots ----------------------------------------------------------

    def take_self_snapshots(self, actor: str, trigger: str = "manual") -> Task:
        """Snapshot the disks of the host snapledger runs on (BOSH `SnapshotSelf`),
        discovered through the CPI at execution time."""
        if not self.snapshots_enabled():
            self._refuse("snapshot_self", ENABLE_HINT, SELF_DEPLOYMENT, {}, actor)
            raise SnapshotsDisabled(ENABLE_HINT)
        task, discovery = self._plan_self_snapshots(actor, trigger)
        self.save(task, discovery)
        return task

    def _plan_self_snapshots(self, actor: str, trigger: str) -> tuple[Task, SelfDiscovery]:
        task_id = uuid4()
        discovery = SelfDiscovery(task_id=str(task_id), cpi=self.self_cpi, trigger=trigger, actor=actor)
        task = Task(id=task_id, kind="snapshot_self", description="snapshot self", deployment=SELF_DEPLOYMENT,
                    operations=[str(discovery.id)], actor=actor, trigger=trigger)
        return task, discovery

    def plan_self_disk_snapshots(self, task: Task, discovery: SelfDiscovery, vm_cid: str,
                                 disks: list[str]) -> list[Snapshot]:
        """The snapshot requests for discovered disks, with BOSH's SnapshotSelf metadata."""
        snapshots = []
        for disk in disks:
            snapshot_id = uuid4()
            metadata = {
                "deployment": "self", "job": "director", "index": 0, "director_name": self.director.name,
                "director_uuid": self.director.uuid, "agent_id": "self", "instance_id": vm_cid,
                "snapledger_operation_id": str(snapshot_id),
            }
            snapshots.append(Snapshot(
                id=snapshot_id, task_id=str(task.id), deployment=SELF_DEPLOYMENT, job=SELF_JOB, index=0,
                instance_id=vm_cid, disk_cid=disk, trigger=discovery.trigger, clean=False, metadata=metadata,
                cpi=discovery.cpi, actor=task.actor,
            ))
        return snapshots

    def get_aggregate(self, aggregate_id: UUID) -> Any:
        """The aggregate, a copy of the cached one. eventsourcing deep-copies it
        outside the lock under which another thread fast-forwards it in place, so
        a copy taken meanwhile can fail (`dictionary changed size during
        iteration`: a task whose many operations finish at once); the copy has no
        effect, so it is simply taken again."""
        for attempt in range(1, COPY_ATTEMPTS + 1):
            try:
                return self.repository.get(aggregate_id)
            except RuntimeError as error:
                if attempt == COPY_ATTEMPTS or "changed size during iteration" not in str(error):
                    raise
        raise AssertionError("unreachable")

    def created_with_seen(self, aggregate_id: UUID) -> bool:
        """Whether an aggregate exists, for one created in the same transaction
        as something the caller has already seen (a task's JobUpdate or Restore,
        asked about from the task's later events): that answer cannot change,
        so it is remembered, yes or no. The job-update and restore workers ask
        it of every finished operation of every task; it was two queries per
        snapshot taken (docs/performance.md)."""
        with self._existence_lock:
            known = self._existence.get(aggregate_id)
        if known is None:
            known = aggregate_id in self.repository
            with self._existence_lock:
                self._existence[aggregate_id] = known
                if len(self._existence) > EXISTENCE_MEMO_SIZE:
                    self._existence.popitem(last=False)
        return known

    # Schedules ---------------------------------------------------------------

    def fire_recorded(self, schedule: str, fire_time: datetime) -> bool:
        return fire_id(schedule, fire_time) in self.repository

    def fire_schedule(self, schedule: str, expression: str, fire_time: datetime,
                      actor: str = "scheduler") -> ScheduleFire | None:
        """Record one fire with every task it creates, in one transaction.

        Returns None when another replica recorded this fire first."""
        tasks: list[Task] = []
        requests: list[Aggregate] = []
        if schedule == "retention_schedule":
            for name in self.deployment_names():
                dep = self._get(deployment_id(name))
                if dep is None or dep.deleted:
                    continue
                planned = self._plan_retention(dep, fire_time, actor, trigger="retention_schedule")
                if planned is not None:
                    tasks.append(planned[0])
                    requests.extend(planned[1])
        elif schedule == "snapshot_schedule":
            for name in self.deployment_names():
                dep = self._get(deployment_id(name))
                if dep is None or dep.deleted:
                    continue
                task, snapshots = self._plan_snapshots(dep, dep.instances, "snapshot_deployment",
                                                       "scheduled snapshot deployment", "scheduled", False, actor)
                tasks.append(task)
                requests.extend(snapshots)
        else:
            task, discovery = self._plan_self_snapshots(actor, "self")
            tasks.append(task)
            requests.append(discovery)
        fire = ScheduleFire(schedule=schedule, fire_time=fire_time, expression=expression, outcome="fired",
                            tasks=[str(t.id) for t in tasks], detail={"deployments": [t.deployment for t in tasks]},
                            actor=actor)
        try:
            self.save(fire, *tasks, *requests)
        except IntegrityError:
            if self.fire_recorded(schedule, fire_time):
                return None
            raise
        return fire

    def record_missed(self, schedule: str, expression: str, fire_times: list[datetime], reason: str,
                      actor: str = "scheduler") -> int:
        """Record fires nobody ran (all schedulers down); returns how many this call recorded."""
        recorded = 0
        for fire_time in fire_times:
            fire = ScheduleFire(schedule=schedule, fire_time=fire_time, expression=expression, outcome="missed",
                                tasks=[], detail={"reason": reason}, actor=actor)
            try:
                self.save(fire)
                recorded += 1
            except IntegrityError:
                continue  # another replica recorded it
        return recorded

    # Retention and pins ------------------------------------------------------

    # Set by the composition root: deployment name -> retention candidates
    # (the listing view's taken snapshots). The plan is re-checked against each
    # snapshot aggregate before anything is expired.
    retention_candidates: Callable[[str], list[Candidate]] | None = None

    def set_retention(self, deployment: str | None, policy: RetentionPolicy | None, actor: str,
                      declared: bool = False) -> None:
        """A deployment's policy (None: back to the default), or the default (deployment None).
        `declared`: the configuration applies its own policy (recorded only if it changes)."""
        value = policy.as_dict() if policy is not None else None
        key = f"retention.deployments.{deployment}" if deployment is not None else "retention.default"

        def decide() -> list[Aggregate]:
            target = (self._get(SETTINGS_ID) or Settings(actor=actor)) if deployment is None \
                else self.get_deployment(deployment)
            if target.retention == value and declared:
                return []
            if key in self.managed and not declared and target.retention != value:
                self._refuse_managed(key, actor, deployment)
            if deployment is None:
                target.set_default_retention(value, actor=actor)
            else:
                target.set_retention(value, actor=actor)
            return [target]

        self.save_with_retry(decide)

    def retention_policy(self, deployment: str | None) -> tuple[RetentionPolicy, str]:
        """The policy in force and where it comes from ("deployment" or "default")."""
        if deployment is not None:
            dep = self.get_deployment_or_history(deployment)
            if dep.retention is not None:
                return RetentionPolicy.from_dict(dep.retention), "deployment"
        return RetentionPolicy.from_dict(self.settings().retention), "default"

    def retention_plan(self, deployment: str, now: datetime) -> list[Expiry]:
        """What a retention run would expire now; the dry run and the real run both use it."""
        dep = self.get_deployment_or_history(deployment)
        return [e for e, _ in self._checked_plan(dep, now)]

    def _checked_plan(self, dep: Deployment, now: datetime) -> list[tuple[Expiry, Snapshot]]:
        policy, _ = self.retention_policy(dep.name)
        if policy.is_empty or self.retention_candidates is None:
            return []
        # The view may lag: pins and states are read from the aggregates (a lagging
        # view can only miss the newest snapshots, which keeps more, never fewer).
        fresh = []
        snapshots: dict[str, Snapshot] = {}
        for c in self.retention_candidates(dep.name):
            snap = self._get(UUID(c.snapshot_id))
            if snap is None:
                continue
            snapshots[c.snapshot_id] = snap
            fresh.append(Candidate(c.snapshot_id, c.snapshot_cid, c.disk_cid, c.created_at, c.clean,
                                   snap.state, pinned=snap.pinned is not None))
        return [(expiry, snapshots[expiry.snapshot_id]) for expiry in plan_expiry(policy, fresh, now)]

    def run_retention(self, deployment: str, actor: str, now: datetime, trigger: str = "manual",
                      task_id: UUID | None = None) -> Task:
        dep = self.get_deployment_or_history(deployment)
        planned = self._plan_retention(dep, now, actor, trigger, task_id)
        if planned is None:
            task = Task(id=task_id or uuid4(), kind="retention", description="retention", deployment=dep.name,
                        operations=[], actor=actor, trigger=trigger)
            task.finish_empty("nothing to expire", actor=actor)
            self.save(task)
            return task
        task, snapshots = planned
        self.save(task, *snapshots)
        return task

    def _plan_retention(self, dep: Deployment, now: datetime, actor: str, trigger: str,
                        task_id: UUID | None = None) -> tuple[Task, list[Snapshot]] | None:
        checked = self._checked_plan(dep, now)
        if not checked:
            return None
        policy, source = self.retention_policy(dep.name)
        task_id = task_id or uuid4()
        for expiry, snapshot in checked:
            snapshot.expire(policy={**policy.as_dict(), "source": source}, reason=expiry.reason,
                            task_id=str(task_id), actor=actor)
        task = Task(id=task_id, kind="retention", description=f"retention: {policy.describe()}",
                    deployment=dep.name, operations=[str(s.id) for _, s in checked], actor=actor, trigger=trigger,
                    context={"policy": policy.as_dict(), "cids": [e.snapshot_cid for e, _ in checked]})
        return task, [s for _, s in checked]

    def pin_snapshot(self, deployment: str, snapshot_cid: str, reason: str, actor: str, pin: bool = True) -> Snapshot:
        result: list[Snapshot] = []

        def decide() -> list[Aggregate]:
            snapshot = self.find_snapshot(snapshot_cid, deployment)
            if pin:
                snapshot.pin(reason, actor=actor)
            else:
                snapshot.unpin(reason, actor=actor)
            result[:] = [snapshot]
            return [snapshot]

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

    # The snapshot tasks `bosh cancel-task` may cancel: their operations are snapshots.
    CANCELLABLE_KINDS = frozenset({"create_snapshot", "snapshot_deployment", "snapshot_deployments",
                                   "delete_snapshot", "delete_deployment_snapshots"})

    def cancel_task(self, task_id: str, actor: str) -> Task:
        """Cancel a queued or running snapshot task: its snapshots whose CPI call
        has not started are cancelled now; calls already running end with their
        outcome, and the last one ends the task `cancelled`."""
        result: list[Task] = []

        def decide() -> list[Any]:
            task = self.get_task(task_id)
            if task.is_finished:
                raise InvalidState(f"task {getattr(task, 'number', None) or task_id} is already {task.state}",
                                   field="task_id")
            if task.kind not in self.CANCELLABLE_KINDS:
                raise InvalidState(f"a {task.kind} task cannot be cancelled", field="task_id")
            task.request_cancel(actor=actor)
            changed: list[Any] = []
            for op in task.operations:
                if op in task.outcomes:
                    continue
                snapshot = self._get(UUID(op))
                if isinstance(snapshot, Snapshot) and snapshot.pending_method and snapshot.current_task_id == task_id:
                    snapshot.cancel(reason="task cancelled", actor=actor)
                    changed.append(snapshot)
                    task.operation_finished(op, "cancelled", {"instance": snapshot.instance_label,
                                                              "disk_cid": snapshot.disk_cid,
                                                              "reason": "task cancelled"}, actor=actor)
            result[:] = [task]
            return [task, *changed]

        self.save_with_retry(decide)
        return result[0]

    def get_snapshot(self, snapshot_id: UUID) -> Snapshot:
        return self.get_aggregate(snapshot_id)  # type: ignore[no-any-return]

    def snapshot_cid_taken(self, snapshot_cid: str) -> bool:
        return snapshot_cid_id(snapshot_cid) in self.repository

    @staticmethod
    def new_cid_index(snapshot_cid: str, snapshot_id: UUID) -> SnapshotCid:
        return SnapshotCid(snapshot_cid=snapshot_cid, snapshot_id=str(snapshot_id))


def _number_new_tasks(objs: Sequence[Any], recordings: Any) -> None:
    """A new task's number is the position of its first event in the store:
    unique across API replicas without a coordinator, and an integer as the
    bosh CLI wants (issue 17). The tasks view keeps it (`seq`) for later reads."""
    firsts = {r.domain_event.originator_id: r.notification.id for r in recordings or ()
              if r.domain_event.originator_version == 1 and getattr(r, "notification", None) is not None}
    for obj in objs:
        if isinstance(obj, Task) and obj.id in firsts:
            obj.number = firsts[obj.id]
