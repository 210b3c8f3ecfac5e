"""Schedules: each fire recorded once (whichever replica is first), with every task it creates."""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from ..schedule import ScheduleFire, fire_id
from ..task import Task
from .base import LedgerStore
from .deployments import DeploymentService
from .retention import RetentionService
from .self_snapshots import SelfSnapshotService
from .snapshots import SnapshotService


class ScheduleService:
    def __init__(self, store: LedgerStore, deployments: DeploymentService, snapshots: SnapshotService,
                 self_snapshots: SelfSnapshotService, retention: RetentionService) -> None:
        self.store = store
        self.deployments = deployments
        self.snapshots = snapshots
        self.self_snapshots = self_snapshots
        self.retention = retention

    def fire_recorded(self, schedule: str, fire_time: datetime) -> bool:
        return self.store.contains(fire_id(schedule, fire_time))

    def fire(self, schedule: str, expression: str, fire_time: datetime,
             actor: str = "scheduler") -> ScheduleFire | None:
        """Record one fire with every task it creates, in one transaction.

        Returns None when another replica recorded this fire first."""
        tasks, requests = self._plan(schedule, fire_time, actor)
        fire = ScheduleFire(schedule=schedule, fire_time=fire_time, expression=expression, outcome="fired",
                            tasks=[str(t.id) for t in tasks], detail={"deployments": [t.deployment for t in tasks]},
                            actor=actor)
        try:
            self.store.save(fire, *tasks, *requests)
        except IntegrityError:
            if self.fire_recorded(schedule, fire_time):
                return None
            raise
        return fire

    def _plan(self, schedule: str, fire_time: datetime, actor: str) -> tuple[list[Task], list[Aggregate]]:
        """The tasks a fire creates and what they request (unsaved)."""
        tasks: list[Task] = []
        requests: list[Aggregate] = []
        if schedule == "retention_schedule":
            for dep in self.deployments.live():
                planned = self.retention.plan_run(dep, fire_time, actor, trigger="retention_schedule")
                if planned is not None:
                    tasks.append(planned[0])
                    requests.extend(planned[1])
        elif schedule == "snapshot_schedule":
            for dep in self.deployments.live():
                task, snapshots = self.snapshots.plan(dep, dep.instances, "snapshot_deployment",
                                                      "scheduled snapshot deployment", "scheduled", False, actor)
                tasks.append(task)
                requests.extend(snapshots)
        else:
            task, discovery = self.self_snapshots.plan(actor, "self")
            tasks.append(task)
            requests.append(discovery)
        return tasks, requests

    def record_missed(self, schedule: str, expression: str, fire_times: list[datetime], reason: str,
                      actor: str = "scheduler") -> int:
        """Record fires nobody ran (all schedulers down); returns how many this call recorded."""
        recorded = 0
        for fire_time in fire_times:
            fire = ScheduleFire(schedule=schedule, fire_time=fire_time, expression=expression, outcome="missed",
                                tasks=[], detail={"reason": reason}, actor=actor)
            try:
                self.store.save(fire)
                recorded += 1
            except IntegrityError:
                continue  # another replica recorded it
        return recorded
