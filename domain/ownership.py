"""What belongs to which deployment: each persistent disk, each release job
(its drain and stop scripts on the agent's host), one deployment at a time.

Disks: a deployment's inventory may list a disk no one owns (it claims it)
or one it owns already. Listing another deployment's disk is refused:
otherwise the admin of one deployment could snapshot, and restore into a
disk of their own, another deployment's data (issue 16, item 4).

Release jobs: the first deployment to list a release job owns it; another
deployment may list the same name (BOSH deployments often share job names)
but a job update never runs a release job's scripts for a deployment that
does not own it.

Moving either is an explicit act (`move_disks`, `move_jobs` in the inventory)
of someone allowed on both deployments, recorded as `Ownership.Moved` with
who moved what from where; a moved disk leaves the previous owner's inventory.

One aggregate: the check and the claim are saved in the same transaction as
the inventory, and two deployments claiming the same thing at once conflict
on its version (one wins, the other decides again).
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from .errors import Conflict

OWNERSHIP_ID = uuid5(NAMESPACE_URL, "snapledger:/ownership")


class OwnedElsewhere(Conflict):
    """`owners`: item -> the deployment it belongs to. The API words the
    message; it names an owner only to a caller who may read that deployment."""

    kind = "item"

    def __init__(self, owners: dict[str, str], field: str) -> None:
        self.owners = dict(owners)
        super().__init__(f"{self.kind}(s) {', '.join(sorted(owners))} belong to another deployment", field=field)


class DiskOwnedElsewhere(OwnedElsewhere):
    code = "disk_owned_by_another_deployment"
    kind = "disk"


class JobOwnedElsewhere(OwnedElsewhere):
    code = "job_owned_by_another_deployment"
    kind = "release job"


class Ownership(Aggregate):
    @staticmethod
    def create_id(disks: dict[str, str], jobs: dict[str, str]) -> UUID:
        return OWNERSHIP_ID

    @event("Created")
    def __init__(self, disks: dict[str, str], jobs: dict[str, str]) -> None:
        """The disks and jobs of the deployments recorded before this aggregate existed."""
        self.disks: dict[str, str] = dict(disks)
        self.jobs: dict[str, str] = dict(jobs)

    @event("Claimed")
    def _claimed(self, deployment: str, disks: list[str], jobs: list[str], actor: str) -> None:
        self.disks.update(dict.fromkeys(disks, deployment))
        self.jobs.update(dict.fromkeys(jobs, deployment))

    @event("Released")
    def _released(self, deployment: str, disks: list[str], jobs: list[str], actor: str) -> None:
        for table, items in ((self.disks, disks), (self.jobs, jobs)):
            for item in items:
                if table.get(item) == deployment:
                    del table[item]

    @event("Moved")
    def _moved(self, deployment: str, from_deployment: str, disks: list[str], jobs: list[str], actor: str) -> None:
        self.disks.update(dict.fromkeys(disks, deployment))
        self.jobs.update(dict.fromkeys(jobs, deployment))

    @staticmethod
    def _foreign(table: dict[str, str], deployment: str, items: Iterable[str]) -> dict[str, str]:
        return {i: o for i in items if (o := table.get(i)) is not None and o != deployment}

    def foreign_disks(self, deployment: str, disks: Iterable[str]) -> dict[str, str]:
        """Of `disks`, those another deployment owns, with their owner."""
        return self._foreign(self.disks, deployment, disks)

    def foreign_jobs(self, deployment: str, jobs: Iterable[str]) -> dict[str, str]:
        return self._foreign(self.jobs, deployment, jobs)

    def claim(self, deployment: str, disks: Iterable[str], jobs: Iterable[str], actor: str) -> None:
        new_disks = sorted(d for d in set(disks) if d not in self.disks)
        new_jobs = sorted(j for j in set(jobs) if j not in self.jobs)
        if new_disks or new_jobs:
            self._claimed(deployment=deployment, disks=new_disks, jobs=new_jobs, actor=actor)

    def release(self, deployment: str, disks: Iterable[str], jobs: Iterable[str], actor: str) -> None:
        my_disks = sorted(d for d in set(disks) if self.disks.get(d) == deployment)
        my_jobs = sorted(j for j in set(jobs) if self.jobs.get(j) == deployment)
        if my_disks or my_jobs:
            self._released(deployment=deployment, disks=my_disks, jobs=my_jobs, actor=actor)

    def move(self, deployment: str, from_deployment: str, disks: list[str], jobs: list[str], actor: str) -> None:
        self._moved(deployment=deployment, from_deployment=from_deployment, disks=sorted(disks), jobs=sorted(jobs),
                    actor=actor)
