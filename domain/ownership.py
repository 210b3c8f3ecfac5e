"""Which deployment each persistent disk belongs to: one deployment at a time.

A deployment's inventory may list a disk no one owns (it claims it) or one it
owns already. Listing another deployment's disk is refused: otherwise the
admin of one deployment could snapshot, and restore into a disk of their
own, another deployment's data (issue 16, item 4). Moving a disk is an
explicit act (the inventory names it in `move_disks`) of someone allowed on
both deployments; it is recorded as `DiskOwners.Moved` with who moved what
from where, and the previous owner's inventory no longer lists the disk.

One aggregate for all disks: the ownership check and the claim are saved in
the same transaction as the inventory, and two deployments claiming the
same disk at once conflict on its version (one wins, the other re-decides).
"""

from __future__ import annotations

from typing import Iterable
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from .errors import Conflict

DISK_OWNERS_ID = uuid5(NAMESPACE_URL, "snapledger:/disk-owners")


class DiskOwnedElsewhere(Conflict):
    """`owners`: disk -> the deployment it belongs to. The API words the
    message; it names an owner only to a caller who may read that deployment."""

    code = "disk_owned_by_another_deployment"

    def __init__(self, owners: dict[str, str]) -> None:
        self.owners = dict(owners)
        super().__init__(f"disk(s) {', '.join(sorted(owners))} belong to another deployment", field="instances")


class DiskOwners(Aggregate):
    @staticmethod
    def create_id(owners: dict[str, str]) -> UUID:
        return DISK_OWNERS_ID

    @event("Created")
    def __init__(self, owners: dict[str, str]) -> None:
        """`owners`: the disks of the deployments recorded before this aggregate existed."""
        self.owners: dict[str, str] = dict(owners)

    @event("Claimed")
    def _claimed(self, deployment: str, disks: list[str], actor: str) -> None:
        for disk in disks:
            self.owners[disk] = deployment

    @event("Released")
    def _released(self, deployment: str, disks: list[str], actor: str) -> None:
        for disk in disks:
            if self.owners.get(disk) == deployment:
                del self.owners[disk]

    @event("Moved")
    def _moved(self, deployment: str, from_deployment: str, disks: list[str], actor: str) -> None:
        for disk in disks:
            self.owners[disk] = deployment

    def owner(self, disk: str) -> str | None:
        return self.owners.get(disk)

    def foreign(self, deployment: str, disks: Iterable[str]) -> dict[str, str]:
        """Of `disks`, those another deployment owns, with their owner."""
        return {d: o for d in disks if (o := self.owners.get(d)) is not None and o != deployment}

    def claim(self, deployment: str, disks: Iterable[str], actor: str) -> None:
        new = sorted(d for d in disks if d not in self.owners)
        if new:
            self._claimed(deployment=deployment, disks=new, actor=actor)

    def release(self, deployment: str, disks: Iterable[str], actor: str) -> None:
        mine = sorted(d for d in disks if self.owners.get(d) == deployment)
        if mine:
            self._released(deployment=deployment, disks=mine, actor=actor)

    def move(self, deployment: str, from_deployment: str, disks: list[str], actor: str) -> None:
        self._moved(deployment=deployment, from_deployment=from_deployment, disks=sorted(disks), actor=actor)
