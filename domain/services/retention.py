"""Retention: the policies in force, and the runs that expire what they no longer keep."""

from __future__ import annotations

from datetime import datetime
from collections.abc import Callable
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate

from ..deployment import Deployment
from ..idempotency import Idempotency
from ..retention import Candidate, Expiry, RetentionPolicy, plan_expiry
from ..snapshot import Snapshot
from ..task import Task
from .base import LedgerStore
from .deployments import DeploymentService
from .settings import SettingsService

# Deployment name -> retention candidates (the listing view's taken snapshots).
# The plan is re-checked against each snapshot aggregate before anything is expired.
Candidates = Callable[[str], list[Candidate]]


class RetentionService:
    def __init__(self, store: LedgerStore, settings: SettingsService, deployments: DeploymentService,
                 candidates: Candidates | None = None) -> None:
        self.store = store
        self.settings = settings
        self.deployments = deployments
        self.candidates = candidates  # None: no listing view here, so nothing is ever expired

    def set_policy(self, deployment: str | None, policy: RetentionPolicy | None, actor: str,
                   declared: bool = False) -> None:
        """A deployment's policy (None: back to the default), or the default (deployment None).
        `declared`: the configuration applies its own policy (recorded only if it changes)."""
        value = policy.as_dict() if policy is not None else None
        key = f"retention.deployments.{deployment}" if deployment is not None else "retention.default"

        def decide() -> list[Aggregate]:
            target = self.settings.load_for_change(actor) if deployment is None \
                else self.deployments.get(deployment)
            if target.retention == value and declared:
                return []
            if key in self.settings.managed and not declared and target.retention != value:
                self.settings.refuse_managed(key, actor, deployment)
            if isinstance(target, Deployment):
                target.set_retention(value, actor=actor)
            else:
                target.set_default_retention(value, actor=actor)
            return [target]

        self.store.save_with_retry(decide)

    def policy(self, deployment: str | None) -> tuple[RetentionPolicy, str]:
        """The policy in force and where it comes from ("deployment" or "default")."""
        if deployment is not None:
            dep = self.deployments.get_or_history(deployment)
            if dep.retention is not None:
                return RetentionPolicy.from_dict(dep.retention), "deployment"
        return RetentionPolicy.from_dict(self.settings.current().retention), "default"

    def plan(self, deployment: str, now: datetime) -> list[Expiry]:
        """What a retention run would expire now; the dry run and the real run both use it."""
        dep = self.deployments.get_or_history(deployment)
        return [e for e, _ in self._checked_plan(dep, now)]

    def _checked_plan(self, dep: Deployment, now: datetime) -> list[tuple[Expiry, Snapshot]]:
        policy, _ = self.policy(dep.name)
        if policy.is_empty or self.candidates is None:
            return []
        # The view may lag: pins and states are read from the aggregates (a lagging
        # view can only miss the newest snapshots, which keeps more, never fewer).
        fresh = []
        snapshots: dict[str, Snapshot] = {}
        for c in self.candidates(dep.name):
            snap = self.store.load(UUID(c.snapshot_id))
            if not isinstance(snap, Snapshot):
                continue
            snapshots[c.snapshot_id] = snap
            fresh.append(Candidate(c.snapshot_id, c.snapshot_cid, c.disk_cid, c.created_at, c.clean,
                                   snap.state, pinned=snap.pinned is not None))
        return [(expiry, snapshots[expiry.snapshot_id]) for expiry in plan_expiry(policy, fresh, now)]

    def run(self, deployment: str, actor: str, now: datetime, trigger: str = "manual",
            task_id: UUID | None = None, idempotency: Idempotency | None = None) -> Task:
        dep = self.deployments.get_or_history(deployment)
        planned = self.plan_run(dep, now, actor, trigger, task_id)
        if planned is None:
            task = Task(id=task_id or uuid4(), kind="retention", description="retention", deployment=dep.name,  # type: ignore[call-arg]
                        operations=[], actor=actor, trigger=trigger)
            task.finish_empty("nothing to expire", actor=actor)
            self.store.save(task, idempotency=idempotency)
            return task
        task, snapshots = planned
        self.store.save(task, *snapshots, idempotency=idempotency)
        return task

    def plan_run(self, dep: Deployment, now: datetime, actor: str, trigger: str,
                 task_id: UUID | None = None) -> tuple[Task, list[Snapshot]] | None:
        """A run's task and the snapshots it expires (unsaved); None: nothing to expire."""
        checked = self._checked_plan(dep, now)
        if not checked:
            return None
        policy, source = self.policy(dep.name)
        task_id = task_id or uuid4()
        for expiry, snapshot in checked:
            snapshot.expire(policy={**policy.as_dict(), "source": source}, reason=expiry.reason,
                            task_id=str(task_id), actor=actor)
        task = Task(id=task_id, kind="retention", description=f"retention: {policy.describe()}",  # type: ignore[call-arg]
                    deployment=dep.name, operations=[str(s.id) for _, s in checked], actor=actor, trigger=trigger,
                    context={"policy": policy.as_dict(), "cids": [e.snapshot_cid for e, _ in checked]})
        return task, [s for _, s in checked]
