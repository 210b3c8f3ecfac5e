"""The snapshot ledger: the feature services over one event store.

`Ledger` is what entry points hold. Each feature is an attribute named as the
feature is named everywhere (API routes, CLI, views): `ledger.snapshots`,
`ledger.self_snapshots`, `ledger.schedules`, `ledger.retention`,
`ledger.job_updates`, `ledger.restores`, `ledger.deployments`,
`ledger.settings`, `ledger.tasks`; `ledger.store` is the event store they
share (domain/services/base.py). Every dependency comes in through the
constructor (docs/decisions.md #29).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from .director import Director
from .json_types import JsonObject
from .services.base import AGGREGATE_CACHE_SIZE, LedgerStore, RecordEvents
from .services.deployments import DeploymentService
from .services.job_updates import JobUpdateService
from .services.restores import DiskExistsCheck, RestoreService
from .services.retention import Candidates, RetentionService
from .services.schedules import ScheduleService
from .services.self_snapshots import SelfSnapshotService
from .services.settings import SettingsService
from .services.snapshots import SnapshotService
from .services.task_progress import TaskProgressService
from .services.tasks import TaskService

__all__ = ["AGGREGATE_CACHE_SIZE", "Director", "Ledger"]


class Ledger:
    """The snapshot ledger. Thread-safe: the API calls it from an executor.

    `default_cpi`: the CPI of a deployment that names none; `self_cpi`: the one
    that knows this host (default: `default_cpi`); `restoring_cpis`: the
    configured CPIs whose adapter can restore (the RestoresSnapshots
    capability); `disk_exists(cpi, disk)`: whether a disk exists, where this
    process can tell (restores refuse to overwrite one); `retention_candidates`:
    a deployment's taken snapshots from the listing view; `record_events`: how
    one save's events become durable (adapters/group_commit.py); `on_saved`:
    called after every save (wakes in-process followers); `managed` and
    `declared_retention`: what the configuration declares (decision 24)."""

    def __init__(self, env: dict[str, str] | None = None, *, director: Director | None = None,
                 default_cpi: str = "local", self_cpi: str | None = None, cpi_names: Iterable[str] | None = None,
                 restoring_cpis: Iterable[str] = (), disk_exists: DiskExistsCheck | None = None,
                 retention_candidates: Candidates | None = None, record_events: RecordEvents | None = None,
                 on_saved: Iterable[Callable[[], None]] = (), managed: Mapping[str, str] | None = None,
                 declared_retention: Mapping[str, JsonObject | None] | None = None) -> None:
        self.director = director or Director()
        self.default_cpi = default_cpi
        names = cpi_names if cpi_names is not None else {default_cpi}
        self.cpi_names = frozenset(names)
        self.store = LedgerStore(env, record_events=record_events, on_saved=on_saved)
        store = self.store
        self.settings = SettingsService(store, managed)
        self.deployments = DeploymentService(store, default_cpi, self.cpi_names, declared_retention)
        self.tasks = TaskService(store)
        self.task_progress = TaskProgressService(store)
        self.snapshots = SnapshotService(store, self.settings, self.deployments, self.director)
        self.self_snapshots = SelfSnapshotService(store, self.settings, self.director, self_cpi or default_cpi)
        self.retention = RetentionService(store, self.settings, self.deployments, retention_candidates)
        self.schedules = ScheduleService(store, self.deployments, self.snapshots, self.self_snapshots,
                                         self.retention)
        self.job_updates = JobUpdateService(store, self.deployments)
        self.restores = RestoreService(store, self.settings, self.deployments, self.snapshots, restoring_cpis,
                                       disk_exists)

    def close(self) -> None:
        self.store.close()
