"""A deployment's inventory: instances (`job/index`, id) and their persistent disks."""

from __future__ import annotations

from typing import NotRequired, TypedDict
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event

from .errors import InstanceNotFound, InventoryConflict
from .json_types import JsonObject


# Optional instance fields: the VM's BOSH agent id (snapshot metadata) and the
# persistent disk's size in MB (the drain scripts' BOSH_JOB_STATE).
INSTANCE_FACTS = ("agent_id", "persistent_disk")


class InstanceInput(TypedDict):
    """An instance as an inventory gives it (the API's InstanceSchema): the id may be new."""

    id: NotRequired[str | None]
    job: str
    index: int
    disks: list[str]
    jobs: NotRequired[list[str] | None]
    agent_id: NotRequired[str | None]
    persistent_disk: NotRequired[int | None]


class InventoryInstance(TypedDict):
    """An instance as the recorded inventory holds it; optional facts only when known."""

    id: str
    job: str
    index: int
    disks: list[str]
    jobs: NotRequired[list[str]]  # absent: the instance group's name
    agent_id: NotRequired[str]
    persistent_disk: NotRequired[int]


def deployment_id(name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"snapledger:/deployments/{name}")


def check_unique(instances: list[InstanceInput]) -> None:
    """An instance (job/index or id) and a disk appear once in an inventory.
    A 409, not a 400: each item is well formed, the list contradicts itself
    (and no JSON Schema can say "unique across items" for the API document)."""
    slugs: set[tuple[str, int]] = set()
    ids: set[str] = set()
    disks: set[str] = set()
    for inst in instances:
        slug = (inst["job"], inst["index"])
        if slug in slugs:
            raise InventoryConflict(f"duplicate instance {inst['job']}/{inst['index']}", field="instances")
        slugs.add(slug)
        inst_id = inst.get("id")
        if inst_id:
            if inst_id in ids:
                raise InventoryConflict(f"duplicate instance id {inst_id}", field="instances")
            ids.add(inst_id)
        for disk in inst.get("disks", []):
            if disk in disks:
                raise InventoryConflict(f"disk {disk} is listed twice", field="instances")
            disks.add(disk)


class Deployment(Aggregate):
    """Inventory as last recorded. Deleting keeps the history (and the snapshots)."""

    @staticmethod
    def create_id(name: str) -> UUID:
        return deployment_id(name)

    @event("Registered")
    def __init__(self, name: str, actor: str) -> None:
        self.name = name
        self.tags: dict[str, str] = {}
        self.instances: list[InventoryInstance] = []
        self.deleted = False
        self.cpi: str | None = None
        self.retention: JsonObject | None = None  # None: the service-wide default
        # Disks a restore created from a snapshot (not attached to any instance
        # until the deploy tool attaches them and records the inventory).
        self.restored_disks: list[dict[str, str]] = []

    class InventoryRecorded(Aggregate.Event):
        """Version 2 added `cpi` (the deployment's named CPI); a version-1 event
        reads as "the default CPI". The upcaster runs on read (`class_version`)."""

        class_version = 2
        tags: dict[str, str]
        instances: list[InventoryInstance]
        attached: list[str]
        detached: list[str]
        actor: str
        cpi: str | None

        @staticmethod
        def upcast_v1_v2(state: JsonObject) -> None:
            state.setdefault("cpi", None)

    @event(InventoryRecorded)
    def _record(
        self,
        tags: dict[str, str],
        instances: list[InventoryInstance],
        attached: list[str],
        detached: list[str],
        actor: str,
        cpi: str | None,
    ) -> None:
        self.cpi = cpi
        self.tags = dict(tags)
        self.instances = [InventoryInstance(**i) for i in instances]
        self.deleted = False

    @event("RetentionSet")
    def set_retention(self, policy: JsonObject | None, actor: str) -> None:
        self.retention = dict(policy) if policy is not None else None

    @event("DiskRestored")
    def record_restored_disk(self, disk_cid: str, snapshot_cid: str, cpi: str, task_id: str, actor: str) -> None:
        self.restored_disks = [*self.restored_disks, {"disk_cid": disk_cid, "snapshot_cid": snapshot_cid, "cpi": cpi,
                                                      "task_id": task_id}]

    @event("Deleted")
    def _delete(self, actor: str) -> None:
        self.deleted = True

    # Commands -------------------------------------------------------------

    def record_inventory(
        self, tags: dict[str, str], instances: list[InstanceInput], actor: str, cpi: str | None = None
    ) -> None:
        """Replace the inventory. Instances keep their id across records of the same job/index."""
        check_unique(instances)
        known = {(i["job"], i["index"]): i["id"] for i in self.instances}
        normalised: list[InventoryInstance] = []
        for inst in instances:
            inst_id = inst.get("id") or known.get((inst["job"], inst["index"])) or str(uuid4())
            recorded = InventoryInstance(id=inst_id, job=inst["job"], index=inst["index"], disks=list(inst["disks"]))
            # The release jobs on the instance (drain/stop in job updates); absent: the instance group's name.
            jobs = inst.get("jobs")
            if jobs:
                recorded["jobs"] = list(jobs)
            # Optional facts of the instance (INSTANCE_FACTS): kept only when given, so older records read the same.
            agent_id, size = inst.get("agent_id"), inst.get("persistent_disk")
            if agent_id is not None:
                recorded["agent_id"] = agent_id
            if size is not None:
                recorded["persistent_disk"] = size
            normalised.append(recorded)
        before = set(self.disk_cids()) if not self.deleted else set()
        after = {d for i in normalised for d in i["disks"]}
        self._record(
            tags=dict(tags),
            instances=normalised,
            attached=sorted(after - before),
            detached=sorted(before - after),
            actor=actor,
            cpi=cpi,
        )

    def without_disks(self, disks: set[str]) -> list[InstanceInput]:
        """The instances as they are, minus `disks` (moved to another deployment)."""
        return [InstanceInput(**{**i, "disks": [d for d in i["disks"] if d not in disks]}) for i in self.instances]

    def delete(self, actor: str) -> None:
        if not self.deleted:
            self._delete(actor=actor)

    # Queries ---------------------------------------------------------------

    def release_jobs(self) -> set[str]:
        """The release jobs its instances run (an instance without `jobs` runs its group's name)."""
        return {j for i in self.instances for j in (i.get("jobs") or [i["job"]])}

    def disk_cids(self) -> list[str]:
        return [d for i in self.instances for d in i["disks"]]

    def find_instances(self, job: str | None = None, index_or_id: str | None = None) -> list[InventoryInstance]:
        """BOSH's lookup: digits select by index within the job, anything else by instance id."""
        if job is None:
            return list(self.instances)
        if index_or_id is None:
            found = [i for i in self.instances if i["job"] == job]
        elif index_or_id.isdigit():
            found = [i for i in self.instances if i["job"] == job and i["index"] == int(index_or_id)]
        else:
            found = [i for i in self.instances if i["id"] == index_or_id and i["job"] == job]
        if not found:
            where = job if index_or_id is None else f"{job}/{index_or_id}"
            raise InstanceNotFound(f"instance '{where}' not found in deployment '{self.name}'")
        return found
