"""Deployments: their inventory, who owns each disk and release job, and which CPI they use."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from eventsourcing.domain import Aggregate

from ..deployment import Deployment, InstanceInput, check_unique, deployment_id
from ..errors import DeploymentNotFound, UnknownCpi
from ..ownership import OWNERSHIP_ID, DiskOwnedElsewhere, JobOwnedElsewhere, Ownership
from ..schedule import REGISTRY_ID, DeploymentRegistry
from ..json_types import JsonObject
from .base import LedgerStore


class DeploymentService:
    def __init__(self, store: LedgerStore, default_cpi: str, cpi_names: Iterable[str],
                 declared_retention: Mapping[str, JsonObject | None] | None = None) -> None:
        self.store = store
        self.default_cpi = default_cpi
        self.cpi_names = frozenset(cpi_names)
        # The per-deployment retention policies the configuration declares (None:
        # inherit), applied when such a deployment is first recorded (decision 24).
        self.declared_retention = dict(declared_retention or {})

    def record(self, name: str, tags: dict[str, str], instances: list[InstanceInput],
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
            dep = self._load(name) or Deployment(name=name, actor=actor)
            before_disks = set(dep.disk_cids()) if not dep.deleted else set()
            before_jobs = dep.release_jobs() if not dep.deleted else set()
            owners = self.ownership()
            disks = {d for i in instances for d in i["disks"]}
            changed = self._take_over(owners, name, disks, moving_disks, moving_jobs, may_move_from, actor)
            dep.record_inventory(tags=tags, instances=instances, actor=actor, cpi=cpi)
            if name in self.declared_retention and dep.retention != self.declared_retention[name]:
                dep.set_retention(self.declared_retention[name], actor="config")
            jobs = dep.release_jobs()
            owners.claim(name, disks, jobs, actor=actor)
            owners.release(name, before_disks - disks, before_jobs - jobs, actor=actor)
            registry = self.registry()
            result[:] = [dep]
            return [dep, *changed, owners, *([registry] if registry.add(name) else [])]

        self.store.save_with_retry(decide)
        return result[0]

    def _take_over(self, owners: Ownership, name: str, disks: set[str], moving_disks: set[str],
                   moving_jobs: set[str], may_move_from: Callable[[str], bool], actor: str) -> list[Aggregate]:
        """Move what `name` may take over from other deployments (refusing what it may not);
        returns the source deployments whose inventory lost disks."""
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
            source = self._load(source_name)
            if moved_disks and source is not None and not source.deleted:
                source.record_inventory(tags=source.tags, instances=source.without_disks(set(moved_disks)),
                                        actor=actor, cpi=source.cpi)
                changed.append(source)
            owners.move(name, source_name, moved_disks, [j for j, o in taken_jobs.items() if o == source_name],
                        actor=actor)
        return changed

    def delete(self, name: str, actor: str) -> None:
        def decide() -> list[Aggregate]:
            dep = self.get(name)
            owners = self.ownership()
            owners.release(name, dep.disk_cids(), dep.release_jobs(), actor=actor)  # free for other deployments
            dep.delete(actor=actor)
            registry = self.registry()
            registry.remove(name)
            return [dep, registry, owners]

        self.store.save_with_retry(decide)

    # Reads -------------------------------------------------------------------

    def _load(self, name: str) -> Deployment | None:
        found = self.store.load(deployment_id(name))
        return found if isinstance(found, Deployment) else None

    def get(self, name: str, for_reading: bool = False) -> Deployment:
        """`for_reading`: the caller will not change it (a shared read, decision 19)."""
        dep = self.store.read(deployment_id(name)) if for_reading else self._load(name)
        if not isinstance(dep, Deployment) or dep.deleted:
            raise DeploymentNotFound(f"deployment '{name}' not found", field="deployment")
        return dep

    def get_or_history(self, name: str) -> Deployment:
        """Deleted deployments keep their snapshots, so deletion must still reach them."""
        dep = self._load(name)
        if dep is None:
            raise DeploymentNotFound(f"deployment '{name}' not found", field="deployment")
        return dep

    def live(self) -> list[Deployment]:
        """Every recorded deployment not deleted, in the registry's order (to change)."""
        found = (self._load(name) for name in self.names())
        return [dep for dep in found if dep is not None and not dep.deleted]

    def registry(self) -> DeploymentRegistry:
        found = self.store.load(REGISTRY_ID)
        return found if isinstance(found, DeploymentRegistry) else DeploymentRegistry()

    def names(self) -> list[str]:
        return list(self.registry().names)

    def ownership(self) -> Ownership:
        """Who owns each disk and release job; on a ledger from before it
        existed, seeded with the deployments recorded then (first listed wins)."""
        owners = self.store.load(OWNERSHIP_ID)
        if isinstance(owners, Ownership):
            return owners
        disks: dict[str, str] = {}
        jobs: dict[str, str] = {}
        for dep in self.live():
            for disk in dep.disk_cids():
                disks.setdefault(disk, dep.name)
            for job in sorted(dep.release_jobs()):
                jobs.setdefault(job, dep.name)
        return Ownership(disks=disks, jobs=jobs)

    def foreign_jobs(self, deployment: str, jobs: Iterable[str]) -> dict[str, str]:
        """Of `jobs`, the release jobs another deployment owns (its scripts are not ours to run)."""
        owners = self.store.load(OWNERSHIP_ID)
        return owners.foreign_jobs(deployment, jobs) if isinstance(owners, Ownership) else {}

    def listing(self, disk_cid: str, except_deployment: str | None) -> list[str]:
        """Deployments (other than `except_deployment`) whose inventory lists the disk."""
        return [dep.name for dep in self.live() if dep.name != except_deployment and disk_cid in dep.disk_cids()]

    def cpi_of(self, dep: Deployment) -> str:
        """The CPI a deployment's snapshots go through: its own, else the default."""
        return dep.cpi or self.default_cpi
